//! `tenantdb-engine`: the storage and isolation core that runs in each tenant's pod.

pub mod cgroup;
