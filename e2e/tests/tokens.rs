//! Tokens that change: the admin token rotates on request, with no restart and no
//! refused operator call (the engine takes the new token before the operator switches to
//! it, and refuses the old one afterwards); a database's data token with a lifetime is
//! replaced in its Secret before it expires, and refused once it has.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenantdb_crds::Tenant;
use tenantdb_e2e::pdb::open_database;
use tenantdb_e2e::*;

#[tokio::test]
async fn the_admin_token_rotates_without_a_restart_and_the_old_one_stops_working(
) -> anyhow::Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "e2e-rotate").await?;
    let n = ns.name.as_str();
    let old = ready_tenant(&c, n, "keys", "bronze").await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    let before = pods.get("keys-engine-0").await?;
    let (status, _) = call(&c, n, "keys", "GET", "/v1/status", &old, None).await?;
    assert_eq!(status, 200);

    let ask = json!({"metadata": {"annotations": {"tenantdb.io/rotate-admin-token": "e2e-1"}}});
    Api::<Tenant>::namespaced(c.clone(), n)
        .patch("keys", &PatchParams::default(), &Patch::Merge(&ask))
        .await?;
    let started = tokio::time::Instant::now();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), n);
    let new = eventually(
        "the operator switches to a new token",
        Duration::from_secs(240),
        || async {
            let s = secrets.get("keys-engine-credentials").await?;
            let data = s.data.unwrap_or_default();
            let token = String::from_utf8(data["admin-token"].0.clone())?;
            Ok((token != old && !data.contains_key("next-admin-token")).then_some(token))
        },
    )
    .await?;
    let (status, _) = call(&c, n, "keys", "GET", "/v1/status", &new, None).await?;
    assert_eq!(
        status, 200,
        "the engine took the new token before the switch"
    );
    eventually(
        "the engine refuses the old token",
        Duration::from_secs(240),
        || async {
            let (status, _) = call(&c, n, "keys", "GET", "/v1/status", &old, None).await?;
            Ok((status == 403).then_some(()))
        },
    )
    .await?;
    println!("rotation done in {:.0} s", started.elapsed().as_secs_f64());
    let after = pods.get("keys-engine-0").await?;
    assert_same_pod(&before, &after);
    // The operator drives the engine with the new token.
    open_database(&c, n, "after", json!({"tenant": "keys"})).await?;
    ns.delete(Duration::from_secs(120)).await
}

fn connection_token(s: &Secret) -> anyhow::Result<String> {
    let data = s.data.clone().unwrap_or_default();
    let v = data
        .get("LIBSQL_AUTH_TOKEN")
        .ok_or_else(|| anyhow::anyhow!("no LIBSQL_AUTH_TOKEN"))?;
    Ok(String::from_utf8(v.0.clone())?)
}

#[tokio::test]
async fn a_data_token_with_a_lifetime_is_renewed_before_it_expires_and_refused_after(
) -> anyhow::Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "e2e-expiry").await?;
    let n = ns.name.as_str();
    ready_tenant(&c, n, "short", "bronze").await?;
    open_database(
        &c,
        n,
        "brief",
        json!({"tenant": "short", "tokenLifetime": "45s"}),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), n);
    let first = connection_token(&secrets.get("brief-connection").await?)?;
    let issued = tokio::time::Instant::now();
    let (status, _) = sql(&c, n, "short", "brief", &first, "SELECT 1").await?;
    assert_eq!(status, 200, "a fresh token opens its database");
    let second = eventually(
        "the operator writes a new token after two thirds of its life",
        Duration::from_secs(120),
        || async {
            let t = connection_token(&secrets.get("brief-connection").await?)?;
            Ok((t != first).then_some(t))
        },
    )
    .await?;
    let renewed_after = issued.elapsed().as_secs_f64();
    if issued.elapsed() < Duration::from_secs(40) {
        let (status, _) = sql(&c, n, "short", "brief", &first, "SELECT 1").await?;
        assert_eq!(status, 200, "the old token works until it expires");
    }
    eventually(
        "the old token is refused once expired",
        Duration::from_secs(60),
        || async {
            let (status, body) = sql(&c, n, "short", "brief", &first, "SELECT 1").await?;
            Ok((status == 401).then_some(body))
        },
    )
    .await?;
    let (status, _) = sql(&c, n, "short", "brief", &second, "SELECT 1").await?;
    assert_eq!(status, 200, "the new token opens it");
    println!("renewed {renewed_after:.0} s after issue (lifetime 45 s)");
    ns.delete(Duration::from_secs(120)).await
}
