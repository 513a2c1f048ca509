//! Replicated tenants as the failover tests see them: which member is primary, whether
//! the standby is caught up, signals to a member's processes from a debug container
//! (the pod shares one process namespace), and writes that say which primary
//! acknowledged them.

use std::time::Duration;

use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

/// Members of `tenant` as their labels and agents say: (primary pod, its epoch as its
/// agent reports), and whether every other member is a caught-up, streaming standby.
pub async fn roles(client: &Client, ns: &str, tenant: &str) -> Result<(Option<String>, bool)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("tenantdb.io/tenant={tenant}")))
        .await?;
    let mut primary = None;
    let mut standbys_ok = !list.items.is_empty();
    for p in &list.items {
        let role = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tenantdb.io/role").cloned())
            .unwrap_or_default();
        let reported: Value = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("tenantdb.io/replication"))
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        if role == "primary" && reported["role"] == "primary" && reported["writable"] == true {
            primary = p.metadata.name.clone();
        } else {
            standbys_ok &= reported["role"] == "standby"
                && reported["streaming"] == true
                && reported["caughtUp"] == true;
        }
    }
    Ok((primary, standbys_ok))
}

/// Send `signal` to the processes named `processes` in `pod`, from an ephemeral busybox
/// container, and wait until it has run.
pub async fn signal(
    client: &Client,
    ns: &str,
    pod: &str,
    signal: &str,
    processes: &[&str],
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("sig-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let script = format!("kill -{signal} $(pidof {})", processes.join(" "));
    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": name, "image": crate::busybox_image(), "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                            "runAsUser": 65534, "runAsGroup": 65534, "runAsNonRoot": true}
    }]}});
    pods.patch_ephemeral_containers(pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = pods.get(pod).await?;
        let done = p
            .status
            .and_then(|s| s.ephemeral_container_statuses)
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.state)
            .and_then(|s| s.terminated);
        if let Some(t) = done {
            if t.exit_code != 0 {
                bail!("{script} in {pod} exited {}", t.exit_code);
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{script} in {pod} did not run within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One write through the tenant's client Service (the API server's proxy to the
/// primary), with a timeout: its status (0: no answer) and the epoch of the primary that
/// answered (the engine's `x-tenantdb-epoch`).
pub async fn write(
    client: &Client,
    ns: &str,
    tenant: &str,
    token: &str,
    sql: &str,
) -> (u16, Option<u64>) {
    let uri = format!(
        "/api/v1/namespaces/{ns}/services/https:{tenant}-engine:https/proxy/v1/databases/ledger/query"
    );
    let Ok(req) = http::Request::post(uri)
        .header("X-Tenantdb-Token", token)
        .header("Content-Type", "application/json")
        .body(json!({ "sql": sql }).to_string().into_bytes())
    else {
        return (0, None);
    };
    let sent = tokio::time::timeout(
        Duration::from_secs(3),
        client.send(req.map(kube::client::Body::from)),
    )
    .await;
    match sent {
        Ok(Ok(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("x-tenantdb-epoch")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        _ => (0, None),
    }
}

/// Create or change Tenant `name` with `spec` by server-side apply.
pub async fn apply_tenant(client: &Client, ns: &str, name: &str, spec: Value) -> Result<()> {
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant",
                     "metadata": {"name": name}, "spec": spec});
    Api::<tenantdb_crds::Tenant>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e-test"), &Patch::Apply(&obj))
        .await?;
    Ok(())
}
