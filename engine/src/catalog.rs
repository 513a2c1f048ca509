//! The catalog database: the registry of pluggable databases and their state, their
//! history, lockdown profiles, data tokens and archives. Every change is a durable
//! SQLite transaction, so a restart finds each database in the state last recorded.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{EngineError, Result};

pub use tenantdb_engine_api::requests::OpenMode;

/// A database's row in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbRecord {
    /// Name (also the file name).
    pub name: String,
    /// `None` when mounted (registered, closed to every session).
    pub open_mode: Option<OpenMode>,
    /// Where the content came from, as it happened (e.g. "seed", "clone full of a").
    pub source: String,
    /// Storage quota in bytes.
    pub storage_quota_bytes: Option<u64>,
    /// Lockdown profile enforced on tenant statements.
    pub lockdown_profile: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// An archive's row in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    /// Archive name.
    pub name: String,
    /// The database it was unplugged from.
    pub database: String,
    /// sha256 of the data file.
    pub sha256: String,
    /// Size of the data file.
    pub size_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// The catalog.
pub struct Catalog {
    conn: Mutex<Connection>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lock_err<T>(_: T) -> EngineError {
    EngineError::Internal("catalog lock poisoned".into())
}

/// A data token as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id.
    pub id: String,
    /// sha256 of the token (the token itself is never kept).
    pub hash: String,
    /// The databases it opens, as JSON.
    pub databases_json: String,
    /// When it stops opening anything (Unix seconds); never when `None`.
    pub expires_at: Option<i64>,
}

impl Catalog {
    /// Open (or create) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS pdbs (name TEXT PRIMARY KEY, open_mode TEXT, source TEXT NOT NULL,
               storage_quota_bytes INTEGER, lockdown_profile TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY, pdb TEXT NOT NULL, event TEXT NOT NULL,
               detail TEXT, at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS profiles (name TEXT PRIMARY KEY, rules TEXT NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, hash TEXT UNIQUE NOT NULL, databases TEXT NOT NULL,
               created_at INTEGER NOT NULL, expires_at INTEGER);
             CREATE TABLE IF NOT EXISTS archives (name TEXT PRIMARY KEY, pdb TEXT NOT NULL, sha256 TEXT NOT NULL,
               size_bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS usage (pdb TEXT NOT NULL, period TEXT NOT NULL, counters TEXT NOT NULL,
               storage_bytes INTEGER NOT NULL DEFAULT 0, storage_byte_seconds REAL NOT NULL DEFAULT 0,
               first_storage_bytes INTEGER NOT NULL DEFAULT 0, first_at INTEGER NOT NULL DEFAULT 0,
               updated_at INTEGER NOT NULL, PRIMARY KEY (pdb, period));
             CREATE TABLE IF NOT EXISTS uptime (started_at INTEGER PRIMARY KEY, last_seen INTEGER NOT NULL);",
        )?;
        // A catalog from before token expiry gets the column (NULL: never expires).
        let has_expiry: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('tokens') WHERE name = 'expires_at'",
            [],
            |r| r.get(0),
        )?;
        if !has_expiry {
            conn.execute_batch("ALTER TABLE tokens ADD COLUMN expires_at INTEGER")?;
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    /// Run `hook` after every commit of the catalog (replication's capture); its error
    /// reaches the caller of the write.
    pub fn on_commit(
        &self,
        hook: impl Fn() -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<()> {
        let mut conn = self.conn.lock().map_err(lock_err)?;
        conn.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, _: std::ffi::c_int| hook(),
        ))?;
        Ok(())
    }

    /// Every registered database.
    pub fn pdbs(&self) -> Result<Vec<PdbRecord>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare("SELECT name, open_mode, source, storage_quota_bytes, lockdown_profile, created_at, updated_at FROM pdbs")?;
        let rows = stmt.query_map([], |r| {
            Ok(PdbRecord {
                name: r.get(0)?,
                open_mode: r
                    .get::<_, Option<String>>(1)?
                    .as_deref()
                    .and_then(OpenMode::parse),
                source: r.get(2)?,
                storage_quota_bytes: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                lockdown_profile: r.get(4)?,
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Insert or replace a database's row, with a history event.
    pub fn put_pdb(&self, rec: &PdbRecord, event: &str, detail: &str) -> Result<()> {
        let mut conn = self.conn.lock().map_err(lock_err)?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO pdbs (name, open_mode, source, storage_quota_bytes, lockdown_profile, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![rec.name, rec.open_mode.map(OpenMode::as_str), rec.source, rec.storage_quota_bytes.map(|v| v as i64), rec.lockdown_profile, rec.created_at, rec.updated_at],
        )?;
        tx.execute(
            "INSERT INTO history (pdb, event, detail, at) VALUES (?1, ?2, ?3, ?4)",
            params![rec.name, event, detail, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a database's row, with a history event.
    pub fn remove_pdb(&self, name: &str, event: &str, detail: &str) -> Result<()> {
        let mut conn = self.conn.lock().map_err(lock_err)?;
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM pdbs WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO history (pdb, event, detail, at) VALUES (?1, ?2, ?3, ?4)",
            params![name, event, detail, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The history of one database, oldest first: (event, detail, unix seconds).
    pub fn history(&self, name: &str) -> Result<Vec<(String, String, i64)>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare(
            "SELECT event, coalesce(detail, ''), at FROM history WHERE pdb = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every lockdown profile: (name, rules JSON).
    pub fn profiles(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare("SELECT name, rules FROM profiles ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Create or replace a profile.
    pub fn put_profile(&self, name: &str, rules_json: &str) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "INSERT OR REPLACE INTO profiles (name, rules, updated_at) VALUES (?1, ?2, ?3)",
            params![name, rules_json, now()],
        )?;
        Ok(())
    }

    /// Delete a profile; `false` when there was none.
    pub fn delete_profile(&self, name: &str) -> Result<bool> {
        let conn = self.conn.lock().map_err(lock_err)?;
        Ok(conn.execute("DELETE FROM profiles WHERE name = ?1", [name])? > 0)
    }

    /// Every data token.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare("SELECT id, hash, databases, expires_at FROM tokens")?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenRecord {
                id: r.get(0)?,
                hash: r.get(1)?,
                databases_json: r.get(2)?,
                expires_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Record a data token by its hash, with its expiry (Unix seconds; `None`: never).
    pub fn put_token(
        &self,
        id: &str,
        hash: &str,
        databases_json: &str,
        expires_at: Option<i64>,
    ) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "INSERT INTO tokens (id, hash, databases, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, hash, databases_json, now(), expires_at],
        )?;
        Ok(())
    }

    /// Change the databases a data token opens.
    pub fn set_token_databases(&self, id: &str, databases_json: &str) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "UPDATE tokens SET databases = ?2 WHERE id = ?1",
            params![id, databases_json],
        )?;
        Ok(())
    }

    /// Revoke a data token; `false` when there was none.
    pub fn delete_token(&self, id: &str) -> Result<bool> {
        let conn = self.conn.lock().map_err(lock_err)?;
        Ok(conn.execute("DELETE FROM tokens WHERE id = ?1", [id])? > 0)
    }

    /// Record an archive.
    pub fn put_archive(&self, a: &ArchiveRecord) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "INSERT OR REPLACE INTO archives (name, pdb, sha256, size_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![a.name, a.database, a.sha256, a.size_bytes as i64, a.created_at],
        )?;
        Ok(())
    }

    /// One archive.
    pub fn archive(&self, name: &str) -> Result<Option<ArchiveRecord>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        Ok(conn
            .query_row(
                "SELECT name, pdb, sha256, size_bytes, created_at FROM archives WHERE name = ?1",
                [name],
                |r| {
                    Ok(ArchiveRecord {
                        name: r.get(0)?,
                        database: r.get(1)?,
                        sha256: r.get(2)?,
                        size_bytes: r.get::<_, i64>(3)? as u64,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every archive, by name.
    pub fn archives(&self) -> Result<Vec<ArchiveRecord>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare(
            "SELECT name, pdb, sha256, size_bytes, created_at FROM archives ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ArchiveRecord {
                name: r.get(0)?,
                database: r.get(1)?,
                sha256: r.get(2)?,
                size_bytes: r.get::<_, i64>(3)? as u64,
                created_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Add `delta` to database `pdb`'s usage in `period` (`YYYY-MM`), with its storage now
    /// and the byte-seconds of storage since the last flush; one durable transaction.
    pub fn add_usage(
        &self,
        entries: &[(String, crate::metering::Usage, u64)],
        period: &str,
        at: i64,
    ) -> Result<()> {
        let mut conn = self.conn.lock().map_err(lock_err)?;
        let tx = conn.transaction()?;
        for (pdb, delta, storage) in entries {
            let old: Option<(String, i64, i64)> = tx
                .query_row(
                    "SELECT counters, storage_bytes, updated_at FROM usage WHERE pdb = ?1 AND period = ?2",
                    params![pdb, period],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (mut total, seconds) = match &old {
                Some((json, _, updated)) => (
                    serde_json::from_str::<crate::metering::Usage>(json).unwrap_or_default(),
                    (at - updated).max(0) as f64,
                ),
                None => (Default::default(), 0.0),
            };
            total.add(delta);
            let prev_storage = old.as_ref().map_or(*storage as i64, |o| o.1) as f64;
            tx.execute(
                "INSERT INTO usage (pdb, period, counters, storage_bytes, storage_byte_seconds, updated_at, first_storage_bytes, first_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?6)
                 ON CONFLICT (pdb, period) DO UPDATE SET counters = ?3, storage_bytes = ?4,
                   storage_byte_seconds = storage_byte_seconds + ?5, updated_at = ?6",
                params![
                    pdb,
                    period,
                    serde_json::to_string(&total).map_err(EngineError::internal)?,
                    *storage as i64,
                    prev_storage * seconds,
                    at
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Usage recorded for `period`: (database, counters, storage bytes, storage byte-seconds).
    pub fn usage(&self, period: &str) -> Result<Vec<(String, crate::metering::Usage, u64, f64)>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt = conn.prepare(
            "SELECT pdb, counters, storage_bytes, storage_byte_seconds FROM usage WHERE period = ?1 ORDER BY pdb",
        )?;
        let rows = stmt
            .query_map([period], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, f64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(pdb, json, storage, bs)| {
                (
                    pdb,
                    serde_json::from_str(&json).unwrap_or_default(),
                    storage.max(0) as u64,
                    bs,
                )
            })
            .collect())
    }

    /// Storage growth in `period`: (bytes at first flush, when, bytes at last flush, when), summed.
    pub fn storage_growth(&self, period: &str) -> Result<(i64, i64, i64, i64)> {
        let conn = self.conn.lock().map_err(lock_err)?;
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(first_storage_bytes), 0), COALESCE(MIN(first_at), 0),
                    COALESCE(SUM(storage_bytes), 0), COALESCE(MAX(updated_at), 0)
             FROM usage WHERE period = ?1",
            [period],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?)
    }

    /// Record that an engine started at `at`.
    pub fn start_uptime(&self, at: i64) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "INSERT OR REPLACE INTO uptime (started_at, last_seen) VALUES (?1, ?1)",
            [at],
        )?;
        Ok(())
    }

    /// Record that the engine that started at `started` was alive at `at`.
    pub fn touch_uptime(&self, started: i64, at: i64) -> Result<()> {
        let conn = self.conn.lock().map_err(lock_err)?;
        conn.execute(
            "UPDATE uptime SET last_seen = ?2 WHERE started_at = ?1",
            [started, at],
        )?;
        Ok(())
    }

    /// Every run of the engine: (started, last seen alive), oldest first.
    pub fn uptime(&self) -> Result<Vec<(i64, i64)>> {
        let conn = self.conn.lock().map_err(lock_err)?;
        let mut stmt =
            conn.prepare("SELECT started_at, last_seen FROM uptime ORDER BY started_at")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Forget an archive; `false` when there was none.
    pub fn delete_archive(&self, name: &str) -> Result<bool> {
        let conn = self.conn.lock().map_err(lock_err)?;
        Ok(conn.execute("DELETE FROM archives WHERE name = ?1", [name])? > 0)
    }
}
