//! Lockdown: each rule class blocks what it names and nothing else; some things are
//! never allowed to tenants; a profile change reaches open sessions at their next statement.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn setup() -> (App, String) {
    let app = app();
    app.create(json!({"name": "db"})).await;
    app.create(json!({"name": "other"})).await;
    let t = app.token(&["db"]).await;
    app.sql(
        "db",
        &t,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)",
        json!(null),
    )
    .await;
    app.sql(
        "db",
        &t,
        "INSERT INTO t (x) VALUES ('a'), ('b')",
        json!(null),
    )
    .await;
    (app, t)
}

async fn profile(app: &App, rules: serde_json::Value) {
    let (s, v) = app
        .admin("PUT", "/v1/lockdown-profiles/p", Some(rules))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = app
        .admin(
            "PATCH",
            "/v1/databases/db",
            Some(json!({"lockdownProfile": "p"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// (class, a statement of that class, a statement of another class that must still work)
const CASES: &[(&str, &str, &str)] = &[
    (
        "CREATE_TABLE",
        "CREATE TABLE n (a)",
        "CREATE INDEX i1 ON t (x)",
    ),
    ("DROP_TABLE", "DROP TABLE t", "CREATE TABLE n2 (a)"),
    (
        "CREATE_INDEX",
        "CREATE INDEX i2 ON t (x)",
        "CREATE VIEW v1 AS SELECT 1",
    ),
    ("DROP_INDEX", "DROP INDEX ix", "CREATE TABLE n3 (a)"),
    (
        "CREATE_TRIGGER",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
        "CREATE TABLE n4 (a)",
    ),
    ("DROP_TRIGGER", "DROP TRIGGER trx", "CREATE TABLE n5 (a)"),
    (
        "CREATE_VIEW",
        "CREATE VIEW v2 AS SELECT 1",
        "CREATE TABLE n6 (a)",
    ),
    ("DROP_VIEW", "DROP VIEW vx", "CREATE TABLE n7 (a)"),
    (
        "ALTER_TABLE",
        "ALTER TABLE t ADD COLUMN y",
        "CREATE TABLE n8 (a)",
    ),
    (
        "INSERT",
        "INSERT INTO t (x) VALUES ('c')",
        "UPDATE t SET x = 'z' WHERE id = 1",
    ),
    (
        "UPDATE",
        "UPDATE t SET x = 'z' WHERE id = 1",
        "INSERT INTO t (x) VALUES ('c')",
    ),
    (
        "DELETE",
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO t (x) VALUES ('c')",
    ),
    (
        "DELETE_WITHOUT_WHERE",
        "DELETE FROM t",
        "DELETE FROM t WHERE id = 2",
    ),
    (
        "UPDATE_WITHOUT_WHERE",
        "UPDATE t SET x = 'q'",
        "UPDATE t SET x = 'q' WHERE id = 2",
    ),
    ("PRAGMA", "PRAGMA table_info(t)", "SELECT count(*) FROM t"),
    ("VACUUM", "VACUUM", "SELECT 1"),
    ("ANALYZE", "ANALYZE", "SELECT 1"),
    ("REINDEX", "REINDEX", "SELECT 1"),
];

#[tokio::test]
async fn each_class_blocks_what_it_names_and_nothing_else() {
    for (class, blocked, allowed) in CASES {
        let (app, t) = setup().await;
        // Objects the DROP cases need.
        app.sql("db", ADMIN, "CREATE INDEX ix ON t (x)", json!(null))
            .await;
        app.sql(
            "db",
            ADMIN,
            "CREATE TRIGGER trx AFTER DELETE ON t BEGIN SELECT 1; END",
            json!(null),
        )
        .await;
        app.sql("db", ADMIN, "CREATE VIEW vx AS SELECT 1", json!(null))
            .await;
        profile(&app, json!({"disabledStatements": [class]})).await;
        let got = app.sql("db", &t, blocked, json!(null)).await;
        assert_eq!(
            got.0,
            StatusCode::FORBIDDEN,
            "{class}: {blocked} should be refused: {}",
            got.1
        );
        assert_eq!(got.1["code"], "lockdown", "{class}");
        let ok = app.sql("db", &t, allowed, json!(null)).await;
        assert_eq!(
            ok.0,
            StatusCode::OK,
            "{class}: {allowed} should still work: {}",
            ok.1
        );
        // The admin is not subject to lockdown.
        assert_ne!(
            app.sql("db", ADMIN, blocked, json!(null)).await.1["code"],
            "lockdown",
            "{class}: admin"
        );
    }
}

#[tokio::test]
async fn functions_read_only_and_limits() {
    let (app, t) = setup().await;
    profile(&app, json!({"disabledFunctions": ["randomblob"]})).await;
    assert_err(
        app.sql("db", &t, "SELECT randomblob(4)", json!(null)).await,
        StatusCode::FORBIDDEN,
        "randomblob() is disabled",
    );
    assert_eq!(
        app.sql("db", &t, "SELECT upper('a')", json!(null)).await.0,
        StatusCode::OK
    );
    profile(&app, json!({"readOnly": true})).await;
    assert_eq!(
        app.sql("db", &t, "INSERT INTO t (x) VALUES ('n')", json!(null))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.sql("db", &t, "SELECT count(*) FROM t", json!(null))
            .await
            .0,
        StatusCode::OK
    );
    profile(&app, json!({"maxResultRows": 1})).await;
    assert_err(
        app.sql("db", &t, "SELECT * FROM t", json!(null)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "more than 1 rows",
    );
    profile(&app, json!({"maxStatementMillis": 50})).await;
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
        "interrupted",
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "interrupted near its budget"
    );
    assert_eq!(
        app.sql("db", &t, "SELECT 1", json!(null)).await.0,
        StatusCode::OK,
        "the engine still serves"
    );
}

#[tokio::test]
async fn the_cpu_budget_and_the_time_budget_each_interrupt_with_their_own_code() {
    let (app, t) = setup().await;
    let endless =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n) SELECT count(*) FROM n";
    profile(
        &app,
        json!({"maxStatementCpuMillis": 50, "maxStatementMillis": 20_000}),
    )
    .await;
    let start = std::time::Instant::now();
    let got = app.sql("db", &t, endless, json!(null)).await;
    assert_err(
        got.clone(),
        StatusCode::REQUEST_TIMEOUT,
        "CPU budget of 50 ms",
    );
    assert_eq!(got.1["code"], "statement_cpu_budget");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "stopped by its CPU budget, long before the time budget"
    );
    profile(
        &app,
        json!({"maxStatementCpuMillis": 20_000, "maxStatementMillis": 50}),
    )
    .await;
    let got = app.sql("db", &t, endless, json!(null)).await;
    assert_eq!(got.1["code"], "statement_timeout", "{}", got.1);
    // A cheap statement under a tight CPU budget runs.
    profile(&app, json!({"maxStatementCpuMillis": 1})).await;
    assert_eq!(
        app.sql("db", &t, "SELECT count(*) FROM t", json!(null))
            .await
            .0,
        StatusCode::OK
    );
    // Zero is refused and changes nothing.
    assert_err(
        app.admin(
            "PUT",
            "/v1/lockdown-profiles/p",
            Some(json!({"maxStatementCpuMillis": 0})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "maxStatementCpuMillis must be at least 1",
    );
    let (_, p) = app.admin("GET", "/v1/lockdown-profiles/p", None).await;
    assert_eq!(p["maxStatementCpuMillis"], 1, "{p}");
}

#[tokio::test]
async fn never_allowed_whatever_the_profile() {
    let (app, t) = setup().await;
    let other = app.dir.path().join("pdbs/other.db").display().to_string();
    let outside = app.dir.path().join("../stolen.db").display().to_string();
    for (sql, needle) in [
        (format!("ATTACH DATABASE '{other}' AS o"), "ATTACH"),
        ("ATTACH DATABASE ':memory:' AS m".to_string(), "ATTACH"),
        ("DETACH DATABASE main".to_string(), "DETACH"),
        (format!("VACUUM INTO '{outside}'"), "VACUUM INTO"),
        (
            "SELECT load_extension('/tmp/evil.so')".to_string(),
            "load_extension",
        ),
        ("PRAGMA journal_mode=DELETE".to_string(), "journal_mode"),
        ("PRAGMA synchronous=OFF".to_string(), "synchronous"),
        ("PRAGMA writable_schema=ON".to_string(), "writable_schema"),
    ] {
        assert_err(
            app.sql("db", &t, &sql, json!(null)).await,
            StatusCode::FORBIDDEN,
            needle,
        );
    }
    assert!(
        !std::path::Path::new(&outside).exists(),
        "nothing was written outside"
    );
    assert_eq!(
        app.sql("db", &t, "PRAGMA table_info(t)", json!(null))
            .await
            .0,
        StatusCode::OK,
        "harmless pragmas stay"
    );
}

#[tokio::test]
async fn a_profile_change_reaches_an_open_session_at_its_next_statement() {
    let (app, t) = setup().await;
    profile(&app, json!({})).await;
    // Warm the session's statement cache with the very statement about to be refused.
    for _ in 0..3 {
        app.sql("db", &t, "SELECT count(*) FROM t", json!(null))
            .await;
    }
    app.admin(
        "PUT",
        "/v1/lockdown-profiles/p",
        Some(json!({"disabledFunctions": ["count"]})),
    )
    .await;
    assert_err(
        app.sql("db", &t, "SELECT count(*) FROM t", json!(null))
            .await,
        StatusCode::FORBIDDEN,
        "count() is disabled",
    );
    app.admin("PUT", "/v1/lockdown-profiles/p", Some(json!({})))
        .await;
    assert_eq!(
        app.sql("db", &t, "SELECT count(*) FROM t", json!(null))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_statement_an_admin_prepared_is_checked_again_for_a_tenant() {
    let (app, t) = setup().await;
    profile(&app, json!({"disabledStatements": ["DROP_TABLE"]})).await;
    // The admin session prepares (and caches) the statement; admin sessions bypass lockdown.
    for _ in 0..3 {
        let (s, v) = app
            .admin(
                "POST",
                "/v1/databases/db/query",
                Some(json!({"sql": "EXPLAIN DROP TABLE t"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // The same text from a tenant, on the same pooled connection, is refused.
    assert_err(
        app.sql("db", &t, "EXPLAIN DROP TABLE t", json!(null)).await,
        StatusCode::FORBIDDEN,
        "DROP TABLE",
    );
    assert_err(
        app.sql("db", &t, "DROP TABLE t", json!(null)).await,
        StatusCode::FORBIDDEN,
        "DROP TABLE",
    );
}

#[tokio::test]
async fn without_an_admin_token_a_tenant_token_is_still_held_to_its_lockdown_and_databases() {
    let app = app_standalone();
    app.create(json!({"name": "db"})).await;
    app.create(json!({"name": "other"})).await;
    let (s, v) = app
        .call(
            "PUT",
            "/v1/lockdown-profiles/p",
            None,
            Some(json!({"disabledStatements": ["DROP_TABLE"]})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "no token is admin standalone: {v}"
    );
    app.call(
        "PATCH",
        "/v1/databases/db",
        None,
        Some(json!({"lockdownProfile": "p"})),
    )
    .await;
    let t = app.token(&["db"]).await;
    // The tenant token's bearer is a tenant: the profile applies…
    assert_err(
        app.sql("db", &t, "DROP TABLE kv", json!(null)).await,
        StatusCode::FORBIDDEN,
        "DROP TABLE is disabled",
    );
    // …and so do the token's databases.
    assert_err(
        app.sql("other", &t, "SELECT 1", json!(null)).await,
        StatusCode::FORBIDDEN,
        "not valid for database other",
    );
    // Without a tenant token, standalone means admin: the profile does not bind it.
    let (s, v) = app
        .call(
            "POST",
            "/v1/databases/db/query",
            None,
            Some(json!({"sql": "DROP TABLE kv"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
