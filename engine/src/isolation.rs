//! The tier's limits the engine enforces itself, beside those the kernel enforces through
//! the cgroup (`crate::cgroup`): storage IO and network throttles, the concurrent-session
//! limit and the page-cache budget, with what `/v1/isolation/{io,network,cache}` reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::throttle::{self, Throttle, ThrottleReport};

/// IOPS and bytes-a-second throttles over storage IO: every page a statement read from
/// storage (a page-cache miss) or wrote counts. Each bucket holds one second's worth.
#[derive(Debug, Default)]
pub struct IoLimits {
    iops: Option<Throttle>,
    bytes: Option<Throttle>,
}

/// What `/v1/isolation/io` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoReport {
    /// How the limits are enforced: `token-bucket` (the engine, always when a limit is
    /// set), plus the cgroup file written, when the engine's cgroup was writable.
    pub mechanisms: Vec<String>,
    /// Pages read from storage plus pages written, a second.
    pub iops: Option<ThrottleReport>,
    /// Those pages' bytes, a second.
    pub bytes_per_second: Option<ThrottleReport>,
}

impl IoLimits {
    /// Limits of `iops` operations and `bytes_per_second` bytes a second (none for `None`).
    pub fn new(iops: Option<u32>, bytes_per_second: Option<u64>) -> Self {
        let iops = iops.map(u64::from).unwrap_or(0);
        let bytes = bytes_per_second.unwrap_or(0);
        IoLimits {
            iops: Throttle::new(iops, iops),
            bytes: Throttle::new(bytes, bytes),
        }
    }

    /// Whether any IO limit is set.
    pub fn is_limited(&self) -> bool {
        self.iops.is_some() || self.bytes.is_some()
    }

    /// Charge `pages` of `page_size` bytes that a statement read or wrote.
    pub fn charge(&self, pages: u64, page_size: u64) {
        let now = Instant::now();
        if let Some(t) = &self.iops {
            t.charge_at(pages, now);
        }
        if let Some(t) = &self.bytes {
            t.charge_at(pages.saturating_mul(page_size), now);
        }
    }

    /// How long the next statement waits for the IO already done to be paid for.
    pub fn wait(&self) -> Duration {
        if !self.is_limited() {
            return Duration::ZERO;
        }
        throttle::wait_for(self.iops.iter().chain(self.bytes.iter()), Instant::now())
    }

    /// The report, naming `cgroup_file` as a mechanism when one was written.
    pub fn report(&self, cgroup_file: Option<&str>) -> IoReport {
        let mut mechanisms = Vec::new();
        if self.is_limited() {
            mechanisms.push("token-bucket".to_string());
        }
        mechanisms.extend(cgroup_file.map(String::from));
        IoReport {
            mechanisms,
            iops: self.iops.as_ref().map(Throttle::report),
            bytes_per_second: self.bytes.as_ref().map(Throttle::report),
        }
    }
}

/// The tier's network bandwidth over the data plane's request and response bodies.
#[derive(Debug, Default)]
pub struct NetworkLimits {
    bandwidth: Option<Throttle>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// What `/v1/isolation/network` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkReport {
    /// The tier's bandwidth in megabits a second; `None` when unlimited.
    pub bandwidth_mbps: Option<u32>,
    /// Body bytes a second, in and out together.
    pub throttle: Option<ThrottleReport>,
    /// Request body bytes received since the engine started.
    pub bytes_in: u64,
    /// Response body bytes sent since the engine started.
    pub bytes_out: u64,
    /// Who may reach the engine: the NetworkPolicy the operator writes (only the operator
    /// and pods of the tenant's namespace), which the engine cannot see from inside.
    pub policy: String,
}

impl NetworkLimits {
    /// A limit of `mbps` megabits a second, with one second's worth of burst.
    pub fn new(mbps: Option<u32>) -> Self {
        let bytes = mbps.map_or(0, |m| u64::from(m) * 125_000);
        NetworkLimits {
            bandwidth: Throttle::new(bytes, bytes),
            ..Default::default()
        }
    }

    /// Count a request's body bytes.
    pub fn charge(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if let Some(t) = &self.bandwidth {
            t.charge(bytes_in + bytes_out);
        }
    }

    /// How long the next request waits for earlier bytes to be paid for.
    pub fn wait(&self) -> Duration {
        throttle::wait_for(self.bandwidth.iter(), Instant::now())
    }

    /// The report, for a limit of `mbps`.
    pub fn report(&self, mbps: Option<u32>) -> NetworkReport {
        NetworkReport {
            bandwidth_mbps: mbps,
            throttle: self.bandwidth.as_ref().map(Throttle::report),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            policy: "ingress from the operator and the tenant's namespace only (NetworkPolicy)"
                .into(),
        }
    }
}

/// The tier's concurrent sessions: data-plane requests in flight at once.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// The limit and its permits; `None` when unlimited.
    limit: Option<(u32, Arc<tokio::sync::Semaphore>)>,
    refused: AtomicU64,
}

/// What `/v1/isolation/cpu` adds about sessions.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionReport {
    /// Concurrent sessions allowed; `None` when unlimited.
    pub max: Option<u32>,
    /// Sessions in flight now.
    pub active: u32,
    /// Requests refused because every session was in use.
    pub refused: u64,
}

/// A held session slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SessionSlot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnectionLimit {
    /// At most `max` sessions at once (`None`: unlimited).
    pub fn new(max: Option<u32>) -> Self {
        ConnectionLimit {
            limit: max.map(|m| (m, Arc::new(tokio::sync::Semaphore::new(m as usize)))),
            refused: AtomicU64::new(0),
        }
    }

    /// Take a session slot, or refuse with 429 when all are in use.
    pub fn acquire(&self) -> Result<SessionSlot> {
        let Some((max, permits)) = &self.limit else {
            return Ok(SessionSlot { _permit: None });
        };
        match permits.clone().try_acquire_owned() {
            Ok(p) => Ok(SessionSlot { _permit: Some(p) }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(EngineError::TooManySessions(format!(
                    "all {max} concurrent sessions of the tier are in use; retry when one ends"
                )))
            }
        }
    }

    /// The report.
    pub fn report(&self) -> ConnectionReport {
        let active = self.limit.as_ref().map_or(0, |(m, permits)| {
            m.saturating_sub(permits.available_permits() as u32)
        });
        ConnectionReport {
            max: self.limit.as_ref().map(|(m, _)| *m),
            active,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// SQLite's page cache per connection, from the memory the cgroup allows: a 256th of the
/// limit, between 256 KiB and 64 MiB (2 MiB, SQLite's default, without a limit). With at
/// most a few connections per database this keeps caches well inside the limit.
pub fn cache_kib_per_connection(memory_limit_bytes: Option<u64>) -> u32 {
    match memory_limit_bytes {
        None => 2048,
        Some(limit) => ((limit / 256) / 1024).clamp(256, 64 * 1024) as u32,
    }
}

/// SQLite's heap budget for a memory limit: half of it (the rest is the engine's own
/// buffers, the OS page cache of the database files, and headroom), none without a limit.
pub fn sqlite_heap_budget(memory_limit_bytes: Option<u64>) -> Option<u64> {
    memory_limit_bytes.map(|m| m / 2)
}

/// Apply `budget` to SQLite process-wide: a soft limit at three quarters of it (SQLite
/// frees page cache to stay below) and a hard limit at it (an allocation past it fails, and
/// the statement with it, with [`crate::error::EngineError::MemoryBudget`]). `None` lifts both.
pub fn apply_sqlite_heap_budget(budget: Option<u64>) {
    let hard = budget.map_or(0, |b| b.min(i64::MAX as u64) as i64);
    // SAFETY: both calls only set SQLite's process-wide heap limits; any value is valid.
    unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(hard);
        rusqlite::ffi::sqlite3_soft_heap_limit64(hard / 4 * 3);
    }
}

/// SQLite's hard heap limit in force (0: none) and the bytes its heap holds now.
pub fn sqlite_heap() -> (u64, u64) {
    // SAFETY: a negative argument only reads the current limit; sqlite3_memory_used reads a counter.
    unsafe {
        (
            rusqlite::ffi::sqlite3_hard_heap_limit64(-1).max(0) as u64,
            rusqlite::ffi::sqlite3_memory_used().max(0) as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_charges_pages_and_bytes_and_reports_the_mechanism() {
        let io = IoLimits::new(Some(100), Some(100 * 4096));
        assert!(io.is_limited());
        io.charge(150, 4096);
        let w = io.wait();
        assert!(
            w > Duration::from_millis(450) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        let r = io.report(Some("blkio.throttle.write_iops_device"));
        assert_eq!(
            r.mechanisms,
            ["token-bucket", "blkio.throttle.write_iops_device"]
        );
        assert_eq!(
            r.iops.as_ref().map(|t| (t.used, t.throttled)),
            Some((150, 1))
        );
        assert_eq!(r.bytes_per_second.map(|t| t.used), Some(150 * 4096));
        let none = IoLimits::new(None, None);
        none.charge(1_000_000, 4096);
        assert_eq!(none.wait(), Duration::ZERO);
        assert!(none.report(None).mechanisms.is_empty());
    }

    #[test]
    fn sessions_past_the_limit_are_refused_until_one_ends() {
        let limit = ConnectionLimit::new(Some(2));
        let a = limit.acquire().unwrap();
        let _b = limit.acquire().unwrap();
        assert!(matches!(
            limit.acquire(),
            Err(EngineError::TooManySessions(_))
        ));
        assert_eq!(limit.report().active, 2);
        drop(a);
        assert!(limit.acquire().is_ok());
        assert_eq!(limit.report().refused, 1);
        assert!(ConnectionLimit::new(None).acquire().is_ok());
    }

    #[test]
    fn network_bandwidth_is_bytes_a_second() {
        let n = NetworkLimits::new(Some(8)); // 1 MB/s
        n.charge(500_000, 1_500_000); // 1 MB of debt past the 1 MB burst
        let w = n.wait();
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        let r = n.report(Some(8));
        assert_eq!((r.bytes_in, r.bytes_out), (500_000, 1_500_000));
    }

    #[test]
    fn cache_budget_follows_the_memory_limit() {
        assert_eq!(cache_kib_per_connection(None), 2048);
        assert_eq!(cache_kib_per_connection(Some(2 << 30)), 8192);
        assert_eq!(cache_kib_per_connection(Some(128 << 20)), 512);
        assert_eq!(cache_kib_per_connection(Some(1 << 20)), 256);
    }
}
