//! Continuous backup against a real S3-compatible store: versitygw (posix backend), built
//! from its Go module by `e2e/build-tools.sh` (which `./test.sh` runs first) and started
//! here on loopback. The engine is the real binary, so it can be killed with `kill -9`.
//! The ledger of what was acknowledged, and when, is kept by the test, outside the
//! process under test.

mod common;
#[path = "support/versitygw.rs"]
mod versitygw;
#[path = "support/workload.rs"]
mod workload;
use workload::statement;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN: &str = "backup-admin";
const KEY: &str = "tenantdb-test";
const SECRET: &str = "tenantdb-test-secret";

/// The object store: a versitygw process over a directory, stopped and started at will.
struct Store {
    child: Option<Child>,
    port: u16,
    root: tempfile::TempDir,
}

impl Store {
    async fn start() -> Store {
        let root = tempfile::tempdir().unwrap();
        let mut s = Store {
            child: None,
            port: common::free_port(),
            root,
        };
        s.up().await;
        s
    }

    async fn up(&mut self) {
        let (root, port) = (self.root.path().to_path_buf(), self.port);
        let child = tokio::task::spawn_blocking(move || versitygw::spawn(&root, port, KEY, SECRET))
            .await
            .unwrap();
        self.child = Some(child);
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.down();
    }
}

/// An engine binary with backup to `store`.
struct Engine {
    child: Option<Child>,
    base: String,
    data: PathBuf,
    config: PathBuf,
}

/// The engine's log, appended across restarts, beside its data directory.
fn log_file(data: &Path) -> Stdio {
    let path = data.with_extension("log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or(Stdio::null(), Stdio::from)
}

fn write_config(dir: &Path, endpoint: &str, snapshot_secs: u64) -> PathBuf {
    let config = dir.join("engine.yaml");
    let cfg = json!({
        "tenant": "acme",
        "backup": {
            "store": {"endpoint": endpoint, "bucket": "backups", "prefix": "tenantdb",
                      "accessKeyId": KEY, "secretAccessKey": SECRET},
            "maxDelayMillis": 1000,
            "snapshotIntervalSeconds": snapshot_secs,
        }
    });
    std::fs::write(&config, serde_json::to_string(&cfg).unwrap()).unwrap();
    config
}

impl Engine {
    async fn start(data: &Path, config: &Path) -> Engine {
        let mut e = Engine {
            child: None,
            base: String::new(),
            data: data.into(),
            config: config.into(),
        };
        e.up().await;
        e
    }

    async fn up(&mut self) {
        let port = common::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tenantdb-engine"))
            .args(["serve", "--data-dir", &self.data.display().to_string()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-token",
                ADMIN,
            ])
            .args(["--config", &self.config.display().to_string()])
            .env("RUST_LOG", "info")
            .stdout(log_file(&self.data))
            .stderr(log_file(&self.data))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("engine did not start");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"error": e.to_string()})),
        }
    }

    async fn sql(&self, db: &str, sql: &str) -> Result<Value, String> {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/databases/{db}/query"),
                Some(json!({"sql": sql})),
            )
            .await;
        if s == 200 {
            Ok(v)
        } else {
            Err(format!("{s}: {v}"))
        }
    }

    /// Schema and every row, hashed: what the ledger records after each commit.
    async fn checksum(&self, db: &str) -> Result<String, String> {
        let schema = self
            .sql(db, "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            .await?;
        let rows = self.sql(db, "SELECT * FROM t ORDER BY id").await?;
        let mut h = Sha256::new();
        h.update(schema["rows"].to_string());
        h.update(rows["rows"].to_string());
        h.update(rows["columns"].to_string());
        Ok(hex::encode(h.finalize()))
    }

    async fn status(&self, db: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/databases/{db}/backup"),
            None,
        )
        .await
        .1
    }

    /// Wait until everything `db` committed is in the store.
    async fn drained(&self, db: &str) -> Value {
        let start = Instant::now();
        loop {
            let st = self.status(db).await;
            if st["pendingCommits"] == 0
                && st["sealedTxid"].as_u64().is_some()
                && st["shippedTxid"] == st["sealedTxid"]
            {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "backlog never drained: {st}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The schema and the column list of `SELECT *`, for a mismatch's report.
async fn describe(engine: &Engine, db: &str) -> String {
    let schema = engine
        .sql(db, "SELECT sql FROM sqlite_schema ORDER BY name")
        .await
        .unwrap_or_default();
    let cols = engine
        .sql(db, "SELECT * FROM t LIMIT 1")
        .await
        .unwrap_or_default();
    format!(
        "schema {} columns {} first {}",
        schema["rows"], cols["columns"], cols["rows"]
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One acknowledged write: when it was sent, when it was acknowledged, the database
/// after it, and when the next write was sent (the end of the instant range that must
/// restore to exactly this state).
struct Entry {
    ack_ms: i64,
    checksum: String,
    /// The rows without their blobs, to say what differs when a restore does.
    rows: String,
    next_sent_ms: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn point_in_time_restores_match_the_ledger_across_kills_outages_and_checkpoints() {
    let secs: u64 = std::env::var("TENANTDB_BACKUP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store.endpoint(), 8);
    let mut engine = Engine::start(&dir.path().join("data"), &config).await;
    let (s, v) = engine
        .call(
            reqwest::Method::POST,
            "/v1/databases",
            Some(json!({"name": "ledger", "source": {"empty": {}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    engine
        .sql(
            "ledger",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, b BLOB)",
        )
        .await
        .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut ledger: Vec<Entry> = Vec::new();
    let (mut columns, mut failed, mut kills, mut outages, mut checkpoints, mut saw_lag) =
        (0, 0, 0, 0, 0, false);
    let started = Instant::now();
    let mut next_event = 0;
    let mut events: Vec<(String, i64)> = Vec::new();
    let mut statements: Vec<String> = Vec::new();
    // Kill -9 at 30% and 70%; the store down from 45% to 55%; checkpoints every 300 ms
    // from 15% to 30% and from 80% to 90%.
    let at = |f: f64| Duration::from_secs_f64(secs as f64 * f);
    while started.elapsed() < at(1.0) {
        let e = started.elapsed();
        if next_event == 0 && e > at(0.3) || next_event == 3 && e > at(0.7) {
            events.push((format!("kill -9 after write {}", ledger.len()), now_ms()));
            engine.kill9();
            engine.up().await;
            kills += 1;
            next_event += 1;
        } else if next_event == 1 && e > at(0.45) {
            events.push((format!("store down after write {}", ledger.len()), now_ms()));
            store.down();
            outages += 1;
            next_event += 1;
        } else if next_event == 2 && e > at(0.55) {
            let st = engine.status("ledger").await;
            saw_lag |= st["pendingCommits"].as_u64().unwrap_or(0) > 0
                && st["backlogBytes"].as_u64().unwrap_or(0) > 0
                && !st["lastError"].is_null();
            store.up().await;
            next_event += 1;
        }
        let storm = (e > at(0.15) && e < at(0.3)) || (e > at(0.8) && e < at(0.9));
        if storm && e.as_millis() % 300 < 40 {
            let (s, _) = engine
                .call(
                    reqwest::Method::POST,
                    "/v1/databases/ledger/backup/checkpoint",
                    None,
                )
                .await;
            checkpoints += u32::from(s == 202);
            events.push((format!("checkpoint after write {}", ledger.len()), now_ms()));
        }
        let sql = statement(&mut rng, &mut columns);
        statements.push(sql.clone());
        let sent = now_ms();
        if let Some(last) = ledger.last_mut() {
            last.next_sent_ms = last.next_sent_ms.min(sent);
        }
        match engine.sql("ledger", &sql).await {
            Ok(_) => {
                let ack_ms = now_ms();
                match engine.checksum("ledger").await {
                    Ok(checksum) => {
                        let rows = engine
                            .sql("ledger", "SELECT id, v, n FROM t ORDER BY id")
                            .await
                            .unwrap()["rows"]
                            .to_string();
                        let rows = format!("{rows} {}", describe(&engine, "ledger").await);
                        ledger.push(Entry {
                            ack_ms,
                            checksum,
                            rows,
                            next_sent_ms: i64::MAX,
                        })
                    }
                    Err(e) => panic!("reading the database after a write: {e}"),
                }
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let final_status = engine.drained("ledger").await;
    assert!(
        saw_lag,
        "while the store was down, status showed no backlog and no error"
    );
    let (_, windows) = engine
        .call(reqwest::Method::GET, "/v1/backups/acme/ledger", None)
        .await;
    let first = windows["window"]["firstMs"].as_i64().expect("a window");
    let candidates: Vec<&Entry> = ledger
        .iter()
        .filter(|e| e.ack_ms >= first && e.next_sent_ms != i64::MAX && e.next_sent_ms > e.ack_ms)
        .collect();
    assert!(
        candidates.len() > 100,
        "only {} writes to restore to",
        candidates.len()
    );

    let restores = 50;
    let mut restore_ms = Vec::new();
    for k in 0..restores {
        let e = candidates[rng.random_range(0..candidates.len())];
        let point = rng.random_range(e.ack_ms..e.next_sent_ms);
        let name = format!("r{k}");
        let t = Instant::now();
        let (s, v) = engine
            .call(
                reqwest::Method::POST,
                "/v1/databases",
                Some(json!({"name": name, "source": {"restore": {"database": "ledger", "pointInTime": rfc3339(point)}}})),
            )
            .await;
        assert_eq!(s, 201, "restore to {}: {v}", rfc3339(point));
        restore_ms.push(t.elapsed().as_millis());
        let got = engine.checksum(&name).await.unwrap();
        if got != e.checksum {
            let want = ledger.iter().position(|x| std::ptr::eq(x, e)).unwrap_or(0);
            let found = ledger.iter().position(|x| x.checksum == got);
            let rows = engine
                .sql(&name, "SELECT id, v, n FROM t ORDER BY id")
                .await
                .unwrap()["rows"]
                .to_string();
            let got_rows = format!("{rows} {}", describe(&engine, &name).await);
            let near: Vec<String> = ledger
                .iter()
                .zip(&statements)
                .enumerate()
                .skip(want.saturating_sub(3))
                .take(6)
                .map(|(j, (l, sql))| {
                    format!(
                        "{j} {sql}: {}",
                        if l.rows == got_rows {
                            "same rows"
                        } else {
                            &l.rows
                        }
                    )
                })
                .collect();
            let log =
                std::fs::read_to_string(engine.data.with_extension("log")).unwrap_or_default();
            let log: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!(
                "restore {k} to {} (write {want} acknowledged at {}) differs from the ledger: it holds write {found:?}\nrestored: {got_rows}\nnear: {near:#?}\nevents {events:?}\nrestore said {v}\nengine log:\n{}",
                rfc3339(point),
                rfc3339(e.ack_ms),
                log.join("\n")
            );
        }
        let check = engine.sql(&name, "PRAGMA integrity_check").await.unwrap();
        assert_eq!(check["rows"][0][0], "ok");
        let (s, _) = engine
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/databases/{name}"),
                None,
            )
            .await;
        assert_eq!(s, 204);
    }
    restore_ms.sort();
    eprintln!(
        "backup PITR: {} acknowledged writes ({failed} refused while the engine restarted) in {secs} s, {kills} kill -9, {outages} store outage, {checkpoints} forced checkpoints, {} generations; {restores} restores at random instants all equal the ledger and pass integrity_check (restore p50 {} ms); status {final_status}",
        ledger.len(),
        windows["generations"].as_array().map_or(0, |g| g.len()),
        restore_ms[restore_ms.len() / 2],
    );
    assert!(
        kills == 2 && outages == 1 && checkpoints > 5,
        "events: {kills} kills, {outages} outages, {checkpoints} checkpoints"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_engine_and_its_volume_are_gone_latest_loses_under_a_second_of_writes() {
    let store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store.endpoint(), 3600);
    let mut engine = Engine::start(&dir.path().join("data-a"), &config).await;
    let (s, v) = engine
        .call(
            reqwest::Method::POST,
            "/v1/databases",
            Some(json!({"name": "rpo", "source": {"empty": {}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    engine
        .sql("rpo", "CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Two writers, a few hundred commits a second between them, killed mid-stream.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let base = engine.base.clone();
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let (acked, base) = (acked.clone(), base.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0.. {
                let id = w * 1_000_000 + i;
                let r = client
                    .post(format!("{base}/v1/databases/rpo/query"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"sql": "INSERT INTO t (id, at) VALUES (?, ?)", "params": [id, now_ms()]}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push((id, now_ms())),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    engine.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let span = (acked.last().unwrap().1 - acked.first().unwrap().1) as f64 / 1000.0;
    let rate = acked.len() as f64 / span;
    std::fs::remove_dir_all(dir.path().join("data-a")).unwrap();

    // A new engine on an empty volume; the database comes back from the store.
    let engine = Engine::start(&dir.path().join("data-b"), &config).await;
    let (s, v) = engine
        .call(
            reqwest::Method::POST,
            "/v1/databases",
            Some(json!({"name": "rpo", "source": {"restore": {"database": "rpo"}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let rows = engine.sql("rpo", "SELECT id FROM t").await.unwrap();
    let present: std::collections::HashSet<i64> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_i64())
        .collect();
    let missing = acked.iter().filter(|(id, _)| !present.contains(id)).count();
    let bound = rate * 1.0;
    eprintln!(
        "backup RPO: {} commits acknowledged at {rate:.0}/s, engine killed and its volume deleted; latest restore holds {} rows, {missing} acknowledged commits missing (rate × 1 s delay = {bound:.0})",
        acked.len(),
        present.len()
    );
    assert!(present.len() > acked.len() / 2, "restore holds too little");
    assert!(
        (missing as f64) <= bound,
        "{missing} acknowledged commits lost, more than rate × delay = {bound:.0}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_restores_are_refused_and_leave_nothing() {
    let mut store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store.endpoint(), 3600);
    let engine = Engine::start(&dir.path().join("data"), &config).await;
    let (s, _) = engine
        .call(
            reqwest::Method::POST,
            "/v1/databases",
            Some(json!({"name": "src", "source": {"empty": {}}})),
        )
        .await;
    assert_eq!(s, 201);
    engine
        .sql("src", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    engine.drained("src").await;
    let restore = |name: &str, source: Value| json!({"name": name, "source": {"restore": source}});
    let cases = [
        (
            restore("a", json!({"database": "never"})),
            404,
            "holds no backup of acme/never",
        ),
        (
            restore(
                "b",
                json!({"database": "src", "pointInTime": "2001-01-01T00:00:00Z"}),
            ),
            400,
            "outside the recoverable window",
        ),
        (
            restore("c", json!({"database": "src", "pointInTime": "yesterday"})),
            400,
            "not RFC 3339",
        ),
        (
            restore("d", json!({"database": "src", "tenant": "../x"})),
            400,
            "tenant",
        ),
    ];
    for (body, status, needle) in cases {
        let name = body["name"].as_str().unwrap().to_string();
        let (s, v) = engine
            .call(reqwest::Method::POST, "/v1/databases", Some(body))
            .await;
        assert_eq!(s, status, "{v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(needle),
            "{v}"
        );
        let (s, _) = engine
            .call(reqwest::Method::GET, &format!("/v1/databases/{name}"), None)
            .await;
        assert_eq!(s, 404, "a refused restore left {name} behind");
    }
    store.down();
    let (s, v) = engine
        .call(
            reqwest::Method::POST,
            "/v1/databases",
            Some(restore("e", json!({"database": "src"}))),
        )
        .await;
    assert_eq!(s, 502, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("backup store"),
        "{v}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("data/tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");
}
