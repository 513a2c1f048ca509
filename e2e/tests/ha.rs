//! A tenant with a hot standby (`replicas: 2`, `durability: required`) loses its primary
//! 20 times while writers run — `kill -9` of the engine, deletion of the pod, and a
//! SIGSTOP of the engine and its agent (it neither answers nor dies) — and after each
//! failover every write the writers saw acknowledged is on the new primary. The ledger
//! of acknowledged ids is kept here, outside the cluster. The write gap is measured from
//! the client's side: from the last acknowledgement of the old primary to the first of
//! the new one (the engine says which primary answered, `x-tenantdb-epoch`).
//! A primary whose agent cannot renew the Lease (frozen; its engine still reached by
//! clients) stops acknowledging within the Lease's margin, and nothing it acknowledged
//! after that exists anywhere.
#![cfg(feature = "e2e")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::Client;
use serde_json::json;
use tenantdb_e2e::ha::{roles, signal, write};
use tenantdb_e2e::pdb::open_database;
use tenantdb_e2e::*;

/// An acknowledged write: its id, when, and which primary's epoch.
type Ack = (u64, Instant, u64);

struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(c: &Client, ns: &str, token: &str, next: &Arc<AtomicU64>, n: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..n)
        .map(|_| {
            let (c, ns, token) = (c.clone(), ns.to_string(), token.to_string());
            let (stop, acks, next) = (stop.clone(), acks.clone(), next.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let sql = format!("INSERT INTO t (id) VALUES ({id})");
                    match write(&c, &ns, "ha", &token, &sql).await {
                        (200, Some(epoch)) => {
                            acks.lock().unwrap().push((id, Instant::now(), epoch))
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect();
    Writers { stop, acks, tasks }
}

impl Writers {
    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }

    fn first_after(&self, epoch: u64) -> Option<Instant> {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.2 > epoch)
            .map(|a| a.1)
            .min()
    }
}

/// Wait for a primary and a caught-up standby, and a write acknowledged; the primary
/// pod and its epoch.
async fn healthy(c: &Client, ns: &str, token: &str) -> anyhow::Result<(String, u64)> {
    eventually(
        "a primary and a caught-up standby",
        Duration::from_secs(300),
        || async {
            let (primary, standby_ok) = roles(c, ns, "ha").await?;
            let Some(primary) = primary.filter(|_| standby_ok) else {
                return Ok(None);
            };
            match write(c, ns, "ha", token, "INSERT INTO probe DEFAULT VALUES").await {
                (200, Some(epoch)) => Ok(Some((primary, epoch))),
                _ => Ok(None),
            }
        },
    )
    .await
}

/// Every id in the ledger table of the primary (read again while the Service's proxy
/// still answers with an error for a moment after a failover).
async fn present(c: &Client, ns: &str, token: &str) -> anyhow::Result<HashSet<u64>> {
    let rows = eventually(
        "reading the ledger on the primary",
        Duration::from_secs(60),
        || async {
            let (status, rows) = sql(c, ns, "ha", "ledger", token, "SELECT id FROM t").await?;
            Ok((status == 200).then_some(rows))
        },
    )
    .await?;
    Ok(rows["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r[0].as_u64())
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    Kill9,
    DeletePod,
    Freeze,
}

async fn lease_holder(c: &Client, ns: &str) -> anyhow::Result<String> {
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), ns)
        .get("ha-engine-primary")
        .await?;
    Ok(lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

/// A namespace with Tenant `ha` (two members, `required`, a little more CPU than bronze
/// so three writers and a standby do not wait on the quota) and database `ledger` with its
/// tables; the admin token.
async fn replicated_ledger(c: &Client, prefix: &str) -> anyhow::Result<(TestNamespace, String)> {
    let ns = TestNamespace::create(c, prefix).await?;
    let n = ns.name.as_str();
    tenantdb_e2e::ha::apply_tenant(
        c,
        n,
        "ha",
        json!({"tier": "bronze", "replicas": 2, "durability": "required",
               "quota": {"cpu": "250m", "memory": "192Mi"}}),
    )
    .await?;
    let token = tenant_ready(c, n, "ha").await?;
    open_database(c, n, "ledger", json!({"tenant": "ha"})).await?;
    for ddl in [
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        "CREATE TABLE probe (id INTEGER PRIMARY KEY)",
    ] {
        let (status, body) = sql(c, n, "ha", "ledger", &token, ddl).await?;
        assert_eq!(status, 200, "{body}");
    }
    Ok((ns, token))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn twenty_failovers_lose_no_acknowledged_write() -> anyhow::Result<()> {
    let c = client().await?;
    let (ns, token) = replicated_ledger(&c, "e2e-ha").await?;
    let n = ns.name.as_str();
    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    let next = Arc::new(AtomicU64::new(1));
    let mut all_acked: Vec<u64> = Vec::new();
    let mut report = Vec::new();
    let mut gaps: Vec<(Loss, f64)> = Vec::new();
    for run in 0..20 {
        let how = [Loss::Kill9, Loss::DeletePod, Loss::Freeze][run % 3];
        let (primary, epoch) = healthy(&c, n, &token).await?;
        let writers = start_writers(&c, n, &token, &next, 3);
        eventually(
            "writes acknowledged before the loss",
            Duration::from_secs(30),
            || async { Ok((writers.acks.lock().unwrap().len() >= 20).then_some(())) },
        )
        .await?;
        match how {
            Loss::Kill9 => signal(&c, n, &primary, "KILL", &["tenantdb-engine"]).await?,
            Loss::DeletePod => {
                pods.delete(&primary, &DeleteParams::default()).await?;
            }
            Loss::Freeze => {
                signal(
                    &c,
                    n,
                    &primary,
                    "STOP",
                    &["tenantdb-engine", "tenantdb-member"],
                )
                .await?
            }
        }
        if how == Loss::Freeze {
            // With `required` and two members the new primary acknowledges nothing until
            // a standby streams again: the frozen member is let go once its Lease has
            // passed to the other (it then comes back as that one's standby).
            eventually(
                "the Lease passes to the standby",
                Duration::from_secs(60),
                || async { Ok((lease_holder(&c, n).await? != primary).then_some(())) },
            )
            .await?;
            signal(
                &c,
                n,
                &primary,
                "CONT",
                &["tenantdb-engine", "tenantdb-member"],
            )
            .await?;
        }
        let first_new = eventually(
            "a write acknowledged by the new primary",
            Duration::from_secs(120),
            || async { Ok(writers.first_after(epoch)) },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = writers.finish().await;
        let last_old = acks.iter().filter(|a| a.2 <= epoch).map(|a| a.1).max();
        let gap = last_old.map_or(0.0, |t| first_new.duration_since(t).as_secs_f64());
        all_acked.extend(acks.iter().map(|a| a.0));
        let on_new = present(&c, n, &token).await?;
        let lost: Vec<u64> = all_acked
            .iter()
            .copied()
            .filter(|i| !on_new.contains(i))
            .collect();
        report.push(format!(
            "run {:2} {how:?} of {primary}: {} acknowledged this run, {} in the ledger, {} present on the new primary, {} lost, write gap {gap:.2} s",
            run + 1,
            acks.len(),
            all_acked.len(),
            on_new.len(),
            lost.len()
        ));
        println!("{}", report.last().unwrap());
        assert!(
            lost.is_empty(),
            "run {}: acknowledged writes lost: {lost:?}",
            run + 1
        );
        gaps.push((how, gap));
    }
    let mut all: Vec<f64> = gaps.iter().map(|g| g.1).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    for how in [Loss::Kill9, Loss::DeletePod, Loss::Freeze] {
        let mut g: Vec<f64> = gaps.iter().filter(|x| x.0 == how).map(|x| x.1).collect();
        g.sort_by(|a, b| a.total_cmp(b));
        report.push(format!(
            "write gap {how:?}: p50 {:.2} s, max {:.2} s over {} runs",
            percentile(&g, 0.5),
            g[g.len() - 1],
            g.len()
        ));
    }
    report.push(format!(
        "write gap, all 20 runs: p50 {:.2} s, max {:.2} s",
        percentile(&all, 0.5),
        all[all.len() - 1]
    ));
    // Kept beside the test binaries, so a run whose output was captured still says.
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ha-failovers.txt");
    std::fs::write(&kept, report.join("\n") + "\n")?;
    println!("{}\n(also in {})", report[20..].join("\n"), kept.display());
    assert!(
        all[all.len() - 1] <= 20.0,
        "a failover took {:.1} s",
        all[all.len() - 1]
    );
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn a_primary_that_cannot_renew_its_lease_stops_acknowledging() -> anyhow::Result<()> {
    let c = client().await?;
    let (ns, token) = replicated_ledger(&c, "e2e-split").await?;
    let n = ns.name.as_str();
    let (primary, epoch) = healthy(&c, n, &token).await?;
    let next = Arc::new(AtomicU64::new(1));
    let writers = start_writers(&c, n, &token, &next, 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Its agent frozen: no renewal reaches the API server, while clients still reach
    // the engine through the Service (its pod keeps the primary label until the new
    // primary's agent takes it away).
    let cut = Instant::now();
    signal(&c, n, &primary, "STOP", &["tenantdb-member"]).await?;
    eventually(
        "the Lease passes to the standby",
        Duration::from_secs(60),
        || async { Ok((lease_holder(&c, n).await? != primary).then_some(())) },
    )
    .await?;
    // Its agent let go, the old primary follows the new one, whose first
    // acknowledgement needs a standby (`required`).
    signal(&c, n, &primary, "CONT", &["tenantdb-member"]).await?;
    let first_new = eventually(
        "the new primary acknowledges",
        Duration::from_secs(60),
        || async { Ok(writers.first_after(epoch)) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acks = writers.finish().await;
    let last_old = acks.iter().filter(|a| a.2 <= epoch).map(|a| a.1).max();
    let fenced_after = last_old.map_or(0.0, |t| t.saturating_duration_since(cut).as_secs_f64());
    println!(
        "agent of {primary} frozen: its engine's last acknowledgement {fenced_after:.2} s after the cut (limit 3 s + the signal's own delay), the new primary's first {:.2} s after it",
        first_new.duration_since(cut).as_secs_f64()
    );
    let on_new = present(&c, n, &token).await?;
    let lost: Vec<u64> = acks
        .iter()
        .map(|a| a.0)
        .filter(|i| !on_new.contains(i))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The signal's container takes a moment to run, so the cut is measured from before it:
    // the engine must have stopped within the 3 s it may acknowledge after a renewal
    // plus that delay (at most a few seconds), far less than the Lease's 5.
    assert!(
        fenced_after < 8.0,
        "the old primary acknowledged {fenced_after:.1} s after losing its Lease"
    );
    healthy(&c, n, &token).await?;
    ns.delete(Duration::from_secs(120)).await
}
