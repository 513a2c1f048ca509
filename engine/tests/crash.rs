//! Durability: acknowledged writes and creates survive `kill -9` of the engine.
//! Runs the real binary, 10 times: 1,000 concurrent inserts, killed mid-way.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde_json::json;

const ADMIN: &str = "crash-admin";

struct Engine {
    child: Child,
    base: String,
}

async fn start(dir: &std::path::Path) -> Engine {
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantdb-engine"))
        .args([
            "serve",
            "--data-dir",
            &dir.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            ADMIN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return Engine { child, base };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("engine did not start");
}

async fn sql(
    client: &reqwest::Client,
    base: &str,
    pdb: &str,
    sql: &str,
    params: serde_json::Value,
) -> reqwest::Result<serde_json::Value> {
    client
        .post(format!("{base}/v1/databases/{pdb}/query"))
        .bearer_auth(ADMIN)
        .json(&json!({"sql": sql, "params": params}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_inserts_survive_kill_9() {
    let client = reqwest::Client::new();
    let mut report = Vec::new();
    for run in 1..=10 {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = start(dir.path()).await;
        let base = engine.base.clone();
        let r = client
            .post(format!("{base}/v1/databases"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "c", "source": {"empty": {}}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        sql(
            &client,
            &base,
            "c",
            "CREATE TABLE t (id INTEGER PRIMARY KEY)",
            json!(null),
        )
        .await
        .unwrap();
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kill_after = 200 + run * 50;
        let inserts = stream::iter(0..1000u32).for_each_concurrent(32, |i| {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            async move {
                if sql(
                    &client,
                    &base,
                    "c",
                    "INSERT INTO t (id) VALUES (?)",
                    json!([i]),
                )
                .await
                .is_ok()
                {
                    acked.lock().unwrap().push(i);
                }
            }
        });
        let killer = async {
            while acked.lock().unwrap().len() < kill_after {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            engine.child.kill().unwrap(); // SIGKILL
            engine.child.wait().unwrap();
        };
        tokio::join!(inserts, killer);
        let acked = acked.lock().unwrap().clone();
        // A database created right before a crash survives too.
        let mut engine = start(dir.path()).await;
        let rows = sql(&client, &engine.base, "c", "SELECT id FROM t", json!(null))
            .await
            .unwrap();
        let present: std::collections::HashSet<u64> = rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_u64().unwrap())
            .collect();
        let missing: Vec<_> = acked
            .iter()
            .filter(|i| !present.contains(&(**i as u64)))
            .collect();
        report.push(format!("run {run}: {} acknowledged before kill -9, {} rows after restart, {} acknowledged missing", acked.len(), present.len(), missing.len()));
        engine.child.kill().unwrap();
        engine.child.wait().unwrap();
        assert!(
            missing.is_empty(),
            "run {run}: acknowledged rows lost: {missing:?}"
        );
        assert!(
            acked.len() < 1000,
            "run {run}: the kill came after every insert; the test proved nothing"
        );
    }
    for line in report {
        println!("{line}");
    }
}

#[tokio::test]
async fn a_created_database_survives_kill_9_right_after_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut engine = start(dir.path()).await;
    let r = client
        .post(format!("{}/v1/databases", engine.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "fresh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    engine.child.kill().unwrap();
    engine.child.wait().unwrap();
    let mut engine = start(dir.path()).await;
    let r = client
        .get(format!("{}/v1/databases/fresh", engine.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    engine.child.kill().unwrap();
    engine.child.wait().unwrap();
}

async fn usage(client: &reqwest::Client, base: &str) -> serde_json::Value {
    client
        .get(format!("{base}/v1/usage"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metering_matches_the_workload_and_survives_kill_9_within_the_flush_window() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path()).await;
    let base = engine.base.clone();
    client
        .post(format!("{base}/v1/databases"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "m", "source": {"empty": {}}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    sql(
        &client,
        &base,
        "m",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        json!(null),
    )
    .await
    .unwrap();
    // 10,000 inserts, 16 at a time.
    let done = stream::iter(0..10_000)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                sql(
                    &client,
                    &base,
                    "m",
                    "INSERT INTO t (v) VALUES (?)",
                    json!([format!("row {i}")]),
                )
                .await
                .is_ok()
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(done, 10_000);
    sql(&client, &base, "m", "SELECT * FROM t LIMIT 7", json!(null))
        .await
        .unwrap();
    let u = usage(&client, &base).await;
    let db = &u["databases"][0];
    assert_eq!(db["name"], "m");
    assert_eq!(db["rowsWritten"], 10_000, "{u}");
    assert_eq!(db["rowsRead"], 7, "{u}");
    assert_eq!(db["requests"], 10_002, "{u}");
    assert_eq!(db["statements"], 10_002, "{u}");
    assert_eq!(db["transactions"], 10_000, "{u}");
    assert!(db["pagesWritten"].as_u64().unwrap() > 0, "{u}");
    assert!(db["cpuMicros"].as_u64().unwrap() > 0, "{u}");
    assert!(db["bytesIn"].as_u64().unwrap() > 10_000 * 30, "{u}");
    // Wait for a flush, then kill -9: at most the last window's counts are lost.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    for i in 0..100 {
        sql(
            &client,
            &base,
            "m",
            "INSERT INTO t (v) VALUES (?)",
            json!([format!("late {i}")]),
        )
        .await
        .unwrap();
    }
    engine.child.kill().unwrap();
    engine.child.wait().unwrap();
    let engine2 = start(dir.path()).await;
    let u = usage(&client, &engine2.base).await;
    let written = u["databases"][0]["rowsWritten"].as_u64().unwrap();
    println!("metered rows written after kill -9: {written} of 10,100 (flush every 5 s)");
    assert!(
        (10_000..=10_100).contains(&written),
        "lost at most the last window: {written}"
    );
    let sla: serde_json::Value = client
        .get(format!("{}/v1/sla", engine2.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(sla["uptimePercent"].as_f64().unwrap() > 50.0, "{sla}");
    assert!(
        sla["total"]["p99LatencyMs"].as_f64().unwrap() > 0.0,
        "{sla}"
    );
    let bill: serde_json::Value = client
        .get(format!("{}/v1/billing?period=2026-13", engine2.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bill["code"], "bad_request", "{bill}");
    let mut child = engine2.child;
    let _ = child.kill();
    let _ = child.wait();
}
