//! Rate limits: a token bucket per key (a session, or a tool), from
//! governor. Over the limit, the caller learns how long to wait. With a
//! shared tier ([`super::SharedRateLimit`]) the buckets count every
//! replica's calls; when that tier is unreachable the local bucket decides.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed token bucket: `per_sec` tokens per second, bursts of `burst`.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    per_sec: f64,
    burst: u32,
    /// The shared tier and this limit's namespace in it.
    shared: Option<(Arc<dyn super::SharedRateLimit>, String)>,
}

impl RateLimit {
    /// `None` when `per_sec` is not positive (no limit).
    pub fn new(per_sec: f64, burst: u32) -> Option<Self> {
        if per_sec.is_nan() || per_sec <= 0.0 {
            return None;
        }
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / per_sec))?
            .allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            per_sec,
            burst: burst.max(1),
            shared: None,
        })
    }

    /// Counts in buckets shared by replicas, under `namespace`.
    #[must_use]
    pub fn with_shared(mut self, shared: Arc<dyn super::SharedRateLimit>, namespace: &str) -> Self {
        self.shared = Some((shared, namespace.to_owned()));
        self
    }

    /// Takes a token for `key` (from the shared bucket when there is one
    /// and it answers, else from the local one).
    ///
    /// # Errors
    /// How long until the next token, when the bucket is empty.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if let Some((shared, namespace)) = &self.shared
            && let Ok(verdict) = shared
                .check(&format!("{namespace}:{key}"), self.per_sec, self.burst)
                .await
        {
            return verdict;
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets are full again (call periodically, or the
    /// map grows with every key ever seen — DEPENDENCIES.md).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_then_the_caller_is_told_how_long_to_wait() {
        let r = RateLimit::new(1.0, 3).expect("limit");
        for _ in 0..3 {
            assert!(r.check("s").await.is_ok());
        }
        let wait = r.check("s").await.expect_err("over the limit");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(r.check("other").await.is_ok(), "keys are independent");
        assert!(RateLimit::new(0.0, 1).is_none());
    }
}
