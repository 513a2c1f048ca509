//! The part of the PluggableDatabase controller that talks to the API server and to
//! the engines. Each reconcile runs in the shared skeleton (`crate::reconciler`) behind
//! the finalizer, in stages: read the tenant and its engine (`tenant_engine`), validate
//! and build what is wanted (the pure `plan`), apply it step by step, observing the
//! engine before each one (`converge` here), and write what is true (`report`). A
//! changed tenant goes through `relocation`, a deletion through `cleanup`; the connection
//! Secret and its token are `access`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::error_boundary::InvalidObject;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalize};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tenantdb_crds::{LockdownProfile, PluggableDatabase};

use super::access::connection;
use super::cleanup::cleanup;
use super::plan::{self, Step, Wanted};
use super::relocation::relocate;
use super::report::{backup_status, block, write_status};
use super::status::{self, phase};
use super::tenant_engine::{tenant_access, wait_for_tenant, wanted_in, TenantAccess};
use crate::engine_client::{EngineCallError, EngineClient, EngineLocator};
use crate::lockdown::rules;
use crate::metrics::Metrics;
use crate::reconciler::{self, Bookkeeping, ErrorLabel};
use crate::runtime::{now, publish};
use crate::tenant::controller::tenant_resource;

const CONTROLLER: &str = "pluggabledatabase";
/// Finalizer on every PluggableDatabase: its data lives in an engine, outside Kubernetes.
pub const FINALIZER: &str = "tenantdb.io/database";
/// Most engine calls one reconcile makes before it lets others run.
pub(super) const MAX_STEPS: usize = 8;

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

impl ErrorLabel for Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Engine { .. } => "engine",
            Error::NoNamespace => "no_namespace",
            Error::Blocked(_) => "blocked",
            // What failed inside apply or cleanup, not the wrapper it comes back in.
            Error::Finalizer(e) => match &**e {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.label()
                }
                _ => "finalizer",
            },
        }
    }
}

pub(super) fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

pub(super) fn engine_err(tenant: &str) -> impl FnOnce(EngineCallError) -> Error + '_ {
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
    book: Bookkeeping,
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
            book: Bookkeeping::new(CONTROLLER, metrics),
        }
    }
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

/// Objects are watched through `DeserializeGuard`: one this version cannot read becomes
/// an Invalid status with a reason instead of stopping the watch of every database.
async fn reconcile(
    guard: Arc<DeserializeGuard<PluggableDatabase>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = reconciler::key(&*guard);
    match &guard.0 {
        Ok(pdb) => {
            let pdb = Arc::new(pdb.clone());
            ctx.book.observe(&key, finalized(pdb, &ctx)).await
        }
        Err(invalid) => ctx.book.observe(&key, unreadable(invalid, &ctx)).await,
    }
}

/// Say in status why the object cannot be read; wait for it to change.
async fn unreadable(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let ns = meta.namespace.clone().ok_or(Error::NoNamespace)?;
    let name = meta.name.clone().unwrap_or_default();
    let s = status::unreadable(meta.generation, &invalid.error, &now());
    let api: Api<PluggableDatabase> = Api::namespaced(ctx.client.clone(), &ns);
    let (version, kind) = (
        PluggableDatabase::api_version(&()),
        PluggableDatabase::kind(&()),
    );
    crate::runtime::apply_status(&api, &version, &kind, &name, &s)
        .await
        .map_err(kube_err(format!(
            "writing status of PluggableDatabase {ns}/{name}"
        )))?;
    Ok(Action::await_change())
}

/// Apply or clean up, behind the finalizer that keeps the object until its data is dealt with.
async fn finalized(pdb: Arc<PluggableDatabase>, ctx: &Context) -> Result<Action, Error> {
    let ns = pdb.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<PluggableDatabase> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, pdb, |event| async {
        match event {
            Finalize::Apply(p) => apply(&p, ctx, &ns).await,
            Finalize::Cleanup(p) => cleanup(&p, ctx, &ns).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
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

fn error_policy(
    guard: Arc<DeserializeGuard<PluggableDatabase>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.book.retry(&reconciler::key(&*guard), error)
}

/// Run the controller over the PluggableDatabases of `scope` until `shutdown` resolves.
/// They are re-reconciled when their Tenant or a LockdownProfile they use changes.
pub async fn run(
    ctx: Arc<Context>,
    scope: crate::runtime::Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let pdbs: Api<DeserializeGuard<PluggableDatabase>> = scope.api(&client);
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    let by_tenant = store.clone();
    let ar = tenant_resource();
    let controller = controller
        .watches_with(
            scope.api_with(&client, &ar),
            ar,
            watcher::Config::default(),
            move |t: DynamicObject| {
                let (ns, name) = (t.namespace(), t.name_any());
                by_tenant
                    .state()
                    .into_iter()
                    .filter(|g| {
                        g.0.as_ref().is_ok_and(|p| {
                            p.namespace() == ns
                                && (p.spec.tenant == name
                                    || p.status.as_ref().and_then(|s| s.tenant.as_ref())
                                        == Some(&name))
                        })
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            // Guarded: one profile this version cannot read must not stop the watch.
            Api::<DeserializeGuard<LockdownProfile>>::all(client),
            watcher::Config::default(),
            move |l: DeserializeGuard<LockdownProfile>| {
                let name = l.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|g| {
                        g.0.as_ref()
                            .is_ok_and(|p| rules::profiles_of(p).contains(&name))
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown);
    reconciler::drive(controller, reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    //! Reconcile against a scripted API server (`runtime::mock`): every request the
    //! controller makes is answered by the test and checked afterwards, no cluster needed.

    use super::*;
    use crate::runtime::mock;
    use kube::runtime::events::Reporter;
    use serde_json::{json, Value};

    fn pdb(finalizers: &[&str], deleting: bool) -> Value {
        let mut meta = json!({"name": "orders", "namespace": "shop", "uid": "u-1",
            "generation": 2, "finalizers": finalizers});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
        json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
               "metadata": meta, "spec": {"tenant": "acme"}})
    }

    /// Reconcile `obj` once against a server answering with `answer`; the result and
    /// every request made, in order.
    async fn reconcile_once(
        obj: Value,
        answer: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + 'static,
    ) -> (Result<Action, Error>, Vec<mock::Seen>) {
        let (client, server) = mock::client();
        let serving = tokio::spawn(mock::serve_all(server, answer));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let locator = EngineLocator::new("http://127.0.0.1:9").expect("locator");
        let metrics = Metrics::new().expect("metrics");
        let ctx = Arc::new(Context::new(client, locator, recorder, metrics));
        let guard = serde_json::from_value(obj).expect("a guarded object");
        let result = reconcile(Arc::new(guard), ctx).await;
        (result, serving.await.expect("server"))
    }

    /// What the API server answers to writes: the object for a patch of it (finalizers,
    /// status), the body itself for anything else (Events).
    fn echo(method: &str, path: &str, body: &Value) -> (u16, Value) {
        if method == "PATCH" && path.contains("/pluggabledatabases/orders") {
            (200, pdb(&[FINALIZER], false))
        } else {
            (200, body.clone())
        }
    }

    #[tokio::test]
    async fn a_new_database_gets_the_finalizer_before_anything_else() {
        let (result, seen) = reconcile_once(pdb(&[], false), echo).await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (method, path, body) = &seen[0];
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "PATCH",
                "/apis/tenantdb.io/v1alpha1/namespaces/shop/pluggabledatabases/orders"
            )
        );
        assert!(body.to_string().contains(FINALIZER), "{body}");
    }

    #[tokio::test]
    async fn a_database_whose_tenant_is_missing_waits_pending_and_says_why() {
        let (result, seen) = reconcile_once(pdb(&[FINALIZER], false), |m, p, b| {
            if m == "GET" && p.ends_with("/tenants/acme") {
                mock::not_found("tenants acme")
            } else {
                echo(m, p, b)
            }
        })
        .await;
        assert_eq!(
            result.expect("reconciled"),
            Action::requeue(Duration::from_secs(30))
        );
        let status = seen
            .iter()
            .find(|(m, p, _)| m == "PATCH" && p.ends_with("/pluggabledatabases/orders/status"))
            .map(|(_, _, b)| &b["status"])
            .unwrap_or_else(|| panic!("no status written: {seen:?}"));
        assert_eq!(status["phase"], "Pending");
        let ready = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .expect("a Ready condition");
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("TenantNotFound"))
        );
        let event = seen
            .iter()
            .find(|(m, p, _)| m == "POST" && p.ends_with("/events"))
            .map(|(_, _, b)| b)
            .unwrap_or_else(|| panic!("no Event: {seen:?}"));
        assert_eq!(event["reason"], "Pending");
        assert!(
            !seen.iter().any(|(_, p, _)| p.contains("/secrets/")),
            "no credentials read for a missing tenant: {seen:?}"
        );
    }

    #[tokio::test]
    async fn deleting_a_database_of_a_gone_tenant_releases_the_finalizer() {
        let (result, seen) = reconcile_once(pdb(&[FINALIZER], true), |m, p, b| {
            if m == "GET" && p.ends_with("/tenants/acme") {
                mock::not_found("tenants acme")
            } else {
                echo(m, p, b)
            }
        })
        .await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
        let last = seen.last().expect("requests");
        assert_eq!(last.0, "PATCH", "{seen:?}");
        assert!(
            last.1.ends_with("/pluggabledatabases/orders") && last.2.to_string().contains("remove"),
            "the finalizer is removed last: {seen:?}"
        );
    }

    #[tokio::test]
    async fn an_api_server_failure_is_an_error_to_retry_not_a_status() {
        let (result, seen) = reconcile_once(pdb(&[FINALIZER], false), |_, _, _| {
            (500, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd down"}))
        })
        .await;
        let err = result.expect_err("an error");
        assert_eq!(err.label(), "kube", "{err}");
        assert!(
            !seen.iter().any(|(m, _, _)| m == "PATCH"),
            "nothing written on a failed read: {seen:?}"
        );
    }

    /// Issue 17: a PluggableDatabase this version cannot read stopped the typed watch of
    /// every database; through `DeserializeGuard` it gets an Invalid status with a reason
    /// and nothing else is touched (no finalizer, no engine, no tenant read).
    #[tokio::test]
    async fn an_unreadable_database_gets_an_invalid_status_and_nothing_else() {
        let mut obj = pdb(&[], false);
        obj["spec"]["tenant"] = json!(7);
        let (result, seen) = reconcile_once(obj, echo).await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
        assert_eq!(seen.len(), 1, "only the status is written: {seen:?}");
        let (method, path, body) = &seen[0];
        assert_eq!(method, "PATCH");
        assert!(
            path.ends_with("/pluggabledatabases/orders/status"),
            "{path}"
        );
        assert_eq!(body["status"]["phase"], "Invalid");
        assert_eq!(body["status"]["conditions"][0]["reason"], "MalformedSpec");
        assert!(
            body["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("integer `7`") && m.contains("fix the spec")),
            "the message says what is wrong: {body}"
        );
    }
}
