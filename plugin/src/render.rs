//! Pure: what the plugin prints, from API objects and engine answers.

use comfy_table::presets::NOTHING;
use comfy_table::Table;
use kube::ResourceExt;
use serde_json::Value;
use tenantdb_crds::{PluggableDatabase, Tenant};
use tenantdb_engine_api::backup::ShipStatus;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    t
}

/// A tenant's phase, or `Unknown`.
pub fn phase(t: &Tenant) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "Unknown".into())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        Value::Object(o) if o.contains_key("base64") => "<blob>".into(),
        other => other.to_string(),
    }
}

/// Every tenant, one line each.
pub fn tenants(all: &[Tenant]) -> String {
    let mut t = table(&["TENANT", "TIER", "PHASE", "DATABASES", "STORAGE", "SLA MET"]);
    for x in all {
        let s = x.status.clone().unwrap_or_default();
        t.add_row(vec![
            x.name_any(),
            x.spec.tier.as_str().to_string(),
            phase(x),
            s.databases.map(|d| d.to_string()).unwrap_or_default(),
            s.storage_used.unwrap_or_default(),
            s.sla.map(|s| s.compliant.to_string()).unwrap_or_default(),
        ]);
    }
    format!("{t}\n")
}

/// One tenant: tier, phase, limits against use, databases and SLA.
pub fn status(t: &Tenant, pdbs: &[PluggableDatabase]) -> String {
    let s = t.status.clone().unwrap_or_default();
    let mut out = format!(
        "Tenant:   {}/{}\nTier:     {} (priority {:?})\nPhase:    {}\nEndpoint: {}\n",
        t.namespace().unwrap_or_default(),
        t.name_any(),
        t.spec.tier.as_str(),
        t.spec.priority,
        phase(t),
        s.endpoint.clone().unwrap_or_default()
    );
    for c in &s.conditions {
        out.push_str(&format!(
            "  {:<12} {:<5} {:<16} {}\n",
            c.type_, c.status, c.reason, c.message
        ));
    }
    if let Some(l) = &s.limits {
        let mut lt = table(&["LIMIT", "VALUE", "IN USE"]);
        let dbs = s
            .databases
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into());
        let used = s.storage_used.clone().unwrap_or_else(|| "-".into());
        let usage = s.usage.clone().unwrap_or_default();
        lt.add_row(vec!["cpu".to_string(), l.cpu.clone(), String::new()]);
        lt.add_row(vec!["memory".to_string(), l.memory.clone(), String::new()]);
        lt.add_row(vec!["storage".to_string(), l.storage.clone(), used]);
        lt.add_row(vec![
            "databases".to_string(),
            l.max_databases.to_string(),
            dbs,
        ]);
        lt.add_row(vec![
            "requests/hour (burst)".to_string(),
            format!("{} ({})", l.requests_per_hour, l.burst),
            format!("peak {}/min", usage.peak_requests_per_minute),
        ]);
        lt.add_row(vec!["iops".to_string(), l.iops.to_string(), String::new()]);
        lt.add_row(vec![
            "connections".to_string(),
            l.connections.to_string(),
            String::new(),
        ]);
        out.push_str(&format!("\n{lt}\n"));
    }
    let mine: Vec<&PluggableDatabase> = pdbs
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.tenant.as_deref())
                .unwrap_or(&p.spec.tenant)
                == t.name_any()
        })
        .collect();
    let mut dt = table(&["DATABASE", "OPEN MODE", "PHASE", "SIZE", "PROFILE"]);
    for p in &mine {
        let st = p.status.clone().unwrap_or_default();
        dt.add_row(vec![
            p.name_any(),
            st.open_mode.map(|m| format!("{m:?}")).unwrap_or_default(),
            st.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
            st.size.unwrap_or_default(),
            st.lockdown_profile.unwrap_or_default(),
        ]);
    }
    out.push_str(&format!("\nDatabases: {}\n{dt}\n", mine.len()));
    match (&s.sla, &s.usage) {
        (Some(sla), usage) => {
            out.push_str(&format!(
                "\nSLA this period: {} (uptime {}%, p99 {} ms)\n",
                if sla.compliant { "met" } else { "NOT met" },
                sla.uptime_percent,
                sla.p99_latency_ms
            ));
            for v in &sla.violations {
                out.push_str(&format!("  violation: {v}\n"));
            }
            if let Some(u) = usage {
                out.push_str(&format!(
                    "Usage {}: {} requests, avg {} ms, error rate {}, storage growth {}/day\n",
                    u.period, u.requests, u.avg_response_ms, u.error_rate, u.storage_growth_per_day
                ));
            }
        }
        (None, _) => out.push_str("\nSLA this period: not measured yet\n"),
    }
    out
}

/// `/v1/usage` as a table.
pub fn usage(v: &Value) -> String {
    let mut t = table(&[
        "DATABASE",
        "REQUESTS",
        "ERRORS",
        "ROWS READ",
        "ROWS WRITTEN",
        "CPU s",
        "PAGES R/W",
        "BYTES IN/OUT",
        "STORAGE",
    ]);
    let rows = v["databases"].as_array().cloned().unwrap_or_default();
    for d in rows.iter().chain(std::iter::once(&v["total"])) {
        let n = |k: &str| d[k].as_u64().unwrap_or(0);
        t.add_row(vec![
            d["name"].as_str().unwrap_or("").to_string(),
            n("requests").to_string(),
            n("errors").to_string(),
            n("rowsRead").to_string(),
            n("rowsWritten").to_string(),
            format!("{:.3}", n("cpuMicros") as f64 / 1e6),
            format!("{}/{}", n("pagesRead"), n("pagesWritten")),
            format!("{}/{}", n("bytesIn"), n("bytesOut")),
            n("storageBytes").to_string(),
        ]);
    }
    format!("Period {}\n{t}\n", v["period"].as_str().unwrap_or(""))
}

/// `/v1/billing` as an invoice.
pub fn bill(v: &Value) -> String {
    let currency = v["currency"].as_str().unwrap_or("");
    let mut t = table(&["RESOURCE", "QUANTITY", "UNIT", "UNIT PRICE", "AMOUNT"]);
    for c in v["charges"].as_array().cloned().unwrap_or_default() {
        t.add_row(vec![
            c["resource"].as_str().unwrap_or("").to_string(),
            format!("{:.6}", c["quantity"].as_f64().unwrap_or(0.0)),
            c["unit"].as_str().unwrap_or("").to_string(),
            format!("{:.4}", c["unitPrice"].as_f64().unwrap_or(0.0)),
            format!("{:.2}", c["amount"].as_f64().unwrap_or(0.0)),
        ]);
    }
    let mut out = format!(
        "Bill for {} ({currency})\n{t}\n",
        v["period"].as_str().unwrap_or("")
    );
    for d in v["databases"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  {:<32} {:>12.4}\n",
            d["name"].as_str().unwrap_or(""),
            d["amount"].as_f64().unwrap_or(0.0)
        ));
    }
    out.push_str(&format!(
        "Total: {:.2} {currency}\n",
        v["total"].as_f64().unwrap_or(0.0)
    ));
    out
}

/// A query result as a table (or the affected-row count).
pub fn rows(v: &Value) -> String {
    let columns: Vec<String> = v["columns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect();
    if columns.is_empty() {
        return format!(
            "{} row(s) affected\n",
            v["rowsAffected"].as_u64().unwrap_or(0)
        );
    }
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(columns);
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    for r in &rows {
        t.add_row(
            r.as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(text)
                .collect::<Vec<_>>(),
        );
    }
    format!("{t}\n({} row(s))\n", rows.len())
}

/// A unix-ms instant as RFC 3339 (UTC, seconds), or `-`.
fn instant(v: &Value) -> String {
    v.as_i64()
        .filter(|ms| *ms > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// A live database's shipping state from its backup status: `ok`, `lagging 12.0s`,
/// `FAILING: <error>`; `-` when it is not live in this engine.
fn shipping(status: Option<&ShipStatus>) -> (String, String) {
    let Some(s) = status else {
        return ("-".into(), "not live here".into());
    };
    let lag = format!("{:.1}s", s.lag_ms as f64 / 1e3);
    let state = match &s.last_error {
        Some(e) => format!("FAILING: {e}"),
        None => format!("shipping ({} commits waiting)", s.pending_commits),
    };
    (lag, state)
}

/// `kubectl tenantdb backups TENANT`: one line per database the store holds.
pub fn backups(listing: &Value, live: &[Option<ShipStatus>]) -> String {
    let mut t = table(&[
        "DATABASE",
        "RECOVERABLE FROM",
        "TO",
        "GENERATIONS",
        "LAG",
        "SHIPPING",
    ]);
    let dbs = listing["databases"].as_array().cloned().unwrap_or_default();
    for (i, d) in dbs.iter().enumerate() {
        let (lag, state) = shipping(live.get(i).and_then(Option::as_ref));
        t.add_row(vec![
            text(&d["database"]),
            instant(&d["window"]["firstMs"]),
            instant(&d["window"]["lastMs"]),
            d["generations"].to_string(),
            lag,
            state,
        ]);
    }
    if dbs.is_empty() {
        return format!(
            "the store holds no backup of tenant {}\n",
            text(&listing["tenant"])
        );
    }
    format!("{t}\n")
}

/// `kubectl tenantdb backups TENANT DB`: the window, shipping state and generations.
pub fn backup_generations(listing: &Value, live: Option<&ShipStatus>) -> String {
    let (lag, state) = shipping(live);
    let mut out = format!(
        "Database:    {}/{}\nRecoverable: {} .. {}\nLag:         {lag}\nShipping:    {state}\n",
        text(&listing["tenant"]),
        text(&listing["database"]),
        instant(&listing["window"]["firstMs"]),
        instant(&listing["window"]["lastMs"]),
    );
    if let Some(s) = live {
        out += &format!(
            "Last shipped transaction {} at {}; last snapshot {}\n",
            s.shipped_txid,
            instant(&Value::from(s.shipped_ms)),
            instant(&Value::from(s.last_snapshot_ms))
        );
    }
    let mut t = table(&[
        "GENERATION",
        "STARTED",
        "LAST COMMIT",
        "SEGMENTS",
        "RESTORABLE",
    ]);
    for g in listing["generations"].as_array().into_iter().flatten() {
        let segs = g["segments"].as_array().map_or(0, Vec::len);
        let last = g["segments"]
            .as_array()
            .and_then(|s| s.last())
            .map(|s| instant(&s[2]))
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            text(&g["name"]),
            instant(&g["startMs"]),
            last,
            segs.to_string(),
            if g["complete"].as_bool() == Some(true) {
                "yes"
            } else {
                "no (snapshot missing)"
            }
            .into(),
        ]);
    }
    format!("{out}\n{t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_print_as_a_table_with_nulls_and_blobs() {
        let out = rows(
            &json!({"columns": ["id", "name", "raw"], "rows": [[1, "ada", null], [2, "bob", {"base64": "AA=="}]]}),
        );
        assert!(
            out.contains("ada") && out.contains("NULL") && out.contains("<blob>"),
            "{out}"
        );
        assert!(out.contains("(2 row(s))"));
        assert_eq!(
            rows(&json!({"columns": [], "rows": [], "rowsAffected": 3})),
            "3 row(s) affected\n"
        );
    }

    #[test]
    fn a_bill_lists_charges_and_the_total() {
        let out = bill(
            &json!({"period": "2026-11", "currency": "EUR", "total": 512.5,
            "charges": [{"resource": "base", "quantity": 1, "unit": "month", "unitPrice": 500, "amount": 500}],
            "databases": [{"name": "orders", "amount": 12.5}]}),
        );
        assert!(
            out.contains("Bill for 2026-11 (EUR)")
                && out.contains("Total: 512.50 EUR")
                && out.contains("orders"),
            "{out}"
        );
    }

    #[test]
    fn backups_list_windows_and_shipping() {
        let listing = json!({"tenant": "acme", "databases": [
            {"database": "orders", "window": {"firstMs": 1_767_225_600_000i64, "lastMs": 1_767_229_200_000i64}, "generations": 2},
            {"database": "gone", "window": null, "generations": 1},
        ]});
        let live = [
            Some(ShipStatus {
                lag_ms: 1500,
                pending_commits: 4,
                last_error: Some("connection refused".into()),
                ..Default::default()
            }),
            None,
        ];
        let out = backups(&listing, &live);
        assert!(out.contains("2026-01-01T00:00:00Z"), "{out}");
        assert!(out.contains("2026-01-01T01:00:00Z"), "{out}");
        assert!(out.contains("FAILING: connection refused"), "{out}");
        assert!(out.contains("1.5s"), "{out}");
        assert!(out.contains("not live here"), "{out}");
        let none = backups(&json!({"tenant": "acme", "databases": []}), &[]);
        assert!(none.contains("no backup of tenant acme"), "{none}");
        let one = json!({"tenant": "acme", "database": "orders",
            "window": {"firstMs": 1_767_225_600_000i64, "lastMs": 1_767_229_200_000i64},
            "generations": [{"name": "g1", "startMs": 1_767_225_600_000i64, "complete": true, "segments": [[1, 9, 1_767_229_200_000i64]]},
                            {"name": "g2", "startMs": 1_767_229_300_000i64, "complete": false, "segments": []}]});
        let out = backup_generations(&one, None);
        assert!(
            out.contains("2026-01-01T00:00:00Z .. 2026-01-01T01:00:00Z"),
            "{out}"
        );
        assert!(out.contains("no (snapshot missing)"), "{out}");
    }
}
