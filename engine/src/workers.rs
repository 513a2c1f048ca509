//! The engine's worker pool for blocking statements, sized from the CPU the cgroup
//! allows, with a queue ordered by priority: the operator's admin work first, then a
//! tenant's writes and batches, then statements known to be heavy. Single SELECTs that fit
//! the inline cap never queue here (they run on the async workers at normal priority);
//! the pool runs tenant work on threads of its own at [`TENANT_NICE`], so a database
//! writing or scanning flat out cannot take the CPU its neighbours' point reads need.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::oneshot;

/// Who is waiting, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A statement that outran the inline cap before: it waits behind everything else.
    Heavy = 0,
    /// A tenant's write or batch.
    Tenant = 1,
    /// The operator's admin work (lifecycle, checkpoints).
    Admin = 2,
}

/// Workers for a CPU limit of `cpus` (none: the machine's cores): one a core, less one
/// kept for the inline point reads when there are two or more, at least one.
pub fn pool_size(cpus: Option<f64>) -> usize {
    let cores = cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let whole = cores.ceil().max(1.0) as usize;
    if whole >= 2 {
        whole - 1
    } else {
        1
    }
}

#[derive(Debug)]
struct Waiter {
    class: Class,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, o: &Self) -> bool {
        (self.class, self.seq) == (o.class, o.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiter {
    /// Higher class first; within a class, first come first served.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.class.cmp(&o.class).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Debug)]
struct Gate {
    free: usize,
    queue: BinaryHeap<Waiter>,
    seq: u64,
}

type Job = Box<dyn FnOnce() + Send>;

/// The pool: at most `size` blocking statements at once.
pub struct WorkerPool {
    size: usize,
    gate: Mutex<Gate>,
    queued: AtomicU64,
    ran: [AtomicU64; 3],
    /// Jobs for the pool's niced threads (one a slot, so a slot holder finds one idle);
    /// `None` when they could not be started, and tenant work runs as admin work does.
    tenant_jobs: Option<std::sync::mpsc::Sender<Job>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("size", &self.size)
            .field("niced_threads", &self.tenant_jobs.is_some())
            .finish()
    }
}

/// Start `n` threads at [`TENANT_NICE`] that run the jobs sent to them; they end when
/// the sender is dropped.
fn niced_threads(n: usize) -> std::io::Result<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("tenantdb-worker-{i}"))
            .spawn(move || {
                lower_priority(TENANT_NICE);
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking statement fails its own request (its result
                        // sender is dropped), not the thread that ran it.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            })?;
    }
    Ok(tx)
}

/// A worker slot; dropping it hands the slot to the most urgent waiter.
#[derive(Debug)]
pub struct Slot(Arc<WorkerPool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What `/v1/isolation/cpu` reports about the pool.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    /// Workers (blocking statements at once).
    pub workers: usize,
    /// Statements waiting now.
    pub waiting: usize,
    /// Statements that had to wait since the start.
    pub queued: u64,
    /// Statements run, by class.
    pub ran_admin: u64,
    /// Tenant writes and batches run.
    pub ran_tenant: u64,
    /// Known-heavy statements run.
    pub ran_heavy: u64,
}

impl WorkerPool {
    /// A pool of `size` workers (at least one), each a thread at [`TENANT_NICE`].
    pub fn new(size: usize) -> Arc<Self> {
        let size = size.max(1);
        let tenant_jobs = match niced_threads(size) {
            Ok(tx) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no worker threads: tenant work runs at normal priority");
                None
            }
        };
        Arc::new(WorkerPool {
            size,
            gate: Mutex::new(Gate {
                free: size,
                queue: BinaryHeap::new(),
                seq: 0,
            }),
            queued: AtomicU64::new(0),
            ran: Default::default(),
            tenant_jobs,
        })
    }

    /// Run `f` as `class` once a slot is free: the operator's work on the blocking pool
    /// at normal priority, a tenant's on the pool's own threads at [`TENANT_NICE`].
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        class: Class,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let slot = self.acquire(class).await;
        // The slot is free again before the caller hears the result.
        let work = move || {
            let out = f();
            drop(slot);
            out
        };
        let jobs = match (&self.tenant_jobs, class) {
            (Some(jobs), Class::Tenant | Class::Heavy) => jobs,
            _ => {
                return tokio::task::spawn_blocking(work)
                    .await
                    .map_err(std::io::Error::other)
            }
        };
        let (tx, rx) = oneshot::channel();
        jobs.send(Box::new(move || {
            let _ = tx.send(work());
        }))
        .map_err(|_| std::io::Error::other("the worker threads stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the worker thread dropped the statement"))
    }

    /// Run `f` as `class` once a slot is free, on this very thread: the runtime hands
    /// its other tasks to another thread meanwhile (`block_in_place`), so no handoff to a
    /// worker thread and back stands between the request and its answer. For the short
    /// statements of an interactive transaction, whose latency is the client's; they run
    /// at normal priority, still one slot each. On a current-thread runtime, as [`Self::run`].
    pub async fn run_here<T: Send + 'static>(
        self: &Arc<Self>,
        class: Class,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if Handle::current().runtime_flavor() != RuntimeFlavor::MultiThread {
            return self.run(class, f).await;
        }
        let slot = self.acquire(class).await;
        let out = tokio::task::block_in_place(f);
        drop(slot);
        Ok(out)
    }

    /// Wait for a worker slot as `class`.
    pub async fn acquire(self: &Arc<Self>, class: Class) -> Slot {
        self.ran[class as usize].fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            if g.free > 0 && g.queue.is_empty() {
                g.free -= 1;
                return Slot(self.clone());
            }
            let (tx, rx) = oneshot::channel();
            g.seq += 1;
            let seq = g.seq;
            g.queue.push(Waiter {
                class,
                seq,
                wake: tx,
            });
            rx
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        // A dropped sender means the pool handed this slot on while the waiter was gone;
        // it cannot happen while this future is alive, and the slot is ours either way.
        let _ = rx.await;
        Slot(self.clone())
    }

    fn release(&self) {
        let mut g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(w) = g.queue.pop() {
            // A waiter whose request was dropped is skipped; the slot goes to the next.
            if w.wake.send(()).is_ok() {
                return;
            }
        }
        g.free += 1;
    }

    /// The pool's figures now.
    pub fn report(&self) -> PoolReport {
        let waiting = self.gate.lock().map(|g| g.queue.len()).unwrap_or_default();
        PoolReport {
            workers: self.size,
            waiting,
            queued: self.queued.load(Ordering::Relaxed),
            ran_admin: self.ran[Class::Admin as usize].load(Ordering::Relaxed),
            ran_tenant: self.ran[Class::Tenant as usize].load(Ordering::Relaxed),
            ran_heavy: self.ran[Class::Heavy as usize].load(Ordering::Relaxed),
        }
    }
}

/// The nice value a tenant's blocking work (writes, batches, heavy SELECTs) runs at: CFS
/// gives such a thread about a tenth of the weight of the async workers that serve point
/// reads, so a point read preempts it at once instead of waiting out its time slice. The
/// pool's threads are started at it and never raised again (an unprivileged process
/// cannot lower a nice value).
pub const TENANT_NICE: i32 = 10;

/// Set the calling thread's nice value (best effort: a failure leaves it as it was).
fn lower_priority(nice: i32) {
    // SAFETY: setpriority on this thread's own id changes only its scheduling weight.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a heavy statement's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_and_name() -> (i32, Option<String>) {
        // SAFETY: getpriority only reads this thread's nice value.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        (nice, std::thread::current().name().map(String::from))
    }

    #[tokio::test]
    async fn tenant_work_runs_niced_on_the_pool_s_threads_admin_work_does_not() {
        let pool = WorkerPool::new(2);
        for class in [Class::Tenant, Class::Heavy] {
            let (nice, name) = pool.run(class, nice_and_name).await.unwrap();
            assert_eq!(nice, TENANT_NICE, "{class:?}");
            assert!(name.unwrap().starts_with("tenantdb-worker-"), "{class:?}");
        }
        let (nice, name) = pool.run(Class::Admin, nice_and_name).await.unwrap();
        assert_eq!(nice, 0, "admin work keeps normal priority");
        assert!(!name.unwrap_or_default().starts_with("tenantdb-worker-"));
        // Every slot came back.
        assert_eq!(pool.gate.lock().unwrap().free, 2);
        // A panic fails its own statement and leaves the threads serving.
        for _ in 0..3 {
            assert!(pool.run(Class::Tenant, || panic!("boom")).await.is_err());
        }
        assert_eq!(pool.run(Class::Tenant, || 7).await.unwrap(), 7);
        assert_eq!(pool.gate.lock().unwrap().free, 2);
    }

    #[test]
    fn the_pool_follows_the_cgroup_cpu_limit() {
        assert_eq!(pool_size(Some(0.1)), 1);
        assert_eq!(pool_size(Some(1.0)), 1);
        assert_eq!(pool_size(Some(2.0)), 1, "one core kept for inline reads");
        assert_eq!(pool_size(Some(4.0)), 3);
        assert_eq!(pool_size(Some(2.5)), 2);
    }

    #[tokio::test]
    async fn waiters_are_served_admin_first_then_tenant_then_heavy() {
        let pool = WorkerPool::new(1);
        let held = pool.acquire(Class::Tenant).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for class in [Class::Heavy, Class::Tenant, Class::Heavy, Class::Admin] {
            let (pool, order) = (pool.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = pool.acquire(class).await;
                order.lock().unwrap().push(class);
            }));
            // Queue them in this order.
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(pool.report().waiting, 4);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [Class::Admin, Class::Tenant, Class::Heavy, Class::Heavy]
        );
        let r = pool.report();
        assert_eq!((r.queued, r.waiting), (4, 0));
    }
}
