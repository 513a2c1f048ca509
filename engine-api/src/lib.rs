//! `tenantdb-engine-api`: the engine's contract with whoever drives it. Its configuration
//! file, the admin API's requests and reports, the rules of a lockdown profile, how names
//! are checked and the headers the API uses. Types and pure checks only: the operator and
//! the plugin build on this crate without linking SQLite or the engine's server.

pub mod backup;
pub mod config;
pub mod headers;
pub mod lockdown;
pub mod names;
pub mod replication;
pub mod requests;
