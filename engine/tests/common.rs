//! An engine behind its router, in-process, for the API tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tenantdb_engine::cgroup::CgroupReader;
use tenantdb_engine::engine::{Engine, EngineOptions};
use tenantdb_engine::http::{router, EngineState};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-secret";

/// A loopback port free at the time of the call, for an engine binary to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct App {
    pub router: Router,
    pub dir: tempfile::TempDir,
}

pub fn app_with(opts: EngineOptions) -> App {
    app_full(Some(ADMIN), opts, Default::default())
}

fn seeded() -> EngineOptions {
    EngineOptions {
        seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
        ..Default::default()
    }
}

/// An app whose data plane is rate limited.
pub fn app_limited(per_hour: u32, burst: u32) -> App {
    let limits = tenantdb_engine::config::EngineLimits {
        requests_per_hour: Some(per_hour),
        burst: Some(burst),
        ..Default::default()
    };
    app_configured(
        seeded(),
        tenantdb_engine::config::EngineConfig {
            limits,
            ..Default::default()
        },
    )
}

/// An app run as standalone without an admin token: anyone is admin, except a bearer of
/// a tenant token.
pub fn app_standalone() -> App {
    app_full(None, seeded(), Default::default())
}

/// An app enforcing `config`'s limits (rate, sessions, network), with engine options `opts`.
pub fn app_configured(opts: EngineOptions, config: tenantdb_engine::config::EngineConfig) -> App {
    app_full(Some(ADMIN), opts, config)
}

fn app_full(
    admin: Option<&str>,
    opts: EngineOptions,
    config: tenantdb_engine::config::EngineConfig,
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), opts).unwrap();
    let state = Arc::new(
        EngineState::new(
            Arc::new(engine),
            config,
            CgroupReader::new("/nonexistent", ""),
            "test".into(),
            admin.map(String::from),
        )
        .expect("state"),
    );
    App {
        router: router(state),
        dir,
    }
}

pub fn app() -> App {
    app_with(EngineOptions {
        seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
        close_deadline: Duration::from_millis(300),
        ..Default::default()
    })
}

impl App {
    /// Send a request; `token` None sends none. Returns status and JSON (or text as a JSON string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, v) = self.raw_with_headers(req).await;
        (status, v)
    }

    /// As `raw`, with the response headers.
    pub async fn raw_with_headers(
        &self,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, v)
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    pub async fn sql(
        &self,
        pdb: &str,
        token: &str,
        sql: &str,
        params: Value,
    ) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/v1/databases/{pdb}/query"),
            Some(token),
            Some(serde_json::json!({"sql": sql, "params": params})),
        )
        .await
    }

    pub async fn create(&self, body: Value) -> Value {
        let (s, v) = self.admin("POST", "/v1/databases", Some(body)).await;
        assert!(s.is_success(), "create: {s} {v}");
        v
    }

    pub async fn token(&self, dbs: &[&str]) -> String {
        let (s, v) = self
            .admin(
                "POST",
                "/v1/tokens",
                Some(serde_json::json!({"databases": dbs})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

/// Assert a JSON error with this status and a message containing `needle`.
pub fn assert_err(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    let msg = got.1["message"].as_str().unwrap_or_default();
    assert!(
        got.1["code"].is_string(),
        "error body has a code: {}",
        got.1
    );
    assert!(
        msg.contains(needle),
        "message {msg:?} should contain {needle:?}"
    );
}

/// A Hrana statement request.
pub fn hexec(sql: &str) -> Value {
    serde_json::json!({"type": "execute", "stmt": {"sql": sql}})
}

/// A Hrana statement request with positional arguments.
pub fn hexec_args(sql: &str, args: Value) -> Value {
    serde_json::json!({"type": "execute", "stmt": {"sql": sql, "args": args}})
}

/// A Hrana integer value.
pub fn hint(i: i64) -> Value {
    serde_json::json!({"type": "integer", "value": i.to_string()})
}

impl App {
    /// `POST /db/{db}/v{version}/pipeline`.
    pub async fn pipeline_v(
        &self,
        version: u8,
        db: &str,
        token: Option<&str>,
        baton: Option<&str>,
        requests: Vec<Value>,
    ) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/db/{db}/v{version}/pipeline"),
            token,
            Some(serde_json::json!({"baton": baton, "requests": requests})),
        )
        .await
    }

    /// `POST /db/{db}/v3/pipeline`, expecting 200.
    pub async fn pipeline(
        &self,
        db: &str,
        token: Option<&str>,
        baton: Option<&str>,
        requests: Vec<Value>,
    ) -> Value {
        let (s, v) = self.pipeline_v(3, db, token, baton, requests).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

/// The baton of a pipeline response.
pub fn baton(v: &Value) -> Option<String> {
    v["baton"].as_str().map(String::from)
}

/// The result `i` of a pipeline response, which must be ok.
pub fn ok(v: &Value, i: usize) -> &Value {
    let r = &v["results"][i];
    assert_eq!(r["type"], "ok", "result {i}: {r}");
    &r["response"]
}

/// The error `i` of a pipeline response, which must be an error: (code, message).
pub fn err(v: &Value, i: usize) -> (String, String) {
    let r = &v["results"][i];
    assert_eq!(r["type"], "error", "result {i}: {r}");
    (
        r["error"]["code"].as_str().unwrap_or_default().to_string(),
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The rows of an `execute` response.
pub fn rows(response: &Value) -> &Vec<Value> {
    response["result"]["rows"].as_array().expect("rows")
}

impl App {
    /// Serve the router on a loopback port; returns `127.0.0.1:PORT`.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = self.router.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr.to_string()
    }
}
