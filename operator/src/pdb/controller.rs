//! The part of the PluggableDatabase controller that talks to the API server and to
//! the engines. Each reconcile observes the engine, takes the next step the pure
//! planner names, observes again, and writes what is true into status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalize};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tenantdb_crds::{
    LockdownProfile, PdbDeletionPolicy, PluggableDatabase, PluggableDatabaseStatus, Tenant,
};
use tenantdb_engine_api::requests::{self as eng, CreateRequest};

use super::plan::{self, MoveObserved, MoveStep, Step, Wanted};
use super::status::{self, phase};
use crate::engine_client::{EngineCallError, EngineClient, EngineLocator};
use crate::lockdown::rules;
use crate::metrics::Metrics;
use crate::runtime::{now, publish, Backoff};
use crate::tenant::build::{names, ADMIN_TOKEN_KEY};
use crate::tenant::controller::tenant_resource;

const CONTROLLER: &str = "pluggabledatabase";
/// Finalizer on every PluggableDatabase: its data lives in an engine, outside Kubernetes.
pub const FINALIZER: &str = "tenantdb.io/database";
/// Most engine calls one reconcile makes before it lets others run.
const MAX_STEPS: usize = 8;

/// Errors of one reconcile; each becomes a metric label and a retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// Underlying error.
        source: kube::Error,
    },
    /// An engine did not answer, or failed on its side.
    #[error("tenant {tenant}'s engine: {source}")]
    Engine {
        /// The tenant whose engine was called.
        tenant: String,
        /// Underlying error.
        source: EngineCallError,
    },
    /// The object has no namespace.
    #[error("the PluggableDatabase has no namespace")]
    NoNamespace,
    /// Deletion waits for something outside the operator's reach.
    #[error("{0}")]
    Blocked(String),
    /// The finalizer helper failed.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Engine { .. } => "engine",
            Error::NoNamespace => "no_namespace",
            Error::Blocked(_) => "blocked",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

fn engine_err(tenant: &str) -> impl FnOnce(EngineCallError) -> Error + '_ {
    move |source| Error::Engine {
        tenant: tenant.to_string(),
        source,
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Where the engines are.
    pub locator: EngineLocator,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    backoff: Backoff,
}

impl Context {
    /// A context for the controller.
    pub fn new(
        client: Client,
        locator: EngineLocator,
        recorder: Recorder,
        metrics: Metrics,
    ) -> Self {
        Context {
            client,
            locator,
            recorder,
            metrics,
            backoff: Backoff::default(),
        }
    }
}

/// A tenant as the PDB controller needs it.
enum TenantAccess {
    /// No such Tenant.
    Missing,
    /// Being deleted.
    Deleting,
    /// Exists but its engine does not serve (why).
    NotReady(String),
    /// Serving: the Tenant and a client of its engine.
    Ready(Box<Tenant>, EngineClient),
}

async fn tenant_access(ctx: &Context, ns: &str, name: &str) -> Result<TenantAccess, Error> {
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
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = names(name).credentials;
    let token = secrets
        .get_opt(&secret_name)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{secret_name}")))?
        .and_then(|s| s.data)
        .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
        .and_then(|v| String::from_utf8(v.0).ok());
    let Some(token) = token else {
        return Ok(TenantAccess::NotReady(format!(
            "without its credentials Secret {secret_name}"
        )));
    };
    let client = ctx.locator.client(ns, name, &token);
    Ok(TenantAccess::Ready(Box::new(tenant), client))
}

/// Write `status` when it differs from what the object has, whole (server-side apply:
/// fields that became empty go).
async fn write_status(
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
async fn block(
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

/// Install the profile `name` (if any) in `engine`. `Ok(Err(why))` when the profile
/// does not exist or cannot be installed: the caller reports it and changes nothing.
async fn push_profile(
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
    let Some(profile) = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading LockdownProfile {name}")))?
    else {
        return Ok(Err(format!("LockdownProfile {name} does not exist")));
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
async fn wanted_in(
    ctx: &Context,
    pdb: &PluggableDatabase,
    tenant: &Tenant,
    engine: &EngineClient,
) -> Result<Result<Wanted, Action>, Error> {
    let want = match plan::wanted(pdb, tenant.spec.lockdown_profile.as_deref()) {
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

/// Why the engine refused a step, as a condition reason.
fn refusal_reason(step: &Step, e: &EngineCallError) -> &'static str {
    match (step, e.status()) {
        (Step::Create(r), Some(404)) if r.source.as_ref().is_some_and(|s| s.clone.is_some()) => {
            "CloneSourceNotFound"
        }
        (Step::Create(r), Some(404)) if r.source.as_ref().is_some_and(|s| s.plug.is_some()) => {
            "ArchiveNotFound"
        }
        (Step::Create(r), Some(400)) if r.source.as_ref().is_some_and(|s| s.plug.is_some()) => {
            "ArchiveInvalid"
        }
        (Step::Create(r), Some(404)) if r.source.as_ref().is_some_and(|s| s.restore.is_some()) => {
            "BackupNotFound"
        }
        (Step::Create(r), Some(400)) if r.source.as_ref().is_some_and(|s| s.restore.is_some()) => {
            "RestorePointInvalid"
        }
        (Step::Create(r), Some(409)) if r.source.as_ref().is_some_and(|s| s.restore.is_some()) => {
            "BackupNotConfigured"
        }
        (Step::Create(_), Some(502)) => "BackupStoreUnreachable",
        (_, Some(409)) => "Conflict",
        (_, Some(507)) => "StorageFull",
        _ => "EngineRefused",
    }
}

async fn reconcile(pdb: Arc<PluggableDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = pdb.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<PluggableDatabase> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, pdb.clone(), |event| async {
        match event {
            Finalize::Apply(p) => apply(&p, &ctx, &ns).await,
            Finalize::Cleanup(p) => cleanup(&p, &ctx, &ns).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(
        CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::label),
    );
    if result.is_ok() {
        ctx.backoff.succeeded(&key(&pdb));
    }
    result
}

fn key(pdb: &PluggableDatabase) -> String {
    format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any())
}

async fn apply(pdb: &PluggableDatabase, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let target = pdb.spec.tenant.clone();
    let holder = pdb
        .status
        .as_ref()
        .and_then(|s| s.tenant.clone())
        .unwrap_or_else(|| target.clone());
    if holder != target {
        return relocate(pdb, ctx, ns, &holder, &target).await;
    }
    let (tenant, engine) = match tenant_access(ctx, ns, &target).await? {
        TenantAccess::Ready(t, e) => (t, e),
        other => return wait_for_tenant(ctx, pdb, &target, other).await,
    };
    let want = match wanted_in(ctx, pdb, &tenant, &engine).await? {
        Ok(w) => w,
        Err(action) => return Ok(action),
    };
    if let Some(c) = &want.source.clone {
        // A clone copies another PluggableDatabase of the same tenant.
        let api: Api<PluggableDatabase> = Api::namespaced(ctx.client.clone(), ns);
        let from = api.get_opt(&c.from).await.map_err(kube_err(format!(
            "reading PluggableDatabase {ns}/{}",
            c.from
        )))?;
        let exists = engine
            .database(&want.name)
            .await
            .map_err(engine_err(&target))?;
        if exists.is_none() {
            match from {
                None => {
                    let m = format!(
                        "spec.source.clone.from: there is no PluggableDatabase {ns}/{}",
                        c.from
                    );
                    return block(
                        ctx,
                        pdb,
                        phase::FAILED,
                        "CloneSourceNotFound",
                        &m,
                        Action::requeue(Duration::from_secs(30)),
                    )
                    .await;
                }
                Some(f) if f.spec.tenant != target => {
                    let m = format!("spec.source.clone.from: {} belongs to tenant {}, and clones stay within one tenant", c.from, f.spec.tenant);
                    return block(
                        ctx,
                        pdb,
                        phase::INVALID,
                        "CloneAcrossTenants",
                        &m,
                        Action::await_change(),
                    )
                    .await;
                }
                Some(f)
                    if !f
                        .status
                        .as_ref()
                        .is_some_and(|s| crate::conditions::is_true(&s.conditions, "Ready")) =>
                {
                    // Applied together with its source (kubectl apply -f dir/): wait for it.
                    let m = format!("waiting for clone source {} to be Ready", c.from);
                    let again = Action::requeue(Duration::from_secs(3));
                    return block(ctx, pdb, phase::PENDING, "WaitingForCloneSource", &m, again)
                        .await;
                }
                Some(_) => {}
            }
        }
    }
    let backup_delay = tenant
        .spec
        .backup
        .as_ref()
        .map(|b| b.max_shipping_delay_millis);
    converge(pdb, ctx, &engine, &want, &target, backup_delay).await
}

/// Fill in the backup part of `s` from the engine (when the Tenant has backup), publish
/// an Event when shipping starts or stops failing or lagging, and say when to look again.
async fn backup_status(
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

async fn wait_for_tenant(
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

/// Take engine steps until the engine holds what is wanted, then write status.
async fn converge(
    pdb: &PluggableDatabase,
    ctx: &Context,
    engine: &EngineClient,
    want: &Wanted,
    tenant: &str,
    backup_delay_ms: Option<u64>,
) -> Result<Action, Error> {
    for _ in 0..MAX_STEPS {
        let have = engine
            .database(&want.name)
            .await
            .map_err(engine_err(tenant))?;
        let step = plan::next_step(want, have.as_ref());
        let done = match &step {
            Step::InSync => {
                let Some(have) = have else { break };
                let mut s = status::in_sync(pdb, &have, tenant, &now());
                s.connection_secret = connection(ctx, pdb, engine, tenant).await?;
                let again = backup_status(
                    ctx,
                    pdb,
                    engine,
                    &want.name,
                    tenant,
                    backup_delay_ms,
                    &mut s,
                )
                .await?;
                write_status(ctx, pdb, &s).await?;
                if let Some(note) = status::quota_warning(&have) {
                    let r = pdb.object_ref(&());
                    publish(
                        &ctx.recorder,
                        &r,
                        EventType::Warning,
                        "StorageQuotaNearlyFull",
                        note,
                    )
                    .await;
                }
                // Size, sessions and backup change without any event: look again now and then.
                return Ok(Action::requeue(again));
            }
            Step::Create(req) => engine
                .create(req)
                .await
                .map(|d| format!("created in tenant {tenant}'s engine from {}", d.source)),
            Step::Configure {
                storage_quota_bytes,
                lockdown_profile,
            } => engine
                .configure(
                    &want.name,
                    *storage_quota_bytes,
                    lockdown_profile.as_deref(),
                )
                .await
                .map(|_| String::new()),
            Step::Close(mode) => engine.close(&want.name, *mode).await.map(|_| String::new()),
            Step::Open(mode) => engine.open(&want.name, *mode).await.map(|_| String::new()),
        };
        match done {
            Ok(note) if !note.is_empty() => {
                publish(
                    &ctx.recorder,
                    &pdb.object_ref(&()),
                    EventType::Normal,
                    "Created",
                    note,
                )
                .await
            }
            Ok(_) => {}
            Err(e) if e.is_client_error() || e.status() == Some(502) => {
                let reason = refusal_reason(&step, &e);
                let message = format!("the engine refused: {}", e.message());
                return block(
                    ctx,
                    pdb,
                    phase::FAILED,
                    reason,
                    &message,
                    Action::requeue(Duration::from_secs(60)),
                )
                .await;
            }
            Err(e) => return Err(engine_err(tenant)(e)),
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Keep the database's connection Secret current: a token of `tenant`'s engine for this
/// database alone, and its URL. A token is issued only when the Secret lacks a valid one
/// (first time, after a relocation, after a revocation). `None` when a Secret of that
/// name belongs to someone else: it is left alone, and an Event says so.
async fn connection(
    ctx: &Context,
    pdb: &PluggableDatabase,
    engine: &EngineClient,
    tenant: &str,
) -> Result<Option<String>, Error> {
    use super::connection::{judge, secret, secret_name, Existing};
    let ns = pdb.namespace().ok_or(Error::NoNamespace)?;
    let db = pdb.name_any();
    let name = secret_name(&db);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{name}")))?;
    let stale = match existing.as_ref().map(|s| judge(s, tenant, &ns, &db)) {
        Some(Existing::Foreign) => {
            let m = format!("Secret {name} exists and is not the operator's: no connection details are written for {db}");
            publish(
                &ctx.recorder,
                &pdb.object_ref(&()),
                EventType::Warning,
                "ConnectionSecretTaken",
                m,
            )
            .await;
            return Ok(None);
        }
        Some(Existing::Current(id)) => {
            if engine.token_exists(&id).await.map_err(engine_err(tenant))? {
                return Ok(Some(name));
            }
            None
        }
        Some(Existing::Stale(id)) => id,
        None => None,
    };
    let (id, token) = engine
        .issue_token(&[db.as_str()])
        .await
        .map_err(engine_err(tenant))?;
    let Some(desired) = secret(pdb, tenant, &id, &token) else {
        return Ok(None);
    };
    let applied = secrets
        .patch(
            &name,
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await;
    if let Err(e) = applied {
        // The new token serves no one: take it back before reporting.
        let _ = engine.revoke_token(&id).await;
        return Err(kube_err(format!("writing Secret {ns}/{name}"))(e));
    }
    if let Some(old) = stale {
        // A token of this engine that the Secret no longer holds (another engine's is
        // unknown here, and was revoked there when the database left).
        let _ = engine.revoke_token(&old).await;
    }
    publish(
        &ctx.recorder,
        &pdb.object_ref(&()),
        EventType::Normal,
        "ConnectionSecret",
        format!(
            "Secret {name} holds {db}'s URL in tenant {tenant}'s engine and a token for it alone"
        ),
    )
    .await;
    Ok(Some(name))
}

/// Move the database from `source`'s engine to `target`'s, one verified step at a time.
async fn relocate(
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

/// Remove the database from its engine as `deletionPolicy` says. Never hangs on a
/// tenant that is gone: then there is nothing left to clean.
async fn cleanup(pdb: &PluggableDatabase, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let holder = pdb
        .status
        .as_ref()
        .and_then(|s| s.tenant.clone())
        .unwrap_or_else(|| pdb.spec.tenant.clone());
    let name = pdb.name_any();
    let engine = match tenant_access(ctx, ns, &holder).await? {
        TenantAccess::Ready(_, e) => e,
        TenantAccess::Missing | TenantAccess::Deleting => {
            tracing::info!(pdb = %key(pdb), tenant = %holder, "tenant gone; releasing the finalizer");
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

fn error_policy(pdb: Arc<PluggableDatabase>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.failed(&key(&pdb));
    tracing::warn!(pdb = %key(&pdb), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Run the controller until `shutdown` resolves. PluggableDatabases are re-reconciled
/// when their Tenant or a LockdownProfile they use changes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let pdbs: Api<PluggableDatabase> = Api::all(client.clone());
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    let by_tenant = store.clone();
    let ar = tenant_resource();
    let controller = controller
        .watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            ar,
            watcher::Config::default(),
            move |t: DynamicObject| {
                let (ns, name) = (t.namespace(), t.name_any());
                by_tenant
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == ns
                            && (p.spec.tenant == name
                                || p.status.as_ref().and_then(|s| s.tenant.as_ref()) == Some(&name))
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<LockdownProfile>::all(client),
            watcher::Config::default(),
            move |l: LockdownProfile| {
                let name = l.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|p| rules::profiles_of(p).contains(&name))
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
