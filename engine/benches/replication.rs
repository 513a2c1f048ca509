//! `cargo bench -p tenantdb-engine --bench replication`: what a hot standby costs. Single-
//! row inserts through the JSON API at 1 and 16 clients, in one run, against three setups
//! on loopback: one member (the peer: no replication), a primary and a standby with
//! `durability: async`, and with `required` (each commit waits for the standby's durable
//! write). Engines and clients share this machine's cores. `TENANTDB_BENCH_QUICK=1`
//! shortens each phase to 2 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tenantdb_engine::server::{serve, ServeOptions};

const ADMIN: &str = "bench-admin";

struct Member {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn member(durability: Option<&str>) -> Member {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("engine.yaml");
    let yaml = match durability {
        Some(d) => format!("tenant: bench\nreplication:\n  durability: {d}\n"),
        None => "tenant: bench\n".into(),
    };
    std::fs::write(&config, yaml).expect("config");
    let port = free_port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions {
        data_dir: dir.path().join("data"),
        listen: ([127, 0, 0, 1], port).into(),
        admin_token: Some(ADMIN.into()),
        admin_token_file: None,
        config: Some(config),
        tls: None,
        peer_ca: None,
        cgroup_parent: None,
    };
    tokio::spawn(async move {
        if let Err(e) = serve(opts, async {
            let _ = rx.await;
        })
        .await
        {
            eprintln!("engine: {e}");
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    for _ in 0..400 {
        if c.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Member {
        base,
        stop: Some(tx),
        _dir: dir,
    }
}

async fn put_role(c: &reqwest::Client, m: &Member, body: serde_json::Value) {
    let r = c
        .put(format!("{}/v1/admin/role", m.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("role");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

async fn prepare(c: &reqwest::Client, primary: &Member) {
    let r = c
        .post(format!("{}/v1/databases", primary.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "b", "source": {"empty": {}}}))
        .send()
        .await
        .expect("create");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    insert(
        c,
        &primary.base,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    )
    .await;
}

async fn insert(c: &reqwest::Client, base: &str, sql: &str) -> bool {
    c.post(format!("{base}/v1/databases/b/query"))
        .bearer_auth(ADMIN)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Inserts per second and p50/p99 latency with `clients` concurrent writers for `secs`.
async fn load(
    c: &reqwest::Client,
    m: &Member,
    clients: usize,
    secs: f64,
) -> (f64, Duration, Duration, usize) {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(
        1_000_000 * clients as u64,
    ));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (c, base, lat, failed, stop, next) = (
                c.clone(),
                m.base.clone(),
                lat.clone(),
                failed.clone(),
                stop.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if insert(
                        &c,
                        &base,
                        &format!("INSERT INTO t VALUES ({id}, 'row {id}')"),
                    )
                    .await
                    {
                        lat.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(t.elapsed());
                    } else {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort();
    let pick = |p: f64| {
        l.get(((l.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let failed = *failed.lock().unwrap_or_else(|e| e.into_inner());
    (l.len() as f64 / elapsed, pick(0.5), pick(0.99), failed)
}

fn main() {
    let quick = std::env::var("TENANTDB_BENCH_QUICK").is_ok_and(|v| v == "1");
    let secs = if quick { 2.0 } else { 10.0 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut rows = Vec::new();
        for setup in ["one member", "async", "required"] {
            let (primary, standby) = if setup == "one member" {
                (member(None).await, None)
            } else {
                let p = member(Some(setup)).await;
                let s = member(Some(setup)).await;
                put_role(&c, &p, json!({"role": "primary", "epoch": 1, "validForMillis": 60_000})).await;
                put_role(&c, &s, json!({"role": "standby", "epoch": 1, "primaryUrl": p.base})).await;
                (p, Some(s))
            };
            prepare(&c, &primary).await;
            if standby.is_some() {
                // Let the standby take its bases before the clock starts.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            for clients in [1, 16] {
                // Renew the primary's right to acknowledge for the phase.
                if standby.is_some() {
                    put_role(&c, &primary, json!({"role": "primary", "epoch": 1, "validForMillis": 60_000})).await;
                }
                let (rate, p50, p99, failed) = load(&c, &primary, clients, secs).await;
                rows.push(format!(
                    "{setup:<11} {clients:>2} clients: {rate:>8.0} inserts/s   p50 {:>7.3} ms   p99 {:>7.3} ms   failed {failed}",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                ));
            }
            drop(standby);
            drop(primary);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        println!(
            "\nHot standby cost ({} run, {} cores; engines and clients on the same cores, JSON API on loopback, single-row INSERT autocommit)",
            if quick { "quick" } else { "full" },
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        println!("{}", "-".repeat(100));
        for r in rows {
            println!("{r}");
        }
    });
}
