//! Lockdown: the rules a LockdownProfile sets, and their enforcement on every tenant
//! statement through SQLite's authorizer. Whatever the profile, tenants can never
//! ATTACH or DETACH a file, load an extension, or run a PRAGMA that changes how the
//! engine stores data.

mod classify;

use rusqlite::hooks::{AuthAction, AuthContext};

pub use tenantdb_engine_api::lockdown::{LockdownRules, StatementClass};

/// PRAGMAs tenants may run even with no profile: they read or describe, and change
/// nothing about durability or where data lives.
const SAFE_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "foreign_keys",
    "user_version",
    "schema_version",
    "page_count",
    "page_size",
    "freelist_count",
    "integrity_check",
    "quick_check",
    "collation_list",
    "function_list",
    "pragma_list",
    "encoding",
    "defer_foreign_keys",
    "case_sensitive_like",
    "recursive_triggers",
    "busy_timeout",
    "data_version",
];

/// PRAGMAs allowed even when a profile disables PRAGMA: FTS5 reads `data_version` (a
/// change counter) on every query, so full-text search works under any profile.
const ALWAYS_ALLOWED_PRAGMAS: &[&str] = &["data_version"];

/// Functions no tenant may call, whatever the profile.
const ALWAYS_DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
];

/// Virtual-table modules tenants may use: full-text search and R*Tree. Every other
/// module (those that read files or other databases among them) stays refused.
pub const ALLOWED_VTABLE_MODULES: &[&str] = &["fts5", "rtree", "rtree_i32"];

/// What a tenant statement is refused for, if anything: `Some(reason)`.
pub fn check(rules: &LockdownRules, ctx: &AuthContext<'_>) -> Option<String> {
    use AuthAction as A;
    use StatementClass as C;
    let disabled = |c: C| rules.disabled_statements.contains(&c);
    let write = || {
        rules
            .read_only
            .then(|| "the lockdown profile is read-only".to_string())
    };
    let class = |c: C, what: &str| {
        disabled(c).then(|| format!("{what} is disabled by the lockdown profile"))
    };
    match ctx.action {
        A::Attach { .. } => Some("ATTACH is never allowed to tenants".into()),
        A::Detach { .. } => Some("DETACH is never allowed to tenants".into()),
        A::Function { function_name } => {
            let f = function_name.to_ascii_lowercase();
            if ALWAYS_DENIED_FUNCTIONS.contains(&f.as_str()) {
                Some(format!("function {f}() is never allowed to tenants"))
            } else if rules.disabled_functions.contains(&f) {
                Some(format!(
                    "function {f}() is disabled by the lockdown profile"
                ))
            } else {
                None
            }
        }
        A::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let p = pragma_name.to_ascii_lowercase();
            let safe = SAFE_PRAGMAS.contains(&p.as_str())
                && !(matches!(p.as_str(), "user_version" | "schema_version")
                    && pragma_value.is_some()
                    && rules.read_only);
            if !safe {
                Some(format!("PRAGMA {p} is not allowed to tenants"))
            } else if disabled(C::Pragma)
                && !rules.allowed_pragmas.contains(&p)
                && !(ALWAYS_ALLOWED_PRAGMAS.contains(&p.as_str()) && pragma_value.is_none())
            {
                Some(format!("PRAGMA {p} is disabled by the lockdown profile"))
            } else {
                None
            }
        }
        A::CreateTable { .. } | A::CreateTempTable { .. } => {
            write().or_else(|| class(C::CreateTable, "CREATE TABLE"))
        }
        A::DropTable { .. } | A::DropTempTable { .. } => {
            write().or_else(|| class(C::DropTable, "DROP TABLE"))
        }
        A::CreateIndex { .. } | A::CreateTempIndex { .. } => {
            write().or_else(|| class(C::CreateIndex, "CREATE INDEX"))
        }
        A::DropIndex { .. } | A::DropTempIndex { .. } => {
            write().or_else(|| class(C::DropIndex, "DROP INDEX"))
        }
        A::CreateTrigger { .. } | A::CreateTempTrigger { .. } => {
            write().or_else(|| class(C::CreateTrigger, "CREATE TRIGGER"))
        }
        A::DropTrigger { .. } | A::DropTempTrigger { .. } => {
            write().or_else(|| class(C::DropTrigger, "DROP TRIGGER"))
        }
        A::CreateView { .. } | A::CreateTempView { .. } => {
            write().or_else(|| class(C::CreateView, "CREATE VIEW"))
        }
        A::DropView { .. } | A::DropTempView { .. } => {
            write().or_else(|| class(C::DropView, "DROP VIEW"))
        }
        A::AlterTable { .. } => write().or_else(|| class(C::AlterTable, "ALTER TABLE")),
        A::Insert { table_name } if !is_internal(table_name) => {
            write().or_else(|| class(C::Insert, "INSERT"))
        }
        A::Update { table_name, .. } if !is_internal(table_name) => {
            write().or_else(|| class(C::Update, "UPDATE"))
        }
        A::Delete { table_name } if !is_internal(table_name) => {
            write().or_else(|| class(C::Delete, "DELETE"))
        }
        A::Analyze { .. } => write().or_else(|| class(C::Analyze, "ANALYZE")),
        A::Reindex { .. } => write().or_else(|| class(C::Reindex, "REINDEX")),
        A::CreateVtable { module_name, .. } | A::DropVtable { module_name, .. } => {
            let module = module_name.to_ascii_lowercase();
            if !ALLOWED_VTABLE_MODULES.contains(&module.as_str()) {
                Some(format!(
                    "virtual tables of module {module} are not allowed to tenants (allowed: {})",
                    ALLOWED_VTABLE_MODULES.join(", ")
                ))
            } else if matches!(ctx.action, A::CreateVtable { .. }) {
                write().or_else(|| class(C::CreateTable, "CREATE VIRTUAL TABLE"))
            } else {
                write().or_else(|| class(C::DropTable, "DROP TABLE"))
            }
        }
        _ => None,
    }
}

fn is_internal(table: &str) -> bool {
    table.starts_with("sqlite_")
}

/// Classes decided from the statement itself, which the authorizer cannot see: VACUUM
/// (and VACUUM INTO, never allowed), DELETE and UPDATE without WHERE. Returns the refusal.
pub fn check_text(rules: &LockdownRules, sql: &str) -> Option<String> {
    classify::refusal(rules, sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_the_crd_spec() {
        let r: LockdownRules = serde_json::from_str(r#"{"disabledStatements":["DROP_TABLE","DELETE_WITHOUT_WHERE"],"readOnly":true,"maxStatementMillis":50}"#).unwrap();
        assert!(r.read_only && r.disabled_statements.contains(&StatementClass::DropTable));
        assert!(
            serde_json::from_str::<LockdownRules>(r#"{"disabledStatements":["NOPE"]}"#).is_err()
        );
    }
}
