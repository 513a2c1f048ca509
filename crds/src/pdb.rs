//! `PluggableDatabase`: one database inside a tenant's engine.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pluggable database (PDB) in its tenant's engine: one SQLite file, created from
/// the seed, cloned from another PDB, or plugged in from an archive.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "PluggableDatabase",
    namespaced,
    shortname = "pldb",
    category = "tenantdb",
    status = "PluggableDatabaseStatus",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenant"}"#,
    printcolumn = r#"{"name":"Open mode","type":"string","jsonPath":".status.openMode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("PluggableDatabase names are DNS labels: at most 63 lowercase letters, digits and '-'")
)]
#[serde(rename_all = "camelCase")]
pub struct PluggableDatabaseSpec {
    /// The Tenant (same namespace) whose engine holds this database. Changing it relocates the database.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.tenant names the Tenant that holds this database"))]
    pub tenant: String,
    /// Where the database's first content comes from. Exactly one of seed, clone or plug; immutable.
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("(has(self.seed) ? 1 : 0) + (has(self.clone) ? 1 : 0) + (has(self.plug) ? 1 : 0) + (has(self.restore) ? 1 : 0) == 1").message("spec.source sets exactly one of seed, clone, plug or restore"),
        validation = Rule::new("self == oldSelf").message("spec.source is immutable: create a new PluggableDatabase instead")
    )]
    pub source: PdbSource,
    /// The open mode wanted now.
    #[serde(default)]
    pub open_mode: OpenMode,
    /// How sessions end when the database leaves an open mode.
    #[serde(default)]
    pub close_mode: CloseMode,
    /// Storage quota for this database, as a quantity (e.g. `1Gi`); writes past it get HTTP 507.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storageQuota must be a positive quantity such as 1Gi"))]
    #[schemars(length(max = 32))]
    pub storage_quota: Option<String>,
    /// LockdownProfile enforced on tenant statements; defaults to the Tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockdown_profile: Option<String>,
    /// What deleting this object does to the data: Delete, Unplug (archive then drop) or Retain (keep the file).
    #[serde(default)]
    pub deletion_policy: PdbDeletionPolicy,
    /// Name of the archive written when `deletionPolicy: Unplug` runs (default
    /// `<name>-<UTC timestamp>`), so another PluggableDatabase can name it in `source.plug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub unplug_archive: Option<String>,
    /// How long the token in the connection Secret lives (`30m`, `24h`, `7d`); forever
    /// when absent. The operator writes a new one after two thirds of it; the old one
    /// works until it expires, so applications have a third of the lifetime to reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h|d)$') && !self.matches('^0+[smhd]$')").message("tokenLifetime is a positive number and a unit: s, m, h or d (24h)"))]
    #[schemars(length(max = 16))]
    pub token_lifetime: Option<String>,
}

/// Where a database's first content comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PdbSource {
    /// Copy the engine's seed database (`PDB$SEED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSource>,
    /// Clone another database of the same tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneSource>,
    /// Plug in an archive made by an unplug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<PlugSource>,
    /// Restore from the tenant's backup store, as of an instant: always a new database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSource>,
}

/// Restore a database from the backup store (the holding Tenant's `spec.backup.store`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The tenant the backup is filed under; the holding Tenant when absent. A database
    /// can be restored after its tenant is gone, into another tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The database's name as it was.
    pub database: String,
    /// RFC 3339 instant to restore to; the latest recoverable one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')").message("pointInTime is an RFC 3339 instant such as 2026-12-01T05:40:42Z"))]
    pub point_in_time: Option<String>,
}

impl Default for PdbSource {
    fn default() -> Self {
        PdbSource {
            seed: Some(SeedSource {}),
            clone: None,
            plug: None,
            restore: None,
        }
    }
}

/// Create from the seed database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SeedSource {}

/// Clone from another database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CloneSource {
    /// The PluggableDatabase to copy (same namespace and tenant).
    pub from: String,
    /// full (hot online copy), snapshot (copy-on-write where possible) or metadataOnly (schema only).
    #[serde(default)]
    pub mode: CloneMode,
}

/// How a clone copies its source.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum CloneMode {
    /// Online backup while the source stays open.
    #[default]
    Full,
    /// Reflink copy where the filesystem can; otherwise a full copy, reported as such.
    Snapshot,
    /// Schema without rows.
    MetadataOnly,
}

/// Plug in an archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PlugSource {
    /// Archive name in the tenant's engine (as reported in an unplugged database's status).
    pub archive: String,
}

/// Open mode of a database.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Reads and writes.
    #[default]
    ReadWrite,
    /// Reads only.
    ReadOnly,
    /// Admin sessions only.
    Restricted,
    /// Registered but closed to every session.
    Mounted,
}

/// How sessions are ended when the database closes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum CloseMode {
    /// Wait for sessions to finish (with a deadline).
    #[default]
    Normal,
    /// Roll back open transactions and disconnect.
    Immediate,
    /// Disconnect at once.
    Abort,
}

/// What deleting a PluggableDatabase does to its data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PdbDeletionPolicy {
    /// Drop the database and its file.
    #[default]
    Delete,
    /// Unplug to an archive, then drop.
    Unplug,
    /// Unregister but keep the file.
    Retain,
}

/// Phase of a PluggableDatabase, as `kubectl get pldb` shows it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdbPhase {
    /// Waiting for its Tenant (or a clone source) to be ready.
    Pending,
    /// Open in some mode.
    Open,
    /// Registered, closed to every session.
    Mounted,
    /// Moving to another tenant.
    Relocating,
    /// Being deleted (dropped, unplugged or released by its deletion policy).
    Deleting,
    /// The engine refused or lost it.
    Failed,
    /// The spec cannot be acted on until it changes.
    Invalid,
}

impl PdbPhase {
    /// The phase's name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            PdbPhase::Pending => "Pending",
            PdbPhase::Open => "Open",
            PdbPhase::Mounted => "Mounted",
            PdbPhase::Relocating => "Relocating",
            PdbPhase::Deleting => "Deleting",
            PdbPhase::Failed => "Failed",
            PdbPhase::Invalid => "Invalid",
        }
    }
}

/// What is true of the database now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PluggableDatabaseStatus {
    /// Where the database stands: Pending, Open, Mounted, Relocating, Deleting, Failed or
    /// Invalid (the Ready condition says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PdbPhase>,
    /// Ready and Progressing, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The open mode the engine reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_mode: Option<OpenMode>,
    /// Size of the database file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Size as a readable quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The source actually used (e.g. `snapshot` fell back to `full copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The tenant currently holding the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The lockdown profile the engine enforces on this database now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockdown_profile: Option<String>,
    /// Storage quota in force, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_quota_bytes: Option<u64>,
    /// The Secret with the database's connection details for applications: `LIBSQL_URL`
    /// (the Hrana URL by in-cluster Service DNS), `LIBSQL_WS_URL` and `LIBSQL_AUTH_TOKEN`
    /// (a token for this database alone, revoked when the database is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    /// Continuous backup of this database, when its Tenant has `spec.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PdbBackupStatus>,
}

/// Where a database's continuous backup stands (conditions `BackupHealthy`,
/// `BackupLagging` and `BackupFailing` say what it means).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PdbBackupStatus {
    /// The last transaction in the object store (counted from the database's creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shipped_transaction: Option<u64>,
    /// Its commit time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shipped_time: Option<String>,
    /// The earliest instant a restore can reach (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverable_time: Option<String>,
    /// The latest instant a restore can reach: the last shipped commit, or the snapshot
    /// when nothing was committed since (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverable_time: Option<String>,
    /// When the current generation's base snapshot was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_time: Option<String>,
    /// Age of the oldest commit not yet in the store, in milliseconds (0: nothing waits).
    #[serde(default)]
    pub lag_millis: i64,
    /// Commits made and not yet in the store.
    #[serde(default)]
    pub pending_commits: u64,
    /// WAL bytes not yet in the store: what losing the volume now would lose.
    #[serde(default)]
    pub backlog_bytes: u64,
    /// The store's last error, while shipping fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
