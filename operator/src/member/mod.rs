//! The member agent (`tenantdb-member`), run beside each engine of a replicated tenant:
//! it campaigns for the tenant's Lease, labels its pod with its role (the `-rw` and `-ro`
//! Services select by it), and tells its engine its role, epoch and how long it may
//! acknowledge writes. What to do each tick is [`plan`]; talking to the API server and
//! the engine is [`agent`]. The engine itself knows nothing of Kubernetes.

pub mod agent;
pub mod plan;
