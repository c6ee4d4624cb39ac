//! Exponential backoff with full jitter (AWS architecture blog, "Exponential
//! Backoff And Jitter"): the n-th retry waits a uniformly random time in
//! `[0, min(max_delay, base × multiplier^n)]`. Jitter can be turned off for
//! deterministic tests (then the wait is the cap itself).

use std::time::Duration;

use rand::RngExt;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Cap of the first retry's wait.
    pub base: Duration,
    /// Growth per retry; must be ≥ 1.0.
    pub multiplier: f64,
    /// Largest wait.
    pub max_delay: Duration,
    /// Full jitter (true) or the cap itself (false, for tests).
    pub jitter: bool,
}

impl Backoff {
    /// The cap for retry `n` (0-based): `min(max_delay, base × multiplier^n)`.
    pub fn cap(&self, n: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(n).unwrap_or(i32::MAX));
        let secs = self.base.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before retry `n`.
    pub fn delay(&self, n: u32) -> Duration {
        let cap = self.cap(n);
        if self.jitter && !cap.is_zero() {
            cap.mul_f64(rand::rng().random_range(0.0..=1.0))
        } else {
            cap
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sequence_doubles_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_millis(500),
            jitter: false,
        };
        let got: Vec<u128> = (0..5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
    }

    proptest! {
        #[test]
        fn delays_are_monotone_until_the_cap_and_never_exceed_it(
            base_ms in 0u64..10_000,
            multiplier in 1.0f64..8.0,
            max_ms in 0u64..120_000,
            jitter in any::<bool>(),
        ) {
            let b = Backoff {
                base: Duration::from_millis(base_ms),
                multiplier,
                max_delay: Duration::from_millis(max_ms),
                jitter,
            };
            let mut prev = Duration::ZERO;
            for n in 0..64 {
                let cap = b.cap(n);
                prop_assert!(cap <= b.max_delay);
                prop_assert!(cap >= prev, "cap shrank at {n}");
                prop_assert!(b.delay(n) <= cap);
                prev = cap;
            }
        }
    }
}
