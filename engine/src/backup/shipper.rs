//! One database's shipper: seals committed WAL frames into segments in the backlog,
//! checkpoints under the write lock, starts generations with a base snapshot, and ships
//! the backlog to the store in order. The blocking half (files, SQLite) is here; the loop
//! that drives it and talks to the store is in `ship.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::capture::Capture;
use super::layout::{self, GenerationManifest};
use super::segment::{self, SegmentFrame};
use super::wal;
use crate::files;

/// Largest run of frames one scan reads before sealing (whole transactions beyond it).
const SEGMENT_BYTES: usize = 16 << 20;

/// What the shipper remembers across restarts (`state.json` in the backlog).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Current generation (none before the first snapshot).
    pub generation: Option<String>,
    /// Where sealing stopped in the WAL.
    pub cursor: wal::Cursor,
    /// Last transaction sealed.
    pub sealed_txid: u64,
    /// Running checksum after the last sealed segment.
    pub checksum: String,
    /// Whether the last seal reached the WAL's end under the write lock before a
    /// checkpoint: only then may the WAL restart without a gap.
    pub may_restart: bool,
    /// Page size of the database (for the backlog's size).
    #[serde(default)]
    pub page_size: u32,
    /// When the current generation started (unix ms).
    pub generation_ms: i64,
}

impl State {
    /// Bytes of one WAL frame: its 24-byte header and a page.
    fn frame_bytes(&self) -> u64 {
        24 + u64::from(self.page_size.max(512))
    }
}

/// Why sealing could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A file operation failed.
    #[error("backup backlog: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused (the write lock, the snapshot).
    #[error("backup: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The WAL restarted without every frame sealed first: a new generation must begin.
    #[error("the WAL restarted behind the shipper; a new generation begins")]
    Gap,
    /// The store did not take a segment or snapshot.
    #[error("{0}")]
    Store(String),
}

/// One database's capture: its files, backlog and state.
pub struct Shipper {
    /// Database name.
    pub name: String,
    db: PathBuf,
    /// Backlog directory (`<data>/backup/<db>`).
    pub dir: PathBuf,
    /// What the hooks record.
    pub capture: Arc<Capture>,
    /// Persistent state.
    pub state: Mutex<State>,
    /// Run under the write lock before each checkpoint: replication reads the WAL to its
    /// end there, so a restarted WAL never loses frames it has not streamed.
    pub before_checkpoint: Mutex<Option<BeforeCheckpoint>>,
}

/// See [`Shipper::before_checkpoint`]; false stops the checkpoint.
pub type BeforeCheckpoint = Arc<dyn Fn() -> bool + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shipper({})", self.name)
    }
}

impl Shipper {
    /// The shipper of database `name` at `db`, backlog in `dir` (state loaded from it).
    pub fn open(name: &str, db: &Path, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Shipper {
            name: name.to_string(),
            db: db.to_path_buf(),
            dir: dir.to_path_buf(),
            capture: Arc::new(Capture::open(dir)?),
            state: Mutex::new(state),
            before_checkpoint: Mutex::new(None),
        })
    }

    fn wal_path(&self) -> PathBuf {
        PathBuf::from(format!("{}-wal", self.db.display()))
    }

    /// Write the state (through a rename, so it is whole). Not fsynced: the WAL keeps
    /// every frame until a checkpoint, which happens only once they are all in the store,
    /// so an older state after a power loss re-ships segments the store already holds
    /// (same names, same bytes: the conditional put takes them as done).
    fn save(&self, state: &State) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        let path = self.dir.join("state.json");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &json)?;
        std::fs::rename(&tmp, &path)
    }

    /// The next segment: the committed frames after the cursor, as whole transactions
    /// with their commit times, sealed in memory. Nothing changes until [`Self::commit`]
    /// (after the store has it). `wait_for`: stop at a commit whose hook has not recorded
    /// its time yet (it is about to). Without a generation, frames are consumed at once
    /// (the snapshot that starts the first generation holds them) and `None` returned.
    pub fn next_segment(&self, wait_for: bool) -> Result<Option<Sealed>, SealError> {
        let mut st = lock(&self.state);
        loop {
            let mut log = match File::open(self.wal_path()) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Some(scan) = wal::scan(&mut log, &st.cursor, SEGMENT_BYTES)? else {
                return Ok(None);
            };
            if scan.restarted && st.cursor.frames > 0 && !st.may_restart && st.generation.is_some()
            {
                return Err(SealError::Gap);
            }
            let start = if scan.restarted { 0 } else { st.cursor.frames };
            let commits: Vec<u32> = scan
                .frames
                .iter()
                .enumerate()
                .filter(|(_, f)| f.commit_size != 0)
                .map(|(i, _)| start + i as u32 + 1)
                .collect();
            if commits.is_empty() {
                if scan.restarted {
                    st.cursor = scan.cursor;
                }
                return Ok(None);
            }
            let now = chrono::Utc::now().timestamp_millis();
            let times = self.capture.times(&commits, wait_for, now);
            if times.is_empty() {
                return Ok(None);
            }
            // Keep the transactions that have their time.
            let keep_to = (commits[times.len() - 1] - start) as usize;
            let cursor = if times.len() == commits.len() {
                scan.cursor
            } else {
                resume_cursor(&scan, st.cursor, keep_to)
            };
            let mut it = times.iter();
            let frames: Vec<SegmentFrame> = scan
                .frames
                .into_iter()
                .take(keep_to)
                .map(|f| SegmentFrame {
                    commit_ms: if f.commit_size != 0 {
                        it.next().copied().unwrap_or(now)
                    } else {
                        0
                    },
                    page: f.page,
                    commit_size: f.commit_size,
                    data: f.data,
                })
                .collect();
            let n = times.len() as u64;
            let mut next = st.clone();
            next.sealed_txid += n;
            next.cursor = cursor;
            next.may_restart = false;
            next.page_size = scan.header.page_size;
            let Some(gen) = st.generation.clone() else {
                // Before the first generation: the snapshot will hold these.
                *st = next;
                self.capture.forget_through(cursor.frames);
                self.save(&st)?;
                continue;
            };
            let (h, bytes) = segment::seal(
                &gen,
                st.sealed_txid + 1,
                scan.header.page_size,
                &st.checksum,
                &frames,
            );
            next.checksum = h.checksum.clone();
            return Ok(Some(Sealed {
                file: layout::segment_name(h.first_txid, h.last_txid, h.last_ms),
                generation: gen,
                first_ms: h.first_ms,
                last_ms: h.last_ms,
                bytes,
                next,
            }));
        }
    }

    /// The store has `sealed`: move past it.
    pub fn commit(&self, sealed: &Sealed) -> std::io::Result<()> {
        let mut st = lock(&self.state);
        *st = sealed.next.clone();
        self.capture.forget_through(st.cursor.frames);
        self.save(&st)
    }

    /// Ship every committed frame to the WAL's end through `ship`.
    pub fn ship_to_end(&self, wait_for: bool, ship: &Ship<'_>) -> Result<(), SealError> {
        while let Some(mut sealed) = self.next_segment(wait_for)? {
            let bytes = std::mem::take(&mut sealed.bytes);
            ship(&sealed.generation, &sealed.file, bytes).map_err(SealError::Store)?;
            self.commit(&sealed)?;
        }
        Ok(())
    }

    /// Ship to the WAL's end while holding the write lock, then run `then` (still under
    /// it). Hooks of commits that finished just before the lock are waited for (1 s at
    /// most, then their time is the time of sealing).
    fn under_write_lock<T>(
        &self,
        ship: &Ship<'_>,
        then: impl FnOnce(&rusqlite::Connection) -> Result<T, SealError>,
    ) -> Result<T, SealError> {
        let mut w = files::open_db(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&w)?;
        w.busy_handler(Some(crate::pdb::retry_lock))?;
        w.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            loop {
                self.ship_to_end(true, ship)?;
                if self.at_end()? {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    self.ship_to_end(false, ship)?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            then(&w)
        })();
        let _ = w.execute_batch("ROLLBACK");
        result
    }

    fn at_end(&self) -> Result<bool, SealError> {
        let st = lock(&self.state).cursor;
        let Ok(mut log) = File::open(self.wal_path()) else {
            return Ok(true);
        };
        Ok(wal::scan(&mut log, &st, usize::MAX)?.is_none_or(|s| s.frames.is_empty()))
    }

    /// Checkpoint: every frame shipped first, under the write lock, then a PASSIVE
    /// checkpoint; the WAL may restart afterwards without a gap.
    pub fn checkpoint(&self, ship: &Ship<'_>) -> Result<(i32, i32), SealError> {
        self.under_write_lock(ship, |_| {
            let before = lock(&self.before_checkpoint).clone();
            if before.is_some_and(|f| !f()) {
                return Err(SealError::Io(std::io::Error::other(
                    "replication could not read the WAL to its end; no checkpoint",
                )));
            }
            let c = files::open_db(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            configure(&c)?;
            // A connection that has read nothing does not know the database is in WAL
            // mode yet, and its checkpoint would do nothing (-1 frames).
            c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            let done = c.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)?;
            if done.0 < 0 {
                return Err(SealError::Io(std::io::Error::other(
                    "the checkpoint did not run (the connection does not see the WAL)",
                )));
            }
            self.capture.reset();
            let mut st = lock(&self.state);
            st.may_restart = true;
            self.save(&st)?;
            Ok(done)
        })
    }

    /// Start a generation: ship the old one to the end under the write lock, pin that
    /// point with a read transaction, release the lock, copy the database as of it
    /// (SQLite's online backup) and ship it with its manifest; only then do segments go
    /// to the new generation. `after_gap`: the WAL restarted behind the shipper, so what
    /// it holds cannot follow the old generation; it is consumed unsealed (the new
    /// snapshot holds it).
    pub fn start_generation(&self, after_gap: bool, ship: &Ship<'_>) -> Result<String, SealError> {
        if after_gap {
            let mut st = lock(&self.state);
            st.generation = None;
            st.cursor = wal::Cursor::default();
            st.may_restart = true;
            self.save(&st)?;
        }
        let reader = files::open_db(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&reader)?;
        let (gen, base) = self.under_write_lock(ship, |_| {
            reader.execute_batch("BEGIN")?;
            reader.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
            let start = chrono::Utc::now().timestamp_millis();
            let st = lock(&self.state);
            Ok((layout::generation_name(start), st.sealed_txid))
        })?;
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join("snapshot.tmp");
        let copied = (|| -> Result<Vec<u8>, SealError> {
            let _ = std::fs::remove_file(&tmp);
            {
                let mut out = rusqlite::Connection::open(&tmp)?;
                rusqlite::backup::Backup::new(&reader, &mut out)?.run_to_completion(
                    1024,
                    Duration::ZERO,
                    None,
                )?;
            }
            Ok(std::fs::read(&tmp)?)
        })();
        let _ = reader.execute_batch("COMMIT");
        let _ = std::fs::remove_file(&tmp);
        let snapshot = copied?;
        let start = layout::generation_start(&gen).unwrap_or_default();
        let manifest = GenerationManifest {
            name: gen.clone(),
            base_txid: base,
            start_ms: start,
            database: self.name.clone(),
        };
        ship(
            &gen,
            "generation.json",
            serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
        )
        .map_err(SealError::Store)?;
        ship(&gen, "snapshot.db", snapshot).map_err(SealError::Store)?;
        let mut st = lock(&self.state);
        st.generation = Some(gen.clone());
        st.checksum = gen.clone();
        st.generation_ms = start;
        self.save(&st)?;
        Ok(gen)
    }

    /// Frames in the WAL not yet shipped, in bytes (what a lost volume would lose).
    pub fn unshipped_bytes(&self) -> u64 {
        let st = lock(&self.state);
        let newest = self.capture.newest_frames().unwrap_or(0);
        u64::from(newest.saturating_sub(st.cursor.frames)) * st.frame_bytes()
    }

    /// Bytes of the WAL in use up to the shipper's cursor (the file itself keeps the size
    /// it once reached: SQLite writes a restarted WAL over it from the start).
    pub fn wal_in_use(&self) -> u64 {
        let st = lock(&self.state);
        32 + u64::from(st.cursor.frames) * st.frame_bytes()
    }
}

/// Puts `(generation, file, bytes)` in the store (blocking), or says why not.
pub type Ship<'a> = dyn Fn(&str, &str, Vec<u8>) -> Result<(), String> + 'a;

/// A segment sealed in memory, waiting for the store.
#[derive(Debug)]
pub struct Sealed {
    /// Its generation.
    pub generation: String,
    /// Its file name.
    pub file: String,
    /// First and last commit times (unix ms).
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The state once the store has it.
    pub next: State,
}

/// The cursor after the first `keep` frames of `scan` (a scan cut short of its end):
/// recomputed from the frames' checksums, which the scan verified.
fn resume_cursor(scan: &wal::Scan, from: wal::Cursor, keep: usize) -> wal::Cursor {
    let h = scan.header;
    let mut c = if scan.restarted {
        wal::Cursor {
            salt: h.salt,
            frames: 0,
            checksum: h.checksum,
        }
    } else {
        from
    };
    for f in scan.frames.iter().take(keep) {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&f.page.to_be_bytes());
        head[4..].copy_from_slice(&f.commit_size.to_be_bytes());
        let s = wal::checksum(&head, c.checksum, h.big_endian);
        c.checksum = wal::checksum(&f.data, s, h.big_endian);
        c.frames += 1;
    }
    c
}

/// What every connection to a database with backup on needs: no automatic checkpoints
/// and none on close.
pub fn configure(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    Ok(())
}
