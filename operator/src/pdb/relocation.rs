//! Relocation: a database whose `spec.tenant` changed moves from the engine that holds it
//! to the new tenant's, one verified step at a time (unplug, copy, plug, drop), each step
//! recorded in status so that a restart resumes where it stopped.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tenantdb_crds::PluggableDatabase;
use tenantdb_engine_api::requests::{self as eng, CreateRequest};

use super::controller::{engine_err, Context, Error, MAX_STEPS};
use super::plan::{self, MoveObserved, MoveStep};
use super::report::{block, write_status};
use super::status::{self, phase};
use super::tenant_engine::{tenant_access, wanted_in, TenantAccess};
use crate::runtime::{now, publish};

/// Move the database from `source`'s engine to `target`'s, one verified step at a time.
pub(super) async fn relocate(
    pdb: &PluggableDatabase,
    ctx: &Context,
    ns: &str,
    source: &str,
    target: &str,
) -> Result<Action, Error> {
    let wait = Action::requeue(Duration::from_secs(10));
    let src = match tenant_access(ctx, ns, source).await? {
        TenantAccess::Ready(_, e) => e,
        TenantAccess::Missing => {
            // The data went with its tenant: start afresh at the target from spec.source.
            let mut s = pdb.status.clone().unwrap_or_default();
            s.tenant = None;
            publish(
                &ctx.recorder,
                &pdb.object_ref(&()),
                EventType::Warning,
                "SourceTenantGone",
                format!("Tenant {source} no longer exists, so its data cannot move; creating the database in {target} from spec.source"),
            )
            .await;
            write_status(ctx, pdb, &s).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        TenantAccess::Deleting | TenantAccess::NotReady(_) => {
            let m = format!("waiting for Tenant {source} (the database's current home) to serve");
            return block(
                ctx,
                pdb,
                phase::RELOCATING,
                "SourceTenantNotReady",
                &m,
                wait,
            )
            .await;
        }
    };
    let (tenant, tgt) = match tenant_access(ctx, ns, target).await? {
        TenantAccess::Ready(t, e) => (t, e),
        _ => {
            let m = format!("waiting for Tenant {target} (the new home) to be Ready");
            return block(
                ctx,
                pdb,
                phase::RELOCATING,
                "TargetTenantNotReady",
                &m,
                wait,
            )
            .await;
        }
    };
    let want = match wanted_in(ctx, pdb, &tenant, &tgt).await? {
        Ok(w) => w,
        Err(action) => return Ok(action),
    };
    let archive = plan::relocation_archive(&pdb.uid().unwrap_or_default());
    let plugged_from = format!("plug of {archive}");
    for _ in 0..MAX_STEPS {
        let target_db = tgt.database(&want.name).await.map_err(engine_err(target))?;
        if let Some(d) = &target_db {
            if d.source != plugged_from {
                let m = format!(
                    "Tenant {target} already has a database named {} (from {}); rename one of them",
                    want.name, d.source
                );
                return block(
                    ctx,
                    pdb,
                    phase::FAILED,
                    "Conflict",
                    &m,
                    Action::requeue(Duration::from_secs(60)),
                )
                .await;
            }
        }
        let observed = MoveObserved {
            source_database: src
                .database(&want.name)
                .await
                .map_err(engine_err(source))?
                .is_some(),
            source_archive: src
                .archive(&archive)
                .await
                .map_err(engine_err(source))?
                .is_some(),
            target_database: target_db.is_some(),
            target_archive: tgt
                .archive(&archive)
                .await
                .map_err(engine_err(target))?
                .is_some(),
        };
        let step = plan::move_step(observed);
        let message = format!("relocating from {source} to {target}: {:?}", step);
        let s = status::blocked(
            pdb,
            phase::RELOCATING,
            step.reason(),
            &message,
            true,
            &now(),
        );
        write_status(ctx, pdb, &s).await?;
        match step {
            MoveStep::Unplug => {
                src.unplug(&want.name, &archive)
                    .await
                    .map_err(engine_err(source))?;
            }
            MoveStep::Transfer => {
                src.send_archive(&archive, &tgt)
                    .await
                    .map_err(engine_err(target))?;
            }
            MoveStep::Plug => {
                let req = CreateRequest {
                    name: want.name.clone(),
                    source: Some(eng::Source {
                        seed: None,
                        empty: None,
                        clone: None,
                        plug: Some(eng::PlugSource {
                            archive: archive.clone(),
                        }),
                        restore: None,
                    }),
                    open_mode: want.open_mode,
                    storage_quota_bytes: want.storage_quota_bytes,
                    lockdown_profile: want.lockdown_profile.clone(),
                };
                tgt.create(&req).await.map_err(engine_err(target))?;
            }
            MoveStep::Finish => {
                tgt.delete_archive(&archive)
                    .await
                    .map_err(engine_err(target))?;
                src.delete_archive(&archive)
                    .await
                    .map_err(engine_err(source))?;
                let mut s = pdb.status.clone().unwrap_or_default();
                s.tenant = Some(target.to_string());
                write_status(ctx, pdb, &s).await?;
                publish(
                    &ctx.recorder,
                    &pdb.object_ref(&()),
                    EventType::Normal,
                    "Relocated",
                    format!("moved from tenant {source} to {target}, checksum verified"),
                )
                .await;
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            MoveStep::Lost => {
                let m = format!(
                    "neither {source} nor {target} holds database {} or its relocation archive",
                    want.name
                );
                return block(
                    ctx,
                    pdb,
                    phase::FAILED,
                    "RelocationLost",
                    &m,
                    Action::await_change(),
                )
                .await;
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}
