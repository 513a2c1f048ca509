//! The LockdownProfile controller: validates a profile and reports where it is in
//! force. The rules reach engines through the PluggableDatabase controller, which every
//! profile change re-triggers for the databases that use it.

pub mod controller;
pub mod rules;
