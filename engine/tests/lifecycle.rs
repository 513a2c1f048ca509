//! Every lifecycle transition through the HTTP API, the legal and the illegal ones.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

#[tokio::test]
async fn create_from_seed_is_idempotent_and_open_read_write() {
    let app = app();
    let (s, v) = app
        .admin("POST", "/v1/databases", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            v["state"].as_str(),
            v["openMode"].as_str(),
            v["source"].as_str()
        ),
        (Some("Open"), Some("ReadWrite"), Some("seed"))
    );
    let (s, _) = app
        .admin("POST", "/v1/databases", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(s, StatusCode::OK, "asking again changes nothing");
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "orders", "source": {"empty": {}}})),
        )
        .await,
        StatusCode::CONFLICT,
        "created from seed",
    );
    let t = app.token(&["orders"]).await;
    let (s, v) = app
        .sql(
            "orders",
            &t,
            "INSERT INTO kv VALUES (?, ?)",
            json!(["a", "1"]),
        )
        .await;
    assert_eq!(
        (s, v["rowsAffected"].as_u64()),
        (StatusCode::OK, Some(1)),
        "the seed's table is there: {v}"
    );
}

#[tokio::test]
async fn open_modes_read_only_restricted_mounted() {
    let app = app();
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    app.sql("db", &t, "INSERT INTO kv VALUES ('x', 'y')", json!(null))
        .await;

    app.admin(
        "POST",
        "/v1/databases/db/open",
        Some(json!({"mode": "ReadOnly"})),
    )
    .await;
    assert_err(
        app.sql("db", &t, "INSERT INTO kv VALUES ('z', 'z')", json!(null))
            .await,
        StatusCode::CONFLICT,
        "read-only",
    );
    let (s, v) = app
        .sql("db", &t, "SELECT v FROM kv WHERE k = ?", json!(["x"]))
        .await;
    assert_eq!((s, v["rows"][0][0].as_str()), (StatusCode::OK, Some("y")));

    app.admin(
        "POST",
        "/v1/databases/db/open",
        Some(json!({"mode": "Restricted"})),
    )
    .await;
    assert_err(
        app.sql("db", &t, "SELECT 1", json!(null)).await,
        StatusCode::FORBIDDEN,
        "admin sessions only",
    );
    assert_eq!(
        app.sql("db", ADMIN, "SELECT 1", json!(null)).await.0,
        StatusCode::OK
    );

    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/db/close",
            Some(json!({"mode": "immediate"})),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("Mounted")));
    assert_err(
        app.sql("db", &t, "SELECT 1", json!(null)).await,
        StatusCode::CONFLICT,
        "mounted",
    );
    let (s, _) = app
        .admin("POST", "/v1/databases/db/close", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK, "closing a closed database is a no-op");

    app.admin(
        "POST",
        "/v1/databases/db/open",
        Some(json!({"mode": "ReadWrite"})),
    )
    .await;
    assert_eq!(
        app.sql("db", &t, "INSERT INTO kv VALUES ('z', 'z')", json!(null))
            .await
            .0,
        StatusCode::OK
    );
    let (_, h) = app.admin("GET", "/v1/databases/db/history", None).await;
    let events: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["created", "opened", "opened", "closed", "opened"]);
}

#[tokio::test]
async fn clones_full_snapshot_and_metadata_only() {
    let app = app();
    app.create(json!({"name": "src"})).await;
    for i in 0..50 {
        app.sql(
            "src",
            ADMIN,
            "INSERT INTO kv VALUES (?, 'v')",
            json!([format!("k{i}")]),
        )
        .await;
    }
    let full = app
        .create(json!({"name": "full", "source": {"clone": {"from": "src", "mode": "full"}}}))
        .await;
    assert_eq!(full["source"], "clone full of src");
    let snap = app
        .create(json!({"name": "snap", "source": {"clone": {"from": "src", "mode": "snapshot"}}}))
        .await;
    assert!(
        snap["source"]
            .as_str()
            .unwrap()
            .starts_with("clone snapshot"),
        "{snap}"
    );
    let meta = app
        .create(
            json!({"name": "meta", "source": {"clone": {"from": "src", "mode": "metadataOnly"}}}),
        )
        .await;
    assert_eq!(meta["source"], "clone metadataOnly of src");
    let count = |db: &'static str| {
        let app = &app;
        async move {
            app.sql(db, ADMIN, "SELECT count(*) FROM kv", json!(null))
                .await
                .1["rows"][0][0]
                .as_i64()
        }
    };
    assert_eq!(count("full").await, Some(50));
    assert_eq!(count("snap").await, Some(50));
    assert_eq!(count("meta").await, Some(0), "schema, no rows");
    // Independent afterwards.
    app.sql("src", ADMIN, "DELETE FROM kv", json!(null)).await;
    assert_eq!(count("full").await, Some(50));
    // Asking again for the same clone is fine; for a clone of another database, a
    // conflict naming both sources.
    let (s, _) = app
        .admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "full", "source": {"clone": {"from": "src", "mode": "full"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.create(json!({"name": "other"})).await;
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "full", "source": {"clone": {"from": "other", "mode": "full"}}})),
        )
        .await,
        StatusCode::CONFLICT,
        "created from clone full of src; this request asks for clone full of other",
    );
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "x", "source": {"clone": {"from": "missing"}}})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "no database named missing",
    );
}

#[tokio::test]
async fn unplug_and_plug_round_trip_identically_and_corruption_is_refused() {
    let app = app();
    app.create(json!({"name": "a"})).await;
    app.sql(
        "a",
        ADMIN,
        "INSERT INTO kv VALUES ('k', 'precious')",
        json!(null),
    )
    .await;
    let (s, m) = app
        .admin(
            "POST",
            "/v1/databases/a/unplug",
            Some(json!({"archive": "a-arch"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64));
    assert_err(
        app.admin("GET", "/v1/databases/a", None).await,
        StatusCode::NOT_FOUND,
        "no database named a",
    );
    let b = app
        .create(json!({"name": "b", "source": {"plug": {"archive": "a-arch"}}}))
        .await;
    assert_eq!(b["source"], "plug of a-arch");
    let (_, v) = app.sql("b", ADMIN, "SELECT v FROM kv", json!(null)).await;
    assert_eq!(v["rows"][0][0], "precious");
    // Same content: unplug b and compare checksums with a's archive.
    let (_, m2) = app
        .admin(
            "POST",
            "/v1/databases/b/unplug",
            Some(json!({"archive": "b-arch"})),
        )
        .await;
    assert_eq!(
        m2["sha256"], m["sha256"],
        "unplug → plug → unplug keeps the bytes"
    );
    // Corrupt an archive: plug refuses it and registers nothing.
    let data = app.dir.path().join("archives/b-arch/data.db");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "c", "source": {"plug": {"archive": "b-arch"}}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "failed verification",
    );
    assert_err(
        app.admin("GET", "/v1/databases/c", None).await,
        StatusCode::NOT_FOUND,
        "no database",
    );
    assert_err(
        app.admin(
            "POST",
            "/v1/databases",
            Some(json!({"name": "d", "source": {"plug": {"archive": "nope"}}})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "no archive named nope",
    );
}

#[tokio::test]
async fn drop_deletes_or_keeps_files_and_a_dropped_database_is_gone() {
    let app = app();
    app.create(json!({"name": "gone"})).await;
    app.create(json!({"name": "kept"})).await;
    assert_eq!(
        app.admin("DELETE", "/v1/databases/gone", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin("DELETE", "/v1/databases/kept?keepFiles=true", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(!app.dir.path().join("pdbs/gone.db").exists());
    let retained: Vec<_> = std::fs::read_dir(app.dir.path().join("retained"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(retained.len(), 1, "kept files move to retained/");
    assert_err(
        app.admin(
            "POST",
            "/v1/databases/gone/open",
            Some(json!({"mode": "ReadWrite"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "no database named gone",
    );
    assert_err(
        app.admin("DELETE", "/v1/databases/gone", None).await,
        StatusCode::NOT_FOUND,
        "no database",
    );
}

#[tokio::test]
async fn normal_close_waits_for_sessions_and_immediate_interrupts_them() {
    let app = app();
    app.create(json!({"name": "busy"})).await;
    let slow =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n) SELECT count(*) FROM n";
    let runner = {
        let router = app.router.clone();
        tokio::spawn(async move {
            let app2 = common::App {
                router,
                dir: tempfile::tempdir().unwrap(),
            };
            app2.sql("busy", ADMIN, slow, json!(null)).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_err(
        app.admin(
            "POST",
            "/v1/databases/busy/close",
            Some(json!({"mode": "normal"})),
        )
        .await,
        StatusCode::CONFLICT,
        "active sessions",
    );
    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/busy/close",
            Some(json!({"mode": "immediate"})),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("Mounted")),
        "{v}"
    );
    let (s, _) = runner.await.unwrap();
    assert_eq!(
        s,
        StatusCode::REQUEST_TIMEOUT,
        "the running statement was interrupted"
    );
}

#[tokio::test]
async fn the_catalog_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = tenantdb_engine::engine::Engine::open(dir.path(), Default::default()).unwrap();
        e.create(serde_json::from_value(json!({"name": "one"})).unwrap())
            .unwrap();
        e.create(serde_json::from_value(json!({"name": "two", "openMode": null})).unwrap())
            .unwrap();
        e.open_pdb("one", tenantdb_engine::catalog::OpenMode::ReadOnly)
            .unwrap();
    }
    let e = tenantdb_engine::engine::Engine::open(dir.path(), Default::default()).unwrap();
    assert_eq!(
        e.describe("one").unwrap().record.open_mode,
        Some(tenantdb_engine::catalog::OpenMode::ReadOnly)
    );
    assert_eq!(e.describe("two").unwrap().state, "Mounted");
}

/// Download raw bytes (the archive data route answers octet-stream, not JSON).
async fn download(app: &common::App, path: &str) -> (StatusCode, Vec<u8>, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method("GET")
        .uri(path)
        .header("authorization", format!("Bearer {}", common::ADMIN))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let sha = resp
        .headers()
        .get("x-tenantdb-sha256")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes, sha)
}

async fn upload(app: &common::App, path: &str, bytes: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let req = axum::http::Request::builder()
        .method("PUT")
        .uri(path)
        .header("authorization", format!("Bearer {}", common::ADMIN))
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(bytes))
        .unwrap();
    app.raw(req).await
}

#[tokio::test]
async fn archives_move_between_engines_verified_and_bad_uploads_register_nothing() {
    let a = common::app();
    let b = common::app();
    a.create(json!({"name": "orders"})).await;
    let tok = a.token(&["orders"]).await;
    for i in 0..50 {
        let (s, v) = a
            .sql(
                "orders",
                &tok,
                "INSERT INTO kv VALUES (?, 'x')",
                json!([format!("k{i}")]),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, m) = a
        .admin(
            "POST",
            "/v1/databases/orders/unplug",
            Some(json!({"archive": "orders-move"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let (s, bytes, sha) = download(&a, "/v1/archives/orders-move/data").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sha, m["sha256"].as_str().unwrap());
    assert_eq!(bytes.len() as u64, m["sizeBytes"].as_u64().unwrap());

    // A corrupted copy or a wrong checksum is refused and leaves no archive behind.
    let mut broken = bytes.clone();
    let mid = broken.len() / 2;
    broken[mid..mid + 4096].fill(0xA5);
    let (s, v) = upload(
        &b,
        &format!("/v1/archives/orders-move/data?database=orders&sha256={sha}"),
        broken,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let zeros = "0".repeat(64);
    let (s, v) = upload(
        &b,
        &format!("/v1/archives/orders-move/data?database=orders&sha256={zeros}"),
        bytes.clone(),
    )
    .await;
    common::assert_err((s, v), StatusCode::BAD_REQUEST, "failed verification");
    let (s, v) = upload(
        &b,
        "/v1/archives/orders-move/data?database=orders&sha256=nothex",
        bytes.clone(),
    )
    .await;
    common::assert_err((s, v), StatusCode::BAD_REQUEST, "sha256");
    let (_, list) = b.admin("GET", "/v1/archives", None).await;
    assert_eq!(
        list["items"],
        json!([]),
        "nothing registered after bad uploads"
    );
    assert_eq!(
        std::fs::read_dir(b.dir.path().join("tmp")).unwrap().count(),
        0,
        "no received file left behind"
    );

    // The real bytes are registered, twice is a no-op, and they plug to the same rows.
    let up = format!("/v1/archives/orders-move/data?database=orders&sha256={sha}");
    let (s, v) = upload(&b, &up, bytes.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["sha256"], m["sha256"]);
    assert_eq!(upload(&b, &up, bytes.clone()).await.0, StatusCode::CREATED);
    b.create(json!({"name": "orders", "source": {"plug": {"archive": "orders-move"}}}))
        .await;
    let tb = b.token(&["orders"]).await;
    let (s, v) = b
        .sql("orders", &tb, "SELECT count(*) AS n FROM kv", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0][0], 50);

    // Deleting the source archive removes its files; a second delete is 404.
    let (s, _) = a.admin("DELETE", "/v1/archives/orders-move", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!a.dir.path().join("archives/orders-move").exists());
    common::assert_err(
        a.admin("DELETE", "/v1/archives/orders-move", None).await,
        StatusCode::NOT_FOUND,
        "no archive",
    );
}
