//! Counters the gateway keeps about itself, shown on `/readyz` (the
//! labelled Prometheus series are in [`super::metrics`]): a fixed set
//! ([`Counter`]), one atomic each, so counting on the call path takes no
//! lock, formats nothing and allocates nothing. Disconnects are classified
//! by error kind — `io::ErrorKind` and hyper's error predicates, walked
//! through the `source()` chain — never by message text.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Defines [`Counter`] with its `/readyz` key per variant, and the list of
/// all of them.
macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident => $key:literal,)+) => {
        /// One counter `/readyz` shows under `"counters"`, keyed
        /// `group.name` ([`Counter::key`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($(#[$doc])* $variant,)+
        }

        impl Counter {
            /// Every counter, in declaration order (index = discriminant).
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];

            /// The `/readyz` key: `group.name`.
            pub const fn key(self) -> &'static str {
                match self {
                    $(Counter::$variant => $key,)+
                }
            }
        }
    };
}

counters! {
    /// A connection reset by the client.
    DisconnectReset => "disconnects.reset",
    /// A write to a client that had closed its side.
    DisconnectBrokenPipe => "disconnects.broken_pipe",
    /// A connection aborted.
    DisconnectAborted => "disconnects.aborted",
    /// A client that closed mid-message.
    DisconnectEof => "disconnects.eof",
    /// A slow or silent client (no request within `header_read_timeout`).
    DisconnectHeaderTimeout => "disconnects.header_timeout",
    /// Any other connection error.
    DisconnectOther => "disconnects.other",
    /// A client that left an SSE stream before its end.
    DisconnectStreamAbandoned => "disconnects.stream_abandoned",
    /// A connection refused at `max_connections`.
    DisconnectConnectionLimit => "disconnects.connection_limit",
    /// A session ended after `session_idle_timeout` without traffic.
    SessionsExpired => "sessions.expired",
    /// An idle session ended to make room (`max_sessions`).
    SessionsEvicted => "sessions.evicted",
    /// A stream resumed with `Last-Event-ID`.
    StreamsResumed => "streams.resumed",
    /// A client response that answered no pending server request.
    ResponsesIgnored => "responses.ignored",
    /// A call that succeeded.
    CallsSuccess => "calls.success",
    /// A call that failed transiently (after its retries).
    CallsTransient => "calls.transient",
    /// A call that failed for good.
    CallsPermanent => "calls.permanent",
    /// A call whose tool answered `isError: true`.
    CallsToolError => "calls.tool_error",
    /// A call answered degraded (by a fallback tool or as such).
    CallsDegraded => "calls.degraded",
    /// A call that may or may not have taken effect upstream.
    CallsOutcomeUnknown => "calls.outcome_unknown",
    /// A call the client cancelled (or whose session ended).
    CallsCancelled => "calls.cancelled",
    /// A retried attempt.
    CallsRetried => "calls.retried",
    /// A retryable failure not retried: the retry budget was spent.
    CallsRetryBudgetExhausted => "calls.retry_budget_exhausted",
    /// A call refused by a tool's rate limit.
    CallsRateLimited => "calls.rate_limited",
    /// A call refused by a full bulkhead.
    CallsBulkheadFull => "calls.bulkhead_full",
    /// A call failed fast by an open breaker.
    CallsBreakerOpen => "calls.breaker_open",
    /// A call cancelled because nobody resumed its stream in time.
    CallsAbandoned => "calls.abandoned",
    /// A failed call answered from the stale cache.
    CallsStale => "calls.stale",
}

/// Number of counters.
const COUNTERS: usize = Counter::ALL.len();

/// Why a downstream connection ended with an error (see
/// [`disconnect_cause`]), or was ended by Ballast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// `ConnectionReset`.
    Reset,
    /// `BrokenPipe`.
    BrokenPipe,
    /// `ConnectionAborted`.
    Aborted,
    /// Closed mid-message (`UnexpectedEof`, an incomplete HTTP message).
    Eof,
    /// A slow or silent client.
    HeaderTimeout,
    /// Anything else.
    Other,
    /// A client left an SSE stream before its end.
    StreamAbandoned,
    /// Refused at the connection limit.
    ConnectionLimit,
}

impl Disconnect {
    /// The cause's name, as in the `cause` label of
    /// `ballast_downstream_disconnects_total` and the `/readyz` key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Disconnect::Reset => "reset",
            Disconnect::BrokenPipe => "broken_pipe",
            Disconnect::Aborted => "aborted",
            Disconnect::Eof => "eof",
            Disconnect::HeaderTimeout => "header_timeout",
            Disconnect::Other => "other",
            Disconnect::StreamAbandoned => "stream_abandoned",
            Disconnect::ConnectionLimit => "connection_limit",
        }
    }

    /// Its `/readyz` counter.
    pub const fn counter(self) -> Counter {
        match self {
            Disconnect::Reset => Counter::DisconnectReset,
            Disconnect::BrokenPipe => Counter::DisconnectBrokenPipe,
            Disconnect::Aborted => Counter::DisconnectAborted,
            Disconnect::Eof => Counter::DisconnectEof,
            Disconnect::HeaderTimeout => Counter::DisconnectHeaderTimeout,
            Disconnect::Other => Counter::DisconnectOther,
            Disconnect::StreamAbandoned => Counter::DisconnectStreamAbandoned,
            Disconnect::ConnectionLimit => Counter::DisconnectConnectionLimit,
        }
    }
}

/// The gateway's counters: one relaxed atomic per [`Counter`].
pub struct Stats {
    counts: [AtomicU64; COUNTERS],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    /// Counts one disconnect of `cause` (also in the metrics registry).
    pub fn disconnect(&self, cause: Disconnect) {
        super::metrics::disconnect(cause.as_str());
        self.count(cause.counter());
    }

    /// Counts one event.
    pub fn count(&self, counter: Counter) {
        self.counts[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters counted at least once: key → count (the
    /// `/readyz` `"counters"` object; a counter never counted is absent).
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .filter_map(|&c| {
                let n = self.get(c);
                (n > 0).then_some((c.key(), n))
            })
            .collect()
    }

    /// One counter's value (0 if never counted).
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }
}

/// Why a downstream connection ended with an error, by kind:
/// `reset`, `broken_pipe`, `aborted`, `eof` (closed mid-message),
/// `header_timeout` (slow or silent client), `other`.
pub fn disconnect_cause(err: &(dyn StdError + 'static)) -> Disconnect {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset => Disconnect::Reset,
                io::ErrorKind::BrokenPipe => Disconnect::BrokenPipe,
                io::ErrorKind::ConnectionAborted => Disconnect::Aborted,
                io::ErrorKind::UnexpectedEof => Disconnect::Eof,
                io::ErrorKind::TimedOut => Disconnect::HeaderTimeout,
                _ => Disconnect::Other,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Disconnect::HeaderTimeout;
            }
            if h.is_incomplete_message() {
                return Disconnect::Eof;
            }
        }
        cur = e.source();
    }
    Disconnect::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn causes_come_from_error_kinds_through_the_source_chain() {
        let cases = [
            (io::ErrorKind::ConnectionReset, "reset"),
            (io::ErrorKind::BrokenPipe, "broken_pipe"),
            (io::ErrorKind::ConnectionAborted, "aborted"),
            (io::ErrorKind::UnexpectedEof, "eof"),
            (io::ErrorKind::Other, "other"),
        ];
        for (kind, cause) in cases {
            // The message says "broken pipe" every time: only the kind counts.
            let e = Wrapper(io::Error::new(kind, "broken pipe"));
            assert_eq!(disconnect_cause(&e).as_str(), cause);
        }
    }

    #[test]
    fn counters_accumulate() {
        let s = Stats::default();
        s.disconnect(Disconnect::Reset);
        s.disconnect(Disconnect::Reset);
        s.count(Counter::SessionsExpired);
        assert_eq!(s.get(Counter::DisconnectReset), 2);
        assert_eq!(s.get(Counter::SessionsExpired), 1);
        assert_eq!(s.get(Counter::DisconnectEof), 0);
    }

    /// `/readyz` keeps the keys it showed when counters were named by
    /// strings at each call site (tests and dashboards read them).
    #[test]
    fn readyz_keys_are_the_ones_it_always_showed() {
        let keys: Vec<&str> = Counter::ALL.iter().map(|c| c.key()).collect();
        let expected = [
            "disconnects.reset",
            "disconnects.broken_pipe",
            "disconnects.aborted",
            "disconnects.eof",
            "disconnects.header_timeout",
            "disconnects.other",
            "disconnects.stream_abandoned",
            "disconnects.connection_limit",
            "sessions.expired",
            "sessions.evicted",
            "streams.resumed",
            "responses.ignored",
            "calls.success",
            "calls.transient",
            "calls.permanent",
            "calls.tool_error",
            "calls.degraded",
            "calls.outcome_unknown",
            "calls.cancelled",
            "calls.retried",
            "calls.retry_budget_exhausted",
            "calls.rate_limited",
            "calls.bulkhead_full",
            "calls.breaker_open",
            "calls.abandoned",
            "calls.stale",
        ];
        assert_eq!(keys, expected);
        // Index = discriminant, so each counter has its own atomic.
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
        // The disconnect keys are `disconnects.<cause>`: the same names as
        // the metrics label.
        for d in [
            Disconnect::Reset,
            Disconnect::BrokenPipe,
            Disconnect::Aborted,
            Disconnect::Eof,
            Disconnect::HeaderTimeout,
            Disconnect::Other,
            Disconnect::StreamAbandoned,
            Disconnect::ConnectionLimit,
        ] {
            assert_eq!(d.counter().key(), format!("disconnects.{}", d.as_str()));
        }
    }

    #[test]
    fn the_snapshot_shows_only_what_was_counted() {
        let s = Stats::default();
        assert!(s.snapshot().is_empty());
        s.count(Counter::CallsStale);
        s.disconnect(Disconnect::Eof);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2, "{snap:?}");
        assert_eq!(snap["calls.stale"], 1);
        assert_eq!(snap["disconnects.eof"], 1);
    }

    #[test]
    fn concurrent_counting_loses_nothing() {
        let s = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        s.count(Counter::CallsSuccess);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(s.get(Counter::CallsSuccess), 40_000);
    }
}
