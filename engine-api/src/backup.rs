//! Continuous backup as the engine is told it (the configuration's `backup`) and as it
//! reports it (a database's shipping status). How it works: `docs/backup.md`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Backup settings (the engine configuration's `backup`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups go.
    pub store: StoreConfig,
    /// The largest delay between a commit and its shipment, ms (default 1000).
    #[serde(default)]
    pub max_delay_millis: Option<u64>,
    /// Seconds between base snapshots (default a day).
    #[serde(default)]
    pub snapshot_interval_seconds: Option<u64>,
    /// Recovery window in seconds (default 7 days).
    #[serde(default)]
    pub retention_seconds: Option<u64>,
    /// WAL bytes that trigger a checkpoint (default 16 MiB).
    #[serde(default)]
    pub checkpoint_bytes: Option<u64>,
}

impl BackupConfig {
    /// The shipping delay.
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_millis.unwrap_or(1000).clamp(10, 3_600_000))
    }

    /// Time between snapshots.
    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(self.snapshot_interval_seconds.unwrap_or(86_400).max(1))
    }

    /// How often an idle shipper looks at the clock (snapshot schedule, retries).
    pub fn snapshot_check(&self) -> Duration {
        self.snapshot_interval()
            .min(Duration::from_secs(5))
            .max(self.max_delay())
    }

    /// The recovery window.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_seconds.unwrap_or(7 * 86_400).max(60))
    }

    /// WAL size that makes the shipper checkpoint.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.checkpoint_bytes.unwrap_or(16 << 20)
    }
}

/// Where backups go, as the engine's configuration names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    /// Endpoint URL (`http://127.0.0.1:7070`, `https://s3.eu-west-1.amazonaws.com`).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Region (any value for most S3-compatible stores).
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most S3-compatible stores want.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Access key id; the engine reads it from `TENANTDB_BACKUP_ACCESS_KEY_ID` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret key; from `TENANTDB_BACKUP_SECRET_ACCESS_KEY` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

/// A database's backup as its status reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ShipStatus {
    /// Current generation.
    pub generation: Option<String>,
    /// Last transaction sealed and shipped.
    pub sealed_txid: u64,
    /// Last transaction in the store.
    pub shipped_txid: u64,
    /// Its commit time (unix ms).
    pub shipped_ms: i64,
    /// Commits made and not yet in the store.
    pub pending_commits: usize,
    /// WAL bytes not yet in the store (what a lost volume would lose).
    pub backlog_bytes: u64,
    /// Age of the oldest commit not yet in the store (ms; 0 when none waits).
    pub lag_ms: i64,
    /// When the current generation's snapshot was taken (unix ms).
    pub last_snapshot_ms: i64,
    /// Bytes shipped since the engine started.
    pub shipped_bytes: u64,
    /// Failed store operations since the engine started.
    pub failures: u64,
    /// The last failure, until a shipment succeeds.
    pub last_error: Option<String>,
    /// The earliest instant a restore can reach (unix ms), from the store's listing at
    /// the last retention pass (once a minute); `None` until a generation is complete.
    pub first_recoverable_ms: Option<i64>,
}
