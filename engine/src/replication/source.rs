//! The primary's side: every replicated file's [`Tap`], the fence that stops a primary
//! whose Lease may have passed to another member from acknowledging anything, and what a
//! commit waits for under each durability.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tenantdb_engine_api::replication::{Durability, FilePosition, ReplicationConfig};

use super::tap::Tap;

/// Why a commit was not acknowledged. The transaction is committed on this member; it
/// is not known to be anywhere else.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotAcknowledged {
    /// The member's Lease was not renewed in time (or it was deposed).
    #[error("this member is not the primary any more (its Lease was not renewed in time): the commit is not acknowledged")]
    Fenced,
    /// No standby acknowledged in time.
    #[error("no standby acknowledged the commit within {0:?}: it is committed on the primary and not known to be replicated")]
    NotReplicated(Duration),
    /// The tap could not read what was committed.
    #[error("{0}")]
    Capture(String),
}

/// The primary's replication state.
#[derive(Debug)]
pub struct Source {
    /// Durability in force.
    pub durability: Durability,
    ack_timeout: Duration,
    taps: RwLock<BTreeMap<String, Arc<Tap>>>,
    /// Files dropped since start, so connected standbys drop them too.
    dropped: Mutex<Vec<String>>,
    /// Signalled when a tap seals, appears or goes.
    pub changed: Arc<tokio::sync::Notify>,
    /// Standbys connected now.
    pub standbys: AtomicU32,
    /// Lease epoch this member was promoted in.
    pub epoch: AtomicU64,
    /// Writes may be acknowledged until then.
    fence: Mutex<Option<Instant>>,
    /// Commits acknowledged with no standby connected (`preferred`).
    pub unreplicated: AtomicU64,
}

impl Source {
    /// Replication as `cfg` says, promoted in `epoch`, writable for `valid_for`.
    pub fn new(cfg: &ReplicationConfig, epoch: u64, valid_for: Duration) -> Arc<Self> {
        Arc::new(Source {
            durability: cfg.durability,
            ack_timeout: Duration::from_millis(
                cfg.ack_timeout_millis
                    .unwrap_or(tenantdb_engine_api::replication::DEFAULT_ACK_TIMEOUT_MILLIS),
            ),
            taps: RwLock::new(BTreeMap::new()),
            dropped: Mutex::new(Vec::new()),
            changed: Arc::new(tokio::sync::Notify::new()),
            standbys: AtomicU32::new(0),
            epoch: AtomicU64::new(epoch),
            fence: Mutex::new(Some(Instant::now() + valid_for)),
            unreplicated: AtomicU64::new(0),
        })
    }

    /// Renew the fence: writes may be acknowledged for `valid_for` from now.
    pub fn renew(&self, valid_for: Duration) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + valid_for);
    }

    /// Stop acknowledging at once (stepping down).
    pub fn fence_now(&self) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether writes may be acknowledged now.
    pub fn writable(&self) -> bool {
        self.fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Start replicating `file` (relative to the data directory) at `path`, as a new
    /// incarnation: connected standbys take a base of it.
    pub fn tap(&self, file: &str, path: &Path, open: super::tap::Opener) -> Arc<Tap> {
        let tap = Arc::new(Tap::new(file, path, open, self.changed.clone()));
        if let Ok(mut taps) = self.taps.write() {
            taps.insert(file.to_string(), tap.clone());
        }
        if let Ok(mut d) = self.dropped.lock() {
            d.retain(|f| f != file);
        }
        self.changed.notify_waiters();
        tap
    }

    /// Stop replicating `file`: standbys remove their copy.
    pub fn drop_file(&self, file: &str) {
        if let Ok(mut taps) = self.taps.write() {
            taps.remove(file);
        }
        if let Ok(mut d) = self.dropped.lock() {
            d.push(file.to_string());
        }
        self.changed.notify_waiters();
    }

    /// Every tap, by file.
    pub fn taps(&self) -> Vec<Arc<Tap>> {
        self.taps
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Files dropped while this member was primary.
    pub fn dropped(&self) -> Vec<String> {
        self.dropped.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// What the `wal_hook` of a connection to `tap`'s file runs after each commit:
    /// capture it, then wait for what the durability asks. An error reaches the client
    /// of that commit (which is committed here, and not acknowledged).
    pub fn committed(self: &Arc<Self>, tap: &Arc<Tap>) -> Result<(), NotAcknowledged> {
        self.committed_waiting(tap, true)
    }

    /// [`Self::committed`]; with `wait` false the commit is streamed and never waits for
    /// a standby (the catalog: the engine's own bookkeeping, and lifecycle changes the
    /// operator drives again until they are in place).
    pub fn committed_waiting(
        self: &Arc<Self>,
        tap: &Arc<Tap>,
        wait: bool,
    ) -> Result<(), NotAcknowledged> {
        if !self.writable() {
            return Err(NotAcknowledged::Fenced);
        }
        let txid = tap
            .capture()
            .map_err(|e| NotAcknowledged::Capture(e.to_string()))?;
        let wait = wait
            && match self.durability {
                Durability::Async => false,
                Durability::Required => true,
                Durability::Preferred => {
                    let any = self.standbys.load(Ordering::SeqCst) > 0;
                    if !any {
                        self.unreplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    any
                }
            };
        if wait && super::defer(self, tap, txid) {
            return Ok(());
        }
        if wait && !tap.wait_acked(txid, self.ack_timeout) {
            return Err(NotAcknowledged::NotReplicated(self.ack_timeout));
        }
        if !self.writable() {
            return Err(NotAcknowledged::Fenced);
        }
        Ok(())
    }

    /// How long a commit waits for a standby.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }

    /// Position of every file.
    pub fn positions(&self) -> BTreeMap<String, FilePosition> {
        self.taps()
            .into_iter()
            .map(|t| {
                let (txid, checksum) = t.position();
                (
                    t.file.clone(),
                    FilePosition {
                        incarnation: t.incarnation(),
                        txid,
                        checksum,
                    },
                )
            })
            .collect()
    }

    /// Transactions and WAL bytes not yet acknowledged by a standby, over every file.
    pub fn lag(&self) -> (u64, u64) {
        self.taps().iter().fold((0, 0), |(t, b), tap| {
            let (lt, lb) = tap.lag_after(tap.acked());
            (t + lt, b + lb)
        })
    }

    /// Checkpoint every file whose WAL passed `frames` (the engine's own checkpoints
    /// when backup does not make them).
    pub fn checkpoint_over(&self, frames: u32, skip: &dyn Fn(&str) -> bool) {
        for tap in self.taps() {
            if tap.wal_frames() >= frames && !skip(&tap.file) {
                if let Err(e) = tap.checkpoint() {
                    tracing::warn!(file = %tap.file, error = %e, "replication checkpoint");
                }
            }
        }
    }
}
