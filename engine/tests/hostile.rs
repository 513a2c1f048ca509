//! Input a careless or hostile caller sends: each gets a 4xx with a JSON message, and
//! the engine keeps serving.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;
use tenantdb_engine::engine::EngineOptions;

#[tokio::test]
async fn pagination_parameters_are_validated() {
    let app = app();
    for i in 0..5 {
        app.create(json!({"name": format!("db{i}")})).await;
    }
    for (q, needle) in [
        ("pageSize=0", "between 1 and 1000"),
        ("pageSize=-3", "between 1 and 1000"),
        ("pageSize=1000000", "between 1 and 1000"),
        ("pageSize=abc", "pageSize"),
        ("pageToken=../x", "invalid pageToken"),
        ("bogus=1", "bogus"),
    ] {
        assert_err(
            app.admin("GET", &format!("/v1/databases?{q}"), None).await,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }
    let (s, p1) = app.admin("GET", "/v1/databases?pageSize=2", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let next = p1["nextPageToken"].as_str().unwrap();
    let (_, p2) = app
        .admin(
            "GET",
            &format!("/v1/databases?pageSize=10&pageToken={next}"),
            None,
        )
        .await;
    let names: Vec<&str> = p2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db2", "db3", "db4"]);
    assert!(p2["nextPageToken"].is_null());
}

#[tokio::test]
async fn names_that_could_escape_are_refused() {
    let app = app();
    let long = "a".repeat(300);
    for name in [
        "../x",
        "a/b",
        "",
        long.as_str(),
        "..",
        "x.db",
        "/etc/passwd",
    ] {
        assert_err(
            app.admin("POST", "/v1/databases", Some(json!({"name": name})))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid database name",
        );
    }
    assert_err(
        app.admin(
            "POST",
            "/v1/databases/a/unplug",
            Some(json!({"archive": "../../etc"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "no database named a",
    );
    app.create(json!({"name": "a"})).await;
    assert_err(
        app.admin(
            "POST",
            "/v1/databases/a/unplug",
            Some(json!({"archive": "../../etc"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid archive name",
    );
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "b", "source": {"plug": {"archive": "../a"}}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid archive name",
    );
    let entries: Vec<_> = std::fs::read_dir(app.dir.path().join("pdbs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("a.db")],
        "nothing else was created"
    );
}

#[tokio::test]
async fn malformed_bodies_content_types_and_huge_bodies() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let post = |body: Body, ctype: Option<&str>| {
        let mut r = Request::post("/v1/databases/db/query")
            .header("authorization", format!("Bearer {ADMIN}"));
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r.body(body).unwrap()
    };
    assert_err(
        app.raw(post(Body::from("{not json"), Some("application/json")))
            .await,
        StatusCode::BAD_REQUEST,
        "",
    );
    assert_err(
        app.raw(post(Body::from(r#"{"sql": 3}"#), Some("application/json")))
            .await,
        StatusCode::BAD_REQUEST,
        "",
    );
    assert_err(
        app.raw(post(
            Body::from(r#"{"sql": "SELECT 1", "extra": 1}"#),
            Some("application/json"),
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "extra",
    );
    assert_err(
        app.raw(post(
            Body::from(r#"{"sql": "SELECT 1"}"#),
            Some("text/plain"),
        ))
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    );
    assert_err(
        app.raw(post(Body::from(r#"{"sql": "SELECT 1"}"#), None))
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    );
    let huge = format!(
        r#"{{"sql": "SELECT ?", "params": ["{}"]}}"#,
        "x".repeat(50 << 20)
    );
    assert_err(
        app.raw(post(Body::from(huge), Some("application/json")))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
    );
    assert_err(
        app.admin("POST", "/v1/databases/db/query", Some(json!({})))
            .await,
        StatusCode::BAD_REQUEST,
        "exactly one of sql",
    );
    assert_err(
        app.admin("POST", "/v1/databases/db/query", Some(json!({"batch": []})))
            .await,
        StatusCode::BAD_REQUEST,
        "at least one",
    );
    assert_err(
        app.admin(
            "POST",
            "/v1/databases/db/open",
            Some(json!({"mode": "Sideways"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "",
    );
    assert_err(
        app.admin("GET", "/v1/nope", None).await,
        StatusCode::NOT_FOUND,
        "no such route",
    );
    assert_eq!(
        app.sql("db", ADMIN, "SELECT 1", json!(null)).await.0,
        StatusCode::OK,
        "still serving"
    );
}

#[tokio::test]
async fn a_query_that_never_ends_is_interrupted_by_the_time_limit() {
    let app = app_with(EngineOptions {
        default_statement_budget: Duration::from_millis(300),
        ..Default::default()
    });
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    let start = std::time::Instant::now();
    assert_err(
        app.sql(
            "db",
            &t,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n) SELECT count(*) FROM n",
            json!(null),
        )
        .await,
        StatusCode::REQUEST_TIMEOUT,
        "time budget",
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        app.sql("db", &t, "SELECT 1", json!(null)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_never_reach_other_databases_or_engines() {
    let a = app();
    let b = app();
    a.create(json!({"name": "mine"})).await;
    a.create(json!({"name": "theirs"})).await;
    b.create(json!({"name": "mine"})).await;
    let ta = a.token(&["mine"]).await;
    let tb = b.token(&["*"]).await;
    assert_eq!(
        a.sql("mine", &ta, "SELECT 1", json!(null)).await.0,
        StatusCode::OK
    );
    assert_err(
        a.sql("theirs", &ta, "SELECT 1", json!(null)).await,
        StatusCode::FORBIDDEN,
        "not valid for database theirs",
    );
    assert_err(
        a.sql("mine", &tb, "SELECT 1", json!(null)).await,
        StatusCode::FORBIDDEN,
        "not valid in this engine",
    );
    assert_err(
        a.call(
            "POST",
            "/v1/databases/mine/query",
            None,
            Some(json!({"sql": "SELECT 1"})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "token is required",
    );
    assert_err(
        a.call("GET", "/v1/databases", Some(&ta), None).await,
        StatusCode::FORBIDDEN,
        "admin token",
    );
    // Revoked tokens stop working.
    let (_, issued) = a
        .admin("POST", "/v1/tokens", Some(json!({"databases": ["mine"]})))
        .await;
    let (id, tok) = (
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap(),
    );
    assert_eq!(
        a.admin("DELETE", &format!("/v1/tokens/{id}"), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_err(
        a.sql("mine", tok, "SELECT 1", json!(null)).await,
        StatusCode::FORBIDDEN,
        "not valid in this engine",
    );
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/db/query",
            Some(json!({"batch": [
                {"sql": "INSERT INTO kv VALUES ('a', '1')"},
                {"sql": "INSERT INTO kv VALUES ('a', '2')"}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("nothing was committed"));
    let (_, v) = app
        .sql("db", ADMIN, "SELECT count(*) FROM kv", json!(null))
        .await;
    assert_eq!(v["rows"][0][0], 0);
    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/db/query",
            Some(json!({"batch": [
                {"sql": "INSERT INTO kv VALUES (?, ?)", "params": ["a", "1"]},
                {"sql": "SELECT v FROM kv WHERE k = :k", "params": {"k": "a"}}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][1]["rows"][0][0], "1");
}
