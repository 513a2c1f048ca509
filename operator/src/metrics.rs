//! Prometheus metrics of the operator: reconciles, errors and durations per
//! controller, and tenants by tier and phase (computed from the watch cache on scrape).

use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The operator's metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    tenants: IntGaugeVec,
}

impl Metrics {
    /// Create and register every family.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tenantdb_operator".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles by controller"),
            &["controller"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles by controller and error kind",
            ),
            &["controller", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Reconcile duration by controller",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )?;
        let tenants = IntGaugeVec::new(
            Opts::new("tenants", "Tenants by tier and phase"),
            &["tier", "phase"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
        })
    }

    /// Count one reconcile of `controller`, failed with `error` when given.
    pub fn observe_reconcile(&self, controller: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors.with_label_values(&[controller, e]).inc();
        }
    }

    /// Text exposition, with the tenant gauge recomputed from `tenants`.
    pub fn render(&self, tenants: Option<&Store<DynamicObject>>) -> String {
        if let Some(store) = tenants {
            self.tenants.reset();
            for t in store.state() {
                let tier = t
                    .data
                    .pointer("/spec/tier")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown");
                let phase = t
                    .data
                    .pointer("/status/phase")
                    .and_then(|v| v.as_str())
                    .unwrap_or("Pending");
                self.tenants.with_label_values(&[tier, phase]).inc();
            }
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_and_errors() {
        let m = Metrics::new().unwrap();
        m.observe_reconcile("tenant", Duration::from_millis(3), None);
        m.observe_reconcile("tenant", Duration::from_millis(3), Some("kube"));
        let text = m.render(None);
        assert!(
            text.contains(r#"tenantdb_operator_reconciles_total{controller="tenant"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tenantdb_operator_reconcile_errors_total{controller="tenant",error="kube"} 1"#
            ),
            "{text}"
        );
    }
}
