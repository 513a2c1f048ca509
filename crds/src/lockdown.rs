//! `LockdownProfile`: statement rules the engine enforces on tenant sessions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rules every tenant statement is checked against, in every engine hosting a
/// database that uses the profile. ATTACH, DETACH and extension loading are always
/// denied to tenants, whatever the profile says.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "LockdownProfile",
    shortname = "ldp",
    category = "tenantdb",
    status = "LockdownProfileStatus",
    printcolumn = r#"{"name":"Read only","type":"boolean","jsonPath":".spec.readOnly"}"#,
    printcolumn = r#"{"name":"Applied to","type":"integer","jsonPath":".status.appliedCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("LockdownProfile names are DNS labels: at most 63 lowercase letters, digits and '-'")
)]
#[serde(rename_all = "camelCase")]
pub struct LockdownProfileSpec {
    /// Statement classes refused to tenant sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"))]
    pub disabled_statements: Vec<StatementClass>,
    /// SQL functions refused to tenant sessions (e.g. `randomblob`); `load_extension` is always refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[a-z_][a-z0-9_]{0,63}$")), extend("x-kubernetes-list-type" = "set"))]
    pub disabled_functions: Vec<String>,
    /// PRAGMAs tenants may still run when PRAGMA is disabled (e.g. `table_info`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[a-z_]{1,64}$")), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_pragmas: Vec<String>,
    /// Refuse every write.
    #[serde(default)]
    pub read_only: bool,
    /// Interrupt a statement after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub max_statement_millis: Option<u32>,
    /// Interrupt a statement once it has used this many milliseconds of CPU time (waiting — for IO, locks, or a CPU limit — does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub max_statement_cpu_millis: Option<u32>,
    /// Refuse results longer than this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_result_rows: Option<u32>,
}

/// A class of SQL statement a profile can disable.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatementClass {
    /// ATTACH DATABASE (always refused to tenants).
    Attach,
    /// DETACH DATABASE (always refused to tenants).
    Detach,
    /// PRAGMA, except the allowed ones.
    Pragma,
    /// VACUUM.
    Vacuum,
    /// CREATE TABLE.
    CreateTable,
    /// DROP TABLE.
    DropTable,
    /// CREATE INDEX.
    CreateIndex,
    /// DROP INDEX.
    DropIndex,
    /// CREATE TRIGGER.
    CreateTrigger,
    /// DROP TRIGGER.
    DropTrigger,
    /// CREATE VIEW.
    CreateView,
    /// DROP VIEW.
    DropView,
    /// ALTER TABLE.
    AlterTable,
    /// DELETE with no WHERE clause.
    DeleteWithoutWhere,
    /// UPDATE with no WHERE clause.
    UpdateWithoutWhere,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// ANALYZE.
    Analyze,
    /// REINDEX.
    Reindex,
}

/// Where the profile is applied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LockdownProfileStatus {
    /// How many PluggableDatabases enforce the profile now. Counts, never names: the
    /// profile is cluster-wide, and its readers must not learn other tenants' databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_count: Option<u32>,
    /// In how many namespaces those databases are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_namespaces: Option<u32>,
    /// Ready, with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
