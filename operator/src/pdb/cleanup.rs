//! Deletion: the database leaves its engine as `deletionPolicy` says (dropped, or kept
//! as an archive), before the finalizer lets the object go.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tenantdb_crds::{PdbDeletionPolicy, PluggableDatabase};

use super::controller::{engine_err, Context, Error};
use super::report::write_status;
use super::status::{self, phase};
use super::tenant_engine::{tenant_access, TenantAccess};
use crate::reconciler;
use crate::runtime::{now, publish};

/// Remove the database from its engine as `deletionPolicy` says. Never hangs on a
/// tenant that is gone: then there is nothing left to clean.
pub(super) async fn cleanup(
    pdb: &PluggableDatabase,
    ctx: &Context,
    ns: &str,
) -> Result<Action, Error> {
    let holder = pdb
        .status
        .as_ref()
        .and_then(|s| s.tenant.clone())
        .unwrap_or_else(|| pdb.spec.tenant.clone());
    let name = pdb.name_any();
    let engine = match tenant_access(ctx, ns, &holder).await? {
        TenantAccess::Ready(_, e) => e,
        TenantAccess::Missing | TenantAccess::Deleting => {
            tracing::info!(pdb = %reconciler::key(pdb), tenant = %holder, "tenant gone; releasing the finalizer");
            return Ok(Action::await_change());
        }
        TenantAccess::NotReady(why) => {
            let m = format!("deletion waits for Tenant {holder}, which is {why}: resume it, or delete the Tenant to drop everything");
            let s = status::blocked(pdb, phase::DELETING, "DeletionBlocked", &m, true, &now());
            write_status(ctx, pdb, &s).await?;
            return Err(Error::Blocked(m));
        }
    };
    let note = match pdb.spec.deletion_policy {
        PdbDeletionPolicy::Delete => {
            engine
                .drop_database(&name, false)
                .await
                .map_err(engine_err(&holder))?;
            format!("dropped {name} and its file from tenant {holder}'s engine")
        }
        PdbDeletionPolicy::Retain => {
            engine
                .drop_database(&name, true)
                .await
                .map_err(engine_err(&holder))?;
            format!(
                "unregistered {name}; its file is kept under retained/ in tenant {holder}'s volume"
            )
        }
        PdbDeletionPolicy::Unplug => {
            let stamped = || {
                let short: String = name.chars().take(40).collect();
                format!("{short}-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"))
            };
            let archive = match &pdb.spec.unplug_archive {
                // A name already taken (an earlier unplug) must not block deletion forever.
                Some(a)
                    if engine
                        .archive(a)
                        .await
                        .map_err(engine_err(&holder))?
                        .is_none() =>
                {
                    a.clone()
                }
                Some(a) => {
                    let s = stamped();
                    publish(
                        &ctx.recorder,
                        &pdb.object_ref(&()),
                        EventType::Warning,
                        "ArchiveNameTaken",
                        format!("archive {a} exists already; unplugging to {s} instead"),
                    )
                    .await;
                    s
                }
                None => stamped(),
            };
            match engine.unplug(&name, &archive).await.map_err(engine_err(&holder))? {
                Some(m) => format!("unplugged {name} to archive {} (sha256 {}) in tenant {holder}'s engine; plug it with spec.source.plug.archive: {}", m.name, m.sha256, m.name),
                None => format!("{name} was not in tenant {holder}'s engine; nothing to unplug"),
            }
        }
    };
    publish(
        &ctx.recorder,
        &pdb.object_ref(&()),
        EventType::Normal,
        "Deleted",
        note,
    )
    .await;
    Ok(Action::await_change())
}
