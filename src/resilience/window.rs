//! A sliding window of call outcomes in constant time per call: counts in
//! [`BUCKETS`] time buckets, with running totals, so a breaker can ask for
//! the failure rate over its window without walking every call in it (at
//! thousands of calls per second a 30 s window holds ~10⁵ calls). A call
//! leaves the window with its bucket, up to `window / BUCKETS` early.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window.
pub(super) const BUCKETS: u32 = 20;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    total: u32,
    failed: u32,
}

/// Call outcomes within the last `window`.
#[derive(Debug)]
pub(super) struct Window {
    window: Duration,
    width: Duration,
    buckets: VecDeque<Bucket>,
    total: u64,
    failed: u64,
}

impl Window {
    /// An empty window of length `window`.
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            width: (window / BUCKETS).max(Duration::from_millis(1)),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            total: 0,
            failed: 0,
        }
    }

    /// Records one outcome at `now`.
    pub(super) fn record(&mut self, now: Instant, failed: bool) {
        self.evict(now);
        let fresh = self
            .buckets
            .back()
            .is_some_and(|b| now.duration_since(b.start) < self.width);
        if !fresh {
            self.buckets.push_back(Bucket {
                start: now,
                total: 0,
                failed: 0,
            });
        }
        if let Some(b) = self.buckets.back_mut() {
            b.total += 1;
            b.failed += u32::from(failed);
        }
        self.total += 1;
        self.failed += u64::from(failed);
    }

    /// (calls, failures) within the window as of the last `record`.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.total, self.failed)
    }

    fn evict(&mut self, now: Instant) {
        while let Some(b) = self.buckets.front()
            && now.duration_since(b.start) > self.window
        {
            self.total -= u64::from(b.total);
            self.failed -= u64::from(b.failed);
            self.buckets.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_slide_with_time_and_stay_bounded() {
        let mut w = Window::new(Duration::from_secs(10));
        for i in 0..1000 {
            w.record(Instant::now(), i % 4 == 0);
        }
        assert_eq!(w.counts(), (1000, 250));
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Instant::now(), true);
        assert_eq!(w.counts(), (1001, 251));
        tokio::time::advance(Duration::from_secs(6)).await;
        w.record(Instant::now(), false);
        assert_eq!(w.counts(), (2, 1), "the first 1000 left with their bucket");
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            w.record(Instant::now(), false);
        }
        assert!(
            w.buckets.len() <= BUCKETS as usize + 1,
            "{}",
            w.buckets.len()
        );
    }
}
