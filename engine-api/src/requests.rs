//! What callers send the engine and get back about databases: where a new database comes
//! from (`Source`), the create request, open and close modes, an archive's manifest; and
//! how a repeated create is matched against the source the catalog recorded.

use serde::{Deserialize, Serialize};

/// Format tag of archives the engine writes and reads.
pub const ARCHIVE_FORMAT: &str = "tenantdb-archive/v1";

/// Open mode of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OpenMode {
    /// Reads and writes.
    ReadWrite,
    /// Reads only.
    ReadOnly,
    /// Admin sessions only.
    Restricted,
}

impl OpenMode {
    /// The name the catalog stores.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenMode::ReadWrite => "ReadWrite",
            OpenMode::ReadOnly => "ReadOnly",
            OpenMode::Restricted => "Restricted",
        }
    }

    /// The mode a stored name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ReadWrite" => Some(OpenMode::ReadWrite),
            "ReadOnly" => Some(OpenMode::ReadOnly),
            "Restricted" => Some(OpenMode::Restricted),
            _ => None,
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

/// Whether the source a database was made from (as the catalog recorded it) is the one
/// `requested`: the same kind, and for a clone the same mode and the same database.
pub fn same_source(recorded: &str, requested: &Source) -> bool {
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
pub fn describe_request(s: &Source) -> String {
    match &s.clone {
        Some(c) => format!("{} of {}", describe_source(s), c.from),
        None => describe_source(s),
    }
}

/// Describe a requested source the way the catalog records it.
pub fn describe_source(s: &Source) -> String {
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

#[cfg(test)]
mod tests {
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
