//! The engine: the registry of pluggable databases and every lifecycle operation on
//! them — create, open, close, clone, unplug, plug, drop — each recorded in the
//! catalog before it is acknowledged. Running statements is [`execution`].

pub mod access;
pub mod execution;
pub mod streams;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;
use serde::{Deserialize, Serialize};

use crate::catalog::{now, ArchiveRecord, Catalog, OpenMode, PdbRecord};
use crate::error::{EngineError, Result};
use crate::files;
use crate::lockdown::LockdownRules;
use crate::metering;
use crate::names;
use crate::pdb::Pdb;
use crate::reports;

/// Format tag of archives this engine writes and reads.
pub const ARCHIVE_FORMAT: &str = "tenantdb-archive/v1";

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
        }
    }
}

/// Where a new database's content comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// From the seed (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<serde_json::Value>,
    /// An empty database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty: Option<serde_json::Value>,
    /// A clone of another database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneSource>,
    /// An archive made by unplug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<PlugSource>,
    /// A backup in the object store, as of an instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreSource>>,
}

/// Restore from the backup store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSource {
    /// Tenant the backup was filed under (default: this engine's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Database name as it was.
    pub database: String,
    /// RFC 3339 instant; the latest recoverable one when absent.
    #[serde(default)]
    pub point_in_time: Option<String>,
}

/// Clone from another database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneSource {
    /// Source database.
    pub from: String,
    /// full, snapshot or metadataOnly.
    #[serde(default)]
    pub mode: CloneMode,
}

/// How a clone copies.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum CloneMode {
    /// Online backup; the source stays open for reads and writes.
    #[default]
    Full,
    /// Copy-on-write where possible, else a full copy (reported).
    Snapshot,
    /// Schema only.
    MetadataOnly,
}

/// Plug an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlugSource {
    /// Archive name.
    pub archive: String,
}

/// A create request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// New database's name.
    pub name: String,
    /// Content source; the seed when absent.
    #[serde(default)]
    pub source: Option<Source>,
    /// Open mode after creation; `None` leaves it mounted.
    #[serde(default = "default_open")]
    pub open_mode: Option<OpenMode>,
    /// Storage quota in bytes.
    #[serde(default)]
    pub storage_quota_bytes: Option<u64>,
    /// Lockdown profile.
    #[serde(default)]
    pub lockdown_profile: Option<String>,
}

fn default_open() -> Option<OpenMode> {
    Some(OpenMode::ReadWrite)
}

/// How sessions end on close.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum CloseMode {
    /// Wait for sessions (with a deadline).
    #[default]
    Normal,
    /// Interrupt and roll back running statements.
    Immediate,
    /// Disconnect at once.
    Abort,
}

/// What the API reports of a database.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbInfo {
    /// Catalog record.
    #[serde(flatten)]
    pub record: PdbRecord,
    /// `Open` or `Mounted`.
    pub state: &'static str,
    /// Size of the file with its WAL.
    pub size_bytes: u64,
    /// In-flight sessions.
    pub active_sessions: usize,
}

/// An archive's manifest (`manifest.json` beside `data.db`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`ARCHIVE_FORMAT`].
    pub format: String,
    /// Archive name.
    pub name: String,
    /// Database it came from.
    pub database: String,
    /// `PRAGMA user_version` of the data.
    pub schema_version: i64,
    /// SQLite library version that wrote it.
    pub sqlite_version: String,
    /// Size of data.db.
    pub size_bytes: u64,
    /// sha256 of data.db.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The engine.
pub struct Engine {
    dir: PathBuf,
    catalog: Catalog,
    pdbs: RwLock<HashMap<String, Arc<Pdb>>>,
    profiles: RwLock<HashMap<String, LockdownRules>>,
    tokens: RwLock<HashMap<String, (String, Vec<String>)>>,
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
        let catalog = Catalog::open(&dir.join("catalog.db"))?;
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
        for (id, hash, dbs) in engine.catalog.tokens()? {
            tokens.insert(hash, (id, serde_json::from_str(&dbs).unwrap_or_default()));
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
        match self.backup.as_ref().map(|b| b.start(&name, &path)) {
            Some(Ok(capture)) => pdb.with_capture(capture),
            Some(Err(e)) => {
                tracing::error!(database = %name, error = %e, "backup cannot start for this database");
                pdb
            }
            None => pdb,
        }
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

    fn create_with(
        &self,
        req: CreateRequest,
        restored: Option<PathBuf>,
    ) -> Result<(PdbInfo, bool)> {
        names::validate("database", &req.name)?;
        if let Some(p) = &req.lockdown_profile {
            self.profile(p)?;
        }
        let source = req.source.clone().unwrap_or(Source {
            seed: Some(serde_json::json!({})),
            empty: None,
            clone: None,
            plug: None,
            restore: None,
        });
        let chosen = [
            source.seed.is_some(),
            source.empty.is_some(),
            source.clone.is_some(),
            source.plug.is_some(),
            source.restore.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen != 1 {
            return Err(EngineError::BadRequest(
                "source sets exactly one of seed, empty, clone, plug or restore".into(),
            ));
        }
        let wanted = describe_source(&source);
        if let Ok(existing) = self.get(&req.name) {
            let rec = existing.record();
            return if same_source(&rec.source, &source) {
                Ok((self.info(&existing), false))
            } else {
                Err(EngineError::Conflict(format!(
                    "database {} exists, created from {}; this request asks for {}",
                    req.name,
                    rec.source,
                    describe_request(&source)
                )))
            };
        }
        let tmp = self.tmp_path(&req.name);
        let made = (|| -> Result<String> {
            if source.seed.is_some() {
                std::fs::copy(self.dir.join("seed.db"), &tmp)?;
                Ok(wanted.clone())
            } else if source.empty.is_some() {
                std::fs::copy(self.dir.join("empty.db"), &tmp)?;
                Ok(wanted.clone())
            } else if let Some(c) = &source.clone {
                self.clone_into(c, &tmp)
            } else if let Some(p) = &source.plug {
                self.plug_into(&p.archive, &tmp)?;
                Ok(wanted.clone())
            } else if let Some(file) = &restored {
                std::fs::rename(file, &tmp)?;
                files::remove_sidecars(file)?;
                Ok(wanted.clone())
            } else if source.restore.is_some() {
                Err(EngineError::BadRequest(
                    "a restore is made through the HTTP API (it reads the backup store)".into(),
                ))
            } else {
                Err(EngineError::BadRequest("no source".into()))
            }
        })();
        let used = match made {
            Ok(used) => used,
            Err(e) => {
                let _ = files::remove_db(&tmp);
                return Err(e);
            }
        };
        let path = self.pdb_path(&req.name);
        files::durable_rename(&tmp, &path)?;
        let t = now();
        let rec = PdbRecord {
            name: req.name.clone(),
            open_mode: req.open_mode,
            source: used.clone(),
            storage_quota_bytes: req.storage_quota_bytes,
            lockdown_profile: req.lockdown_profile.clone(),
            created_at: t,
            updated_at: t,
        };
        if let Err(e) = self.catalog.put_pdb(&rec, "created", &used) {
            let _ = files::remove_db(&path);
            return Err(e);
        }
        let pdb = Arc::new(self.handle(path, rec));
        let info = self.info(&pdb);
        self.pdbs
            .write()
            .map_err(EngineError::internal)?
            .insert(req.name, pdb);
        Ok((info, true))
    }

    fn clone_into(&self, c: &CloneSource, tmp: &Path) -> Result<String> {
        let src = self.get(&c.from)?;
        match c.mode {
            CloneMode::Full => {
                backup(&src.path, tmp)?;
                Ok(format!("clone full of {}", c.from))
            }
            CloneMode::Snapshot => {
                // Hold the write lock so the file and its WAL are one consistent state.
                let conn = files::open_db(&src.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                let wal = PathBuf::from(format!("{}-wal", src.path.display()));
                let tmp_wal = PathBuf::from(format!("{}-wal", tmp.display()));
                let cloned = files::reflink(&src.path, tmp).and_then(|()| {
                    if wal.exists() {
                        files::reflink(&wal, &tmp_wal)
                    } else {
                        Ok(())
                    }
                });
                conn.execute_batch("ROLLBACK")?;
                drop(conn);
                match cloned {
                    Ok(()) => {
                        // Fold the WAL into the clone so it is one file like every other database.
                        let c2 = files::open_db_rw(tmp)?;
                        c2.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
                        drop(c2);
                        files::remove_sidecars(tmp).ok();
                        Ok(format!("clone snapshot (reflink) of {}", c.from))
                    }
                    Err(e) => {
                        let _ = files::remove_db(tmp);
                        tracing::info!(error = %e, "no reflink here; snapshot falls back to a full copy");
                        backup(&src.path, tmp)?;
                        Ok(format!(
                            "clone snapshot of {} as a full copy (the filesystem cannot reflink)",
                            c.from
                        ))
                    }
                }
            }
            CloneMode::MetadataOnly => {
                std::fs::copy(self.dir.join("empty.db"), tmp)?;
                let from = files::open_live_db_for_reading(&src.path)?;
                let mut stmt = from.prepare("SELECT type, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid")?;
                let ddl: Vec<String> = stmt
                    .query_map([], |r| r.get::<_, String>(1))?
                    .collect::<Result<_, _>>()?;
                let version: i64 = from.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let mut to = files::open_db_rw(tmp)?;
                let tx = to.transaction()?;
                for sql in &ddl {
                    tx.execute_batch(sql)?;
                }
                tx.pragma_update(None, "user_version", version)?;
                tx.commit()?;
                to.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
                Ok(format!("clone metadataOnly of {}", c.from))
            }
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

    /// Unplug a database into an archive (manifest + data + sha256) and unregister it.
    pub fn unplug(&self, name: &str, archive: Option<String>) -> Result<Manifest> {
        let pdb = self.get(name)?;
        let archive = archive.unwrap_or_else(|| format!("{name}-{}", now()));
        names::validate("archive", &archive)?;
        if self.catalog.archive(&archive)?.is_some() {
            return Err(EngineError::Conflict(format!("archive {archive} exists")));
        }
        self.streams.end_for(name, true);
        pdb.close_sessions(true, self.opts.close_deadline)?;
        self.update(&pdb, "closed", "for unplug", |r| r.open_mode = None)?;
        self.flush_pdbs(std::slice::from_ref(&pdb))?;
        self.finish_backup(name);
        checkpoint(&pdb.path)?;
        let dir = self.dir.join("archives").join(&archive);
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data.db");
        std::fs::copy(&pdb.path, &data)?;
        files::sync_file(&data)?;
        let manifest = self.register_archive(&archive, name, &dir)?;
        self.pdbs
            .write()
            .map_err(EngineError::internal)?
            .remove(name);
        self.forget_tokens_of(name)?;
        self.catalog.remove_pdb(name, "unplugged", &manifest.name)?;
        files::remove_db(&pdb.path)?;
        Ok(manifest)
    }

    /// Write the manifest of the data in `dir/data.db` and record the archive in the catalog.
    fn register_archive(&self, archive: &str, database: &str, dir: &Path) -> Result<Manifest> {
        let data = dir.join("data.db");
        let (sha256, size) = files::sha256_file(&data)?;
        let schema_version: i64 = files::open_db(&data, OpenFlags::SQLITE_OPEN_READ_ONLY)?
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let manifest = Manifest {
            format: ARCHIVE_FORMAT.into(),
            name: archive.into(),
            database: database.into(),
            schema_version,
            sqlite_version: rusqlite::version().into(),
            size_bytes: size,
            sha256: sha256.clone(),
            created_at: now(),
        };
        files::durable_write(
            &dir.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest).map_err(EngineError::internal)?,
        )?;
        files::sync_dir(dir)?;
        self.catalog.put_archive(&ArchiveRecord {
            name: archive.into(),
            database: database.into(),
            sha256,
            size_bytes: size,
            created_at: manifest.created_at,
        })?;
        Ok(manifest)
    }

    /// An archive's manifest and the path of its data, to send it to another engine.
    pub fn archive_data(&self, archive: &str) -> Result<(Manifest, PathBuf)> {
        let manifest = self.archive_manifest(archive)?;
        Ok((
            manifest,
            self.dir.join("archives").join(archive).join("data.db"),
        ))
    }

    /// A new file under `tmp/` to receive archive `archive` into.
    pub fn receive_path(&self, archive: &str) -> Result<PathBuf> {
        names::validate("archive", archive)?;
        Ok(self.tmp_path(archive))
    }

    /// Register the data received into `received` (from [`Engine::receive_path`]) as
    /// archive `archive` of database `database`. The data must have sha256 `sha256` and be
    /// a sound SQLite database; otherwise nothing is registered and the file is removed.
    /// Receiving the same archive again is a no-op; other data under its name is a conflict.
    pub fn import_archive(
        &self,
        archive: &str,
        database: &str,
        sha256: &str,
        received: &Path,
    ) -> Result<Manifest> {
        let result = (|| {
            names::validate("archive", archive)?;
            names::validate("database", database)?;
            if let Some(existing) = self.catalog.archive(archive)? {
                return if existing.sha256 == sha256 {
                    self.archive_manifest(archive)
                } else {
                    Err(EngineError::Conflict(format!(
                        "archive {archive} exists with other content (sha256 {})",
                        existing.sha256
                    )))
                };
            }
            let check = |path: &Path| -> Result<String> {
                let conn = files::open_db(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)));
                conn.map_err(|e| {
                    EngineError::BadRequest(format!("archive {archive} is not a database: {e}"))
                })
            };
            let ok = check(received)?;
            files::remove_sidecars(received)?;
            if ok != "ok" {
                return Err(EngineError::BadRequest(format!(
                    "archive {archive} holds a damaged database: {ok}"
                )));
            }
            let (sha, size) = files::sha256_file(received)?;
            if sha != sha256 {
                return Err(EngineError::BadRequest(format!(
                    "archive {archive} failed verification: received {size} bytes with sha256 {sha}, the sender said {sha256}"
                )));
            }
            let dir = self.dir.join("archives").join(archive);
            std::fs::create_dir_all(&dir)?;
            files::durable_rename(received, &dir.join("data.db"))?;
            self.register_archive(archive, database, &dir)
        })();
        let _ = files::remove_db(received);
        result
    }

    /// Delete an archive and its files.
    pub fn delete_archive(&self, archive: &str) -> Result<()> {
        names::validate("archive", archive)?;
        let dir = self.dir.join("archives").join(archive);
        let known = self.catalog.delete_archive(archive)?;
        let present = dir.exists();
        if present {
            std::fs::remove_dir_all(&dir)?;
            files::sync_dir(&self.dir.join("archives"))?;
        }
        if !known && !present {
            return Err(EngineError::NotFound(format!("no archive named {archive}")));
        }
        Ok(())
    }

    /// Verify an archive and copy its data to `tmp`; nothing is registered here.
    fn plug_into(&self, archive: &str, tmp: &Path) -> Result<()> {
        names::validate("archive", archive)?;
        let dir = self.dir.join("archives").join(archive);
        let manifest = self.archive_manifest(archive)?;
        let data = dir.join("data.db");
        let (sha, size) = files::sha256_file(&data).map_err(|e| {
            EngineError::BadRequest(format!("archive {archive} has no readable data: {e}"))
        })?;
        if sha != manifest.sha256 || size != manifest.size_bytes {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} failed verification: data is {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}",
                manifest.size_bytes, manifest.sha256
            )));
        }
        std::fs::copy(&data, tmp)?;
        let ok: String =
            files::open_db_rw(tmp)?.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} holds a damaged database: {ok}"
            )));
        }
        Ok(())
    }

    /// An archive's manifest, checked for format.
    pub fn archive_manifest(&self, archive: &str) -> Result<Manifest> {
        names::validate("archive", archive)?;
        let path = self
            .dir
            .join("archives")
            .join(archive)
            .join("manifest.json");
        let text = std::fs::read(&path)
            .map_err(|_| EngineError::NotFound(format!("no archive named {archive}")))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            EngineError::BadRequest(format!("archive {archive} has an unreadable manifest: {e}"))
        })?;
        if m.format != ARCHIVE_FORMAT {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} is format {:?}, this engine reads {ARCHIVE_FORMAT}",
                m.format
            )));
        }
        Ok(m)
    }

    /// A database's history, oldest first: (event, detail, unix seconds).
    pub fn history(&self, name: &str) -> Result<Vec<(String, String, i64)>> {
        self.catalog.history(name)
    }

    /// Every archive.
    pub fn archives(&self) -> Result<Vec<ArchiveRecord>> {
        self.catalog.archives()
    }

    /// Create or replace a lockdown profile; databases using it apply it at their next statement.
    pub fn put_profile(&self, name: &str, rules: LockdownRules) -> Result<()> {
        names::validate("lockdown profile", name)?;
        for (field, v) in [
            ("maxStatementMillis", rules.max_statement_millis),
            ("maxStatementCpuMillis", rules.max_statement_cpu_millis),
            ("maxResultRows", rules.max_result_rows),
        ] {
            if v == Some(0) {
                return Err(EngineError::BadRequest(format!(
                    "{field} must be at least 1 (leave it out for the engine's default)"
                )));
            }
        }
        let json = serde_json::to_string(&rules).map_err(EngineError::internal)?;
        self.catalog.put_profile(name, &json)?;
        self.profiles
            .write()
            .map_err(EngineError::internal)?
            .insert(name.into(), rules.clone());
        for pdb in self.pdbs.read().map_err(EngineError::internal)?.values() {
            if pdb.record().lockdown_profile.as_deref() == Some(name) {
                pdb.set_rules(rules.clone());
            }
        }
        Ok(())
    }

    /// A profile's rules.
    pub fn profile(&self, name: &str) -> Result<LockdownRules> {
        names::validate("lockdown profile", name)?;
        self.profiles
            .read()
            .map_err(EngineError::internal)?
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no lockdown profile named {name}")))
    }

    /// Every profile.
    pub fn profiles(&self) -> Result<BTreeMap<String, LockdownRules>> {
        Ok(self
            .profiles
            .read()
            .map_err(EngineError::internal)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Delete a profile no database uses.
    pub fn delete_profile(&self, name: &str) -> Result<()> {
        names::validate("lockdown profile", name)?;
        let users: Vec<String> = self
            .pdbs
            .read()
            .map_err(EngineError::internal)?
            .values()
            .filter(|p| p.record().lockdown_profile.as_deref() == Some(name))
            .map(|p| p.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "lockdown profile {name} is used by {}",
                users.join(", ")
            )));
        }
        if !self.catalog.delete_profile(name)? {
            return Err(EngineError::NotFound(format!(
                "no lockdown profile named {name}"
            )));
        }
        self.profiles
            .write()
            .map_err(EngineError::internal)?
            .remove(name);
        Ok(())
    }

    /// The most bytes `pdb` may grow to now: its own quota (`own`), and what the tenant's storage
    /// leaves once every other database is counted. `None` when neither is set.
    fn size_budget(&self, pdb: &Pdb, own: Option<u64>) -> Option<u64> {
        let tenant = self.opts.storage_bytes.map(|limit| {
            let used = self.used_bytes();
            let mine = files::db_size(&pdb.path);
            limit.saturating_sub(used.saturating_sub(mine))
        });
        match (own, tenant) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes used by every database, measured at most once a second.
    fn used_bytes(&self) -> u64 {
        let Ok(mut used) = self.used.lock() else {
            return 0;
        };
        if used.0.elapsed() >= Duration::from_secs(1) {
            let paths: Vec<PathBuf> = self
                .pdbs
                .read()
                .map(|m| m.values().map(|p| p.path.clone()).collect())
                .unwrap_or_default();
            *used = (
                Instant::now(),
                paths.iter().map(|p| files::db_size(p)).sum(),
            );
        }
        used.1
    }

    /// Turn statement metering off or on. Only the benchmark turns it off, to measure
    /// what metering costs on the query path.
    pub fn set_metering(&self, on: bool) {
        self.metering
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fold every database's metered counters into the catalog and note that the engine
    /// is alive. Called every few seconds and at shutdown, so a crash loses at most that.
    pub fn flush_usage(&self) -> Result<()> {
        let all: Vec<Arc<Pdb>> = self
            .pdbs
            .read()
            .map_err(EngineError::internal)?
            .values()
            .cloned()
            .collect();
        self.flush_pdbs(&all)?;
        self.catalog.touch_uptime(self.started_unix, now())
    }

    fn flush_pdbs(&self, pdbs: &[Arc<Pdb>]) -> Result<()> {
        let at = now();
        let entries: Vec<_> = pdbs
            .iter()
            .map(|p| (p.name.clone(), p.meter.take(), files::db_size(&p.path)))
            .collect();
        let result = self
            .catalog
            .add_usage(&entries, &reports::Period::of(at).to_string(), at);
        if result.is_err() {
            // Not lost: put the counts back for the next flush.
            for (p, (_, u, _)) in pdbs.iter().zip(&entries) {
                p.meter.restore(u);
            }
        }
        result
    }

    /// Usage in `period`: what the catalog holds, plus what is metered since the last
    /// flush when `period` is the current one.
    pub fn usage_report(&self, period: reports::Period) -> Result<reports::UsageReport> {
        let mut rows = self.catalog.usage(&period.to_string())?;
        if period == reports::Period::of(now()) {
            let live: Vec<Arc<Pdb>> = self
                .pdbs
                .read()
                .map_err(EngineError::internal)?
                .values()
                .cloned()
                .collect();
            for p in live {
                let pending = p.meter.peek();
                let size = files::db_size(&p.path);
                match rows.iter_mut().find(|r| r.0 == p.name) {
                    Some(r) => {
                        r.1.add(&pending);
                        r.2 = size;
                    }
                    None => rows.push((p.name.clone(), pending, size, 0.0)),
                }
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(reports::usage_report(period, rows))
    }

    /// The statistics the operator surfaces: storage growth, peak request rate, average
    /// response time and error rate, for `period`.
    pub fn stats(&self, period: reports::Period) -> Result<reports::Stats> {
        let usage = self.usage_report(period)?;
        let (first, first_at, last, last_at) = self.catalog.storage_growth(&period.to_string())?;
        let span = (last_at - first_at) as f64;
        Ok(reports::Stats {
            period: period.to_string(),
            storage_bytes: usage.total.storage_bytes,
            storage_growth_bytes_per_day: if span > 0.0 {
                (last - first) as f64 / span * 86_400.0
            } else {
                0.0
            },
            peak_requests_per_minute: self.requests_per_minute.peak(),
            avg_response_ms: usage.total.usage.avg_latency_ms(),
            error_rate: usage.total.usage.error_rate(),
            requests: usage.total.usage.requests,
        })
    }

    /// Usage in `period` and the SLA report over it against `targets`.
    pub fn sla_report(
        &self,
        period: reports::Period,
        targets: Option<&crate::config::SlaTargets>,
    ) -> Result<(reports::UsageReport, reports::SlaReport)> {
        let usage = self.usage_report(period)?;
        let sla = reports::sla_report(&usage, self.uptime_percent(period)?, targets);
        Ok((usage, sla))
    }

    /// Uptime in `period` so far, in percent, counted from the engine's first run.
    pub fn uptime_percent(&self, period: reports::Period) -> Result<f64> {
        let mut runs = self.catalog.uptime()?;
        let t = now();
        for r in runs.iter_mut() {
            if r.0 == self.started_unix {
                r.1 = t;
            }
        }
        let (start, end) = period.bounds();
        let from = start.max(runs.first().map_or(start, |r| r.0));
        let to = end.min(t);
        if to <= from {
            return Ok(100.0);
        }
        let up = reports::up_seconds(&runs, from, to);
        Ok((up as f64 / (to - from) as f64 * 100.0).min(100.0))
    }

    /// Whether `sql` on database `name` once outran the inline cap.
    pub fn known_heavy(&self, name: &str, sql: &str) -> bool {
        self.pdbs
            .read()
            .ok()
            .and_then(|m| m.get(name).map(|p| p.is_heavy(sql)))
            .unwrap_or(false)
    }

    /// Remember that `sql` on database `name` outran the inline cap.
    pub fn mark_heavy(&self, name: &str, sql: &str) {
        if let Some(p) = self.pdbs.read().ok().and_then(|m| m.get(name).cloned()) {
            p.mark_heavy(sql);
        }
    }

    /// The time budget of a statement without a profile limit.
    pub fn statement_budget(&self) -> Duration {
        self.opts.default_statement_budget
    }

    /// The CPU budget of a tenant statement without a profile limit.
    pub fn statement_cpu_budget(&self) -> Option<Duration> {
        self.opts.default_statement_cpu_budget
    }

    /// Statements interrupted so far: (by their time budget, by their CPU budget).
    pub fn interruptions(&self) -> (u64, u64) {
        let get = |i: usize| self.interrupted[i].load(std::sync::atomic::Ordering::Relaxed);
        (get(0), get(1))
    }

    fn count_interruption<T>(&self, outcome: &Result<T>) {
        let i = match outcome {
            Err(EngineError::Timeout(_)) => 0,
            Err(EngineError::CpuBudget(_)) => 1,
            _ => return,
        };
        self.interrupted[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// SQLite page cache per connection, in KiB.
    pub fn cache_kib_per_connection(&self) -> u32 {
        self.opts.cache_kib_per_connection
    }

    /// What `/v1/isolation/cache` reports: the page-cache budget and the connections
    /// holding one now.
    pub fn cache_report(&self) -> serde_json::Value {
        let pdbs: Vec<Arc<Pdb>> = self
            .pdbs
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let connections: usize = pdbs.iter().map(|p| p.open_connections()).sum();
        let kib = u64::from(self.opts.cache_kib_per_connection);
        serde_json::json!({
            "pageCacheKibPerConnection": kib,
            "databases": pdbs.len(),
            "openConnections": connections,
            "pageCacheBudgetBytes": kib * 1024 * connections as u64,
            "idleConnectionsKeptPerDatabase": crate::pdb::MAX_IDLE,
        })
    }
}

/// Whether the source a database was made from (as the catalog recorded it) is the one
/// `requested`: the same kind, and for a clone the same mode and the same database.
fn same_source(recorded: &str, requested: &Source) -> bool {
    let wanted = describe_source(requested);
    match &requested.clone {
        // "clone full of a", "clone snapshot (reflink) of a", "clone snapshot of a as a full
        // copy (…)": names have no spaces, so the word after " of " is the source.
        Some(c) => {
            recorded.starts_with(&wanted)
                && recorded
                    .split_once(" of ")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    == Some(c.from.as_str())
        }
        None => recorded == wanted,
    }
}

/// A requested source in words, for a conflict's message.
fn describe_request(s: &Source) -> String {
    match &s.clone {
        Some(c) => format!("{} of {}", describe_source(s), c.from),
        None => describe_source(s),
    }
}

/// Describe a requested source the way the catalog records it.
fn describe_source(s: &Source) -> String {
    if s.empty.is_some() {
        "empty".into()
    } else if let Some(c) = &s.clone {
        let mode = match c.mode {
            CloneMode::Full => "full",
            CloneMode::Snapshot => "snapshot",
            CloneMode::MetadataOnly => "metadataOnly",
        };
        format!("clone {mode}")
    } else if let Some(p) = &s.plug {
        format!("plug of {}", p.archive)
    } else if let Some(r) = &s.restore {
        format!(
            "restore of {}/{} at {}",
            r.tenant.as_deref().unwrap_or("(this tenant)"),
            r.database,
            r.point_in_time.as_deref().unwrap_or("latest")
        )
    } else {
        "seed".into()
    }
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

#[cfg(test)]
mod source_tests {
    use super::*;

    fn clone(from: &str, mode: CloneMode) -> Source {
        Source {
            seed: None,
            empty: None,
            clone: Some(CloneSource {
                from: from.into(),
                mode,
            }),
            plug: None,
            restore: None,
        }
    }

    #[test]
    fn a_repeated_create_matches_only_the_same_source() {
        let full_a = clone("a", CloneMode::Full);
        assert!(same_source("clone full of a", &full_a));
        assert!(
            !same_source("clone full of b", &full_a),
            "another source database"
        );
        assert!(!same_source("clone full of ab", &full_a));
        assert!(!same_source("clone snapshot of a", &full_a), "another mode");
        let snap = clone("a", CloneMode::Snapshot);
        assert!(same_source("clone snapshot (reflink) of a", &snap));
        assert!(same_source(
            "clone snapshot of a as a full copy (the filesystem cannot reflink)",
            &snap
        ));
        let seed = Source {
            seed: Some(serde_json::json!({})),
            empty: None,
            clone: None,
            plug: None,
            restore: None,
        };
        assert!(same_source("seed", &seed));
        assert!(!same_source("seed-ish", &seed));
    }
}
