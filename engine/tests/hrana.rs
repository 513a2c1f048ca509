//! Hrana over HTTP, against the engine's router: values, streams and batons, batches,
//! the other request types, hostile input, and the engine's limits as Hrana errors.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tenantdb_engine::engine::EngineOptions;

async fn setup() -> (App, String) {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    (app, t)
}

fn app_idle(idle: Duration) -> App {
    app_with(EngineOptions {
        seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
        stream_idle_timeout: idle,
        close_deadline: Duration::from_millis(300),
        ..Default::default()
    })
}

#[tokio::test]
async fn values_round_trip_exactly_with_their_declared_types() {
    let (app, t) = setup().await;
    app.pipeline(
        "db",
        Some(&t),
        None,
        vec![hexec(
            "CREATE TABLE v (i INTEGER, r REAL, s TEXT, b BLOB, n NUMERIC)",
        )],
    )
    .await;
    let args = json!([
        {"type": "integer", "value": "9007199254740993"},
        {"type": "float", "value": 0.1},
        {"type": "text", "value": "héllo \"q\"\n"},
        {"type": "blob", "base64": "AAEC/w=="},
        {"type": "null"}
    ]);
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec_args("INSERT INTO v VALUES (?, ?, ?, ?, ?)", args),
                json!({"type": "execute", "stmt": {"sql": "INSERT INTO v (i, s) VALUES (:a, @b)",
                    "named_args": [{"name": "a", "value": hint(i64::MIN)}, {"name": "@b", "value": {"type": "text", "value": "named"}}]}}),
                hexec("SELECT i, r, s, b, n, i + 0 AS expr FROM v ORDER BY rowid"),
            ],
        )
        .await;
    let ins = &ok(&v, 0)["result"];
    assert_eq!(ins["affected_row_count"], 1);
    assert_eq!(ins["last_insert_rowid"], "1", "a string, exact to 64 bits");
    let sel = ok(&v, 2);
    let cols = &sel["result"]["cols"];
    assert_eq!(cols[0], json!({"name": "i", "decltype": "INTEGER"}));
    assert_eq!(cols[3], json!({"name": "b", "decltype": "BLOB"}));
    assert_eq!(cols[5], json!({"name": "expr", "decltype": null}));
    let r = rows(sel);
    assert_eq!(
        r[0][0],
        json!({"type": "integer", "value": "9007199254740993"})
    );
    assert_eq!(r[0][1], json!({"type": "float", "value": 0.1}));
    assert_eq!(r[0][2], json!({"type": "text", "value": "héllo \"q\"\n"}));
    assert_eq!(
        r[0][3],
        json!({"type": "blob", "base64": "AAEC/w"}),
        "unpadded, as the Go client requires"
    );
    assert_eq!(r[0][4], json!({"type": "null"}));
    assert_eq!(
        r[1][0],
        json!({"type": "integer", "value": i64::MIN.to_string()})
    );
    assert_eq!(r[1][2]["value"], "named");
    assert_eq!(
        sel["result"]["affected_row_count"], 0,
        "a read affects nothing"
    );
    assert_eq!(sel["result"]["last_insert_rowid"], Value::Null);
}

#[tokio::test]
async fn arguments_must_match_the_parameters() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("SELECT ?"),
                hexec_args("SELECT ?", json!([hint(1), hint(2)])),
                json!({"type": "execute", "stmt": {"sql": "SELECT :a", "named_args": [{"name": "b", "value": hint(1)}]}}),
                hexec_args("SELECT ?", json!([{"type": "integer", "value": "1e3"}])),
                hexec_args("SELECT ?", json!([{"type": "blob", "base64": "@@@"}])),
                hexec_args("SELECT ?1, ?1", json!([hint(7)])),
            ],
        )
        .await;
    for i in 0..3 {
        assert_eq!(err(&v, i).0, "ARGS_INVALID", "{i}");
    }
    assert_eq!(
        err(&v, 3).0,
        "PROTOCOL_ERROR",
        "an integer is a decimal string"
    );
    assert_eq!(err(&v, 4).0, "ARGS_INVALID");
    assert_eq!(rows(ok(&v, 5))[0][1]["value"], "7", "?1 used twice");
}

#[tokio::test]
async fn a_transaction_spans_requests_on_a_stream_and_is_invisible_until_commit() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![hexec("BEGIN"), hexec("INSERT INTO kv VALUES ('a', '1')")],
        )
        .await;
    let b1 = baton(&v).expect("the stream stays open");
    // Another stream does not see the uncommitted row.
    let other = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![hexec("SELECT count(*) FROM kv"), json!({"type": "close"})],
        )
        .await;
    assert_eq!(rows(ok(&other, 0))[0][0]["value"], "0");
    assert_eq!(baton(&other), None, "closed in the same pipeline");
    let v = app
        .pipeline(
            "db",
            Some(&t),
            Some(&b1),
            vec![
                hexec("SELECT count(*) FROM kv"),
                json!({"type": "get_autocommit"}),
            ],
        )
        .await;
    assert_eq!(
        rows(ok(&v, 0))[0][0]["value"],
        "1",
        "the stream sees its own write"
    );
    assert_eq!(ok(&v, 1)["is_autocommit"], false);
    let b2 = baton(&v).unwrap();
    assert_ne!(b1, b2, "every response hands out a new baton");
    let v = app
        .pipeline(
            "db",
            Some(&t),
            Some(&b2),
            vec![hexec("ROLLBACK"), json!({"type": "close"})],
        )
        .await;
    assert_eq!(baton(&v), None);
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT count(*) FROM kv")])
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "0", "rolled back");
}

#[tokio::test]
async fn batch_conditions_decide_which_steps_run() {
    let (app, t) = setup().await;
    let step = |sql: &str, cond: Value| json!({"stmt": {"sql": sql}, "condition": cond});
    let batch = json!({"type": "batch", "batch": {"steps": [
        step("BEGIN", Value::Null),
        step("INSERT INTO kv VALUES ('x', '1')", json!({"type": "ok", "step": 0})),
        step("INSERT INTO kv VALUES ('x', '2')", json!({"type": "ok", "step": 1})),
        step("SELECT 'after error'", json!({"type": "error", "step": 2})),
        step("SELECT 'and'", json!({"type": "and", "conds": [{"type": "ok", "step": 1}, {"type": "not", "cond": {"type": "ok", "step": 2}}]})),
        step("SELECT 'or never'", json!({"type": "or", "conds": [{"type": "ok", "step": 2}, {"type": "error", "step": 0}]})),
        step("SELECT 'in a transaction'", json!({"type": "not", "cond": {"type": "is_autocommit"}})),
        step("COMMIT", json!({"type": "ok", "step": 1})),
        step("SELECT 'autocommit again'", json!({"type": "is_autocommit"})),
    ]}});
    let v = app.pipeline("db", Some(&t), None, vec![batch]).await;
    let r = &ok(&v, 0)["result"];
    let ran: Vec<bool> = r["step_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| !x.is_null())
        .collect();
    assert_eq!(
        ran,
        [true, true, false, true, true, false, true, true, true]
    );
    assert_eq!(r["step_errors"][2]["code"], "SQLITE_CONSTRAINT");
    assert!(r["step_errors"][2]["message"]
        .as_str()
        .unwrap()
        .contains("UNIQUE"));
    assert!(r["step_errors"][0].is_null() && r["step_errors"][5].is_null());
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![hexec("SELECT v FROM kv WHERE k = 'x'")],
        )
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "1", "committed");
    // A condition on a later step, and is_autocommit in Hrana 2, are errors of the request.
    let bad = json!({"type": "batch", "batch": {"steps": [step("SELECT 1", json!({"type": "ok", "step": 0}))]}});
    let v = app.pipeline("db", Some(&t), None, vec![bad]).await;
    assert_eq!(err(&v, 0).0, "PROTOCOL_ERROR");
    let v2 = json!({"type": "batch", "batch": {"steps": [step("SELECT 1", json!({"type": "is_autocommit"}))]}});
    let (s, v) = app.pipeline_v(2, "db", Some(&t), None, vec![v2]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(err(&v, 0).1.contains("Hrana 3"));
}

#[tokio::test]
async fn sequence_describe_and_stored_sql() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                json!({"type": "sequence", "sql": "CREATE TABLE s (a INTEGER, b TEXT); INSERT INTO s VALUES (1, 'one'); INSERT INTO s VALUES (2, 'two');"}),
                json!({"type": "describe", "sql": "SELECT a, b AS bee, a + 1 FROM s WHERE a = :x AND b = ?"}),
                json!({"type": "store_sql", "sql_id": 7, "sql": "SELECT count(*) FROM s"}),
                json!({"type": "execute", "stmt": {"sql_id": 7}}),
                json!({"type": "close_sql", "sql_id": 7}),
                json!({"type": "execute", "stmt": {"sql_id": 7}}),
                json!({"type": "close_sql", "sql_id": 99}),
                json!({"type": "execute", "stmt": {"sql": "SELECT 1", "sql_id": 1}}),
                json!({"type": "sequence", "sql": "INSERT INTO s VALUES (3, 'three'); SELEC nope; INSERT INTO s VALUES (4, 'four')"}),
                hexec("SELECT count(*) FROM s"),
            ],
        )
        .await;
    assert_eq!(ok(&v, 0)["type"], "sequence");
    let d = &ok(&v, 1)["result"];
    assert_eq!(d["params"], json!([{"name": ":x"}, {"name": null}]));
    assert_eq!(d["cols"][0], json!({"name": "a", "decltype": "INTEGER"}));
    assert_eq!(d["cols"][1]["name"], "bee");
    assert_eq!(
        (d["is_explain"].clone(), d["is_readonly"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(rows(ok(&v, 3))[0][0]["value"], "2");
    assert_eq!(err(&v, 5).0, "SQL_NOT_FOUND", "closed");
    assert_eq!(
        ok(&v, 6)["type"],
        "close_sql",
        "closing an unknown id is fine"
    );
    assert_eq!(err(&v, 7).0, "PROTOCOL_ERROR", "sql and sql_id both");
    assert_eq!(
        err(&v, 8).0,
        "SQLITE_ERROR",
        "the sequence stops at its bad statement"
    );
    assert_eq!(
        rows(ok(&v, 9))[0][0]["value"],
        "3",
        "what ran before it stays"
    );
}

#[tokio::test]
async fn a_failed_request_is_an_error_result_and_the_pipeline_goes_on() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("SELECT * FROM nope"),
                json!({"type": "frobnicate"}),
                json!({"no type": true}),
                hexec(""),
                hexec("SELECT 1; SELECT 2"),
                hexec("SELECT 'still here'"),
                json!({"type": "close"}),
                hexec("SELECT 'after close'"),
            ],
        )
        .await;
    assert_eq!(
        err(&v, 0),
        ("SQLITE_ERROR".into(), "no such table: nope".into())
    );
    assert_eq!(err(&v, 1).0, "PROTOCOL_ERROR");
    assert!(err(&v, 1).1.contains("frobnicate"));
    assert_eq!(err(&v, 2).0, "PROTOCOL_ERROR");
    assert_eq!(err(&v, 3).0, "SQL_NO_STATEMENT");
    assert_eq!(err(&v, 4).0, "SQLITE_ERROR");
    assert_eq!(rows(ok(&v, 5))[0][0]["value"], "still here");
    assert_eq!(err(&v, 7).0, "STREAM_CLOSED");
    assert_eq!(baton(&v), None);
}

#[tokio::test]
async fn batons_cannot_be_forged_moved_reused_or_used_after_close() {
    let app = app();
    app.create(json!({"name": "a"})).await;
    app.create(json!({"name": "b"})).await;
    let t = app.token(&["a", "b"]).await;
    let other = app.token(&["a", "b"]).await;
    let v = app
        .pipeline("a", Some(&t), None, vec![hexec("BEGIN")])
        .await;
    let b = baton(&v).unwrap();
    let refused = |got: (StatusCode, Value), code: &str| {
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
        assert_eq!(got.1["code"], code, "{}", got.1);
        assert!(got.1["message"].is_string() && got.1["error"].is_string());
    };
    // Forged: one character changed, or nonsense.
    let mut forged = b.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    refused(
        app.pipeline_v(3, "a", Some(&t), Some(&forged), vec![hexec("SELECT 1")])
            .await,
        "BATON_INVALID",
    );
    refused(
        app.pipeline_v(3, "a", Some(&t), Some("garbage"), vec![hexec("SELECT 1")])
            .await,
        "BATON_INVALID",
    );
    // Another database's URL, or another token's hands.
    refused(
        app.pipeline_v(3, "b", Some(&t), Some(&b), vec![hexec("SELECT 1")])
            .await,
        "BATON_INVALID",
    );
    refused(
        app.pipeline_v(3, "a", Some(&other), Some(&b), vec![hexec("SELECT 1")])
            .await,
        "BATON_INVALID",
    );
    // Still valid for its owner after those attempts; then used once only.
    let v = app
        .pipeline("a", Some(&t), Some(&b), vec![hexec("SELECT 1")])
        .await;
    let b2 = baton(&v).unwrap();
    refused(
        app.pipeline_v(3, "a", Some(&t), Some(&b), vec![hexec("SELECT 1")])
            .await,
        "BATON_REUSED",
    );
    let v = app
        .pipeline("a", Some(&t), Some(&b2), vec![json!({"type": "close"})])
        .await;
    assert_eq!(baton(&v), None);
    let got = app
        .pipeline_v(3, "a", Some(&t), Some(&b2), vec![hexec("SELECT 1")])
        .await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST);
    // Another engine (another tenant) never signed it.
    let elsewhere = common::app();
    elsewhere.create(json!({"name": "a"})).await;
    let et = elsewhere.token(&["a"]).await;
    refused(
        elsewhere
            .pipeline_v(3, "a", Some(&et), Some(&b), vec![hexec("SELECT 1")])
            .await,
        "BATON_INVALID",
    );
    // The engine still serves.
    let v = app
        .pipeline("a", Some(&t), None, vec![hexec("SELECT 42")])
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "42");
}

#[tokio::test]
async fn a_100000_request_pipeline_is_refused_whole_and_the_engine_serves_on() {
    let (app, t) = setup().await;
    let many = vec![hexec("SELECT 1"); 100_000];
    let (s, v) = app.pipeline_v(3, "db", Some(&t), None, many).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("at most 10000"));
    // 10,000 is served.
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT 1"); 10_000])
        .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 10_000);
    let (s, v) = app
        .call(
            "POST",
            "/db/db/v3/pipeline",
            Some(&t),
            Some(json!({"requests": "nope"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PROTOCOL_ERROR"))
    );
}

#[tokio::test]
async fn a_stored_sql_id_reused_ends_the_stream() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("BEGIN"),
                hexec("INSERT INTO kv VALUES ('x', 'y')"),
                json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 1"}),
            ],
        )
        .await;
    let b = baton(&v).unwrap();
    let (s, v) = app
        .pipeline_v(
            3,
            "db",
            Some(&t),
            Some(&b),
            vec![json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 2"})],
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PROTOCOL_ERROR")),
        "{v}"
    );
    let (s, _) = app
        .pipeline_v(3, "db", Some(&t), Some(&b), vec![hexec("SELECT 1")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the stream is gone");
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT count(*) FROM kv")])
        .await;
    assert_eq!(
        rows(ok(&v, 0))[0][0]["value"],
        "0",
        "its transaction rolled back"
    );
}

#[tokio::test]
async fn an_idle_stream_expires_and_its_write_lock_passes_on() {
    let app = app_idle(Duration::from_millis(400));
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("BEGIN IMMEDIATE"),
                hexec("INSERT INTO kv VALUES ('held', '1')"),
            ],
        )
        .await;
    let b = baton(&v).unwrap();
    // A second client's write waits for the lock (without failing) until the first
    // stream expires and rolls back.
    let started = Instant::now();
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("INSERT INTO kv VALUES ('second', '2')"),
                json!({"type": "close"}),
            ],
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(ok(&v, 0)["result"]["affected_row_count"], 1, "{v}");
    assert!(
        waited >= Duration::from_millis(300),
        "it waited for the expiry: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let (s, v) = app
        .pipeline_v(3, "db", Some(&t), Some(&b), vec![hexec("COMMIT")])
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("STREAM_EXPIRED")),
        "{v}"
    );
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT k FROM kv")])
        .await;
    assert_eq!(rows(ok(&v, 0)).len(), 1, "only the second write: {v}");
    let (_, iso) = app.call("GET", "/v1/isolation/cpu", None, None).await;
    assert!(iso["streams"]["expired"].as_u64().unwrap() >= 1, "{iso}");
}

#[tokio::test]
async fn a_writer_waits_for_another_streams_commit_without_failing() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("BEGIN IMMEDIATE"),
                hexec("INSERT INTO kv VALUES ('first', '1')"),
            ],
        )
        .await;
    let b = baton(&v).unwrap();
    let app2 = App {
        router: app.router.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let t2 = t.clone();
    let second = tokio::spawn(async move {
        let started = Instant::now();
        let v = app2
            .pipeline(
                "db",
                Some(&t2),
                None,
                vec![
                    hexec("INSERT INTO kv VALUES ('second', '2')"),
                    json!({"type": "close"}),
                ],
            )
            .await;
        (v, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.pipeline(
        "db",
        Some(&t),
        Some(&b),
        vec![hexec("COMMIT"), json!({"type": "close"})],
    )
    .await;
    let (v, waited) = second.await.unwrap();
    assert_eq!(ok(&v, 0)["result"]["affected_row_count"], 1, "{v}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT count(*) FROM kv")])
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "2");
}

#[tokio::test]
async fn open_streams_count_against_the_tiers_connections() {
    let limits = tenantdb_engine::config::EngineLimits {
        connections: Some(2),
        ..Default::default()
    };
    let app = app_configured(
        EngineOptions::default(),
        tenantdb_engine::config::EngineConfig {
            limits,
            ..Default::default()
        },
    );
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    let s1 = baton(
        &app.pipeline("db", Some(&t), None, vec![hexec("SELECT 1")])
            .await,
    )
    .unwrap();
    let _s2 = baton(
        &app.pipeline("db", Some(&t), None, vec![hexec("SELECT 2")])
            .await,
    )
    .unwrap();
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT 3")])
        .await;
    assert_eq!(err(&v, 0).0, "CONNECTION_LIMIT", "{v}");
    assert_eq!(baton(&v), None);
    // The JSON API shares the same limit.
    let (s, _) = app.sql("db", &t, "SELECT 1", json!(null)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // An open stream still serves; closing one frees its connection.
    app.pipeline("db", Some(&t), Some(&s1), vec![json!({"type": "close"})])
        .await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![hexec("SELECT 3"), json!({"type": "close"})],
        )
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "3");
}

#[tokio::test]
async fn lockdown_quota_and_rate_refusals_arrive_as_hrana_errors() {
    let (app, _) = setup().await;
    let (s, _) = app
        .admin(
            "PUT",
            "/v1/lockdown-profiles/strict",
            Some(json!({"disabledStatements": ["DROP_TABLE", "DELETE_WITHOUT_WHERE"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.create(
        json!({"name": "locked", "lockdownProfile": "strict", "storageQuotaBytes": 64 * 1024}),
    )
    .await;
    let lt = app.token(&["locked"]).await;
    let v = app
        .pipeline(
            "locked",
            Some(&lt),
            None,
            vec![
                hexec("DROP TABLE kv"),
                hexec("DELETE FROM kv"),
                hexec("ATTACH 'x.db' AS x"),
                json!({"type": "sequence", "sql": "SELECT 1; DROP TABLE kv"}),
                hexec("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n LIMIT 100) INSERT INTO kv SELECT x, randomblob(4000) FROM n"),
                hexec("SELECT count(*) FROM kv"),
            ],
        )
        .await;
    let (code, msg) = err(&v, 0);
    assert_eq!(code, "LOCKDOWN");
    assert!(msg.contains("DROP TABLE"), "{msg}");
    assert_eq!(err(&v, 1).0, "LOCKDOWN");
    assert_eq!(err(&v, 2).0, "LOCKDOWN");
    assert_eq!(err(&v, 3).0, "LOCKDOWN");
    let (code, msg) = err(&v, 4);
    assert_eq!(code, "STORAGE_QUOTA", "{msg}");
    assert_eq!(
        rows(ok(&v, 5))[0][0]["value"],
        "0",
        "nothing partly written"
    );
    // The rate limit: past the burst, every request of a pipeline is refused, and an
    // open stream stays usable.
    let limited = app_limited(3600, 2);
    limited.create(json!({"name": "db"})).await;
    let lt = limited.token(&["db"]).await;
    let v = limited
        .pipeline("db", Some(&lt), None, vec![hexec("BEGIN")])
        .await;
    let b = baton(&v).unwrap();
    limited
        .pipeline(
            "db",
            Some(&lt),
            None,
            vec![hexec("SELECT 1"), json!({"type": "close"})],
        )
        .await;
    let v = limited
        .pipeline(
            "db",
            Some(&lt),
            Some(&b),
            vec![hexec("SELECT 1"), hexec("SELECT 2")],
        )
        .await;
    let (code, msg) = err(&v, 0);
    assert_eq!(code, "RATE_LIMITED");
    assert!(msg.contains("retry in"), "{msg}");
    assert_eq!(err(&v, 1).0, "RATE_LIMITED");
    assert!(baton(&v).is_some(), "the stream stays usable");
}

#[tokio::test]
async fn tokens_stay_scoped_and_strangers_are_not_billed() {
    let app = app();
    app.create(json!({"name": "mine"})).await;
    app.create(json!({"name": "theirs"})).await;
    let t = app.token(&["mine"]).await;
    let refused = |got: (StatusCode, Value), status: StatusCode| {
        assert_eq!(got.0, status, "{}", got.1);
        assert!(
            got.1["message"].is_string() && got.1["code"].is_string(),
            "{}",
            got.1
        );
    };
    refused(
        app.pipeline_v(2, "theirs", Some(&t), None, vec![hexec("SELECT 1")])
            .await,
        StatusCode::FORBIDDEN,
    );
    refused(
        app.pipeline_v(
            2,
            "mine",
            Some("tdb_not_a_token"),
            None,
            vec![hexec("SELECT 1")],
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    refused(
        app.pipeline_v(2, "mine", None, None, vec![hexec("SELECT 1")])
            .await,
        StatusCode::UNAUTHORIZED,
    );
    let (s, _) = app
        .call(
            "POST",
            "/db/theirs/v3/cursor",
            Some(&t),
            Some(json!({"batch": {"steps": []}})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, usage) = app.admin("GET", "/v1/usage", None).await;
    assert_eq!(
        usage["total"]["requests"], 0,
        "refusals are not billed: {usage}"
    );
    let (_, metrics) = app.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            r#"tenantdb_engine_refused_requests_total{plane="hrana_http",reason="forbidden"} 3"#
        ),
        "{metrics}"
    );
    app.pipeline("mine", Some(&t), None, vec![hexec("SELECT 1")])
        .await;
    let (_, usage) = app.admin("GET", "/v1/usage", None).await;
    assert_eq!(usage["total"]["requests"], 1, "{usage}");
}

#[tokio::test]
async fn a_cursor_streams_a_result_past_the_row_cap() {
    let (app, t) = setup().await;
    let big = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n LIMIT 50000) SELECT x, 'row' FROM n";
    let v = app.pipeline("db", Some(&t), None, vec![hexec(big)]).await;
    let (code, msg) = err(&v, 0);
    assert_eq!(code, "RESPONSE_TOO_LARGE");
    assert!(msg.contains("cursor"), "{msg}");
    let body = json!({"baton": null, "batch": {"steps": [
        {"stmt": {"sql": big}},
        {"stmt": {"sql": "SELECT * FROM nope"}},
        {"stmt": {"sql": "SELECT 'skipped'"}, "condition": {"type": "ok", "step": 1}},
        {"stmt": {"sql": "INSERT INTO kv VALUES ('c', 'd')"}},
    ]}});
    let (s, text) = app
        .call("POST", "/db/db/v3/cursor", Some(&t), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0]["baton"].is_string(), "{}", lines[0]);
    assert_eq!(
        lines[1],
        json!({"type": "step_begin", "step": 0, "cols": [{"name": "x", "decltype": null}, {"name": "'row'", "decltype": null}]})
    );
    let row_count = lines.iter().filter(|l| l["type"] == "row").count();
    assert_eq!(row_count, 50_000);
    assert_eq!(lines[50_001]["row"][0]["value"], "50000");
    let kinds: Vec<&str> = lines[50_002..]
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["step_end", "step_error", "step_begin", "step_end"]);
    assert_eq!(lines[50_003]["step"], 1);
    assert_eq!(lines[50_005]["affected_row_count"], 1);
    // The stream goes on after the cursor.
    let b = lines[0]["baton"].as_str().unwrap();
    let v = app
        .pipeline(
            "db",
            Some(&t),
            Some(b),
            vec![hexec("SELECT v FROM kv"), json!({"type": "close"})],
        )
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "d");
}

#[tokio::test]
async fn full_text_search_and_rtree_are_open_to_tenants_other_modules_are_not() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("CREATE VIRTUAL TABLE docs USING fts5(title, body)"),
                hexec(
                    "INSERT INTO docs VALUES ('Hrana', 'libSQL speaks it over HTTP and WebSocket')",
                ),
                hexec("INSERT INTO docs VALUES ('Oracle', 'pluggable databases in a container')"),
                hexec("SELECT title FROM docs WHERE docs MATCH 'websocket' ORDER BY rank"),
                hexec("CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx, miny, maxy)"),
                hexec("INSERT INTO boxes VALUES (1, 0, 10, 0, 10), (2, 20, 30, 20, 30)"),
                hexec("SELECT id FROM boxes WHERE maxx >= 5 AND minx <= 6"),
                hexec("CREATE VIRTUAL TABLE f USING fts4(x)"),
                hexec("CREATE VIRTUAL TABLE s USING sqlite_dbpage"),
                hexec("DROP TABLE docs"),
            ],
        )
        .await;
    assert_eq!(
        rows(ok(&v, 3)),
        &vec![json!([{"type": "text", "value": "Hrana"}])]
    );
    assert_eq!(
        rows(ok(&v, 6)),
        &vec![json!([{"type": "integer", "value": "1"}])]
    );
    let (code, msg) = err(&v, 7);
    assert_eq!(code, "LOCKDOWN", "{msg}");
    assert!(msg.contains("fts4"), "{msg}");
    assert_eq!(err(&v, 8).0, "LOCKDOWN");
    assert_eq!(ok(&v, 9)["type"], "execute");
    // Full-text search still works under a profile that disables PRAGMA.
    app.admin(
        "PUT",
        "/v1/lockdown-profiles/nopragma",
        Some(json!({"disabledStatements": ["PRAGMA"]})),
    )
    .await;
    app.create(json!({"name": "strict", "lockdownProfile": "nopragma"}))
        .await;
    let st = app.token(&["strict"]).await;
    let v = app
        .pipeline(
            "strict",
            Some(&st),
            None,
            vec![
                hexec("CREATE VIRTUAL TABLE d USING fts5(body)"),
                hexec("INSERT INTO d VALUES ('needle in a haystack')"),
                hexec("SELECT count(*) FROM d WHERE d MATCH 'needle'"),
                hexec("PRAGMA data_version = 3"),
                hexec("PRAGMA table_info(d)"),
            ],
        )
        .await;
    assert_eq!(rows(ok(&v, 2))[0][0]["value"], "1");
    assert_eq!(err(&v, 3).0, "LOCKDOWN");
    assert_eq!(err(&v, 4).0, "LOCKDOWN", "other PRAGMAs stay disabled");
}

#[tokio::test]
async fn a_database_url_without_its_slash_is_explained() {
    let (app, t) = setup().await;
    let (s, v) = app
        .call(
            "POST",
            "/db/v2/pipeline",
            Some(&t),
            Some(json!({"requests": []})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["message"].as_str().unwrap().contains("ends with a slash"),
        "{v}"
    );
    // Doubled slashes (clients joining a URL that ends in '/') are served.
    let (s, _) = app
        .call(
            "POST",
            "/db/db//v2/pipeline",
            Some(&t),
            Some(json!({"requests": [hexec("SELECT 1")]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call("GET", "/db/db/v3", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn closing_a_database_ends_its_streams() {
    let (app, t) = setup().await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![hexec("BEGIN"), hexec("INSERT INTO kv VALUES ('x', 'y')")],
        )
        .await;
    let b = baton(&v).unwrap();
    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/db/close",
            Some(json!({"mode": "immediate"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .pipeline_v(3, "db", Some(&t), Some(&b), vec![hexec("COMMIT")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    app.admin(
        "POST",
        "/v1/databases/db/open",
        Some(json!({"mode": "ReadWrite"})),
    )
    .await;
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT count(*) FROM kv")])
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "0", "rolled back");
}

#[tokio::test]
async fn dropping_a_database_revokes_the_tokens_made_for_it() {
    let app = app();
    app.create(json!({"name": "gone"})).await;
    app.create(json!({"name": "stays"})).await;
    let only = app.token(&["gone"]).await;
    let both = app.token(&["gone", "stays"]).await;
    let (s, v) = app
        .admin("POST", "/v1/tokens", Some(json!({"databases": ["gone"]})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap().to_string();
    let (s, info) = app.admin("GET", &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(
        (s, info["databases"].clone()),
        (StatusCode::OK, json!(["gone"]))
    );
    let (s, _) = app.admin("DELETE", "/v1/databases/gone", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.admin("GET", &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "revoked with its database");
    // A database made again under the same name does not open to the old tokens.
    app.create(json!({"name": "gone"})).await;
    let (s, _) = app
        .pipeline_v(3, "gone", Some(&only), None, vec![hexec("SELECT 1")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .pipeline_v(3, "gone", Some(&both), None, vec![hexec("SELECT 1")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A token for several keeps the others.
    let v = app
        .pipeline("stays", Some(&both), None, vec![hexec("SELECT 1")])
        .await;
    assert_eq!(rows(ok(&v, 0))[0][0]["value"], "1");
}

#[tokio::test]
async fn select_star_sees_columns_another_connection_added() {
    let (app, t) = setup().await;
    // A stream keeps its connection: the statement is cached there.
    let v = app
        .pipeline("db", Some(&t), None, vec![hexec("SELECT * FROM kv")])
        .await;
    let b = baton(&v).unwrap();
    assert_eq!(ok(&v, 0)["result"]["cols"].as_array().unwrap().len(), 2);
    // Another stream (another connection) changes the schema.
    app.pipeline(
        "db",
        Some(&t),
        None,
        vec![
            hexec("ALTER TABLE kv ADD COLUMN extra INTEGER DEFAULT 7"),
            hexec("INSERT INTO kv VALUES ('a', 'b', 8)"),
            json!({"type": "close"}),
        ],
    )
    .await;
    let v = app
        .pipeline(
            "db",
            Some(&t),
            Some(&b),
            vec![hexec("SELECT * FROM kv"), json!({"type": "close"})],
        )
        .await;
    let r = &ok(&v, 0)["result"];
    let cols: Vec<&str> = r["cols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["k", "v", "extra"], "{r}");
    assert_eq!(r["rows"][0].as_array().unwrap().len(), 3, "{r}");
}

#[tokio::test]
async fn an_expiring_token_opens_its_database_until_it_expires_and_says_so_after() {
    let app = app();
    app.create(json!({"name": "brief"})).await;
    let (s, v) = app
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"databases": ["brief"], "expiresInSeconds": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    let (_, info) = app.admin("GET", &format!("/v1/tokens/{id}"), None).await;
    assert!(info["expiresAt"].is_i64(), "{info}");
    let (s, _) = app
        .pipeline_v(3, "brief", Some(&token), None, vec![hexec("SELECT 1")])
        .await;
    assert_eq!(s, StatusCode::OK, "valid before its expiry");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_err(
        app.sql("brief", &token, "SELECT 1", json!([])).await,
        StatusCode::UNAUTHORIZED,
        "expired",
    );
    // A lifetime of zero is no lifetime.
    let (s, v) = app
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"databases": ["brief"], "expiresInSeconds": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}
