//! `tenantdb-engine`: the storage and isolation core that runs in each tenant's pod.
//! One SQLite file per pluggable database, a catalog, a seed, lockdown through the
//! authorizer, and an HTTP API.

pub mod backup;
pub mod catalog;
pub mod cgroup;
pub mod config;
pub mod engine;
pub mod error;
pub mod files;
pub mod http;
pub use http::openapi;
pub mod isolation;
pub mod lockdown;
pub mod metering;
pub mod metrics;
pub mod names;
pub mod pdb;
pub mod query;
pub mod ratelimit;
pub mod reports;
pub mod server;
pub mod throttle;
pub mod workers;
