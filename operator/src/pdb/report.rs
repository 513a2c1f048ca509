//! The status stage of a PluggableDatabase reconcile: status written whole when it
//! changed, with an Event on each phase change, and the backup part read from the engine.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tenantdb_crds::{PluggableDatabase, PluggableDatabaseStatus};

use super::controller::{engine_err, kube_err, Context, Error};
use super::status::{self, phase};
use crate::engine_client::EngineClient;
use crate::runtime::{now, publish};

/// Write `status` when it differs from what the object has, whole (server-side apply:
/// fields that became empty go).
pub(super) async fn write_status(
    ctx: &Context,
    pdb: &PluggableDatabase,
    status: &PluggableDatabaseStatus,
) -> Result<(), Error> {
    if pdb.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = pdb.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<PluggableDatabase> = Api::namespaced(ctx.client.clone(), &ns);
    crate::runtime::apply_status(
        &api,
        &PluggableDatabase::api_version(&()),
        &PluggableDatabase::kind(&()),
        &pdb.name_any(),
        status,
    )
    .await
    .map_err(kube_err(format!(
        "writing status of PluggableDatabase {ns}/{}",
        pdb.name_any()
    )))?;
    let old = pdb.status.as_ref().and_then(|s| s.phase);
    if old != status.phase {
        if let Some(p) = status.phase {
            let warn = p == phase::FAILED || p == phase::INVALID;
            let reason = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            publish(
                &ctx.recorder,
                &pdb.object_ref(&()),
                if warn {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                p.as_str(),
                format!(
                    "phase {} → {}: {reason}",
                    old.map_or("none", |o| o.as_str()),
                    p.as_str()
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// Write a blocked status and return `action`.
pub(super) async fn block(
    ctx: &Context,
    pdb: &PluggableDatabase,
    phase: tenantdb_crds::PdbPhase,
    reason: &str,
    message: &str,
    action: Action,
) -> Result<Action, Error> {
    let progressing = phase == phase::PENDING || phase == phase::RELOCATING;
    let s = status::blocked(pdb, phase, reason, message, progressing, &now());
    write_status(ctx, pdb, &s).await?;
    Ok(action)
}

/// Fill in the backup part of `s` from the engine (when the Tenant has backup), publish
/// an Event when shipping starts or stops failing or lagging, and say when to look again.
pub(super) async fn backup_status(
    ctx: &Context,
    pdb: &PluggableDatabase,
    engine: &EngineClient,
    name: &str,
    tenant: &str,
    delay_ms: Option<u64>,
    s: &mut PluggableDatabaseStatus,
) -> Result<Duration, Error> {
    let g = pdb.metadata.generation;
    let Some(delay_ms) = delay_ms else {
        status::backup(s, None, 0, g, &now());
        return Ok(Duration::from_secs(60));
    };
    let observed = match engine.backup_status(name).await {
        Ok(st) => st,
        // The engine has not restarted with backup in its configuration yet.
        Err(e) if e.status() == Some(409) => None,
        Err(e) => return Err(engine_err(tenant)(e)),
    };
    let before = s.conditions.clone();
    status::backup(s, Some(observed.as_ref()), delay_ms, g, &now());
    for type_ in ["BackupFailing", "BackupLagging"] {
        let was = crate::conditions::is_true(&before, type_);
        let is = crate::conditions::is_true(&s.conditions, type_);
        if was == is {
            continue;
        }
        let message = s
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let (kind, reason) = if is {
            (EventType::Warning, type_)
        } else {
            (EventType::Normal, "BackupRecovered")
        };
        publish(&ctx.recorder, &pdb.object_ref(&()), kind, reason, message).await;
    }
    Ok(Duration::from_secs(30))
}
