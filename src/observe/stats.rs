//! Counters the gateway keeps about itself, shown on `/readyz` (the
//! labelled Prometheus series are in [`super::metrics`]). Disconnects are classified by
//! error kind — `io::ErrorKind` and hyper's error predicates, walked through
//! the `source()` chain — never by message text.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io;
use std::sync::Mutex;

/// Counters, by name.
#[derive(Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts one disconnect of `cause` (see [`disconnect_cause`]).
    pub fn disconnect(&self, cause: &'static str) {
        super::metrics::disconnect(cause);
        self.add("disconnects", cause);
    }

    /// Counts one event `name` in `group` (e.g. `sessions`, `expired`).
    pub fn add(&self, group: &'static str, name: &'static str) {
        let key = leak_key(group, name);
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }

    /// A snapshot: `group.name` → count.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One counter's value (0 if never counted).
    pub fn get(&self, group: &str, name: &str) -> u64 {
        let key = format!("{group}.{name}");
        self.snapshot()
            .iter()
            .find(|(k, _)| **k == key)
            .map_or(0, |(_, v)| *v)
    }
}

/// Interns `group.name` keys (a small fixed set: causes and event names).
fn leak_key(group: &'static str, name: &'static str) -> &'static str {
    static KEYS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let key = format!("{group}.{name}");
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = keys.iter().find(|k| **k == key) {
        return k;
    }
    let k: &'static str = Box::leak(key.into_boxed_str());
    keys.push(k);
    k
}

/// Why a downstream connection ended with an error, by kind:
/// `reset`, `broken_pipe`, `aborted`, `eof` (closed mid-message),
/// `header_timeout` (slow or silent client), `other`.
pub fn disconnect_cause(err: &(dyn StdError + 'static)) -> &'static str {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset => "reset",
                io::ErrorKind::BrokenPipe => "broken_pipe",
                io::ErrorKind::ConnectionAborted => "aborted",
                io::ErrorKind::UnexpectedEof => "eof",
                io::ErrorKind::TimedOut => "header_timeout",
                _ => "other",
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return "header_timeout";
            }
            if h.is_incomplete_message() {
                return "eof";
            }
        }
        cur = e.source();
    }
    "other"
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
            assert_eq!(disconnect_cause(&e), cause);
        }
    }

    #[test]
    fn counters_accumulate() {
        let s = Stats::default();
        s.disconnect("reset");
        s.disconnect("reset");
        s.add("sessions", "expired");
        assert_eq!(s.get("disconnects", "reset"), 2);
        assert_eq!(s.get("sessions", "expired"), 1);
        assert_eq!(s.get("disconnects", "eof"), 0);
    }
}
