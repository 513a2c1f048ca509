//! The engine's HTTP API: the data plane (`POST /v1/databases/{pdb}/query`) and the
//! admin plane (database lifecycle, archives, lockdown profiles, tokens). Errors are
//! JSON `{code, message}` with the status that fits; nothing a caller sends panics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::OpenMode;
use crate::config::BillingConfig;
use crate::engine::{CloseMode, CreateRequest, Engine};
use crate::error::{EngineError, Result};
use crate::http::{request_token, EngineState};
use crate::lockdown::LockdownRules;
use crate::pdb::Caller;
use crate::query::QueryRequest;
use crate::reports::{self, Period};

/// How long a statement may run on an async worker before it moves to the blocking pool.
const INLINE_CAP: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether `sql` starts with SELECT (after white space).
fn is_select(sql: &str) -> bool {
    sql.trim_start()
        .as_bytes()
        .get(..6)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"SELECT"))
}

/// Largest request body accepted (bigger ones get 413 before they are read whole).
pub const MAX_BODY_BYTES: usize = 8 << 20;

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

fn query_rejection(rej: QueryRejection) -> EngineError {
    EngineError::BadRequest(rej.body_text())
}

fn admin(state: &EngineState, headers: &HeaderMap) -> Result<()> {
    crate::http::require_admin(state, headers)
}

/// Who is calling the data plane for database `pdb`.
fn data_caller(state: &EngineState, headers: &HeaderMap, pdb: &str) -> Result<Caller> {
    let token = request_token(headers);
    // A bearer of a tenant token is a tenant, held to its databases, lockdown and limits,
    // whether or not the engine has an admin token (standalone, anyone else is admin).
    if let Some(grant) = token.and_then(|t| state.engine.token_grants(t, pdb)) {
        return grant.map(|()| Caller::Tenant);
    }
    if admin(state, headers).is_ok() {
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

/// Run blocking engine work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &Arc<EngineState>,
    f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
) -> Result<T> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(EngineError::internal)?
}

/// Routes of the data and admin planes.
pub fn routes() -> Router<Arc<EngineState>> {
    Router::new()
        .route("/v1/databases", get(list).post(create))
        .route(
            "/v1/databases/{pdb}",
            get(describe).patch(configure).delete(drop_pdb),
        )
        .route("/v1/databases/{pdb}/query", post(run_query))
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
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
}

async fn run_query(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<ApiJson<QueryRequest>, EngineError>,
) -> Response {
    let started = std::time::Instant::now();
    let bytes_in = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Every request on an existing database is metered, refusals included (SLA error rate).
    let metered = s.engine.get(&pdb).ok();
    s.engine
        .requests_per_minute
        .record(crate::catalog::now().max(0) as u64);
    let (resp, bytes_out) = match query_or_refuse(&s, pdb, &headers, body).await {
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
    headers: &HeaderMap,
    body: std::result::Result<ApiJson<QueryRequest>, EngineError>,
) -> Result<(Response, u64)> {
    let caller = data_caller(s, headers, &pdb)?;
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
    let select = single && req.sql.as_deref().is_some_and(is_select);
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
            s.workers
                .run(class, move || engine.query(&pdb, req, caller))
                .await
                .map_err(EngineError::internal)??
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    page_size: Option<i64>,
    page_token: Option<String>,
}

async fn list(
    State(s): State<Arc<EngineState>>,
    headers: HeaderMap,
    q: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    body: std::result::Result<ApiJson<CreateRequest>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let ApiJson(req) = body?;
    let (info, created) = blocking(&s, move |e| e.create(req)).await?;
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

async fn describe(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    body: std::result::Result<ApiJson<ConfigureBody>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    q: std::result::Result<Query<DropParams>, QueryRejection>,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    body: std::result::Result<ApiJson<OpenBody>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    body: std::result::Result<ApiJson<CloseBody>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    body: std::result::Result<ApiJson<UnplugBody>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let ApiJson(b) = body?;
    Ok(Json(blocking(&s, move |e| e.unplug(&pdb, b.archive)).await?).into_response())
}

async fn history(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    crate::names::validate("database", &pdb)?;
    let rows = blocking(&s, move |e| e.history(&pdb)).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(event, detail, at)| json!({"event": event, "detail": detail, "at": at}))
        .collect();
    Ok(Json(json!({"items": items})).into_response())
}

async fn archives(State(s): State<Arc<EngineState>>, headers: HeaderMap) -> Result<Response> {
    admin(&s, &headers)?;
    Ok(Json(json!({"items": blocking(&s, |e| e.archives()).await?})).into_response())
}

async fn archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    Ok(Json(blocking(&s, move |e| e.archive_manifest(&name)).await?).into_response())
}

async fn delete_archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    blocking(&s, move |e| e.delete_archive(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Header carrying an archive's sha256 on download.
pub const SHA256_HEADER: &str = "x-tenantdb-sha256";
/// Header carrying the database an archive came from on download.
pub const DATABASE_HEADER: &str = "x-tenantdb-database";

async fn download_archive(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    q: std::result::Result<Query<UploadParams>, QueryRejection>,
    body: Body,
) -> Result<Response> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    admin(&s, &headers)?;
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
    headers: HeaderMap,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let p = period(q)?;
    Ok(Json(blocking(&s, move |e| e.usage_report(p)).await?).into_response())
}

async fn sla(
    State(s): State<Arc<EngineState>>,
    headers: HeaderMap,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let p = period(q)?;
    let targets = s.config.sla.clone();
    let report = blocking(&s, move |e| Ok(e.sla_report(p, targets.as_ref())?.1)).await?;
    Ok(Json(report).into_response())
}

async fn billing(
    State(s): State<Arc<EngineState>>,
    headers: HeaderMap,
    q: std::result::Result<Query<PeriodParams>, QueryRejection>,
) -> Result<Response> {
    admin(&s, &headers)?;
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

async fn profiles(State(s): State<Arc<EngineState>>, headers: HeaderMap) -> Result<Response> {
    admin(&s, &headers)?;
    Ok(Json(json!({"items": blocking(&s, |e| e.profiles()).await?})).into_response())
}

async fn profile(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    Ok(Json(blocking(&s, move |e| e.profile(&name)).await?).into_response())
}

async fn put_profile(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<ApiJson<LockdownRules>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let ApiJson(rules) = body?;
    blocking(&s, move |e| e.put_profile(&name, rules)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_profile(
    State(s): State<Arc<EngineState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    blocking(&s, move |e| e.delete_profile(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    databases: Vec<String>,
}

async fn issue_token(
    State(s): State<Arc<EngineState>>,
    headers: HeaderMap,
    body: std::result::Result<ApiJson<TokenBody>, EngineError>,
) -> Result<Response> {
    admin(&s, &headers)?;
    let ApiJson(b) = body?;
    let (id, token) = blocking(&s, move |e| e.issue_token(b.databases)).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "token": token}))).into_response())
}

async fn revoke_token(
    State(s): State<Arc<EngineState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    admin(&s, &headers)?;
    blocking(&s, move |e| e.revoke_token(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
