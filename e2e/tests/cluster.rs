//! The cluster is real: cgroup limits, Service DNS, dynamic volumes and namespace
//! deletion all work. Run by `./test.sh` (feature `e2e`) against `KUBECONFIG`.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use tenantdb_e2e::*;

const POD_START: Duration = Duration::from_secs(120);

/// Prints the container's CPU quota/period and memory limit as the kernel holds them.
const READ_CGROUP: &str = r#"
if [ -f /sys/fs/cgroup/cpu.max ]; then
  set -- $(cat /sys/fs/cgroup/cpu.max); echo "quota=$1"; echo "period=$2"
  echo "memory=$(cat /sys/fs/cgroup/memory.max)"
else
  echo "quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
  echo "period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
  echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
fi
echo done=1
sleep 3600
"#;

#[tokio::test]
async fn pod_limits_reach_the_container_cgroup() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-cgroup").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    create_pod(
        &pods,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "limits"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "main", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", READ_CGROUP],
                "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}
            }]}
        }),
    )
    .await?;
    wait_pod_phase(&pods, "limits", &["Running"], POD_START).await?;
    wait_log_line(&pods, "limits", POD_START, |l| l == "done=1").await?;
    let logs = pods.logs("limits", &LogParams::default()).await?;
    let quota: f64 = field(&logs, "quota").unwrap_or("missing").parse()?;
    let period: f64 = field(&logs, "period").unwrap_or("missing").parse()?;
    let memory: u64 = field(&logs, "memory").unwrap_or("missing").parse()?;
    assert!(
        (quota / period - 0.25).abs() < 1e-9,
        "cpu quota/period is {quota}/{period}, want 0.25; logs:\n{logs}"
    );
    assert_eq!(memory, 128 * 1024 * 1024, "memory limit; logs:\n{logs}");
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn a_service_reaches_a_pod_by_dns_name() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-dns").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let token = format!("token-{}", rand::random::<u64>());
    create_pod(&pods, serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", format!("mkdir -p /www && echo {token} > /www/index.html && exec httpd -f -p 8080 -h /www")],
            "ports": [{"containerPort": 8080}]
        }]}
    })).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &svc)
        .await?;
    let url = format!("http://web.{}.svc.cluster.local/index.html", ns.name);
    create_pod(&pods, serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", format!("for i in $(seq 60); do if body=$(timeout 3 wget -qO- {url}); then echo \"got=$body\"; exit 0; fi; sleep 1; done; exit 1")]
        }]}
    })).await?;
    wait_pod_phase(&pods, "client", &["Succeeded"], POD_START).await?;
    let logs = pods.logs("client", &LogParams::default()).await?;
    assert_eq!(
        field(&logs, "got"),
        Some(token.as_str()),
        "client logs:\n{logs}"
    );
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn a_claim_on_the_default_storage_class_binds_and_keeps_data() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-pvc").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    }))?;
    claims.create(&PostParams::default(), &pvc).await?;
    let token = format!("kept-{}", rand::random::<u64>());
    let pod = |name: &str, script: String| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": [{
                "name": "main", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        })
    };
    create_pod(
        &pods,
        pod("writer", format!("echo {token} > /data/f && sync")),
    )
    .await?;
    wait_pod_phase(&pods, "writer", &["Succeeded"], POD_START).await?;
    let phase = claims.get("data").await?.status.and_then(|s| s.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Bound"),
        "the claim binds through the default StorageClass"
    );
    pods.delete("writer", &DeleteParams::default()).await?;
    create_pod(
        &pods,
        pod("reader", "echo \"read=$(cat /data/f)\"".to_string()),
    )
    .await?;
    wait_pod_phase(&pods, "reader", &["Succeeded"], POD_START).await?;
    let logs = pods.logs("reader", &LogParams::default()).await?;
    assert_eq!(
        field(&logs, "read"),
        Some(token.as_str()),
        "reader logs:\n{logs}"
    );
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_pods() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-nsdel").await?;
    let name = ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
    create_pod(
        &pods,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                "name": "main", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]
            }]}
        }),
    )
    .await?;
    wait_pod_phase(&pods, "sleeper", &["Running"], POD_START).await?;
    ns.delete(Duration::from_secs(120)).await?;
    let left = Api::<Pod>::all(client)
        .list(&ListParams::default().fields(&format!("metadata.namespace={name}")))
        .await?;
    assert!(
        left.items.is_empty(),
        "pods left in deleted namespace {name}: {}",
        left.items.len()
    );
    Ok(())
}
