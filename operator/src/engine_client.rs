//! A client of one tenant engine's admin API, as the PluggableDatabase and
//! LockdownProfile controllers use it. Every call carries the engine's admin token in
//! `X-Tenantdb-Token` (the API server's service proxy would drop `Authorization`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenantdb_engine_api::backup::ShipStatus;
use tenantdb_engine_api::lockdown::LockdownRules;
use tenantdb_engine_api::requests::OpenMode;
use tenantdb_engine_api::requests::{CloseMode, CreateRequest, Manifest};

/// Why a call to an engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineCallError {
    /// No answer (DNS, connection, timeout).
    #[error("engine at {url} did not answer: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Underlying error.
        source: reqwest::Error,
    },
    /// The engine said yes with a body this operator cannot read (another version's
    /// engine, or something else at its address).
    #[error("engine at {url} answered {status} with a body this operator cannot read: {detail}")]
    BadReply {
        /// The URL called.
        url: String,
        /// HTTP status (a success).
        status: u16,
        /// What did not decode.
        detail: String,
    },
    /// The engine answered with an error.
    #[error("engine answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The engine's error code.
        code: String,
        /// The engine's message.
        message: String,
    },
}

impl EngineCallError {
    /// The HTTP status, when the engine answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineCallError::Api { status, .. } => Some(*status),
            EngineCallError::Unreachable { .. } | EngineCallError::BadReply { .. } => None,
        }
    }

    /// The engine's message, or the transport error.
    pub fn message(&self) -> String {
        match self {
            EngineCallError::Api { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }

    /// Whether this is an answer about the request itself (4xx), not the engine's health.
    pub fn is_client_error(&self) -> bool {
        self.status().is_some_and(|s| (400..500).contains(&s))
    }
}

/// A success's body as `T`, or [`EngineCallError::BadReply`] naming what did not decode.
fn decode<T: DeserializeOwned>(url: &str, status: u16, body: &str) -> CallResult<T> {
    serde_json::from_str(body).map_err(|e| EngineCallError::BadReply {
        url: url.to_string(),
        status,
        detail: format!(
            "{e} (body starts {:?})",
            body.chars().take(80).collect::<String>()
        ),
    })
}

/// Result of an engine call.
pub type CallResult<T> = Result<T, EngineCallError>;

/// A database as the engine reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineDatabase {
    /// Name.
    pub name: String,
    /// `None` when mounted.
    pub open_mode: Option<OpenMode>,
    /// Where its content came from, as it happened.
    pub source: String,
    /// Storage quota in bytes.
    pub storage_quota_bytes: Option<u64>,
    /// Lockdown profile in force.
    pub lockdown_profile: Option<String>,
    /// Size with its WAL.
    pub size_bytes: u64,
    /// Sessions in flight.
    #[serde(default)]
    pub active_sessions: u64,
}

/// The engine's status (`GET /v1/status`), the parts the operator reads.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineSummary {
    /// Seconds since the engine started.
    #[serde(default)]
    pub uptime_seconds: u64,
    /// Databases and storage.
    #[serde(default)]
    pub container: ContainerSummary,
    /// Service level this period.
    #[serde(default)]
    pub sla: Option<EngineSla>,
    /// Statistics this period.
    #[serde(default)]
    pub stats: Option<EngineStats>,
}

/// The SLA part of the engine's status.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineSla {
    /// Every target met.
    pub compliant: bool,
    /// Uptime this period, percent.
    pub uptime_percent: f64,
    /// p99 latency, ms.
    #[serde(default)]
    pub p99_latency_ms: f64,
    /// Targets missed.
    #[serde(default)]
    pub violations: Vec<EngineViolation>,
}

/// One missed target.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineViolation {
    /// `uptime`, `latency` or `errorRate`.
    pub metric: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// Database or `total`.
    pub scope: String,
    /// What to do.
    #[serde(default)]
    pub remediation: String,
}

/// The statistics part of the engine's status.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineStats {
    /// `YYYY-MM`.
    pub period: String,
    /// Requests this period.
    pub requests: u64,
    /// Busiest minute.
    pub peak_requests_per_minute: u64,
    /// Average response time, ms.
    pub avg_response_ms: f64,
    /// Errors per request.
    pub error_rate: f64,
    /// Storage growth, bytes per day.
    pub storage_growth_bytes_per_day: f64,
}

/// The container part of the engine's status.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    /// Number of registered databases.
    #[serde(default)]
    pub databases: u32,
    /// Bytes used by every database file.
    #[serde(default)]
    pub storage_bytes: u64,
}

/// Where the engines are: a URL template with `{tenant}` and `{namespace}`, and one
/// HTTPS client per tenant CA, each trusting that CA alone.
#[derive(Debug, Clone)]
pub struct EngineLocator {
    template: String,
    plain: reqwest::Client,
    by_ca: Arc<Mutex<HashMap<String, reqwest::Client>>>,
}

/// The default template: the tenant's engine Service, by cluster DNS.
pub const DEFAULT_ENGINE_URL: &str = "https://{tenant}-engine.{namespace}.svc:8080";

/// How many tenant CAs' clients are kept before the cache starts again.
const CLIENTS_KEPT: usize = 1024;

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(120))
}

/// Why no client of an engine can be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine is reached by HTTPS and its tenant has no CA yet.
    #[error("no CA certificate for the engine at {0}: it would not be verified")]
    NoCa(String),
    /// The CA certificate cannot be used.
    #[error("the engine's CA certificate: {0}")]
    BadCa(reqwest::Error),
}

impl EngineLocator {
    /// A locator from a URL template such as [`DEFAULT_ENGINE_URL`].
    pub fn new(template: &str) -> Result<Self, reqwest::Error> {
        Ok(EngineLocator {
            template: template.to_string(),
            plain: builder().build()?,
            by_ca: Default::default(),
        })
    }

    /// A client that trusts `ca_pem` alone (no public roots), made once per CA.
    fn https(&self, ca_pem: &str) -> Result<reqwest::Client, ClientError> {
        let mut cache = self.by_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(ca_pem) {
            return Ok(c.clone());
        }
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(ClientError::BadCa)?;
        let client = builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .https_only(true)
            .build()
            .map_err(ClientError::BadCa)?;
        if cache.len() >= CLIENTS_KEPT {
            cache.clear();
        }
        cache.insert(ca_pem.to_string(), client.clone());
        Ok(client)
    }

    /// The base URL of a tenant's engine.
    pub fn url(&self, namespace: &str, tenant: &str) -> String {
        self.template
            .replace("{tenant}", tenant)
            .replace("{namespace}", namespace)
            .trim_end_matches('/')
            .to_string()
    }

    /// A client of a tenant's engine with its admin token. An `https://` engine is
    /// verified against `ca_pem`, its tenant's CA, and nothing else; plain `http://` is
    /// for an engine on loopback (an operator run beside it, tests).
    pub fn client(
        &self,
        namespace: &str,
        tenant: &str,
        admin_token: &str,
        ca_pem: Option<&str>,
    ) -> Result<EngineClient, ClientError> {
        let base = self.url(namespace, tenant);
        let http = if base.starts_with("https://") {
            self.https(ca_pem.ok_or_else(|| ClientError::NoCa(base.clone()))?)?
        } else {
            self.plain.clone()
        };
        Ok(EngineClient {
            http,
            base,
            token: admin_token.to_string(),
            ca: ca_pem.map(String::from),
        })
    }
}

/// One engine's admin API.
#[derive(Debug, Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    base: String,
    token: String,
    ca: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

const TOKEN_HEADER: &str = "x-tenantdb-token";

impl EngineClient {
    /// The engine's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The same engine, presenting `token` instead (to try a rotated admin token).
    pub fn with_token(&self, token: &str) -> EngineClient {
        EngineClient {
            token: token.to_string(),
            ..self.clone()
        }
    }

    /// The CA certificate (PEM) the engine is verified against, when it serves HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(TOKEN_HEADER, &self.token)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> CallResult<reqwest::Response> {
        let resp = req
            .send()
            .await
            .map_err(|source| EngineCallError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
            code: "unknown".into(),
            message: text,
        });
        Err(EngineCallError::Api {
            status,
            code: body.code,
            message: body.message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> CallResult<T> {
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|source| EngineCallError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        decode(&self.base, status, &text)
    }

    /// `Ok(None)` for a 404, so "not there" and "failed" stay apart.
    fn absent<T>(r: CallResult<T>) -> CallResult<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A database, or `None` when the engine has none of that name.
    pub async fn database(&self, name: &str) -> CallResult<Option<EngineDatabase>> {
        let req = self.request(reqwest::Method::GET, &format!("/v1/databases/{name}"));
        Self::absent(self.json(req).await)
    }

    /// A database's backup status, or `None` when no backup runs for it.
    pub async fn backup_status(&self, name: &str) -> CallResult<Option<ShipStatus>> {
        let req = self.request(
            reqwest::Method::GET,
            &format!("/v1/databases/{name}/backup"),
        );
        Self::absent(self.json(req).await)
    }

    /// Create a database (idempotent on the engine's side).
    pub async fn create(&self, req: &CreateRequest) -> CallResult<EngineDatabase> {
        self.json(
            self.request(reqwest::Method::POST, "/v1/databases")
                .json(req),
        )
        .await
    }

    /// Open a database in `mode`.
    pub async fn open(&self, name: &str, mode: OpenMode) -> CallResult<EngineDatabase> {
        let req = self
            .request(reqwest::Method::POST, &format!("/v1/databases/{name}/open"))
            .json(&json!({ "mode": mode }));
        self.json(req).await
    }

    /// Close a database to Mounted.
    pub async fn close(&self, name: &str, mode: CloseMode) -> CallResult<EngineDatabase> {
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/databases/{name}/close"),
            )
            .json(&json!({ "mode": mode }));
        self.json(req).await
    }

    /// Set the storage quota and the lockdown profile (`None` clears either).
    pub async fn configure(
        &self,
        name: &str,
        storage_quota_bytes: Option<u64>,
        lockdown_profile: Option<&str>,
    ) -> CallResult<EngineDatabase> {
        let req = self
            .request(reqwest::Method::PATCH, &format!("/v1/databases/{name}"))
            .json(&json!({"storageQuotaBytes": storage_quota_bytes, "lockdownProfile": lockdown_profile}));
        self.json(req).await
    }

    /// Drop a database, keeping its file when `keep_files`. `false` when it was not there.
    pub async fn drop_database(&self, name: &str, keep_files: bool) -> CallResult<bool> {
        let req = self.request(
            reqwest::Method::DELETE,
            &format!("/v1/databases/{name}?keepFiles={keep_files}"),
        );
        Ok(Self::absent(self.send(req).await)?.is_some())
    }

    /// Unplug a database into archive `archive`; `None` when there was no such database.
    pub async fn unplug(&self, name: &str, archive: &str) -> CallResult<Option<Manifest>> {
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/databases/{name}/unplug"),
            )
            .json(&json!({ "archive": archive }));
        Self::absent(self.json(req).await)
    }

    /// An archive's manifest, or `None`.
    pub async fn archive(&self, name: &str) -> CallResult<Option<Manifest>> {
        let req = self.request(reqwest::Method::GET, &format!("/v1/archives/{name}"));
        Self::absent(self.json(req).await)
    }

    /// Delete an archive; `false` when it was not there.
    pub async fn delete_archive(&self, name: &str) -> CallResult<bool> {
        let req = self.request(reqwest::Method::DELETE, &format!("/v1/archives/{name}"));
        Ok(Self::absent(self.send(req).await)?.is_some())
    }

    /// Stream archive `name` from this engine into `to`, which verifies its sha256
    /// before registering it. Returns the manifest `to` wrote.
    pub async fn send_archive(&self, name: &str, to: &EngineClient) -> CallResult<Manifest> {
        let resp = self
            .send(self.request(reqwest::Method::GET, &format!("/v1/archives/{name}/data")))
            .await?;
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (sha, database) = (
            header(tenantdb_engine_api::headers::SHA256_HEADER),
            header(tenantdb_engine_api::headers::DATABASE_HEADER),
        );
        let length = resp.content_length();
        let mut put = to
            .request(reqwest::Method::PUT, &format!("/v1/archives/{name}/data"))
            .query(&[("database", database.as_str()), ("sha256", sha.as_str())])
            .header("content-type", "application/octet-stream");
        if let Some(n) = length {
            put = put.header("content-length", n);
        }
        to.json(put.body(reqwest::Body::wrap_stream(resp.bytes_stream())))
            .await
    }

    /// Install or replace lockdown profile `name`.
    pub async fn put_profile(&self, name: &str, rules: &LockdownRules) -> CallResult<()> {
        let req = self
            .request(
                reqwest::Method::PUT,
                &format!("/v1/lockdown-profiles/{name}"),
            )
            .json(rules);
        self.send(req).await.map(|_| ())
    }

    /// Issue a data token for `databases`: its id and the token.
    pub async fn issue_token(&self, databases: &[&str]) -> CallResult<(String, String)> {
        self.issue_token_expiring(databases, None).await
    }

    /// Issue a data token for `databases` that opens nothing after `lifetime_seconds`.
    pub async fn issue_token_expiring(
        &self,
        databases: &[&str],
        lifetime_seconds: Option<u64>,
    ) -> CallResult<(String, String)> {
        #[derive(Deserialize)]
        struct Issued {
            id: String,
            token: String,
        }
        let mut body = json!({ "databases": databases });
        if let Some(s) = lifetime_seconds {
            body["expiresInSeconds"] = json!(s);
        }
        let req = self
            .request(reqwest::Method::POST, "/v1/tokens")
            .json(&body);
        let issued: Issued = self.json(req).await?;
        Ok((issued.id, issued.token))
    }

    /// Whether the token with id `id` is still valid in this engine.
    pub async fn token_exists(&self, id: &str) -> CallResult<bool> {
        let req = self.request(reqwest::Method::GET, &format!("/v1/tokens/{id}"));
        Ok(Self::absent(self.send(req).await)?.is_some())
    }

    /// Revoke the token with id `id`; `false` when there was none.
    pub async fn revoke_token(&self, id: &str) -> CallResult<bool> {
        let req = self.request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"));
        Ok(Self::absent(self.send(req).await)?.is_some())
    }

    /// The engine's container status.
    pub async fn summary(&self) -> CallResult<EngineSummary> {
        self.json(self.request(reqwest::Method::GET, "/v1/status"))
            .await
    }

    /// Any other admin call, for tests and tools.
    pub async fn call<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> CallResult<Value> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.json(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_that_does_not_decode_is_a_bad_reply_not_unreachable() {
        let e = decode::<EngineDatabase>("http://e:8080", 200, "<html>proxy</html>").unwrap_err();
        assert!(
            matches!(e, EngineCallError::BadReply { status: 200, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("cannot read") && e.to_string().contains("<html>"),
            "{e}"
        );
        assert_eq!(e.status(), None);
        let ok: serde_json::Value = decode("http://e:8080", 200, "{\"a\": 1}").unwrap();
        assert_eq!(ok["a"], 1);
    }
}
