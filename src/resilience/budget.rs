//! A retry budget (tower `retry/budget` explains why counts alone storm):
//! every call deposits `ratio` of a token, every retry withdraws one, and a
//! floor of `min_per_sec` retries per second is always allowed. Tokens
//! older than a 10 s window expire, so a quiet period does not bank an
//! unbounded burst of retries. Driven by tokio time (paused-time tests).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long deposits count.
const WINDOW: Duration = Duration::from_secs(10);

/// Retries allowed ≤ `ratio` × calls (over the last 10 s) + `min_per_sec`
/// per second.
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    state: Mutex<State>,
}

struct State {
    /// (time, calls) deposits in the window.
    calls: VecDeque<(Instant, u64)>,
    /// Retry times in the window.
    retries: VecDeque<Instant>,
}

impl RetryBudget {
    /// A budget; `ratio` ≥ 0.0 (e.g. 0.2 = retries ≤ 20 % of calls),
    /// `min_per_sec` ≥ 0.0.
    pub fn new(ratio: f64, min_per_sec: f64) -> Self {
        Self {
            ratio: ratio.max(0.0),
            min_per_sec: min_per_sec.max(0.0),
            state: Mutex::new(State {
                calls: VecDeque::new(),
                retries: VecDeque::new(),
            }),
        }
    }

    /// Records one call.
    pub fn deposit(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        s.expire(now);
        match s.calls.back_mut() {
            Some((t, n)) if *t == now => *n += 1,
            _ => s.calls.push_back((now, 1)),
        }
    }

    /// Takes one retry from the budget; false if it is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        s.expire(now);
        let calls: u64 = s.calls.iter().map(|(_, n)| n).sum();
        let allowed = self.ratio * calls as f64 + self.min_per_sec * WINDOW.as_secs_f64();
        if (s.retries.len() as f64) < allowed.floor() {
            s.retries.push_back(now);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn expire(&mut self, now: Instant) {
        while self
            .calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.calls.pop_front();
        }
        while self
            .retries
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.retries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_the_ratio_of_calls_and_recover_with_time() {
        let b = RetryBudget::new(0.2, 0.0);
        for _ in 0..50 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10, "20 % of 50 calls");
        tokio::time::advance(WINDOW).await;
        assert!(!b.try_withdraw(), "old calls no longer count");
        b.deposit();
        for _ in 0..4 {
            b.deposit();
        }
        assert!(b.try_withdraw(), "5 new calls buy one retry");
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_a_few_retries_without_traffic() {
        let b = RetryBudget::new(0.0, 0.5);
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 5, "0.5/s over a 10 s window");
    }
}
