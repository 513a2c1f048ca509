//! Storage budgets, metering, usage and SLA reports.

use super::*;

impl Engine {
    /// The most bytes `pdb` may grow to now: its own quota (`own`), and what the tenant's storage
    /// leaves once every other database is counted. `None` when neither is set.
    pub(super) fn size_budget(&self, pdb: &Pdb, own: Option<u64>) -> Option<u64> {
        let tenant = self.opts.storage_bytes.map(|limit| {
            let used = self.used_bytes();
            let mine = files::db_size(&pdb.path);
            limit.saturating_sub(used.saturating_sub(mine))
        });
        match (own, tenant) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes used by every database, measured at most once a second.
    pub(super) fn used_bytes(&self) -> u64 {
        let Ok(mut used) = self.used.lock() else {
            return 0;
        };
        if used.0.elapsed() >= Duration::from_secs(1) {
            let paths: Vec<PathBuf> = self
                .pdbs
                .read()
                .map(|m| m.values().map(|p| p.path.clone()).collect())
                .unwrap_or_default();
            *used = (
                Instant::now(),
                paths.iter().map(|p| files::db_size(p)).sum(),
            );
        }
        used.1
    }

    /// Turn statement metering off or on. Only the benchmark turns it off, to measure
    /// what metering costs on the query path.
    pub fn set_metering(&self, on: bool) {
        self.metering
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fold every database's metered counters into the catalog and note that the engine
    /// is alive. Called every few seconds and at shutdown, so a crash loses at most that.
    pub fn flush_usage(&self) -> Result<()> {
        let all = self.all_pdbs()?;
        self.flush_pdbs(&all)?;
        self.catalog.touch_uptime(self.started_unix, now())
    }

    /// Every open database, as of now.
    pub(super) fn all_pdbs(&self) -> Result<Vec<Arc<Pdb>>> {
        Ok(self
            .pdbs
            .read()
            .map_err(EngineError::internal)?
            .values()
            .cloned()
            .collect())
    }

    pub(super) fn flush_pdbs(&self, pdbs: &[Arc<Pdb>]) -> Result<()> {
        let at = now();
        let entries: Vec<_> = pdbs
            .iter()
            .map(|p| (p.name.clone(), p.meter.take(), files::db_size(&p.path)))
            .collect();
        let result = self
            .catalog
            .add_usage(&entries, &reports::Period::of(at).to_string(), at);
        if result.is_err() {
            // Not lost: put the counts back for the next flush.
            for (p, (_, u, _)) in pdbs.iter().zip(&entries) {
                p.meter.restore(u);
            }
        }
        result
    }

    /// Usage in `period`: what the catalog holds, plus what is metered since the last
    /// flush when `period` is the current one.
    pub fn usage_report(&self, period: reports::Period) -> Result<reports::UsageReport> {
        let mut rows = self.catalog.usage(&period.to_string())?;
        if period == reports::Period::of(now()) {
            let live = self.all_pdbs()?;
            for p in live {
                let pending = p.meter.peek();
                let size = files::db_size(&p.path);
                match rows.iter_mut().find(|r| r.0 == p.name) {
                    Some(r) => {
                        r.1.add(&pending);
                        r.2 = size;
                    }
                    None => rows.push((p.name.clone(), pending, size, 0.0)),
                }
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(reports::usage_report(period, rows))
    }

    /// The statistics the operator surfaces: storage growth, peak request rate, average
    /// response time and error rate, for `period`.
    pub fn stats(&self, period: reports::Period) -> Result<reports::Stats> {
        let usage = self.usage_report(period)?;
        let (first, first_at, last, last_at) = self.catalog.storage_growth(&period.to_string())?;
        let span = (last_at - first_at) as f64;
        Ok(reports::Stats {
            period: period.to_string(),
            storage_bytes: usage.total.storage_bytes,
            storage_growth_bytes_per_day: if span > 0.0 {
                (last - first) as f64 / span * 86_400.0
            } else {
                0.0
            },
            peak_requests_per_minute: self.requests_per_minute.peak(),
            avg_response_ms: usage.total.usage.avg_latency_ms(),
            error_rate: usage.total.usage.error_rate(),
            requests: usage.total.usage.requests,
        })
    }

    /// Usage in `period` and the SLA report over it against `targets`.
    pub fn sla_report(
        &self,
        period: reports::Period,
        targets: Option<&crate::config::SlaTargets>,
    ) -> Result<(reports::UsageReport, reports::SlaReport)> {
        let usage = self.usage_report(period)?;
        let sla = reports::sla_report(&usage, self.uptime_percent(period)?, targets);
        Ok((usage, sla))
    }

    /// Uptime in `period` so far, in percent, counted from the engine's first run.
    pub fn uptime_percent(&self, period: reports::Period) -> Result<f64> {
        let mut runs = self.catalog.uptime()?;
        let t = now();
        for r in runs.iter_mut() {
            if r.0 == self.started_unix {
                r.1 = t;
            }
        }
        let (start, end) = period.bounds();
        let from = start.max(runs.first().map_or(start, |r| r.0));
        let to = end.min(t);
        if to <= from {
            return Ok(100.0);
        }
        let up = reports::up_seconds(&runs, from, to);
        Ok((up as f64 / (to - from) as f64 * 100.0).min(100.0))
    }
}
