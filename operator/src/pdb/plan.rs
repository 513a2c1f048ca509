//! Pure: what a PluggableDatabase wants of its engine, and the next call that brings
//! the engine closer to it. No client here; the controller observes, asks, acts.

use tenantdb_crds::{CloneMode, OpenMode, PdbSource, PluggableDatabase};
use tenantdb_engine_api::requests::OpenMode as EngineOpenMode;
use tenantdb_engine_api::requests::{self as eng, CloseMode, CreateRequest};

use crate::engine_client::EngineDatabase;
use crate::quantity;

/// What the engine should hold for one PluggableDatabase.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// Database name in the engine (the object's name).
    pub name: String,
    /// Source for a first creation.
    pub source: eng::Source,
    /// Open mode; `None` is Mounted.
    pub open_mode: Option<EngineOpenMode>,
    /// How sessions end when leaving an open mode.
    pub close_mode: CloseMode,
    /// Storage quota in bytes.
    pub storage_quota_bytes: Option<u64>,
    /// Lockdown profile in force (the object's, else its Tenant's).
    pub lockdown_profile: Option<String>,
}

/// A spec the operator cannot act on; becomes a condition with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// Condition reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// The engine's open mode for a spec open mode (`None` is Mounted).
pub fn engine_open_mode(mode: OpenMode) -> Option<EngineOpenMode> {
    match mode {
        OpenMode::ReadWrite => Some(EngineOpenMode::ReadWrite),
        OpenMode::ReadOnly => Some(EngineOpenMode::ReadOnly),
        OpenMode::Restricted => Some(EngineOpenMode::Restricted),
        OpenMode::Mounted => None,
    }
}

/// The spec open mode for what the engine reports.
pub fn spec_open_mode(mode: Option<EngineOpenMode>) -> OpenMode {
    match mode {
        Some(EngineOpenMode::ReadWrite) => OpenMode::ReadWrite,
        Some(EngineOpenMode::ReadOnly) => OpenMode::ReadOnly,
        Some(EngineOpenMode::Restricted) => OpenMode::Restricted,
        None => OpenMode::Mounted,
    }
}

fn engine_source(name: &str, source: &PdbSource) -> Result<eng::Source, Invalid> {
    let set = [
        source.seed.is_some(),
        source.clone.is_some(),
        source.plug.is_some(),
        source.restore.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(invalid(
            "InvalidSource",
            "spec.source sets exactly one of seed, clone, plug or restore",
        ));
    }
    let mut out = eng::Source {
        seed: None,
        empty: None,
        clone: None,
        plug: None,
        restore: None,
    };
    if source.seed.is_some() {
        out.seed = Some(serde_json::json!({}));
    }
    if let Some(c) = &source.clone {
        if c.from == name {
            return Err(invalid(
                "InvalidSource",
                "a database cannot be cloned from itself",
            ));
        }
        out.clone = Some(eng::CloneSource {
            from: c.from.clone(),
            mode: match c.mode {
                CloneMode::Full => eng::CloneMode::Full,
                CloneMode::Snapshot => eng::CloneMode::Snapshot,
                CloneMode::MetadataOnly => eng::CloneMode::MetadataOnly,
            },
        });
    }
    if let Some(p) = &source.plug {
        tenantdb_engine_api::names::validate("archive", &p.archive)
            .map_err(|e| invalid("InvalidSource", format!("spec.source.plug.archive: {e}")))?;
        out.plug = Some(eng::PlugSource {
            archive: p.archive.clone(),
        });
    }
    if let Some(r) = &source.restore {
        for (field, value) in [
            ("tenant", r.tenant.as_deref()),
            ("database", Some(r.database.as_str())),
        ] {
            if let Some(v) = value {
                tenantdb_engine_api::names::validate(field, v).map_err(|e| {
                    invalid("InvalidSource", format!("spec.source.restore.{field}: {e}"))
                })?;
            }
        }
        if let Some(t) = &r.point_in_time {
            chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                invalid(
                    "InvalidSource",
                    format!("spec.source.restore.pointInTime {t:?} is not RFC 3339: {e}"),
                )
            })?;
        }
        out.restore = Some(Box::new(eng::RestoreSource {
            tenant: r.tenant.clone(),
            database: r.database.clone(),
            point_in_time: r.point_in_time.clone(),
        }));
    }
    Ok(out)
}

/// The Tenant's lockdown profile as its databases see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantProfile<'a> {
    /// The Tenant's `lockdownProfile`.
    pub name: Option<&'a str>,
    /// Its `enforceLockdownProfile`: the profile every database gets, whatever it asks.
    pub enforced: bool,
}

impl<'a> TenantProfile<'a> {
    /// A default that a database's own `lockdownProfile` replaces.
    pub fn default_only(name: Option<&'a str>) -> Self {
        TenantProfile {
            name,
            enforced: false,
        }
    }
}

/// What `pdb` wants, under its Tenant's lockdown profile.
pub fn wanted(pdb: &PluggableDatabase, tenant: TenantProfile<'_>) -> Result<Wanted, Invalid> {
    let name = pdb.metadata.name.clone().unwrap_or_default();
    tenantdb_engine_api::names::validate("database", &name)
        .map_err(|e| invalid("InvalidName", e.to_string()))?;
    let spec = &pdb.spec;
    let storage_quota_bytes = match &spec.storage_quota {
        None => None,
        Some(q) => match quantity::bytes(q) {
            Ok(0) | Err(_) => {
                return Err(invalid(
                    "InvalidStorageQuota",
                    format!("spec.storageQuota {q:?} is not a positive quantity such as 1Gi"),
                ))
            }
            Ok(b) => Some(b),
        },
    };
    Ok(Wanted {
        source: engine_source(&name, &spec.source)?,
        name,
        open_mode: engine_open_mode(spec.open_mode),
        close_mode: match spec.close_mode {
            tenantdb_crds::CloseMode::Normal => CloseMode::Normal,
            tenantdb_crds::CloseMode::Immediate => CloseMode::Immediate,
            tenantdb_crds::CloseMode::Abort => CloseMode::Abort,
        },
        storage_quota_bytes,
        lockdown_profile: lockdown_profile(spec.lockdown_profile.as_deref(), tenant)?,
    })
}

/// The profile a database runs under: the Tenant's when it is enforced (a database naming
/// another is Invalid), else the database's own, else the Tenant's default.
fn lockdown_profile(
    own: Option<&str>,
    tenant: TenantProfile<'_>,
) -> Result<Option<String>, Invalid> {
    match (tenant.enforced, tenant.name, own) {
        (true, Some(t), Some(o)) if o != t => Err(invalid(
            "LockdownProfileEnforced",
            format!("the Tenant enforces LockdownProfile {t}; spec.lockdownProfile {o} cannot replace it (remove it, or name {t})"),
        )),
        (true, Some(t), _) => Ok(Some(t.to_string())),
        _ => Ok(own.or(tenant.name).map(str::to_string)),
    }
}

/// One call to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create the database.
    Create(CreateRequest),
    /// Set quota and profile.
    Configure {
        /// Storage quota in bytes.
        storage_quota_bytes: Option<u64>,
        /// Lockdown profile.
        lockdown_profile: Option<String>,
    },
    /// Leave the current open mode, ending sessions as the spec says.
    Close(CloseMode),
    /// Open in this mode.
    Open(EngineOpenMode),
    /// Nothing to do: the engine holds what is wanted.
    InSync,
}

/// The next call that brings `have` (what the engine reports) to `want`.
/// Configuration comes first, so a database never opens under an old profile; a mode
/// change closes first with the spec's close mode, then opens.
pub fn next_step(want: &Wanted, have: Option<&EngineDatabase>) -> Step {
    let Some(have) = have else {
        return Step::Create(CreateRequest {
            name: want.name.clone(),
            source: Some(want.source.clone()),
            open_mode: want.open_mode,
            storage_quota_bytes: want.storage_quota_bytes,
            lockdown_profile: want.lockdown_profile.clone(),
        });
    };
    if have.storage_quota_bytes != want.storage_quota_bytes
        || have.lockdown_profile != want.lockdown_profile
    {
        return Step::Configure {
            storage_quota_bytes: want.storage_quota_bytes,
            lockdown_profile: want.lockdown_profile.clone(),
        };
    }
    match (have.open_mode, want.open_mode) {
        (a, b) if a == b => Step::InSync,
        (Some(_), _) => Step::Close(want.close_mode),
        (None, Some(mode)) => Step::Open(mode),
        (None, None) => Step::InSync,
    }
}

/// The archive a relocation moves the data through (unique per object, ≤ 63 characters).
pub fn relocation_archive(uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(16)
        .collect();
    format!("relocation-{short}")
}

/// What each side of a relocation holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveObserved {
    /// The source engine has the database registered.
    pub source_database: bool,
    /// The source engine has the relocation archive.
    pub source_archive: bool,
    /// The target engine has the database registered, plugged from the relocation archive.
    pub target_database: bool,
    /// The target engine has the relocation archive.
    pub target_archive: bool,
}

/// One step of a relocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStep {
    /// Close and unplug at the source into the relocation archive.
    Unplug,
    /// Stream the archive to the target, which verifies its checksum.
    Transfer,
    /// Plug the archive at the target and open it as the spec says.
    Plug,
    /// The target serves: delete the archives on both sides and switch.
    Finish,
    /// Neither side has the data: nothing can be moved.
    Lost,
}

impl MoveStep {
    /// Reason shown in the Progressing condition while this step runs.
    pub fn reason(self) -> &'static str {
        match self {
            MoveStep::Unplug => "RelocationUnplugging",
            MoveStep::Transfer => "RelocationTransferring",
            MoveStep::Plug => "RelocationPlugging",
            MoveStep::Finish => "RelocationFinishing",
            MoveStep::Lost => "RelocationLost",
        }
    }
}

/// The next relocation step. Order matters for safety: the source's copy (database,
/// then archive) goes only once the target has the next one, so a failure at any point
/// leaves the data on at least one side and the next reconcile resumes from there.
pub fn move_step(o: MoveObserved) -> MoveStep {
    if o.target_database {
        MoveStep::Finish
    } else if o.target_archive {
        MoveStep::Plug
    } else if o.source_archive {
        MoveStep::Transfer
    } else if o.source_database {
        MoveStep::Unplug
    } else {
        MoveStep::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(
        open: Option<EngineOpenMode>,
        quota: Option<u64>,
        profile: Option<&str>,
    ) -> EngineDatabase {
        EngineDatabase {
            name: "orders".into(),
            open_mode: open,
            source: "seed".into(),
            storage_quota_bytes: quota,
            lockdown_profile: profile.map(str::to_string),
            size_bytes: 4096,
            active_sessions: 0,
        }
    }

    fn pdb(yaml: &str) -> PluggableDatabase {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = "apiVersion: tenantdb.io/v1alpha1\nkind: PluggableDatabase\nmetadata: {name: orders, namespace: shop}\nspec:\n  tenant: acme\n";

    #[test]
    fn wanted_fills_defaults_and_takes_the_tenant_profile() {
        let w = wanted(&pdb(BASE), TenantProfile::default_only(Some("strict"))).unwrap();
        assert_eq!(w.open_mode, Some(EngineOpenMode::ReadWrite));
        assert!(w.source.seed.is_some());
        assert_eq!(w.lockdown_profile.as_deref(), Some("strict"));
        let own = pdb(&format!(
            "{BASE}  lockdownProfile: mine\n  storageQuota: 1Mi\n"
        ));
        let w = wanted(&own, TenantProfile::default_only(Some("strict"))).unwrap();
        assert_eq!(w.lockdown_profile.as_deref(), Some("mine"));
        assert_eq!(w.storage_quota_bytes, Some(1 << 20));
    }

    /// Issue 16: a Tenant could not require a profile, since a database's own choice
    /// overrode its default. An enforced profile applies to every database, and one that
    /// names another is refused with a reason.
    #[test]
    fn an_enforced_tenant_profile_cannot_be_replaced_or_dropped() {
        let enforced = TenantProfile {
            name: Some("strict"),
            enforced: true,
        };
        let none = wanted(&pdb(BASE), enforced).unwrap();
        assert_eq!(none.lockdown_profile.as_deref(), Some("strict"));
        let same = pdb(&format!("{BASE}  lockdownProfile: strict\n"));
        assert_eq!(
            wanted(&same, enforced).unwrap().lockdown_profile.as_deref(),
            Some("strict")
        );
        let other = pdb(&format!("{BASE}  lockdownProfile: lax\n"));
        let err = wanted(&other, enforced).unwrap_err();
        assert_eq!(err.reason, "LockdownProfileEnforced");
        assert!(
            err.message.contains("strict") && err.message.contains("lax"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_specs_are_invalid_with_a_reason() {
        let two = pdb(&format!(
            "{BASE}  source: {{seed: {{}}, plug: {{archive: a}}}}\n"
        ));
        assert_eq!(
            wanted(&two, TenantProfile::default()).unwrap_err().reason,
            "InvalidSource"
        );
        let own = pdb(&format!("{BASE}  source: {{clone: {{from: orders}}}}\n"));
        assert_eq!(
            wanted(&own, TenantProfile::default()).unwrap_err().reason,
            "InvalidSource"
        );
        let path = pdb(&format!("{BASE}  source: {{plug: {{archive: ../x}}}}\n"));
        assert_eq!(
            wanted(&path, TenantProfile::default()).unwrap_err().reason,
            "InvalidSource"
        );
        let quota = pdb(&format!("{BASE}  storageQuota: lots\n"));
        assert_eq!(
            wanted(&quota, TenantProfile::default()).unwrap_err().reason,
            "InvalidStorageQuota"
        );
    }

    #[test]
    fn a_restore_source_reaches_the_engine_and_bad_ones_are_invalid() {
        let r = pdb(&format!(
            "{BASE}  source: {{restore: {{database: orders, tenant: old, pointInTime: '2026-12-01T05:40:42Z'}}}}\n"
        ));
        let w = wanted(&r, TenantProfile::default()).unwrap();
        let got = w.source.restore.expect("restore");
        assert_eq!(
            (got.tenant.as_deref(), got.database.as_str()),
            (Some("old"), "orders")
        );
        assert_eq!(got.point_in_time.as_deref(), Some("2026-12-01T05:40:42Z"));
        for bad in [
            "{restore: {database: ../x}}",
            "{restore: {database: a, pointInTime: yesterday}}",
            "{restore: {database: a}, seed: {}}",
        ] {
            let p = pdb(&format!("{BASE}  source: {bad}\n"));
            assert_eq!(
                wanted(&p, TenantProfile::default()).unwrap_err().reason,
                "InvalidSource",
                "{bad}"
            );
        }
    }

    #[test]
    fn steps_create_configure_close_then_open() {
        let mut w = wanted(&pdb(BASE), TenantProfile::default()).unwrap();
        assert!(
            matches!(next_step(&w, None), Step::Create(r) if r.open_mode == Some(EngineOpenMode::ReadWrite))
        );
        let have = db(Some(EngineOpenMode::ReadWrite), None, None);
        assert_eq!(next_step(&w, Some(&have)), Step::InSync);
        w.lockdown_profile = Some("strict".into());
        assert!(matches!(next_step(&w, Some(&have)), Step::Configure { .. }));
        let have = db(Some(EngineOpenMode::ReadWrite), None, Some("strict"));
        w.open_mode = Some(EngineOpenMode::ReadOnly);
        w.close_mode = CloseMode::Immediate;
        assert_eq!(
            next_step(&w, Some(&have)),
            Step::Close(CloseMode::Immediate)
        );
        let closed = db(None, None, Some("strict"));
        assert_eq!(
            next_step(&w, Some(&closed)),
            Step::Open(EngineOpenMode::ReadOnly)
        );
        w.open_mode = None;
        assert_eq!(next_step(&w, Some(&closed)), Step::InSync);
        assert_eq!(
            next_step(&w, Some(&have)),
            Step::Close(CloseMode::Immediate)
        );
    }

    #[test]
    fn relocation_never_drops_the_last_copy() {
        let o = |sd, sa, td, ta| MoveObserved {
            source_database: sd,
            source_archive: sa,
            target_database: td,
            target_archive: ta,
        };
        assert_eq!(move_step(o(true, false, false, false)), MoveStep::Unplug);
        assert_eq!(move_step(o(false, true, false, false)), MoveStep::Transfer);
        assert_eq!(move_step(o(false, true, false, true)), MoveStep::Plug);
        assert_eq!(move_step(o(false, true, true, true)), MoveStep::Finish);
        assert_eq!(move_step(o(false, false, true, false)), MoveStep::Finish);
        assert_eq!(move_step(o(false, false, false, false)), MoveStep::Lost);
        assert!(relocation_archive("0b6c5c1e-7f0e-4b0a-9a56-2f2d5a4c9e11").len() <= 63);
    }
}
