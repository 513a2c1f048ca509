//! The engine inside a tenant's pod: databases are created and queried through the
//! admin and data planes (via the API server's service proxy), tokens stay inside
//! their tenant, and data survives the pod being killed.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::{json, Value};
use tenantdb_e2e::*;

#[tokio::test]
async fn databases_in_a_tenant_pod_are_created_queried_isolated_and_durable() -> anyhow::Result<()>
{
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-engine").await?;
    let admin = ready_tenant(&client, &ns.name, "shop", "bronze").await?;
    let other_admin = ready_tenant(&client, &ns.name, "rival", "bronze").await?;

    let (s, v) = call(
        &client,
        &ns.name,
        "shop",
        "POST",
        "/v1/databases",
        &admin,
        Some(json!({"name": "orders"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &client,
        &ns.name,
        "shop",
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"databases": ["orders"]})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap_or_default().to_string();
    let q = |sql: &str, params: Value| json!({"sql": sql, "params": params});
    let (s, v) = call(
        &client,
        &ns.name,
        "shop",
        "POST",
        "/v1/databases/orders/query",
        &token,
        Some(q(
            "CREATE TABLE o (id INTEGER PRIMARY KEY, item TEXT)",
            Value::Null,
        )),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    for item in ["apple", "pear", "plum"] {
        let (s, v) = call(
            &client,
            &ns.name,
            "shop",
            "POST",
            "/v1/databases/orders/query",
            &token,
            Some(q("INSERT INTO o (item) VALUES (?)", json!([item]))),
        )
        .await?;
        assert_eq!(s, 200, "{v}");
    }

    // A token of another tenant never reaches this one's data.
    let (s, v) = call(
        &client,
        &ns.name,
        "rival",
        "POST",
        "/v1/tokens",
        &other_admin,
        Some(json!({"databases": ["*"]})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let rival_token = v["token"].as_str().unwrap_or_default().to_string();
    let (s, _) = call(
        &client,
        &ns.name,
        "shop",
        "POST",
        "/v1/databases/orders/query",
        &rival_token,
        Some(q("SELECT * FROM o", Value::Null)),
    )
    .await?;
    assert_eq!(s, 403, "another tenant's token is not valid here");
    let (s, _) = call(
        &client,
        &ns.name,
        "shop",
        "GET",
        "/v1/databases",
        &other_admin,
        None,
    )
    .await?;
    assert_eq!(s, 403, "another tenant's admin token is not this one's");

    // Kill the engine pod: the database and its rows come back with the volume.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete(
        "shop-engine-0",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    let rows = eventually(
        "rows readable after the pod restarts",
        Duration::from_secs(180),
        || async {
            let (s, v) = call(
                &client,
                &ns.name,
                "shop",
                "POST",
                "/v1/databases/orders/query",
                &token,
                Some(q("SELECT item FROM o ORDER BY id", Value::Null)),
            )
            .await?;
            Ok((s == 200).then_some(v))
        },
    )
    .await?;
    assert_eq!(rows["rows"], json!([["apple"], ["pear"], ["plum"]]));
    let (_, status) = call(&client, &ns.name, "shop", "GET", "/v1/status", &admin, None).await?;
    assert_eq!(status["container"]["databases"], 1, "{status}");
    assert_eq!(status["tier"], "bronze");
    ns.delete(Duration::from_secs(120)).await
}
