//! The JSON data plane: `POST /v1/databases/{pdb}/query`, one statement or a batch in
//! one transaction, under the tier's rate, session, IO and network limits.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use super::auth::{admit_data, request_token};
use super::{ApiJson, EngineState};
use crate::error::{EngineError, Result};
use crate::pdb::Caller;
use crate::query::QueryRequest;

/// How long a statement may run on an async worker before it moves to the blocking pool.
const INLINE_CAP: std::time::Duration = std::time::Duration::from_millis(2);

/// The query route.
pub fn routes() -> Router<Arc<EngineState>> {
    Router::new().route("/v1/databases/{pdb}/query", post(run_query))
}

async fn run_query(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<ApiJson<QueryRequest>, EngineError>,
) -> Response {
    let started = std::time::Instant::now();
    let bytes_in = super::declared_length(&headers);
    // A stranger (no token, or one of no use here) is refused before anything is metered:
    // nobody is billed for requests they did not make.
    let caller = match admit_data(&s, request_token(&headers), &pdb, "query") {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // Every admitted request on an existing database is metered, refusals included (the
    // SLA error rate).
    let metered = s.engine.get(&pdb).ok();
    s.engine
        .requests_per_minute
        .record(crate::catalog::now().max(0) as u64);
    let (resp, bytes_out) = match query_or_refuse(&s, pdb, caller, body).await {
        Ok(r) => r,
        Err(e) => (e.into_response(), 0),
    };
    s.network.charge(bytes_in, bytes_out);
    if let Some(p) = metered {
        let error = !resp.status().is_success();
        p.meter
            .record_request(started.elapsed(), bytes_in, bytes_out, error);
    }
    resp
}

async fn query_or_refuse(
    s: &Arc<EngineState>,
    pdb: String,
    caller: Caller,
    body: std::result::Result<ApiJson<QueryRequest>, EngineError>,
) -> Result<(Response, u64)> {
    let rate = s.rate.as_ref().map(|r| r.check());
    if let Some(d) = rate.filter(|d| !d.allowed) {
        let message = format!(
            "over the tier's request rate (burst {}); retry in {} s",
            d.limit, d.retry_after_secs
        );
        let mut resp = EngineError::RateLimited(message).into_response();
        rate_headers(resp.headers_mut(), &d);
        resp.headers_mut()
            .insert("retry-after", d.retry_after_secs.into());
        return Ok((resp, 0));
    }
    let _slot = s.sessions.acquire()?;
    // Work waits while the tenant is over its IO or network limits: the bytes and pages
    // earlier requests used are paid for first.
    let wait = s.engine.io.wait().max(s.network.wait());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let (mut resp, n) = query_response(s, pdb, caller, body).await?;
    if let Some(d) = rate {
        rate_headers(resp.headers_mut(), &d);
    }
    Ok((resp, n))
}

/// `X-RateLimit-Limit` (the burst), `-Remaining` (requests left now) and `-Reset`
/// (seconds until the bucket is full again).
fn rate_headers(h: &mut HeaderMap, d: &crate::ratelimit::Decision) {
    h.insert("x-ratelimit-limit", d.limit.into());
    h.insert("x-ratelimit-remaining", d.remaining.into());
    h.insert("x-ratelimit-reset", d.reset_secs.into());
}

async fn query_response(
    s: &Arc<EngineState>,
    pdb: String,
    caller: Caller,
    body: std::result::Result<ApiJson<QueryRequest>, EngineError>,
) -> Result<(Response, u64)> {
    let ApiJson(req) = body?;
    let single = req.batch.is_none();
    // Fast path: a single SELECT runs right here, capped at INLINE_CAP. Readers never wait
    // for locks under WAL, so the cap bounds how long this async worker is held; a
    // statement that needs longer is interrupted (rolled back whole) and runs again on the
    // blocking pool with its full budget. Everything else goes to the blocking pool.
    // A SELECT that outran the cap once is known heavy: it goes straight to the pool,
    // behind short work, instead of holding an async worker for the cap again.
    let select = single && req.sql.as_deref().is_some_and(crate::query::is_select);
    let known_heavy = select && s.engine.known_heavy(&pdb, req.sql.as_deref().unwrap_or(""));
    let first = if select && !known_heavy {
        s.engine
            .query_capped(&pdb, &req, caller, Some(INLINE_CAP))?
    } else {
        None
    };
    let results = match first {
        Some(r) => r,
        None => {
            // A SELECT here is heavy: known, or it just outran the cap.
            if select && !known_heavy {
                s.engine.mark_heavy(&pdb, req.sql.as_deref().unwrap_or(""));
            }
            let class = match caller {
                Caller::Admin => crate::workers::Class::Admin,
                Caller::Tenant if select => crate::workers::Class::Heavy,
                Caller::Tenant => crate::workers::Class::Tenant,
            };
            let engine = s.engine.clone();
            let (results, pending) = s
                .workers
                .run(class, move || {
                    crate::replication::deferring(|| engine.query(&pdb, req, caller))
                })
                .await
                .map_err(EngineError::internal)?;
            let results = results?;
            // With standbys (`required`), the answer waits for them, not the worker.
            crate::replication::acknowledged(pending)
                .await
                .map_err(|e| EngineError::NotAcknowledged(e.to_string()))?;
            results
        }
    };
    let body = if single {
        serde_json::to_vec(&results[0])
    } else {
        serde_json::to_vec(&json!({"results": results}))
    }
    .map_err(EngineError::internal)?;
    let n = body.len() as u64;
    Ok((
        ([("content-type", "application/json")], body).into_response(),
        n,
    ))
}
