//! Prometheus metrics, served as text at `/metrics`: the `metrics` facade
//! with `metrics-exporter-prometheus` as the process's one global recorder
//! (DEPENDENCIES.md). Names are `ballast_*` with the unit in the name
//! (`_seconds`, `_total`); latencies are histograms with fixed buckets.
//!
//! Events are recorded where they happen (the functions below); levels
//! (sessions, streams, calls in flight, upstream state) are read from the
//! gateway when `/metrics` is scraped, see `downstream::health`.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ballast_calls_total` | counter | `upstream`, `tool`, `class` (success, transient, permanent, tool_error, degraded, outcome_unknown; and cancelled: by the client, not a failure) |
//! | `ballast_call_duration_seconds` | histogram | `upstream`, `tool`, `class` |
//! | `ballast_retries_total` | counter | `upstream`, `tool` |
//! | `ballast_retry_budget_exhausted_total` | counter (a retryable failure not retried: the budget was spent) | `upstream`, `tool` |
//! | `ballast_breaker_state` | gauge (0 closed, 1 open, 2 half-open) | `breaker` |
//! | `ballast_breaker_transitions_total` | counter | `breaker`, `to` |
//! | `ballast_breaker_rejections_total` | counter | `breaker` |
//! | `ballast_bulkhead_rejections_total` | counter | `bulkhead` |
//! | `ballast_rate_limited_total` | counter | `scope` (session, tool) |
//! | `ballast_cache_hits_total` | counter | `kind` (fresh, stale) |
//! | `ballast_upstream_restarts_total` | counter | `upstream` |
//! | `ballast_upstream_up` / `ballast_upstream_parked` | gauge (0/1) | `upstream` |
//! | `ballast_downstream_disconnects_total` | counter | `cause` |
//! | `ballast_stream_resumes_total` | counter | — |
//! | `ballast_sessions_expired_total` | counter | — |
//! | `ballast_sessions`, `ballast_streams`, `ballast_calls_in_flight` | gauge | — |
//! | `ballast_store_fallback` | gauge (1 while a store runs on memory) | `store` |
//! | `ballast_store_keys_lost_total` | counter (live streams whose Redis keys vanished under them) | — |
//!
//! `tool` is the upstream's own tool name (empty for requests that are not
//! `tools/call`), so cardinality is bounded by the upstreams' catalogs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency buckets, in seconds (100 µs … 60 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The handle of the global recorder, if this process installed it.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// A Prometheus builder with Ballast's buckets (histograms, not summaries).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("the bucket list is non-empty")
}

/// Installs the global recorder once per process (later calls return the
/// same handle). `None` if another recorder was installed first (an
/// embedding program's own): then `/metrics` answers 404 and events go to
/// that recorder.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics is off");
                None
            }
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric, or `None` when this
/// process does not own the recorder.
pub fn render() -> Option<String> {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
}

/// Drains histogram buckets that nobody scraped (bounded memory); called by
/// the gateway's sweeper.
pub fn upkeep() {
    if let Some(handle) = HANDLE.get().and_then(Option::as_ref) {
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ballast_calls_total",
        "Forwarded requests by final failure class"
    );
    describe_histogram!(
        "ballast_call_duration_seconds",
        Unit::Seconds,
        "Time from receiving a request to its final answer, retries included"
    );
    describe_counter!("ballast_retries_total", "Retried attempts");
    describe_gauge!(
        "ballast_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open"
    );
    describe_counter!(
        "ballast_breaker_transitions_total",
        "Circuit breaker state changes"
    );
    describe_counter!(
        "ballast_breaker_rejections_total",
        "Calls failed fast by an open breaker"
    );
    describe_counter!(
        "ballast_bulkhead_rejections_total",
        "Calls refused by a full bulkhead"
    );
    describe_counter!(
        "ballast_rate_limited_total",
        "Calls refused by a rate limit"
    );
    describe_counter!("ballast_cache_hits_total", "Results served from the cache");
    describe_counter!(
        "ballast_upstream_restarts_total",
        "Upstream connections lost and re-established"
    );
    describe_counter!(
        "ballast_downstream_disconnects_total",
        "Client connections that ended with an error, by cause"
    );
}

/// The `upstream`/`tool` labels of one call.
#[derive(Debug, Clone)]
pub struct CallLabels {
    /// Upstream name.
    pub upstream: Arc<str>,
    /// The upstream's tool name, or empty.
    pub tool: Arc<str>,
}

/// One request finished with `class` after `elapsed`.
pub fn call(labels: &CallLabels, class: &'static str, elapsed: Duration) {
    let (upstream, tool) = (labels.upstream.clone(), labels.tool.clone());
    counter!("ballast_calls_total", "upstream" => upstream.clone(), "tool" => tool.clone(), "class" => class)
        .increment(1);
    histogram!("ballast_call_duration_seconds", "upstream" => upstream, "tool" => tool, "class" => class)
        .record(elapsed.as_secs_f64());
}

/// A failed call was answered from a fallback or the stale cache (counted
/// as `class="degraded"`, on top of the primary's own failure; no latency).
pub fn degraded(upstream: &str, tool: &str) {
    counter!("ballast_calls_total", "upstream" => upstream.to_owned(), "tool" => tool.to_owned(), "class" => "degraded")
        .increment(1);
}

/// One retry of a call.
pub fn retry(labels: &CallLabels) {
    counter!("ballast_retries_total", "upstream" => labels.upstream.clone(), "tool" => labels.tool.clone())
        .increment(1);
}

/// Redis lost the keys of a live stream this replica writes.
pub fn store_keys_lost() {
    counter!("ballast_store_keys_lost_total").increment(1);
}

/// A retryable failure was not retried because the retry budget was spent.
pub fn retry_budget_exhausted(labels: &CallLabels) {
    counter!("ballast_retry_budget_exhausted_total", "upstream" => labels.upstream.clone(), "tool" => labels.tool.clone())
        .increment(1);
}

/// Breaker `breaker` entered state `to` (`closed`, `open`, `half_open`).
pub fn breaker_transition(breaker: &str, to: &'static str) {
    let value = match to {
        "open" => 1.0,
        "half_open" => 2.0,
        _ => 0.0,
    };
    gauge!("ballast_breaker_state", "breaker" => breaker.to_owned()).set(value);
    counter!("ballast_breaker_transitions_total", "breaker" => breaker.to_owned(), "to" => to)
        .increment(1);
}

/// A call failed fast at open breaker `breaker`.
pub fn breaker_rejected(breaker: &str) {
    counter!("ballast_breaker_rejections_total", "breaker" => breaker.to_owned()).increment(1);
}

/// A call refused by full bulkhead `bulkhead`.
pub fn bulkhead_rejected(bulkhead: &str) {
    counter!("ballast_bulkhead_rejections_total", "bulkhead" => bulkhead.to_owned()).increment(1);
}

/// A call refused by a rate limit of `scope` (`session` or `tool`).
pub fn rate_limited(scope: &'static str) {
    counter!("ballast_rate_limited_total", "scope" => scope).increment(1);
}

/// A result served from the cache: `kind` is `fresh` or `stale`.
pub fn cache_hit(kind: &'static str) {
    counter!("ballast_cache_hits_total", "kind" => kind).increment(1);
}

/// Upstream `upstream` lost its connection and is being restarted.
pub fn upstream_restart(upstream: &str) {
    counter!("ballast_upstream_restarts_total", "upstream" => upstream.to_owned()).increment(1);
}

/// A downstream connection ended with an error of `cause`.
pub fn disconnect(cause: &'static str) {
    counter!("ballast_downstream_disconnects_total", "cause" => cause).increment(1);
}

/// A client resumed a stream with `Last-Event-ID`.
pub fn stream_resumed() {
    counter!("ballast_stream_resumes_total").increment(1);
}

/// A session expired after its idle timeout.
pub fn session_expired() {
    counter!("ballast_sessions_expired_total").increment(1);
}

/// Store `store` (`sessions`, `events`, `cache`, `rate`) now runs on the
/// memory fallback (`true`) or on its configured backend again (`false`).
pub fn store_fallback(store: &'static str, on_fallback: bool) {
    gauge!("ballast_store_fallback", "store" => store).set(if on_fallback { 1.0 } else { 0.0 });
}

/// Levels read from the gateway at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels {
    /// Live sessions.
    pub sessions: usize,
    /// Retained event-log streams.
    pub streams: usize,
    /// Calls being forwarded.
    pub calls_in_flight: usize,
}

/// Sets the level gauges.
pub fn levels(levels: Levels) {
    gauge!("ballast_sessions").set(levels.sessions as f64);
    gauge!("ballast_streams").set(levels.streams as f64);
    gauge!("ballast_calls_in_flight").set(levels.calls_in_flight as f64);
}

/// Sets upstream `upstream`'s `up` (ready) and `parked` gauges.
pub fn upstream_state(upstream: &str, up: bool, parked: bool) {
    gauge!("ballast_upstream_up", "upstream" => upstream.to_owned()).set(f64::from(u8::from(up)));
    gauge!("ballast_upstream_parked", "upstream" => upstream.to_owned())
        .set(f64::from(u8::from(parked)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_with_ballast_names_units_and_buckets() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let labels = CallLabels {
                upstream: "demo".into(),
                tool: "echo".into(),
            };
            call(&labels, "success", Duration::from_micros(300));
            call(&labels, "success", Duration::from_millis(20));
            retry(&labels);
            breaker_transition("upstream:demo", "open");
            disconnect("reset");
            store_fallback("events", true);
        });
        let text = handle.render();
        for line in [
            r#"ballast_calls_total{upstream="demo",tool="echo",class="success"} 2"#,
            r#"ballast_call_duration_seconds_bucket{upstream="demo",tool="echo",class="success",le="0.0005"} 1"#,
            r#"ballast_call_duration_seconds_bucket{upstream="demo",tool="echo",class="success",le="0.025"} 2"#,
            r#"ballast_call_duration_seconds_count{upstream="demo",tool="echo",class="success"} 2"#,
            r#"ballast_retries_total{upstream="demo",tool="echo"} 1"#,
            r#"ballast_breaker_state{breaker="upstream:demo"} 1"#,
            r#"ballast_breaker_transitions_total{breaker="upstream:demo",to="open"} 1"#,
            r#"ballast_downstream_disconnects_total{cause="reset"} 1"#,
            r#"ballast_store_fallback{store="events"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
