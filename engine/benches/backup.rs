//! `cargo bench -p tenantdb-engine --bench backup`: continuous backup's figures in one
//! run, against a real S3-compatible store (versitygw, built by `e2e/build-tools.sh`,
//! started here on loopback over a directory):
//!
//! * the write path with backup on beside backup off (point selects and single-row
//!   inserts through the engine, in process);
//! * restoring a large database (1 GiB; `TENANTDB_BENCH_QUICK=1`: 128 MiB) from a
//!   snapshot plus segments: download and replay MB/s reported apart, beside the store's
//!   own raw GET speed for the same bytes.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenantdb_engine::backup::{restore, BackupConfig};
use tenantdb_engine::engine::{CreateRequest, Engine, EngineOptions};
use tenantdb_engine::pdb::Caller;
use tenantdb_engine::query::QueryRequest;

const KEY: &str = "bench";
const SECRET: &str = "bench-secret";

fn quick() -> bool {
    std::env::var("TENANTDB_BENCH_QUICK").is_ok_and(|v| v == "1")
}

#[path = "../tests/support/versitygw.rs"]
mod versitygw;

/// versitygw, killed when dropped.
struct Gw(Child);
impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_store(root: &Path) -> (Gw, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    (
        Gw(versitygw::spawn(root, port, KEY, SECRET)),
        format!("http://127.0.0.1:{port}"),
    )
}

fn q(sql: &str, params: serde_json::Value) -> QueryRequest {
    QueryRequest {
        sql: Some(sql.to_string()),
        params: Some(params),
        batch: None,
    }
}

fn create(engine: &Engine, name: &str) {
    let req: CreateRequest =
        serde_json::from_value(json!({"name": name, "source": {"empty": {}}})).expect("request");
    engine.create(req).expect("create");
}

/// Single-row inserts and point selects a second, best of three rounds each.
fn write_path(engine: &Engine, db: &str, n: usize) -> (f64, f64) {
    create(engine, db);
    engine
        .query(
            db,
            q(
                "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)",
                json!(null),
            ),
            Caller::Admin,
        )
        .expect("schema");
    let (mut ins, mut sel) = (0f64, 0f64);
    let mut id = 0i64;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            id += 1;
            engine
                .query(
                    db,
                    q(
                        "INSERT INTO kv VALUES (?, 'value of about thirty bytes...')",
                        json!([id]),
                    ),
                    Caller::Admin,
                )
                .expect("insert");
        }
        ins = ins.max(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..n * 10 {
            engine
                .query(
                    db,
                    q(
                        "SELECT v FROM kv WHERE id = ?",
                        json!([(i as i64 * 7919) % id + 1]),
                    ),
                    Caller::Admin,
                )
                .expect("select");
        }
        sel = sel.max((n * 10) as f64 / t.elapsed().as_secs_f64());
    }
    (ins, sel)
}

/// Set for a child process of this bench: `off`, or the store's endpoint.
const CHILD: &str = "TENANTDB_BENCH_WRITE_PATH_CHILD";

/// Insert/s and select/s of [`write_path`] in a fresh process of this bench, with backup
/// on (to the store at `endpoint`) or off.
fn write_path_in_child(backup: bool, endpoint: &str) -> (f64, f64) {
    let exe = std::env::current_exe().expect("bench binary");
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .env(CHILD, if backup { endpoint } else { "off" })
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("child");
    assert!(out.status.success(), "write-path child failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok());
    (it.next().expect("insert/s"), it.next().expect("select/s"))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `min–max` of `values`, rounded.
fn spread(values: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = values.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0f64, f64::max);
    format!("{lo:.0}–{hi:.0}")
}

fn backup_options(endpoint: &str) -> EngineOptions {
    backup_options_with(endpoint, json!({}))
}

/// Backup settings with `extra` fields over the bench's defaults.
fn backup_options_with(endpoint: &str, extra: serde_json::Value) -> EngineOptions {
    let mut cfg = json!({
        "store": {"endpoint": endpoint, "bucket": "backups", "prefix": "bench", "accessKeyId": KEY, "secretAccessKey": SECRET},
        "snapshotIntervalSeconds": 86400,
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let cfg: BackupConfig = serde_json::from_value(cfg).expect("config");
    EngineOptions {
        backup: Some((cfg, "bench".into())),
        ..Default::default()
    }
}

fn drained(engine: &Engine, db: &str) {
    let b = engine.backup.as_ref().expect("backup");
    let start = Instant::now();
    loop {
        if let Some(st) = b.status(db) {
            if st.pending_commits == 0 && st.shipped_txid == st.sealed_txid && st.sealed_txid > 0 {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "backlog never drained"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fill `db` with `bytes` of 64 KiB blobs, committing `per_txn` rows at a time.
fn fill(engine: &Engine, db: &str, bytes: u64) {
    let rows = bytes / 65_536;
    let per_txn = 64;
    let mut done = 0;
    while done < rows {
        engine
            .query(db, q(&format!("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < {per_txn}) INSERT INTO big (b) SELECT randomblob(65536) FROM n"), json!(null)), Caller::Admin)
            .expect("fill");
        done += per_txn;
    }
}

/// Where the insert cost of backup goes: the same inserts with the shipper's parts
/// turned down one at a time (`TENANTDB_BENCH_BACKUP_PROBE=1`).
fn probe(work: &Path, endpoint: &str, n: usize, ins_off: f64) {
    let variants = [
        ("backup on, defaults", json!({})),
        (
            "checkpoints rare (256 MiB)",
            json!({"checkpointBytes": 256u64 << 20}),
        ),
        (
            "shipper idle (delay 10 min, no checkpoint)",
            json!({"checkpointBytes": 1u64 << 40, "maxDelayMillis": 600_000}),
        ),
    ];
    println!("{:<50} {ins_off:>8.0} insert/s", "backup off");
    for (i, (name, extra)) in variants.into_iter().enumerate() {
        let engine = Engine::open(
            &work.join(format!("probe{i}")),
            backup_options_with(endpoint, extra),
        )
        .expect("engine");
        let (ins, _) = write_path(&engine, "w", n);
        let wal: u64 = walk_wal(&work.join(format!("probe{i}")));
        if let Some(st) = engine.backup.as_ref().and_then(|b| b.status("w")) {
            println!(
                "{name}: {} KiB shipped for {} transactions",
                st.shipped_bytes >> 10,
                st.shipped_txid
            );
        }
        println!(
            "{name:<50} {ins:>8.0} insert/s ({:+.1}%), WAL files {} KiB",
            (ins / ins_off - 1.0) * 100.0,
            wal >> 10
        );
    }
}

/// Bytes of every `-wal` file under `dir`: how far the WAL grew (a WAL that restarts
/// stays small; one that is never checkpointed holds every write).
fn walk_wal(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += walk_wal(&p);
        } else if p.to_string_lossy().ends_with("-wal") {
            total += e.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1_048_576.0 / secs.max(1e-9)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let work = tempfile::tempdir().expect("tmp");
    if let Ok(mode) = std::env::var(CHILD) {
        // A child: the write path of one engine, printed for the parent.
        let n = if quick() { 2_000 } else { 10_000 };
        let options = match mode.as_str() {
            "off" => EngineOptions::default(),
            endpoint => backup_options(endpoint),
        };
        let engine = Engine::open(work.path(), options).expect("engine");
        let (ins, sel) = write_path(&engine, "w", n);
        println!("{ins} {sel}");
        return;
    }
    // The store's files on tmpfs where there is one: a real store is other machines'
    // disks, and one on this disk would compete with the engine's own fsyncs.
    let shm = Path::new("/dev/shm");
    let store_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("shm")
    } else {
        tempfile::tempdir().expect("tmp")
    };
    let (_gw, endpoint) = start_store(store_dir.path());
    let n = if quick() { 2_000 } else { 10_000 };
    let mut lines: Vec<(String, String)> = Vec::new();

    if std::env::var("TENANTDB_BENCH_BACKUP_PROBE").is_ok_and(|v| v == "1") {
        let off = Engine::open(&work.path().join("off"), EngineOptions::default()).expect("engine");
        let (ins_off, _) = write_path(&off, "w", n);
        drop(off);
        probe(work.path(), &endpoint, n, ins_off);
        return;
    }
    // The write path in child processes, off and on in turn, three of each: a process
    // with backup on leaves every checkpoint to the shipper (a process-wide setting), and
    // on this 2-core machine one pair alone moved by ±8% from run to run.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        off.push(write_path_in_child(false, &endpoint));
        on.push(write_path_in_child(true, &endpoint));
    }
    let (ins_off, ins_on) = (
        median(off.iter().map(|r| r.0)),
        median(on.iter().map(|r| r.0)),
    );
    let (sel_off, sel_on) = (
        median(off.iter().map(|r| r.1)),
        median(on.iter().map(|r| r.1)),
    );
    lines.push((
        "single-row insert/s, backup off / on (median of 3 processes each)".into(),
        format!(
            "{ins_off:.0} / {ins_on:.0}  → {:+.1}% (target within 10%; runs {} / {})",
            (ins_on / ins_off - 1.0) * 100.0,
            spread(off.iter().map(|r| r.0)),
            spread(on.iter().map(|r| r.0)),
        ),
    ));
    lines.push((
        "point select/s, backup off / on (median of 3 processes each)".into(),
        format!(
            "{sel_off:.0} / {sel_on:.0}  → {:+.1}% (runs {} / {})",
            (sel_on / sel_off - 1.0) * 100.0,
            spread(off.iter().map(|r| r.1)),
            spread(on.iter().map(|r| r.1)),
        ),
    ));
    let on =
        Arc::new(Engine::open(&work.path().join("on"), backup_options(&endpoint)).expect("engine"));

    // A large database: half before a new snapshot, half after (snapshot plus WAL).
    let total: u64 = if quick() { 128 << 20 } else { 1 << 30 };
    create(&on, "big");
    on.query(
        "big",
        q(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)",
            json!(null),
        ),
        Caller::Admin,
    )
    .expect("schema");
    let t = Instant::now();
    fill(&on, "big", total / 2);
    drained(&on, "big");
    let backup = on.backup.clone().expect("backup");
    assert!(backup.snapshot_now("big"));
    std::thread::sleep(Duration::from_secs(2));
    fill(&on, "big", total / 2);
    drained(&on, "big");
    let shipped = backup.status("big").expect("status");
    lines.push((
        format!("{} MiB written and shipped (2 generations)", total >> 20),
        format!(
            "{:.1} s, {} MiB shipped",
            t.elapsed().as_secs_f64(),
            shipped.shipped_bytes >> 20
        ),
    ));

    // The store's own speed for the same objects: GET every object of the database.
    let store = backup.store().clone();
    let (raw_bytes, raw_secs) = rt.block_on(async {
        let keys = store.list("bench/big").await.expect("list");
        let t = Instant::now();
        let mut bytes = 0u64;
        for k in &keys {
            bytes += store.get(k).await.expect("get").len() as u64;
        }
        (bytes, t.elapsed().as_secs_f64())
    });
    let out = work.path().join("restored.db");
    let report = rt
        .block_on(restore::restore(&store, "bench", "big", None, &out))
        .expect("restore");
    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
    lines.push((
        "object store raw GET (every object of the database)".into(),
        format!(
            "{:.0} MB/s ({} MiB in {raw_secs:.2} s)",
            mb_s(raw_bytes, raw_secs),
            raw_bytes >> 20
        ),
    ));
    lines.push((
        "restore latest: download (snapshot + segments of one generation)".into(),
        format!(
            "{:.0} MB/s ({} MiB in {:.2} s)",
            mb_s(report.downloaded_bytes, report.download_seconds),
            report.downloaded_bytes >> 20,
            report.download_seconds
        ),
    ));
    lines.push((
        "restore latest: replay (snapshot written, frames applied, integrity_check)".into(),
        format!(
            "{:.0} MB/s ({} MiB downloaded written out as a {} MiB database in {:.2} s, {} MiB of it replayed pages)",
            mb_s(report.downloaded_bytes, report.replay_seconds),
            report.downloaded_bytes >> 20,
            size >> 20,
            report.replay_seconds,
            report.replayed_bytes >> 20
        ),
    ));
    println!(
        "TenantDB backup benchmark ({}; 2 cores)",
        if quick() { "quick" } else { "full" }
    );
    println!("{}", "-".repeat(100));
    for (k, v) in &lines {
        println!("{k:<70} {v}");
    }
    rt.block_on(backup.shutdown(Duration::from_secs(5)));
}
