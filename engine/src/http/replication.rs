//! The replication plane (`docs/ha.md`), on every member, admin token required:
//! `PUT /v1/admin/role` (the member agent), `GET /v1/admin/replication` (status) and
//! `GET /v1/replication/stream` (a standby's WebSocket to its primary). A member that is
//! not the primary answers the data planes with 503 and says where writes go.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use tenantdb_engine_api::replication::{Role, RoleRequest};

use super::auth::request_token;
use super::ApiJson;
use crate::error::EngineError;
use crate::replication::Member;

fn admit(member: &Member, headers: &HeaderMap) -> Result<(), EngineError> {
    super::auth::check_admin_token(member.admin_tokens(), request_token(headers))
}

async fn role(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<Response, EngineError> {
    admit(&member, &headers)?;
    Ok(Json(member.set_role(req).await?).into_response())
}

async fn status(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
) -> Result<Response, EngineError> {
    admit(&member, &headers)?;
    Ok(Json(member.status()).into_response())
}

async fn stream(
    State(member): State<Arc<Member>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, EngineError> {
    admit(&member, &headers)?;
    let source = member.source().ok_or_else(|| {
        EngineError::Conflict("this member is not the primary: follow the primary".into())
    })?;
    let tmp = member.tmp_dir();
    Ok(ws
        .max_message_size(64 << 20)
        .on_upgrade(move |socket| crate::replication::stream::serve(source, socket, tmp)))
}

/// The replication routes.
pub fn routes(member: Arc<Member>) -> Router {
    Router::new()
        .route("/v1/admin/role", put(role))
        .route("/v1/admin/replication", get(status))
        .route("/v1/replication/stream", get(stream))
        .with_state(member)
}

/// What a member that is not (yet) the primary serves: health, readiness while it
/// follows, the replication routes, and a 503 naming where writes go for the rest.
pub fn standby_router(member: Arc<Member>) -> Router {
    let (ready, observed) = (member.clone(), member.clone());
    let metrics = crate::metrics::Metrics::new().ok().map(Arc::new);
    routes(member)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let (m, metrics) = (observed.clone(), metrics.clone());
                async move {
                    let Some(metrics) = metrics else {
                        return String::new();
                    };
                    metrics.observe_replication(&m.status());
                    metrics.render()
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let m = ready.clone();
                async move {
                    let st = m.status();
                    if st.role == Some(Role::Standby) && st.streaming {
                        Ok("ok")
                    } else {
                        Err(EngineError::Unavailable(
                            "this member is not following a primary yet".into(),
                        ))
                    }
                }
            }),
        )
        .fallback(|| async {
            EngineError::Unavailable(
                "this member is a standby: writes and reads go to the tenant's -rw Service".into(),
            )
        })
}
