//! What the workers record: calls, errors by kind, and a latency histogram
//! in microseconds. One instance is shared by all workers behind a mutex;
//! a record is a few counter bumps, far cheaper than the call it measures.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cli::MAX_DURATION;
use crate::error::{CallError, ErrorKind};

/// Significant figures the latency histogram keeps (0.1% resolution).
const SIGNIFICANT_FIGURES: u8 = 3;

/// The measured calls so far.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Calls that finished (with or without an error).
    pub(crate) calls: u64,
    /// Failed calls by kind.
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    /// Latency in µs of every call the server answered (see [`CallError::answered`]).
    pub(crate) latency_us: Histogram<u64>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// Slowest call.
    pub(crate) max: u64,
    /// Mean.
    pub(crate) mean: f64,
}

// === impl Stats ===

impl Stats {
    /// Empty statistics; latencies up to the longest timeout (1h) are kept
    /// exactly to 3 significant figures, longer ones are clamped.
    pub(crate) fn new() -> Self {
        let high = u64::try_from(MAX_DURATION.as_micros()).unwrap_or(u64::MAX);
        let latency_us = Histogram::new_with_bounds(1, high, SIGNIFICANT_FIGURES)
            .expect("static histogram bounds are valid");
        Self {
            calls: 0,
            errors: BTreeMap::new(),
            latency_us,
        }
    }

    /// Records one finished call and how long it took.
    pub(crate) fn record(&mut self, outcome: Result<(), &CallError>, took: Duration) {
        self.calls += 1;
        let answered = match outcome {
            Ok(()) => true,
            Err(e) => {
                *self.errors.entry(e.kind()).or_default() += 1;
                e.answered()
            }
        };
        if answered {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.latency_us.saturating_record(us.max(1));
        }
    }

    /// Errors of every kind.
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The latency summary (all zero when nothing was recorded).
    pub(crate) fn latency(&self) -> Latency {
        let h = &self.latency_us;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_only_for_answered_calls() {
        let mut s = Stats::new();
        s.record(Ok(()), Duration::from_micros(100));
        s.record(Err(&CallError::Tool), Duration::from_micros(300));
        let timeout = CallError::Timeout {
            timeout: Duration::from_secs(30),
        };
        s.record(Err(&timeout), Duration::from_secs(30));
        assert_eq!(s.calls, 3);
        assert_eq!(s.error_total(), 2);
        assert_eq!(s.errors[&ErrorKind::Tool], 1);
        assert_eq!(s.errors[&ErrorKind::Timeout], 1);
        let l = s.latency();
        assert_eq!(s.latency_us.len(), 2);
        assert!((100..=101).contains(&l.p50), "{l:?}");
        assert!((300..=301).contains(&l.max), "{l:?}");
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Stats::new().latency(), Latency::default());
    }
}
