//! One pluggable database: its file, its state, and the sessions (pooled SQLite
//! connections) that run statements on it. An idle database holds no connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rusqlite::{Connection, InterruptHandle, OpenFlags};

use crate::catalog::{OpenMode, PdbRecord};
use crate::error::{EngineError, Result};
use crate::lockdown::{self, LockdownRules};

mod budget;
mod locks;
mod session;

use budget::StatementBudget;
pub use locks::{retry_lock, wait_for_locks, BUSY_TIMEOUT_MS};

/// Why the authorizer refused the last statement, kept until the session explains it.
/// The flag spares the lock on every checkout when nothing was refused, the usual case.
#[derive(Debug, Default)]
struct Denial {
    flagged: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Denial {
    fn set(&self, reason: String) {
        if let Ok(mut w) = self.reason.lock() {
            *w = Some(reason);
        }
        self.flagged.store(true, Ordering::Release);
    }

    fn take(&self) -> Option<String> {
        if !self.flagged.swap(false, Ordering::Acquire) {
            return None;
        }
        self.reason.lock().ok().and_then(|mut w| w.take())
    }
}

/// Idle connections kept per database for the next session.
pub const MAX_IDLE: usize = 4;

/// Who runs a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator or an administrator: not subject to lockdown, may use Restricted databases.
    Admin,
    /// A tenant application with a data token.
    Tenant,
}

/// A connection with the knobs its session changes per statement.
struct PooledConn {
    conn: Connection,
    /// Lockdown rules version the connection's statement cache was prepared under.
    rules_version: u64,
    /// Admin sessions bypass the authorizer.
    admin: Arc<AtomicBool>,
    /// The running statement's time and CPU budgets.
    budget: Arc<StatementBudget>,
    /// Why the authorizer last refused something (SQLite's own message only says "not authorized").
    denied: Arc<Denial>,
    /// Whether `query_only` is on.
    read_only: bool,
    /// `max_page_count` in force (`u64::MAX` when never limited).
    max_pages: u64,
    /// The database's page size.
    page_size: u64,
    /// Key of this connection's interrupt handle in `Pdb::interrupts`.
    id: u64,
    /// `busy_timeout` in force, in milliseconds.
    busy_ms: u32,
}

/// A pluggable database.
pub struct Pdb {
    /// Its name.
    pub name: String,
    /// What its requests cost since the last flush to the catalog.
    pub meter: crate::metering::Meter,
    /// Its SQLite file.
    pub path: PathBuf,
    /// Its catalog record as last written.
    pub record: Mutex<PdbRecord>,
    rules: Arc<ArcSwap<LockdownRules>>,
    rules_version: AtomicU64,
    idle: Mutex<Vec<PooledConn>>,
    active: AtomicUsize,
    /// Bumped on every close: connections of an older generation are not reused.
    generation: AtomicU64,
    closing: AtomicBool,
    interrupts: Mutex<Vec<(u64, InterruptHandle)>>,
    next_conn_id: AtomicU64,
    /// Origin of `deadline` values. `quanta` reads the invariant TSC where there is one:
    /// a few ns against 80–100 ns for the OS monotonic clock on this VM, and a deadline
    /// is set and checked on every statement.
    epoch: quanta::Instant,
    /// SQLite page cache of each connection, in KiB.
    cache_kib: u32,
    /// Hashes of SELECTs that outran the inline cap (at most `MAX_HEAVY`, then forgotten).
    heavy: Mutex<std::collections::HashSet<u64>>,
    /// Signalled when a session ends a transaction: a writer waiting for the lock without
    /// holding a thread tries again.
    pub write_released: Arc<tokio::sync::Notify>,
    /// Where the `wal_hook` of each connection records commits, when backup is on.
    capture: Option<Arc<crate::backup::capture::Capture>>,
    /// Where the `wal_hook` of each connection sends commits, when this is a primary.
    replication: Option<(
        Arc<crate::replication::Source>,
        Arc<crate::replication::tap::Tap>,
    )>,
}

/// Heavy statements remembered per database before the set starts again.
const MAX_HEAVY: usize = 256;

fn sql_key(sql: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(sql)
}

/// A session: one pooled connection, returned to the pool when dropped. It holds its
/// database, so it may outlive the request that started it (a Hrana stream).
pub struct Session {
    pdb: Arc<Pdb>,
    conn: Option<PooledConn>,
    generation: u64,
    caller: Caller,
}

impl Pdb {
    /// A handle for a database file and its record.
    pub fn new(path: PathBuf, record: PdbRecord, rules: LockdownRules) -> Self {
        Pdb {
            name: record.name.clone(),
            meter: Default::default(),
            path,
            record: Mutex::new(record),
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            rules_version: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            interrupts: Mutex::new(Vec::new()),
            next_conn_id: AtomicU64::new(0),
            epoch: quanta::Instant::now(),
            cache_kib: 2048,
            heavy: Mutex::new(std::collections::HashSet::new()),
            write_released: Arc::new(tokio::sync::Notify::new()),
            capture: None,
            replication: None,
        }
    }

    /// The same database with its commits streamed to standbys (and acknowledged as the
    /// durability says).
    pub fn with_replication(
        mut self,
        source: Arc<crate::replication::Source>,
        tap: Arc<crate::replication::tap::Tap>,
    ) -> Self {
        self.replication = Some((source, tap));
        self
    }

    /// The same database with its commits captured for backup.
    pub fn with_capture(mut self, capture: Arc<crate::backup::capture::Capture>) -> Self {
        self.capture = Some(capture);
        self
    }

    /// The record as it is now.
    pub fn record(&self) -> PdbRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replace the lockdown rules; open sessions apply them at their next statement.
    pub fn set_rules(&self, rules: LockdownRules) {
        self.rules.store(Arc::new(rules));
        self.rules_version.fetch_add(1, Ordering::SeqCst);
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<LockdownRules> {
        self.rules.load_full()
    }

    /// The same database with `kib` of page cache per connection (the memory budget).
    pub fn with_cache_kib(mut self, kib: u32) -> Self {
        self.cache_kib = kib.max(64);
        self
    }

    /// Connections open now: idle in the pool plus those serving sessions.
    pub fn open_connections(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len()) + self.active_sessions()
    }

    /// Whether `sql` once outran the inline cap here.
    pub fn is_heavy(&self, sql: &str) -> bool {
        self.heavy
            .lock()
            .is_ok_and(|h| !h.is_empty() && h.contains(&sql_key(sql)))
    }

    /// Remember that `sql` outran the inline cap.
    pub fn mark_heavy(&self, sql: &str) {
        if let Ok(mut h) = self.heavy.lock() {
            if h.len() >= MAX_HEAVY {
                h.clear();
            }
            h.insert(sql_key(sql));
        }
    }

    /// The open mode and the database's own storage quota, in one read of its record.
    pub fn mode_and_quota(&self) -> (Option<OpenMode>, Option<u64>) {
        let read = |r: &PdbRecord| (r.open_mode, r.storage_quota_bytes);
        self.record
            .lock()
            .map(|r| read(&r))
            .unwrap_or_else(|e| read(&e.into_inner()))
    }

    /// The open mode, without copying the whole record.
    pub fn open_mode(&self) -> Option<OpenMode> {
        self.record
            .lock()
            .map(|r| r.open_mode)
            .unwrap_or_else(|e| e.into_inner().open_mode)
    }

    /// In-flight sessions.
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn open_conn(&self) -> Result<PooledConn> {
        let mut conn = crate::files::open_db(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-{};",
            self.cache_kib
        ))?;
        wait_for_locks(&mut conn, BUSY_TIMEOUT_MS)?;
        conn.set_prepared_statement_cache_capacity(64);
        if self.capture.is_some() || self.replication.is_some() {
            let (capture, replication) = (self.capture.clone(), self.replication.clone());
            conn.wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
                    if let Some(c) = &capture {
                        c.committed(frames.max(0) as u32);
                    }
                    match &replication {
                        Some((source, tap)) => {
                            crate::replication::hook_result(source.committed(tap))
                        }
                        None => Ok(()),
                    }
                },
            ))?;
        }
        // No statement of a tenant or of the engine's own may write pages directly
        // (`sqlite_dbpage`, `writable_schema`): only a standby's applier does.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        let admin = Arc::new(AtomicBool::new(true));
        let budget = Arc::new(StatementBudget::default());
        let denied = Arc::new(Denial::default());
        let (a, rules, why) = (admin.clone(), self.rules.clone(), denied.clone());
        conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
            if a.load(Ordering::Relaxed) {
                return rusqlite::hooks::Authorization::Allow;
            }
            match lockdown::check(&rules.load(), &ctx) {
                Some(r) => {
                    why.set(r);
                    rusqlite::hooks::Authorization::Deny
                }
                None => rusqlite::hooks::Authorization::Allow,
            }
        }))?;
        let (b, epoch) = (budget.clone(), self.epoch);
        conn.progress_handler(
            1000,
            Some(move || {
                b.exceeded(quanta::Instant::now().duration_since(epoch).as_nanos() as u64)
            }),
        )?;
        // Registered once per connection (idle ones too: interrupting those is harmless), so a
        // session costs no registry update.
        let id = self.next_conn_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut i) = self.interrupts.lock() {
            i.push((id, conn.get_interrupt_handle()));
        }
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(PooledConn {
            conn,
            max_pages: u64::MAX,
            page_size: page_size.max(512) as u64,
            rules_version: 0,
            admin,
            budget,
            denied,
            read_only: false,
            id,
            busy_ms: BUSY_TIMEOUT_MS,
        })
    }

    /// Start a session for `caller` under `rules` (read once by the caller), checking the open mode.
    pub fn session_with(
        self: &Arc<Self>,
        caller: Caller,
        rules: &LockdownRules,
    ) -> Result<Session> {
        self.session_in(self.open_mode(), caller, rules)
    }

    /// Whether `caller` may start a session when the open mode is `mode`.
    fn admits(&self, mode: Option<OpenMode>, caller: Caller) -> Result<()> {
        match (mode, caller) {
            (None, _) => Err(EngineError::Conflict(format!(
                "database {} is mounted, not open",
                self.name
            ))),
            (Some(OpenMode::Restricted), Caller::Tenant) => Err(EngineError::Forbidden(format!(
                "database {} is open Restricted: admin sessions only",
                self.name
            ))),
            _ if self.closing.load(Ordering::SeqCst) => Err(EngineError::Conflict(format!(
                "database {} is closing",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    /// A session for `caller` when the database's open mode (as just read) is `mode`.
    pub fn session_in(
        self: &Arc<Self>,
        mode: Option<OpenMode>,
        caller: Caller,
        rules: &LockdownRules,
    ) -> Result<Session> {
        self.admits(mode, caller)?;
        self.active.fetch_add(1, Ordering::SeqCst);
        let generation = self.generation.load(Ordering::SeqCst);
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let pooled = match pooled {
            Some(p) => Ok(p),
            None => self.open_conn(),
        };
        let pooled = match pooled
            .and_then(|mut p| self.fit(&mut p, mode, caller, rules, false).map(|()| p))
        {
            Ok(p) => p,
            Err(e) => {
                self.active.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        pooled.denied.take();
        Ok(Session {
            pdb: self.clone(),
            conn: Some(pooled),
            generation,
            caller,
        })
    }

    /// Make `pooled` fit `caller` under `rules` and open mode `mode`.
    fn fit(
        &self,
        pooled: &mut PooledConn,
        mode: Option<OpenMode>,
        caller: Caller,
        rules: &LockdownRules,
        read_only_txn: bool,
    ) -> Result<()> {
        // The authorizer runs when a statement is prepared, so cached statements must not
        // outlive the rules or the caller they were checked for: a profile change reaches
        // this session now, and a statement an admin session prepared is never reused
        // unchecked by a tenant session.
        let version = self.rules_version.load(Ordering::SeqCst);
        let admin = caller == Caller::Admin;
        if pooled.rules_version != version || pooled.admin.load(Ordering::Relaxed) != admin {
            pooled.conn.flush_prepared_statement_cache();
            pooled.rules_version = version;
        }
        let read_only = read_only_txn
            || mode == Some(OpenMode::ReadOnly)
            || (caller == Caller::Tenant && rules.read_only);
        if pooled.read_only != read_only {
            pooled.admin.store(true, Ordering::Relaxed);
            pooled.conn.pragma_update(None, "query_only", read_only)?;
            pooled.read_only = read_only;
        }
        pooled.admin.store(admin, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the database is closing (its sessions are being ended).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Close every session: `wait` for running ones up to `deadline` first (normal), or
    /// interrupt them at once (immediate, abort). Idle connections are closed either way.
    pub fn close_sessions(&self, wait: bool, deadline: Duration) -> Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        let start = Instant::now();
        if wait {
            while self.active_sessions() > 0 && start.elapsed() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.active_sessions() > 0 {
                self.closing.store(false, Ordering::SeqCst);
                return Err(EngineError::Conflict(format!(
                    "database {} still has {} active sessions after {deadline:?}; close with mode immediate to interrupt them",
                    self.name,
                    self.active_sessions()
                )));
            }
        } else {
            if let Ok(i) = self.interrupts.lock() {
                i.iter().for_each(|(_, h)| h.interrupt());
            }
            while self.active_sessions() > 0 && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        // No session runs and none can start while closing: every handle is stale now.
        if let Ok(mut i) = self.interrupts.lock() {
            i.clear();
        }
        self.closing.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn deadline_after(&self, start: quanta::Instant, budget: Duration) -> u64 {
        (start.duration_since(self.epoch) + budget).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_cpu(d: Duration) {
        let start = crate::metering::thread_cpu_time();
        let mut x = 0u64;
        while crate::metering::thread_cpu_time() - start < d {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn the_cpu_budget_counts_cpu_not_waiting() {
        let epoch = quanta::Instant::now();
        let now = || quanta::Instant::now().duration_since(epoch).as_nanos() as u64;
        let b = StatementBudget::default();
        b.arm(0, Some(Duration::from_millis(20)));
        assert!(
            !b.exceeded(now()),
            "the first callback only reads the clock"
        );
        // 60 ms of waiting (a lock, IO, a throttled CPU) uses no CPU budget.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!b.exceeded(now()), "waiting is not CPU");
        assert!(!b.over_cpu.load(Ordering::Relaxed));
        // 25 ms of work does.
        spin_cpu(Duration::from_millis(25));
        assert!(b.exceeded(now()), "25 ms of CPU against a 20 ms budget");
        assert!(b.over_cpu.load(Ordering::Relaxed));
        // Re-armed for the next statement, the budget starts again.
        b.arm(0, Some(Duration::from_millis(20)));
        assert!(!b.exceeded(now()) && !b.exceeded(now()));
        assert!(!b.over_cpu.load(Ordering::Relaxed));
    }

    #[test]
    fn the_deadline_stops_a_statement_that_waits() {
        let b = StatementBudget::default();
        b.arm(1_000, None);
        assert!(!b.exceeded(999));
        assert!(b.exceeded(1_001));
        assert!(!b.over_cpu.load(Ordering::Relaxed), "time, not CPU");
    }
}
