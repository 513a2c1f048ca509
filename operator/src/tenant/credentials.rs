//! The part of the Tenant controller that carries out admin token rotations (the plan is
//! `admin_token`): it writes the credentials Secret and asks the engine whether it takes
//! the new token yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tenantdb_crds::Tenant;

use super::admin_token::{self, TokenStep, ROTATED_ANNOTATION, ROTATE_ANNOTATION};
use super::build;
use super::controller::{kube_err, Error};
use crate::engine_client::EngineLocator;

/// Take the credentials Secret (`secret`, as just read) one step towards the token the
/// Tenant asks for; `true` while a rotation is under way (look again soon).
pub async fn rotate(
    client: &Client,
    locator: Option<&EngineLocator>,
    tenant: &Tenant,
    secret: &Secret,
) -> Result<bool, Error> {
    let name = tenant.name_any();
    let ns = tenant.namespace().unwrap_or_default();
    let ns = ns.as_str();
    let secret_name = secret.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let data: BTreeMap<String, String> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let rotated_for = secret.annotations().get(ROTATED_ANNOTATION).cloned();
    let requested = tenant.annotations().get(ROTATE_ANNOTATION).cloned();
    let fresh = build::random_secret(40);
    let plan = |accepted| {
        admin_token::step(
            &data,
            rotated_for.as_deref(),
            requested.as_deref(),
            accepted,
            &fresh,
        )
    };
    let mut step = plan(false);
    if let TokenStep::Probe(next) = &step {
        let Some(locator) = locator else {
            return Ok(true);
        };
        let access = super::engine_access::admin_client(client, locator, ns, &name)
            .await
            .map_err(kube_err(format!(
                "reading the Secrets of Tenant {ns}/{name}"
            )))?;
        let accepted = match access {
            Ok(engine) => engine.with_token(next).summary().await.is_ok(),
            Err(_) => false,
        };
        if !accepted {
            return Ok(true);
        }
        step = plan(true);
    }
    let TokenStep::Write { keys, rotated_for } = step else {
        return Ok(false);
    };
    let mut string_data = serde_json::Map::new();
    let mut removed = serde_json::Map::new();
    for (k, v) in &keys {
        match v {
            Some(v) => string_data.insert(k.to_string(), json!(v)),
            None => removed.insert(k.to_string(), serde_json::Value::Null),
        };
    }
    let mut patch = json!({"stringData": string_data, "data": removed});
    if let Some(r) = &rotated_for {
        patch["metadata"] = json!({"annotations": {ROTATED_ANNOTATION: r}});
    }
    secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("writing Secret {ns}/{secret_name}")))?;
    let switched = keys.contains_key(build::ADMIN_TOKEN_KEY);
    tracing::info!(tenant = %format!("{ns}/{name}"), started = rotated_for.is_some(), switched, "admin token rotation");
    Ok(rotated_for.is_some())
}
