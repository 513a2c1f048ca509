//! Pure: the usage, SLA and billing reports of one period, from the metered counters,
//! the engine's run history and the tier's targets and prices.

use chrono::{Datelike, TimeZone, Utc};
use serde::Serialize;

use crate::config::{BillingConfig, SlaTargets};
use crate::error::{EngineError, Result};
use crate::metering::Usage;

const GIB: f64 = (1u64 << 30) as f64;

/// A billing period: a calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Year.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
}

impl Period {
    /// The period holding unix second `t`.
    pub fn of(t: i64) -> Period {
        let d = Utc.timestamp_opt(t, 0).single().unwrap_or_default();
        Period {
            year: d.year(),
            month: d.month(),
        }
    }

    /// Parse `YYYY-MM`; anything else is a 400 naming the expected form.
    pub fn parse(s: &str) -> Result<Period> {
        let bad =
            || EngineError::BadRequest(format!("period must be YYYY-MM (e.g. 2026-11), not {s:?}"));
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    /// First second of the period and first second of the next one.
    pub fn bounds(self) -> (i64, i64) {
        let start = |y: i32, m: u32| {
            Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                .single()
                .map(|d| d.timestamp())
                .unwrap_or(0)
        };
        let (ny, nm) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        (start(self.year, self.month), start(ny, nm))
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One database's usage in a period.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseUsage {
    /// Database name.
    pub name: String,
    /// Counters.
    #[serde(flatten)]
    pub usage: Usage,
    /// Storage now (or when last measured).
    pub storage_bytes: u64,
    /// Storage integrated over time, in GiB-hours.
    pub storage_gib_hours: f64,
}

/// Every database's usage in a period, and the tenant's total.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// `YYYY-MM`.
    pub period: String,
    /// Per database, by name.
    pub databases: Vec<DatabaseUsage>,
    /// Sum over the databases.
    pub total: DatabaseUsage,
}

/// Assemble a usage report from rows (name, counters, storage bytes, byte-seconds).
pub fn usage_report(period: Period, rows: Vec<(String, Usage, u64, f64)>) -> UsageReport {
    let mut total = DatabaseUsage {
        name: "total".into(),
        usage: Usage::default(),
        storage_bytes: 0,
        storage_gib_hours: 0.0,
    };
    let databases: Vec<DatabaseUsage> = rows
        .into_iter()
        .map(|(name, usage, storage, byte_seconds)| {
            let d = DatabaseUsage {
                name,
                usage,
                storage_bytes: storage,
                storage_gib_hours: byte_seconds / GIB / 3600.0,
            };
            total.usage.add(&d.usage);
            total.storage_bytes += d.storage_bytes;
            total.storage_gib_hours += d.storage_gib_hours;
            d
        })
        .collect();
    UsageReport {
        period: period.to_string(),
        databases,
        total,
    }
}

/// Figures the operator shows on a Tenant.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// `YYYY-MM`.
    pub period: String,
    /// Storage used by every database now.
    pub storage_bytes: u64,
    /// Storage growth over the period so far, bytes per day.
    pub storage_growth_bytes_per_day: f64,
    /// The busiest minute since the engine started.
    pub peak_requests_per_minute: u64,
    /// Average response time this period, ms.
    pub avg_response_ms: f64,
    /// Errors per request this period.
    pub error_rate: f64,
    /// Requests this period.
    pub requests: u64,
}

/// Seconds the engine was up within `[from, to)`, from its runs (started, last seen).
pub fn up_seconds(runs: &[(i64, i64)], from: i64, to: i64) -> i64 {
    runs.iter()
        .map(|(s, e)| (e.min(&to) - s.max(&from)).max(0))
        .sum()
}

/// Latency and error figures of one database or the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlaFigures {
    /// Database name, or `total`.
    pub name: String,
    /// Requests in the period.
    pub requests: u64,
    /// Average latency, ms.
    pub avg_latency_ms: f64,
    /// 95th percentile latency, ms (bucket upper bound).
    pub p95_latency_ms: f64,
    /// 99th percentile latency, ms (bucket upper bound).
    pub p99_latency_ms: f64,
    /// Errors per request.
    pub error_rate: f64,
}

/// A target missed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// `warning` or `critical` (missed by more than twice the allowance).
    pub severity: &'static str,
    /// `uptime`, `latency` or `errorRate`.
    pub metric: &'static str,
    /// Which database, or `total`.
    pub scope: String,
    /// The target.
    pub target: f64,
    /// What was measured.
    pub actual: f64,
    /// What to do about it.
    pub remediation: &'static str,
}

/// The SLA report of a period.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlaReport {
    /// `YYYY-MM`.
    pub period: String,
    /// Uptime across restarts within the period so far, percent.
    pub uptime_percent: f64,
    /// The tier's targets (absent when the engine was given none).
    pub targets: Option<SlaTargets>,
    /// The tenant as a whole.
    pub total: SlaFigures,
    /// Each database.
    pub databases: Vec<SlaFigures>,
    /// Targets missed; empty when compliant.
    pub violations: Vec<Violation>,
    /// Whether every target is met.
    pub compliant: bool,
}

fn figures(name: &str, u: &Usage) -> SlaFigures {
    SlaFigures {
        name: name.into(),
        requests: u.requests,
        avg_latency_ms: u.avg_latency_ms(),
        p95_latency_ms: u.latency_quantile_ms(0.95),
        p99_latency_ms: u.latency_quantile_ms(0.99),
        error_rate: u.error_rate(),
    }
}

/// The SLA report: figures per database and in total, and violations of `targets`.
/// `uptime_percent` is the measured uptime in the period so far.
pub fn sla_report(
    usage: &UsageReport,
    uptime_percent: f64,
    targets: Option<&SlaTargets>,
) -> SlaReport {
    let total = figures("total", &usage.total.usage);
    let databases: Vec<SlaFigures> = usage
        .databases
        .iter()
        .map(|d| figures(&d.name, &d.usage))
        .collect();
    let mut violations = Vec::new();
    if let Some(t) = targets {
        let allowed_down = 100.0 - t.uptime_percent;
        let down = 100.0 - uptime_percent;
        if down > allowed_down {
            violations.push(Violation {
                severity: if down > 2.0 * allowed_down { "critical" } else { "warning" },
                metric: "uptime",
                scope: "total".into(),
                target: t.uptime_percent,
                actual: uptime_percent,
                remediation: "the engine was down: check restarts and OOM kills (kubectl describe pod <tenant>-engine-0) and the node; a larger tier gives more memory",
            });
        }
        for f in std::iter::once(&total).chain(databases.iter()) {
            if f.requests > 0 && f.avg_latency_ms > t.max_avg_latency_ms {
                violations.push(Violation {
                    severity: if f.avg_latency_ms > 2.0 * t.max_avg_latency_ms { "critical" } else { "warning" },
                    metric: "latency",
                    scope: f.name.clone(),
                    target: t.max_avg_latency_ms,
                    actual: f.avg_latency_ms,
                    remediation: "requests are slower than the tier promises: add indexes for the slow statements (EXPLAIN QUERY PLAN), batch writes in one request, or move to a tier with more CPU",
                });
            }
            if f.requests > 0 && f.error_rate > t.max_error_rate {
                violations.push(Violation {
                    severity: if f.error_rate > 2.0 * t.max_error_rate { "critical" } else { "warning" },
                    metric: "errorRate",
                    scope: f.name.clone(),
                    target: t.max_error_rate,
                    actual: f.error_rate,
                    remediation: "many requests fail: look at the error codes (429 rate, 507 storage quota, 403 lockdown, 400 SQL) and raise the quota, fix the client or the profile",
                });
            }
        }
    }
    SlaReport {
        period: usage.period.clone(),
        uptime_percent,
        targets: targets.cloned(),
        compliant: violations.is_empty(),
        total,
        databases,
        violations,
    }
}

/// One priced line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    /// What is charged (`base`, `requests`, `storage`, `egress`, `cpu`).
    pub resource: &'static str,
    /// Quantity in `unit`.
    pub quantity: f64,
    /// Unit of the quantity.
    pub unit: &'static str,
    /// Price per unit.
    pub unit_price: f64,
    /// quantity × unit price.
    pub amount: f64,
}

/// One database's share of the usage charges.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBill {
    /// Database name.
    pub name: String,
    /// Usage charges of this database.
    pub charges: Vec<Charge>,
    /// Their sum.
    pub amount: f64,
}

/// The bill of a period.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bill {
    /// `YYYY-MM`.
    pub period: String,
    /// ISO 4217 currency of every amount.
    pub currency: String,
    /// The tier's base price, then usage by resource over all databases.
    pub charges: Vec<Charge>,
    /// Usage charges per database.
    pub databases: Vec<DatabaseBill>,
    /// Everything, rounded to cents.
    pub total: f64,
}

fn usage_charges(d: &DatabaseUsage, b: &BillingConfig, month_hours: f64) -> Vec<Charge> {
    let p = &b.prices;
    let line = |resource, quantity: f64, unit, unit_price: f64| Charge {
        resource,
        quantity,
        unit,
        unit_price,
        amount: quantity * unit_price,
    };
    vec![
        line(
            "requests",
            d.usage.requests as f64 / 1e6,
            "million requests",
            p.per_million_requests,
        ),
        line(
            "storage",
            d.storage_gib_hours / month_hours,
            "GiB-month",
            p.per_gib_month_storage,
        ),
        line(
            "egress",
            d.usage.bytes_out as f64 / GIB,
            "GiB",
            p.per_gib_egress,
        ),
        line(
            "cpu",
            d.usage.cpu_micros as f64 / 3.6e9,
            "CPU hours",
            p.per_cpu_hour,
        ),
    ]
}

/// The bill for `usage` under `billing`.
pub fn bill(usage: &UsageReport, period: Period, billing: &BillingConfig) -> Bill {
    let (start, end) = period.bounds();
    let month_hours = (end - start) as f64 / 3600.0;
    let databases: Vec<DatabaseBill> = usage
        .databases
        .iter()
        .map(|d| {
            let charges = usage_charges(d, billing, month_hours);
            DatabaseBill {
                name: d.name.clone(),
                amount: charges.iter().map(|c| c.amount).sum(),
                charges,
            }
        })
        .collect();
    let mut charges = vec![Charge {
        resource: "base",
        quantity: 1.0,
        unit: "month",
        unit_price: billing.base_price_per_month,
        amount: billing.base_price_per_month,
    }];
    charges.extend(usage_charges(&usage.total, billing, month_hours));
    let total = charges.iter().map(|c| c.amount).sum::<f64>();
    Bill {
        period: usage.period.clone(),
        currency: billing.currency.clone(),
        charges,
        databases,
        total: (total * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriceList;

    #[test]
    fn periods_parse_and_bound_months() {
        let p = Period::parse("2026-02").unwrap();
        let (a, b) = p.bounds();
        assert_eq!(b - a, 28 * 86400);
        assert_eq!(Period::of(a).to_string(), "2026-02");
        assert_eq!(
            Period::parse("2026-12").unwrap().bounds().1
                - Period::parse("2026-12").unwrap().bounds().0,
            31 * 86400
        );
        for bad in ["2026-13", "2026-1", "26-01", "", "2026-00", "abcd-ef"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uptime_spans_restarts_and_clips_to_the_period() {
        let runs = [(0, 100), (150, 300), (400, 1000)];
        assert_eq!(up_seconds(&runs, 0, 500), 100 + 150 + 100);
        assert_eq!(up_seconds(&runs, 50, 200), 50 + 50);
    }

    fn usage_of(requests: u64, errors: u64, latency_micros: u64) -> Usage {
        let m = crate::metering::Meter::default();
        for i in 0..requests {
            m.record_request(
                std::time::Duration::from_micros(latency_micros),
                100,
                1000,
                i < errors,
            );
        }
        m.take()
    }

    #[test]
    fn violations_name_the_metric_scope_and_severity() {
        let p = Period::parse("2026-11").unwrap();
        let report = usage_report(
            p,
            vec![
                ("fast".into(), usage_of(100, 0, 1_000), 4096, 0.0),
                ("slow".into(), usage_of(100, 10, 60_000), 4096, 0.0),
            ],
        );
        let targets = SlaTargets {
            uptime_percent: 99.9,
            max_avg_latency_ms: 20.0,
            max_error_rate: 0.01,
        };
        let sla = sla_report(&report, 99.5, Some(&targets));
        assert!(!sla.compliant);
        let found = |metric: &str, scope: &str| {
            sla.violations
                .iter()
                .find(|v| v.metric == metric && v.scope == scope)
                .map(|v| v.severity)
        };
        assert_eq!(
            found("uptime", "total"),
            Some("critical"),
            "0.5% down against 0.1% allowed"
        );
        assert_eq!(
            found("latency", "slow"),
            Some("critical"),
            "60 ms against 20 ms"
        );
        assert_eq!(
            found("latency", "total"),
            Some("warning"),
            "30.5 ms on average"
        );
        assert_eq!(found("errorRate", "slow"), Some("critical"));
        assert_eq!(found("latency", "fast"), None);
        let ok = sla_report(
            &usage_report(p, vec![("fast".into(), usage_of(100, 0, 1_000), 0, 0.0)]),
            100.0,
            Some(&targets),
        );
        assert!(ok.compliant && ok.violations.is_empty());
    }

    #[test]
    fn a_bill_is_base_plus_usage_per_resource_and_per_database() {
        let p = Period::parse("2026-11").unwrap();
        let hours = 30.0 * 24.0;
        let mut big = usage_of(2_000_000, 0, 100);
        big.cpu_micros = 7_200_000_000; // 2 CPU hours
        let report = usage_report(
            p,
            vec![
                ("big".into(), big, 10 << 30, 10.0 * GIB * 3600.0 * hours), // 10 GiB all month
                ("small".into(), usage_of(1000, 0, 100), 0, 0.0),
            ],
        );
        let billing = BillingConfig {
            currency: "EUR".into(),
            base_price_per_month: 500.0,
            prices: PriceList::default(),
        };
        let b = bill(&report, p, &billing);
        assert_eq!(b.currency, "EUR");
        let amount = |r: &str| b.charges.iter().find(|c| c.resource == r).unwrap().amount;
        assert_eq!(amount("base"), 500.0);
        assert!((amount("requests") - 2.001 * 0.40).abs() < 1e-9);
        assert!((amount("storage") - 10.0 * 0.10).abs() < 1e-9);
        assert!((amount("cpu") - 2.0 * 0.05).abs() < 1e-9);
        let big_bill = b.databases.iter().find(|d| d.name == "big").unwrap();
        assert!(
            big_bill.amount
                > b.databases
                    .iter()
                    .find(|d| d.name == "small")
                    .unwrap()
                    .amount
        );
        let sum: f64 = b.charges.iter().map(|c| c.amount).sum();
        assert!((b.total - (sum * 100.0).round() / 100.0).abs() < 1e-9);
    }
}
