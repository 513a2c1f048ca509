//! `cargo bench -p tenantdb-engine`: the engine's figures in one run, beside PostgreSQL
//! (Debian's, started here on loopback) doing the same work. Prints a table.
//!
//! Set `TENANTDB_BENCH_QUICK=1` for a shorter run (smaller counts, 1 s HTTP phases), and
//! `TENANTDB_BENCH_ONLY=in-process` to stop after the in-process figures (for profiling),
//! `TENANTDB_BENCH_ONLY=isolation` for the IO-cap and noisy-neighbour figures alone, or
//! `TENANTDB_BENCH_ONLY=http` for the JSON API, Hrana and TPC-B-like figures beside pgbench.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;
use tenantdb_engine::cgroup::CgroupReader;
use tenantdb_engine::engine::{CreateRequest, Engine, EngineOptions};
use tenantdb_engine::http::{router, EngineState};
use tenantdb_engine::pdb::Caller;
use tenantdb_engine::query::QueryRequest;

const ROWS: i64 = 100_000;

#[path = "support/load.rs"]
mod load;
use load::Protocol;

fn quick() -> bool {
    std::env::var("TENANTDB_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// Print the figures as a two-column table.
fn print_table(quick: bool, lines: &[(String, String)]) {
    println!(
        "\nTenantDB engine benchmark ({} run, {} cores)",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("{}", "-".repeat(100));
    for (k, v) in lines {
        println!("{k:<62} {v}");
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A number from a `key: value …` line of a /proc file (`VmRSS:` in status, `syscw:` in io).
fn proc_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    proc_field("/proc/self/status", "VmRSS:")
}

fn create(engine: &Engine, name: &str, source: serde_json::Value) -> Duration {
    let req: CreateRequest =
        serde_json::from_value(json!({"name": name, "source": source})).expect("request");
    let t = Instant::now();
    engine.create(req).expect("create");
    t.elapsed()
}

fn q(sql: &str, params: serde_json::Value) -> QueryRequest {
    QueryRequest {
        sql: Some(sql.to_string()),
        params: Some(params),
        batch: None,
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % ROWS as u64) as i64 + 1
    }
}

/// A database `name` holding table `acct` with `rows` rows of about 100 bytes.
fn fill(engine: &Engine, name: &str, rows: i64) {
    create(engine, name, json!({"empty": {}}));
    engine
        .query(
            name,
            q(
                "CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, filler TEXT)",
                json!(null),
            ),
            Caller::Admin,
        )
        .expect("schema");
    engine
        .query(name, q(&format!("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < {rows}) INSERT INTO acct SELECT x, 0, printf('%.80c', 'x') FROM n"), json!(null)), Caller::Admin)
        .expect("rows");
}

/// Point selects per second through the engine with metering on and off, in
/// alternating rounds (best of three each).
#[inline(never)] // its own frame in profiles
fn metering_cost(engine: &Engine, n: usize) -> (f64, f64) {
    let sql = "SELECT balance FROM acct WHERE id = ?".to_string();
    let mut rng = Rng(2463534242);
    let mut best = [0f64; 2];
    for _round in 0..3 {
        for (i, on) in [true, false].into_iter().enumerate() {
            engine.set_metering(on);
            let t = Instant::now();
            for _ in 0..n {
                let req = QueryRequest {
                    sql: Some(sql.clone()),
                    params: Some(serde_json::Value::Array(vec![rng.next().into()])),
                    batch: None,
                };
                engine.query("bench", req, Caller::Tenant).expect("select");
            }
            best[i] = best[i].max(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    engine.set_metering(true);
    (best[0], best[1])
}

/// `n` point selects and `n / 20` single-row inserts on `conn`, set up as the engine sets
/// up its own (durable commits), then closed: (selects/s, inserts/s).
fn raw_ops(conn: Connection, n: usize, rng: &mut Rng) -> (f64, f64) {
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
        .expect("pragma");
    let t = Instant::now();
    for _ in 0..n {
        let mut st = conn
            .prepare_cached("SELECT balance FROM acct WHERE id = ?")
            .expect("prepare");
        let _: i64 = st.query_row([rng.next()], |r| r.get(0)).expect("row");
    }
    let selects = n as f64 / t.elapsed().as_secs_f64();
    let m = n / 20;
    let t = Instant::now();
    for i in 0..m {
        conn.prepare_cached("INSERT INTO acct (balance, filler) VALUES (?, 'r')")
            .expect("prepare")
            .execute([i as i64])
            .expect("insert");
    }
    (selects, m as f64 / t.elapsed().as_secs_f64())
}

/// Selects and inserts per second through the engine's in-process path, and through raw
/// rusqlite on the same file twice: opened as rusqlite opens a file by default, and opened
/// with the engine's VFS (`files::VFS`), which tells the engine's own code from SQLite's
/// configuration. The default-VFS rounds run with the engine's database closed, since one
/// process must not mix two locking schemes on a file. Alternating rounds, best of three.
#[inline(never)] // its own frame in profiles
fn in_process(engine: &Engine, path: &Path, n: usize) -> [(String, f64); 6] {
    let sql = "SELECT balance FROM acct WHERE id = ?".to_string();
    let mut rng = Rng(88172645463325252);
    let m = n / 20;
    let mut best = [0f64; 6];
    for _round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            let req = QueryRequest {
                sql: Some(sql.clone()),
                params: Some(serde_json::Value::Array(vec![rng.next().into()])),
                batch: None,
            };
            engine.query("bench", req, Caller::Tenant).expect("select");
        }
        best[0] = best[0].max(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..m {
            engine
                .query(
                    "bench",
                    q(
                        "INSERT INTO acct (balance, filler) VALUES (?, 'e')",
                        json!([i]),
                    ),
                    Caller::Tenant,
                )
                .expect("insert");
        }
        best[1] = best[1].max(m as f64 / t.elapsed().as_secs_f64());
        let same_vfs = tenantdb_engine::files::open_db_rw(path).expect("open");
        let (sel, ins) = raw_ops(same_vfs, n, &mut rng);
        best[4] = best[4].max(sel);
        best[5] = best[5].max(ins);
        engine
            .close_pdb("bench", tenantdb_engine::engine::CloseMode::Normal)
            .expect("close");
        let (sel, ins) = raw_ops(Connection::open(path).expect("open"), n, &mut rng);
        best[2] = best[2].max(sel);
        best[3] = best[3].max(ins);
        engine
            .open_pdb("bench", tenantdb_engine::catalog::OpenMode::ReadWrite)
            .expect("open");
    }
    [
        ("engine select/s".into(), best[0]),
        ("engine insert/s".into(), best[1]),
        ("raw rusqlite (default open) select/s".into(), best[2]),
        ("raw rusqlite (default open) insert/s".into(), best[3]),
        ("raw rusqlite (engine's VFS) select/s".into(), best[4]),
        ("raw rusqlite (engine's VFS) insert/s".into(), best[5]),
    ]
}

/// Where the in-process overhead goes: µs per point select through each layer of the
/// engine's path, from raw rusqlite up (best of three rounds each).
#[inline(never)] // its own frame in profiles
fn overhead_ladder(engine: &Engine, path: &Path, n: usize) -> Vec<(String, f64)> {
    use tenantdb_engine::query::{self as query, ResultLimits, StmtRef};
    let raw = tenantdb_engine::files::open_db_rw(path).expect("open");
    let sql = "SELECT balance FROM acct WHERE id = ?".to_string();
    let limits = ResultLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };
    let pdb = engine.get("bench").expect("pdb");
    let rules = pdb.rules();
    let mut rng = Rng(2685821657736338717);
    let rungs = [
        "raw rusqlite query_row (engine's VFS)",
        "+ typed JSON rows (query::run)",
        "+ pooled session (open mode, lockdown, budget)",
        "+ registry, lockdown text, quota (metering off)",
        "+ metering = engine.query",
    ];
    let mut best = [f64::MAX; 5];
    for _round in 0..3 {
        for (i, us) in best.iter_mut().enumerate() {
            engine.set_metering(i == 4);
            let t = Instant::now();
            for _ in 0..n {
                let params = serde_json::Value::Array(vec![rng.next().into()]);
                let stmt = StmtRef {
                    sql: &sql,
                    params: Some(&params),
                };
                match i {
                    0 => {
                        let mut st = raw.prepare_cached(&sql).expect("prepare");
                        let _: i64 = st
                            .query_row([params[0].as_i64().unwrap_or(1)], |r| r.get(0))
                            .expect("row");
                    }
                    1 => drop(query::run(&raw, stmt, limits).expect("run")),
                    2 => {
                        let s = pdb.session_with(Caller::Tenant, &rules).expect("session");
                        drop(query::run(s.conn(), stmt, limits).expect("run"));
                    }
                    _ => drop(
                        engine
                            .query("bench", q(&sql, params.clone()), Caller::Tenant)
                            .expect("select"),
                    ),
                }
            }
            *us = us.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    engine.set_metering(true);
    rungs
        .iter()
        .zip(best)
        .map(|(r, us)| (r.to_string(), us))
        .collect()
}

/// The kernel's count of write system calls this process made (`syscw` in /proc/self/io).
fn write_syscalls() -> u64 {
    proc_field("/proc/self/io", "syscw:")
}

/// IO cap: random single-row updates by a tenant limited to `iops`, for `secs` after a
/// one-second warm-up that spends the burst: (IOPS the engine counted, kernel write
/// syscalls a second, statements a second).
fn io_cap(iops: u32, secs: f64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            iops: Some(iops),
            ..Default::default()
        },
    )
    .expect("engine");
    // Filled by the admin (not charged): 20,000 rows over ~500 pages.
    fill(&engine, "io", 20_000);
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let update = |rng: &mut Rng| {
        let id = rng.next() % 20_000 + 1;
        engine
            .query(
                "io",
                q(
                    "UPDATE acct SET balance = balance + 1 WHERE id = ?",
                    json!([id]),
                ),
                Caller::Tenant,
            )
            .expect("update");
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        update(&mut rng);
    }
    let used = |e: &Engine| e.io.report(None).iops.map_or(0, |t| t.used);
    let (pages0, sys0) = (used(&engine), write_syscalls());
    let t = Instant::now();
    let mut statements = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        update(&mut rng);
        statements += 1;
    }
    let elapsed = t.elapsed().as_secs_f64();
    (
        (used(&engine) - pages0) as f64 / elapsed,
        (write_syscalls() - sys0) as f64 / elapsed,
        statements as f64 / elapsed,
    )
}

/// Serve `engine` over HTTP on a loopback port from `rt`: its base URL and its state.
fn serve_engine(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    admin_token: Option<&str>,
) -> (String, Arc<EngineState>) {
    let state = Arc::new(
        EngineState::new(
            engine.clone(),
            Default::default(),
            CgroupReader::for_self(),
            "bench".into(),
            admin_token.map(String::from),
        )
        .expect("state"),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = router(state.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    (base, state)
}

/// The isolation figures of issue 5: the IO cap, and a noisy neighbour's effect on
/// another database's point-select latency.
fn isolation_figures(quick: bool) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let secs = if quick { 3.0 } else { 10.0 };
    for iops in [200, 400] {
        let (measured, syscalls, stmts) = io_cap(iops, secs);
        lines.push((
            format!("IO cap {iops} IOPS, random updates over {secs:.0} s: IOPS"),
            format!(
                "{measured:.0}  ({stmts:.0} statements/s, kernel write syscalls/s {syscalls:.0})"
            ),
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("engine"));
    fill(&engine, "bench", ROWS);
    create(&engine, "noisy", json!({"empty": {}}));
    engine
        .query(
            "noisy",
            q(
                "CREATE TABLE junk (id INTEGER PRIMARY KEY, v BLOB)",
                json!(null),
            ),
            Caller::Admin,
        )
        .expect("schema");
    let (_, token) = engine.issue_token(vec!["*".into()]).expect("token");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (base, state) = serve_engine(&rt, &engine, None);
    let workers = state.workers.report().workers;
    let secs = if quick { 2.0 } else { 5.0 };
    // Alone and with A, three times over, alternating: B's own p99 moves by half between
    // runs on this VM, so each "with" is set against the medians, not one lucky baseline.
    let (mut alone, mut with, mut rps, mut done) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let (alone_rps, _, alone_p99) =
            rt.block_on(load::point_selects(&base, &token, Protocol::Json, 8, secs));
        let (with_rps, with_p99, n) = noisy_phase(&rt, &base, &token, secs);
        alone.push(alone_p99);
        with.push(with_p99);
        rps.push((alone_rps, with_rps));
        done += n;
    }
    let runs: Vec<String> = alone
        .iter()
        .zip(&with)
        .map(|(a, w)| format!("{}/{}", ms(*a), ms(*w)))
        .collect();
    alone.sort();
    with.sort();
    let ratio = with[1].as_secs_f64() / alone[1].as_secs_f64().max(1e-9);
    lines.push((
        "noisy neighbour: B's point-select p99 alone / with A flat out (median of 3)".into(),
        format!(
            "{} / {}  → {ratio:.2}× (target ≤ 2×); runs {}",
            ms(alone[1]),
            ms(with[1]),
            runs.join(", ")
        ),
    ));
    lines.push((
        "noisy neighbour: B req/s alone / with A; A's statements done; workers".into(),
        format!(
            "{}; {done} in {:.0} s; {workers} worker(s)",
            rps.iter()
                .map(|(a, w)| format!("{a:.0}/{w:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            3.0 * secs
        ),
    ));
    lines
}

/// B's point selects (8 connections, `secs`) while database A runs, on 4 connections
/// flat out, CPU-heavy SELECTs and 50-row batches of 2 KB blobs (`TENANTDB_BENCH_NOISY`
/// = `cpu` or `io` keeps to one kind): (B's req/s, B's p99, A's statements done).
fn noisy_phase(
    rt: &tokio::runtime::Runtime,
    base: &str,
    token: &str,
    secs: f64,
) -> (f64, Duration, u64) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A stops by itself too, so a stalled measurement cannot leave it filling the disk.
    let give_up = std::time::Instant::now() + Duration::from_secs_f64(secs * 4.0 + 5.0);
    let mut noisy = Vec::new();
    for c in 0..4 {
        let (base, token, stop, done) = (
            base.to_string(),
            token.to_string(),
            stop.clone(),
            done.clone(),
        );
        noisy.push(rt.spawn(async move {
            let client = reqwest::Client::new();
            let url = format!("{base}/v1/databases/noisy/query");
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < give_up
            {
                let cpu = match std::env::var("TENANTDB_BENCH_NOISY").as_deref() {
                    Ok("cpu") => true,
                    Ok("io") => false,
                    _ => i % 2 == 0,
                };
                let body = if cpu {
                    json!({"sql": "SELECT (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 200000) SELECT sum(x) FROM n)"})
                } else {
                    json!({"sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 50) INSERT INTO junk (v) SELECT randomblob(2000) FROM n"})
                };
                if let Ok(r) = client.post(&url).bearer_auth(&token).json(&body).send().await {
                    let _ = r.bytes().await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    let (rps, _, p99) = rt.block_on(load::point_selects(base, token, Protocol::Json, 8, secs));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in noisy {
        let _ = rt.block_on(t);
    }
    (rps, p99, done.load(std::sync::atomic::Ordering::Relaxed))
}

/// The same load from wrk (a C load generator, like pgbench), when installed:
/// (req/s, p50, p99). wrk's Lua script spreads ids over the table.
fn wrk_load(
    base: &str,
    token: &str,
    protocol: Protocol,
    conns: usize,
    secs: f64,
) -> Option<(f64, Duration, Duration)> {
    let script = std::env::temp_dir().join("tenantdb-bench-wrk.lua");
    std::fs::write(
        &script,
        format!(
            r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
request = function()
  return wrk.format(nil, nil, nil, {})
end
"#,
            protocol.lua_body(ROWS)
        ),
    )
    .ok()?;
    let out = Command::new("wrk")
        .args([
            "-t",
            &conns.min(2).to_string(),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{}s", secs.ceil() as u64),
            "--latency",
            "-s",
            &script.display().to_string(),
            &format!("{base}{}", protocol.path()),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let lat = |p: &str| -> Option<Duration> {
        let v = text
            .lines()
            .find(|l| l.trim_start().starts_with(p))?
            .split_whitespace()
            .nth(1)?
            .to_string();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let x: f64 = num.parse().ok()?;
        Some(Duration::from_secs_f64(match unit {
            "us" => x / 1e6,
            "ms" => x / 1e3,
            "s" => x,
            _ => return None,
        }))
    };
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors:\n{text}");
    }
    Some((rps, lat("50%")?, lat("99%")?))
}

struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("pg_ctl").exists())?;
        let dir = std::env::temp_dir().join(format!("tenantdb-bench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let as_pg = |args: &str| {
            Command::new("runuser")
                .args(["-u", "postgres", "--", "sh", "-c", args])
                .output()
        };
        Command::new("chown")
            .args(["postgres:postgres", &dir.display().to_string()])
            .status()
            .ok()?;
        let data = dir.join("data");
        let out = as_pg(&format!(
            "{}/initdb -D {} -A trust -U postgres >/dev/null",
            bin.display(),
            data.display()
        ))
        .ok()?;
        if !out.status.success() {
            eprintln!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let opts = format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=200 -c shared_buffers=256MB", dir.display());
        let out = as_pg(&format!(
            "{}/pg_ctl -D {} -o '{opts}' -w -l {}/log start >/dev/null",
            bin.display(),
            data.display(),
            dir.display()
        ))
        .ok()?;
        if !out.status.success() {
            eprintln!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Postgres { dir, bin, port })
    }

    fn psql(&self, db: &str, sql: &str) -> bool {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-qAt",
                "-c",
                sql,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn pgbench(&self, args: &[&str]) -> Option<f64> {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
        all.extend_from_slice(args);
        let out = Command::new(self.bin.join("pgbench"))
            .args(&all)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "sh",
                "-c",
                &format!(
                    "{}/pg_ctl -D {}/data -m immediate stop >/dev/null 2>&1",
                    self.bin.display(),
                    self.dir.display()
                ),
            ])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the HTTP section measured.
#[derive(Default, Clone)]
struct WebFigures {
    lines: Vec<(String, String)>,
    /// JSON API point selects/s at 1, 16, 64 connections.
    json: Vec<f64>,
    /// Hrana point selects/s at 1, 16, 64 connections.
    hrana: Vec<f64>,
    /// TPC-B-like transactions/s at 1 and 16 clients.
    tpcb: Vec<f64>,
}

/// Point selects through the JSON API and Hrana at 1, 16 and 64 connections
/// (alternating, the same load generator for both), then pgbench's TPC-B-like
/// transaction as interactive Hrana stream requests at 1 and 16 clients. `engine` holds
/// `bench` (table `acct`).
fn http_figures(rt: &tokio::runtime::Runtime, engine: &Arc<Engine>, quick: bool) -> WebFigures {
    // 3. HTTP point selects at 1, 16, 64 connections, through the JSON API and Hrana
    // (alternating, the same load generator for both); then pgbench's TPC-B-like
    // transaction as interactive Hrana stream requests at 1 and 16 clients.
    let (_, token) = engine
        .issue_token(vec!["bench".into(), "tpcb".into()])
        .expect("token");
    let (base, state) = serve_engine(rt, engine, Some("bench-admin"));
    let secs = if quick { 1.0 } else { 4.0 };
    let mut out = WebFigures::default();
    let n = if quick { 20_000 } else { 100_000 };
    let cost = |p| rt.block_on(load::router_cost(router(state.clone()), &token, p, n));
    let (json_us, hrana_us) = (cost(Protocol::Json), cost(Protocol::Hrana));
    out.lines.push((
        "in-process router, µs a point select (request built, answer read): JSON API / Hrana"
            .into(),
        format!(
            "{json_us:.2} / {hrana_us:.2}  (Hrana +{:.1}%)",
            (hrana_us / json_us - 1.0) * 100.0
        ),
    ));
    for conns in [1, 16, 64] {
        for protocol in [Protocol::Json, Protocol::Hrana] {
            let (tool, (rps, p50, p99)) = match wrk_load(&base, &token, protocol, conns, secs) {
                Some(r) => ("wrk", r),
                None => (
                    "in-process client",
                    rt.block_on(load::point_selects(&base, &token, protocol, conns, secs)),
                ),
            };
            let name = match protocol {
                Protocol::Json => "HTTP (JSON API)",
                Protocol::Hrana => "Hrana over HTTP",
            };
            out.lines.push((
                format!("{name} point select, {conns} conns ({tool}): req/s, p50, p99"),
                format!("{rps:.0}, {}, {}", ms(p50), ms(p99)),
            ));
            match protocol {
                Protocol::Json => out.json.push(rps),
                Protocol::Hrana => out.hrana.push(rps),
            }
        }
        let (h, j) = (out.hrana[out.hrana.len() - 1], out.json[out.json.len() - 1]);
        out.lines.push((
            format!("  Hrana / JSON API point selects, {conns} conns"),
            format!("{:.2} (target ≥ 0.90)", h / j.max(1.0)),
        ));
    }
    out.lines
        .extend(tls_figures(rt, &state, &base, &token, secs));
    create(engine, "tpcb", json!({"empty": {}}));
    let batch: Vec<serde_json::Value> = load::TPCB_SCHEMA
        .split(";\n")
        .map(|s| json!({"sql": s.trim_end_matches(';')}))
        .collect();
    engine
        .query(
            "tpcb",
            serde_json::from_value(json!({"batch": batch})).expect("batch"),
            Caller::Admin,
        )
        .expect("tpcb schema");
    let tx_secs = if quick { 2.0 } else { 8.0 };
    for clients in [1, 16] {
        let (tps, p50, p99) = rt.block_on(load::tpcb(&base, &token, "tpcb", clients, tx_secs));
        out.lines.push((
            format!("Hrana TPC-B-like interactive transaction (7 requests), {clients} clients: tps, p50, p99"),
            format!("{tps:.0}, {}, {}", ms(p50), ms(p99)),
        ));
        out.tpcb.push(tps);
    }

    out
}

/// The cost of TLS: JSON API point selects over plain HTTP and over HTTPS (a certificate
/// the operator's issuer makes, verified against its CA), the same in-process client,
/// alternating, at 1 and 16 connections.
fn tls_figures(
    rt: &tokio::runtime::Runtime,
    state: &Arc<EngineState>,
    plain: &str,
    token: &str,
    secs: f64,
) -> Vec<(String, String)> {
    use tenantdb_engine::tls::{server_config, CertResolver, TlsFiles, TlsListener};
    use tenantdb_operator::tenant::tls::{new_ca, server_cert, Validity};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chrono::Utc::now();
    let ca = new_ca("bench", "bench", now, Validity::default()).expect("CA");
    let cert = server_cert("bench", "bench", &ca.key_pem, now, Validity::default()).expect("cert");
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&files.cert, &cert.cert_pem).expect("write");
    std::fs::write(&files.key, &cert.key_pem).expect("write");
    let resolver = Arc::new(CertResolver::load(files).expect("pair"));
    let config = Arc::new(server_config(resolver).expect("config"));
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = router(state.clone());
    let listener = {
        let _guard = rt.enter();
        TlsListener::new(tcp, config).expect("listener")
    };
    rt.spawn(async move { axum::serve(listener, app).await });
    let name = "bench-engine.bench.svc".to_string();
    let tls = load::Tls {
        name: name.clone(),
        addr,
        ca_pem: ca.cert_pem.clone(),
    };
    let https = format!("https://{name}:{}", addr.port());
    let mut lines = Vec::new();
    for conns in [1, 16] {
        let run = |base: &str, tls: Option<load::Tls>| {
            rt.block_on(load::point_selects_over(
                base,
                token,
                Protocol::Json,
                conns,
                secs,
                tls,
            ))
        };
        let (p, pp50, pp99) = run(plain, None);
        let (t, tp50, tp99) = run(&https, Some(tls.clone()));
        lines.push((
            format!("JSON API point select, {conns} conns (in-process client): plain HTTP / HTTPS req/s, p50, p99"),
            format!(
                "{p:.0}, {}, {} / {t:.0}, {}, {}  (HTTPS {:.2}x)",
                ms(pp50),
                ms(pp99),
                ms(tp50),
                ms(tp99),
                t / p.max(1.0)
            ),
        ));
    }
    lines
}

/// pgbench beside the HTTP figures, same machine, same run: `-S` at 1, 16 and 64
/// clients, and its built-in TPC-B-like script at 1 and 16.
fn pg_web_figures(pg: &Postgres, quick: bool, web: &WebFigures) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let t = if quick { "1" } else { "4" };
    for (conns, ours) in [(1, web.json[0]), (16, web.json[1]), (64, web.json[2])] {
        let c = conns.to_string();
        let tps = pg
            .pgbench(&["-S", "-n", "-c", &c, "-j", "2", "-T", t, "bench"])
            .unwrap_or(0.0);
        out.push((
            format!("PostgreSQL pgbench -S, {conns} clients: tps"),
            format!(
                "{tps:.0}  → TenantDB HTTP / PostgreSQL = {:.2}",
                ours / tps.max(1.0)
            ),
        ));
    }
    let tt = if quick { "2" } else { "8" };
    for (clients, ours) in [(1, web.tpcb[0]), (16, web.tpcb[1])] {
        let c = clients.to_string();
        let tps = pg
            .pgbench(&["-n", "-c", &c, "-j", "2", "-T", tt, "bench"])
            .unwrap_or(0.0);
        out.push((
            format!("PostgreSQL pgbench TPC-B-like (built-in), {clients} clients: tps"),
            format!(
                "{tps:.0}  → TenantDB Hrana / PostgreSQL = {:.2}{}",
                ours / tps.max(1.0),
                if clients == 1 { " (target ≥ 1)" } else { "" }
            ),
        ));
    }
    out
}

fn main() {
    let quick = quick();
    if std::env::var("TENANTDB_BENCH_ONLY").is_ok_and(|v| v == "isolation") {
        print_table(quick, &isolation_figures(quick));
        return;
    }
    if std::env::var("TENANTDB_BENCH_ONLY").is_ok_and(|v| v == "router") {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("engine"));
        fill(&engine, "bench", ROWS);
        let (_, token) = engine.issue_token(vec!["bench".into()]).expect("token");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (_, state) = serve_engine(&rt, &engine, Some("bench-admin"));
        let n = if quick { 20_000 } else { 200_000 };
        let only = std::env::var("TENANTDB_BENCH_PROTOCOL").unwrap_or_default();
        let all = [
            Protocol::Json,
            Protocol::Hrana,
            Protocol::Json,
            Protocol::Hrana,
        ];
        for p in all
            .into_iter()
            .filter(|p| only.is_empty() || format!("{p:?}").eq_ignore_ascii_case(&only))
        {
            let us = rt.block_on(load::router_cost(router(state.clone()), &token, p, n));
            println!("{p:?}: {us:.2} µs");
        }
        return;
    }
    if std::env::var("TENANTDB_BENCH_ONLY").is_ok_and(|v| v == "http") {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("engine"));
        fill(&engine, "bench", ROWS);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let web = http_figures(&rt, &engine, quick);
        let mut lines = web.lines.clone();
        match Postgres::start() {
            Some(pg) => {
                pg.psql("postgres", "CREATE DATABASE bench");
                let _ = pg.pgbench(&["-i", "-q", "-s", "1", "bench"]);
                lines.extend(pg_web_figures(&pg, quick, &web));
            }
            None => lines.push(("PostgreSQL".into(), "not available here: skipped".into())),
        }
        print_table(quick, &lines);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            EngineOptions {
                seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
                ..Default::default()
            },
        )
        .expect("engine"),
    );
    let mut lines: Vec<(String, String)> = Vec::new();

    // 1. Create from seed: durable (file and catalog fsynced before the call returns).
    let n = if quick { 100 } else { 500 };
    let mut lat: Vec<Duration> = (0..n)
        .map(|i| create(&engine, &format!("seed{i}"), json!({"seed": {}})))
        .collect();
    lat.sort();
    let (create_p50, create_p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    lines.push((
        "create from seed p50 / p99".into(),
        format!("{} / {}", ms(create_p50), ms(create_p99)),
    ));

    // 2. In-process point select and insert vs raw rusqlite on the same file.
    fill(&engine, "bench", ROWS);
    let path = dir.path().join("pdbs/bench.db");
    let ops = in_process(&engine, &path, if quick { 50_000 } else { 200_000 });
    let overhead = |raw: usize, eng: usize| (ops[raw].1 / ops[eng].1 - 1.0) * 100.0;
    for (k, v) in &ops {
        lines.push((k.clone(), format!("{v:.0}")));
    }
    let (with, without) = metering_cost(&engine, if quick { 50_000 } else { 200_000 });
    lines.push((
        "point select with / without metering (per s)".into(),
        format!("{with:.0} / {without:.0}"),
    ));
    lines.push((
        "metering overhead on the point-select path".into(),
        format!("{:.1}%", (without / with - 1.0) * 100.0),
    ));
    lines.push((
        "engine overhead over raw rusqlite (default open): select / insert".into(),
        format!("{:.1}% / {:.1}%", overhead(2, 0), overhead(3, 1)),
    ));
    lines.push((
        "engine overhead over raw rusqlite (engine's VFS): select / insert".into(),
        format!("{:.1}% / {:.1}%", overhead(4, 0), overhead(5, 1)),
    ));

    let ladder = overhead_ladder(&engine, &path, if quick { 50_000 } else { 200_000 });
    for (rung, us) in &ladder {
        lines.push((
            format!("  point select µs: {rung}"),
            format!(
                "{us:.3}  (+{:.1}% over raw)",
                (us / ladder[0].1 - 1.0) * 100.0
            ),
        ));
    }
    if std::env::var("TENANTDB_BENCH_ONLY").is_ok_and(|v| v == "in-process") {
        print_table(quick, &lines);
        return;
    }

    // 3. HTTP: point selects through the JSON API and Hrana, and TPC-B-like transactions.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let web = http_figures(&rt, &engine, quick);
    lines.extend(web.lines.clone());

    // 4. A 100 MiB database: hot clone, unplug, plug.
    let mb = if quick { 20 } else { 100 };
    create(&engine, "big", json!({"empty": {}}));
    engine
        .query(
            "big",
            q(
                "CREATE TABLE blob (id INTEGER PRIMARY KEY, b BLOB)",
                json!(null),
            ),
            Caller::Admin,
        )
        .expect("schema");
    engine.query("big", q(&format!("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < {}) INSERT INTO blob (b) SELECT randomblob(65536) FROM n", mb * 16), json!(null)), Caller::Admin).expect("fill");
    engine
        .query(
            "big",
            q("PRAGMA wal_checkpoint(TRUNCATE)", json!(null)),
            Caller::Admin,
        )
        .expect("checkpoint");
    let size = engine.describe("big").expect("big").size_bytes;
    let clone = create(
        &engine,
        "big-clone",
        json!({"clone": {"from": "big", "mode": "full"}}),
    );
    let t = Instant::now();
    engine
        .unplug("big", Some("big-arch".into()))
        .expect("unplug");
    let unplug = t.elapsed();
    let plug = create(&engine, "big2", json!({"plug": {"archive": "big-arch"}}));
    lines.push((
        format!("{} MiB database: hot clone / unplug / plug", size >> 20),
        format!("{} / {} / {}", ms(clone), ms(unplug), ms(plug)),
    ));

    // 5. RSS of idle databases.
    let before = rss_kib();
    let count = if quick { 2_000 } else { 10_000 };
    let t = Instant::now();
    for i in 0..count {
        create(&engine, &format!("idle{i}"), json!({"seed": {}}));
    }
    let took = t.elapsed();
    let after = rss_kib();
    lines.push((
        format!("RSS after creating {count} databases (+ per database)"),
        format!(
            "{} MiB (+{:.2} KiB each; {count} creates in {:.1} s)",
            after >> 10,
            (after.saturating_sub(before)) as f64 / count as f64,
            took.as_secs_f64()
        ),
    ));

    // 6. PostgreSQL, same machine, same run.
    let mut pg_lines = Vec::new();
    match Postgres::start() {
        None => pg_lines.push(("PostgreSQL".into(), "not available here: skipped".into())),
        Some(pg) => {
            let mut lat = Vec::new();
            for i in 0..if quick { 10 } else { 30 } {
                let t = Instant::now();
                if pg.psql("postgres", &format!("CREATE DATABASE t{i}")) {
                    lat.push(t.elapsed());
                }
            }
            lat.sort();
            let (pg50, pg99) = (pct(&lat, 0.5), pct(&lat, 0.99));
            pg_lines.push((
                "PostgreSQL CREATE DATABASE p50 / p99 (psql round trip)".into(),
                format!(
                    "{} / {}  → TenantDB create is {:.0}× faster at p50",
                    ms(pg50),
                    ms(pg99),
                    pg50.as_secs_f64() / create_p50.as_secs_f64().max(1e-9)
                ),
            ));
            pg.psql("postgres", "CREATE DATABASE bench");
            let _ = pg.pgbench(&["-i", "-q", "-s", "1", "bench"]);
            let t = if quick { "1" } else { "4" };
            pg_lines.extend(pg_web_figures(&pg, quick, &web));
            let script = std::env::temp_dir().join("tenantdb-bench-insert.sql");
            let _ = std::fs::write(&script, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now());\n");
            let tps = pg
                .pgbench(&[
                    "-n",
                    "-c",
                    "1",
                    "-T",
                    t,
                    "-f",
                    &script.display().to_string(),
                    "bench",
                ])
                .unwrap_or(0.0);
            pg_lines.push((
                "PostgreSQL single-row insert, 1 client: tps".into(),
                format!(
                    "{tps:.0}  → TenantDB in-process insert / PostgreSQL = {:.2}",
                    ops[1].1 / tps.max(1.0)
                ),
            ));
            let tps = pg
                .pgbench(&["-S", "-n", "-c", "1", "-T", t, "bench"])
                .unwrap_or(0.0);
            pg_lines.push((
                "PostgreSQL point select, 1 client (pgbench -S): tps".into(),
                format!(
                    "{tps:.0}  → TenantDB in-process select / PostgreSQL = {:.1}",
                    ops[0].1 / tps.max(1.0)
                ),
            ));
        }
    }

    lines.extend(pg_lines);
    lines.extend(isolation_figures(quick));
    print_table(quick, &lines);
}
