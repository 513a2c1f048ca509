//! Tier limits the engine enforces itself, through the HTTP API.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;

fn query(token: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/v1/databases/db/query")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"sql": "SELECT 1"}).to_string()))
        .unwrap()
}

fn header(h: &axum::http::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} missing in {h:?}"))
}

#[tokio::test]
async fn the_burst_passes_then_429_with_rate_limit_headers() {
    let app = app_limited(1000, 50);
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    for i in 0..50u64 {
        let (s, h, v) = app.raw_with_headers(query(&t)).await;
        assert_eq!(s, StatusCode::OK, "request {i}: {v}");
        assert_eq!(header(&h, "x-ratelimit-limit"), 50);
        assert_eq!(header(&h, "x-ratelimit-remaining"), 49 - i);
    }
    let (s, h, v) = app.raw_with_headers(query(&t)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "rate_limited");
    assert_eq!(header(&h, "x-ratelimit-remaining"), 0);
    assert!(header(&h, "retry-after") >= 3, "a token every 3.6 s");
    assert!((170..=180).contains(&header(&h, "x-ratelimit-reset")));
    // The admin plane (the operator's channel) is not metered against the tenant's rate.
    let (s, _) = app.admin("GET", "/v1/databases", None).await;
    assert_eq!(s, StatusCode::OK);
}

/// Insert 8 KB rows until the engine refuses; returns (rows stored, the refusal).
async fn fill(app: &App, db: &str, token: &str) -> (i64, (StatusCode, serde_json::Value)) {
    for i in 0..10_000 {
        let r = app
            .sql(
                db,
                token,
                "INSERT INTO kv VALUES (?, randomblob(8000))",
                json!([format!("k{i}")]),
            )
            .await;
        if r.0 != StatusCode::OK {
            return (i, r);
        }
    }
    panic!("no quota reached in {db}");
}

async fn count(app: &App, db: &str, token: &str) -> i64 {
    let (s, v) = app
        .sql(db, token, "SELECT count(*) FROM kv", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "reads still work: {v}");
    v["rows"][0][0].as_i64().unwrap()
}

#[tokio::test]
async fn a_database_at_its_quota_gets_507_keeps_reading_and_has_no_partial_row() {
    let app = app();
    app.create(json!({"name": "db", "storageQuotaBytes": 256 * 1024}))
        .await;
    let t = app.token(&["db"]).await;
    let (stored, refused) = fill(&app, "db", &t).await;
    assert_err(refused, StatusCode::INSUFFICIENT_STORAGE, "storage quota");
    assert!(
        (20..=32).contains(&stored),
        "256 KiB holds about 30 rows of 8 KB, not {stored}"
    );
    assert_eq!(
        count(&app, "db", &t).await,
        stored,
        "the refused row is not there"
    );
    // A batch that crosses the quota is rolled back whole.
    app.admin(
        "PATCH",
        "/v1/databases/db",
        Some(json!({"storageQuotaBytes": 512 * 1024})),
    )
    .await;
    let batch: Vec<_> = (0..60)
        .map(|i| json!({"sql": "INSERT INTO kv VALUES (?, randomblob(8000))", "params": [format!("b{i}")]}))
        .collect();
    let (s, v) = app
        .call(
            "POST",
            "/v1/databases/db/query",
            Some(&t),
            Some(json!({"batch": batch})),
        )
        .await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert_eq!(
        count(&app, "db", &t).await,
        stored,
        "nothing of the batch remains"
    );
    // Raising the quota lets writes through again.
    let (s, v) = app
        .sql(
            "db",
            &t,
            "INSERT INTO kv VALUES ('after', 'x')",
            json!(null),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_tenant_storage_limit_is_shared_by_its_databases() {
    let app = app_with(tenantdb_engine::engine::EngineOptions {
        seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
        storage_bytes: Some(512 * 1024),
        ..Default::default()
    });
    app.create(json!({"name": "a"})).await;
    app.create(json!({"name": "b"})).await;
    let t = app.token(&["a", "b"]).await;
    let (in_a, refused) = fill(&app, "a", &t).await;
    assert_err(refused, StatusCode::INSUFFICIENT_STORAGE, "storage quota");
    // Wait out the one-second cache of the tenant's usage, then b has almost nothing left.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (in_b, refused) = fill(&app, "b", &t).await;
    assert_err(refused, StatusCode::INSUFFICIENT_STORAGE, "storage quota");
    assert!(in_a > 40, "a alone filled most of 512 KiB ({in_a} rows)");
    assert!(in_b < 5, "b got only what a left ({in_b} rows)");
    assert_eq!(count(&app, "b", &t).await, in_b);
}

fn config_with(
    limits: tenantdb_engine::config::EngineLimits,
) -> tenantdb_engine::config::EngineConfig {
    tenantdb_engine::config::EngineConfig {
        limits,
        ..Default::default()
    }
}

#[tokio::test]
async fn sessions_past_the_tier_limit_get_429_and_the_slot_frees_when_one_ends() {
    let app = std::sync::Arc::new(app_configured(
        Default::default(),
        config_with(tenantdb_engine::config::EngineLimits {
            connections: Some(1),
            ..Default::default()
        }),
    ));
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    // One session busy for a while (a recursive count of about a second)…
    let slow = {
        let (app, t) = (app.clone(), t.clone());
        tokio::spawn(async move {
            app.sql("db", &t, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 3000000) SELECT count(*) FROM n", json!(null)).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // …so a second one is refused, with a code a client can act on.
    let (s, v) = app.raw(query(&t)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "connection_limit");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 concurrent sessions"),
        "{v}"
    );
    let done = slow.await.unwrap();
    assert_eq!(done.0, StatusCode::OK, "{:?}", done.1);
    assert_eq!(
        app.raw(query(&t)).await.0,
        StatusCode::OK,
        "the slot is free again"
    );
    let (_, cpu) = app.call("GET", "/v1/isolation/cpu", None, None).await;
    assert_eq!(cpu["sessions"]["max"], 1);
    assert_eq!(cpu["sessions"]["refused"], 1);
    assert_eq!(cpu["sessions"]["active"], 0);
}

#[tokio::test]
async fn storage_io_past_the_iops_limit_makes_the_next_statement_wait() {
    let app = app_configured(
        tenantdb_engine::engine::EngineOptions {
            iops: Some(100),
            seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
            ..Default::default()
        },
        Default::default(),
    );
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    // About 250 pages written in one statement: 150 past the one-second burst.
    let r = app
        .sql("db", &t, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 300) INSERT INTO kv SELECT 'k' || x, randomblob(3000) FROM n", json!(null))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    let (_, io) = app.call("GET", "/v1/isolation/io", None, None).await;
    let used = io["iops"]["used"].as_u64().unwrap();
    assert!(used >= 200, "every page written counts: {io}");
    assert_eq!(io["mechanisms"], json!(["token-bucket"]));
    let started = std::time::Instant::now();
    let (s, v) = app.raw(query(&t)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let waited = started.elapsed();
    let debt_secs = (used as f64 - 100.0) / 100.0;
    assert!(
        waited.as_secs_f64() >= debt_secs * 0.8,
        "waited {waited:?} for {used} pages at 100/s"
    );
    let (_, io) = app.call("GET", "/v1/isolation/io", None, None).await;
    assert_eq!(io["iops"]["throttled"], 1, "{io}");
    // The operator's admin work is neither charged nor held.
    let before = io["iops"]["used"].as_u64().unwrap();
    let (s, _) = app
        .admin("POST", "/v1/databases/db/query", Some(json!({"sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 100) INSERT INTO kv SELECT 'a' || x, randomblob(3000) FROM n"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, io) = app.call("GET", "/v1/isolation/io", None, None).await;
    assert_eq!(io["iops"]["used"].as_u64().unwrap(), before);
}

#[tokio::test]
async fn network_and_cache_isolation_are_reported() {
    let app = app_configured(
        tenantdb_engine::engine::EngineOptions {
            cache_kib_per_connection: 512,
            ..Default::default()
        },
        config_with(tenantdb_engine::config::EngineLimits {
            bandwidth_mbps: Some(100),
            ..Default::default()
        }),
    );
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    assert_eq!(app.raw(query(&t)).await.0, StatusCode::OK);
    let (s, net) = app.call("GET", "/v1/isolation/network", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(net["bandwidthMbps"], 100);
    assert_eq!(net["throttle"]["limitPerSecond"], 12_500_000);
    assert!(net["bytesOut"].as_u64().unwrap() > 0, "{net}");
    let (_, cache) = app.call("GET", "/v1/isolation/cache", None, None).await;
    assert_eq!(cache["pageCacheKibPerConnection"], 512);
    assert_eq!(cache["databases"], 1);
    assert!(cache["openConnections"].as_u64().unwrap() >= 1, "{cache}");
    // The budget reaches SQLite: a connection's cache_size is -512 (KiB).
    let (_, r) = app
        .admin(
            "POST",
            "/v1/databases/db/query",
            Some(json!({"sql": "PRAGMA cache_size"})),
        )
        .await;
    assert_eq!(r["rows"][0][0], -512, "{r}");
}

#[tokio::test]
async fn a_select_that_outran_the_inline_cap_queues_as_heavy_next_time() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    // Far longer than the 2 ms an inline SELECT may hold an async worker.
    let slow = "SELECT (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 300000) SELECT count(*) FROM n)";
    for round in 1..=2u64 {
        let started = std::time::Instant::now();
        let r = app.sql("db", &t, slow, json!(null)).await;
        assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
        assert_eq!(r.1["rows"][0][0], 300000);
        let (_, cpu) = app.call("GET", "/v1/isolation/cpu", None, None).await;
        assert_eq!(
            cpu["workers"]["ranHeavy"],
            round,
            "{cpu} after {:?}",
            started.elapsed()
        );
    }
    // A point select still runs inline: it never reaches the pool.
    assert_eq!(app.raw(query(&t)).await.0, StatusCode::OK);
    let (_, cpu) = app.call("GET", "/v1/isolation/cpu", None, None).await;
    assert_eq!(cpu["workers"]["ranTenant"], 0, "{cpu}");
    assert!(cpu["workers"]["workers"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn strangers_are_refused_before_metering_and_counted_apart() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let other = {
        app.create(json!({"name": "other"})).await;
        app.token(&["other"]).await
    };
    // No token, a made-up token, another database's token: none is billed to db.
    for token in [None, Some("tdb_made_up"), Some(other.as_str())] {
        let (s, _) = app
            .call(
                "POST",
                "/v1/databases/db/query",
                token,
                Some(json!({"sql": "SELECT 1"})),
            )
            .await;
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
            "{s}"
        );
    }
    let (_, usage) = app.admin("GET", "/v1/usage", None).await;
    let db = usage["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "db")
        .unwrap();
    assert_eq!(
        (db["requests"].clone(), db["errors"].clone()),
        (json!(0), json!(0)),
        "{db}"
    );
    let (_, metrics) = app.call("GET", "/metrics", None, None).await;
    let m = metrics.as_str().unwrap_or_default();
    assert!(
        m.contains(r#"refused_requests_total{plane="query",reason="unauthorized"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"refused_requests_total{plane="query",reason="forbidden"} 2"#),
        "{m}"
    );
    // A request of the database's own token is billed.
    let t = app.token(&["db"]).await;
    app.sql("db", &t, "SELECT 1", json!(null)).await;
    let (_, usage) = app.admin("GET", "/v1/usage", None).await;
    assert_eq!(usage["total"]["requests"], 1);
}
