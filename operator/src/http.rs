//! The operator's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;

use crate::metrics::Metrics;

/// What the endpoints report on.
pub struct Probe {
    /// Metrics to render.
    pub metrics: Metrics,
    /// Set while this replica stands by for the Lease or runs the controllers.
    pub ready: AtomicBool,
    /// The Tenant watch cache, once the controller has started.
    pub tenants: OnceLock<Store<DynamicObject>>,
}

/// The router.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe)
}

async fn readyz(State(p): State<Arc<Probe>>) -> (StatusCode, &'static str) {
    if p.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(p): State<Arc<Probe>>) -> String {
    p.metrics.render(p.tenants.get())
}
