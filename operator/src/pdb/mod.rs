//! The PluggableDatabase controller: drives a database's lifecycle inside its tenant's
//! engine through the engine's admin API and mirrors the result into status.

mod access;
mod cleanup;
pub mod connection;
pub mod controller;
pub mod plan;
mod relocation;
mod report;
pub mod status;
mod tenant_engine;
