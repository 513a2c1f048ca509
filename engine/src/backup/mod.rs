//! Continuous backup to S3-compatible object storage and point-in-time restore. The
//! design, and why it is shaped so, is in `docs/backup.md`: hooks record commits
//! (`capture`), the shipper reads the WAL (`wal`), seals segments (`segment`) into a
//! backlog on the volume and starts generations (`shipper`), a loop per database ships
//! the backlog (`ship`) to the store (`store`), and `restore` rebuilds a database as of
//! an instant from what the store holds (`layout` names it all).

pub mod capture;
pub mod layout;
pub mod restore;
pub mod segment;
pub mod ship;
pub mod shipper;
pub mod store;
pub mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use store::Store;
pub use tenantdb_engine_api::backup::{BackupConfig, ShipStatus, StoreConfig};

/// Backup of every database of one engine.
pub struct Backup {
    cfg: BackupConfig,
    store: Store,
    tenant: String,
    dir: PathBuf,
    runtime: tokio::runtime::Handle,
    running: Mutex<HashMap<String, Arc<ship::Running>>>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backup({})", self.tenant)
    }
}

impl Backup {
    /// Backup for tenant `tenant`, backlogs under `data_dir/backup`, loops on `runtime`.
    pub fn new(
        cfg: BackupConfig,
        tenant: &str,
        data_dir: &Path,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, store::StoreError> {
        let store = Store::connect(&cfg.store)?;
        Ok(Backup {
            cfg,
            store,
            tenant: tenant.to_string(),
            dir: data_dir.join("backup"),
            runtime,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tenant name backups are filed under.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Start shipping database `name` at `db`; returns what its connections' hooks
    /// record into. Idempotent.
    pub fn start(&self, name: &str, db: &Path) -> std::io::Result<Arc<capture::Capture>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = running.get(name) {
            return Ok(r.shipper.capture.clone());
        }
        let shipper = Arc::new(shipper::Shipper::open(name, db, &self.dir.join(name))?);
        let run = Arc::new(ship::Running {
            shipper: shipper.clone(),
            status: Default::default(),
            stop: CancellationToken::new(),
            checkpoint_now: Default::default(),
            force: Default::default(),
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            key: layout::database_key(&self.tenant, name),
            expired_at: Default::default(),
            snapshot_now: Default::default(),
        });
        self.runtime.spawn(ship::drive(run.clone()));
        running.insert(name.to_string(), run);
        Ok(shipper.capture.clone())
    }

    /// Run `f` under the write lock before each checkpoint of `name` (replication).
    pub fn before_checkpoint(&self, name: &str, f: shipper::BeforeCheckpoint) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            *r.shipper
                .before_checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
    }

    /// Stop shipping `name` (its loop seals and ships once more on the way out); with
    /// `forget`, its backlog directory goes too once that last pass is done.
    pub fn stop(&self, name: &str, forget: bool) {
        let run = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(run) = run {
            run.stop.cancel();
            if forget {
                let dir = self.dir.join(name);
                self.runtime.spawn(async move {
                    while Arc::strong_count(&run) > 1 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = tokio::fs::remove_dir_all(dir).await;
                });
            }
        }
    }

    /// Ship what `name` committed now (blocking, from a blocking thread; before its files
    /// go away).
    pub fn seal_now(&self, name: &str) -> Result<(), shipper::SealError> {
        let run = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let Some(r) = run else { return Ok(()) };
        let ship = |gen: &str, file: &str, bytes: Vec<u8>| {
            self.runtime
                .block_on(r.store.put_new(&format!("{}/{gen}/{file}", r.key), bytes))
                .map_err(|e| e.to_string())
        };
        r.shipper.ship_to_end(false, &ship)
    }

    /// Status of `name`'s backup.
    pub fn status(&self, name: &str) -> Option<ShipStatus> {
        let run = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)?
            .clone();
        ship::refresh_status(&run);
        let st = run.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(st)
    }

    /// Status of every database whose backup runs, by name.
    pub fn statuses(&self) -> Vec<(String, ShipStatus)> {
        let runs: Vec<(String, Arc<ship::Running>)> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, run)| (name.clone(), run.clone()))
            .collect();
        let mut all: Vec<(String, ShipStatus)> = runs
            .into_iter()
            .map(|(name, run)| {
                ship::refresh_status(&run);
                let st = run.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                (name, st)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stop every shipper and wait (at most `patience`) for their last passes, which seal
    /// and ship what was committed: a graceful stop loses nothing.
    pub async fn shutdown(&self, patience: Duration) {
        let runs: Vec<Arc<ship::Running>> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &runs {
            r.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + patience;
        while runs.iter().any(|r| Arc::strong_count(r) > 1)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ask `name`'s shipper to start a new generation (a base snapshot) now, as before a
    /// risky migration; false when it does not run.
    pub fn snapshot_now(&self, name: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .get(name)
            .map(|r| {
                r.snapshot_now
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                r.checkpoint_now.notify_one();
            })
            .is_some()
    }

    /// Ask `name`'s shipper to checkpoint now; false when it does not run.
    pub fn checkpoint(&self, name: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .get(name)
            .map(|r| r.checkpoint_now.notify_one())
            .is_some()
    }
}

#[cfg(test)]
mod tests;
