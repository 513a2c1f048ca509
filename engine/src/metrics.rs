//! Prometheus metrics the engine exports at `/metrics`.

use prometheus::{Encoder, Gauge, IntCounterVec, Opts, Registry, TextEncoder};

/// The engine's metric families, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status code.
    pub http_requests: IntCounterVec,
    /// CPU limit from the cgroup, in cores (0 when unlimited).
    pub cpu_limit_cores: Gauge,
    /// Memory limit from the cgroup, in bytes (0 when unlimited).
    pub memory_limit_bytes: Gauge,
}

impl Metrics {
    /// Create and register every family.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tenantdb_engine".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let cpu_limit_cores = Gauge::new(
            "cpu_limit_cores",
            "CPU limit read from the cgroup (0 = unlimited)",
        )?;
        let memory_limit_bytes = Gauge::new(
            "memory_limit_bytes",
            "Memory limit read from the cgroup (0 = unlimited)",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(cpu_limit_cores.clone()))?;
        registry.register(Box::new(memory_limit_bytes.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            cpu_limit_cores,
            memory_limit_bytes,
        })
    }

    /// The text exposition format of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
