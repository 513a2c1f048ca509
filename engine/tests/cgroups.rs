//! Standalone as root: each tenant's engine runs in a child cgroup of its own whose files
//! hold the tier's CPU, memory and IO values. Runs the real binary, two tenants at once.
//! Where the process is not root or the cgroup filesystem is read-only (most containers),
//! the test says so and checks nothing: the operator's pods get their limits from
//! Kubernetes instead (e2e checks those).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tenantdb_engine::cgroup::{block_device, CFS_PERIOD_MICROS};
use tenantdb_engine::config::Priority;

/// Whether this process may make cgroups (root, and a writable hierarchy).
fn can_make_cgroups() -> bool {
    let probe = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(format!("tenantdb-probe-{}", std::process::id()))
    } else {
        Path::new("/sys/fs/cgroup/cpu").join(format!("tenantdb-probe-{}", std::process::id()))
    };
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

struct Tenant {
    name: &'static str,
    priority: Priority,
    cpu_millis: u64,
    memory_bytes: u64,
    iops: u32,
}

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `t`'s engine under `parent`; `on_cpu0` pins it (every thread) to CPU 0.
async fn start(dir: &Path, parent: &str, t: &Tenant, on_cpu0: bool) -> Running {
    let config = dir.join("engine.yaml");
    std::fs::write(
        &config,
        format!(
            "tenant: {}\npriority: {}\nlimits:\n  cpuMillis: {}\n  memoryBytes: {}\n  iops: {}\n",
            t.name,
            serde_json::to_value(t.priority).unwrap().as_str().unwrap(),
            t.cpu_millis,
            t.memory_bytes,
            t.iops
        ),
    )
    .unwrap();
    let port = common::free_port();
    let data = dir.join("data");
    let engine = env!("CARGO_BIN_EXE_tenantdb-engine");
    let mut command = if on_cpu0 {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", engine]);
        c
    } else {
        Command::new(engine)
    };
    let child = command
        .args(["serve", "--data-dir", &data.display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--config", &config.display().to_string()])
        .args(["--cgroup-parent", parent])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if reqwest::get(format!("{}/healthz", running.base))
            .await
            .is_ok()
        {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("engine for {} did not start", t.name);
}

/// A data directory for each tenant.
fn data_dirs(tenants: &[Tenant]) -> Vec<tempfile::TempDir> {
    tenants
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect()
}

async fn get_json(engine: &Running, path: &str) -> serde_json::Value {
    reqwest::get(format!("{}{path}", engine.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn two_standalone_tenants_run_in_their_own_cgroups_with_their_tier_values() {
    if !can_make_cgroups() {
        eprintln!("skipped: not root, or the cgroup filesystem is read-only here");
        return;
    }
    let parent = format!("tenantdb-test-{}", std::process::id());
    let tenants = [
        Tenant {
            name: "bronze-co",
            priority: Priority::BestEffort,
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
            iops: 1000,
        },
        Tenant {
            name: "silver-co",
            priority: Priority::Critical,
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            iops: 3000,
        },
    ];
    let dirs = data_dirs(&tenants);
    // Declared before the engines, so it drops after them even when an assertion fails.
    let _cleanup = Cleanup(parent.clone());
    let mut made = Vec::new();
    for (t, dir) in tenants.iter().zip(&dirs) {
        let engine = start(dir.path(), &parent, t, false).await;
        let cpu = get_json(&engine, "/v1/isolation/cpu").await;
        let cg: tenantdb_engine::cgroup::TenantCgroup =
            serde_json::from_value(cpu["tenantCgroup"].clone())
                .unwrap_or_else(|e| panic!("{}: no tenant cgroup reported ({e}): {cpu}", t.name));
        for dir in &cg.paths {
            assert!(dir.ends_with(&format!("{parent}/{}", t.name)), "{dir}");
        }
        // The files hold the tier's values, read back from the kernel.
        let v2 = cg.paths.len() == 1 && Path::new(&cg.paths[0]).join("cpu.max").exists();
        let quota = t.cpu_millis * CFS_PERIOD_MICROS / 1000;
        if v2 {
            let d = &cg.paths[0];
            assert_eq!(
                read(&format!("{d}/cpu.max")),
                format!("{quota} {CFS_PERIOD_MICROS}")
            );
            assert_eq!(read(&format!("{d}/memory.max")), t.memory_bytes.to_string());
            assert_eq!(
                read(&format!("{d}/cpu.weight")),
                t.priority.cpu_weight().to_string()
            );
        } else {
            let dir_of = |c: &str| {
                cg.paths
                    .iter()
                    .find(|p| p.contains(&format!("/{c}/")))
                    .cloned()
                    .unwrap_or_else(|| panic!("no {c} cgroup in {:?}", cg.paths))
            };
            let cpu_dir = dir_of("cpu");
            assert_eq!(
                read(&format!("{cpu_dir}/cpu.cfs_quota_us")),
                quota.to_string()
            );
            assert_eq!(
                read(&format!("{cpu_dir}/cpu.cfs_period_us")),
                CFS_PERIOD_MICROS.to_string()
            );
            assert_eq!(
                read(&format!("{cpu_dir}/cpu.shares")),
                t.priority.cpu_shares().to_string()
            );
            let mem_dir = dir_of("memory");
            assert_eq!(
                read(&format!("{mem_dir}/memory.limit_in_bytes")),
                t.memory_bytes.to_string()
            );
            if let Some((maj, min)) = block_device(dir.path()) {
                let io_dir = dir_of("blkio");
                let want = format!("{maj}:{min} {}", t.iops);
                assert_eq!(
                    read(&format!("{io_dir}/blkio.throttle.write_iops_device")),
                    want
                );
                assert_eq!(
                    read(&format!("{io_dir}/blkio.throttle.read_iops_device")),
                    want
                );
            }
        }
        // The engine process itself runs in it.
        let pid = engine.child.id();
        let own = read(&format!("/proc/{pid}/cgroup"));
        assert!(
            own.contains(&format!("/{parent}/{}", t.name)),
            "{} runs outside its cgroup: {own}",
            t.name
        );
        // The engine reads its limits back from the cgroup it now runs in.
        let mem = get_json(&engine, "/v1/isolation/memory").await;
        assert_eq!(mem["limit"]["limitBytes"], t.memory_bytes, "{mem}");
        made.push((engine, cg));
    }
    // Stop the engines first: a cgroup with a process in it cannot be removed.
    drop(made);
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = read(&format!("/proc/{pid}/stat"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Keep `engine` busy with CPU-bound statements on `clients` connections until `until`.
async fn burn(engine: &Running, clients: usize, until: std::time::Instant) {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/databases/work/query", engine.base);
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
               SELECT sum(x) FROM c";
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                while std::time::Instant::now() < until {
                    let r = http
                        .post(&url)
                        .json(&serde_json::json!({ "sql": sql }))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn priorities_split_a_contended_cpu_by_their_weights() {
    if !can_make_cgroups() {
        eprintln!("skipped: not root, or the cgroup filesystem is read-only here");
        return;
    }
    let parent = format!("tenantdb-prio-{}", std::process::id());
    let tenants = [
        Tenant {
            name: "critical-co",
            priority: Priority::Critical,
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            iops: 10_000,
        },
        Tenant {
            name: "spare-co",
            priority: Priority::BestEffort,
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            iops: 10_000,
        },
    ];
    let dirs = data_dirs(&tenants);
    let _cleanup = Cleanup(parent.clone());
    let mut engines = Vec::new();
    for (t, dir) in tenants.iter().zip(&dirs) {
        let e = start(dir.path(), &parent, t, true).await;
        let r = reqwest::Client::new()
            .post(format!("{}/v1/databases", e.base))
            .json(&serde_json::json!({"name": "work"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        engines.push(e);
    }
    // Both engines run on CPU 0 only, so they contend for it: the kernel's CFS weighs
    // sibling cgroups only where they share a run queue.
    let before: Vec<u64> = engines.iter().map(|e| cpu_ticks(e.child.id())).collect();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    futures::future::join(burn(&engines[0], 2, until), burn(&engines[1], 2, until)).await;
    let used: Vec<u64> = engines
        .iter()
        .zip(&before)
        .map(|(e, b)| cpu_ticks(e.child.id()) - b)
        .collect();
    eprintln!(
        "CPU ticks over 3 s on one shared CPU: critical {}, bestEffort {} (weights {}:{})",
        used[0],
        used[1],
        Priority::Critical.cpu_shares(),
        Priority::BestEffort.cpu_shares()
    );
    // The weights are 40:1; anything near an even split means they are not applied.
    assert!(
        used[0] > 4 * used[1].max(1),
        "critical got {} ticks, bestEffort {}",
        used[0],
        used[1]
    );
    drop(engines);
}

/// Removes the test's cgroups (children, then the parent) in every hierarchy, even when
/// an assertion failed; the engines are stopped by then.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        for hierarchy in ["", "cpu", "memory", "blkio"] {
            let parent = Path::new("/sys/fs/cgroup").join(hierarchy).join(&self.0);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}
