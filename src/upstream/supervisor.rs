//! The supervision policy as a small state machine on tokio time: after a
//! connection or a connect attempt ends, how long to wait before the next
//! try, and whether a crash-looping child is parked (and until when).
//! [`Upstream::supervise`](super::Upstream::supervise) does the I/O and
//! publishes the states; every decision is made here, from the time it is
//! given, so paused-time tests walk them in milliseconds (like
//! `resilience/breaker.rs`).
//!
//! ```text
//!   connect ──ok──▶ Ready ──(lost after `lived`)──┐
//!      │                                          ▼
//!      └──(failed: Crash, CannotStart,  ──▶ a crash (child only) within
//!           Unreachable)                  park_window makes park_after?
//!                                            │no                 │yes
//!                                            ▼                   ▼
//!                      Retry after backoff.delay(n), n += 1   Park until now +
//!                      (full jitter; n = 0 again after a      park_duration,
//!                      connection that lived STABLE_AFTER)    then n = 0
//! ```
//! Only a child's crashes count toward parking (a lost connection, or a
//! started child that failed its handshake); a program that cannot start
//! and a remote upstream that is down are retried with backoff and never
//! parked (issue 13 items 9–11).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::UpstreamError;
use crate::config::SupervisionConfig;
use crate::resilience::Backoff;

/// Cap of the first pause before reconnecting; doubles per failure up to
/// [`MAX_BACKOFF`] (a child) or [`MAX_REMOTE_BACKOFF`] (a remote upstream).
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts to start a child.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest pause between attempts to reach a remote upstream: one that is
/// back is used again within about this long (issue 13 item 10).
const MAX_REMOTE_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How a failed connect attempt counts for supervision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// A child that started and then failed (exited, broke or timed out
    /// the handshake): counts toward parking.
    Crash,
    /// The program could not be started at all (not found, not
    /// executable): retried with backoff, never parked.
    CannotStart,
    /// A remote upstream that could not be reached or refused to
    /// initialize: retried with backoff capped at [`MAX_REMOTE_BACKOFF`],
    /// never parked.
    Unreachable,
}

impl Failure {
    /// The kind of `error`, from a remote upstream (`remote`) or a child.
    pub(super) fn of(error: &UpstreamError, remote: bool) -> Self {
        match error {
            _ if remote => Failure::Unreachable,
            UpstreamError::Spawn { .. } => Failure::CannotStart,
            _ => Failure::Crash,
        }
    }
}

/// What supervision does after a connection or an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again after `delay`.
    Retry {
        /// The pause before the next try.
        delay: Duration,
    },
    /// Crash-looping: hide the upstream and try again at `until`.
    Park {
        /// Crashes counted in the window.
        crashes: u32,
        /// When to try again (`park_duration` from now).
        until: Instant,
    },
}

/// One upstream's supervision policy: its backoff position, its failed
/// attempts since the last success and its recent crashes.
#[derive(Debug)]
pub(super) struct Supervisor {
    backoff: Backoff,
    /// Pauses since the backoff was last reset: the next one is
    /// `backoff.delay(retries)`.
    retries: u32,
    /// Failed attempts since the last success (`/readyz`, the state).
    attempt: u32,
    crashes: CrashWindow,
    park_duration: Duration,
    /// Remote upstreams are never parked.
    remote: bool,
}

impl Supervisor {
    /// The policy of an upstream supervised with `cfg`; `remote` for an
    /// HTTP upstream (backoff capped at [`MAX_REMOTE_BACKOFF`], never parked),
    /// otherwise a child (capped at [`MAX_BACKOFF`]).
    pub(super) fn new(cfg: &SupervisionConfig, remote: bool) -> Self {
        Self {
            backoff: Backoff {
                base: MIN_BACKOFF,
                multiplier: 2.0,
                max_delay: if remote {
                    MAX_REMOTE_BACKOFF
                } else {
                    MAX_BACKOFF
                },
                jitter: true,
            },
            retries: 0,
            attempt: 0,
            crashes: CrashWindow::new(cfg.park_window, cfg.park_after),
            park_duration: cfg.park_duration,
            remote,
        }
    }

    /// The longest pause between tries.
    pub(super) fn max_backoff(&self) -> Duration {
        self.backoff.max_delay
    }

    /// Failed attempts since the last success.
    pub(super) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A connection is ready: failed attempts start over.
    pub(super) fn connected(&mut self) {
        self.attempt = 0;
    }

    /// A ready connection ended at `now` after living `lived`: a child's
    /// exit is a crash; one that lived [`STABLE_AFTER`] resets the backoff.
    pub(super) fn lost(&mut self, now: Instant, lived: Duration) -> Next {
        if lived >= STABLE_AFTER {
            self.retries = 0;
        }
        self.next(now, !self.remote)
    }

    /// A connect attempt failed at `now` with `failure`.
    pub(super) fn failed(&mut self, now: Instant, failure: Failure) -> Next {
        self.attempt = self.attempt.saturating_add(1);
        self.next(now, failure == Failure::Crash)
    }

    fn next(&mut self, now: Instant, crashed: bool) -> Next {
        if crashed && let Some(crashes) = self.crashes.record(now) {
            // A parked upstream starts its backoff over when it tries again.
            self.retries = 0;
            return Next::Park {
                crashes,
                until: now + self.park_duration,
            };
        }
        let delay = self.backoff.delay(self.retries);
        self.retries = self.retries.saturating_add(1);
        Next::Retry { delay }
    }
}

/// The crashes within the last `window`; full at `limit` of them. Holds at
/// most `limit` instants (it empties when full).
#[derive(Debug)]
struct CrashWindow {
    window: Duration,
    limit: usize,
    at: VecDeque<Instant>,
}

impl CrashWindow {
    fn new(window: Duration, limit: u32) -> Self {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        Self {
            window,
            limit,
            at: VecDeque::new(),
        }
    }

    /// Records a crash at `now`; if that makes `limit` within the window,
    /// empties the window and returns how many there were.
    fn record(&mut self, now: Instant) -> Option<u32> {
        while self
            .at
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
        {
            self.at.pop_front();
        }
        self.at.push_back(now);
        if self.at.len() < self.limit {
            return None;
        }
        let count = u32::try_from(self.at.len()).unwrap_or(u32::MAX);
        self.at.clear();
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    fn cfg(park_after: u32) -> SupervisionConfig {
        SupervisionConfig {
            park_after,
            park_window: Duration::from_secs(60),
            park_duration: Duration::from_secs(30),
            ..SupervisionConfig::default()
        }
    }

    fn delay(next: Next) -> Duration {
        match next {
            Next::Retry { delay } => delay,
            Next::Park { .. } => panic!("parked: {next:?}"),
        }
    }

    /// The pauses of `n` failures in a row, each within its cap.
    fn pauses(s: &mut Supervisor, failure: Failure, n: u32) -> Vec<Duration> {
        (0..n)
            .map(|i| {
                let d = delay(s.failed(Instant::now(), failure));
                assert!(d <= s.backoff.cap(i), "pause {i}: {d:?}");
                d
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn park_after_crashes_within_the_window_parks_until_park_duration_from_now() {
        let mut s = Supervisor::new(&cfg(3), false);
        delay(s.failed(Instant::now(), Failure::Crash));
        // The first crash leaves the window: two more are not enough.
        advance(Duration::from_secs(61)).await;
        delay(s.lost(Instant::now(), Duration::from_secs(1)));
        advance(Duration::from_secs(59)).await;
        delay(s.failed(Instant::now(), Failure::Crash));
        advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(
            s.lost(now, Duration::from_secs(1)),
            Next::Park {
                crashes: 3,
                until: now + Duration::from_secs(30)
            }
        );
        // The window starts empty after a park.
        delay(s.failed(Instant::now(), Failure::Crash));
        delay(s.failed(Instant::now(), Failure::Crash));
        assert!(matches!(
            s.failed(Instant::now(), Failure::Crash),
            Next::Park { crashes: 3, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn park_after_1_parks_at_the_first_crash_and_0_counts_as_1() {
        for park_after in [0, 1] {
            let mut s = Supervisor::new(&cfg(park_after), false);
            assert!(matches!(
                s.lost(Instant::now(), Duration::from_secs(1)),
                Next::Park { crashes: 1, .. }
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_program_that_cannot_start_and_a_remote_that_is_down_are_never_parked() {
        let mut child = Supervisor::new(&cfg(2), false);
        let mut remote = Supervisor::new(&cfg(2), true);
        for _ in 0..100 {
            delay(child.failed(Instant::now(), Failure::CannotStart));
            delay(remote.failed(Instant::now(), Failure::Unreachable));
            delay(remote.lost(Instant::now(), Duration::from_secs(1)));
            advance(Duration::from_millis(10)).await;
        }
        assert_eq!(child.attempt(), 100);
        assert_eq!(remote.attempt(), 100);
        remote.connected();
        assert_eq!(remote.attempt(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_10s_for_a_child_and_1s_for_a_remote() {
        let mut child = Supervisor::new(&cfg(1000), false);
        let caps: Vec<u128> = (0..10).map(|n| child.backoff.cap(n).as_millis()).collect();
        assert_eq!(
            caps,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        pauses(&mut child, Failure::CannotStart, 10);
        let mut remote = Supervisor::new(&cfg(1000), true);
        assert_eq!(remote.max_backoff(), Duration::from_secs(1));
        let all = pauses(&mut remote, Failure::Unreachable, 50);
        assert!(all.iter().all(|d| *d <= Duration::from_secs(1)), "{all:?}");
    }

    /// Full jitter: a pause is anywhere in `[0, cap]` (the old supervisor
    /// drew from `[cap/2, cap]` only, so restarts of many children that
    /// failed together still came in a burst).
    #[tokio::test(start_paused = true)]
    async fn pauses_have_full_jitter() {
        let mut remote = Supervisor::new(&cfg(1000), true);
        let all = pauses(&mut remote, Failure::Unreachable, 400);
        let capped = &all[10..]; // cap 1 s from the 5th on
        let low = capped
            .iter()
            .filter(|d| **d < Duration::from_millis(500))
            .count();
        let high = capped.len() - low;
        assert!(low > 50 && high > 50, "low {low}, high {high}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_lived_30s_resets_the_backoff_a_shorter_one_does_not() {
        let mut s = Supervisor::new(&cfg(1000), false);
        pauses(&mut s, Failure::Crash, 6);
        s.connected();
        advance(Duration::from_secs(29)).await;
        let _ = s.lost(Instant::now(), Duration::from_secs(29));
        assert_eq!(s.retries, 7, "no reset after 29 s");
        s.connected();
        let d = delay(s.lost(Instant::now(), Duration::from_secs(30)));
        assert!(d <= MIN_BACKOFF, "{d:?}");
        assert_eq!(s.retries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_park_the_backoff_starts_over() {
        let mut s = Supervisor::new(&cfg(3), false);
        pauses(&mut s, Failure::CannotStart, 8);
        delay(s.failed(Instant::now(), Failure::Crash));
        delay(s.failed(Instant::now(), Failure::Crash));
        let Next::Park { until, .. } = s.failed(Instant::now(), Failure::Crash) else {
            panic!("not parked");
        };
        tokio::time::sleep_until(until).await;
        let d = delay(s.failed(Instant::now(), Failure::CannotStart));
        assert!(d <= MIN_BACKOFF, "{d:?}");
        assert_eq!(
            s.attempt(),
            12,
            "failed attempts still count until a success"
        );
    }
}
