//! Who is calling: the admin token (the operator), a tenant's data token, or nobody.
//! The admin plane checks once, in a route layer; the data planes ask [`data_caller`]
//! for the database a request names.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::EngineState;
use crate::error::{EngineError, Result};
use crate::pdb::Caller;

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

/// Ok when `token` is an admin token in force (or none is configured).
pub fn check_admin(state: &EngineState, token: Option<&str>) -> Result<()> {
    check_admin_token(&state.admin_tokens, token)
}

/// Ok when `token` is one of `tokens` (or none is configured): [`check_admin`] for a
/// member that has no engine open yet.
pub fn check_admin_token(
    tokens: &crate::admin_tokens::AdminTokens,
    token: Option<&str>,
) -> Result<()> {
    if !tokens.required() {
        return Ok(());
    }
    match token {
        Some(got) if tokens.accepts(got) => Ok(()),
        Some(_) => Err(EngineError::Forbidden(
            "the token presented is not this engine's admin token".into(),
        )),
        None => Err(EngineError::Unauthorized(
            "an admin token is required (Authorization: Bearer …)".into(),
        )),
    }
}

/// Ok when the request carries the admin token (or none is configured).
pub fn require_admin(state: &EngineState, headers: &HeaderMap) -> Result<()> {
    check_admin(state, request_token(headers))
}

/// Route layer of the admin plane: a request without the admin token goes no further.
pub async fn admin_only(
    State(state): State<Arc<EngineState>>,
    req: Request,
    next: Next,
) -> Response {
    match require_admin(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Who bearing `token` is calling the data plane for database `pdb`.
pub fn data_caller(state: &EngineState, token: Option<&str>, pdb: &str) -> Result<Caller> {
    // A bearer of a tenant token is a tenant, held to its databases, lockdown and limits,
    // whether or not the engine has an admin token (standalone, anyone else is admin).
    if let Some(grant) = token.and_then(|t| state.engine.token_grants(t, pdb)) {
        return grant.map(|()| Caller::Tenant);
    }
    if check_admin(state, token).is_ok() {
        return Ok(Caller::Admin);
    }
    match token {
        None => Err(EngineError::Unauthorized(
            "a token is required (Authorization: Bearer …)".into(),
        )),
        // Neither a tenant token of this engine nor the admin token.
        Some(_) => Err(crate::engine::unknown_token(pdb)),
    }
}

/// [`data_caller`], with a refusal counted on the `refused_requests` metric under
/// `plane`: a request that is refused here reaches no database, so it is never billed
/// to one nor counted against its SLA.
pub fn admit_data(
    state: &EngineState,
    token: Option<&str>,
    pdb: &str,
    plane: &str,
) -> Result<Caller> {
    data_caller(state, token, pdb).inspect_err(|e| {
        state
            .metrics
            .refused_requests
            .with_label_values(&[plane, e.code()])
            .inc();
    })
}
