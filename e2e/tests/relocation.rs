//! A database moves between tenants when its YAML names another: every acknowledged row
//! arrives, and tokens never reach across tenants.
#![cfg(feature = "e2e")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use kube::ResourceExt;
use serde_json::json;
use tenantdb_crds::PluggableDatabase;
use tenantdb_e2e::pdb::*;
use tenantdb_e2e::*;

#[tokio::test]
async fn relocation_keeps_every_acknowledged_row_and_tokens_stay_home() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-move").await?;
    let other = TestNamespace::create(&client, "e2e-other").await?;
    let n = ns.name.clone();
    let c = &client;
    let (ta, tb, tx) = tokio::try_join!(
        ready_tenant(c, &n, "east", "bronze"),
        ready_tenant(c, &n, "west", "bronze"),
        ready_tenant(c, &other.name, "far", "bronze"),
    )?;

    apply_pdb(c, &n, "ledger", json!({"tenant": "east"})).await?;
    wait_pdb(
        c,
        &n,
        "ledger",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    rows(
        c,
        &n,
        "east",
        "ledger",
        &ta,
        "CREATE TABLE l (id INTEGER PRIMARY KEY, note TEXT)",
    )
    .await?;

    // Another tenant's token never reads this database: same namespace or another one.
    let (s, v) = sql(c, &n, "east", "ledger", &tb, "SELECT * FROM l").await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = sql(c, &n, "east", "ledger", &tx, "SELECT * FROM l").await?;
    assert_eq!(s, 403, "{v}");

    // A writer runs through the move, retrying wherever the database is now.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, n, acked, stop) = (client.clone(), n.clone(), acked.clone(), stop.clone());
        let (ta, tb) = (ta.clone(), tb.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let q = format!("INSERT INTO l (id, note) VALUES ({i}, 'w')");
                for (tenant, token) in [("east", &ta), ("west", &tb)] {
                    if let Ok((200, _)) = sql(&c, &n, tenant, "ledger", token, &q).await {
                        acked.lock().unwrap().push(i);
                        i += 1;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    apply_pdb(c, &n, "ledger", json!({"tenant": "west"})).await?;
    let moved = wait_pdb(
        c,
        &n,
        "ledger",
        "open in west",
        Duration::from_secs(90),
        |p| {
            open_in("ReadWrite")(p)
                && p.status.as_ref().and_then(|s| s.tenant.as_deref()) == Some("west")
        },
    )
    .await?;
    println!(
        "relocation east → west took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let acked = acked.lock().unwrap().clone();
    let present: BTreeSet<i64> = rows(c, &n, "west", "ledger", &tb, "SELECT id FROM l")
        .await?
        .iter()
        .filter_map(|r| r[0].as_i64())
        .collect();
    let missing: Vec<&u64> = acked
        .iter()
        .filter(|i| !present.contains(&(**i as i64)))
        .collect();
    println!(
        "relocation under load: {} acknowledged writes, {} missing",
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    assert!(
        acked.len() > 20,
        "the writer ran through the move ({} writes)",
        acked.len()
    );
    let (s, _) = call(c, &n, "east", "GET", "/v1/databases/ledger", &ta, None).await?;
    assert_eq!(s, 404, "the source is gone after the move");
    let (_, archives) = call(c, &n, "east", "GET", "/v1/archives", &ta, None).await?;
    assert_eq!(
        archives["items"],
        json!([]),
        "no relocation archive left behind"
    );
    assert_eq!(
        moved
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.as_str()),
        Some("Open")
    );

    // Deleting the Tenant first, then its database: the database does not hang.
    apply_pdb(c, &n, "orphan", json!({"tenant": "east"})).await?;
    wait_pdb(
        c,
        &n,
        "orphan",
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await?;
    let tenants: Api<tenantdb_crds::Tenant> = Api::namespaced(client.clone(), &n);
    tenants.delete("east", &DeleteParams::default()).await?;
    eventually("Tenant east gone", Duration::from_secs(120), || async {
        Ok(tenants.get_opt("east").await?.is_none().then_some(()))
    })
    .await?;
    wait_pdb(
        c,
        &n,
        "orphan",
        "TenantNotFound",
        Duration::from_secs(60),
        |p| ready_reason(p) == "TenantNotFound",
    )
    .await?;
    let t0 = Instant::now();
    delete_pdb(c, &n, "orphan").await?;
    println!(
        "PluggableDatabase of a deleted Tenant removed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    delete_pdb(c, &n, "ledger").await?;
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &n);
    let left: Vec<String> = pdbs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    other.delete(Duration::from_secs(120)).await?;
    ns.delete(Duration::from_secs(120)).await
}
