//! Pure: what a PluggableDatabase's status says, given what was observed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb_crds::{PdbBackupStatus, PdbPhase, PluggableDatabase, PluggableDatabaseStatus};
use tenantdb_engine_api::backup::ShipStatus;

use super::plan::spec_open_mode;
use crate::conditions::set;
use crate::engine_client::EngineDatabase;
use crate::quantity::format_bytes;

/// Phases, by the names the controller uses.
pub mod phase {
    use tenantdb_crds::PdbPhase;
    /// Waiting for its Tenant.
    pub const PENDING: PdbPhase = PdbPhase::Pending;
    /// Open in some mode.
    pub const OPEN: PdbPhase = PdbPhase::Open;
    /// Registered, closed to every session.
    pub const MOUNTED: PdbPhase = PdbPhase::Mounted;
    /// Moving to another tenant.
    pub const RELOCATING: PdbPhase = PdbPhase::Relocating;
    /// The spec cannot be acted on until it changes.
    pub const INVALID: PdbPhase = PdbPhase::Invalid;
    /// The engine refused or lost it.
    pub const FAILED: PdbPhase = PdbPhase::Failed;
    /// Being deleted.
    pub const DELETING: PdbPhase = PdbPhase::Deleting;
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
    s.phase = Some(if open { phase::OPEN } else { phase::MOUNTED });
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

/// The backup condition types, all three set together.
pub const BACKUP_CONDITIONS: [&str; 3] = ["BackupHealthy", "BackupLagging", "BackupFailing"];

/// The lag past which a backup is `BackupLagging`: ten shipping delays, at least 10 s.
pub fn lag_limit_ms(max_delay_ms: u64) -> i64 {
    (max_delay_ms.saturating_mul(10)).max(10_000) as i64
}

fn rfc3339(ms: i64) -> Option<String> {
    (ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Backup fields and conditions of `s`: `None` for `backup` when the Tenant has none
/// (fields and conditions cleared); `Some(None)` while the engine runs no backup for the
/// database yet; `Some(Some(st))` from what the engine reports. `max_delay_ms` is the
/// Tenant's largest shipping delay.
pub fn backup(
    s: &mut PluggableDatabaseStatus,
    backup: Option<Option<&ShipStatus>>,
    max_delay_ms: u64,
    generation: Option<i64>,
    now: &Time,
) {
    let Some(observed) = backup else {
        s.backup = None;
        s.conditions
            .retain(|c| !BACKUP_CONDITIONS.contains(&c.type_.as_str()));
        return;
    };
    let Some(st) = observed else {
        s.backup = None;
        let m = "the engine runs no backup for this database yet (it starts with the engine's next configuration)";
        for type_ in BACKUP_CONDITIONS {
            set(
                &mut s.conditions,
                type_,
                false,
                "BackupStarting",
                m,
                generation,
                now,
            );
        }
        return;
    };
    let last_recoverable = st.shipped_ms.max(st.last_snapshot_ms);
    s.backup = Some(PdbBackupStatus {
        last_shipped_transaction: (st.shipped_txid > 0).then_some(st.shipped_txid),
        last_shipped_time: rfc3339(st.shipped_ms),
        first_recoverable_time: st.first_recoverable_ms.and_then(rfc3339),
        last_recoverable_time: rfc3339(last_recoverable),
        last_snapshot_time: rfc3339(st.last_snapshot_ms),
        lag_millis: st.lag_ms,
        pending_commits: st.pending_commits as u64,
        backlog_bytes: st.backlog_bytes,
        last_error: st.last_error.clone(),
    });
    let limit = lag_limit_ms(max_delay_ms);
    let lagging = st.lag_ms > limit;
    let waiting = format!(
        "{} commits ({}) wait on the volume, the oldest {:.1} s old",
        st.pending_commits,
        format_bytes(st.backlog_bytes),
        st.lag_ms as f64 / 1e3
    );
    match &st.last_error {
        Some(e) => {
            let m = format!("the object store refuses: {e}; {waiting}");
            set(
                &mut s.conditions,
                "BackupFailing",
                true,
                "StoreError",
                &m,
                generation,
                now,
            );
            set(
                &mut s.conditions,
                "BackupHealthy",
                false,
                "BackupFailing",
                &m,
                generation,
                now,
            );
        }
        None => set(
            &mut s.conditions,
            "BackupFailing",
            false,
            "Shipping",
            "the object store accepts every shipment",
            generation,
            now,
        ),
    }
    if lagging {
        let m = format!("{waiting} (limit {:.0} s)", limit as f64 / 1e3);
        set(
            &mut s.conditions,
            "BackupLagging",
            true,
            "LagOverLimit",
            &m,
            generation,
            now,
        );
        if st.last_error.is_none() {
            set(
                &mut s.conditions,
                "BackupHealthy",
                false,
                "BackupLagging",
                &m,
                generation,
                now,
            );
        }
    } else {
        let m = format!(
            "lag {:.1} s, within {:.0} s",
            st.lag_ms as f64 / 1e3,
            limit as f64 / 1e3
        );
        set(
            &mut s.conditions,
            "BackupLagging",
            false,
            "WithinLimit",
            &m,
            generation,
            now,
        );
    }
    if st.last_error.is_none() && !lagging {
        let window = match (
            &s.backup
                .as_ref()
                .and_then(|b| b.first_recoverable_time.clone()),
            rfc3339(last_recoverable),
        ) {
            (Some(a), Some(b)) => format!("; recoverable from {a} to {b}"),
            _ => String::new(),
        };
        let m = format!("transaction {} shipped{window}", st.shipped_txid);
        set(
            &mut s.conditions,
            "BackupHealthy",
            true,
            "Shipping",
            &m,
            generation,
            now,
        );
    }
}

/// Status while something stands in the way: `phase`, `Ready=False` with `reason`.
/// `progressing` says whether the operator is still moving (True) or waits for a change.
pub fn blocked(
    pdb: &PluggableDatabase,
    phase: PdbPhase,
    reason: &str,
    message: &str,
    progressing: bool,
    now: &Time,
) -> PluggableDatabaseStatus {
    let mut s = base(pdb);
    // An Invalid or Failed spec keeps the last known phase of existing data visible
    // through the conditions; the phase itself says what to look at.
    s.phase = Some(phase);
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

/// Status of an object this version cannot read (its spec does not fit the types): the
/// status it had is unknown, so only the phase and the reason are written.
pub fn unreadable(generation: Option<i64>, error: &str, now: &Time) -> PluggableDatabaseStatus {
    let mut s = PluggableDatabaseStatus {
        phase: Some(phase::INVALID),
        observed_generation: generation,
        ..Default::default()
    };
    let m = format!("this operator cannot read the PluggableDatabase: {error}; fix the spec (nothing in the engine changes meanwhile)");
    set(
        &mut s.conditions,
        "Ready",
        false,
        "MalformedSpec",
        &m,
        generation,
        now,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantdb_engine_api::requests::OpenMode as EngineOpenMode;

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
        assert_eq!(s.phase, Some(PdbPhase::Open));
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
        assert_eq!(s.phase, Some(PdbPhase::Mounted));
    }

    fn ship(lag_ms: i64, error: Option<&str>) -> ShipStatus {
        ShipStatus {
            shipped_txid: 42,
            shipped_ms: 1_767_225_600_000,
            last_snapshot_ms: 1_767_225_000_000,
            first_recoverable_ms: Some(1_767_225_000_000),
            pending_commits: 3,
            backlog_bytes: 12_288,
            lag_ms,
            last_error: error.map(str::to_string),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PluggableDatabaseStatus, t: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn backup_status_says_healthy_lagging_or_failing() {
        let mut s = PluggableDatabaseStatus::default();
        backup(&mut s, Some(Some(&ship(400, None))), 1000, Some(1), &now());
        assert_eq!(cond(&s, "BackupHealthy"), ("True", "Shipping"));
        assert_eq!(cond(&s, "BackupLagging").0, "False");
        assert_eq!(cond(&s, "BackupFailing").0, "False");
        let b = s.backup.clone().unwrap();
        assert_eq!(b.last_shipped_transaction, Some(42));
        assert_eq!(
            b.last_shipped_time.as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(b.last_recoverable_time, b.last_shipped_time);
        assert_eq!(
            b.first_recoverable_time.as_deref(),
            Some("2025-12-31T23:50:00.000Z")
        );

        backup(
            &mut s,
            Some(Some(&ship(25_000, None))),
            1000,
            Some(1),
            &now(),
        );
        assert_eq!(cond(&s, "BackupHealthy"), ("False", "BackupLagging"));
        assert_eq!(cond(&s, "BackupLagging"), ("True", "LagOverLimit"));

        backup(
            &mut s,
            Some(Some(&ship(25_000, Some("connection refused")))),
            1000,
            Some(1),
            &now(),
        );
        assert_eq!(cond(&s, "BackupHealthy"), ("False", "BackupFailing"));
        assert_eq!(cond(&s, "BackupFailing"), ("True", "StoreError"));
        let failing = s
            .conditions
            .iter()
            .find(|c| c.type_ == "BackupFailing")
            .unwrap();
        assert!(
            failing.message.contains("connection refused"),
            "{}",
            failing.message
        );

        backup(&mut s, Some(None), 1000, Some(1), &now());
        assert_eq!(cond(&s, "BackupHealthy"), ("False", "BackupStarting"));
        assert!(s.backup.is_none());

        backup(&mut s, None, 1000, Some(1), &now());
        assert!(s.conditions.iter().all(|c| !c.type_.starts_with("Backup")));
    }

    #[test]
    fn lag_limit_is_ten_delays_and_at_least_ten_seconds() {
        assert_eq!(lag_limit_ms(1000), 10_000);
        assert_eq!(lag_limit_ms(5000), 50_000);
        assert_eq!(lag_limit_ms(10), 10_000);
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
        assert_eq!(s.phase, Some(PdbPhase::Pending));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "TenantNotReady")
        );
    }
}
