//! Statement budgets: heavy statements remembered, interruptions counted, the page cache
//! each connection gets.

use super::*;

impl Engine {
    /// Whether `sql` on database `name` once outran the inline cap.
    pub fn known_heavy(&self, name: &str, sql: &str) -> bool {
        self.pdbs
            .read()
            .ok()
            .and_then(|m| m.get(name).map(|p| p.is_heavy(sql)))
            .unwrap_or(false)
    }

    /// Remember that `sql` on database `name` outran the inline cap.
    pub fn mark_heavy(&self, name: &str, sql: &str) {
        if let Some(p) = self.pdbs.read().ok().and_then(|m| m.get(name).cloned()) {
            p.mark_heavy(sql);
        }
    }

    /// The time budget of a statement without a profile limit.
    pub fn statement_budget(&self) -> Duration {
        self.opts.default_statement_budget
    }

    /// The CPU budget of a tenant statement without a profile limit.
    pub fn statement_cpu_budget(&self) -> Option<Duration> {
        self.opts.default_statement_cpu_budget
    }

    /// Statements interrupted so far: (by their time budget, by their CPU budget).
    pub fn interruptions(&self) -> (u64, u64) {
        let get = |i: usize| self.interrupted[i].load(std::sync::atomic::Ordering::Relaxed);
        (get(0), get(1))
    }

    pub(super) fn count_interruption<T>(&self, outcome: &Result<T>) {
        let i = match outcome {
            Err(EngineError::Timeout(_)) => 0,
            Err(EngineError::CpuBudget(_)) => 1,
            _ => return,
        };
        self.interrupted[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// SQLite page cache per connection, in KiB.
    pub fn cache_kib_per_connection(&self) -> u32 {
        self.opts.cache_kib_per_connection
    }

    /// What `/v1/isolation/cache` reports: the page-cache budget and the connections
    /// holding one now.
    pub fn cache_report(&self) -> serde_json::Value {
        let pdbs: Vec<Arc<Pdb>> = self
            .pdbs
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let connections: usize = pdbs.iter().map(|p| p.open_connections()).sum();
        let kib = u64::from(self.opts.cache_kib_per_connection);
        serde_json::json!({
            "pageCacheKibPerConnection": kib,
            "databases": pdbs.len(),
            "openConnections": connections,
            "pageCacheBudgetBytes": kib * 1024 * connections as u64,
            "idleConnectionsKeptPerDatabase": crate::pdb::MAX_IDLE,
        })
    }
}
