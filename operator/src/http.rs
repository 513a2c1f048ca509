//! The operator's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`. Three fixed GET
//! routes, served with hyper (already in the tree through kube) rather than a web framework.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

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

/// The answer to a request for `path` with `method`: status and plain-text body.
pub fn answer(probe: &Probe, method: &Method, path: &str) -> (StatusCode, String) {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match path {
        "/healthz" => (StatusCode::OK, "ok".into()),
        "/readyz" if probe.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok".into()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting".into()),
        "/metrics" => (StatusCode::OK, probe.metrics.render(probe.tenants.get())),
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Serve the endpoints on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, probe: Arc<Probe>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            },
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (status, body) = answer(&probe, req.method(), req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            metrics: Metrics::new().expect("metrics"),
            ready: AtomicBool::new(false),
            tenants: OnceLock::new(),
        }
    }

    #[test]
    fn readiness_follows_the_flag_and_unknown_paths_are_404() {
        let p = probe();
        assert_eq!(answer(&p, &Method::GET, "/healthz").0, StatusCode::OK);
        assert_eq!(
            answer(&p, &Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        p.ready.store(true, Ordering::Relaxed);
        assert_eq!(answer(&p, &Method::GET, "/readyz").0, StatusCode::OK);
        assert_eq!(answer(&p, &Method::GET, "/x").0, StatusCode::NOT_FOUND);
        assert_eq!(
            answer(&p, &Method::POST, "/healthz").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http_until_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = watch::channel(false);
        let p = probe();
        p.metrics
            .observe_reconcile("tenant", std::time::Duration::from_millis(3), None);
        let server = tokio::spawn(serve(listener, Arc::new(p), stop_rx));
        let resp = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("get");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        let body = resp.text().await.expect("body");
        assert!(
            body.contains(r#"tenantdb_operator_reconciles_total{controller="tenant"} 1"#),
            "{body}"
        );
        let missing = reqwest::get(format!("http://{addr}/nope"))
            .await
            .expect("get");
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
        stop_tx.send(true).expect("stop");
        server.await.expect("server ends");
    }
}
