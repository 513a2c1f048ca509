//! The operator's engine client and PDB planner against real engines served on
//! loopback: the calls the PluggableDatabase controller makes, step by step. It lives
//! here, beside the engine, so the operator itself depends only on `tenantdb-engine-api`.

use std::sync::Arc;

use serde_json::json;
use tenantdb_crds::PluggableDatabase;
use tenantdb_engine::cgroup::CgroupReader;
use tenantdb_engine::engine::{Engine, EngineOptions};
use tenantdb_engine::http::{router, EngineState};
use tenantdb_engine::lockdown::LockdownRules;
use tenantdb_operator::engine_client::{EngineClient, EngineLocator};
use tenantdb_operator::pdb::plan::{self, MoveObserved, MoveStep, Step};

const TOKEN: &str = "test-admin-token";

/// Serve an engine on a free loopback port; returns a client and the data directory.
async fn engine() -> (EngineClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            seed_sql: Some("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let state = Arc::new(
        EngineState::new(
            Arc::new(engine),
            Default::default(),
            CgroupReader::new("/nonexistent", ""),
            "test".into(),
            Some(TOKEN.into()),
        )
        .expect("state"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let locator = EngineLocator::new(&format!("http://127.0.0.1:{port}")).unwrap();
    (locator.client("ns", "tenant", TOKEN, None).unwrap(), dir)
}

fn pdb(yaml: &str) -> PluggableDatabase {
    serde_yaml::from_str(&format!(
        "apiVersion: tenantdb.io/v1alpha1\nkind: PluggableDatabase\nmetadata: {{name: orders, namespace: shop, uid: 6f1c2a34-0000-4000-8000-00000000abcd}}\nspec:\n{yaml}"
    ))
    .unwrap()
}

/// Run planner steps against `engine` until it reports InSync; returns the steps taken.
async fn converge(engine: &EngineClient, want: &plan::Wanted) -> Vec<Step> {
    let mut taken = Vec::new();
    for _ in 0..8 {
        let have = engine.database(&want.name).await.unwrap();
        let step = plan::next_step(want, have.as_ref());
        match &step {
            Step::InSync => return taken,
            Step::Create(r) => drop(engine.create(r).await.unwrap()),
            Step::Configure {
                storage_quota_bytes,
                lockdown_profile,
            } => drop(
                engine
                    .configure(
                        &want.name,
                        *storage_quota_bytes,
                        lockdown_profile.as_deref(),
                    )
                    .await
                    .unwrap(),
            ),
            Step::Close(m) => drop(engine.close(&want.name, *m).await.unwrap()),
            Step::Open(m) => drop(engine.open(&want.name, *m).await.unwrap()),
        }
        taken.push(step);
    }
    panic!("no convergence after {taken:?}");
}

async fn sql(engine: &EngineClient, q: &str) -> serde_json::Value {
    engine
        .call(
            reqwest::Method::POST,
            "/v1/databases/orders/query",
            Some(&json!({ "sql": q })),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn the_planner_drives_an_engine_through_every_open_mode() {
    let (e, _dir) = engine().await;
    assert!(e.database("orders").await.unwrap().is_none(), "404 is None");
    let want = plan::wanted(&pdb("  tenant: acme\n"), plan::TenantProfile::default()).unwrap();
    let steps = converge(&e, &want).await;
    assert!(matches!(steps.as_slice(), [Step::Create(_)]), "{steps:?}");
    sql(&e, "INSERT INTO t (v) VALUES ('a')").await;

    let ro = plan::wanted(
        &pdb("  tenant: acme\n  openMode: ReadOnly\n  closeMode: immediate\n"),
        plan::TenantProfile::default(),
    )
    .unwrap();
    let steps = converge(&e, &ro).await;
    assert_eq!(steps.len(), 2, "close then open: {steps:?}");
    let refused = e
        .call(
            reqwest::Method::POST,
            "/v1/databases/orders/query",
            Some(&json!({"sql": "INSERT INTO t (v) VALUES ('b')"})),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert_eq!(sql(&e, "SELECT count(*) FROM t").await["rows"][0][0], 1);

    let mounted = plan::wanted(
        &pdb("  tenant: acme\n  openMode: Mounted\n"),
        plan::TenantProfile::default(),
    )
    .unwrap();
    converge(&e, &mounted).await;
    let d = e.database("orders").await.unwrap().unwrap();
    assert_eq!(d.open_mode, None);

    // A profile must exist in the engine before a database can use it.
    let strict = plan::wanted(
        &pdb("  tenant: acme\n  lockdownProfile: strict\n  storageQuota: 2Mi\n"),
        plan::TenantProfile::default(),
    )
    .unwrap();
    let missing = e
        .configure("orders", None, Some("strict"))
        .await
        .unwrap_err();
    assert!(missing.is_client_error(), "{missing}");
    let rules: LockdownRules =
        serde_json::from_value(json!({"disabledStatements": ["DROP_TABLE"]})).unwrap();
    e.put_profile("strict", &rules).await.unwrap();
    let steps = converge(&e, &strict).await;
    assert!(matches!(steps[0], Step::Configure { .. }), "{steps:?}");
    let d = e.database("orders").await.unwrap().unwrap();
    assert_eq!(d.lockdown_profile.as_deref(), Some("strict"));
    assert_eq!(d.storage_quota_bytes, Some(2 << 20));
    let summary = e.summary().await.unwrap();
    assert_eq!(summary.container.databases, 1);
    let stats = summary
        .stats
        .as_ref()
        .expect("the engine reports statistics");
    assert!(
        stats.requests >= 3,
        "the queries above were metered: {stats:?}"
    );
    assert!(stats.peak_requests_per_minute >= 3);
    let (sla, usage) = tenantdb_operator::tenant::status::engine_figures(&summary);
    assert!(
        sla.is_some_and(|s| s.compliant),
        "no targets given, so nothing is violated"
    );
    assert_eq!(usage.unwrap().requests, stats.requests);
    assert!(summary.container.storage_bytes >= 4096, "{summary:?}");

    // Clone from a missing source: a 404 the controller turns into CloneSourceNotFound.
    let clone = plan::wanted(
        &pdb("  tenant: acme\n  source: {clone: {from: nowhere}}\n"),
        plan::TenantProfile::default(),
    )
    .unwrap();
    let Step::Create(mut req) = plan::next_step(&clone, None) else {
        panic!()
    };
    req.name = "copy".into();
    assert_eq!(e.create(&req).await.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn relocation_steps_move_every_row_and_leave_no_archive() {
    let (src, _a) = engine().await;
    let (dst, _b) = engine().await;
    let want = plan::wanted(&pdb("  tenant: b\n"), plan::TenantProfile::default()).unwrap();
    converge(&src, &want).await;
    for i in 0..200 {
        sql(&src, &format!("INSERT INTO t (v) VALUES ('row {i}')")).await;
    }
    let before = sql(
        &src,
        "SELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id)",
    )
    .await;
    let archive = plan::relocation_archive("6f1c2a34-0000-4000-8000-00000000abcd");
    let mut steps = Vec::new();
    loop {
        let o = MoveObserved {
            source_database: src.database("orders").await.unwrap().is_some(),
            source_archive: src.archive(&archive).await.unwrap().is_some(),
            target_database: dst.database("orders").await.unwrap().is_some(),
            target_archive: dst.archive(&archive).await.unwrap().is_some(),
        };
        let step = plan::move_step(o);
        steps.push(step);
        match step {
            MoveStep::Unplug => drop(src.unplug("orders", &archive).await.unwrap()),
            MoveStep::Transfer => drop(src.send_archive(&archive, &dst).await.unwrap()),
            MoveStep::Plug => {
                let mut w = want.clone();
                w.source = serde_json::from_value(json!({"plug": {"archive": archive}})).unwrap();
                let Step::Create(req) = plan::next_step(&w, None) else {
                    panic!()
                };
                dst.create(&req).await.unwrap();
            }
            MoveStep::Finish => {
                assert!(dst.delete_archive(&archive).await.unwrap());
                assert!(src.delete_archive(&archive).await.unwrap());
                break;
            }
            MoveStep::Lost => panic!("lost after {steps:?}"),
        }
    }
    assert_eq!(
        steps,
        [
            MoveStep::Unplug,
            MoveStep::Transfer,
            MoveStep::Plug,
            MoveStep::Finish
        ]
    );
    let after = sql(
        &dst,
        "SELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id)",
    )
    .await;
    assert_eq!(before["rows"], after["rows"], "every row moved, in order");
    assert!(src.database("orders").await.unwrap().is_none());
    assert!(src.archive(&archive).await.unwrap().is_none());
    assert!(
        !src.delete_archive(&archive).await.unwrap(),
        "absent is false, not an error"
    );
}

#[tokio::test]
async fn a_connection_token_opens_its_database_alone_and_goes_with_it() {
    let (engine, _dir) = engine().await;
    let want = plan::wanted(&pdb("  tenant: acme\n"), plan::TenantProfile::default()).unwrap();
    converge(&engine, &want).await;
    engine
        .create(&serde_json::from_value(json!({"name": "other"})).unwrap())
        .await
        .unwrap();
    let (id, token) = engine.issue_token(&["orders"]).await.unwrap();
    assert!(engine.token_exists(&id).await.unwrap());
    // The token as an application uses it, through Hrana at the URL the Secret holds.
    let base = engine.url();
    let http = reqwest::Client::new();
    let pipeline = |db: &str| {
        http.post(format!("{base}/db/{db}/v2/pipeline"))
            .bearer_auth(&token)
            .json(&json!({"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}, {"type": "close"}]}))
            .send()
    };
    assert_eq!(pipeline("orders").await.unwrap().status(), 200);
    assert_eq!(pipeline("other").await.unwrap().status(), 403);
    // Deleting the database revokes its token.
    assert!(engine.drop_database("orders", false).await.unwrap());
    assert!(!engine.token_exists(&id).await.unwrap());
    assert!(!engine.revoke_token(&id).await.unwrap(), "already gone");
}
