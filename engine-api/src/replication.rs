//! Hot standbys (`docs/ha.md`): how a tenant's engines replicate, what the member agent
//! tells its engine about its role, and what an engine reports about replication.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When a primary acknowledges a commit.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Durability {
    /// At once; standbys follow.
    Async,
    /// Once a standby has written it durably; an error when none does in time.
    Required,
    /// As `required` while a standby is connected, as `async` while none is.
    #[default]
    Preferred,
}

/// The `replication` section of the engine's configuration: present when the tenant has
/// more than one member. The engine then starts as a standby and waits for its role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationConfig {
    /// When commits are acknowledged.
    #[serde(default)]
    pub durability: Durability,
    /// How long a commit waits for a standby in `required` mode before the client gets an
    /// error (default [`DEFAULT_ACK_TIMEOUT_MILLIS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout_millis: Option<u64>,
}

/// Default wait for a standby's acknowledgement.
pub const DEFAULT_ACK_TIMEOUT_MILLIS: u64 = 5_000;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Takes writes and streams them.
    Primary,
    /// Applies the primary's stream; serves nothing writable.
    Standby,
}

/// `PUT /v1/admin/role`: the member agent's word, repeated on every Lease renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRequest {
    /// The role.
    pub role: Role,
    /// The Lease's epoch (its transitions): frames of an older epoch are refused.
    pub epoch: u64,
    /// Primary: how long from now writes may be acknowledged without another renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_for_millis: Option<u64>,
    /// Primary: the same limit as an instant of `CLOCK_MONOTONIC` in milliseconds. The
    /// agent and its engine share a kernel (one pod), so a request that waited (a frozen
    /// pod resumed) cannot extend the engine past the time the agent computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_monotonic_millis: Option<u64>,
    /// Standby: the primary's base URL (`https://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_url: Option<String>,
}

/// Where one replicated file stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilePosition {
    /// The primary's incarnation of the file (a new one after every base).
    pub incarnation: String,
    /// Transactions of that incarnation applied (standby) or captured (primary).
    pub txid: u64,
    /// Running checksum after them.
    pub checksum: String,
}

/// `GET /v1/admin/replication`: what this member is and where it stands (every field
/// defaults when absent: the member agent publishes it without `files`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicationStatus {
    /// Role in force; `None` before the agent said.
    pub role: Option<Role>,
    /// Newest epoch seen.
    pub epoch: u64,
    /// Primary: whether writes may be acknowledged now (the Lease was renewed in time).
    pub writable: bool,
    /// Standby: connected to the primary and applying.
    pub streaming: bool,
    /// Standby: it has applied everything its primary had when it last said so (a
    /// heartbeat follows each catch-up); only such a standby may be promoted.
    pub caught_up: bool,
    /// Primary: standbys connected now.
    pub standbys: u32,
    /// Durability in force.
    pub durability: Durability,
    /// Primary: acknowledged commits that waited for no standby because none was
    /// connected (`preferred`).
    pub unreplicated_commits: u64,
    /// Position of every replicated file (relative path → position).
    pub files: BTreeMap<String, FilePosition>,
    /// Primary: transactions captured but not yet acknowledged by any standby, summed
    /// over the files; standby: what the last message from the primary said it had
    /// beyond what is applied here.
    pub lag_transactions: u64,
    /// The same lag in bytes of WAL frames.
    pub lag_bytes: u64,
    /// Standby: when the last transaction was applied (unix ms).
    pub last_applied_ms: Option<i64>,
}

/// `CLOCK_MONOTONIC` now, in milliseconds: the clock `validUntilMonotonicMillis` is named
/// in (the member agent and its engine share one kernel, one pod).
pub fn monotonic_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
