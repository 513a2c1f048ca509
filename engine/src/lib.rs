//! `tenantdb-engine`: the storage and isolation core that runs in each tenant's pod.
//!
//! This first version serves health, metrics, its status and the CPU and memory limits
//! it reads from its own cgroup; the database engine itself grows from here.

pub mod cgroup;
pub mod config;
pub mod http;
pub mod metrics;
pub mod server;
