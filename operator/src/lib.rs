//! `tenantdb-operator`: a kube-rs controller per TenantDB resource.
//!
//! Each controller is one pipeline: read → validate and build desired objects (pure
//! functions, unit-tested from YAML fixtures) → server-side apply → write status.

pub mod conditions;
pub mod engine_client;
pub mod http;
pub mod leader;
pub mod lockdown;
pub mod member;
pub mod metrics;
pub mod pdb;
pub mod quantity;
pub mod reconciler;
pub mod runtime;
pub mod tenant;
pub mod tiers;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "tenantdb-operator";
