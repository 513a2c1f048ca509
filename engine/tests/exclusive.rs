//! The engine opens its databases with the `unix-excl` VFS: while it has a database open,
//! no other process can read or write the file behind its back, and connections inside
//! the engine still share it. Another process is played by Python's sqlite3 module; where
//! there is no python3 the test says so and checks nothing.

mod common;

use axum::http::StatusCode;
use common::{app, ADMIN};
use serde_json::json;

/// What another process gets when it reads the file at `path`: "ok: …" or "error: …".
fn other_process_reads(path: &std::path::Path) -> Option<String> {
    let script = "import sqlite3, sys\n\
                  try:\n    c = sqlite3.connect(sys.argv[1], timeout=0.2)\n    print('ok: %s' % c.execute('SELECT count(*) FROM t').fetchone()[0])\n\
                  except Exception as e:\n    print('error: %s' % e)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &path.display().to_string()])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn no_other_process_opens_a_live_database_and_it_can_once_the_database_is_closed() {
    let app = app();
    app.create(json!({"name": "db", "source": {"empty": {}}}))
        .await;
    let (s, v) = app
        .sql("db", ADMIN, "CREATE TABLE t (x INTEGER)", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.sql("db", ADMIN, "INSERT INTO t VALUES (1)", json!(null))
        .await;
    let path = app.dir.path().join("pdbs/db.db");
    let Some(live) = other_process_reads(&path) else {
        eprintln!("skipped: no python3 to play another process");
        return;
    };
    assert!(
        live.starts_with("error:") && live.contains("locked"),
        "another process read a live database: {live}"
    );
    // Connections inside the engine still share it.
    let (s, v) = app
        .sql("db", ADMIN, "SELECT count(*) FROM t", json!(null))
        .await;
    assert_eq!((s, v["rows"][0][0].as_i64()), (StatusCode::OK, Some(1)));
    // Closed, the file is free again (an operator can inspect it).
    let (s, v) = app
        .admin(
            "POST",
            "/v1/databases/db/close",
            Some(json!({"mode": "normal"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(other_process_reads(&path).as_deref(), Some("ok: 1"));
}
