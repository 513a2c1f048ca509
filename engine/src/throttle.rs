//! A throttle for a resource counted after the fact (pages of IO, bytes on the wire): a
//! token bucket that may go into debt. Work is charged with what it actually used, and
//! the next piece of work waits until the debt is repaid, so over any window the
//! throughput converges on the rate, plus at most one burst and one piece of work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A token bucket: `rate` tokens a second, `burst` at most, the level kept under a short
/// lock. The request-rate limiter and the debt throttles below share it.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens (negative in debt) as of the instant beside them.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full_at(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Tokens a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Tokens at most.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Refill to `now` (an earlier instant adds nothing), then set the level to what
    /// `take` makes of the refilled one, which it is given; returns the new level.
    pub fn update(&self, now: Instant, take: impl FnOnce(f64) -> f64) -> f64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let now = now.max(last);
        let refilled = (tokens + (now - last).as_secs_f64() * self.rate).min(self.burst);
        let left = take(refilled);
        *state = (left, now);
        left
    }

    /// The level at `now`.
    pub fn level(&self, now: Instant) -> f64 {
        self.update(now, |t| t)
    }
}

/// One resource's limit: `rate` units a second, up to `burst` saved up.
#[derive(Debug)]
pub struct Throttle {
    bucket: TokenBucket,
    charged: AtomicU64,
    throttled: AtomicU64,
    throttled_micros: AtomicU64,
}

/// What a throttle reports.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleReport {
    /// Units a second allowed.
    pub limit_per_second: u64,
    /// Units that may be used at once after an idle spell.
    pub burst: u64,
    /// Units used since the engine started.
    pub used: u64,
    /// Tokens now (negative while in debt).
    pub tokens: f64,
    /// Pieces of work that had to wait for the bucket.
    pub throttled: u64,
    /// Total time they waited, in milliseconds.
    pub throttled_millis: u64,
}

impl Throttle {
    /// A throttle of `rate` units a second with `burst` saved up at most (at least one
    /// unit); `None` for a rate of 0, which means unlimited.
    pub fn new(rate: u64, burst: u64) -> Option<Self> {
        Self::starting_at(rate, burst, Instant::now())
    }

    /// As [`Throttle::new`], with the bucket full at `now`.
    pub fn starting_at(rate: u64, burst: u64, now: Instant) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        Some(Throttle {
            bucket: TokenBucket::full_at(rate as f64, burst.max(1) as f64, now),
            charged: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            throttled_micros: AtomicU64::new(0),
        })
    }

    /// Take `units` used by work that just ran (the bucket may go into debt).
    pub fn charge_at(&self, units: u64, now: Instant) {
        if units == 0 {
            return;
        }
        self.charged.fetch_add(units, Ordering::Relaxed);
        self.bucket.update(now, |tokens| tokens - units as f64);
    }

    /// [`Throttle::charge_at`] now.
    pub fn charge(&self, units: u64) {
        self.charge_at(units, Instant::now());
    }

    /// How long work must wait at `now` before it may start: until the debt is repaid.
    pub fn wait_at(&self, now: Instant) -> Duration {
        let tokens = self.bucket.level(now);
        if tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-tokens / self.bucket.rate())
    }

    /// Record that work waited `d` for this throttle.
    pub fn note_wait(&self, d: Duration) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.throttled_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The throttle's figures now.
    pub fn report(&self) -> ThrottleReport {
        ThrottleReport {
            limit_per_second: self.bucket.rate() as u64,
            burst: self.bucket.burst() as u64,
            used: self.charged.load(Ordering::Relaxed),
            tokens: (self.bucket.level(Instant::now()) * 10.0).round() / 10.0,
            throttled: self.throttled.load(Ordering::Relaxed),
            throttled_millis: self.throttled_micros.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// The longest wait any of `throttles` asks for at `now`, noted on each that asked.
pub fn wait_for<'a>(throttles: impl IntoIterator<Item = &'a Throttle>, now: Instant) -> Duration {
    throttles
        .into_iter()
        .map(|t| {
            let d = t.wait_at(now);
            if !d.is_zero() {
                t.note_wait(d);
            }
            d
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_waits_until_its_debt_is_repaid() {
        let t0 = Instant::now();
        let t = Throttle::starting_at(200, 200, t0).unwrap();
        assert_eq!(
            t.wait_at(t0),
            Duration::ZERO,
            "a full bucket lets work start"
        );
        t.charge_at(300, t0);
        // 100 units of debt at 200/s: half a second.
        assert_eq!(t.wait_at(t0), Duration::from_millis(500));
        assert_eq!(t.wait_at(t0 + Duration::from_millis(500)), Duration::ZERO);
        assert!(Throttle::new(0, 10).is_none(), "a rate of 0 is no limit");
    }

    #[test]
    fn throughput_converges_on_the_rate() {
        // Work of 7 units that always waits its turn, for 10 simulated seconds: at most
        // rate × 10 + the burst + two pieces (the one in debt, and the last one started
        // before the end) gets through.
        let t0 = Instant::now();
        let t = Throttle::starting_at(200, 200, t0).unwrap();
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        let mut done = 0;
        while now < end {
            now += t.wait_at(now);
            t.charge_at(7, now);
            done += 7;
        }
        assert!(done <= 200 * 10 + 200 + 2 * 7, "{done}");
        assert!(done >= 200 * 10, "{done}");
    }
}
