//! The engine's HTTP server: shared state, the router, and what every plane shares
//! (authentication, JSON bodies, blocking work). Each plane is a module of its own:
//! - [`data`]: the JSON query API (`POST /v1/databases/{pdb}/query`);
//! - [`hrana`]: libSQL's Hrana protocol over HTTP and WebSocket (`/db/{pdb}/…`);
//! - [`admin`]: database lifecycle, archives, lockdown profiles, tokens, reports;
//! - [`observe`]: health, metrics, status and isolation figures;
//! - [`openapi`]: the document describing all of them.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod data;
pub mod hrana;
pub mod observe;
pub mod openapi;
pub mod replication;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::cgroup::CgroupReader;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;

pub use auth::request_token;

/// Largest request body accepted (bigger ones get 413 before they are read whole).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// What every handler can see.
pub struct EngineState {
    /// The databases.
    pub engine: Arc<Engine>,
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
    /// Tokens the operator may present on the admin plane; none disables the check
    /// (standalone use, on loopback only).
    pub admin_tokens: Arc<crate::admin_tokens::AdminTokens>,
    /// The tier's request rate on the data plane; `None` is unlimited.
    pub rate: Option<crate::ratelimit::RateLimiter>,
    /// The tier's concurrent sessions on the data plane.
    pub sessions: crate::isolation::ConnectionLimit,
    /// The tier's network bandwidth over data-plane bodies.
    pub network: crate::isolation::NetworkLimits,
    /// The tenant's own cgroup, when the engine made one (standalone as root).
    pub tenant_cgroup: Option<crate::cgroup::TenantCgroup>,
    /// Workers for blocking statements, sized from the cgroup CPU limit.
    pub workers: Arc<crate::workers::WorkerPool>,
    /// Signs and checks Hrana batons (a key of this process's own).
    pub batons: hrana::baton::Batons,
    /// Hashes tokens into the owner key of a stream (keyed per process).
    pub owner_hasher: std::collections::hash_map::RandomState,
    /// This engine as a member of a replicated tenant (its primary).
    pub member: Option<Arc<crate::replication::Member>>,
}

impl EngineState {
    /// The state of an engine enforcing `config`'s limits: request rate, sessions and
    /// network from the tier; nothing when a limit is unset.
    pub fn new(
        engine: Arc<Engine>,
        config: EngineConfig,
        cgroup: CgroupReader,
        instance_id: String,
        admin_token: Option<String>,
    ) -> std::result::Result<Self, prometheus::Error> {
        let workers = crate::workers::WorkerPool::new(crate::workers::pool_size(cgroup.cpu().cpus));
        Ok(EngineState {
            workers,
            engine,
            rate: crate::ratelimit::RateLimiter::for_limits(&config.limits),
            sessions: crate::isolation::ConnectionLimit::new(config.limits.connections),
            network: crate::isolation::NetworkLimits::new(config.limits.bandwidth_mbps),
            config,
            cgroup,
            instance_id,
            started: Instant::now(),
            metrics: Metrics::new()?,
            admin_tokens: Arc::new(crate::admin_tokens::AdminTokens::fixed(admin_token)),
            tenant_cgroup: None,
            batons: hrana::baton::Batons::new(),
            owner_hasher: Default::default(),
            member: None,
        })
    }
}

/// The router with every route. Paths are looked up with runs of `/` collapsed to one,
/// so a client that joins a database URL ending in `/` with `/v2/pipeline` is served.
pub fn router(state: Arc<EngineState>) -> Router {
    let routes = Router::new()
        .merge(observe::routes(state.clone()))
        .merge(data::routes())
        .merge(hrana::routes())
        .merge(admin::routes(state.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            hrana::missing_slash(uri.path())
                .unwrap_or_else(|| EngineError::NotFound("no such route; see /openapi.json".into()))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state);
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(collapse_slashes)
            .service(routes),
    )
}

/// The request with `//` runs in its path collapsed (no copy when there are none).
fn collapse_slashes(mut req: Request) -> Request {
    let path = req.uri().path();
    if !path.contains("//") {
        return req;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(q) = req.uri().query() {
        collapsed.push('?');
        collapsed.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = collapsed.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn count_requests(
    State(state): State<Arc<EngineState>>,
    req: Request,
    next: Next,
) -> Response {
    // MatchedPath holds an Arc<str>: cloning it does not allocate on this hot path.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[
            route.as_ref().map_or("unmatched", MatchedPath::as_str),
            resp.status().as_str(),
        ])
        .inc();
    resp
}

/// JSON body whose rejections are JSON errors (400 malformed, 413 too large, 415 not JSON).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EngineError;

    async fn from_request(req: Request, state: &S) -> Result<Self, EngineError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> EngineError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            EngineError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => EngineError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ),
        _ => EngineError::BadRequest(rej.body_text()),
    }
}

/// A query-string rejection as a JSON 400.
pub fn query_rejection(rej: QueryRejection) -> EngineError {
    EngineError::BadRequest(rej.body_text())
}

/// Run blocking engine work off the async threads (the operator's work: normal priority).
pub async fn blocking<T: Send + 'static>(
    state: &Arc<EngineState>,
    f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
) -> Result<T> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(EngineError::internal)?
}

/// Request body bytes as the client declared them (`Content-Length`), for the network meter.
pub fn declared_length(headers: &axum::http::HeaderMap) -> u64 {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_collapse_and_the_query_stays() {
        let req = Request::builder()
            .uri("/db//orders///v2/pipeline?x=1//2")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            collapse_slashes(req).uri().to_string(),
            "/db/orders/v2/pipeline?x=1//2"
        );
        let req = Request::builder()
            .uri("/db/orders/v3")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(collapse_slashes(req).uri().path(), "/db/orders/v3");
    }
}
