//! A real S3-compatible object store for the backup tests: versitygw in a pod of the
//! test's namespace, and Tenants whose backup points at it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tenantdb_crds::Tenant;

use crate::{busybox_image, create_pod, wait_pod_phase};

/// The store's access key.
pub const KEY: &str = "e2e-backup-key";
/// The store's secret key.
pub const SECRET: &str = "e2e-backup-secret-key";

/// The versitygw image (built by `e2e/images.sh`).
pub fn store_image() -> String {
    std::env::var("TENANTDB_E2E_VERSITYGW_IMAGE")
        .unwrap_or_else(|_| "localhost/tenantdb-versitygw:dev".to_string())
}

/// versitygw in `ns` behind a Service, and Secret `backup-credentials` for it; returns
/// its endpoint URL.
pub async fn object_store(client: &kube::Client, ns: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    create_pod(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "versitygw", "labels": {"app": "versitygw"}},
               "spec": {"terminationGracePeriodSeconds": 0,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "volumes": [{"name": "store", "emptyDir": {}}],
                        "initContainers": [{"name": "bucket", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                                            "command": ["mkdir", "-p", "/store/backups"],
                                            "volumeMounts": [{"name": "store", "mountPath": "/store"}],
                                            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
                        "containers": [{"name": "s3", "image": store_image(), "imagePullPolicy": "IfNotPresent",
                                        "volumeMounts": [{"name": "store", "mountPath": "/store"}],
                                        "args": ["--access", KEY, "--secret", SECRET, "--port", ":7070", "posix", "/store"],
                                        "ports": [{"containerPort": 7070}],
                                        "readinessProbe": {"tcpSocket": {"port": 7070}, "periodSeconds": 1},
                                        "securityContext": {"allowPrivilegeEscalation": false,
                                                            "capabilities": {"drop": ["ALL"]}}}]}}),
    )
    .await?;
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "versitygw"},
        "spec": {"selector": {"app": "versitygw"}, "ports": [{"port": 7070, "targetPort": 7070}]}
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await?;
    wait_pod_phase(&pods, "versitygw", &["Running"], Duration::from_secs(60)).await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-credentials"},
        "stringData": {"accessKeyId": KEY, "secretAccessKey": SECRET}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(format!("http://versitygw.{ns}.svc:7070"))
}

/// A `Tenant.spec.backup` for the test store at `endpoint`, credentials from Secret `secret`.
pub fn backup_spec(endpoint: &str, secret: &str) -> serde_json::Value {
    json!({"store": {"endpoint": endpoint, "bucket": "backups", "prefix": "e2e", "credentialsSecret": secret},
           "snapshotInterval": "1h", "maxShippingDelayMillis": 500})
}

/// Server-side apply a bronze Tenant `name` with `backup` (deleted with its volume).
pub async fn apply_tenant(
    client: &kube::Client,
    ns: &str,
    name: &str,
    backup: serde_json::Value,
) -> anyhow::Result<()> {
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                     "spec": {"tier": "bronze", "deletionPolicy": "Delete", "backup": backup}});
    Api::<Tenant>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e-test"), &Patch::Apply(&obj))
        .await?;
    Ok(())
}
