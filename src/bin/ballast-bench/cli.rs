//! The command line: every flag, its default, its limit, and the small
//! duration syntax (`500ms`, `10s`, `2m`, `1h`).
//!
//! Limits are enforced here, by clap value parsers, so a bad flag is a usage
//! error (exit 2) before anything is sent: the generator always stops by
//! itself (`--duration` ≤ 1h, `--calls` ≤ 100M) and holds bounded memory.

use std::time::Duration;

use clap::Parser;
use http::Uri;

/// Longest `--duration`, `--hold` and `--timeout` accepted.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most calls `--calls` accepts.
pub(crate) const MAX_CALLS: u64 = 100_000_000;
/// Run length when neither `--duration` nor `--calls` is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Load generator for MCP over Streamable HTTP (the MCP redis-benchmark).
///
/// Opens `--sessions` sessions (`initialize`, then `notifications/initialized`),
/// then `--concurrency` workers, spread round-robin over the sessions, call
/// one tool (`tools/call`) back to back for `--duration` or `--calls` calls.
/// Answers may be `application/json` or `text/event-stream`. Reports calls,
/// errors by kind, throughput and latency percentiles (µs). Latency is
/// recorded for every call that got an answer (including `tool_error`,
/// `jsonrpc_error` and `http_status_*`), not for `timeout`, `connect`, `io`
/// or `protocol` failures.
///
/// Exit codes: 0 when the run completed (call errors are reported, not
/// fatal), 1 when the sessions could not be opened, 2 for bad flags.
#[derive(Debug, Parser)]
#[command(name = "ballast-bench", version)]
pub(crate) struct Args {
    /// MCP endpoint (Streamable HTTP; plain `http://` only). The generator
    /// talks to this URL and nothing else.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080/mcp",
          value_parser = parse_url)]
    pub(crate) url: Uri,

    /// Concurrent workers; each has one call in flight at a time (1–10000).
    #[arg(short, long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,

    /// Sessions to open; workers are spread over them round-robin
    /// (1–100000). A server that returns no `Mcp-Session-Id` is stateless:
    /// no session header is sent.
    #[arg(short, long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) sessions: u32,

    /// How long to run, e.g. `500ms`, `10s`, `2m` (at most 1h). Defaults
    /// to 10s when `--calls` is not given; with both, whichever ends first.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// Stop after this many measured calls in total (1–100000000).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_calls)]
    pub(crate) calls: Option<u64>,

    /// Calls per worker before measuring starts, excluded from every
    /// statistic (opens the connections, warms caches).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub(crate) warmup: u64,

    /// Per-call timeout (also bounds opening each session), e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,

    /// Full name of the tool to call (as the server lists it).
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub(crate) tool: String,

    /// The tool's arguments: one JSON object.
    #[arg(long = "args", value_name = "JSON", default_value = r#"{"message":"hi"}"#,
          value_parser = parse_object)]
    pub(crate) arguments: String,

    /// Ask for progress notifications: sends `_meta.progressToken` (the
    /// request id) with each call, so the answer stream interleaves them.
    #[arg(long)]
    pub(crate) progress: bool,

    /// Print exactly one JSON line with the results instead of the table.
    #[arg(long)]
    pub(crate) json: bool,

    /// Tokio worker threads (1 = a single-threaded runtime; fewer threads
    /// leave more CPU to the server under test) (1–64).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: u16,

    /// Idle mode: open this many sessions, print how many opened, hold them
    /// (no calls) until `--hold` passes or SIGINT/SIGTERM, then delete them
    /// (1–100000).
    #[arg(long, value_name = "N", conflicts_with_all = ["calls", "duration", "json"],
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) idle_sessions: Option<u32>,

    /// How long idle mode holds its sessions, e.g. `60s` (at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration,
          requires = "idle_sessions")]
    pub(crate) hold: Duration,
}

// === impl Args ===

impl Args {
    /// The run length: `--duration`, else 10s unless `--calls` bounds the run.
    pub(crate) fn run_duration(&self) -> Option<Duration> {
        match (self.duration, self.calls) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_DURATION),
        }
    }
}

/// Parses `<n>ms`, `<n>s`, `<n>m`, `<n>h` (a bare `<n>` is seconds); it
/// must be more than zero and at most 1h.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 2m or 1h"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than the 1h limit"));
    }
    Ok(duration)
}

/// Parses `--calls`: 1 to 100M.
fn parse_calls(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))?;
    if n == 0 || n > MAX_CALLS {
        return Err(format!("must be between 1 and {MAX_CALLS} (got {n})"));
    }
    Ok(n)
}

/// Parses `--url`: an absolute `http://` URL.
fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https is not supported; use http://".into()),
        _ => return Err("must start with http://".into()),
    }
    if uri.host().is_none() {
        return Err("has no host".into());
    }
    Ok(uri)
}

/// Parses `--args`: one JSON object, returned as compact JSON text.
fn parse_object(text: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() {
        return Err("must be a JSON object, e.g. '{\"message\":\"hi\"}'".into());
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(MAX_DURATION));
        assert!(parse_duration("61m").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10d").is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(parse_calls("100000000"), Ok(MAX_CALLS));
        assert!(parse_calls("100000001").is_err());
        assert!(parse_calls("0").is_err());
        assert!(parse_url("https://example.com/mcp").is_err());
        assert!(parse_url("http://127.0.0.1:1/mcp").is_ok());
        assert!(parse_object("[1]").is_err());
        assert_eq!(parse_object(r#"{ "a": 1 }"#).as_deref(), Ok(r#"{"a":1}"#));
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
