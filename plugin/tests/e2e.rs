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

/// Start `connect --port-forward`, read its local URL, send one Hrana pipeline there with
/// `token`, and return the response body.
async fn through_port_forward(ns: &str, token: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-tenantdb"))
        .args(["-n", ns, "connect", "shop", "orders", "--port-forward"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let url = std::io::BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.strip_prefix("LIBSQL_URL=").map(String::from))
        .expect("a local URL");
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_once('/').expect("a path");
    let body = r#"{"baton":null,"requests":[{"type":"execute","stmt":{"sql":"SELECT 40 + 2"}},{"type":"close"}]}"#;
    let answer = tokio::task::spawn_blocking({
        let (addr, path, token) = (addr.to_string(), path.to_string(), token.to_string());
        move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            write!(s, "POST /{path}v2/pipeline HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        }
    })
    .await??;
    let _ = child.kill();
    let _ = child.wait();
    Ok(answer)
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
        Ok((p.status.and_then(|s| s.phase) == Some(tenantdb_crds::PdbPhase::Open)).then_some(()))
    })
    .await?;
    eventually(
        "orders' connection Secret",
        Duration::from_secs(60),
        || async {
            let p = pdbs.get("orders").await?;
            Ok(p.status.and_then(|s| s.connection_secret))
        },
    )
    .await?;

    // connect: the connection Secret as environment lines, and a forwarded local URL a
    // libSQL driver (here, its wire protocol by hand) uses as it is.
    let (ok, out, err) = plugin(&n, &["connect", "shop", "orders"]);
    assert!(ok, "{err}");
    let url = format!("LIBSQL_URL=https://shop-engine-rw.{n}.svc:8080/db/orders/");
    assert!(out.lines().any(|l| l == url), "{out}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("LIBSQL_AUTH_TOKEN="))
        .expect("a token line")
        .to_string();
    assert!(token.starts_with("tdb_"), "{out}");
    let (ok, _, err) = plugin(&n, &["connect", "shop", "nosuch"]);
    assert!(!ok && err.contains("no PluggableDatabase nosuch"), "{err}");
    let answer = through_port_forward(&n, &token).await?;
    assert!(answer.contains(r#""value":"42""#), "{answer}");

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

/// `backups` lists what the store holds: a live database with its window and shipping
/// state, a dropped one still recoverable, its generations; a tenant without backup and
/// a bad name are clear errors.
#[tokio::test]
async fn backups_lists_recoverable_windows() -> anyhow::Result<()> {
    use tenantdb_e2e::store::{apply_tenant, backup_spec, object_store};
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-plugin-backups").await?;
    let n = ns.name.clone();
    let endpoint = object_store(&client, &n).await?;
    apply_tenant(
        &client,
        &n,
        "vault",
        backup_spec(&endpoint, "backup-credentials"),
    )
    .await?;
    let token = tenant_ready(&client, &n, "vault").await?;
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &n);
    for db in ["ledger", "scratch"] {
        let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
                         "metadata": {"name": db}, "spec": {"tenant": "vault"}});
        pdbs.patch(db, &PatchParams::apply("e2e-test"), &Patch::Apply(&obj))
            .await?;
    }
    for db in ["ledger", "scratch"] {
        eventually(&format!("{db} open"), Duration::from_secs(60), || async {
            let p = pdbs.get(db).await?;
            Ok(
                (p.status.and_then(|s| s.phase) == Some(tenantdb_crds::PdbPhase::Open))
                    .then_some(()),
            )
        })
        .await?;
        let (s, v) = sql(&client, &n, "vault", db, &token, "CREATE TABLE t (x)").await?;
        anyhow::ensure!(s == 200, "{db}: {s} {v}");
    }
    // Both in the store, each with a window; then scratch is dropped and stays listed.
    let listed = eventually(
        "both listed with windows",
        Duration::from_secs(60),
        || async {
            let (ok, out, err) = plugin(&n, &["backups", "vault"]);
            anyhow::ensure!(ok, "backups failed: {err}");
            let rows: Vec<&str> = out
                .lines()
                .filter(|l| {
                    (l.contains("ledger") || l.contains("scratch")) && l.contains("shipping (")
                })
                .collect();
            Ok(
                (rows.len() == 2 && rows.iter().all(|l| l.matches("Z ").count() >= 2))
                    .then_some(out),
            )
        },
    )
    .await?;
    pdbs.delete("scratch", &Default::default()).await?;
    eventually("scratch dropped", Duration::from_secs(60), || async {
        Ok(pdbs.get_opt("scratch").await?.is_none().then_some(()))
    })
    .await?;
    let (ok, out, err) = plugin(&n, &["backups", "vault"]);
    assert!(ok, "{err}");
    let scratch = out
        .lines()
        .find(|l| l.contains("scratch"))
        .unwrap_or_default();
    assert!(
        scratch.contains("not live here") && scratch.contains('Z'),
        "a dropped database stays recoverable and says it is not live:\n{out}\n(before:\n{listed})"
    );
    let (ok, out, err) = plugin(&n, &["backups", "vault", "ledger"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Recoverable:") && out.contains("GENERATION"),
        "{out}"
    );
    assert!(out.contains("yes"), "a restorable generation: {out}");
    // Errors: a tenant without backup, a bad name.
    ready_tenant(&client, &n, "plain", "bronze").await?;
    let (ok, _, err) = plugin(&n, &["backups", "plain"]);
    assert!(!ok && err.contains("no spec.backup"), "{err}");
    let (ok, _, err) = plugin(&n, &["backups", "vault", "a/b"]);
    assert!(
        !ok && err.contains("invalid database name \"a/b\""),
        "{err}"
    );
    ns.delete(Duration::from_secs(180)).await
}

#[tokio::test]
async fn promote_switches_over_within_seconds_and_loses_no_acknowledged_write() -> anyhow::Result<()>
{
    use tenantdb_e2e::ha::{apply_tenant, roles, write};
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-plugin-promote").await?;
    let n = ns.name.clone();
    apply_tenant(
        &client,
        &n,
        "ha",
        json!({"tier": "bronze", "replicas": 2, "durability": "required",
               "quota": {"cpu": "250m", "memory": "192Mi"}}),
    )
    .await?;
    let token = tenant_ready(&client, &n, "ha").await?;
    tenantdb_e2e::pdb::open_database(&client, &n, "ledger", json!({"tenant": "ha"})).await?;
    let (status, body) = sql(
        &client,
        &n,
        "ha",
        "ledger",
        &token,
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (primary, _) = eventually(
        "a primary and a streaming standby",
        Duration::from_secs(120),
        || async {
            let (p, ok) = roles(&client, &n, "ha").await?;
            Ok(p.filter(|_| ok).map(|p| (p, ())))
        },
    )
    .await?;
    let target = if primary.ends_with('0') { "1" } else { "0" };
    // Refused: not a member, and a tenant of one member.
    let (ok, _, err) = plugin(&n, &["promote", "ha", "7"]);
    assert!(!ok && err.contains("not a member"), "{err}");
    // Writes during the switchover; every acknowledged one must be there after it.
    let mut acked = Vec::new();
    let mut id = 0u64;
    let switch = tokio::task::spawn_blocking({
        let n = n.clone();
        move || plugin(&n, &["promote", "ha", target])
    });
    let started = std::time::Instant::now();
    while !switch.is_finished() || started.elapsed() < Duration::from_secs(1) {
        id += 1;
        if write(
            &client,
            &n,
            "ha",
            &token,
            &format!("INSERT INTO t (id) VALUES ({id})"),
        )
        .await
        .0 == 200
        {
            acked.push(id);
        }
    }
    let (ok, out, err) = switch.await?;
    assert!(ok, "{out}{err}");
    println!("{}", out.trim());
    let secs: f64 = out
        .rsplit('(')
        .next()
        .and_then(|s| s.trim().trim_end_matches(" s)").parse().ok())
        .unwrap_or(f64::MAX);
    assert!(secs <= 5.0, "switchover took {secs} s: {out}");
    let rows = eventually(
        "the new primary answers",
        Duration::from_secs(60),
        || async {
            let (status, rows) =
                sql(&client, &n, "ha", "ledger", &token, "SELECT id FROM t").await?;
            Ok((status == 200).then_some(rows))
        },
    )
    .await?;
    let present: std::collections::HashSet<u64> = rows["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r[0].as_u64())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|i| !present.contains(i)).collect();
    assert!(lost.is_empty(), "lost in the switchover: {lost:?}");
    println!(
        "{} writes acknowledged around the switchover, none lost",
        acked.len()
    );
    ns.delete(Duration::from_secs(120)).await
}
