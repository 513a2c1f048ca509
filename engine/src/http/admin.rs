//! The admin plane: database lifecycle, archives, lockdown profiles, tokens and the
//! usage, SLA and billing reports. Every route needs the admin token, checked once by a
//! route layer. Errors are JSON `{code, message}`; nothing a caller sends panics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, query_rejection, ApiJson, EngineState};
use crate::catalog::OpenMode;
use crate::config::BillingConfig;
use crate::engine::{CloseMode, CreateRequest};
use crate::error::{EngineError, Result};
use crate::lockdown::LockdownRules;
use crate::reports::{self, Period};

/// Routes of the admin plane, behind the admin token.
pub fn routes(state: Arc<EngineState>) -> Router<Arc<EngineState>> {
    Router::new()
        .route("/v1/databases", get(list).post(create))
        .route(
            "/v1/databases/{pdb}",
            get(describe).patch(configure).delete(drop_pdb),
        )
        .route("/v1/databases/{pdb}/open", post(open))
        .route("/v1/databases/{pdb}/close", post(close))
        .route("/v1/databases/{pdb}/unplug", post(unplug))
        .route("/v1/databases/{pdb}/history", get(history))
        .route("/v1/archives", get(archives))
        .route("/v1/archives/{name}", get(archive).delete(delete_archive))
        .route(
            "/v1/archives/{name}/data",
            get(download_archive).put(upload_archive.layer(DefaultBodyLimit::disable())),
        )
        .route("/v1/lockdown-profiles", get(profiles))
        .route(
            "/v1/lockdown-profiles/{name}",
            get(profile).put(put_profile).delete(delete_profile),
        )
        .route("/v1/usage", get(usage))
        .route("/v1/sla", get(sla))
        .route("/v1/billing", get(billing))
        .route("/v1/tokens", post(issue_token))
        .route("/v1/tokens/{id}", get(token).delete(revoke_token))
        .merge(super::backup::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::auth::admin_only,
        ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    page_size: Option<i64>,
    page_token: Option<String>,
}

async fn list(
    State(s): State<Arc<EngineState>>,
    q: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Result<Response> {
    let Query(p) = q.map_err(query_rejection)?;
    let size = p.page_size.unwrap_or(100);
    if !(1..=1000).contains(&size) {
        return Err(EngineError::BadRequest(format!(
            "pageSize must be between 1 and 1000, not {size}"
        )));
    }
    if let Some(t) = &p.page_token {
        crate::names::validate("pageToken", t)?;
    }
    let (items, next) =
        blocking(&s, move |e| e.list(size as usize, p.page_token.as_deref())).await?;
    Ok(Json(json!({"items": items, "nextPageToken": next})).into_response())
}

async fn create(
    State(s): State<Arc<EngineState>>,
    body: std::result::Result<ApiJson<CreateRequest>, EngineError>,
) -> Result<Response> {
    let ApiJson(req) = body?;
    let restore = req.source.as_ref().is_some_and(|src| src.restore.is_some());
    let (info, created) = if restore {
        super::backup::create_by_restore(&s, req).await?
    } else {
        blocking(&s, move |e| e.create(req)).await?
    };
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(info),
    )
        .into_response())
}

async fn describe(State(s): State<Arc<EngineState>>, Path(pdb): Path<String>) -> Result<Response> {
    Ok(Json(blocking(&s, move |e| e.describe(&pdb)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigureBody {
    #[serde(default, deserialize_with = "present")]
    storage_quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    lockdown_profile: Option<Option<String>>,
}

/// A field that may be absent (unchanged), null (cleared) or set.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

async fn configure(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    body: std::result::Result<ApiJson<ConfigureBody>, EngineError>,
) -> Result<Response> {
    let ApiJson(b) = body?;
    Ok(Json(
        blocking(&s, move |e| {
            e.configure(&pdb, b.storage_quota_bytes, b.lockdown_profile)
        })
        .await?,
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DropParams {
    #[serde(default)]
    keep_files: bool,
}

async fn drop_pdb(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    q: std::result::Result<Query<DropParams>, QueryRejection>,
) -> Result<Response> {
    let Query(p) = q.map_err(query_rejection)?;
    blocking(&s, move |e| e.drop_pdb(&pdb, p.keep_files)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    mode: OpenMode,
}

async fn open(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    body: std::result::Result<ApiJson<OpenBody>, EngineError>,
) -> Result<Response> {
    let ApiJson(b) = body?;
    Ok(Json(blocking(&s, move |e| e.open_pdb(&pdb, b.mode)).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    mode: CloseMode,
}

async fn close(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    body: std::result::Result<ApiJson<CloseBody>, EngineError>,
) -> Result<Response> {
    let ApiJson(b) = body?;
    Ok(Json(blocking(&s, move |e| e.close_pdb(&pdb, b.mode)).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UnplugBody {
    #[serde(default)]
    archive: Option<String>,
}

async fn unplug(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    body: std::result::Result<ApiJson<UnplugBody>, EngineError>,
) -> Result<Response> {
    let ApiJson(b) = body?;
    Ok(Json(blocking(&s, move |e| e.unplug(&pdb, b.archive)).await?).into_response())
}

async fn history(State(s): State<Arc<EngineState>>, Path(pdb): Path<String>) -> Result<Response> {
    crate::names::validate("database", &pdb)?;
    let rows = blocking(&s, move |e| e.history(&pdb)).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(event, detail, at)| json!({"event": event, "detail": detail, "at": at}))
        .collect();
    Ok(Json(json!({"items": items})).into_response())
}

async fn archives(State(s): State<Arc<EngineState>>) -> Result<Response> {
    Ok(Json(json!({"items": blocking(&s, |e| e.archives()).await?})).into_response())
}

async fn archive(State(s): State<Arc<EngineState>>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(blocking(&s, move |e| e.archive_manifest(&name)).await?).into_response())
}

async fn delete_archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
) -> Result<Response> {
    blocking(&s, move |e| e.delete_archive(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub use tenantdb_engine_api::headers::{DATABASE_HEADER, SHA256_HEADER};

async fn download_archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
) -> Result<Response> {
    let (manifest, path) = blocking(&s, move |e| e.archive_data(&name)).await?;
    let file = tokio::fs::File::open(&path).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            ("content-type", "application/octet-stream".to_string()),
            ("content-length", manifest.size_bytes.to_string()),
            (SHA256_HEADER, manifest.sha256),
            (DATABASE_HEADER, manifest.database),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    database: String,
    sha256: String,
}

async fn upload_archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    q: std::result::Result<Query<UploadParams>, QueryRejection>,
    body: Body,
) -> Result<Response> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let Query(p) = q.map_err(query_rejection)?;
    if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EngineError::BadRequest(
            "sha256 must be 64 hexadecimal characters".into(),
        ));
    }
    let path = s.engine.receive_path(&name)?;
    let received = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| EngineError::BadRequest(format!("the upload broke off: {e}")))?;
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        Ok::<_, EngineError>(())
    }
    .await;
    if let Err(e) = received {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let manifest = blocking(&s, move |e| {
        e.import_archive(&name, &p.database, &p.sha256.to_ascii_lowercase(), &path)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodParams {
    period: Option<String>,
}

fn period(q: std::result::Result<Query<PeriodParams>, QueryRejection>) -> Result<Period> {
    let Query(p) = q.map_err(query_rejection)?;
    match p.period {
        Some(text) => Period::parse(&text),
        None => Ok(Period::of(crate::catalog::now())),
    }
}

async fn usage(
    State(s): State<Arc<EngineState>>,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    let p = period(q)?;
    Ok(Json(blocking(&s, move |e| e.usage_report(p)).await?).into_response())
}

async fn sla(
    State(s): State<Arc<EngineState>>,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    let p = period(q)?;
    let targets = s.config.sla.clone();
    let report = blocking(&s, move |e| Ok(e.sla_report(p, targets.as_ref())?.1)).await?;
    Ok(Json(report).into_response())
}

async fn billing(
    State(s): State<Arc<EngineState>>,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    let p = period(q)?;
    // Standalone engines have no tier: no base price, the default price list.
    let config = s.config.billing.clone().unwrap_or(BillingConfig {
        currency: "USD".into(),
        base_price_per_month: 0.0,
        prices: Default::default(),
    });
    let usage = blocking(&s, move |e| e.usage_report(p)).await?;
    Ok(Json(reports::bill(&usage, p, &config)).into_response())
}

async fn profiles(State(s): State<Arc<EngineState>>) -> Result<Response> {
    Ok(Json(json!({"items": blocking(&s, |e| e.profiles()).await?})).into_response())
}

async fn profile(State(s): State<Arc<EngineState>>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(blocking(&s, move |e| e.profile(&name)).await?).into_response())
}

async fn put_profile(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    body: std::result::Result<ApiJson<LockdownRules>, EngineError>,
) -> Result<Response> {
    let ApiJson(rules) = body?;
    blocking(&s, move |e| e.put_profile(&name, rules)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_profile(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
) -> Result<Response> {
    blocking(&s, move |e| e.delete_profile(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    databases: Vec<String>,
    /// Seconds the token lives; forever when absent.
    #[serde(default)]
    expires_in_seconds: Option<u64>,
}

async fn issue_token(
    State(s): State<Arc<EngineState>>,
    body: std::result::Result<ApiJson<TokenBody>, EngineError>,
) -> Result<Response> {
    let ApiJson(b) = body?;
    let (id, token) = blocking(&s, move |e| {
        e.issue_token_expiring(b.databases, b.expires_in_seconds)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "token": token}))).into_response())
}

async fn token(State(s): State<Arc<EngineState>>, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(blocking(&s, move |e| e.token_info(&id)).await?).into_response())
}

async fn revoke_token(
    State(s): State<Arc<EngineState>>,
    Path(id): Path<String>,
) -> Result<Response> {
    blocking(&s, move |e| e.revoke_token(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
