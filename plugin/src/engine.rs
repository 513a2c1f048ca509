//! Calls to a tenant's engine over TLS through a port-forward ([`crate::tunnel`]),
//! verified against the tenant's CA, with the tenant's admin token.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tenantdb_crds::Tenant;

use crate::tunnel::Tunnel;
use crate::{render, PluginError, Result};

async fn admin_token(client: &Client, tenant: &Tenant) -> Result<String> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = format!("{}-engine-credentials", tenant.name_any());
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| PluginError::NotServing(tenant.name_any(), render::phase(tenant)))?;
    secret
        .data
        .and_then(|d| d.get("admin-token").cloned())
        .and_then(|v| String::from_utf8(v.0).ok())
        .ok_or_else(|| PluginError::Engine(format!("Secret {ns}/{name} has no admin-token")))
}

async fn call(
    client: &Client,
    tenant: &Tenant,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    if tenant.spec.suspended {
        return Err(PluginError::NotServing(
            tenant.name_any(),
            render::phase(tenant),
        ));
    }
    let token = admin_token(client, tenant).await?;
    let tunnel = Tunnel::to(client, tenant).await?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", &tunnel.host)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        )))
        .map_err(|e| PluginError::Usage(e.to_string()))?;
    let conn = tunnel.open().await?;
    let transport = |e: hyper::Error| PluginError::Engine(format!("engine {}: {e}", tunnel.pod));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn.stream))
            .await
            .map_err(transport)?;
    let driver = tokio::spawn(connection);
    let resp = sender.send_request(req).await.map_err(transport)?;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(transport)?
        .to_bytes();
    driver.abort();
    let value: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&bytes).trim().to_string()}));
    if status.is_success() {
        Ok(value)
    } else if status.as_u16() == 503 {
        Err(PluginError::NotServing(
            tenant.name_any(),
            render::phase(tenant),
        ))
    } else {
        let message = value["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        Err(PluginError::Engine(format!(
            "{} ({})",
            message,
            status.as_u16()
        )))
    }
}

/// GET an admin route of the tenant's engine.
pub async fn get(client: &Client, tenant: &Tenant, path: &str) -> Result<Value> {
    call(client, tenant, "GET", path, None).await
}

/// Run one statement in database `database`.
pub async fn query(client: &Client, tenant: &Tenant, database: &str, sql: &str) -> Result<Value> {
    if database.is_empty() || database.contains('/') {
        return Err(PluginError::Usage(format!(
            "{database:?} is not a database name"
        )));
    }
    let path = format!("/v1/databases/{database}/query");
    call(client, tenant, "POST", &path, Some(json!({ "sql": sql }))).await
}

/// `path` with `?period=` when one is given (checked here so a typo is a clear error).
pub fn with_period(path: &str, period: Option<&str>) -> Result<String> {
    match period {
        None => Ok(path.to_string()),
        Some(p) => {
            let ok = p.len() == 7
                && p.as_bytes()[4] == b'-'
                && p.bytes()
                    .enumerate()
                    .all(|(i, b)| i == 4 || b.is_ascii_digit());
            if ok {
                Ok(format!("{path}?period={p}"))
            } else {
                Err(PluginError::Usage(format!(
                    "--period must be YYYY-MM, not {p:?}"
                )))
            }
        }
    }
}
