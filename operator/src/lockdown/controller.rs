//! The part of the LockdownProfile controller that talks to the API server: it checks
//! that the engines can take the rules and reports which databases enforce them.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tenantdb_crds::{LockdownProfile, LockdownProfileStatus, PluggableDatabase};

use super::rules;
use crate::conditions::{is_true, set};
use crate::metrics::Metrics;
use crate::reconciler::{self, Bookkeeping, ErrorLabel};
use crate::runtime::now;

const CONTROLLER: &str = "lockdownprofile";

/// Errors of one reconcile.
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
}

impl ErrorLabel for Error {
    fn label(&self) -> &'static str {
        "kube"
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    book: Bookkeeping,
}

impl Context {
    /// A context for the controller.
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Context {
            client,
            book: Bookkeeping::new(CONTROLLER, metrics),
        }
    }
}

/// Pure: the status of profile `name` given every PluggableDatabase. A database counts
/// once its engine enforces the profile (its status says so and it is Ready).
pub fn profile_status(
    profile: &LockdownProfile,
    pdbs: &[PluggableDatabase],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> LockdownProfileStatus {
    let name = profile.name_any();
    let applied: Vec<String> = pdbs
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.lockdown_profile.as_deref() == Some(name.as_str())
                    && is_true(&s.conditions, "Ready")
            })
        })
        .map(|p| p.namespace().unwrap_or_default())
        .collect();
    let namespaces: std::collections::BTreeSet<&String> = applied.iter().collect();
    let mut status = profile.status.clone().unwrap_or_default();
    let generation = profile.metadata.generation;
    let check =
        rules::valid_name(&name).and_then(|()| rules::engine_rules(&profile.spec).map(|_| ()));
    match check {
        Ok(()) => set(
            &mut status.conditions,
            "Ready",
            true,
            "Valid",
            format!("enforced on {} database(s)", applied.len()),
            generation,
            now,
        ),
        Err(e) => set(
            &mut status.conditions,
            "Ready",
            false,
            "InvalidRules",
            e,
            generation,
            now,
        ),
    }
    status.applied_count = Some(applied.len() as u32);
    status.applied_namespaces = Some(namespaces.len() as u32);
    status.observed_generation = generation;
    status
}

/// Pure: the status of a profile this operator version cannot read (`error` says why).
pub fn unreadable_status(
    generation: Option<i64>,
    error: &str,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> LockdownProfileStatus {
    let mut status = LockdownProfileStatus {
        observed_generation: generation,
        ..Default::default()
    };
    set(
        &mut status.conditions,
        "Ready",
        false,
        "MalformedSpec",
        format!("this operator cannot read the LockdownProfile: {error}; databases naming it are not opened under it"),
        generation,
        now,
    );
    status
}

/// Profiles are watched through `DeserializeGuard`: one this version cannot read gets a
/// status saying so, and the others are reported as usual.
async fn reconcile(
    guard: Arc<DeserializeGuard<LockdownProfile>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let name = guard.name_any();
    match &guard.0 {
        Ok(profile) => ctx.book.observe(&name, report(profile, &ctx)).await,
        Err(invalid) => {
            let status = unreadable_status(invalid.metadata.generation, &invalid.error, &now());
            let write = async {
                write_status(&ctx, &name, &status).await?;
                Ok(Action::await_change())
            };
            ctx.book.observe(&name, write).await
        }
    }
}

async fn write_status(
    ctx: &Context,
    name: &str,
    status: &LockdownProfileStatus,
) -> Result<(), Error> {
    crate::runtime::apply_status(
        &Api::<LockdownProfile>::all(ctx.client.clone()),
        &LockdownProfile::api_version(&()),
        &LockdownProfile::kind(&()),
        name,
        status,
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("writing status of LockdownProfile {name}"),
        source,
    })
}

/// Read every PluggableDatabase, build the profile's status from them, write it when it
/// changed; look again in five minutes.
async fn report(profile: &LockdownProfile, ctx: &Context) -> Result<Action, Error> {
    let pdbs = Api::<PluggableDatabase>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            action: "listing PluggableDatabases".into(),
            source,
        })?;
    let status = profile_status(profile, &pdbs.items, &now());
    // Compare without the clock: only a real change is written.
    let same = profile.status.as_ref().is_some_and(|old| {
        old.applied_count == status.applied_count
            && old.applied_namespaces == status.applied_namespaces
            && old.observed_generation == status.observed_generation
            && old
                .conditions
                .iter()
                .map(|c| (&c.status, &c.reason, &c.message))
                .eq(status
                    .conditions
                    .iter()
                    .map(|c| (&c.status, &c.reason, &c.message)))
    });
    if !same {
        write_status(ctx, &profile.name_any(), &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(
    profile: Arc<DeserializeGuard<LockdownProfile>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.book.retry(&profile.name_any(), error)
}

/// Run the controller until `shutdown` resolves; a PluggableDatabase change
/// re-reconciles the profiles it names or enforces.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<DeserializeGuard<LockdownProfile>>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PluggableDatabase>::all(client),
        watcher::Config::default(),
        |p: PluggableDatabase| {
            rules::profiles_of(&p)
                .into_iter()
                .map(|n| ObjectRef::<DeserializeGuard<LockdownProfile>>::new(&n))
                .collect::<Vec<_>>()
        },
    )
    .graceful_shutdown_on(shutdown);
    reconciler::drive(controller, reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(ns: &str, name: &str, profile: &str) -> PluggableDatabase {
        serde_yaml::from_str(&format!(
            "apiVersion: tenantdb.io/v1alpha1\nkind: PluggableDatabase\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{tenant: t}}\nstatus:\n  lockdownProfile: {profile}\n  conditions: [{{type: Ready, status: 'True', reason: InSync, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn an_unreadable_profile_says_why_and_counts_nothing() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        let s = unreadable_status(Some(4), "unknown variant `NUKE`", &now);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "MalformedSpec")
        );
        assert!(ready.message.contains("unknown variant `NUKE`"));
        assert_eq!((s.applied_count, s.observed_generation), (None, Some(4)));
    }

    #[test]
    fn status_counts_databases_and_namespaces_and_names_none() {
        let profile: LockdownProfile = serde_yaml::from_str(
            "apiVersion: tenantdb.io/v1alpha1\nkind: LockdownProfile\nmetadata: {name: strict}\nspec: {}\n",
        )
        .unwrap();
        let pdbs = [
            pdb("shop-a", "orders", "strict"),
            pdb("shop-a", "invoices", "strict"),
            pdb("shop-b", "secret-plans", "strict"),
            pdb("shop-c", "other", "lenient"),
        ];
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        let s = profile_status(&profile, &pdbs, &now);
        assert_eq!((s.applied_count, s.applied_namespaces), (Some(3), Some(2)));
        let text = serde_json::to_string(&s).unwrap();
        for secret in ["orders", "invoices", "secret-plans", "shop-a", "shop-b"] {
            assert!(!text.contains(secret), "status names {secret}: {text}");
        }
    }
}
