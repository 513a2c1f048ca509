//! The Tenant controller: read → validate → build (pure, `build`) → apply → status (pure, `status`).

pub mod admin_token;
pub mod build;
pub mod certificates;
pub mod controller;
pub mod credentials;
pub mod engine_access;
pub mod members;
pub mod replicas;
pub mod status;
pub mod tls;
