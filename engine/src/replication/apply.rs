//! The standby's side of the files: a base replaces a file whole (written aside, fsynced,
//! renamed over it); a segment is applied through SQLite with the `sqlite_dbpage` table,
//! so the copy is always a state the primary committed (a segment's transactions are applied together, in one SQLite transaction),
//! and durable (`synchronous=FULL`) before it is acknowledged. Where each file
//! stands is kept in `replication.json`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;
use tenantdb_engine_api::replication::FilePosition;

use crate::backup::segment;
use crate::files;

/// Why a message could not be applied; the stream starts again from what is applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A file operation failed.
    #[error("replica: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused.
    #[error("replica: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The segment does not verify or does not continue this copy's history.
    #[error("replica of {file}: {why}")]
    Refused {
        /// File.
        file: String,
        /// Why.
        why: String,
    },
}

/// A base being received.
#[derive(Debug)]
struct Receiving {
    incarnation: String,
    txid: u64,
    checksum: String,
    tmp: PathBuf,
    file: std::fs::File,
    written: u64,
}

/// The standby's copies.
pub struct Replica {
    dir: PathBuf,
    positions: Mutex<BTreeMap<String, FilePosition>>,
    conns: Mutex<HashMap<String, Connection>>,
    receiving: Mutex<HashMap<String, Receiving>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({})", self.dir.display())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replica {
    /// The copies in data directory `dir`, positions loaded from `replication.json`
    /// (a file with no position there is not trusted, so it will take a base).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("pdbs"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        let positions = std::fs::read(dir.join("replication.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Replica {
            dir: dir.to_path_buf(),
            positions: Mutex::new(positions),
            conns: Mutex::new(HashMap::new()),
            receiving: Mutex::new(HashMap::new()),
        })
    }

    /// Where every file stands.
    pub fn positions(&self) -> BTreeMap<String, FilePosition> {
        lock(&self.positions).clone()
    }

    /// Forget every position: the next stream brings a base of everything (a primary
    /// stepping down, whose files may hold commits nobody acknowledged).
    pub fn forget(&self) -> std::io::Result<()> {
        lock(&self.positions).clear();
        self.save(true)
    }

    fn save(&self, durable: bool) -> std::io::Result<()> {
        let json =
            serde_json::to_vec_pretty(&*lock(&self.positions)).map_err(std::io::Error::other)?;
        let path = self.dir.join("replication.json");
        if durable {
            files::durable_write(&path, &json)
        } else {
            // A position older than the copy is safe: the primary resends from there and
            // page images applied again leave the same pages.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &json)?;
            std::fs::rename(&tmp, &path)
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Receive part of a base of `file`; returns true when it was the last part and the
    /// copy is now in place.
    #[allow(clippy::too_many_arguments)]
    pub fn base_part(
        &self,
        file: &str,
        incarnation: &str,
        txid: u64,
        checksum: &str,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<bool, ApplyError> {
        let mut rx = lock(&self.receiving);
        if offset == 0 {
            let tmp = self
                .dir
                .join("tmp")
                .join(format!("replica.{}.db", rand::random::<u32>()));
            let f = std::fs::File::create(&tmp)?;
            rx.insert(
                file.to_string(),
                Receiving {
                    incarnation: incarnation.to_string(),
                    txid,
                    checksum: checksum.to_string(),
                    tmp,
                    file: f,
                    written: 0,
                },
            );
        }
        let refused = |why: &str| ApplyError::Refused {
            file: file.to_string(),
            why: why.to_string(),
        };
        let r = rx
            .get_mut(file)
            .ok_or_else(|| refused("a base part with no start"))?;
        if r.incarnation != incarnation || r.written != offset {
            rx.remove(file);
            return Err(refused("a base part out of order"));
        }
        r.file.seek(SeekFrom::Start(offset))?;
        r.file.write_all(bytes)?;
        r.written += bytes.len() as u64;
        if r.written < total {
            return Ok(false);
        }
        let Some(done) = rx.remove(file) else {
            return Err(refused("a base part with no start"));
        };
        drop(rx);
        done.file.sync_all()?;
        let path = self.path(file);
        lock(&self.conns).remove(file);
        files::remove_db(&path)?;
        files::durable_rename(&done.tmp, &path)?;
        lock(&self.positions).insert(
            file.to_string(),
            FilePosition {
                incarnation: done.incarnation,
                txid: done.txid,
                checksum: done.checksum,
            },
        );
        self.save(true)?;
        Ok(true)
    }

    /// Apply a sealed segment of `file`; returns the position after it.
    pub fn segment(&self, file: &str, bytes: &[u8]) -> Result<FilePosition, ApplyError> {
        let refused = |why: String| ApplyError::Refused {
            file: file.to_string(),
            why,
        };
        let (h, frames) = segment::open(bytes).map_err(|e| refused(e.to_string()))?;
        let pos = lock(&self.positions)
            .get(file)
            .cloned()
            .ok_or_else(|| refused("a segment for a file with no base".into()))?;
        if h.generation != pos.incarnation {
            return Err(refused(format!(
                "a segment of incarnation {} over a copy of {}",
                h.generation, pos.incarnation
            )));
        }
        if h.last_txid <= pos.txid {
            return Ok(pos);
        }
        if h.first_txid != pos.txid + 1 || h.prev_checksum != pos.checksum {
            return Err(refused(format!(
                "segment {}..{} does not continue transaction {} of this copy",
                h.first_txid, h.last_txid, pos.txid
            )));
        }
        let mut conns = lock(&self.conns);
        if !conns.contains_key(file) {
            let c = files::open_db(
                &self.path(file),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
            )?;
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
            conns.insert(file.to_string(), c);
        }
        let Some(c) = conns.get(file) else {
            return Err(refused("no connection".into()));
        };
        apply_frames(c, &frames)?;
        drop(conns);
        let after = FilePosition {
            incarnation: pos.incarnation,
            txid: h.last_txid,
            checksum: h.checksum,
        };
        lock(&self.positions).insert(file.to_string(), after.clone());
        self.save(false)?;
        Ok(after)
    }

    /// `file` was dropped on the primary.
    pub fn drop_file(&self, file: &str) -> Result<(), ApplyError> {
        lock(&self.conns).remove(file);
        files::remove_db(&self.path(file))?;
        lock(&self.positions).remove(file);
        self.save(true)?;
        Ok(())
    }

    /// Close every connection (before the engine opens the files as primary).
    pub fn close(&self) {
        let conns: Vec<(String, Connection)> = lock(&self.conns).drain().collect();
        for (file, c) in conns {
            if let Err(e) = c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                tracing::warn!(%file, error = %e, "replica checkpoint on close");
            }
        }
    }
}

/// Apply the frames of a segment's whole transactions in one SQLite transaction (so one
/// fsync however many primary transactions the segment holds: commits that were sealed
/// together are made durable together), pages through `sqlite_dbpage`, and the file cut
/// to the last commit's size. The copy only ever shows the state after a primary commit.
fn apply_frames(c: &Connection, frames: &[segment::SegmentFrame]) -> rusqlite::Result<()> {
    let Some(last_commit) = frames.iter().rposition(|f| f.commit_size != 0) else {
        return Ok(());
    };
    c.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        let mut put = c.prepare_cached("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")?;
        for f in &frames[..=last_commit] {
            put.execute(rusqlite::params![f.page, f.data])?;
        }
        let size = frames[last_commit].commit_size;
        let pages: u32 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if pages > size {
            put.execute(rusqlite::params![size + 1, rusqlite::types::Null])?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
