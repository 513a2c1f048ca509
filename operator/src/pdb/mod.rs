//! The PluggableDatabase controller: drives a database's lifecycle inside its tenant's
//! engine through the engine's admin API and mirrors the result into status.

pub mod connection;
pub mod controller;
pub mod plan;
pub mod status;
