//! One replicated file on the primary: the `wal_hook` of every connection to it calls
//! [`Tap::capture`], which reads the frames committed since the last call from the WAL
//! and seals them into a segment (the backup's format and checksum chain) kept in a ring
//! for the standbys. A standby that is behind the ring, or of another incarnation, gets
//! a base copy first ([`Tap::base`]).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backup::segment::{self, SegmentFrame};
use crate::backup::wal;
use crate::files;

/// Bytes of sealed segments a tap keeps for standbys that fall behind.
const RING_BYTES: usize = 64 << 20;

/// A sealed segment in the ring.
#[derive(Debug)]
pub struct Sealed {
    /// First transaction in it.
    pub first: u64,
    /// Last transaction in it.
    pub last: u64,
    /// WAL bytes it carries (frames with their headers), for the lag in bytes.
    pub wal_bytes: u64,
    /// The segment.
    pub bytes: Arc<Vec<u8>>,
}

#[derive(Debug, Default)]
struct State {
    cursor: wal::Cursor,
    txid: u64,
    checksum: String,
    /// Whether a checkpoint under the write lock followed the last capture: only then
    /// may the WAL restart without frames lost to the stream.
    may_restart: bool,
    ring: VecDeque<Sealed>,
    ring_bytes: usize,
    wal_bytes: u64,
}

/// Why a tap cannot go on in its incarnation.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Reading the WAL failed.
    #[error("replication: reading the WAL of {0}: {1}")]
    Io(String, std::io::Error),
    /// The WAL restarted behind the tap: standbys need a new base.
    #[error("replication: the WAL of {0} restarted behind its tap")]
    Gap(String),
}

/// Opens another connection to a tapped file, with the VFS its other connections use.
pub type Opener = fn(&Path) -> rusqlite::Result<rusqlite::Connection>;

/// The opener of database files (the engine's exclusive VFS).
pub fn open_database(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    files::open_db(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
}

/// The opener of the catalog (SQLite's default VFS, as the catalog opens itself).
pub fn open_catalog(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    files::configure_no_checkpoint(&c)?;
    Ok(c)
}

/// One replicated file on the primary.
pub struct Tap {
    /// Path relative to the data directory (`catalog.db`, `pdbs/<name>.db`).
    pub file: String,
    path: PathBuf,
    open: Opener,
    /// This incarnation: a new one for every new tap or gap.
    incarnation: Mutex<String>,
    state: Mutex<State>,
    acked: Mutex<(String, u64)>,
    acked_cv: Condvar,
    acked_watch: tokio::sync::watch::Sender<(String, u64)>,
    /// Signalled after every capture that sealed something.
    pub changed: Arc<tokio::sync::Notify>,
}

fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tap({})", self.file)
    }
}

impl Tap {
    /// A tap on the database at `path`, known to standbys as `file`. What its WAL holds
    /// already is in any base, so capture starts at the WAL's end.
    pub fn new(file: &str, path: &Path, open: Opener, changed: Arc<tokio::sync::Notify>) -> Self {
        let inc = new_incarnation();
        let tap = Tap {
            file: file.to_string(),
            path: path.to_path_buf(),
            open,
            incarnation: Mutex::new(inc.clone()),
            state: Mutex::new(State {
                checksum: inc.clone(),
                ..Default::default()
            }),
            acked: Mutex::new((inc.clone(), 0)),
            acked_cv: Condvar::new(),
            acked_watch: tokio::sync::watch::Sender::new((inc, 0)),
            changed,
        };
        let _ = tap.skip_to_end();
        tap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The incarnation in force.
    pub fn incarnation(&self) -> String {
        self.incarnation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn wal(&self) -> PathBuf {
        PathBuf::from(format!("{}-wal", self.path.display()))
    }

    fn skip_to_end(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        if let Ok(mut f) = File::open(self.wal()) {
            if let Some(scan) = wal::scan(&mut f, &st.cursor, usize::MAX)? {
                st.cursor = scan.cursor;
            }
        }
        st.may_restart = false;
        Ok(())
    }

    /// Seal what was committed since the last capture; returns the last transaction
    /// captured. A gap (the WAL restarted behind the tap) starts a new incarnation.
    pub fn capture(&self) -> Result<u64, TapError> {
        let mut st = self.lock();
        let mut log = match File::open(self.wal()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(st.txid),
            Err(e) => return Err(TapError::Io(self.file.clone(), e)),
        };
        let scan = wal::scan(&mut log, &st.cursor, usize::MAX)
            .map_err(|e| TapError::Io(self.file.clone(), e))?;
        let Some(scan) = scan else { return Ok(st.txid) };
        if scan.restarted && st.cursor.frames > 0 && !st.may_restart {
            drop(st);
            self.reincarnate();
            return Err(TapError::Gap(self.file.clone()));
        }
        st.cursor = scan.cursor;
        if scan.frames.is_empty() {
            return Ok(st.txid);
        }
        st.may_restart = false;
        let now = chrono::Utc::now().timestamp_millis();
        let page_size = scan.header.page_size;
        let wal_bytes = scan.frames.len() as u64 * (24 + u64::from(page_size));
        let frames: Vec<SegmentFrame> = scan
            .frames
            .into_iter()
            .map(|f| SegmentFrame {
                commit_ms: if f.commit_size != 0 { now } else { 0 },
                page: f.page,
                commit_size: f.commit_size,
                data: f.data,
            })
            .collect();
        let inc = self.incarnation();
        let (h, bytes) = segment::seal(&inc, st.txid + 1, page_size, &st.checksum, &frames);
        st.txid = h.last_txid;
        st.checksum = h.checksum;
        st.ring_bytes += bytes.len();
        st.wal_bytes += wal_bytes;
        st.ring.push_back(Sealed {
            first: h.first_txid,
            last: h.last_txid,
            wal_bytes,
            bytes: Arc::new(bytes),
        });
        while st.ring_bytes > RING_BYTES && st.ring.len() > 1 {
            if let Some(old) = st.ring.pop_front() {
                st.ring_bytes -= old.bytes.len();
            }
        }
        let txid = st.txid;
        drop(st);
        self.changed.notify_waiters();
        Ok(txid)
    }

    /// Start over as a new incarnation (after a gap): every standby takes a base.
    fn reincarnate(&self) {
        let inc = new_incarnation();
        *self.incarnation.lock().unwrap_or_else(|e| e.into_inner()) = inc.clone();
        {
            let mut st = self.lock();
            *st = State {
                checksum: inc.clone(),
                ..Default::default()
            };
        }
        let _ = self.skip_to_end();
        *self.acked.lock().unwrap_or_else(|e| e.into_inner()) = (inc.clone(), 0);
        self.acked_cv.notify_all();
        self.acked_watch.send_replace((inc, 0));
        self.changed.notify_waiters();
    }

    /// The last transaction captured and the checksum after it.
    pub fn position(&self) -> (u64, String) {
        let st = self.lock();
        (st.txid, st.checksum.clone())
    }

    /// Segments after transaction `after` with the last transaction of each, if the
    /// ring still holds all of them.
    pub fn since(&self, after: u64) -> Option<Vec<(u64, Arc<Vec<u8>>)>> {
        let st = self.lock();
        if after >= st.txid {
            return Some(Vec::new());
        }
        let first = st.ring.front()?.first;
        if first > after + 1 {
            return None;
        }
        Some(
            st.ring
                .iter()
                .filter(|s| s.last > after)
                .map(|s| (s.last, s.bytes.clone()))
                .collect(),
        )
    }

    /// Transactions and WAL bytes captured after transaction `after`.
    pub fn lag_after(&self, after: u64) -> (u64, u64) {
        let st = self.lock();
        let bytes = st
            .ring
            .iter()
            .filter(|s| s.last > after)
            .map(|s| s.wal_bytes)
            .sum();
        (st.txid.saturating_sub(after), bytes)
    }

    /// Checkpoint the file: under the write lock, capture to the end, then a PASSIVE
    /// checkpoint; the WAL may restart afterwards without a gap.
    pub fn checkpoint(&self) -> Result<(), crate::error::EngineError> {
        let mut w = (self.open)(&self.path)?;
        w.busy_handler(Some(crate::pdb::retry_lock))?;
        w.execute_batch("BEGIN IMMEDIATE")?;
        let done = (|| {
            self.capture_locked()?;
            let c = (self.open)(&self.path)?;
            c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            c.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)?;
            Ok(())
        })();
        let _ = w.execute_batch("ROLLBACK");
        done
    }

    /// Under the write lock (held by the caller): capture to the end and allow the WAL
    /// to restart. What the backup shipper calls before its own checkpoint.
    pub fn capture_locked(&self) -> Result<(), crate::error::EngineError> {
        self.capture()
            .map_err(|e| crate::error::EngineError::internal(e.to_string()))?;
        self.lock().may_restart = true;
        Ok(())
    }

    /// Frames in the WAL up to the cursor (what a checkpoint would fold in).
    pub fn wal_frames(&self) -> u32 {
        self.lock().cursor.frames
    }

    /// A consistent copy of the file and the transaction it holds: under the write lock,
    /// capture to the end and pin a read transaction; then copy with SQLite's online
    /// backup outside the lock.
    pub fn base(&self, tmp: &Path) -> Result<(Vec<u8>, u64, String), crate::error::EngineError> {
        let reader = (self.open)(&self.path)?;
        let mut w = (self.open)(&self.path)?;
        w.busy_handler(Some(crate::pdb::retry_lock))?;
        w.execute_batch("BEGIN IMMEDIATE")?;
        let pinned = (|| {
            self.capture()
                .map_err(|e| crate::error::EngineError::internal(e.to_string()))?;
            reader.execute_batch("BEGIN")?;
            reader.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok::<_, crate::error::EngineError>(self.position())
        })();
        let _ = w.execute_batch("ROLLBACK");
        drop(w);
        let (txid, checksum) = pinned?;
        let _ = std::fs::remove_file(tmp);
        let copied = (|| {
            let mut out = rusqlite::Connection::open(tmp)?;
            rusqlite::backup::Backup::new(&reader, &mut out)?.run_to_completion(
                1024,
                Duration::ZERO,
                None,
            )?;
            drop(out);
            Ok::<_, crate::error::EngineError>(std::fs::read(tmp)?)
        })();
        let _ = reader.execute_batch("COMMIT");
        let _ = std::fs::remove_file(tmp);
        Ok((copied?, txid, checksum))
    }

    /// A standby has applied transaction `txid` of incarnation `inc` durably.
    pub fn ack(&self, inc: &str, txid: u64) {
        let mut a = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        if a.0 == inc && txid > a.1 {
            a.1 = txid;
            self.acked_cv.notify_all();
            self.acked_watch.send_replace(a.clone());
        }
    }

    /// The last transaction a standby acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// [`Self::wait_acked`] without a thread: for commits whose acknowledgement the
    /// request awaits after its worker moved on.
    pub async fn acked_async(&self, txid: u64, timeout: Duration) -> bool {
        let mut rx = self.acked_watch.subscribe();
        let inc = rx.borrow().0.clone();
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|a| a.1 >= txid || a.0 != inc)).await;
        matches!(waited, Ok(Ok(a)) if a.0 == inc)
    }

    /// Wait until a standby acknowledged transaction `txid` (true), or `timeout` passed.
    pub fn wait_acked(&self, txid: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut a = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        let inc = a.0.clone();
        while a.1 < txid && a.0 == inc {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            a = self
                .acked_cv
                .wait_timeout(a, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        a.0 == inc
    }
}
