//! Pure: what a PluggableDatabase's status says, given what was observed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb_crds::{PluggableDatabase, PluggableDatabaseStatus};

use super::plan::spec_open_mode;
use crate::conditions::set;
use crate::engine_client::EngineDatabase;
use crate::quantity::format_bytes;

/// Phase names, as `kubectl get pldb` shows them.
pub mod phase {
    /// Waiting for its Tenant.
    pub const PENDING: &str = "Pending";
    /// Open in some mode.
    pub const OPEN: &str = "Open";
    /// Registered, closed to every session.
    pub const MOUNTED: &str = "Mounted";
    /// Moving to another tenant.
    pub const RELOCATING: &str = "Relocating";
    /// The spec cannot be acted on until it changes.
    pub const INVALID: &str = "Invalid";
    /// The engine refused or lost it.
    pub const FAILED: &str = "Failed";
    /// Being deleted.
    pub const DELETING: &str = "Deleting";
}

fn base(pdb: &PluggableDatabase) -> PluggableDatabaseStatus {
    let mut s = pdb.status.clone().unwrap_or_default();
    s.observed_generation = pdb.metadata.generation;
    s
}

/// Status when the engine holds what the spec asks for.
pub fn in_sync(
    pdb: &PluggableDatabase,
    have: &EngineDatabase,
    tenant: &str,
    now: &Time,
) -> PluggableDatabaseStatus {
    let mut s = base(pdb);
    let mode = spec_open_mode(have.open_mode);
    let open = have.open_mode.is_some();
    s.phase = Some(if open { phase::OPEN } else { phase::MOUNTED }.into());
    s.open_mode = Some(mode);
    s.size_bytes = Some(have.size_bytes);
    s.size = Some(format_bytes(have.size_bytes));
    s.source = Some(have.source.clone());
    s.tenant = Some(tenant.to_string());
    s.lockdown_profile = have.lockdown_profile.clone();
    s.storage_quota_bytes = have.storage_quota_bytes;
    let g = pdb.metadata.generation;
    let message = format!("{mode:?} in tenant {tenant}'s engine");
    set(&mut s.conditions, "Ready", true, "InSync", &message, g, now);
    set(
        &mut s.conditions,
        "Progressing",
        false,
        "InSync",
        &message,
        g,
        now,
    );
    s
}

/// A warning when the database uses 90% or more of its storage quota (writes past the
/// quota get HTTP 507).
pub fn quota_warning(have: &EngineDatabase) -> Option<String> {
    let quota = have.storage_quota_bytes.filter(|q| *q > 0)?;
    (have.size_bytes.saturating_mul(10) >= quota.saturating_mul(9)).then(|| {
        format!(
            "{} of its {} storage quota used ({}%); writes past it are refused with 507",
            format_bytes(have.size_bytes),
            format_bytes(quota),
            have.size_bytes.saturating_mul(100) / quota
        )
    })
}

/// Status while something stands in the way: `phase`, `Ready=False` with `reason`.
/// `progressing` says whether the operator is still moving (True) or waits for a change.
pub fn blocked(
    pdb: &PluggableDatabase,
    phase: &str,
    reason: &str,
    message: &str,
    progressing: bool,
    now: &Time,
) -> PluggableDatabaseStatus {
    let mut s = base(pdb);
    // An Invalid or Failed spec keeps the last known phase of existing data visible
    // through the conditions; the phase itself says what to look at.
    s.phase = Some(phase.to_string());
    let g = pdb.metadata.generation;
    set(&mut s.conditions, "Ready", false, reason, message, g, now);
    set(
        &mut s.conditions,
        "Progressing",
        progressing,
        reason,
        message,
        g,
        now,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantdb_engine::catalog::OpenMode as EngineOpenMode;

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    fn pdb() -> PluggableDatabase {
        serde_yaml::from_str("apiVersion: tenantdb.io/v1alpha1\nkind: PluggableDatabase\nmetadata: {name: orders, namespace: shop, generation: 3}\nspec: {tenant: acme}\n").unwrap()
    }

    #[test]
    fn in_sync_reports_mode_size_and_tenant() {
        let have = EngineDatabase {
            name: "orders".into(),
            open_mode: Some(EngineOpenMode::ReadOnly),
            source: "seed".into(),
            storage_quota_bytes: Some(1 << 20),
            lockdown_profile: Some("strict".into()),
            size_bytes: 8192,
            active_sessions: 0,
        };
        let s = in_sync(&pdb(), &have, "acme", &now());
        assert_eq!(s.phase.as_deref(), Some("Open"));
        assert_eq!(s.open_mode, Some(tenantdb_crds::OpenMode::ReadOnly));
        assert_eq!(s.size.as_deref(), Some("8Ki"));
        assert_eq!(s.tenant.as_deref(), Some("acme"));
        assert_eq!(s.observed_generation, Some(3));
        assert!(crate::conditions::is_true(&s.conditions, "Ready"));
        let closed = EngineDatabase {
            open_mode: None,
            ..have
        };
        let s = in_sync(&pdb(), &closed, "acme", &now());
        assert_eq!(s.phase.as_deref(), Some("Mounted"));
    }

    #[test]
    fn blocked_says_why() {
        let s = blocked(
            &pdb(),
            phase::PENDING,
            "TenantNotReady",
            "tenant acme is Provisioning",
            true,
            &now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "TenantNotReady")
        );
    }
}
