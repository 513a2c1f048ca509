//! `kubectl tenantdb` against a real cluster with TenantDB installed: every command,
//! and the error paths a user hits first.
#![cfg(feature = "e2e")]

use std::process::Command;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenantdb_crds::{PluggableDatabase, Tenant, TenantPhase};
use tenantdb_e2e::*;

/// Run the plugin; returns (success, stdout, stderr).
fn plugin(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-tenantdb"))
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("run kubectl-tenantdb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_command_works_and_errors_are_clear() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-plugin").await?;
    let n = ns.name.clone();
    ready_tenant(&client, &n, "shop", "bronze").await?;
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &n);
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
                     "metadata": {"name": "orders"}, "spec": {"tenant": "shop"}});
    pdbs.patch(
        "orders",
        &PatchParams::apply("e2e-test"),
        &Patch::Apply(&obj),
    )
    .await?;
    eventually("orders open", Duration::from_secs(60), || async {
        let p = pdbs.get("orders").await?;
        Ok((p.status.and_then(|s| s.phase).as_deref() == Some("Open")).then_some(()))
    })
    .await?;

    let (ok, out, err) = plugin(
        &n,
        &[
            "sql",
            "shop",
            "orders",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("row(s) affected"), "{out}");
    for name in ["ada", "bob"] {
        let (ok, _, err) = plugin(
            &n,
            &[
                "sql",
                "shop",
                "orders",
                &format!("INSERT INTO t (name) VALUES ('{name}')"),
            ],
        );
        assert!(ok, "{err}");
    }
    let (ok, out, err) = plugin(
        &n,
        &[
            "sql",
            "shop",
            "orders",
            "SELECT id, name FROM t ORDER BY id",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("ada") && out.contains("bob") && out.contains("(2 row(s))"),
        "{out}"
    );

    let (ok, out, err) = plugin(&n, &["status", "shop"]);
    assert!(ok, "{err}");
    for needle in [
        "Tier:     bronze",
        "Phase:    Ready",
        "orders",
        "ReadWrite",
        "requests/hour",
    ] {
        assert!(out.contains(needle), "status lacks {needle:?}:\n{out}");
    }
    let (ok, out, _) = plugin(&n, &["status"]);
    assert!(
        ok && out.contains("shop") && out.contains("bronze"),
        "{out}"
    );

    let (ok, out, err) = plugin(&n, &["usage", "shop"]);
    assert!(ok, "{err}");
    assert!(out.contains("orders") && out.contains("total"), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("orders"))
        .unwrap_or_default();
    let requests: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(requests >= 4, "the four statements were metered: {line}");

    let (ok, out, err) = plugin(&n, &["billing", "shop"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("base") && out.contains("Total:") && out.contains("USD"),
        "{out}"
    );

    // Error paths: each a message that says what to do, and exit status 1.
    let (ok, _, err) = plugin(&n, &["status", "nope"]);
    assert!(!ok && err.contains("tenant nope not found"), "{err}");
    let (ok, _, err) = plugin(&n, &["sql", "shop", "missing", "SELECT 1"]);
    assert!(
        !ok && err.contains("missing") && err.contains("404"),
        "{err}"
    );
    let (ok, _, err) = plugin(&n, &["sql", "shop", "orders", "SELEC nonsense"]);
    assert!(!ok && err.contains("400"), "{err}");
    let (ok, _, err) = plugin(&n, &["billing", "shop", "--period", "2026-13"]);
    assert!(!ok && err.contains("period"), "{err}");

    let (ok, out, err) = plugin(&n, &["logs", "shop", "--tail", "50"]);
    assert!(ok, "{err}");
    assert!(out.contains("serving HTTP"), "{out}");

    // Suspend and resume, on the same volume.
    let (ok, _, err) = plugin(&n, &["suspend", "shop"]);
    assert!(ok, "{err}");
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &n);
    let phase_is = |want: TenantPhase| {
        let tenants = tenants.clone();
        async move {
            eventually(
                &format!("shop {want:?}"),
                Duration::from_secs(120),
                || async {
                    let t = tenants.get("shop").await?;
                    Ok((t.status.and_then(|s| s.phase) == Some(want)).then_some(()))
                },
            )
            .await
        }
    };
    phase_is(TenantPhase::Suspended).await?;
    let (ok, _, err) = plugin(&n, &["sql", "shop", "orders", "SELECT 1"]);
    assert!(!ok && err.contains("no running engine"), "{err}");
    let (ok, _, err) = plugin(&n, &["resume", "shop"]);
    assert!(ok, "{err}");
    phase_is(TenantPhase::Ready).await?;
    let rows = eventually(
        "rows back after resume",
        Duration::from_secs(60),
        || async {
            let (ok, out, _) = plugin(
                &n,
                &["sql", "shop", "orders", "SELECT count(*) AS n FROM t"],
            );
            Ok(ok.then_some(out))
        },
    )
    .await?;
    assert!(rows.contains('2'), "{rows}");
    ns.delete(Duration::from_secs(120)).await
}
