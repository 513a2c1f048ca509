//! Metering per database: what each request cost, counted with relaxed atomics on the
//! query path and folded into the catalog every few seconds (see [`crate::catalog`]),
//! so a restart loses at most that window. The same counters feed `/v1/usage`, the SLA
//! figures, billing and Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// Upper bounds of the latency histogram's buckets, in microseconds (the last is +inf).
pub const LATENCY_BOUNDS_MICROS: [u64; 24] = [
    50,
    100,
    200,
    300,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    50_000,
    75_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    5_000_000,
    u64::MAX,
];

/// Counters of one database (in memory since the last flush, or totals read back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Requests on the data plane.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// SQL statements run.
    pub statements: u64,
    /// Rows returned to callers.
    pub rows_read: u64,
    /// Rows inserted, updated or deleted.
    pub rows_written: u64,
    /// CPU time spent running statements, in microseconds.
    pub cpu_micros: u64,
    /// Database pages read from storage (page-cache misses).
    pub pages_read: u64,
    /// Database pages written.
    pub pages_written: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Sessions (connection checkouts).
    pub sessions: u64,
    /// Committed transactions (a batch, or one writing statement).
    pub transactions: u64,
    /// Sum of request latencies, in microseconds.
    pub latency_micros_sum: u64,
    /// Request count per latency bucket ([`LATENCY_BOUNDS_MICROS`]).
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
}

impl Usage {
    /// Add `other` into `self`.
    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.statements += other.statements;
        self.rows_read += other.rows_read;
        self.rows_written += other.rows_written;
        self.cpu_micros += other.cpu_micros;
        self.pages_read += other.pages_read;
        self.pages_written += other.pages_written;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.sessions += other.sessions;
        self.transactions += other.transactions;
        self.latency_micros_sum += other.latency_micros_sum;
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (a, b) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *a += b;
        }
    }

    /// Average request latency in milliseconds.
    pub fn avg_latency_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_micros_sum as f64 / self.requests as f64 / 1000.0
        }
    }

    /// The `q` quantile (0..1) of request latency in milliseconds: the upper bound of
    /// the bucket it falls in (the last finite bound for the overflow bucket).
    pub fn latency_quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_MICROS
                    .get(i)
                    .copied()
                    .filter(|b| *b != u64::MAX)
                    .unwrap_or(LATENCY_BOUNDS_MICROS[LATENCY_BOUNDS_MICROS.len() - 2]);
                return bound as f64 / 1000.0;
            }
        }
        0.0
    }

    /// Errors per request.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Live counters of one database; every method is a few relaxed atomic adds.
#[derive(Debug)]
pub struct Meter {
    requests: AtomicU64,
    errors: AtomicU64,
    statements: AtomicU64,
    rows_read: AtomicU64,
    rows_written: AtomicU64,
    cpu_micros: AtomicU64,
    pages_read: AtomicU64,
    pages_written: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    sessions: AtomicU64,
    transactions: AtomicU64,
    latency_micros_sum: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_MICROS.len()],
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            statements: AtomicU64::new(0),
            rows_read: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            cpu_micros: AtomicU64::new(0),
            pages_read: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            latency_micros_sum: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// What one session did, added to a [`Meter`] when the session ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Statements run.
    pub statements: u64,
    /// Rows returned.
    pub rows_read: u64,
    /// Rows changed.
    pub rows_written: u64,
    /// CPU microseconds of the thread that ran them.
    pub cpu_micros: u64,
    /// Pages read from storage.
    pub pages_read: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Whether a transaction committed.
    pub committed: bool,
    /// Whether the work started a session (a request of the JSON API, a Hrana stream).
    pub session: bool,
}

impl Meter {
    /// Count a session's work.
    pub fn record_work(&self, w: &Work) {
        // A locked add costs ~6 ns even uncontended, and most of a point select's counts
        // are zero: add only what is not.
        let add = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.sessions, u64::from(w.session));
        add(&self.statements, w.statements);
        add(&self.rows_read, w.rows_read);
        add(&self.rows_written, w.rows_written);
        add(&self.cpu_micros, w.cpu_micros);
        add(&self.pages_read, w.pages_read);
        add(&self.pages_written, w.pages_written);
        add(&self.transactions, u64::from(w.committed));
    }

    /// Count one data-plane request: its latency, body sizes and outcome.
    pub fn record_request(&self, latency: Duration, bytes_in: u64, bytes_out: u64, error: bool) {
        let r = Ordering::Relaxed;
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.requests.fetch_add(1, r);
        if error {
            self.errors.fetch_add(1, r);
        }
        self.bytes_in.fetch_add(bytes_in, r);
        self.bytes_out.fetch_add(bytes_out, r);
        self.latency_micros_sum.fetch_add(micros, r);
        let i = LATENCY_BOUNDS_MICROS.partition_point(|b| *b < micros);
        self.latency[i.min(LATENCY_BOUNDS_MICROS.len() - 1)].fetch_add(1, r);
    }

    /// Take the counts since the last take (they restart at zero).
    pub fn take(&self) -> Usage {
        self.read(true)
    }

    /// Add counts back (a flush that could not be written).
    pub fn restore(&self, u: &Usage) {
        let r = Ordering::Relaxed;
        self.requests.fetch_add(u.requests, r);
        self.errors.fetch_add(u.errors, r);
        self.statements.fetch_add(u.statements, r);
        self.rows_read.fetch_add(u.rows_read, r);
        self.rows_written.fetch_add(u.rows_written, r);
        self.cpu_micros.fetch_add(u.cpu_micros, r);
        self.pages_read.fetch_add(u.pages_read, r);
        self.pages_written.fetch_add(u.pages_written, r);
        self.bytes_in.fetch_add(u.bytes_in, r);
        self.bytes_out.fetch_add(u.bytes_out, r);
        self.sessions.fetch_add(u.sessions, r);
        self.transactions.fetch_add(u.transactions, r);
        self.latency_micros_sum.fetch_add(u.latency_micros_sum, r);
        for (a, n) in self.latency.iter().zip(&u.latency_buckets) {
            a.fetch_add(*n, r);
        }
    }

    /// The counts since the last take, leaving them in place.
    pub fn peek(&self) -> Usage {
        self.read(false)
    }

    fn read(&self, reset: bool) -> Usage {
        let get = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        Usage {
            requests: get(&self.requests),
            errors: get(&self.errors),
            statements: get(&self.statements),
            rows_read: get(&self.rows_read),
            rows_written: get(&self.rows_written),
            cpu_micros: get(&self.cpu_micros),
            pages_read: get(&self.pages_read),
            pages_written: get(&self.pages_written),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            sessions: get(&self.sessions),
            transactions: get(&self.transactions),
            latency_micros_sum: get(&self.latency_micros_sum),
            latency_buckets: self.latency.iter().map(get).collect(),
        }
    }
}

/// Measures the CPU time of work on the calling thread: with the thread CPU clock, or,
/// when `elapsed` is asked for, with the monotonic clock (for work that never waits).
#[derive(Debug, Clone, Copy)]
pub enum CpuClock {
    /// Thread CPU time at the start.
    Thread(Duration),
    /// Instant at the start (TSC-backed where the CPU has an invariant one).
    Elapsed(quanta::Instant),
}

impl CpuClock {
    /// Start measuring at `now`; `elapsed` picks the cheap monotonic clock.
    pub fn start(elapsed: bool, now: quanta::Instant) -> Self {
        if elapsed {
            CpuClock::Elapsed(now)
        } else {
            CpuClock::Thread(thread_cpu_time())
        }
    }

    /// Microseconds since the start.
    pub fn micros(self) -> u64 {
        let d = match self {
            CpuClock::Thread(t0) => thread_cpu_time().saturating_sub(t0),
            CpuClock::Elapsed(t0) => t0.elapsed(),
        };
        d.as_micros().min(u128::from(u64::MAX)) as u64
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Pages this connection read from storage (page-cache misses) and wrote since the
/// last call; the counters restart at zero.
pub fn take_page_io(conn: &Connection) -> (u64, u64) {
    let take = |op: i32| {
        let (mut cur, mut hi) = (0i32, 0i32);
        // SAFETY: the handle is this open connection's; sqlite3_db_status only reads its
        // counters into the two owned integers (and resets them, as asked).
        let rc =
            unsafe { rusqlite::ffi::sqlite3_db_status(conn.handle(), op, &mut cur, &mut hi, 1) };
        if rc == rusqlite::ffi::SQLITE_OK {
            cur.max(0) as u64
        } else {
            0
        }
    };
    (
        take(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS),
        take(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let m = Meter::default();
        for _ in 0..90 {
            m.record_request(Duration::from_micros(400), 10, 20, false);
        }
        for _ in 0..10 {
            m.record_request(Duration::from_millis(40), 10, 20, true);
        }
        let u = m.take();
        assert_eq!(
            (u.requests, u.errors, u.bytes_in, u.bytes_out),
            (100, 10, 1000, 2000)
        );
        assert_eq!(u.latency_quantile_ms(0.5), 0.5);
        assert_eq!(u.latency_quantile_ms(0.95), 50.0);
        assert!((u.avg_latency_ms() - 4.36).abs() < 1e-9);
        assert!((u.error_rate() - 0.1).abs() < 1e-9);
        assert_eq!(m.take().requests, 0, "take restarts the counters");
    }

    #[test]
    fn pages_and_cpu_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);")
            .or_else(|_| {
                c.execute_batch("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) INSERT INTO t SELECT randomblob(1000) FROM n;")
            })
            .unwrap();
        let (_, written) = take_page_io(&c);
        assert!(written >= 40, "200 KB written as pages ({written})");
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(thread_cpu_time() > before);
    }
}

/// Requests per minute across the engine, and the busiest minute seen.
#[derive(Debug, Default)]
pub struct MinuteRate {
    minute: AtomicU64,
    count: AtomicU64,
    peak: AtomicU64,
}

impl MinuteRate {
    /// Count a request at unix second `now`.
    pub fn record(&self, now: u64) {
        let m = now / 60;
        let current = self.minute.load(Ordering::Relaxed);
        if current != m
            && self
                .minute
                .compare_exchange(current, m, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.count.swap(0, Ordering::Relaxed);
            self.peak.fetch_max(last, Ordering::Relaxed);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }

    /// The most requests seen in one minute since the engine started.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod minute_tests {
    use super::*;

    #[test]
    fn the_busiest_minute_is_kept() {
        let r = MinuteRate::default();
        for _ in 0..30 {
            r.record(600);
        }
        for _ in 0..10 {
            r.record(660);
        }
        assert_eq!(r.peak(), 30);
        for _ in 0..45 {
            r.record(725);
        }
        assert_eq!(r.peak(), 45);
    }
}
