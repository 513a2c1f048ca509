//! NetworkPolicy, enforced (kube-router's firewall on the local cluster, kindnet on kind):
//! only the tenant's own namespace and the operator reach an engine, and an engine reaches
//! nothing but DNS and its backup store. Probes are busybox pods run for one check each.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;
use serde_json::{json, Value};
use tenantdb_e2e::pdb::open_database;
use tenantdb_e2e::*;

/// Run `script` in a pod `name` of `ns` with `labels`; its last log line.
async fn probe(
    client: &Client,
    ns: &str,
    name: &str,
    labels: Value,
    script: &str,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    create_pod(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": labels},
               "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "p", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                                        "command": ["sh", "-c", script]}]}}),
    )
    .await?;
    wait_pod_phase(&pods, name, &["Succeeded"], Duration::from_secs(120)).await?;
    let logs = pods.logs(name, &Default::default()).await?;
    Ok(logs.lines().last().unwrap_or_default().trim().to_string())
}

/// A connection that the policy allows: retried for 30 s, since the enforcer learns a new
/// pod's address a moment after it starts.
fn reaches(check: &str) -> String {
    format!("for i in $(seq 30); do if {check}; then echo REACHED; exit 0; fi; sleep 1; done; echo BLOCKED")
}

/// A connection that the policy refuses: tried once, after the enforcer had 10 s to
/// learn the pod.
fn blocked(check: &str) -> String {
    format!("sleep 10; if {check}; then echo REACHED; else echo BLOCKED; fi")
}

async fn pod_ip(client: &Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = wait_pod_phase(&pods, name, &["Running"], Duration::from_secs(120)).await?;
    pod.status
        .and_then(|s| s.pod_ip)
        .ok_or_else(|| anyhow::anyhow!("pod {ns}/{name} has no IP"))
}

#[tokio::test]
async fn only_the_tenants_namespace_and_the_operator_reach_an_engine_and_it_reaches_only_dns(
) -> anyhow::Result<()> {
    let client = client().await?;
    let c = &client;
    let ns = TestNamespace::create(c, "e2e-net").await?;
    let other = TestNamespace::create(c, "e2e-stranger").await?;
    let (n, o) = (ns.name.as_str(), other.name.as_str());
    ready_tenant(c, n, "fort", "bronze").await?;
    let engine = format!("{} 8080", pod_ip(c, n, "fort-engine-0").await?);

    // In: the tenant's namespace yes, another namespace no.
    let plain = json!({"app": "probe"});
    let from_home = probe(
        c,
        n,
        "neighbour",
        plain.clone(),
        &reaches(&tls_answers(&engine)),
    )
    .await?;
    assert_eq!(
        from_home, "REACHED",
        "a pod of the tenant's namespace reaches its engine"
    );
    let from_away = probe(
        c,
        o,
        "stranger",
        plain.clone(),
        &blocked(&tls_answers(&engine)),
    )
    .await?;
    assert_eq!(
        from_away, "BLOCKED",
        "a pod of another namespace must not reach the engine"
    );

    // The operator: a PluggableDatabase becomes open only through the engine's admin API.
    open_database(c, n, "vault", json!({"tenant": "fort"})).await?;

    // Out: a pod the tenant's policy selects (the engine's labels) resolves names and
    // reaches nothing else, not even a server in its own namespace, which an unselected
    // pod of the same namespace does reach.
    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    create_pod(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "w", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                                        "command": ["sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8081 -h /www"]}]}}),
    )
    .await?;
    let web = format!("{} 8081", pod_ip(c, n, "web").await?);
    let engine_like = json!({"app.kubernetes.io/name": "tenantdb-engine",
                             "app.kubernetes.io/instance": "fort", "tenantdb.io/tenant": "fort"});
    let control = probe(c, n, "unselected", plain, &reaches(&http_ok(&web, "/"))).await?;
    assert_eq!(
        control, "REACHED",
        "the web server answers pods the policy does not select"
    );
    let out = probe(
        c,
        n,
        "egress",
        engine_like.clone(),
        &blocked(&http_ok(&web, "/")),
    )
    .await?;
    assert_eq!(
        out, "BLOCKED",
        "an engine's pod must not open connections beyond DNS and its store"
    );
    let dns = "sleep 10; nslookup kubernetes.default.svc.cluster.local >/dev/null && echo RESOLVED || echo FAILED";
    let resolved = probe(c, n, "dns", engine_like, dns).await?;
    assert_eq!(resolved, "RESOLVED", "DNS stays open to the engine");

    ns.delete(Duration::from_secs(120)).await?;
    other.delete(Duration::from_secs(120)).await
}
