//! The engine's HTTP API: health, metrics, status and isolation figures.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::cgroup::CgroupReader;
use crate::config::EngineConfig;
use crate::metrics::Metrics;

/// What every handler can see.
pub struct EngineState {
    /// The configuration file's content.
    pub config: EngineConfig,
    /// Reads this process's cgroup limits.
    pub cgroup: CgroupReader,
    /// Identity of the data volume: written on its first use, kept across restarts.
    pub instance_id: String,
    /// When the engine started.
    pub started: Instant,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Token the operator presents on the admin plane; `None` disables the check (standalone use).
    pub admin_token: Option<String>,
}

/// An API error: a status and a JSON body `{code, message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// The bearer token of a request: `Authorization: Bearer T`, or `X-Tenantdb-Token: T`
/// (the API server's service proxy drops `Authorization` once it has authenticated the caller).
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or_else(|| {
            headers
                .get("x-tenantdb-token")
                .and_then(|v| v.to_str().ok())
        })
        .map(str::trim)
}

fn require_admin(state: &EngineState, headers: &HeaderMap) -> Result<(), ApiError> {
    match (&state.admin_token, request_token(headers)) {
        (None, _) => Ok(()),
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(ApiError::unauthorized("the token is not the admin token")),
        (Some(_), None) => Err(ApiError::unauthorized(
            "an admin token is required (Authorization: Bearer …)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router with every route.
pub fn router(state: Arc<EngineState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/isolation/cpu", get(isolation_cpu))
        .route("/v1/isolation/memory", get(isolation_memory))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(state): State<Arc<EngineState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

async fn metrics(State(state): State<Arc<EngineState>>) -> String {
    let cpu = state.cgroup.cpu();
    state.metrics.cpu_limit_cores.set(cpu.cpus.unwrap_or(0.0));
    state
        .metrics
        .memory_limit_bytes
        .set(state.cgroup.memory().limit_bytes.unwrap_or(0) as f64);
    state.metrics.render()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    tenant: Option<&'a str>,
    namespace: Option<&'a str>,
    tier: Option<&'a str>,
    instance_id: &'a str,
    uptime_seconds: u64,
    config: &'a EngineConfig,
}

async fn status(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state, &headers)?;
    let c = &state.config;
    Ok(Json(
        serde_json::to_value(StatusBody {
            tenant: c.tenant.as_deref(),
            namespace: c.namespace.as_deref(),
            tier: c.tier.as_deref(),
            instance_id: &state.instance_id,
            uptime_seconds: state.started.elapsed().as_secs(),
            config: c,
        })
        .unwrap_or_default(),
    ))
}

async fn isolation_cpu(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    Json(json!({"limit": state.cgroup.cpu(), "priority": state.config.priority}))
}

async fn isolation_memory(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    Json(json!({"limit": state.cgroup.memory()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> Arc<EngineState> {
        Arc::new(EngineState {
            config: EngineConfig {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            cgroup: CgroupReader::new("/nonexistent", ""),
            instance_id: "abc".into(),
            started: Instant::now(),
            metrics: Metrics::new().unwrap(),
            admin_token: token.map(String::from),
        })
    }

    async fn get(app: Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn status_needs_the_admin_token() {
        let app = router(state(Some("s3cret")));
        let (code, body) = get(app.clone(), "/v1/status", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        assert_eq!(
            get(app.clone(), "/v1/status", Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (code, body) = get(app, "/v1/status", Some("s3cret")).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("\"instanceId\":\"abc\"") && body.contains("\"tenant\":\"acme\""),
            "{body}"
        );
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route() {
        let app = router(state(None));
        get(app.clone(), "/healthz", None).await;
        let (_, body) = get(app, "/metrics", None).await;
        assert!(
            body.contains(
                r#"tenantdb_engine_http_requests_total{route="/healthz",status="200"} 1"#
            ),
            "{body}"
        );
    }

    #[test]
    fn token_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("x-tenantdb-token", "t1".parse().unwrap());
        assert_eq!(request_token(&h), Some("t1"));
        h.insert("authorization", "Bearer t2".parse().unwrap());
        assert_eq!(request_token(&h), Some("t2"));
    }
}
