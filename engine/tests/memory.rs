//! The SQLite heap budget: a statement that needs more memory than the budget fails with
//! 503 `memory_budget`, and the engine serves on. The budget is process-wide, so this test
//! runs in a test binary of its own.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use tenantdb_engine::isolation::{apply_sqlite_heap_budget, sqlite_heap, sqlite_heap_budget};

#[tokio::test]
async fn a_statement_past_the_heap_budget_gets_503_and_the_engine_serves_on() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    // A 64 MiB memory limit gives SQLite a 32 MiB heap.
    let budget = sqlite_heap_budget(Some(64 << 20));
    assert_eq!(budget, Some(32 << 20));
    apply_sqlite_heap_budget(budget);
    assert_eq!(sqlite_heap().0, 32 << 20);
    // About 60 MB of text held in memory at once.
    let big = "SELECT length(group_concat(hex(randomblob(1000)))) FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 30000) SELECT x FROM n)";
    let (s, v) = app.sql("db", &t, big, json!(null)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "memory_budget");
    // Work within the budget still runs, on the same engine.
    let (s, v) = app.sql("db", &t, "SELECT 1", json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Without a budget the same statement runs.
    apply_sqlite_heap_budget(None);
    let (s, v) = app.sql("db", &t, big, json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0][0], 60_000_000 + 29_999);
}
