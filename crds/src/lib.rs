//! TenantDB's Kubernetes API (group `tenantdb.io`, version `v1alpha1`) and the
//! generator of its CustomResourceDefinition YAML.

pub mod generate;
pub mod lockdown;
pub mod pdb;
pub mod tenant;

pub use lockdown::{LockdownProfile, LockdownProfileSpec, LockdownProfileStatus, StatementClass};
pub use pdb::{
    CloneMode, CloneSource, CloseMode, OpenMode, PdbBackupStatus, PdbDeletionPolicy, PdbPhase,
    PdbSource, PlugSource, PluggableDatabase, PluggableDatabaseSpec, PluggableDatabaseStatus,
    RestoreSource, SeedSource,
};
pub use tenant::{
    BackupSpec, DeletionPolicy, Durability, EffectiveLimits, FailoverStatus, MemberStatus,
    ObjectStoreSpec, Priority, QuotaOverrides, SlaSummary, Tenant, TenantPhase, TenantSpec,
    TenantStatus, Tier, UsageSummary,
};

/// The API group of every TenantDB resource.
pub const GROUP: &str = "tenantdb.io";
