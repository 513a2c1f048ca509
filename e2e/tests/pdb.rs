//! PluggableDatabases and LockdownProfiles from kubectl's point of view: every change
//! is an edit of YAML, and the engine in the tenant's pod follows it.
#![cfg(feature = "e2e")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tenantdb_crds::{LockdownProfile, PluggableDatabase};
use tenantdb_e2e::*;

const MANAGER: &str = "e2e-test";

/// Create or change a PluggableDatabase by server-side apply, as `kubectl apply` does.
async fn apply_pdb(client: &Client, ns: &str, name: &str, spec: Value) -> anyhow::Result<()> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
                     "metadata": {"name": name}, "spec": spec});
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

async fn apply_profile(client: &Client, name: &str, spec: Value) -> anyhow::Result<()> {
    let api: Api<LockdownProfile> = Api::all(client.clone());
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "LockdownProfile",
                     "metadata": {"name": name}, "spec": spec});
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

/// Wait until the PluggableDatabase's status satisfies `ok`; returns it.
async fn wait_pdb(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&PluggableDatabase) -> bool,
) -> anyhow::Result<PluggableDatabase> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    let ok = &ok;
    let api = &api;
    eventually(&format!("{name}: {what}"), timeout, || async move {
        let p = api.get(name).await?;
        Ok(ok(&p).then_some(p))
    })
    .await
}

fn phase(p: &PluggableDatabase) -> &'static str {
    p.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("", |p| p.as_str())
}

fn ready_reason(p: &PluggableDatabase) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn open_in(mode: &'static str) -> impl Fn(&PluggableDatabase) -> bool {
    move |p| {
        phase(p) == if mode == "Mounted" { "Mounted" } else { "Open" }
            && p.status
                .as_ref()
                .and_then(|s| s.open_mode)
                .is_some_and(|m| format!("{m:?}") == mode)
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    }
}

async fn rows(
    client: &Client,
    ns: &str,
    tenant: &str,
    pdb: &str,
    token: &str,
    q: &str,
) -> anyhow::Result<Vec<Value>> {
    let (s, v) = sql(client, ns, tenant, pdb, token, q).await?;
    anyhow::ensure!(s == 200, "{q}: {s} {v}");
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

async fn delete_pdb(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default()).await?;
    eventually(&format!("{name} gone"), Duration::from_secs(60), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Overwrite 4 KiB in the middle of a file on the tenant's volume, from a pod that
/// mounts the same claim (local volumes allow a second pod on the node).
async fn corrupt_on_volume(
    client: &Client,
    ns: &str,
    tenant: &str,
    path: &str,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let spec = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "corrupter"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", format!("dd if=/dev/urandom of=/data/{path} bs=4096 seek=2 count=1 conv=notrunc && echo corrupted")],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{tenant}-engine-0")}}]
        }
    });
    create_pod(&pods, spec).await?;
    let pod = wait_pod_phase(
        &pods,
        "corrupter",
        &["Succeeded", "Failed"],
        Duration::from_secs(60),
    )
    .await?;
    anyhow::ensure!(
        pod.status.and_then(|s| s.phase).as_deref() == Some("Succeeded"),
        "the corrupting pod failed"
    );
    Ok(())
}

#[tokio::test]
async fn a_database_follows_its_yaml_through_modes_clones_archives_lockdown_and_deletion(
) -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-pldb").await?;
    let n = ns.name.as_str();
    let token = ready_tenant(&client, n, "main", "silver").await?;
    let c = &client;

    // Create → ReadWrite; rows written with the tenant's credentials.
    let started = Instant::now();
    apply_pdb(c, n, "orders", json!({"tenant": "main"})).await?;
    wait_pdb(
        c,
        n,
        "orders",
        "open ReadWrite",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    println!(
        "PluggableDatabase open {:.1} s after apply",
        started.elapsed().as_secs_f64()
    );
    rows(
        c,
        n,
        "main",
        "orders",
        &token,
        "CREATE TABLE o (id INTEGER PRIMARY KEY, item TEXT)",
    )
    .await?;
    for i in 0..20 {
        rows(
            c,
            n,
            "main",
            "orders",
            &token,
            &format!("INSERT INTO o (item) VALUES ('item {i}')"),
        )
        .await?;
    }

    // ReadOnly: writes refused, reads work.
    apply_pdb(
        c,
        n,
        "orders",
        json!({"tenant": "main", "openMode": "ReadOnly"}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "orders",
        "ReadOnly",
        Duration::from_secs(60),
        open_in("ReadOnly"),
    )
    .await?;
    let (s, v) = sql(
        c,
        n,
        "main",
        "orders",
        &token,
        "INSERT INTO o (item) VALUES ('no')",
    )
    .await?;
    assert_eq!(s, 409, "a ReadOnly database refuses writes: {v}");
    assert_eq!(
        rows(c, n, "main", "orders", &token, "SELECT count(*) FROM o").await?[0][0],
        20
    );

    // Mounted: closed to every session. Then ReadWrite again.
    apply_pdb(
        c,
        n,
        "orders",
        json!({"tenant": "main", "openMode": "Mounted"}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "orders",
        "Mounted",
        Duration::from_secs(60),
        open_in("Mounted"),
    )
    .await?;
    let (s, v) = sql(c, n, "main", "orders", &token, "SELECT 1").await?;
    assert_eq!(s, 409, "a Mounted database serves no session: {v}");
    apply_pdb(
        c,
        n,
        "orders",
        json!({"tenant": "main", "openMode": "ReadWrite"}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "orders",
        "ReadWrite again",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    rows(
        c,
        n,
        "main",
        "orders",
        &token,
        "INSERT INTO o (item) VALUES ('after')",
    )
    .await?;

    // A full clone under concurrent writes holds exactly a prefix of the acknowledged rows.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, n, token, acked, stop) = (
            client.clone(),
            ns.name.clone(),
            token.clone(),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((200, v)) = sql(
                    &c,
                    &n,
                    "main",
                    "orders",
                    &token,
                    "INSERT INTO o (item) VALUES ('live') RETURNING id",
                )
                .await
                {
                    if let Some(id) = v["rows"][0][0].as_i64() {
                        acked.lock().unwrap().insert(id);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    apply_pdb(
        c,
        n,
        "copy",
        json!({"tenant": "main", "source": {"clone": {"from": "orders", "mode": "full"}}}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "copy",
        "clone open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let acked = acked.lock().unwrap().clone();
    let in_copy: Vec<i64> = rows(c, n, "main", "copy", &token, "SELECT id FROM o ORDER BY id")
        .await?
        .iter()
        .filter_map(|r| r[0].as_i64())
        .collect();
    let max = *in_copy.last().unwrap_or(&0);
    assert_eq!(
        in_copy,
        (1..=max).collect::<Vec<_>>(),
        "the clone is one consistent point in time"
    );
    let live_in_copy = in_copy.iter().filter(|id| **id > 21).count();
    assert!(
        acked.iter().filter(|id| **id <= max).count() == live_in_copy,
        "every row in the clone was acknowledged"
    );
    println!(
        "clone under load: {} rows acknowledged during the run, {} of them in the clone",
        acked.len(),
        live_in_copy
    );
    rows(
        c,
        n,
        "main",
        "copy",
        &token,
        "INSERT INTO o (item) VALUES ('only in copy')",
    )
    .await?;
    let source_count = rows(
        c,
        n,
        "main",
        "orders",
        &token,
        "SELECT count(*) FROM o WHERE item = 'only in copy'",
    )
    .await?;
    assert_eq!(
        source_count[0][0], 0,
        "the clone is independent of its source"
    );

    // Metadata-only: the schema, no rows.
    apply_pdb(
        c,
        n,
        "shape",
        json!({"tenant": "main", "source": {"clone": {"from": "orders", "mode": "metadataOnly"}}}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "shape",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    assert_eq!(
        rows(c, n, "main", "shape", &token, "SELECT count(*) FROM o").await?[0][0],
        0
    );

    // Unplug on delete, plug as a new database: the same content.
    let before = rows(
        c,
        n,
        "main",
        "orders",
        &token,
        "SELECT group_concat(id || ':' || item) FROM (SELECT * FROM o ORDER BY id)",
    )
    .await?;
    apply_pdb(
        c,
        n,
        "orders",
        json!({"tenant": "main", "deletionPolicy": "Unplug"}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "orders",
        "policy seen",
        Duration::from_secs(30),
        |p| p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation,
    )
    .await?;
    delete_pdb(c, n, "orders").await?;
    let (s, archives) = call(c, n, "main", "GET", "/v1/archives", &token, None).await?;
    assert_eq!(s, 200, "{archives}");
    let archive = archives["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["database"] == "orders")
        .and_then(|a| a["name"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no archive of orders in {archives}"))?
        .to_string();
    apply_pdb(
        c,
        n,
        "restored",
        json!({"tenant": "main", "source": {"plug": {"archive": archive}}}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "restored",
        "plugged and open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    let after = rows(
        c,
        n,
        "main",
        "restored",
        &token,
        "SELECT group_concat(id || ':' || item) FROM (SELECT * FROM o ORDER BY id)",
    )
    .await?;
    assert_eq!(before, after, "unplug → plug keeps every row");
    // Checksums: plug the archive once more and unplug it untouched; the new archive's
    // sha256 is the original's, so plugging changed no byte.
    let check = json!({"tenant": "main", "source": {"plug": {"archive": archive}},
                       "deletionPolicy": "Unplug", "unplugArchive": "restored-check"});
    apply_pdb(c, n, "restored-check", check).await?;
    wait_pdb(
        c,
        n,
        "restored-check",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    delete_pdb(c, n, "restored-check").await?;
    let (_, first) = call(
        c,
        n,
        "main",
        "GET",
        &format!("/v1/archives/{archive}"),
        &token,
        None,
    )
    .await?;
    let (_, again) = call(
        c,
        n,
        "main",
        "GET",
        "/v1/archives/restored-check",
        &token,
        None,
    )
    .await?;
    assert!(first["sha256"].is_string(), "{first}");
    assert_eq!(
        first["sha256"], again["sha256"],
        "identical bytes after unplug → plug → unplug"
    );

    // Lockdown: disabling DROP TABLE reaches an open database within seconds, and back.
    apply_profile(c, "e2e-guard", json!({})).await?;
    apply_pdb(c, n, "restored", json!({"tenant": "main", "source": {"plug": {"archive": archive}}, "lockdownProfile": "e2e-guard"})).await?;
    wait_pdb(
        c,
        n,
        "restored",
        "profile in force",
        Duration::from_secs(60),
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.lockdown_profile.as_deref())
                == Some("e2e-guard")
        },
    )
    .await?;
    // Lockdown binds tenant sessions (the admin token bypasses it): use a data token.
    let body = json!({"databases": ["restored"]});
    let (s, issued) = call(c, n, "main", "POST", "/v1/tokens", &token, Some(body)).await?;
    assert_eq!(s, 201, "{issued}");
    let data = issued["token"].as_str().unwrap_or_default().to_string();
    rows(c, n, "main", "restored", &data, "CREATE TABLE scratch (x)").await?;
    rows(
        c,
        n,
        "main",
        "restored",
        &data,
        "SELECT count(*) FROM scratch",
    )
    .await?;
    let t0 = Instant::now();
    apply_profile(
        c,
        "e2e-guard",
        json!({"disabledStatements": ["DROP_TABLE"]}),
    )
    .await?;
    let c2 = client.clone();
    let (ns2, tok2) = (ns.name.clone(), data.clone());
    eventually("DROP TABLE refused", Duration::from_secs(20), || {
        let (c2, ns2, tok2) = (c2.clone(), ns2.clone(), tok2.clone());
        async move {
            // EXPLAIN compiles the statement (the authorizer runs) without dropping anything.
            let (s, _) = sql(
                &c2,
                &ns2,
                "main",
                "restored",
                &tok2,
                "EXPLAIN DROP TABLE scratch",
            )
            .await?;
            Ok((s == 403).then_some(()))
        }
    })
    .await?;
    println!(
        "lockdown change enforced {:.1} s after apply",
        t0.elapsed().as_secs_f64()
    );
    let (s, v) = sql(c, n, "main", "restored", &data, "DROP TABLE scratch").await?;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("drop"),
        "{v}"
    );
    let ldp = Api::<LockdownProfile>::all(client.clone());
    eventually(
        "profile status counts the database (and names none)",
        Duration::from_secs(30),
        || async {
            let p = ldp.get("e2e-guard").await?;
            let raw = serde_json::to_string(&p.status)?;
            anyhow::ensure!(
                !raw.contains("restored"),
                "the status names a database: {raw}"
            );
            Ok(p.status
                .is_some_and(|s| s.applied_count >= Some(1) && s.applied_namespaces >= Some(1))
                .then_some(()))
        },
    )
    .await?;
    apply_profile(c, "e2e-guard", json!({})).await?;
    eventually("DROP TABLE allowed again", Duration::from_secs(20), || {
        let (c2, ns2, tok2) = (client.clone(), ns.name.clone(), data.clone());
        async move {
            let (s, _) = sql(
                &c2,
                &ns2,
                "main",
                "restored",
                &tok2,
                "EXPLAIN DROP TABLE scratch",
            )
            .await?;
            Ok((s == 200).then_some(()))
        }
    })
    .await?;
    rows(c, n, "main", "restored", &data, "DROP TABLE scratch").await?;

    // Bad specs: a condition with a reason, and nothing in the engine.
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), n);
    let two = serde_json::from_value(
        json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
        "metadata": {"name": "two"}, "spec": {"tenant": "main", "source": {"seed": {}, "clone": {"from": "copy"}}}}),
    )?;
    let err = pdbs
        .create(&Default::default(), &two)
        .await
        .expect_err("two sources are refused");
    assert!(err.to_string().contains("exactly one"), "{err}");
    for (name, spec, reason) in [
        (
            "ghost",
            json!({"tenant": "main", "source": {"clone": {"from": "nowhere"}}}),
            "CloneSourceNotFound",
        ),
        (
            "lost",
            json!({"tenant": "main", "source": {"plug": {"archive": "no-such-archive"}}}),
            "ArchiveNotFound",
        ),
        (
            "strict",
            json!({"tenant": "main", "lockdownProfile": "e2e-missing"}),
            "ProfileNotFound",
        ),
    ] {
        apply_pdb(c, n, name, spec).await?;
        let p = wait_pdb(c, n, name, reason, Duration::from_secs(60), |p| {
            ready_reason(p) == reason
        })
        .await?;
        assert!(
            matches!(phase(&p), "Failed" | "Invalid"),
            "{name}: {:?}",
            p.status
        );
        let (s, _) = call(
            c,
            n,
            "main",
            "GET",
            &format!("/v1/databases/{name}"),
            &token,
            None,
        )
        .await?;
        assert_eq!(s, 404, "{name} changed nothing in the engine");
    }
    // A corrupted archive is refused at plug time.
    apply_pdb(c, n, "shape", json!({"tenant": "main", "source": {"clone": {"from": "orders", "mode": "metadataOnly"}}, "deletionPolicy": "Unplug"})).await?;
    wait_pdb(c, n, "shape", "policy seen", Duration::from_secs(30), |p| {
        p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await?;
    delete_pdb(c, n, "shape").await?;
    let (_, archives) = call(c, n, "main", "GET", "/v1/archives", &token, None).await?;
    let bad = archives["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["database"] == "shape")
        .and_then(|a| a["name"].as_str())
        .unwrap_or_default()
        .to_string();
    corrupt_on_volume(c, n, "main", &format!("archives/{bad}/data.db")).await?;
    apply_pdb(
        c,
        n,
        "broken",
        json!({"tenant": "main", "source": {"plug": {"archive": bad}}}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "broken",
        "ArchiveInvalid",
        Duration::from_secs(60),
        |p| ready_reason(p) == "ArchiveInvalid",
    )
    .await?;
    let (s, _) = call(c, n, "main", "GET", "/v1/databases/broken", &token, None).await?;
    assert_eq!(s, 404, "a corrupted archive registers nothing");

    // Deletion policies leave exactly what they promise.
    apply_pdb(
        c,
        n,
        "keep",
        json!({"tenant": "main", "deletionPolicy": "Retain"}),
    )
    .await?;
    wait_pdb(
        c,
        n,
        "keep",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    for name in ["keep", "copy", "ghost", "lost", "strict", "broken"] {
        delete_pdb(c, n, name).await?;
    }
    let history = |name: &'static str| {
        let (c, n, token) = (client.clone(), ns.name.clone(), token.clone());
        async move {
            call(
                &c,
                &n,
                "main",
                "GET",
                &format!("/v1/databases/{name}/history"),
                &token,
                None,
            )
            .await
        }
    };
    let (_, keep) = history("keep").await?;
    let (_, copy) = history("copy").await?;
    assert!(
        keep.to_string().contains("files kept"),
        "Retain keeps the file: {keep}"
    );
    assert!(
        copy.to_string().contains("files deleted"),
        "Delete removes the file: {copy}"
    );
    let (_, listed) = call(c, n, "main", "GET", "/v1/databases", &token, None).await?;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["restored"],
        "only the database still declared is left"
    );
    delete_pdb(c, n, "restored").await?;
    Api::<LockdownProfile>::all(client.clone())
        .delete("e2e-guard", &DeleteParams::default())
        .await?;
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn relocation_keeps_every_acknowledged_row_and_tokens_stay_home() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-move").await?;
    let other = TestNamespace::create(&client, "e2e-other").await?;
    let n = ns.name.clone();
    let c = &client;
    let (ta, tb, tx) = tokio::try_join!(
        ready_tenant(c, &n, "east", "bronze"),
        ready_tenant(c, &n, "west", "bronze"),
        ready_tenant(c, &other.name, "far", "bronze"),
    )?;

    apply_pdb(c, &n, "ledger", json!({"tenant": "east"})).await?;
    wait_pdb(
        c,
        &n,
        "ledger",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    rows(
        c,
        &n,
        "east",
        "ledger",
        &ta,
        "CREATE TABLE l (id INTEGER PRIMARY KEY, note TEXT)",
    )
    .await?;

    // Another tenant's token never reads this database: same namespace or another one.
    let (s, v) = sql(c, &n, "east", "ledger", &tb, "SELECT * FROM l").await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = sql(c, &n, "east", "ledger", &tx, "SELECT * FROM l").await?;
    assert_eq!(s, 403, "{v}");

    // A writer runs through the move, retrying wherever the database is now.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, n, acked, stop) = (client.clone(), n.clone(), acked.clone(), stop.clone());
        let (ta, tb) = (ta.clone(), tb.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let q = format!("INSERT INTO l (id, note) VALUES ({i}, 'w')");
                for (tenant, token) in [("east", &ta), ("west", &tb)] {
                    if let Ok((200, _)) = sql(&c, &n, tenant, "ledger", token, &q).await {
                        acked.lock().unwrap().push(i);
                        i += 1;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    apply_pdb(c, &n, "ledger", json!({"tenant": "west"})).await?;
    let moved = wait_pdb(
        c,
        &n,
        "ledger",
        "open in west",
        Duration::from_secs(90),
        |p| {
            open_in("ReadWrite")(p)
                && p.status.as_ref().and_then(|s| s.tenant.as_deref()) == Some("west")
        },
    )
    .await?;
    println!(
        "relocation east → west took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let acked = acked.lock().unwrap().clone();
    let present: BTreeSet<i64> = rows(c, &n, "west", "ledger", &tb, "SELECT id FROM l")
        .await?
        .iter()
        .filter_map(|r| r[0].as_i64())
        .collect();
    let missing: Vec<&u64> = acked
        .iter()
        .filter(|i| !present.contains(&(**i as i64)))
        .collect();
    println!(
        "relocation under load: {} acknowledged writes, {} missing",
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    assert!(
        acked.len() > 20,
        "the writer ran through the move ({} writes)",
        acked.len()
    );
    let (s, _) = call(c, &n, "east", "GET", "/v1/databases/ledger", &ta, None).await?;
    assert_eq!(s, 404, "the source is gone after the move");
    let (_, archives) = call(c, &n, "east", "GET", "/v1/archives", &ta, None).await?;
    assert_eq!(
        archives["items"],
        json!([]),
        "no relocation archive left behind"
    );
    assert_eq!(
        moved
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.as_str()),
        Some("Open")
    );

    // Deleting the Tenant first, then its database: the database does not hang.
    apply_pdb(c, &n, "orphan", json!({"tenant": "east"})).await?;
    wait_pdb(
        c,
        &n,
        "orphan",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    let tenants: Api<tenantdb_crds::Tenant> = Api::namespaced(client.clone(), &n);
    tenants.delete("east", &DeleteParams::default()).await?;
    eventually("Tenant east gone", Duration::from_secs(120), || async {
        Ok(tenants.get_opt("east").await?.is_none().then_some(()))
    })
    .await?;
    wait_pdb(
        c,
        &n,
        "orphan",
        "TenantNotFound",
        Duration::from_secs(60),
        |p| ready_reason(p) == "TenantNotFound",
    )
    .await?;
    let t0 = Instant::now();
    delete_pdb(c, &n, "orphan").await?;
    println!(
        "PluggableDatabase of a deleted Tenant removed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    delete_pdb(c, &n, "ledger").await?;
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &n);
    let left: Vec<String> = pdbs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    other.delete(Duration::from_secs(120)).await?;
    ns.delete(Duration::from_secs(120)).await
}
