//! Prometheus metrics the engine exports at `/metrics`.

use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::backup::ShipStatus;
use crate::reports::{SlaReport, UsageReport};

/// The engine's metric families, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status code.
    pub http_requests: IntCounterVec,
    /// CPU limit from the cgroup, in cores (0 when unlimited).
    pub cpu_limit_cores: Gauge,
    /// Memory limit from the cgroup, in bytes (0 when unlimited).
    pub memory_limit_bytes: Gauge,
    /// Metered usage this period, per database and counter.
    pub usage: GaugeVec,
    /// Request latency this period (avg, p95, p99) per database, in ms.
    pub latency_ms: GaugeVec,
    /// Uptime this period, percent.
    pub uptime_percent: Gauge,
    /// The tenant's storage limit in bytes (0 when unlimited).
    pub storage_limit_bytes: Gauge,
    /// 1 when every SLA target is met this period, else 0.
    pub sla_compliant: Gauge,
    /// SLA violations this period by metric and severity.
    pub sla_violations: GaugeVec,
    /// Data-plane requests refused before reaching a database (no token, a token of no
    /// use here): counted apart, never billed to a database.
    pub refused_requests: IntCounterVec,
    /// Hrana streams open now.
    pub streams_open: Gauge,
    /// Hrana streams ended because they were idle, since the engine started.
    pub streams_expired: Gauge,
    /// Continuous backup per database (stat: lag_seconds, pending_commits, backlog_bytes,
    /// shipped_bytes, failures, failing, last_snapshot_age_seconds).
    pub backup: GaugeVec,
    /// Replication of a replicated tenant's member.
    replication: GaugeVec,
}

impl Metrics {
    /// Create and register every family.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tenantdb_engine".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let cpu_limit_cores = Gauge::new(
            "cpu_limit_cores",
            "CPU limit read from the cgroup (0 = unlimited)",
        )?;
        let memory_limit_bytes = Gauge::new(
            "memory_limit_bytes",
            "Memory limit read from the cgroup (0 = unlimited)",
        )?;
        let usage = GaugeVec::new(
            Opts::new("database_usage", "Metered usage this billing period (counter: requests, errors, statements, rows_read, rows_written, cpu_seconds, pages_read, pages_written, bytes_in, bytes_out, storage_bytes)"),
            &["database", "counter"],
        )?;
        let latency_ms = GaugeVec::new(
            Opts::new(
                "database_latency_ms",
                "Request latency this billing period (stat: avg, p95, p99)",
            ),
            &["database", "stat"],
        )?;
        let uptime_percent = Gauge::new(
            "uptime_percent",
            "Uptime this billing period, across restarts",
        )?;
        let storage_limit_bytes = Gauge::new(
            "storage_limit_bytes",
            "The tenant's storage limit (0 = unlimited)",
        )?;
        registry.register(Box::new(storage_limit_bytes.clone()))?;
        let sla_compliant = Gauge::new(
            "sla_compliant",
            "1 when every SLA target of the tier is met this period",
        )?;
        let sla_violations = GaugeVec::new(
            Opts::new("sla_violations", "SLA violations this period"),
            &["metric", "severity"],
        )?;
        let refused_requests = IntCounterVec::new(
            Opts::new(
                "refused_requests_total",
                "Data-plane requests refused before reaching a database (no token, or one of no use here), by plane and reason; never billed",
            ),
            &["plane", "reason"],
        )?;
        let streams_open = Gauge::new("hrana_streams_open", "Hrana streams open now")?;
        let streams_expired = Gauge::new(
            "hrana_streams_expired",
            "Hrana streams ended after being idle, since the engine started",
        )?;
        let backup = GaugeVec::new(
            Opts::new(
                "backup",
                "Continuous backup per database (stat: lag_seconds = age of the oldest commit not yet in the store, pending_commits, backlog_bytes, shipped_bytes and failures since the engine started, failing = 1 while the store refuses, last_snapshot_age_seconds)",
            ),
            &["database", "stat"],
        )?;
        registry.register(Box::new(backup.clone()))?;
        let replication = GaugeVec::new(
            Opts::new(
                "replication",
                "Hot standbys (stat: primary = 1 on the primary, epoch, writable = 1 while the primary may acknowledge, standbys connected, streaming = 1 on a standby following its primary, caught_up, lag_transactions and lag_bytes not yet acknowledged (primary) or applied (standby), unreplicated_commits acknowledged with no standby in preferred mode)",
            ),
            &["stat"],
        )?;
        registry.register(Box::new(replication.clone()))?;
        registry.register(Box::new(refused_requests.clone()))?;
        registry.register(Box::new(streams_open.clone()))?;
        registry.register(Box::new(streams_expired.clone()))?;
        registry.register(Box::new(usage.clone()))?;
        registry.register(Box::new(latency_ms.clone()))?;
        registry.register(Box::new(uptime_percent.clone()))?;
        registry.register(Box::new(sla_compliant.clone()))?;
        registry.register(Box::new(sla_violations.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(cpu_limit_cores.clone()))?;
        registry.register(Box::new(memory_limit_bytes.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            cpu_limit_cores,
            memory_limit_bytes,
            usage,
            latency_ms,
            uptime_percent,
            storage_limit_bytes,
            sla_compliant,
            sla_violations,
            refused_requests,
            streams_open,
            streams_expired,
            backup,
            replication,
        })
    }

    /// Set the usage and SLA families from this period's reports.
    pub fn observe_reports(&self, usage: &UsageReport, sla: &SlaReport) {
        self.usage.reset();
        self.latency_ms.reset();
        self.sla_violations.reset();
        for d in usage.databases.iter().chain(std::iter::once(&usage.total)) {
            let u = &d.usage;
            for (counter, v) in [
                ("requests", u.requests as f64),
                ("errors", u.errors as f64),
                ("statements", u.statements as f64),
                ("rows_read", u.rows_read as f64),
                ("rows_written", u.rows_written as f64),
                ("cpu_seconds", u.cpu_micros as f64 / 1e6),
                ("pages_read", u.pages_read as f64),
                ("pages_written", u.pages_written as f64),
                ("bytes_in", u.bytes_in as f64),
                ("bytes_out", u.bytes_out as f64),
                ("storage_bytes", d.storage_bytes as f64),
            ] {
                self.usage
                    .with_label_values(&[d.name.as_str(), counter])
                    .set(v);
            }
        }
        for f in sla.databases.iter().chain(std::iter::once(&sla.total)) {
            for (stat, v) in [
                ("avg", f.avg_latency_ms),
                ("p95", f.p95_latency_ms),
                ("p99", f.p99_latency_ms),
            ] {
                self.latency_ms
                    .with_label_values(&[f.name.as_str(), stat])
                    .set(v);
            }
        }
        self.uptime_percent.set(sla.uptime_percent);
        self.sla_compliant
            .set(if sla.compliant { 1.0 } else { 0.0 });
        for v in &sla.violations {
            self.sla_violations
                .with_label_values(&[v.metric, v.severity])
                .inc();
        }
    }

    /// Set the backup family from every shipper's status (`now_ms`: unix ms).
    pub fn observe_backup(&self, statuses: &[(String, ShipStatus)], now_ms: i64) {
        self.backup.reset();
        for (db, st) in statuses {
            let snapshot_age = if st.last_snapshot_ms > 0 {
                (now_ms - st.last_snapshot_ms).max(0) as f64 / 1e3
            } else {
                f64::NAN
            };
            for (stat, v) in [
                ("lag_seconds", st.lag_ms as f64 / 1e3),
                ("pending_commits", st.pending_commits as f64),
                ("backlog_bytes", st.backlog_bytes as f64),
                ("shipped_bytes", st.shipped_bytes as f64),
                ("failures", st.failures as f64),
                ("failing", f64::from(u8::from(st.last_error.is_some()))),
                ("last_snapshot_age_seconds", snapshot_age),
            ] {
                if v.is_nan() {
                    continue;
                }
                self.backup.with_label_values(&[db.as_str(), stat]).set(v);
            }
        }
    }

    /// The text exposition format of every family.
    /// Set the replication family from a member's status.
    pub fn observe_replication(&self, s: &tenantdb_engine_api::replication::ReplicationStatus) {
        use tenantdb_engine_api::replication::Role;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        for (stat, v) in [
            ("primary", flag(s.role == Some(Role::Primary))),
            ("epoch", s.epoch as f64),
            ("writable", flag(s.writable)),
            ("standbys", f64::from(s.standbys)),
            ("streaming", flag(s.streaming)),
            ("caught_up", flag(s.caught_up)),
            ("lag_transactions", s.lag_transactions as f64),
            ("lag_bytes", s.lag_bytes as f64),
            ("unreplicated_commits", s.unreplicated_commits as f64),
        ] {
            self.replication.with_label_values(&[stat]).set(v);
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `tenantdb_engine_backup{stat="…"}` the chart's alerts and dashboard use is
    /// one the engine exports.
    #[test]
    fn the_charts_backup_stats_are_exported() {
        let m = Metrics::new().unwrap();
        let st = ShipStatus {
            last_snapshot_ms: 1_000,
            last_error: Some("down".into()),
            ..Default::default()
        };
        m.observe_backup(&[("orders".to_string(), st)], 61_000);
        let text = m.render();
        assert!(
            text.contains(
                r#"tenantdb_engine_backup{database="orders",stat="last_snapshot_age_seconds"} 60"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tenantdb_engine_backup{database="orders",stat="failing"} 1"#),
            "{text}"
        );
        let chart = concat!(
            include_str!("../../charts/tenantdb/templates/prometheusrule.yaml"),
            include_str!("../../charts/tenantdb/dashboards/tenantdb.json")
        )
        .replace("\\\"", "\"");
        let mut used = 0;
        for part in chart.split("tenantdb_engine_backup{stat=\"").skip(1) {
            let stat = part.split('"').next().unwrap_or_default();
            used += 1;
            assert!(
                text.contains(&format!("stat=\"{stat}\"")),
                "the chart uses backup stat {stat:?}, which the engine does not export"
            );
        }
        assert!(used >= 7, "the chart's backup rules and panels: {used}");
    }
}
