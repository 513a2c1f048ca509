//! Continuous backup on the real cluster, to a real S3-compatible store (versitygw in a
//! pod of the test's namespace): a table dropped by mistake comes back by restoring its
//! database to a noted instant as a new PluggableDatabase; after the Tenant and its volume
//! are gone, a new Tenant restores the database from the store. Bad input: a missing
//! credentials Secret, an unreachable store, an instant outside the window, a database the
//! store never held.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tenantdb_crds::{PluggableDatabase, Tenant};
use tenantdb_e2e::store::{apply_tenant, backup_spec, object_store};
use tenantdb_e2e::*;

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
                None => (s.phase.map(|p| p.as_str()) == Some("Open")).then(String::new),
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
    // The PluggableDatabase says so: BackupHealthy, and what is in the store.
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &n);
    let b = eventually("orders BackupHealthy", Duration::from_secs(90), || async {
        let s = pdbs.get("orders").await?.status.unwrap_or_default();
        let healthy = s
            .conditions
            .iter()
            .any(|c| c.type_ == "BackupHealthy" && c.status == "True");
        Ok(s.backup
            .filter(|b| healthy && b.last_shipped_transaction >= Some(2))
            .map(|b| (b.first_recoverable_time, b.last_recoverable_time)))
    })
    .await?;
    assert!(
        b.0.is_some() && b.1.is_some(),
        "a recoverable window: {b:?}"
    );
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

    // A store that does not answer: the tenant serves, writes go on, its databases say
    // BackupFailing with the store's error, and a restore from it makes nothing.
    apply_tenant(
        &client,
        &n,
        "stranded",
        backup_spec(
            &format!("http://no-store.{n}.svc:7070"),
            "backup-credentials",
        ),
    )
    .await?;
    let stranded_token = tenant_ready(&client, &n, "stranded").await?;
    apply_pdb(&client, &n, "stranded", "jotter", json!({"seed": {}})).await?;
    outcome(&client, &n, "jotter", None).await?;
    let (s, v) = sql(
        &client,
        &n,
        "stranded",
        "jotter",
        &stranded_token,
        "CREATE TABLE j (x)",
    )
    .await?;
    anyhow::ensure!(s == 200, "writes go on while the store is away: {s} {v}");
    let m = eventually("jotter BackupFailing", Duration::from_secs(120), || async {
        let s = pdbs.get("jotter").await?.status.unwrap_or_default();
        Ok(s.conditions
            .iter()
            .find(|c| c.type_ == "BackupFailing" && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone())))
    })
    .await?;
    assert_eq!(m.0, "StoreError", "{m:?}");
    assert!(
        m.1.contains("no-store"),
        "the store's error names it: {m:?}"
    );
    apply_pdb(
        &client,
        &n,
        "stranded",
        "unreachable",
        json!({"restore": {"tenant": "keeper", "database": "orders"}}),
    )
    .await?;
    let m = outcome(&client, &n, "unreachable", Some("BackupStoreUnreachable")).await?;
    assert!(m.contains("no-store"), "{m}");
    let (s, _) = sql(
        &client,
        &n,
        "stranded",
        "unreachable",
        &stranded_token,
        "SELECT 1",
    )
    .await?;
    assert_eq!(s, 404, "nothing half-made in the engine");

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
