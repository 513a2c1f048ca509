//! Helpers for TenantDB's end-to-end tests (in `tests/`, behind the `e2e` feature).
//!
//! The tests run against whatever cluster `KUBECONFIG` points at: the project's own
//! local cluster (`e2e/cluster.sh`) or kind (`e2e/kind.sh`). Images are named by
//! environment variables so both work unchanged.

pub mod ha;
pub mod pdb;
pub mod store;

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

/// The general-purpose test image (a shell with busybox tools).
pub fn busybox_image() -> String {
    std::env::var("TENANTDB_E2E_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "localhost/busybox:e2e".to_string())
}

/// A shell condition for busybox pods: one HTTP GET of `path` at `addr` (nc's words, `IP
/// PORT`) answers 200. busybox nc, since this image's wget crashes.
pub fn http_ok(addr: &str, path: &str) -> String {
    format!(
        r"printf 'GET {path} HTTP/1.0\r\n\r\n' | nc -w 2 {addr} 2>/dev/null | grep -q '^HTTP/1.[01] 200'"
    )
}

/// A busybox shell condition: a TLS server answers at `addr` (`"IP PORT"`). It is sent
/// plain HTTP and must send back a TLS alert record (content type 0x15), which is what
/// an engine does to a client that does not speak TLS.
pub fn tls_answers(addr: &str) -> String {
    format!(
        r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 {addr} 2>/dev/null | od -An -tx1 | grep -q '^ *15 03'"
    )
}

/// A client for the cluster `KUBECONFIG` points at.
pub async fn client() -> Result<Client> {
    // ring, explicitly: the workspace compiles in two rustls providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .context("connecting to the cluster KUBECONFIG points at")
}

/// A namespace made for one test, with a random suffix; deleted by [`TestNamespace::delete`].
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Create `prefix-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace {
            name,
            client: client.clone(),
        })
    }

    /// Delete the namespace and wait until it is gone.
    pub async fn delete(self, timeout: Duration) -> Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        api.delete(&self.name, &DeleteParams::default()).await?;
        let uid = api.get(&self.name).await.ok().and_then(|n| n.uid());
        let gone = await_condition(
            api,
            &self.name,
            conditions::is_deleted(uid.as_deref().unwrap_or("")),
        );
        tokio::time::timeout(timeout, gone)
            .await
            .map_err(|_| anyhow!("namespace {} still exists after {timeout:?}", self.name))??;
        Ok(())
    }
}

/// Create a pod from JSON.
pub async fn create_pod(pods: &Api<Pod>, spec: serde_json::Value) -> Result<Pod> {
    let pod: Pod = serde_json::from_value(spec)?;
    Ok(pods.create(&PostParams::default(), &pod).await?)
}

/// Wait until the pod's phase is one of `phases`; fails early if it reaches Failed unexpectedly.
pub async fn wait_pod_phase(
    pods: &Api<Pod>,
    name: &str,
    phases: &[&str],
    timeout: Duration,
) -> Result<Pod> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pod = pods.get(name).await?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phases.contains(&phase.as_str()) {
            return Ok(pod);
        }
        if phase == "Failed" {
            let logs = pods
                .logs(name, &LogParams::default())
                .await
                .unwrap_or_default();
            bail!("pod {name} failed; logs:\n{logs}");
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "pod {name} is {phase:?} after {timeout:?}, wanted {phases:?}; status: {:?}",
                pod.status
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Poll the pod's logs until one line satisfies `pick`, returning that line.
pub async fn wait_log_line(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
    pick: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(logs) = pods.logs(name, &LogParams::default()).await {
            if let Some(line) = logs.lines().find(|l| pick(l)) {
                return Ok(line.to_string());
            }
        }
        if tokio::time::Instant::now() > deadline {
            let logs = pods
                .logs(name, &LogParams::default())
                .await
                .unwrap_or_default();
            bail!("pod {name}: no matching log line after {timeout:?}; logs:\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The value after `key=` on the first log line that starts with it.
pub fn field<'a>(logs: &'a str, key: &str) -> Option<&'a str> {
    logs.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// GET `path` from a tenant's engine Service through the API server's service proxy
/// (HTTPS to the engine, which the proxy does not verify: the harness looks, it is not
/// a client), with the engine token in `X-Tenantdb-Token` (the proxy drops
/// `Authorization`).
pub async fn service_get(
    client: &Client,
    ns: &str,
    service: &str,
    path: &str,
    token: Option<&str>,
) -> Result<String> {
    let uri = format!("/api/v1/namespaces/{ns}/services/https:{service}:https/proxy{path}");
    let mut req = http::Request::get(uri);
    if let Some(t) = token {
        req = req.header("X-Tenantdb-Token", t);
    }
    Ok(client.request_text(req.body(Vec::new())?).await?)
}

/// Call a tenant's engine through the API server's service proxy (HTTPS, unverified as in
/// [`service_get`]) with `token` in `X-Tenantdb-Token`; returns the status and the JSON
/// body (`null` when not JSON).
pub async fn call(
    client: &Client,
    ns: &str,
    tenant: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let uri = format!("/api/v1/namespaces/{ns}/services/https:{tenant}-engine:https/proxy{path}");
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("X-Tenantdb-Token", token)
        .header("Content-Type", "application/json");
    let req = req.body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())?;
    // request_text fails on non-2xx; send keeps the status and the body.
    let resp = client.send(req.map(kube::client::Body::from)).await?;
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

/// Run one SQL statement on `pdb` in `tenant`'s engine.
pub async fn sql(
    client: &Client,
    ns: &str,
    tenant: &str,
    pdb: &str,
    token: &str,
    sql: &str,
) -> Result<(u16, serde_json::Value)> {
    call(
        client,
        ns,
        tenant,
        "POST",
        &format!("/v1/databases/{pdb}/query"),
        token,
        Some(serde_json::json!({ "sql": sql })),
    )
    .await
}

/// The admin token in a tenant's credentials Secret.
pub async fn admin_token(client: &Client, ns: &str, tenant: &str) -> Result<String> {
    let s = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get(&format!("{tenant}-engine-credentials"))
        .await?;
    Ok(String::from_utf8(
        s.data
            .unwrap_or_default()
            .get("admin-token")
            .map(|b| b.0.clone())
            .unwrap_or_default(),
    )?)
}

/// Create Tenant `name` of `tier`, wait until it is Ready, and return its admin token.
pub async fn ready_tenant(client: &Client, ns: &str, name: &str, tier: &str) -> Result<String> {
    use tenantdb_crds::Tenant;
    let api: Api<Tenant> = Api::namespaced(client.clone(), ns);
    let tenant: Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name}, "spec": {"tier": tier}
    }))?;
    api.create(&kube::api::PostParams::default(), &tenant)
        .await?;
    tenant_ready(client, ns, name).await
}

/// Wait until Tenant `name` is Ready, and return its admin token.
pub async fn tenant_ready(client: &Client, ns: &str, name: &str) -> Result<String> {
    use tenantdb_crds::{Tenant, TenantPhase};
    let api: Api<Tenant> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Tenant {name} Ready"),
        Duration::from_secs(180),
        || async {
            let t = api.get(name).await?;
            Ok((t.status.and_then(|s| s.phase) == Some(TenantPhase::Ready)).then_some(()))
        },
    )
    .await?;
    admin_token(client, ns, name).await
}

/// Poll `check` every 500 ms until it returns `Some`, or fail after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not reached after {timeout:?} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The certificate (DER) an engine pod presents to a TLS client that trusts `ca_pem`
/// alone and asks for `server_name`, through a port-forward; an error when the handshake
/// fails (the certificate is not of that CA or not for that name).
pub async fn served_certificate(
    client: &Client,
    ns: &str,
    pod: &str,
    server_name: &str,
    ca_pem: &[u8],
) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let mut forwarder = pods.portforward(pod, &[8080]).await?;
    let stream = forwarder
        .take_stream(8080)
        .context("port-forward gave no stream")?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await?;
    let (_, session) = tls.get_ref();
    let der = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .context("no peer certificate")?;
    drop(tls);
    forwarder.abort();
    Ok(der)
}

/// How often the containers of `pod` have restarted, all together.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or_default()
}

/// Assert `after` is the pod `before` was, not replaced and not restarted.
pub fn assert_same_pod(before: &Pod, after: &Pod) {
    assert_eq!(
        before.metadata.uid, after.metadata.uid,
        "the pod was not replaced"
    );
    assert_eq!(
        restarts(before),
        restarts(after),
        "the engine did not restart"
    );
}
