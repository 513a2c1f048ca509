//! Observability routes: health, metrics, the container status, and the isolation
//! figures (`/v1/isolation/{cpu,memory,io,network,cache}`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::EngineState;
use crate::error::{EngineError, Result};

/// Health, metrics, the OpenAPI document, status and isolation routes.
pub fn routes(state: Arc<EngineState>) -> Router<Arc<EngineState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { Json(super::openapi::document()) }),
        )
        .route(
            "/v1/status",
            get(status).route_layer(axum::middleware::from_fn_with_state(
                state,
                super::auth::admin_only,
            )),
        )
        .route("/v1/isolation/cpu", get(isolation_cpu))
        .route("/v1/isolation/memory", get(isolation_memory))
        .route("/v1/isolation/io", get(isolation_io))
        .route("/v1/isolation/network", get(isolation_network))
        .route("/v1/isolation/cache", get(isolation_cache))
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
    let streams = state.engine.streams.report();
    state.metrics.streams_open.set(streams.open as f64);
    state.metrics.streams_expired.set(streams.expired as f64);
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
    if let Some(b) = &state.engine.backup {
        let now = chrono::Utc::now().timestamp_millis();
        state.metrics.observe_backup(&b.statuses(), now);
    }
    if let Some(m) = &state.member {
        state.metrics.observe_replication(&m.status());
    }
    state.metrics.render()
}

async fn status(State(state): State<Arc<EngineState>>) -> Result<impl IntoResponse> {
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
        "streams": state.engine.streams.report(),
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
