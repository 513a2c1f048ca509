//! Who may use a database: its connection Secret, holding the URL of the database in its
//! tenant's engine and a token for that database alone, issued and revoked here.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tenantdb_crds::PluggableDatabase;

use super::controller::{engine_err, kube_err, Context, Error};
use crate::engine_client::EngineClient;
use crate::runtime::publish;

/// Keep the database's connection Secret current: a token of `tenant`'s engine for this
/// database alone, and its URL. A token is issued only when the Secret lacks a valid one
/// (first time, after a relocation, after a revocation). `None` when a Secret of that
/// name belongs to someone else: it is left alone, and an Event says so.
pub(super) async fn connection(
    ctx: &Context,
    pdb: &PluggableDatabase,
    engine: &EngineClient,
    tenant: &str,
) -> Result<Option<String>, Error> {
    use super::connection::{judge, secret, secret_name, token_expiry, Existing, Expected};
    let ns = pdb.namespace().ok_or(Error::NoNamespace)?;
    let db = pdb.name_any();
    let name = secret_name(&db);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let ca = engine.ca_pem().unwrap_or_default();
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{name}")))?;
    let now = chrono::Utc::now();
    let want = Expected {
        tenant,
        namespace: &ns,
        db: &db,
        ca_pem: ca,
        lifetime: pdb.spec.token_lifetime.as_deref(),
        now,
    };
    let stale = match existing.as_ref().map(|s| judge(s, &want)) {
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
        // Renewed ahead of its expiry: the old token keeps working until then, so
        // applications have that long to pick up the new one.
        Some(Existing::Due(_)) => None,
        Some(Existing::Stale(id)) => id,
        None => None,
    };
    let expiry = token_expiry(pdb, now);
    let (id, token) = engine
        .issue_token_expiring(&[db.as_str()], expiry.as_ref().map(|e| e.seconds))
        .await
        .map_err(engine_err(tenant))?;
    let Some(desired) = secret(pdb, tenant, &id, &token, ca, expiry.as_ref()) else {
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
        match &expiry {
            None => format!(
                "Secret {name} holds {db}'s URL in tenant {tenant}'s engine and a token for it alone"
            ),
            Some(e) => format!(
                "Secret {name} holds {db}'s URL in tenant {tenant}'s engine and a token for it alone, valid until {}",
                e.expires_at.to_rfc3339()
            ),
        },
    )
    .await;
    Ok(Some(name))
}
