//! Named lockdown profiles, kept in the catalog and applied to the databases that use them.

use super::*;

impl Engine {
    /// Create or replace a lockdown profile; databases using it apply it at their next statement.
    pub fn put_profile(&self, name: &str, rules: LockdownRules) -> Result<()> {
        names::validate("lockdown profile", name)?;
        for (field, v) in [
            ("maxStatementMillis", rules.max_statement_millis),
            ("maxStatementCpuMillis", rules.max_statement_cpu_millis),
            ("maxResultRows", rules.max_result_rows),
        ] {
            if v == Some(0) {
                return Err(EngineError::BadRequest(format!(
                    "{field} must be at least 1 (leave it out for the engine's default)"
                )));
            }
        }
        let json = serde_json::to_string(&rules).map_err(EngineError::internal)?;
        self.catalog.put_profile(name, &json)?;
        self.profiles
            .write()
            .map_err(EngineError::internal)?
            .insert(name.into(), rules.clone());
        for pdb in self.pdbs.read().map_err(EngineError::internal)?.values() {
            if pdb.record().lockdown_profile.as_deref() == Some(name) {
                pdb.set_rules(rules.clone());
            }
        }
        Ok(())
    }

    /// A profile's rules.
    pub fn profile(&self, name: &str) -> Result<LockdownRules> {
        names::validate("lockdown profile", name)?;
        self.profiles
            .read()
            .map_err(EngineError::internal)?
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no lockdown profile named {name}")))
    }

    /// Every profile.
    pub fn profiles(&self) -> Result<BTreeMap<String, LockdownRules>> {
        Ok(self
            .profiles
            .read()
            .map_err(EngineError::internal)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Delete a profile no database uses.
    pub fn delete_profile(&self, name: &str) -> Result<()> {
        names::validate("lockdown profile", name)?;
        let users: Vec<String> = self
            .pdbs
            .read()
            .map_err(EngineError::internal)?
            .values()
            .filter(|p| p.record().lockdown_profile.as_deref() == Some(name))
            .map(|p| p.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "lockdown profile {name} is used by {}",
                users.join(", ")
            )));
        }
        if !self.catalog.delete_profile(name)? {
            return Err(EngineError::NotFound(format!(
                "no lockdown profile named {name}"
            )));
        }
        self.profiles
            .write()
            .map_err(EngineError::internal)?
            .remove(name);
        Ok(())
    }
}
