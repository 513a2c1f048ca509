//! How the operator reaches a tenant's engine: its admin token from the credentials
//! Secret and its CA from the TLS Secret, both the operator's own.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;

use super::build::{names, ADMIN_TOKEN_KEY};
use super::tls;
use crate::engine_client::{EngineClient, EngineLocator};

/// A client of `tenant`'s engine, `Ok(Err(why))` when its Secrets do not allow one yet.
pub async fn admin_client(
    client: &Client,
    locator: &EngineLocator,
    ns: &str,
    tenant: &str,
) -> Result<Result<EngineClient, String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let n = names(tenant);
    let token = secrets
        .get_opt(&n.credentials)
        .await?
        .and_then(|s| tls::text(&s, ADMIN_TOKEN_KEY));
    let Some(token) = token else {
        return Ok(Err(format!(
            "without an admin token in its credentials Secret {}",
            n.credentials
        )));
    };
    let ca = secrets
        .get_opt(&n.tls)
        .await?
        .and_then(|s| tls::text(&s, tls::CA_CERT_KEY));
    Ok(locator
        .client(ns, tenant, token.trim(), ca.as_deref())
        .map_err(|e| e.to_string()))
}
