//! What the API reports of a database; the requests themselves live in
//! `tenantdb-engine-api` and are re-exported here.

use super::*;

pub use tenantdb_engine_api::requests::{
    describe_request, describe_source, same_source, CloneMode, CloneSource, CloseMode,
    CreateRequest, Manifest, PlugSource, RestoreSource, Source, ARCHIVE_FORMAT,
};

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
