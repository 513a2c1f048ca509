//! Pure: a LockdownProfile's spec as the engine's rules, and who uses a profile.

use tenantdb_crds::{LockdownProfileSpec, PluggableDatabase};
use tenantdb_engine_api::lockdown::LockdownRules;

/// The engine's rules for a profile spec (the same fields; a test keeps the statement
/// classes of both in step). An error names what the engine would not accept.
pub fn engine_rules(spec: &LockdownProfileSpec) -> Result<LockdownRules, String> {
    let value = serde_json::to_value(spec).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("the engine cannot read these rules: {e}"))
}

/// Whether a profile name can be installed in an engine (1–63 of `[a-z0-9_-]`).
pub fn valid_name(name: &str) -> Result<(), String> {
    tenantdb_engine_api::names::validate("lockdown profile", name).map_err(|e| e.to_string())
}

/// The profiles a database involves: the one it names and the one in force (which may
/// be its Tenant's default). A change to either must reach it.
pub fn profiles_of(pdb: &PluggableDatabase) -> Vec<String> {
    let mut out: Vec<String> = pdb.spec.lockdown_profile.iter().cloned().collect();
    if let Some(p) = pdb.status.as_ref().and_then(|s| s.lockdown_profile.clone()) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantdb_crds::StatementClass;

    #[test]
    fn every_field_reaches_the_engine() {
        let spec = LockdownProfileSpec {
            disabled_statements: vec![
                StatementClass::DropTable,
                StatementClass::DeleteWithoutWhere,
            ],
            disabled_functions: vec!["randomblob".into()],
            allowed_pragmas: vec!["table_info".into()],
            read_only: true,
            max_statement_millis: Some(250),
            max_statement_cpu_millis: Some(100),
            max_result_rows: Some(10),
        };
        let rules = engine_rules(&spec).unwrap();
        assert_eq!(rules.disabled_statements.len(), 2);
        assert!(rules.disabled_functions.contains("randomblob"));
        assert!(rules.allowed_pragmas.contains("table_info"));
        assert!(rules.read_only);
        assert_eq!(rules.max_statement_millis, Some(250));
        assert_eq!(rules.max_statement_cpu_millis, Some(100));
        assert_eq!(rules.max_result_rows, Some(10));
        assert_eq!(
            engine_rules(&LockdownProfileSpec::default()).unwrap(),
            LockdownRules::default()
        );
    }

    #[test]
    fn names_the_engine_cannot_hold_are_refused() {
        assert!(valid_name("strict").is_ok());
        assert!(valid_name("a.b").is_err());
        assert!(valid_name(&"x".repeat(64)).is_err());
    }
}
