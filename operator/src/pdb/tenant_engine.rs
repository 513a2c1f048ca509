//! The tenant's engine as a PluggableDatabase reconcile reaches it: whether the Tenant
//! serves (and why not), a client with its admin token, and what the database wants there
//! with its lockdown profile installed.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tenantdb_crds::{LockdownProfile, PluggableDatabase, Tenant};

use super::controller::{engine_err, kube_err, Context, Error};
use super::plan::{self, Wanted};
use super::report::block;
use super::status::phase;
use crate::engine_client::EngineClient;
use crate::lockdown::rules;

/// A tenant as the PDB controller needs it.
pub(super) enum TenantAccess {
    /// No such Tenant.
    Missing,
    /// Being deleted.
    Deleting,
    /// Exists but its engine does not serve (why).
    NotReady(String),
    /// Serving: the Tenant and a client of its engine.
    Ready(Box<Tenant>, EngineClient),
}

pub(super) async fn tenant_access(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<TenantAccess, Error> {
    let tenants: Api<Tenant> = Api::namespaced(ctx.client.clone(), ns);
    let tenant = match tenants.get_opt(name).await {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(TenantAccess::Missing),
        Err(kube::Error::SerdeError(e)) => {
            return Ok(TenantAccess::NotReady(format!("unreadable ({e})")))
        }
        Err(e) => return Err(kube_err(format!("reading Tenant {ns}/{name}"))(e)),
    };
    if tenant.metadata.deletion_timestamp.is_some() {
        return Ok(TenantAccess::Deleting);
    }
    let status = tenant.status.clone().unwrap_or_default();
    if tenant.spec.suspended {
        return Ok(TenantAccess::NotReady("suspended".into()));
    }
    if !crate::conditions::is_true(&status.conditions, "Ready") {
        let phase = status.phase.map(|p| p.as_str()).unwrap_or("not ready yet");
        return Ok(TenantAccess::NotReady(phase.to_string()));
    }
    let access = crate::tenant::engine_access::admin_client(&ctx.client, &ctx.locator, ns, name)
        .await
        .map_err(kube_err(format!(
            "reading the Secrets of Tenant {ns}/{name}"
        )))?;
    let client = match access {
        Ok(c) => c,
        Err(why) => return Ok(TenantAccess::NotReady(why)),
    };
    Ok(TenantAccess::Ready(Box::new(tenant), client))
}

pub(super) async fn wait_for_tenant(
    ctx: &Context,
    pdb: &PluggableDatabase,
    tenant: &str,
    access: TenantAccess,
) -> Result<Action, Error> {
    let (reason, message) = match access {
        TenantAccess::Missing => (
            "TenantNotFound",
            format!("there is no Tenant {tenant} in this namespace"),
        ),
        TenantAccess::Deleting => (
            "TenantDeleting",
            format!("Tenant {tenant} is being deleted"),
        ),
        TenantAccess::NotReady(why) => ("TenantNotReady", format!("Tenant {tenant} is {why}")),
        TenantAccess::Ready(..) => ("TenantReady", String::new()),
    };
    // The Tenant watch wakes this object up when the tenant changes; the requeue is a safety net.
    block(
        ctx,
        pdb,
        phase::PENDING,
        reason,
        &message,
        Action::requeue(Duration::from_secs(30)),
    )
    .await
}

/// Install the profile `name` (if any) in `engine`. `Ok(Err(why))` when the profile
/// does not exist or cannot be installed: the caller reports it and changes nothing.
pub(super) async fn push_profile(
    ctx: &Context,
    engine: &EngineClient,
    tenant: &str,
    name: Option<&str>,
) -> Result<Result<(), String>, Error> {
    let Some(name) = name else {
        return Ok(Ok(()));
    };
    if let Err(e) = rules::valid_name(name) {
        return Ok(Err(e));
    }
    let api: Api<LockdownProfile> = Api::all(ctx.client.clone());
    let profile = match api.get_opt(name).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Err(format!("LockdownProfile {name} does not exist"))),
        Err(kube::Error::SerdeError(e)) => {
            return Ok(Err(format!(
                "LockdownProfile {name} cannot be read by this operator version: {e}"
            )))
        }
        Err(e) => return Err(kube_err(format!("reading LockdownProfile {name}"))(e)),
    };
    let rules = match rules::engine_rules(&profile.spec) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("LockdownProfile {name}: {e}"))),
    };
    engine
        .put_profile(name, &rules)
        .await
        .map_err(engine_err(tenant))?;
    Ok(Ok(()))
}

/// What `pdb` wants in `tenant`'s engine, with its lockdown profile installed there.
/// `Ok(Err(action))` when the spec cannot be acted on: the status says why.
pub(super) async fn wanted_in(
    ctx: &Context,
    pdb: &PluggableDatabase,
    tenant: &Tenant,
    engine: &EngineClient,
) -> Result<Result<Wanted, Action>, Error> {
    let profile = plan::TenantProfile {
        name: tenant.spec.lockdown_profile.as_deref(),
        enforced: tenant.spec.enforce_lockdown_profile,
    };
    let want = match plan::wanted(pdb, profile) {
        Ok(w) => w,
        Err(inv) => {
            let wait = Action::await_change();
            return block(ctx, pdb, phase::INVALID, inv.reason, &inv.message, wait)
                .await
                .map(Err);
        }
    };
    let name = tenant.name_any();
    if let Err(why) = push_profile(ctx, engine, &name, want.lockdown_profile.as_deref()).await? {
        // The LockdownProfile watch wakes this object when the profile appears.
        let wait = Action::requeue(Duration::from_secs(60));
        return block(ctx, pdb, phase::INVALID, "ProfileNotFound", &why, wait)
            .await
            .map(Err);
    }
    Ok(Ok(want))
}
