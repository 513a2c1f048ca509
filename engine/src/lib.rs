//! `tenantdb-engine`: the storage and isolation core that runs in each tenant's pod.
//! One SQLite file per pluggable database, a catalog, a seed, lockdown through the
//! authorizer, and an HTTP API. What it is told and answers lives in
//! `tenantdb-engine-api`, re-exported here under the same paths.

pub mod admin_tokens;
pub mod backup;
pub mod catalog;
pub mod cgroup;
pub use tenantdb_engine_api::config;
pub mod engine;
pub mod error;
pub mod files;
pub mod http;
pub use http::openapi;
pub mod isolation;
pub mod lockdown;
pub mod metering;
pub mod metrics;
pub use tenantdb_engine_api::names;
pub mod pdb;
pub mod query;
pub mod ratelimit;
pub mod reload;
pub mod replication;
pub mod reports;
pub mod server;
pub mod throttle;
pub mod tls;
pub mod workers;
