//! The rules of a LockdownProfile as the engine enforces them (the CRD's `spec`, field for
//! field). How they are enforced lives in the engine's `lockdown` module.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A statement class a profile can disable (the names of the CRD's `disabledStatements`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum StatementClass {
    Attach,
    Detach,
    Pragma,
    Vacuum,
    CreateTable,
    DropTable,
    CreateIndex,
    DropIndex,
    CreateTrigger,
    DropTrigger,
    CreateView,
    DropView,
    AlterTable,
    DeleteWithoutWhere,
    UpdateWithoutWhere,
    Insert,
    Update,
    Delete,
    Analyze,
    Reindex,
}

/// The rules of one profile (the CRD's `spec`, field for field).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockdownRules {
    /// Statement classes refused.
    #[serde(default)]
    pub disabled_statements: BTreeSet<StatementClass>,
    /// SQL functions refused.
    #[serde(default)]
    pub disabled_functions: BTreeSet<String>,
    /// PRAGMAs still allowed when PRAGMA is disabled.
    #[serde(default)]
    pub allowed_pragmas: BTreeSet<String>,
    /// Refuse every write.
    #[serde(default)]
    pub read_only: bool,
    /// Interrupt statements after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_statement_millis: Option<u32>,
    /// Interrupt statements that used this many milliseconds of CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_statement_cpu_millis: Option<u32>,
    /// Refuse results longer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_rows: Option<u32>,
}
