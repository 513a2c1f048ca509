//! The part of the Tenant controller that talks to the API server.
//!
//! Tenants are watched as `DynamicObject`s and parsed in `reconcile`, so one object
//! the current types cannot read becomes a status condition and an Event instead of
//! breaking the watch for every tenant.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tenantdb_crds::{Tenant, TenantStatus};

use super::build::{self, BuildContext, BuildError};
use super::certificates;
use super::status::{self, engine_state, EngineState};
use crate::engine_client::EngineLocator;
use crate::metrics::Metrics;
use crate::reconciler::{self, Bookkeeping, ErrorLabel};
use crate::runtime::now;
use crate::FIELD_MANAGER;

const CONTROLLER: &str = "tenant";

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
    /// The Tenant object lacks a namespace.
    #[error("the Tenant has no namespace")]
    NoNamespace,
    /// An object could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl ErrorLabel for Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::NoNamespace => "no_namespace",
            Error::Build(_) => "build",
        }
    }
}

pub(super) fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// What the builders need.
    pub build: BuildContext,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Where the engines are, to read their database count and storage use.
    pub engines: Option<EngineLocator>,
    book: Bookkeeping,
}

impl Context {
    /// A context for the controller.
    pub fn new(client: Client, build: BuildContext, recorder: Recorder, metrics: Metrics) -> Self {
        Context {
            client,
            build,
            recorder,
            engines: None,
            book: Bookkeeping::new(CONTROLLER, metrics),
        }
    }

    /// Also read each Ready engine's container status into the Tenant's status.
    pub fn with_engines(mut self, locator: EngineLocator) -> Self {
        self.engines = Some(locator);
        self
    }
}

/// The API resource of Tenant, for dynamic access.
pub fn tenant_resource() -> ApiResource {
    ApiResource::erase::<Tenant>(&())
}

pub(super) async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err(format!("applying {} {ns}/{name}", K::kind(&()))))
}

async fn publish(ctx: &Context, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
    crate::runtime::publish(
        &ctx.recorder,
        &obj.object_ref(&tenant_resource()),
        type_,
        reason,
        note,
    )
    .await
}

/// Write the Tenant's whole status (server-side apply: what `status` leaves out goes).
async fn write_status(
    client: &Client,
    obj: &DynamicObject,
    status: &TenantStatus,
) -> Result<(), Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let ar = tenant_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    crate::runtime::apply_status(&api, &ar.api_version, &ar.kind, &obj.name_any(), status)
        .await
        .map_err(kube_err(format!(
            "writing status of Tenant {ns}/{}",
            obj.name_any()
        )))
}

/// With `spec.backup`, why its credentials Secret cannot be used (absent, or without
/// both keys); `None` when it can, or without backup.
async fn backup_credentials_missing(
    ctx: &Context,
    tenant: &Tenant,
    ns: &str,
) -> Result<Option<String>, Error> {
    let Some(b) = &tenant.spec.backup else {
        return Ok(None);
    };
    let name = &b.store.credentials_secret;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let found = secrets
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{name}")))?;
    let Some(secret) = found else {
        return Ok(Some(format!(
            "spec.backup.store.credentialsSecret {name} does not exist in {ns}"
        )));
    };
    let data = secret.data.unwrap_or_default();
    let missing: Vec<&str> = [build::BACKUP_ACCESS_KEY, build::BACKUP_SECRET_KEY]
        .into_iter()
        .filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty()))
        .collect();
    Ok(
        (!missing.is_empty())
            .then(|| format!("Secret {ns}/{name} has no {}", missing.join(" or "))),
    )
}

/// Create the credentials Secret unless it exists; never overwrite it. An existing one
/// must be this operator's, for this tenant, with a token (`Err((reason, message))`).
/// Returns its name, and the Secret when it was there already (a new one needs nothing
/// more this time round).
async fn ensure_credentials(
    ctx: &Context,
    tenant: &Tenant,
    ns: &str,
) -> Result<Result<(String, Option<Secret>), (&'static str, String)>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = build::names(&tenant.name_any()).credentials;
    if let Some(existing) = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{name}")))?
    {
        return Ok(match build::foreign_credentials(&existing, tenant) {
            None => Ok((name, Some(existing))),
            Some(why) => Err(("CredentialsSecretNotOurs", why)),
        });
    }
    let secret = build::credentials_secret(tenant, &build::random_secret(40))?;
    // Made by another reconcile (or a previous operator) first: theirs is kept.
    crate::runtime::create_once(&secrets, &secret)
        .await
        .map_err(kube_err(format!("creating Secret {ns}/{name}")))?;
    Ok(Ok((name, None)))
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.book
        .observe(&reconciler::key(&*obj), reconcile_inner(&obj, &ctx))
        .await
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        // Children go with their owner references; nothing lives outside Kubernetes.
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let tenant: Tenant = match obj.clone().try_parse() {
        Ok(t) => t,
        Err(e) => {
            let message = format!("the Tenant cannot be read by this operator version: {e}");
            let status = malformed_status(obj, &message);
            publish(ctx, obj, EventType::Warning, "MalformedSpec", message).await;
            write_status(&ctx.client, obj, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let old_phase = tenant.status.as_ref().and_then(|s| s.phase);
    let name = tenant.name_any();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = sts_api
        .get_opt(&build::names(&name).engine)
        .await
        .map_err(kube_err("reading the engine StatefulSet"))?;
    let desired = match build::desired(&tenant, &ctx.build, existing.as_ref()) {
        Ok(d) => d,
        Err(BuildError::Limits(e)) => {
            return invalid(ctx, obj, &tenant, "InvalidLimits", &e.to_string()).await
        }
        Err(e @ BuildError::Backup(_)) => {
            return invalid(ctx, obj, &tenant, "InvalidBackup", &e.to_string()).await
        }
        Err(e) => return invalid(ctx, obj, &tenant, "BuildFailed", &e.to_string()).await,
    };
    if let Some(message) = backup_credentials_missing(ctx, &tenant, &ns).await? {
        // Nothing is applied: the engine keeps running as it was, without this change.
        invalid(ctx, obj, &tenant, "BackupCredentialsMissing", &message).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let (credentials, existing_credentials) = match ensure_credentials(ctx, &tenant, &ns).await? {
        Ok(found) => found,
        Err((reason, message)) => {
            invalid(ctx, obj, &tenant, reason, &message).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let rotating = match &existing_credentials {
        Some(secret) => {
            super::credentials::rotate(&ctx.client, ctx.engines.as_ref(), &tenant, secret).await?
        }
        None => false,
    };
    let renew_after =
        match certificates::ensure(&ctx.client, &tenant, &ns, ctx.build.certificates).await? {
            Ok(c) => c,
            Err((reason, message)) => {
                invalid(ctx, obj, &tenant, reason, &message).await?;
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
        };
    let sts = match apply_all(ctx, &ns, &desired).await {
        Ok(sts) => sts,
        Err(e) => {
            // Say so where users look: a condition and an Event, then retry with backoff.
            let mut status = tenant.status.clone().unwrap_or_default();
            crate::conditions::set(
                &mut status.conditions,
                "Progressing",
                false,
                "ApplyFailed",
                e.to_string(),
                tenant.metadata.generation,
                &now(),
            );
            publish(ctx, obj, EventType::Warning, "ApplyFailed", e.to_string()).await;
            write_status(&ctx.client, obj, &status).await?;
            return Err(e);
        }
    };
    expand_volume(ctx, obj, &ns, &name, &desired.limits).await?;

    let state = engine_state(Some(&sts), tenant.spec.suspended);
    let old_limits = tenant.status.as_ref().and_then(|s| s.limits.clone());
    let mut status = status::applied(
        &tenant,
        desired.limits.clone(),
        build::endpoint(&tenant.name_any(), &ns),
        credentials.clone(),
        state,
        &now(),
    );
    let members = build::replicas(&tenant);
    if members > 1 {
        let (pods, lease) = replication_observed(ctx, &ns, &name).await;
        super::replicas::fold(
            &mut status,
            members,
            &pods,
            lease.as_ref(),
            tenant.metadata.generation,
            &now(),
        );
    }
    let serving = matches!(state, EngineState::Ready | EngineState::Rolling)
        || (members > 1 && status.members.iter().any(|m| m.role == "primary"));
    if serving {
        if let Some(summary) = engine_summary(ctx, &ns, &name).await {
            status.databases = Some(summary.container.databases);
            status.storage_used = Some(crate::quantity::format_bytes(
                summary.container.storage_bytes,
            ));
            let (sla, usage) = status::engine_figures(&summary);
            let was_compliant = tenant
                .status
                .as_ref()
                .and_then(|s| s.sla.as_ref())
                .is_none_or(|s| s.compliant);
            if let Some(s) = sla.as_ref().filter(|s| !s.compliant && was_compliant) {
                let detail: Vec<String> = summary
                    .sla
                    .iter()
                    .flat_map(|e| &e.violations)
                    .map(|v| {
                        format!(
                            "{} {} ({}): {}",
                            v.scope, v.metric, v.severity, v.remediation
                        )
                    })
                    .collect();
                let note = format!(
                    "SLA not met this period (uptime {}%): {}",
                    s.uptime_percent,
                    detail.join("; ")
                );
                publish(ctx, obj, EventType::Warning, "SLAViolation", note).await;
            }
            status.sla = sla;
            status.usage = usage;
        }
    }
    if old_limits.as_ref().is_some_and(|l| *l != desired.limits) {
        let note = format!(
            "limits now cpu {} memory {} storage {} (tier {})",
            desired.limits.cpu,
            desired.limits.memory,
            desired.limits.storage,
            tenant.spec.tier.as_str()
        );
        publish(ctx, obj, EventType::Normal, "LimitsChanged", note).await;
    }
    if old_phase != status.phase {
        if let Some(p) = status.phase {
            let type_ = if p == tenantdb_crds::TenantPhase::Degraded {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(
                ctx,
                obj,
                type_,
                p.as_str(),
                format!(
                    "phase {} → {}",
                    old_phase.map(|p| p.as_str()).unwrap_or("none"),
                    p.as_str()
                ),
            )
            .await;
        }
    }
    if tenant.status.as_ref() != Some(&status) {
        write_status(&ctx.client, obj, &status).await?;
    }
    let again = match state {
        // Ready engines are looked at again for their database count and storage use.
        EngineState::Ready => Duration::from_secs(30),
        EngineState::Suspended => Duration::from_secs(300),
        _ => Duration::from_secs(5),
    };
    // And every engine when its certificate is due for renewal.
    let renewal = (renew_after - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    let again = if rotating {
        again.min(Duration::from_secs(3))
    } else {
        again
    };
    // A replicated tenant's members change role and lag without touching any object the
    // controller watches: look again soon.
    let members_again = if members > 1 {
        Duration::from_secs(5)
    } else {
        again
    };
    Ok(Action::requeue(again.min(renewal).min(members_again)))
}

/// The engine's container status, or `None` when it cannot be read now (the next
/// reconcile tries again; the Tenant's own state does not depend on it).
async fn engine_summary(
    ctx: &Context,
    ns: &str,
    tenant: &str,
) -> Option<crate::engine_client::EngineSummary> {
    let locator = ctx.engines.as_ref()?;
    let client = super::engine_access::admin_client(&ctx.client, locator, ns, tenant)
        .await
        .ok()?
        .ok()?;
    match client.summary().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(tenant = %format!("{ns}/{tenant}"), error = %e, "engine status not read");
            None
        }
    }
}

/// The member pods and the primary Lease of a replicated tenant (empty when they cannot
/// be read: the status then says no member is known).
async fn replication_observed(
    ctx: &Context,
    ns: &str,
    tenant: &str,
) -> (
    Vec<k8s_openapi::api::core::v1::Pod>,
    Option<k8s_openapi::api::coordination::v1::Lease>,
) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(ctx.client.clone(), ns);
    let selector = build::selector_labels(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(ctx.client.clone(), ns);
    let lease = leases
        .get_opt(&build::lease_name(tenant))
        .await
        .ok()
        .flatten();
    (listed, lease)
}

/// Apply every child, configuration before the StatefulSet, so a new pod never starts
/// with an old ConfigMap. Returns the StatefulSet as the API server has it.
async fn apply_all(
    ctx: &Context,
    ns: &str,
    desired: &build::Desired,
) -> Result<StatefulSet, Error> {
    apply::<ConfigMap>(&ctx.client, ns, &desired.config_map).await?;
    apply::<Service>(&ctx.client, ns, &desired.headless_service).await?;
    apply::<Service>(&ctx.client, ns, &desired.service).await?;
    apply::<Service>(&ctx.client, ns, &desired.rw_service).await?;
    apply::<Service>(&ctx.client, ns, &desired.ro_service).await?;
    if let Some(m) = &desired.member_access {
        apply::<k8s_openapi::api::core::v1::ServiceAccount>(&ctx.client, ns, &m.service_account)
            .await?;
        apply::<k8s_openapi::api::rbac::v1::Role>(&ctx.client, ns, &m.role).await?;
        apply::<k8s_openapi::api::rbac::v1::RoleBinding>(&ctx.client, ns, &m.role_binding).await?;
    }
    let sts = apply::<StatefulSet>(&ctx.client, ns, &desired.stateful_set).await?;
    apply::<PodDisruptionBudget>(&ctx.client, ns, &desired.disruption_budget).await?;
    apply::<NetworkPolicy>(&ctx.client, ns, &desired.network_policy).await?;
    Ok(sts)
}

/// Grow the data volume claim to the tier's storage when the StorageClass allows
/// expansion; otherwise say in an Event that the volume keeps its size.
async fn expand_volume(
    ctx: &Context,
    obj: &DynamicObject,
    ns: &str,
    tenant: &str,
    limits: &tenantdb_crds::EffectiveLimits,
) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::api::storage::v1::StorageClass;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let claim_name = build::data_claim(tenant);
    let Some(claim) = claims
        .get_opt(&claim_name)
        .await
        .map_err(kube_err(format!("reading claim {ns}/{claim_name}")))?
    else {
        return Ok(());
    };
    let spec = claim.spec.clone().unwrap_or_default();
    let current = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_default();
    let Some(want) = build::wanted_storage(limits, &current) else {
        return Ok(());
    };
    let expandable = match spec.storage_class_name {
        Some(sc) => Api::<StorageClass>::all(ctx.client.clone())
            .get_opt(&sc)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false),
        None => false,
    };
    if expandable {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": want}}}});
        claims
            .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("expanding claim {ns}/{claim_name}")))?;
        publish(
            ctx,
            obj,
            EventType::Normal,
            "VolumeExpanding",
            format!("data volume {current} → {want}"),
        )
        .await;
    } else {
        // The Recorder folds repeats into one Event series, so this does not flood.
        let note = format!("the tier wants {want} but the volume stays {current}: its StorageClass does not allow expansion; the engine enforces the new storage quota");
        publish(ctx, obj, EventType::Warning, "VolumeNotExpandable", note).await;
    }
    Ok(())
}

fn malformed_status(obj: &DynamicObject, message: &str) -> TenantStatus {
    let mut status = TenantStatus::default();
    crate::conditions::set(
        &mut status.conditions,
        "Ready",
        false,
        "MalformedSpec",
        message,
        obj.metadata.generation,
        &now(),
    );
    status.phase = Some(tenantdb_crds::TenantPhase::Invalid);
    status.observed_generation = obj.metadata.generation;
    status
}

async fn invalid(
    ctx: &Context,
    obj: &DynamicObject,
    tenant: &Tenant,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let status = status::invalid(tenant, reason, message, &now());
    if tenant.status.as_ref() != Some(&status) {
        publish(ctx, obj, EventType::Warning, reason, message.to_string()).await;
        write_status(&ctx.client, obj, &status).await?;
    }
    Ok(Action::await_change())
}

fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.book.retry(&reconciler::key(&*obj), error)
}

/// Run the controller over the Tenants of `scope` until `shutdown` resolves. Returns the
/// store of watched Tenants.
pub async fn run(
    ctx: Arc<Context>,
    scope: crate::runtime::Scope,
    store_out: tokio::sync::oneshot::Sender<Store<DynamicObject>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ar = tenant_resource();
    let tenants = scope.api_with(&client, &ar);
    let wc = watcher::Config::default().labels("app.kubernetes.io/managed-by=tenantdb-operator");
    let holder = ar.clone();
    let controller = Controller::new_with(tenants, watcher::Config::default(), ar)
        .owns(scope.api::<StatefulSet>(&client), wc.clone())
        .owns(scope.api::<Service>(&client), wc.clone())
        .owns(scope.api::<ConfigMap>(&client), wc.clone())
        .owns(scope.api::<Secret>(&client), wc)
        // A database created, moved or dropped changes its tenant's count and storage.
        .watches(
            scope.api::<tenantdb_crds::PluggableDatabase>(&client),
            watcher::Config::default(),
            move |p: tenantdb_crds::PluggableDatabase| {
                let ns = p.namespace().unwrap_or_default();
                let mut tenants = vec![p.spec.tenant.clone()];
                tenants.extend(p.status.and_then(|s| s.tenant));
                tenants.dedup();
                tenants
                    .into_iter()
                    .map(|t| ObjectRef::new_with(&t, holder.clone()).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown);
    let _ = store_out.send(controller.store());
    reconciler::drive(controller, reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::mock;
    use serde_json::json;

    /// Issue 17, defect 2: after a spec this operator cannot read, the old limits and
    /// endpoint stayed in status, because a merge patch only adds. Status is applied
    /// whole (server-side apply), so what the new status leaves out is removed.
    #[tokio::test]
    async fn an_unreadable_spec_is_applied_as_a_whole_status_without_old_limits() {
        let (client, mut server) = mock::client();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "t", "namespace": "ns", "generation": 3},
            "spec": {"tier": 7},
            "status": {"phase": "Ready", "endpoint": "http://t-engine.ns.svc:8080",
                       "limits": {"cpu": "1"}}
        }))
        .expect("object");
        let status = malformed_status(&obj, "the Tenant cannot be read");
        let (written, (method, path, query, ctype, body)) = tokio::join!(
            write_status(&client, &obj, &status),
            mock::next(&mut server, json!(obj))
        );
        written.expect("written");
        assert_eq!(method, "PATCH");
        assert_eq!(
            path,
            "/apis/tenantdb.io/v1alpha1/namespaces/ns/tenants/t/status"
        );
        assert!(
            query.contains("fieldManager=tenantdb-operator") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(ctype, "application/apply-patch+yaml");
        assert_eq!(
            (&body["apiVersion"], &body["kind"]),
            (&json!("tenantdb.io/v1alpha1"), &json!("Tenant"))
        );
        assert_eq!(body["status"]["phase"], "Invalid");
        let written = body["status"].as_object().expect("a status");
        for gone in ["limits", "endpoint", "credentialsSecret", "usage"] {
            assert!(!written.contains_key(gone), "{gone} still written: {body}");
        }
    }
}
