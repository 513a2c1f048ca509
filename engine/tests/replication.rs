//! Hot standbys with real engine processes on loopback: a standby follows its primary,
//! a writer's acknowledged rows are all on the standby when the primary is killed with
//! `kill -9` and the standby promoted, the old primary comes back as a standby of the new
//! one, an older epoch is refused, and a primary acknowledges nothing it may not: with no
//! standby in `required` mode, or past its Lease.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

const ADMIN: &str = "replication-admin";

struct Engine {
    child: Child,
    base: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, durability: &str, ack_ms: u64) -> std::path::PathBuf {
    let path = dir.join("engine.yaml");
    std::fs::write(
        &path,
        format!(
            "tenant: t\nreplication:\n  durability: {durability}\n  ackTimeoutMillis: {ack_ms}\n"
        ),
    )
    .unwrap();
    path
}

async fn start(dir: &Path, config: &Path) -> Engine {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tenantdb-engine"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            ADMIN,
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let engine = Engine {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client
            .get(format!("{}/healthz", engine.base))
            .send()
            .await
            .is_ok()
        {
            return engine;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("engine did not start");
}

async fn role(c: &reqwest::Client, e: &Engine, body: Value) -> (u16, Value) {
    let r = c
        .put(format!("{}/v1/admin/role", e.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn primary(c: &reqwest::Client, e: &Engine, epoch: u64, valid_ms: u64) {
    let (code, body) = role(
        c,
        e,
        json!({"role": "primary", "epoch": epoch, "validForMillis": valid_ms}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn standby(c: &reqwest::Client, e: &Engine, epoch: u64, of: &Engine) {
    let (code, body) = role(
        c,
        e,
        json!({"role": "standby", "epoch": epoch, "primaryUrl": of.base}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn status(c: &reqwest::Client, e: &Engine) -> Value {
    c.get(format!("{}/v1/admin/replication", e.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn sql(c: &reqwest::Client, e: &Engine, sql: &str, params: Value) -> (u16, Value) {
    let sent = c
        .post(format!("{}/v1/databases/db/query", e.base))
        .bearer_auth(ADMIN)
        .json(&json!({"sql": sql, "params": params}))
        .send()
        .await;
    match sent {
        // A connection cut by a killed engine: no answer, so nothing acknowledged.
        Err(_) => (0, Value::Null),
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
    }
}

async fn create_db(c: &reqwest::Client, e: &Engine) {
    let r = c
        .post(format!("{}/v1/databases", e.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "db", "source": {"empty": {}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let (code, body) = sql(
        c,
        e,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// Wait until `standby` has applied `file` as far as `primary` has captured it.
async fn caught_up(c: &reqwest::Client, primary: &Engine, standby: &Engine, file: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (p, s) = (status(c, primary).await, status(c, standby).await);
        if p["files"][file].is_object() && p["files"][file] == s["files"][file] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "standby not caught up: {p} vs {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ids(c: &reqwest::Client, e: &Engine) -> HashSet<u64> {
    let (code, rows) = sql(c, e, "SELECT id FROM t", Value::Null).await;
    assert_eq!(code, 200, "{rows}");
    rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_takes_over_with_every_acknowledged_row_and_the_old_primary_follows_it() {
    let c = reqwest::Client::new();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (
        config(da.path(), "required", 5000),
        config(db.path(), "required", 5000),
    );
    let mut a = start(da.path(), &ca).await;
    let b = start(db.path(), &cb).await;
    // Before its role, a member serves no data.
    assert_eq!(sql(&c, &a, "SELECT 1", Value::Null).await.0, 503);
    primary(&c, &a, 1, 60_000).await;
    standby(&c, &b, 1, &a).await;
    create_db(&c, &a).await;
    caught_up(&c, &a, &b, "pdbs/db.db").await;
    // The standby serves no writes.
    assert_eq!(
        sql(&c, &b, "INSERT INTO t (id) VALUES (0)", Value::Null)
            .await
            .0,
        503
    );

    // A writer with its own ledger; the primary is killed mid-way.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writes = stream::iter(1..=600u64).for_each_concurrent(8, |i| {
        let (c, acked, a_base) = (c.clone(), acked.clone(), a.base.clone());
        async move {
            let e = Engine {
                child: Command::new("true").spawn().unwrap(),
                base: a_base,
            };
            if sql(&c, &e, "INSERT INTO t (id, v) VALUES (?, 'x')", json!([i]))
                .await
                .0
                == 200
            {
                acked.lock().unwrap().push(i);
            }
        }
    });
    let killer = async {
        while acked.lock().unwrap().len() < 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        a.child.kill().unwrap();
        a.child.wait().unwrap();
    };
    tokio::join!(writes, killer);
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);

    primary(&c, &b, 2, 60_000).await;
    let present = ids(&c, &b).await;
    let lost: Vec<&u64> = acked.iter().filter(|i| !present.contains(i)).collect();
    println!(
        "kill -9 of the primary: {} acknowledged, {} rows on the promoted standby, {} acknowledged lost",
        acked.len(),
        present.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    // The new primary takes writes.
    assert_eq!(
        sql(&c, &b, "INSERT INTO t (id) VALUES (100000)", Value::Null)
            .await
            .0,
        503,
        "required: no standby yet, so the commit is not acknowledged"
    );

    // The old primary returns as a standby of the new one and catches up.
    a = start(da.path(), &ca).await;
    let (code, _) = role(
        &c,
        &a,
        json!({"role": "standby", "epoch": 1, "primaryUrl": b.base}),
    )
    .await;
    assert_eq!(
        code, 200,
        "epoch 1 is the newest this restarted member has seen"
    );
    standby(&c, &a, 2, &b).await;
    let (code, body) = sql(&c, &b, "INSERT INTO t (id) VALUES (100001)", Value::Null).await;
    assert_eq!(code, 200, "{body}");
    caught_up(&c, &b, &a, "pdbs/db.db").await;
    caught_up(&c, &b, &a, "catalog.db").await;
    // An older epoch is refused now.
    let (code, body) = role(
        &c,
        &a,
        json!({"role": "primary", "epoch": 1, "validForMillis": 1000}),
    )
    .await;
    assert_eq!(code, 409, "{body}");

    // Switch back: the old primary, promoted, has exactly the new primary's rows.
    drop(b);
    primary(&c, &a, 3, 60_000).await;
    let back = ids(&c, &a).await;
    assert!(back.contains(&100001) && back.contains(&100000));
    assert!(acked.iter().all(|i| back.contains(i)));
    assert_eq!(back.len(), present.len() + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_acknowledges_nothing_without_a_standby_in_required_mode_or_past_its_lease() {
    let c = reqwest::Client::new();
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "required", 300);
    let a = start(d.path(), &cfg).await;
    primary(&c, &a, 1, 60_000).await;
    let r = c
        .post(format!("{}/v1/databases", a.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "db", "source": {"empty": {}}}))
        .send()
        .await
        .unwrap();
    // The catalog is streamed without waiting (the operator drives lifecycle changes
    // again until they are in place); a database's commits wait.
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let (code, body) = sql(
        &c,
        &a,
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        Value::Null,
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["code"], "not_acknowledged", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not known to be replicated"),
        "{body}"
    );

    // Past the Lease: fenced at once, without waiting for a standby.
    primary(&c, &a, 1, 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (code, body) = sql(&c, &a, "INSERT INTO t (id) VALUES (1)", Value::Null).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not the primary"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_millis(250));
    let st = status(&c, &a).await;
    assert_eq!(st["writable"], false, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_mode_acknowledges_without_a_standby_and_counts_it() {
    let c = reqwest::Client::new();
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "preferred", 300);
    let a = start(d.path(), &cfg).await;
    primary(&c, &a, 1, 60_000).await;
    create_db(&c, &a).await;
    let (code, body) = sql(&c, &a, "INSERT INTO t (id) VALUES (1)", Value::Null).await;
    assert_eq!(code, 200, "{body}");
    let st = status(&c, &a).await;
    assert!(st["unreplicatedCommits"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(st["standbys"], 0);
}
