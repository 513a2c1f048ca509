//! The tenant's request rate (DESIGN §3: requests per hour with a burst) as a token
//! bucket: `burst` tokens at most, refilled at `per_hour / 3600` per second. Data-plane
//! requests past it get 429 with `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

use std::time::{Duration, Instant};

use crate::throttle::TokenBucket;

/// What the bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may run.
    pub allowed: bool,
    /// Bucket capacity (the burst).
    pub limit: u32,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next token (0 when allowed).
    pub retry_after_secs: u64,
}

/// A token bucket; `check` is O(1) under a short lock.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: TokenBucket,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_hour` an hour. `None` when
    /// `per_hour` is 0 (no limit). A burst of 0 is taken as 1, so some request can pass.
    pub fn new(per_hour: u32, burst: u32) -> Option<Self> {
        Self::starting_at(per_hour, burst, Instant::now())
    }

    /// The data-plane limiter for a tier's limits (`None` when no rate is set).
    pub fn for_limits(limits: &crate::config::EngineLimits) -> Option<Self> {
        let per_hour = limits.requests_per_hour?;
        Self::new(per_hour, limits.burst.unwrap_or(per_hour))
    }

    /// As [`RateLimiter::new`], with the clock starting at `now` (for tests).
    pub fn starting_at(per_hour: u32, burst: u32, now: Instant) -> Option<Self> {
        if per_hour == 0 {
            return None;
        }
        Some(RateLimiter {
            bucket: TokenBucket::full_at(
                f64::from(per_hour) / 3600.0,
                f64::from(burst.max(1)),
                now,
            ),
        })
    }

    /// Take a token now.
    pub fn check(&self) -> Decision {
        self.check_at(Instant::now())
    }

    /// Take a token at `now` if one is there.
    pub fn check_at(&self, now: Instant) -> Decision {
        let mut allowed = false;
        let tokens = self.bucket.update(now, |tokens| {
            allowed = tokens >= 1.0;
            if allowed {
                tokens - 1.0
            } else {
                tokens
            }
        });
        let (per_sec, capacity) = (self.bucket.rate(), self.bucket.burst());
        let secs = |t: f64| {
            Duration::from_secs_f64((t / per_sec).max(0.0))
                .as_secs_f64()
                .ceil() as u64
        };
        Decision {
            allowed,
            limit: capacity as u32,
            remaining: tokens.floor() as u32,
            reset_secs: secs(capacity - tokens),
            retry_after_secs: if allowed { 0 } else { secs(1.0 - tokens) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_burst_passes_at_once_then_the_rate_refills() {
        let t0 = Instant::now();
        let rl = RateLimiter::starting_at(1000, 50, t0).unwrap();
        let passed = (0..200).filter(|_| rl.check_at(t0).allowed).count();
        assert_eq!(passed, 50, "exactly the burst at once");
        let d = rl.check_at(t0);
        assert!(!d.allowed);
        assert_eq!((d.limit, d.remaining), (50, 0));
        assert_eq!(d.retry_after_secs, 4, "one token every 3.6 s");
        assert_eq!(d.reset_secs, 180, "50 tokens take 180 s");
        // Over the next hour, one request a second: the rate lets through 1000 per hour.
        let mut passed = 0;
        for s in 1..=3600 {
            if rl.check_at(t0 + Duration::from_secs(s)).allowed {
                passed += 1;
            }
        }
        let error = (passed as f64 - 1000.0).abs() / 1000.0;
        assert!(error <= 0.05, "refill {passed}/h is within 5% of 1000/h");
    }

    #[test]
    fn zero_means_unlimited_and_time_never_runs_backwards() {
        assert!(RateLimiter::new(0, 10).is_none());
        let t0 = Instant::now();
        let rl = RateLimiter::starting_at(3600, 1, t0 + Duration::from_secs(10)).unwrap();
        assert!(rl.check_at(t0 + Duration::from_secs(10)).allowed);
        assert!(
            !rl.check_at(t0).allowed,
            "an earlier instant adds no tokens"
        );
        assert!(rl.check_at(t0 + Duration::from_secs(11)).allowed);
    }
}
