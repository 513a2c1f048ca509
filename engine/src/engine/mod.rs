//! The engine: the registry of pluggable databases and every lifecycle operation on
//! them — create, open, close, clone, unplug, plug, drop — each recorded in the
//! catalog before it is acknowledged. Here: opening the engine, looking databases up,
//! open/close/configure/drop. Beside it: what callers send and get back (`requests`),
//! making a database (`create`), archives (`archives`), lockdown profiles
//! (`profiles`), storage budgets and reports (`usage`), statement budgets (`budgets`),
//! who may do what (`access`), running statements (`execution`) and sessions kept
//! across requests (`streams`).

pub mod access;
mod archives;
mod budgets;
mod create;
pub mod execution;
mod profiles;
mod requests;
pub mod streams;
mod usage;

pub use requests::*;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;
use serde::Serialize;

use crate::catalog::{now, ArchiveRecord, Catalog, OpenMode, PdbRecord};
use crate::error::{EngineError, Result};
use crate::files;
use crate::lockdown::LockdownRules;
use crate::metering;
use crate::names;
use crate::pdb::Pdb;
use crate::reports;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// SQL run once into the seed database when it is first made.
    pub seed_sql: Option<String>,
    /// Time budget of a statement without a profile limit.
    pub default_statement_budget: Duration,
    /// CPU budget of a tenant statement without a profile limit (`None`: only time).
    pub default_statement_cpu_budget: Option<Duration>,
    /// Rows a result may hold without a profile limit.
    pub default_max_rows: usize,
    /// Bytes a result may hold.
    pub max_result_bytes: usize,
    /// How long a normal close waits for sessions.
    pub close_deadline: Duration,
    /// Storage for all databases together (the tenant's tier), in bytes.
    pub storage_bytes: Option<u64>,
    /// Storage operations a second (pages read from storage plus pages written).
    pub iops: Option<u32>,
    /// Storage bytes a second (those pages' bytes).
    pub io_bytes_per_second: Option<u64>,
    /// SQLite page cache per connection, in KiB (see `isolation::cache_kib_per_connection`).
    pub cache_kib_per_connection: u32,
    /// How long a stream (a session kept across requests) may stay idle.
    pub stream_idle_timeout: Duration,
    /// Continuous backup, and the tenant name backups are filed under.
    pub backup: Option<(crate::backup::BackupConfig, String)>,
    /// Hot standbys: this engine is the primary and streams every commit.
    pub replication: Option<Arc<crate::replication::Source>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            seed_sql: None,
            default_statement_budget: Duration::from_secs(30),
            default_statement_cpu_budget: Some(Duration::from_secs(10)),
            default_max_rows: 10_000,
            max_result_bytes: 16 << 20,
            close_deadline: Duration::from_secs(10),
            storage_bytes: None,
            iops: None,
            io_bytes_per_second: None,
            cache_kib_per_connection: 2048,
            stream_idle_timeout: Duration::from_millis(crate::config::DEFAULT_STREAM_IDLE_MILLIS),
            backup: None,
            replication: None,
        }
    }
}

/// The engine.
pub struct Engine {
    dir: PathBuf,
    catalog: Catalog,
    pdbs: RwLock<HashMap<String, Arc<Pdb>>>,
    profiles: RwLock<HashMap<String, LockdownRules>>,
    tokens: RwLock<HashMap<String, access::TokenEntry>>,
    opts: EngineOptions,
    started: Instant,
    /// Bytes used by every database, and when that was measured (refreshed at most once a second).
    used: Mutex<(Instant, u64)>,
    /// When this run started (unix seconds), the key of its uptime record.
    started_unix: i64,
    /// Data-plane requests per minute, and the peak.
    pub requests_per_minute: metering::MinuteRate,
    /// Whether statements are metered (always, except to measure metering's own cost).
    metering: std::sync::atomic::AtomicBool,
    /// The tier's IO limits, charged with the pages each statement read and wrote.
    pub io: crate::isolation::IoLimits,
    /// Tenant statements interrupted by their time budget, and by their CPU budget.
    interrupted: [std::sync::atomic::AtomicU64; 2],
    /// Sessions kept across requests (Hrana streams).
    pub streams: Arc<streams::Streams>,
    /// Continuous backup, when configured.
    pub backup: Option<Arc<crate::backup::Backup>>,
}

pub use access::unknown_token;

impl Engine {
    /// Open the engine in `dir`: catalog, seed and every registered database.
    pub fn open(dir: &Path, opts: EngineOptions) -> Result<Self> {
        for sub in ["pdbs", "archives", "retained", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Leftovers of an operation a crash interrupted are never registered: drop them.
        for e in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        if opts.replication.is_some() {
            // Checkpoints are the engine's (under the write lock, after the tap read the
            // WAL), never SQLite's automatic ones.
            files::leave_checkpoints_to_the_shipper();
        }
        let catalog = Catalog::open(&dir.join("catalog.db"))?;
        if let Some(source) = &opts.replication {
            let tap = source.tap(
                "catalog.db",
                &dir.join("catalog.db"),
                crate::replication::tap::open_catalog,
            );
            let source = source.clone();
            catalog.on_commit(move || {
                crate::replication::hook_result(source.committed_waiting(&tap, false))
            })?;
        }
        let backup = match (&opts.backup, tokio::runtime::Handle::try_current()) {
            (Some((cfg, tenant)), Ok(rt)) => {
                files::leave_checkpoints_to_the_shipper();
                let b = crate::backup::Backup::new(cfg.clone(), tenant, dir, rt)
                    .map_err(|e| EngineError::BadRequest(e.to_string()))?;
                Some(Arc::new(b))
            }
            (Some(_), Err(_)) => {
                return Err(EngineError::internal(
                    "backup needs the engine opened on a Tokio runtime",
                ))
            }
            (None, _) => None,
        };
        let engine = Engine {
            backup,
            dir: dir.to_path_buf(),
            catalog,
            pdbs: RwLock::new(HashMap::new()),
            profiles: RwLock::new(HashMap::new()),
            tokens: RwLock::new(HashMap::new()),
            started: Instant::now(),
            started_unix: now(),
            requests_per_minute: Default::default(),
            metering: std::sync::atomic::AtomicBool::new(true),
            used: Mutex::new((Instant::now() - Duration::from_secs(60), 0)),
            io: crate::isolation::IoLimits::new(opts.iops, opts.io_bytes_per_second),
            interrupted: Default::default(),
            streams: streams::Streams::new(opts.stream_idle_timeout),
            opts,
        };
        engine.catalog.start_uptime(engine.started_unix)?;
        engine.ensure_template("seed.db", engine.opts.seed_sql.as_deref())?;
        engine.ensure_template("empty.db", None)?;
        let mut profiles = HashMap::new();
        for (name, json) in engine.catalog.profiles()? {
            let rules: LockdownRules =
                serde_json::from_str(&json).map_err(EngineError::internal)?;
            profiles.insert(name, rules);
        }
        *engine.profiles.write().map_err(EngineError::internal)? = profiles;
        let mut tokens = HashMap::new();
        for t in engine.catalog.tokens()? {
            let databases = serde_json::from_str(&t.databases_json).unwrap_or_default();
            tokens.insert(
                t.hash,
                access::TokenEntry {
                    id: t.id,
                    databases,
                    expires_at: t.expires_at,
                },
            );
        }
        *engine.tokens.write().map_err(EngineError::internal)? = tokens;
        let mut map = HashMap::new();
        for rec in engine.catalog.pdbs()? {
            let path = engine.pdb_path(&rec.name);
            if !path.exists() {
                tracing::error!(database = %rec.name, "registered database has no file; left unregistered");
                continue;
            }
            let pdb = engine.handle(path, rec);
            map.insert(pdb.name.clone(), Arc::new(pdb));
        }
        tracing::info!(databases = map.len(), "catalog recovered");
        *engine.pdbs.write().map_err(EngineError::internal)? = map;
        Ok(engine)
    }

    fn ensure_template(&self, file: &str, sql: Option<&str>) -> Result<()> {
        let path = self.dir.join(file);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.dir.join("tmp").join(file);
        files::remove_db(&tmp)?;
        {
            let conn = files::open_db_rw(&tmp)?;
            conn.execute_batch("PRAGMA journal_mode=WAL;")?;
            if let Some(sql) = sql {
                conn.execute_batch(sql)
                    .map_err(|e| EngineError::BadRequest(format!("seed SQL failed: {e}")))?;
            }
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
        files::remove_sidecars(&tmp)?;
        files::durable_rename(&tmp, &path)?;
        Ok(())
    }

    fn pdb_path(&self, name: &str) -> PathBuf {
        self.dir.join("pdbs").join(format!("{name}.db"))
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{name}.{}.db", rand::random::<u32>()))
    }

    fn rules_for(&self, profile: Option<&str>) -> LockdownRules {
        profile
            .and_then(|p| self.profiles.read().ok()?.get(p).cloned())
            .unwrap_or_default()
    }

    /// The handle of the database at `path` with catalog record `rec`: its profile's
    /// rules, and the page cache per connection the memory budget allows.
    fn handle(&self, path: PathBuf, rec: PdbRecord) -> Pdb {
        let rules = self.rules_for(rec.lockdown_profile.as_deref());
        let name = rec.name.clone();
        let pdb =
            Pdb::new(path.clone(), rec, rules).with_cache_kib(self.opts.cache_kib_per_connection);
        let pdb = match self.backup.as_ref().map(|b| b.start(&name, &path)) {
            Some(Ok(capture)) => pdb.with_capture(capture),
            Some(Err(e)) => {
                tracing::error!(database = %name, error = %e, "backup cannot start for this database");
                pdb
            }
            None => pdb,
        };
        match &self.opts.replication {
            Some(source) => {
                let tap = source.tap(
                    &replicated_file(&name),
                    &path,
                    crate::replication::tap::open_database,
                );
                if let Some(b) = &self.backup {
                    let t = tap.clone();
                    b.before_checkpoint(&name, Arc::new(move || t.capture_locked().is_ok()));
                }
                pdb.with_replication(source.clone(), tap)
            }
            None => pdb,
        }
    }

    /// Whether the engine makes its own checkpoints of replicated `file` (the backup
    /// shipper makes them for databases it ships).
    pub fn checkpoints_itself(&self, file: &str) -> bool {
        file == "catalog.db" || self.backup.is_none()
    }

    /// A database by name.
    /// A name in the registry was validated when it was created, so only a miss is
    /// checked, to tell a malformed name (400) from an unknown one (404).
    pub fn get(&self, name: &str) -> Result<Arc<Pdb>> {
        if let Some(pdb) = self.pdbs.read().map_err(EngineError::internal)?.get(name) {
            return Ok(pdb.clone());
        }
        names::validate("database", name)?;
        Err(EngineError::NotFound(format!("no database named {name}")))
    }

    fn info(&self, pdb: &Pdb) -> PdbInfo {
        let record = pdb.record();
        PdbInfo {
            state: if record.open_mode.is_some() {
                "Open"
            } else {
                "Mounted"
            },
            record,
            size_bytes: files::db_size(&pdb.path),
            active_sessions: pdb.active_sessions(),
        }
    }

    /// What the API reports of a database.
    pub fn describe(&self, name: &str) -> Result<PdbInfo> {
        let pdb = self.get(name)?;
        Ok(self.info(&pdb))
    }

    /// One page of databases by name, after `after`; the next page's token when more follow.
    pub fn list(
        &self,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<(Vec<PdbInfo>, Option<String>)> {
        // Lookups by name are the hot path (a hash map); pages are sorted here.
        let map = self.pdbs.read().map_err(EngineError::internal)?;
        let mut names: Vec<&String> = map
            .keys()
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort_unstable();
        let iter = names.into_iter().filter_map(|n| map.get(n));
        let mut page: Vec<PdbInfo> = iter.take(page_size + 1).map(|p| self.info(p)).collect();
        let next = if page.len() > page_size {
            page.truncate(page_size);
            page.last().map(|p| p.record.name.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    /// Counts by state, uptime.
    pub fn status(&self) -> serde_json::Value {
        let map = self
            .pdbs
            .read()
            .map(|m| {
                m.values()
                    .map(|p| (p.record().open_mode, p.path.clone()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let storage_bytes: u64 = map.iter().map(|(_, path)| files::db_size(path)).sum();
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for (m, _) in map {
            let key = match m {
                None => "Mounted",
                Some(OpenMode::ReadWrite) => "ReadWrite",
                Some(OpenMode::ReadOnly) => "ReadOnly",
                Some(OpenMode::Restricted) => "Restricted",
            };
            *by_state.entry(key).or_default() += 1;
        }
        serde_json::json!({
            "databases": by_state.values().sum::<usize>(),
            "byState": by_state,
            "storageBytes": storage_bytes,
            "archives": self.catalog.archives().map(|a| a.len()).unwrap_or(0),
            "uptimeSeconds": self.started.elapsed().as_secs(),
        })
    }

    /// Create a database. Idempotent: asking again for an existing database with the same
    /// source returns it (`false`); with another source it is a conflict.
    pub fn create(&self, req: CreateRequest) -> Result<(PdbInfo, bool)> {
        self.create_with(req, None)
    }

    /// A scratch file for content being made (removed at the next start if left).
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.tmp_path(name)
    }

    /// Create, with the content of a restore already made in `restored` (a scratch file,
    /// moved into place or removed).
    pub fn create_restored(
        &self,
        req: CreateRequest,
        restored: PathBuf,
    ) -> Result<(PdbInfo, bool)> {
        let made = self.create_with(req, Some(restored.clone()));
        let _ = files::remove_db(&restored);
        made
    }

    /// The database `req.name` when it exists with the source `req` asks for; a conflict
    /// when it exists with another; `None` when it does not exist.
    pub fn existing(&self, req: &CreateRequest) -> Result<Option<PdbInfo>> {
        let Ok(existing) = self.get(&req.name) else {
            return Ok(None);
        };
        let rec = existing.record();
        match &req.source {
            Some(source) if !same_source(&rec.source, source) => {
                Err(EngineError::Conflict(format!(
                    "database {} exists, created from {}; this request asks for {}",
                    req.name,
                    rec.source,
                    describe_request(source)
                )))
            }
            _ => Ok(Some(self.info(&existing))),
        }
    }

    /// Open a database in `mode`. Idempotent; a mode change ends current sessions first.
    pub fn open_pdb(&self, name: &str, mode: OpenMode) -> Result<PdbInfo> {
        let pdb = self.get(name)?;
        let current = pdb.record().open_mode;
        if current == Some(mode) {
            return Ok(self.info(&pdb));
        }
        if current.is_some() {
            self.streams.end_for(name, true);
            pdb.close_sessions(true, self.opts.close_deadline)?;
        }
        self.update(&pdb, "opened", &format!("{mode:?}"), |r| {
            r.open_mode = Some(mode)
        })?;
        Ok(self.info(&pdb))
    }

    /// Close a database to Mounted, ending sessions as `mode` says. Idempotent.
    pub fn close_pdb(&self, name: &str, mode: CloseMode) -> Result<PdbInfo> {
        let pdb = self.get(name)?;
        if pdb.record().open_mode.is_none() {
            return Ok(self.info(&pdb));
        }
        self.streams.end_for(name, mode == CloseMode::Normal);
        pdb.close_sessions(mode == CloseMode::Normal, self.opts.close_deadline)?;
        self.update(&pdb, "closed", &format!("{mode:?}"), |r| r.open_mode = None)?;
        Ok(self.info(&pdb))
    }

    fn update(
        &self,
        pdb: &Pdb,
        event: &str,
        detail: &str,
        change: impl FnOnce(&mut PdbRecord),
    ) -> Result<()> {
        let mut rec = pdb.record.lock().map_err(EngineError::internal)?;
        let mut next = rec.clone();
        change(&mut next);
        next.updated_at = now();
        self.catalog.put_pdb(&next, event, detail)?;
        *rec = next;
        Ok(())
    }

    /// Change the storage quota or the lockdown profile of a database.
    pub fn configure(
        &self,
        name: &str,
        storage_quota_bytes: Option<Option<u64>>,
        profile: Option<Option<String>>,
    ) -> Result<PdbInfo> {
        let pdb = self.get(name)?;
        if let Some(Some(p)) = &profile {
            self.profile(p)?;
        }
        self.update(&pdb, "configured", "", |r| {
            if let Some(q) = storage_quota_bytes {
                r.storage_quota_bytes = q;
            }
            if let Some(p) = profile.clone() {
                r.lockdown_profile = p;
            }
        })?;
        pdb.set_rules(self.rules_for(pdb.record().lockdown_profile.as_deref()));
        Ok(self.info(&pdb))
    }

    /// Drop a database: its file is deleted, or moved to `retained/` when `keep_files`.
    pub fn drop_pdb(&self, name: &str, keep_files: bool) -> Result<()> {
        let pdb = self.get(name)?;
        self.streams.end_for(name, false);
        pdb.close_sessions(false, self.opts.close_deadline)?;
        self.flush_pdbs(std::slice::from_ref(&pdb))?;
        self.finish_backup(name);
        if let Some(source) = &self.opts.replication {
            source.drop_file(&replicated_file(name));
        }
        self.pdbs
            .write()
            .map_err(EngineError::internal)?
            .remove(name);
        self.forget_tokens_of(name)?;
        self.catalog.remove_pdb(
            name,
            "dropped",
            if keep_files {
                "files kept"
            } else {
                "files deleted"
            },
        )?;
        if keep_files {
            let kept = self
                .dir
                .join("retained")
                .join(format!("{name}-{}.db", now()));
            checkpoint(&pdb.path)?;
            files::durable_rename(&pdb.path, &kept)?;
            files::remove_db(&pdb.path)?;
        } else {
            files::remove_db(&pdb.path)?;
        }
        Ok(())
    }

    /// Seal what `name` committed into its backlog and stop its shipper (whose last pass
    /// ships it), before its files go away.
    fn finish_backup(&self, name: &str) {
        if let Some(b) = &self.backup {
            if let Err(e) = b.seal_now(name) {
                tracing::error!(database = %name, error = %e, "last commits not sealed for backup");
            }
            b.stop(name, true);
        }
    }
}

/// How a database's file is known to standbys.
fn replicated_file(name: &str) -> String {
    format!("pdbs/{name}.db")
}

/// Copy a live database with SQLite's online backup: one consistent snapshot while
/// writers go on (WAL), then fold it into a single file.
fn backup(from: &Path, to: &Path) -> Result<()> {
    let src = files::open_live_db_for_reading(from)?;
    let mut dst = files::open_db_rw(to)?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        // One step: the whole copy is one read transaction, a consistent snapshot that
        // concurrent writers (WAL) neither block nor restart.
        b.run_to_completion(i32::MAX, Duration::ZERO, None)?;
    }
    dst.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// Fold the WAL into the main file.
fn checkpoint(path: &Path) -> Result<()> {
    let conn = files::open_db_rw(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}
