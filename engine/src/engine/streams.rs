//! Streams: sessions kept across requests (Hrana's streams), each on a connection of
//! its own, so a transaction can span requests. A stream holds one of the tier's
//! connection slots for as long as it is open. One idle for longer than the idle timeout
//! is ended and its open transaction rolled back, so a client that vanished cannot hold
//! the write lock; closing or dropping its database ends it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::isolation::SessionSlot;
use crate::pdb::{Caller, Session};

/// How a stream is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Hrana over HTTP: by a baton; expires when idle.
    Http,
    /// Hrana over WebSocket: by the connection; expires when idle inside a transaction
    /// (the connection itself tells when the client is gone).
    WebSocket,
}

/// Why a stream is no longer usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it.
    Closed,
    /// It was idle for longer than the idle timeout.
    Expired,
    /// Its database was closed, dropped or unplugged.
    DatabaseClosed,
}

impl Ended {
    /// The error a request on such a stream gets.
    pub fn error(self, database: &str) -> EngineError {
        match self {
            Ended::Closed => EngineError::Conflict("the stream was closed".into()),
            Ended::Expired => EngineError::Conflict(
                "the stream expired after being idle; its open transaction was rolled back".into(),
            ),
            Ended::DatabaseClosed => EngineError::Conflict(format!(
                "the stream ended because database {database} was closed"
            )),
        }
    }
}

/// What a live stream holds.
pub struct StreamState {
    /// The session, on the stream's own connection.
    pub session: Session,
    /// SQL texts the client stored on the stream (`store_sql`), by id.
    pub sqls: HashMap<i32, Arc<str>>,
    /// The open transaction was begun read-only (`BEGIN READONLY`).
    pub read_only_txn: bool,
    _slot: SessionSlot,
}

impl StreamState {
    /// A stream's state on `session`, holding `slot` until it is dropped.
    pub fn new(session: Session, slot: SessionSlot) -> Box<Self> {
        Box::new(StreamState {
            session,
            sqls: HashMap::new(),
            read_only_txn: false,
            _slot: slot,
        })
    }
}

enum Slot {
    Live(Box<StreamState>),
    Ended(Ended),
}

/// One stream.
pub struct Stream {
    /// Its id in the registry.
    pub id: u64,
    /// The database it is on.
    pub database: String,
    /// That database.
    pub pdb: Arc<crate::pdb::Pdb>,
    /// Who opened it: a keyed hash of the token, which every later request must match.
    pub owner: u64,
    /// The caller it runs as.
    pub caller: Caller,
    /// How it is addressed.
    pub kind: StreamKind,
    /// The sequence number of the next baton (HTTP).
    pub seq: AtomicU64,
    slot: Mutex<Slot>,
    /// Whether the stream was inside a transaction when its last request ended.
    in_transaction: std::sync::atomic::AtomicBool,
    /// Requests working on the stream now (one may wait for the write lock between its
    /// attempts, while it holds no lock): such a stream does not expire.
    in_use: AtomicU64,
    /// Milliseconds since the registry's epoch when it was last used.
    last_used: AtomicU64,
    epoch: Instant,
}

/// A stream locked for one request; dropping it marks the stream used, and ends it
/// when its database was closed meanwhile.
pub struct Locked<'a> {
    stream: &'a Stream,
    guard: MutexGuard<'a, Slot>,
}

impl Locked<'_> {
    /// The stream's state.
    pub fn state(&mut self) -> &mut StreamState {
        match &mut *self.guard {
            Slot::Live(s) => s,
            // `Stream::lock` hands out only live streams, and only `end` changes that.
            Slot::Ended(_) => unreachable!("a locked stream is live until it is ended"),
        }
    }

    /// End the stream now (its transaction, if any, rolls back).
    pub fn end(mut self, why: Ended) {
        *self.guard = Slot::Ended(why);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.stream.touch();
        let mut in_transaction = false;
        if let Slot::Live(s) = &*self.guard {
            if !s.session.is_current() {
                *self.guard = Slot::Ended(Ended::DatabaseClosed);
            } else {
                in_transaction = !s.session.conn().is_autocommit();
            }
        }
        self.stream
            .in_transaction
            .store(in_transaction, Ordering::Relaxed);
    }
}

impl Stream {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_used.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let ms = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(ms.saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }

    /// Lock the stream for a request: an error when another request holds it (requests on
    /// a stream wait for the previous response) or when it has ended.
    pub fn lock(&self) -> Result<Locked<'_>> {
        let guard = match self.slot.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                return Err(EngineError::Conflict(
                    "the stream is busy with another request; send a stream's requests one after another".into(),
                ))
            }
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if let Slot::Ended(why) = &*guard {
            return Err(why.error(&self.database));
        }
        self.touch();
        Ok(Locked {
            stream: self,
            guard,
        })
    }

    /// Whether the stream was inside a transaction when its last request ended.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction.load(Ordering::Relaxed)
    }

    /// Mark the stream in use until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.in_use.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// How it ended, if it has.
    pub fn ended(&self) -> Option<Ended> {
        match self.slot.try_lock().as_deref() {
            Ok(Slot::Ended(why)) => Some(*why),
            _ => None,
        }
    }

    /// End it unless a request holds it or `keep` spares it; true when it ended now or
    /// had before.
    fn end_if_idle(&self, why: Ended, keep: Keep) -> bool {
        let Ok(mut guard) = self.slot.try_lock() else {
            return false;
        };
        match &*guard {
            Slot::Ended(_) => true,
            Slot::Live(s) => {
                let autocommit = s.session.conn().is_autocommit();
                let spared = match keep {
                    Keep::None => false,
                    Keep::InTransaction => !autocommit,
                    Keep::Autocommit => autocommit,
                };
                if !spared {
                    *guard = Slot::Ended(why);
                }
                !spared
            }
        }
    }
}

/// A stream held in use (see [`Stream::hold`]).
pub struct Held(Arc<Stream>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which streams an ending spares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// None.
    None,
    /// Those inside a transaction (a normal close lets them finish).
    InTransaction,
    /// Those outside one (an idle WebSocket stream holds no lock).
    Autocommit,
}

/// Every open stream of an engine.
pub struct Streams {
    open: Mutex<HashMap<u64, Arc<Stream>>>,
    /// Streams that expired, and when: a late request is told so, not "unknown".
    expired: Mutex<HashMap<u64, Instant>>,
    next_id: AtomicU64,
    idle_timeout: Duration,
    epoch: Instant,
    expirations: AtomicU64,
}

/// How long an expired stream is remembered as expired.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(300);
/// Expired streams remembered at most.
const MAX_REMEMBERED: usize = 10_000;

/// Why a stream id names no open stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// It expired (recently).
    Expired,
    /// No such stream here (never was, ended long ago, or the engine restarted).
    Unknown,
}

/// What `/v1/isolation/cpu` and `/metrics` report of streams.
#[derive(Debug, Clone, Copy, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamsReport {
    /// Streams open now.
    pub open: usize,
    /// Streams expired since the engine started.
    pub expired: u64,
    /// The idle timeout, in milliseconds.
    pub idle_timeout_millis: u64,
}

impl Streams {
    /// A registry whose streams expire after `idle_timeout` idle; a thread of its own
    /// ends expired streams, until the registry is dropped.
    pub fn new(idle_timeout: Duration) -> Arc<Self> {
        let streams = Arc::new(Streams {
            open: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            idle_timeout,
            epoch: Instant::now(),
            expirations: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&streams);
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("tenantdb-streams".into())
            .spawn(move || reaper(weak, tick));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no stream reaper: idle streams will not expire");
        }
        streams
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Register a new stream with `state`. (A stream that ends within the request that
    /// opened it — a pipeline that closes it, what a driver's lone `execute` sends — need
    /// not be: it stays with its request as a bare [`StreamState`].)
    pub fn open(
        &self,
        database: &str,
        owner: u64,
        kind: StreamKind,
        state: Box<StreamState>,
    ) -> Arc<Stream> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(Stream {
            id,
            database: database.to_string(),
            pdb: state.session.pdb().clone(),
            owner,
            caller: state.session.caller(),
            kind,
            seq: AtomicU64::new(0),
            slot: Mutex::new(Slot::Live(state)),
            in_transaction: std::sync::atomic::AtomicBool::new(false),
            in_use: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            epoch: self.epoch,
        });
        stream.touch();
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, stream.clone());
        }
        stream
    }

    /// The open stream `id`.
    pub fn get(&self, id: u64) -> std::result::Result<Arc<Stream>, Missing> {
        if let Some(s) = self.open.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let expired = self.expired.lock().is_ok_and(|e| e.contains_key(&id));
        Err(if expired {
            Missing::Expired
        } else {
            Missing::Unknown
        })
    }

    /// Forget stream `id` (after its state was ended).
    pub fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// End the streams on `database`: all of them, or (`keep_transactions`) all but those
    /// inside a transaction, which end when their request finds the database closing.
    /// Streams running a request end when it finishes.
    pub fn end_for(&self, database: &str, keep_transactions: bool) {
        let on: Vec<Arc<Stream>> = self
            .open
            .lock()
            .map(|m| {
                m.values()
                    .filter(|s| s.database == database)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let keep = if keep_transactions {
            Keep::InTransaction
        } else {
            Keep::None
        };
        for s in on {
            if s.end_if_idle(Ended::DatabaseClosed, keep) {
                self.remove(s.id);
            }
        }
    }

    /// End streams idle for longer than the timeout (a WebSocket's only inside a
    /// transaction) and forget those that ended.
    pub fn expire_idle(&self) {
        let all: Vec<Arc<Stream>> = self
            .open
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for s in all {
            if s.ended().is_some() {
                self.remove(s.id);
                continue;
            }
            if s.idle_for() <= self.idle_timeout || s.in_use.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let keep = match s.kind {
                StreamKind::Http => Keep::None,
                StreamKind::WebSocket => Keep::Autocommit,
            };
            if s.end_if_idle(Ended::Expired, keep) {
                self.expirations.fetch_add(1, Ordering::Relaxed);
                self.remove(s.id);
                if let Ok(mut e) = self.expired.lock() {
                    let now = Instant::now();
                    if e.len() >= MAX_REMEMBERED {
                        e.retain(|_, at| now.duration_since(*at) < REMEMBER_EXPIRED);
                    }
                    if e.len() < MAX_REMEMBERED {
                        e.insert(s.id, now);
                    }
                }
            }
        }
    }

    /// Open streams and expirations.
    pub fn report(&self) -> StreamsReport {
        StreamsReport {
            open: self.open.lock().map_or(0, |m| m.len()),
            expired: self.expirations.load(Ordering::Relaxed),
            idle_timeout_millis: self.idle_timeout.as_millis() as u64,
        }
    }
}

fn reaper(streams: Weak<Streams>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(s) = streams.upgrade() else { return };
        s.expire_idle();
    }
}
