//! The HTTP server's shared state, authentication, and the observability routes
//! (health, metrics, status, isolation); `api` adds the data and admin planes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::cgroup::CgroupReader;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::metrics::Metrics;

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
    /// Token the operator presents on the admin plane; `None` disables the check (standalone use).
    pub admin_token: Option<String>,
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
            rate: config.rate_limiter(),
            sessions: crate::isolation::ConnectionLimit::new(config.limits.connections),
            network: crate::isolation::NetworkLimits::new(config.limits.bandwidth_mbps),
            config,
            cgroup,
            instance_id,
            started: Instant::now(),
            metrics: Metrics::new()?,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            tenant_cgroup: None,
        })
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

/// Ok when the request carries the admin token (or none is configured).
pub fn require_admin(state: &EngineState, headers: &HeaderMap) -> Result<()> {
    match (&state.admin_token, request_token(headers)) {
        (None, _) => Ok(()),
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(EngineError::Forbidden(
            "the token presented is not this engine's admin token".into(),
        )),
        (Some(_), None) => Err(EngineError::Unauthorized(
            "an admin token is required (Authorization: Bearer …)".into(),
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
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/v1/status", get(status))
        .route("/v1/isolation/cpu", get(isolation_cpu))
        .route("/v1/isolation/memory", get(isolation_memory))
        .route("/v1/isolation/io", get(isolation_io))
        .route("/v1/isolation/network", get(isolation_network))
        .route("/v1/isolation/cache", get(isolation_cache))
        .merge(crate::api::routes())
        .fallback(|| async { EngineError::NotFound("no such route; see /openapi.json".into()) })
        .layer(DefaultBodyLimit::max(crate::api::MAX_BODY_BYTES))
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

async fn metrics(State(state): State<Arc<EngineState>>) -> String {
    let cpu = state.cgroup.cpu();
    state.metrics.cpu_limit_cores.set(cpu.cpus.unwrap_or(0.0));
    state
        .metrics
        .memory_limit_bytes
        .set(state.cgroup.memory().limit_bytes.unwrap_or(0) as f64);
    state
        .metrics
        .storage_limit_bytes
        .set(state.config.limits.storage_bytes.unwrap_or(0) as f64);
    let (engine, targets) = (state.engine.clone(), state.config.sla.clone());
    let reports = tokio::task::spawn_blocking(move || {
        let period = crate::reports::Period::of(crate::catalog::now());
        engine.sla_report(period, targets.as_ref())
    })
    .await;
    match reports {
        Ok(Ok((usage, sla))) => state.metrics.observe_reports(&usage, &sla),
        Ok(Err(e)) => tracing::warn!(error = %e, "usage for /metrics"),
        Err(e) => tracing::warn!(error = %e, "usage for /metrics"),
    }
    state.metrics.render()
}

async fn status(
    State(state): State<Arc<EngineState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    require_admin(&state, &headers)?;
    let (engine, targets) = (state.engine.clone(), state.config.sla.clone());
    let (sla, stats) = tokio::task::spawn_blocking(move || {
        let period = crate::reports::Period::of(crate::catalog::now());
        let (_, sla) = engine.sla_report(period, targets.as_ref())?;
        Ok::<_, EngineError>((sla, engine.stats(period)?))
    })
    .await
    .map_err(EngineError::internal)??;
    let c = &state.config;
    Ok(Json(json!({
        "sla": {"compliant": sla.compliant, "uptimePercent": sla.uptime_percent,
                "violations": sla.violations, "p99LatencyMs": sla.total.p99_latency_ms},
        "stats": stats,
        "tenant": c.tenant,
        "namespace": c.namespace,
        "tier": c.tier,
        "instanceId": state.instance_id,
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "limits": c.limits,
        "container": state.engine.status(),
    })))
}

async fn isolation_cpu(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    let (time_budget, cpu_budget) = state.engine.interruptions();
    Json(json!({
        "limit": state.cgroup.cpu(),
        "priority": state.config.priority,
        "sessions": state.sessions.report(),
        "workers": state.workers.report(),
        "statementBudgetMillis": state.engine.statement_budget().as_millis() as u64,
        "statementCpuBudgetMillis": state.engine.statement_cpu_budget().map(|d| d.as_millis() as u64),
        "interrupted": {
            "timeBudget": time_budget,
            "cpuBudget": cpu_budget,
        },
        "tenantCgroup": state.tenant_cgroup,
    }))
}

async fn isolation_memory(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    let (heap_limit, heap_used) = crate::isolation::sqlite_heap();
    Json(json!({
        "limit": state.cgroup.memory(),
        "pageCacheKibPerConnection": state.engine.cache_kib_per_connection(),
        "sqliteHeap": {
            "hardLimitBytes": heap_limit,
            "usedBytes": heap_used,
        },
        "tenantCgroup": state.tenant_cgroup,
    }))
}

async fn isolation_io(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    let file = state
        .tenant_cgroup
        .as_ref()
        .and_then(|c| c.io_file.as_deref());
    Json(state.engine.io.report(file))
}

async fn isolation_network(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    Json(state.network.report(state.config.limits.bandwidth_mbps))
}

async fn isolation_cache(State(state): State<Arc<EngineState>>) -> impl IntoResponse {
    Json(state.engine.cache_report())
}
