//! The Tenant controller: read → validate → build (pure, `build`) → apply → status (pure, `status`).

pub mod build;
pub mod controller;
pub mod status;
