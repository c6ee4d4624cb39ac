//! A circuit breaker as a readable state machine, driven by tokio time so
//! paused-time tests can walk every transition (DEPENDENCIES.md explains why
//! not a crate; cf. linkerd's `consecutive_failures.rs`).
//!
//! ```text
//!   Closed ──(N consecutive failures, or failure rate ≥ R over ≥ M calls
//!    ▲          in the sliding window)──▶ Open ──(open_duration)──▶ HalfOpen
//!    │                                     ▲                          │
//!    └──────────(a probe succeeds)─────────┼──(a probe fails)─────────┘
//! ```
//! In `HalfOpen` at most `half_open_probes` calls run at once; the rest fail
//! fast like `Open`. What counts as a failure is the caller's decision
//! (transient and outcome-unknown failures: the upstream is unhealthy).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;
use crate::config::BreakerConfig;
use crate::observe::metrics;

/// Why a call was refused without being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// Which breaker: `upstream:<name>` or `tool:<upstream>/<tool>`.
    pub breaker: String,
    /// Why it opened: `consecutive_failures` or `failure_rate`.
    pub reason: &'static str,
    /// How long until it lets a probe through, in ms.
    pub retry_after_ms: u64,
}

/// One circuit breaker.
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Closed {
        /// Outcomes of recent calls, within `cfg.window`.
        window: Window,
        consecutive: u32,
    },
    Open {
        until: Instant,
        reason: &'static str,
    },
    HalfOpen {
        probes: u32,
        reason: &'static str,
    },
}

/// Permission to make one call; report its outcome with [`Permit::record`].
/// Dropped without a record (the call was cancelled), it counts as nothing.
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    recorded: bool,
}

/// A breaker's state, for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast.
    Open,
    /// A few probe calls flow.
    HalfOpen,
}

impl Breaker {
    /// A closed breaker named `name`.
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Arc<Self> {
        let name = name.into();
        metrics::breaker_transition(&name, "closed");
        let window = Window::new(cfg.window);
        Arc::new(Self {
            name,
            cfg,
            state: Mutex::new(State::Closed {
                window,
                consecutive: 0,
            }),
        })
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until, .. } if Instant::now() >= *until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call.
    ///
    /// # Errors
    /// [`BreakerOpen`] when open, or half-open with all probe slots taken.
    pub fn acquire(self: &Arc<Self>) -> Result<Permit, BreakerOpen> {
        if !self.cfg.enabled {
            return Ok(self.permit(false));
        }
        let now = Instant::now();
        let mut state = self.lock();
        if let State::Open { until, reason } = *state
            && now >= until
        {
            tracing::info!(breaker = %self.name, "circuit half-open: letting a probe through");
            *state = State::HalfOpen { probes: 0, reason };
            metrics::breaker_transition(&self.name, "half_open");
        }
        match &mut *state {
            State::Closed { .. } => Ok(self.permit(false)),
            State::HalfOpen { probes, .. } if *probes < self.cfg.half_open_probes.max(1) => {
                *probes += 1;
                Ok(self.permit(true))
            }
            State::HalfOpen { reason, .. } => Err(self.refusal(reason, Duration::ZERO)),
            State::Open { until, reason } => Err(self.refusal(reason, until.duration_since(now))),
        }
    }

    fn permit(self: &Arc<Self>, probe: bool) -> Permit {
        Permit {
            breaker: self.clone(),
            probe,
            recorded: false,
        }
    }

    fn refusal(&self, reason: &'static str, wait: Duration) -> BreakerOpen {
        BreakerOpen {
            breaker: self.name.clone(),
            reason,
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn on_outcome(&self, probe: bool, failed: bool) {
        if !self.cfg.enabled {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        let open = |reason| State::Open {
            until: now + self.cfg.open_duration,
            reason,
        };
        match &mut *state {
            State::HalfOpen { reason, .. } if probe => {
                if failed {
                    tracing::warn!(breaker = %self.name, "circuit re-opened: the probe failed");
                    *state = open(reason);
                    metrics::breaker_transition(&self.name, "open");
                } else {
                    tracing::info!(breaker = %self.name, "circuit closed: the probe succeeded");
                    *state = State::Closed {
                        window: Window::new(self.cfg.window),
                        consecutive: 0,
                    };
                    metrics::breaker_transition(&self.name, "closed");
                }
            }
            State::Closed {
                window,
                consecutive,
            } => {
                window.record(now, failed);
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let (calls, failures) = window.counts();
                let rate = failures as f64 / calls.max(1) as f64;
                let reason = if *consecutive >= self.cfg.consecutive_failures.max(1) {
                    Some("consecutive_failures")
                } else if calls >= u64::from(self.cfg.min_calls) && rate >= self.cfg.failure_rate {
                    Some("failure_rate")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    tracing::warn!(breaker = %self.name, reason, "circuit opened");
                    *state = open(reason);
                    metrics::breaker_transition(&self.name, "open");
                }
            }
            // Outcomes of calls let through before the state changed.
            _ => {}
        }
    }

    /// Records an outcome seen outside a call — a health probe of the
    /// upstream (`failed`: no answer in time). It counts toward opening a
    /// closed breaker like a call's outcome; an open or half-open breaker
    /// is left to the calls and probes it lets through.
    pub fn observe(&self, failed: bool) {
        self.on_outcome(false, failed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Permit {
    /// Reports the call's outcome (`failed`: transient or outcome unknown).
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        self.breaker.on_outcome(self.probe, failed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded && self.probe {
            // A cancelled probe frees its slot without deciding anything.
            if let State::HalfOpen { probes, .. } = &mut *self.breaker.lock() {
                *probes = probes.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            open_duration: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }

    fn call(b: &Arc<Breaker>, failed: bool) {
        b.acquire().expect("closed").record(failed);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_then_half_open_then_close() {
        let b = Breaker::new("upstream:x", cfg());
        call(&b, true);
        call(&b, true);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, true);
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.acquire().err().expect("open");
        assert_eq!(refused.reason, "consecutive_failures");
        assert_eq!(refused.retry_after_ms, 10_000);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire().expect("a probe");
        assert!(b.acquire().is_err(), "one probe at a time");
        probe.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = Breaker::new("upstream:x", cfg());
        (0..3).for_each(|_| call(&b, true));
        tokio::time::advance(Duration::from_secs(10)).await;
        b.acquire().expect("probe").record(true);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire().err().map(|e| e.retry_after_ms), Some(10_000));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_opens_only_past_min_calls_and_old_calls_leave_the_window() {
        let b = Breaker::new("upstream:x", cfg());
        // Alternating: never 3 in a row, rate 50 %.
        for i in 0..9 {
            call(&b, i % 2 == 0);
        }
        assert_eq!(b.state(), BreakerState::Closed, "9 calls < min_calls");
        tokio::time::advance(Duration::from_secs(31)).await;
        call(&b, true);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the old calls left the window"
        );
        for i in 0..9 {
            call(&b, i % 2 == 1);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire().err().map(|e| e.reason), Some("failure_rate"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_its_slot() {
        let b = Breaker::new("upstream:x", cfg());
        (0..3).for_each(|_| call(&b, true));
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.acquire().expect("probe"));
        assert!(b.acquire().is_ok(), "slot freed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_breaker_never_opens() {
        let b = Breaker::new(
            "upstream:x",
            BreakerConfig {
                enabled: false,
                ..cfg()
            },
        );
        (0..50).for_each(|_| call(&b, true));
        assert!(b.acquire().is_ok());
    }
}
