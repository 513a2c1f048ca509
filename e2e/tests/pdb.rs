//! PluggableDatabases and LockdownProfiles from kubectl's point of view: every change
//! is an edit of YAML, and the engine in the tenant's pod follows it. Each test has its
//! own namespace and tenant and names what it proves.
#![cfg(feature = "e2e")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use kube::Client;
use serde_json::json;
use tenantdb_crds::{LockdownProfile, PluggableDatabase};
use tenantdb_e2e::pdb::*;
use tenantdb_e2e::*;

/// A namespace with a Ready silver tenant `main`; its admin token.
async fn tenant(client: &Client, prefix: &str) -> anyhow::Result<(TestNamespace, String)> {
    let ns = TestNamespace::create(client, prefix).await?;
    let token = ready_tenant(client, &ns.name, "main", "silver").await?;
    Ok((ns, token))
}

/// Database `name` of tenant `main`, open, with table `o` holding `count` rows.
async fn orders(c: &Client, n: &str, token: &str, name: &str, count: usize) -> anyhow::Result<()> {
    apply_pdb(c, n, name, json!({"tenant": "main"})).await?;
    wait_pdb(
        c,
        n,
        name,
        "open ReadWrite",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    let create = "CREATE TABLE o (id INTEGER PRIMARY KEY, item TEXT)";
    rows(c, n, "main", name, token, create).await?;
    for i in 0..count {
        let q = format!("INSERT INTO o (item) VALUES ('item {i}')");
        rows(c, n, "main", name, token, &q).await?;
    }
    Ok(())
}

/// Delete the databases `dbs` (their finalizers run), then the namespace.
async fn finish(c: &Client, ns: TestNamespace, dbs: &[&str]) -> anyhow::Result<()> {
    for name in dbs {
        delete_pdb(c, &ns.name, name).await?;
    }
    ns.delete(Duration::from_secs(120)).await
}

/// The archive `/v1/archives` lists for `database`.
async fn archive_of(c: &Client, n: &str, token: &str, database: &str) -> anyhow::Result<String> {
    let (s, archives) = call(c, n, "main", "GET", "/v1/archives", token, None).await?;
    anyhow::ensure!(s == 200, "{archives}");
    archives["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["database"] == database)
        .and_then(|a| a["name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no archive of {database} in {archives}"))
}

/// Apply `deletionPolicy: Unplug` to `name`, wait until it is seen, delete; the archive.
async fn unplug_by_deleting(
    c: &Client,
    n: &str,
    token: &str,
    name: &str,
    mut spec: serde_json::Value,
) -> anyhow::Result<String> {
    spec["deletionPolicy"] = json!("Unplug");
    apply_pdb(c, n, name, spec).await?;
    wait_pdb(c, n, name, "policy seen", Duration::from_secs(30), |p| {
        p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await?;
    delete_pdb(c, n, name).await?;
    archive_of(c, n, token, name).await
}

/// ReadWrite, ReadOnly, Mounted, ReadWrite again: each an edit of the YAML.
#[tokio::test]
async fn open_modes_follow_the_yaml_read_only_refuses_writes_mounted_serves_no_one(
) -> anyhow::Result<()> {
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-modes").await?;
    let (c, n) = (&client, ns.name.as_str());
    let started = Instant::now();
    orders(c, n, &token, "orders", 20).await?;
    println!(
        "PluggableDatabase open, with 20 rows, {:.1} s after apply",
        started.elapsed().as_secs_f64()
    );

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

    finish(c, ns, &["orders"]).await
}

/// Clones: a full clone taken while a writer runs holds exactly a prefix of the acknowledged
/// rows and is independent of its source; a metadata-only clone has the schema, no rows.
#[tokio::test]
async fn a_full_clone_under_writes_is_one_point_in_time_and_metadata_only_copies_the_schema(
) -> anyhow::Result<()> {
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-clone").await?;
    let (c, n) = (&client, ns.name.as_str());
    orders(c, n, &token, "orders", 21).await?;

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
    finish(c, ns, &["orders", "copy", "shape"]).await
}

/// Archives: unplug on delete and plug as a new database gives the same rows and checksum;
/// an archive damaged on the volume is refused at plug time and registers nothing.
#[tokio::test]
async fn unplug_then_plug_keeps_every_byte_and_a_corrupted_archive_is_refused() -> anyhow::Result<()>
{
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-plug").await?;
    let (c, n) = (&client, ns.name.as_str());
    orders(c, n, &token, "orders", 20).await?;

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
    let archive = unplug_by_deleting(c, n, &token, "orders", json!({"tenant": "main"})).await?;
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

    // A corrupted archive is refused at plug time.
    apply_pdb(c, n, "shape", json!({"tenant": "main"})).await?;
    wait_pdb(
        c,
        n,
        "shape",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    let bad = unplug_by_deleting(c, n, &token, "shape", json!({"tenant": "main"})).await?;
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
    finish(c, ns, &["restored", "broken"]).await
}

/// Lockdown: disabling DROP TABLE binds a data token's session within seconds, the profile's
/// status counts the database without naming it, and re-enabling works the same way.
#[tokio::test]
async fn a_lockdown_change_reaches_an_open_database_within_seconds_and_back() -> anyhow::Result<()>
{
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-lock").await?;
    let (c, n) = (&client, ns.name.as_str());
    apply_profile(c, "e2e-guard", json!({})).await?;
    let spec = json!({"tenant": "main", "lockdownProfile": "e2e-guard"});
    apply_pdb(c, n, "restored", spec).await?;
    wait_pdb(
        c,
        n,
        "restored",
        "profile in force",
        Duration::from_secs(60),
        |p| {
            open_in("ReadWrite")(p)
                && p.status
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
    delete_pdb(c, n, "restored").await?;
    Api::<LockdownProfile>::all(client.clone())
        .delete("e2e-guard", &DeleteParams::default())
        .await?;
    finish(c, ns, &[]).await
}

/// Bad specs: refused by the API server, or a condition with a reason and nothing created
/// in the engine.
#[tokio::test]
async fn a_bad_spec_gets_a_reason_and_changes_nothing_in_the_engine() -> anyhow::Result<()> {
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-bad").await?;
    let (c, n) = (&client, ns.name.as_str());
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
    finish(c, ns, &["ghost", "lost", "strict"]).await
}

/// Deletion policies: Retain keeps the file, Delete removes it, the rest stays.
#[tokio::test]
async fn deletion_policies_leave_exactly_what_they_promise() -> anyhow::Result<()> {
    let client = client().await?;
    let (ns, token) = tenant(&client, "e2e-del").await?;
    let (c, n) = (&client, ns.name.as_str());
    for name in ["keep", "gone", "stays"] {
        let policy = if name == "keep" { "Retain" } else { "Delete" };
        let spec = json!({"tenant": "main", "deletionPolicy": policy});
        apply_pdb(c, n, name, spec).await?;
        wait_pdb(
            c,
            n,
            name,
            "open",
            Duration::from_secs(60),
            open_in("ReadWrite"),
        )
        .await?;
    }
    for name in ["keep", "gone"] {
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
    let (_, gone) = history("gone").await?;
    assert!(
        keep.to_string().contains("files kept"),
        "Retain keeps the file: {keep}"
    );
    assert!(
        gone.to_string().contains("files deleted"),
        "Delete removes the file: {gone}"
    );
    let (_, listed) = call(c, n, "main", "GET", "/v1/databases", &token, None).await?;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["stays"], "only the database still declared is left");
    finish(c, ns, &["stays"]).await
}
