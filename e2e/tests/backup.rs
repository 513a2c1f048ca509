//! Continuous backup on the real cluster, to a real S3-compatible store (versitygw in a
//! pod of the test's namespace): a table dropped by mistake comes back by restoring its
//! database to a noted instant as a new PluggableDatabase; after the Tenant and its volume
//! are gone, a new Tenant restores the database from the store. Bad input: a missing
//! credentials Secret, an instant outside the window, a database the store never held.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tenantdb_crds::{PluggableDatabase, Tenant};
use tenantdb_e2e::*;

const KEY: &str = "e2e-backup-key";
const SECRET: &str = "e2e-backup-secret-key";

fn store_image() -> String {
    std::env::var("TENANTDB_E2E_VERSITYGW_IMAGE")
        .unwrap_or_else(|_| "localhost/tenantdb-versitygw:dev".to_string())
}

/// versitygw in `ns` behind a Service; returns its endpoint URL.
async fn object_store(client: &kube::Client, ns: &str) -> anyhow::Result<String> {
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

fn backup_spec(endpoint: &str, secret: &str) -> serde_json::Value {
    json!({"store": {"endpoint": endpoint, "bucket": "backups", "prefix": "e2e", "credentialsSecret": secret},
           "snapshotInterval": "1h", "maxShippingDelayMillis": 500})
}

async fn apply_tenant(
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

async fn apply_pdb(
    client: &kube::Client,
    ns: &str,
    tenant: &str,
    name: &str,
    source: serde_json::Value,
) -> anyhow::Result<()> {
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
                     "metadata": {"name": name}, "spec": {"tenant": tenant, "source": source}});
    Api::<PluggableDatabase>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("e2e-test"), &Patch::Apply(&obj))
        .await?;
    Ok(())
}

/// Wait for `name` to be Open, or for a condition whose reason is `reason`; returns the
/// condition's message in the second case.
async fn outcome(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: Option<&str>,
) -> anyhow::Result<String> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{name}: {reason:?}"),
        Duration::from_secs(120),
        || async {
            let s = api.get(name).await?.status.unwrap_or_default();
            Ok(match reason {
                None => (s.phase.as_deref() == Some("Open")).then(String::new),
                Some(r) => s
                    .conditions
                    .iter()
                    .find(|c| c.reason == r)
                    .map(|c| c.message.clone()),
            })
        },
    )
    .await
}

/// Wait until everything `pdb` committed is in the store.
async fn shipped(
    client: &kube::Client,
    ns: &str,
    tenant: &str,
    pdb: &str,
    token: &str,
) -> anyhow::Result<()> {
    eventually(
        &format!("{pdb} shipped"),
        Duration::from_secs(60),
        || async {
            let (s, v) = call(
                client,
                ns,
                tenant,
                "GET",
                &format!("/v1/databases/{pdb}/backup"),
                token,
                None,
            )
            .await?;
            Ok((s == 200 && v["pendingCommits"] == 0 && v["generation"].is_string()).then_some(()))
        },
    )
    .await
}

async fn count(
    client: &kube::Client,
    ns: &str,
    tenant: &str,
    pdb: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let (s, v) = sql(client, ns, tenant, pdb, token, "SELECT count(*) FROM o").await?;
    anyhow::ensure!(s == 200, "count on {pdb}: {s} {v}");
    Ok(v["rows"][0][0].clone())
}

#[tokio::test]
async fn a_dropped_table_comes_back_to_a_noted_instant_even_after_its_tenant_is_gone(
) -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-backup").await?;
    let n = ns.name.clone();
    let endpoint = object_store(&client, &n).await?;
    apply_tenant(
        &client,
        &n,
        "keeper",
        backup_spec(&endpoint, "backup-credentials"),
    )
    .await?;
    let token = tenant_ready(&client, &n, "keeper").await?;
    apply_pdb(&client, &n, "keeper", "orders", json!({"seed": {}})).await?;
    outcome(&client, &n, "orders", None).await?;
    for stmt in [
        "CREATE TABLE o (id INTEGER PRIMARY KEY, item TEXT)",
        "INSERT INTO o (item) VALUES ('apple'), ('pear'), ('plum')",
    ] {
        let (s, v) = sql(&client, &n, "keeper", "orders", &token, stmt).await?;
        anyhow::ensure!(s == 200, "{stmt}: {s} {v}");
    }
    shipped(&client, &n, "keeper", "orders", &token).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let noted = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = sql(&client, &n, "keeper", "orders", &token, "DROP TABLE o").await?;
    anyhow::ensure!(s == 200, "DROP TABLE: {s} {v}");
    shipped(&client, &n, "keeper", "orders", &token).await?;

    // The mistake is undone in a new database; the original stays as it is.
    apply_pdb(
        &client,
        &n,
        "keeper",
        "orders-before",
        json!({"restore": {"database": "orders", "pointInTime": noted}}),
    )
    .await?;
    outcome(&client, &n, "orders-before", None).await?;
    assert_eq!(
        count(&client, &n, "keeper", "orders-before", &token).await?,
        json!(3)
    );
    let (s, _) = sql(
        &client,
        &n,
        "keeper",
        "orders",
        &token,
        "SELECT count(*) FROM o",
    )
    .await?;
    assert_eq!(s, 400, "the original still has no table o");

    // Bad restores: a database the store never held, an instant outside the window.
    apply_pdb(
        &client,
        &n,
        "keeper",
        "ghost",
        json!({"restore": {"database": "never-was"}}),
    )
    .await?;
    let m = outcome(&client, &n, "ghost", Some("BackupNotFound")).await?;
    assert!(m.contains("holds no backup"), "{m}");
    apply_pdb(
        &client,
        &n,
        "keeper",
        "too-early",
        json!({"restore": {"database": "orders", "pointInTime": "2001-01-01T00:00:00Z"}}),
    )
    .await?;
    let m = outcome(&client, &n, "too-early", Some("RestorePointInvalid")).await?;
    assert!(m.contains("outside the recoverable window"), "{m}");

    // A Tenant whose credentials Secret does not exist: said so, nothing made.
    apply_tenant(
        &client,
        &n,
        "orphan",
        backup_spec(&endpoint, "no-such-secret"),
    )
    .await?;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &n);
    let m = eventually(
        "orphan's BackupCredentialsMissing",
        Duration::from_secs(60),
        || async {
            let s = tenants.get("orphan").await?.status.unwrap_or_default();
            Ok(s.conditions
                .iter()
                .find(|c| c.reason == "BackupCredentialsMissing")
                .map(|c| c.message.clone()))
        },
    )
    .await?;
    assert!(m.contains("no-such-secret"), "{m}");
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), &n);
    assert!(
        sts.get_opt("orphan-engine").await?.is_none(),
        "no engine was made for orphan"
    );

    // The Tenant goes with its volume; a new Tenant restores the database from the store.
    tenants.delete("keeper", &DeleteParams::default()).await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &n);
    eventually(
        "keeper and its volume gone",
        Duration::from_secs(180),
        || async {
            let gone = tenants.get_opt("keeper").await?.is_none()
                && pvcs.get_opt("data-keeper-engine-0").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;
    apply_tenant(
        &client,
        &n,
        "heir",
        backup_spec(&endpoint, "backup-credentials"),
    )
    .await?;
    let heir_token = tenant_ready(&client, &n, "heir").await?;
    apply_pdb(
        &client,
        &n,
        "heir",
        "orders-again",
        json!({"restore": {"tenant": "keeper", "database": "orders", "pointInTime": noted}}),
    )
    .await?;
    outcome(&client, &n, "orders-again", None).await?;
    assert_eq!(
        count(&client, &n, "heir", "orders-again", &heir_token).await?,
        json!(3)
    );
    ns.delete(Duration::from_secs(180)).await
}
