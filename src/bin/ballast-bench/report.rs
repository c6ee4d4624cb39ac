//! The results of a run, as a readable table or as one JSON line with
//! stable keys: `calls`, `errors` (kind → count), `error_total`,
//! `duration_s`, `throughput` (calls/s), `latency_us` {`p50`, `p90`, `p99`,
//! `max`, `mean`}, `concurrency`, `sessions`, `tool`, `url`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::stats::Stats;

/// A finished run.
#[derive(Debug)]
pub(crate) struct Report {
    /// What was measured.
    pub(crate) stats: Stats,
    /// Wall time of the measured phase (after the warm-up).
    pub(crate) elapsed: Duration,
    /// Workers.
    pub(crate) concurrency: u32,
    /// Sessions opened.
    pub(crate) sessions: u32,
    /// Whether the server gave no session ids (stateless).
    pub(crate) stateless: bool,
    /// The tool called.
    pub(crate) tool: String,
    /// The endpoint.
    pub(crate) url: String,
}

// === impl Report ===

impl Report {
    /// Finished calls per second of the measured phase.
    pub(crate) fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            // Precision loss only above 2^53 calls, far beyond the 100M cap.
            #[allow(clippy::cast_precision_loss)]
            let calls = self.stats.calls as f64;
            calls / secs
        } else {
            0.0
        }
    }

    /// The one-line JSON form (`--json`).
    pub(crate) fn to_json(&self) -> String {
        let errors: serde_json::Map<String, serde_json::Value> = self
            .stats
            .errors
            .iter()
            .map(|(kind, n)| (kind.to_string(), json!(n)))
            .collect();
        let l = self.stats.latency();
        json!({
            "calls": self.stats.calls,
            "errors": errors,
            "error_total": self.stats.error_total(),
            "duration_s": round3(self.elapsed.as_secs_f64()),
            "throughput": round3(self.throughput()),
            "latency_us": { "p50": l.p50, "p90": l.p90, "p99": l.p99, "max": l.max, "mean": round3(l.mean) },
            "concurrency": self.concurrency,
            "sessions": self.sessions,
            "tool": self.tool,
            "url": self.url,
        })
        .to_string()
    }

    /// The readable table.
    pub(crate) fn to_table(&self) -> String {
        let l = self.stats.latency();
        let sessions = if self.stateless {
            format!("{} (stateless server: no session ids)", self.sessions)
        } else {
            self.sessions.to_string()
        };
        let mut t = String::new();
        let _ = writeln!(t, "url          {}", self.url);
        let _ = writeln!(t, "tool         {}", self.tool);
        let _ = writeln!(t, "concurrency  {}", self.concurrency);
        let _ = writeln!(t, "sessions     {sessions}");
        let _ = writeln!(t, "duration     {:.3} s", self.elapsed.as_secs_f64());
        let _ = writeln!(t, "calls        {}", self.stats.calls);
        let _ = writeln!(t, "throughput   {:.1} calls/s", self.throughput());
        let _ = writeln!(
            t,
            "latency (µs) p50 {}  p90 {}  p99 {}  max {}  mean {:.1}",
            l.p50, l.p90, l.p99, l.max, l.mean
        );
        let _ = writeln!(t, "errors       {}", self.stats.error_total());
        for (kind, n) in &self.stats.errors {
            let _ = writeln!(t, "  {kind:<22} {n}");
        }
        t
    }
}

/// Rounds to 3 decimals, for a JSON line that reads well.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CallError;

    #[test]
    fn json_has_the_stable_keys() {
        let mut stats = Stats::new();
        stats.record(Ok(()), Duration::from_micros(250));
        stats.record(
            Err(&CallError::Status { status: 503 }),
            Duration::from_micros(90),
        );
        let report = Report {
            stats,
            elapsed: Duration::from_millis(500),
            concurrency: 2,
            sessions: 1,
            stateless: false,
            tool: "echo".into(),
            url: "http://127.0.0.1:1/mcp".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["calls"], 2);
        assert_eq!(v["errors"]["http_status_503"], 1);
        assert_eq!(v["error_total"], 1);
        assert_eq!(v["duration_s"], 0.5);
        assert_eq!(v["throughput"], 4.0);
        assert!(v["latency_us"]["p99"].as_u64().unwrap() >= 250);
        for key in ["concurrency", "sessions", "tool", "url"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert!(!report.to_json().contains('\n'));
        assert!(report.to_table().contains("http_status_503"));
    }
}
