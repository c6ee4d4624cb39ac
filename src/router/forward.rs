//! Forwarding one call to its upstream, attempt by attempt: Ballast's own
//! id and `progressToken` per attempt, the route back registered while it
//! runs, and the retry policy deciding — from the failure class and whether
//! the call is safe to repeat — whether another attempt follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use serde_json::value::RawValue;

use super::{CallRoute, Router};
use crate::downstream::{Session, Sink};
use crate::jsonrpc::{ErrorObject, RequestId, Response, code};
use crate::mcp::{Params, method};
use crate::observe::metrics;
use crate::resilience::{FailureClass, RetryDecision, classify};
use crate::upstream::UpstreamError;

/// Longest `Retry-After` from an upstream that Ballast honours.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a call may be repeated, and which tool it is.
#[derive(Debug, Clone)]
pub(crate) struct Safety {
    /// Repeating it cannot cause a second effect.
    pub(crate) safe: bool,
    /// The tool's name on its upstream, for `tools/call`.
    pub(crate) tool: Option<String>,
    /// The tool is annotated read-only (its results may be served stale).
    pub(crate) read_only: bool,
    /// The tool is in the catalog or named in the upstream's config, so it
    /// may have per-tool state (breaker, metric series). A name a client
    /// typed that is neither gets none: it cannot grow memory or `/metrics`.
    pub(crate) listed: bool,
    /// Set when the upstream sent a server→client request (sampling,
    /// elicitation, roots) to this call's client while it ran: the result
    /// then depends on the caller and is never cached (DESIGN.md 9).
    pub(crate) asked_client: Arc<AtomicBool>,
}

impl Safety {
    /// The tool name to key per-tool state and metric labels by: the tool,
    /// when it is listed.
    pub(crate) fn policy_tool(&self) -> Option<&str> {
        self.tool.as_deref().filter(|_| self.listed)
    }
}

impl Router {
    /// How safe a call is: `tools/call` by the tool's policy override or its
    /// annotations; reads (`resources/read`, `prompts/get`,
    /// `completion/complete`) are safe; anything else is not.
    pub(crate) fn safety(
        &self,
        method: &str,
        upstream: usize,
        params: Option<&RawValue>,
    ) -> Safety {
        match method {
            method::TOOLS_CALL => {
                let tool = Params::split(params).and_then(|p| p.str_field("name"));
                let entry = tool.as_deref().and_then(|name| {
                    let public = match self.prefixes.get(upstream).and_then(Option::as_deref) {
                        Some(prefix) => format!("{prefix}{}{name}", self.separator),
                        None => name.to_owned(),
                    };
                    self.catalog().tool(&public).cloned()
                });
                let annotated = entry.as_ref().is_some_and(|t| t.read_only || t.idempotent);
                let read_only = entry.as_ref().is_some_and(|t| t.read_only);
                let policy = self.policies.get(upstream);
                let safe = match (&tool, policy) {
                    (Some(t), Some(p)) => p.tool_is_safe(t, annotated),
                    _ => annotated,
                };
                let configured = matches!((&tool, policy), (Some(t), Some(p)) if p.configures(t));
                Safety {
                    safe,
                    tool,
                    read_only,
                    listed: entry.is_some() || configured,
                    asked_client: Arc::default(),
                }
            }
            method::RESOURCES_READ | method::PROMPTS_GET | method::COMPLETE => Safety {
                safe: true,
                tool: None,
                read_only: false,
                listed: false,
                asked_client: Arc::default(),
            },
            _ => Safety {
                safe: false,
                tool: None,
                read_only: false,
                listed: false,
                asked_client: Arc::default(),
            },
        }
    }

    /// Whether a downstream request may be sent again without a second
    /// effect: what Ballast answers itself (ping, lists, unroutable
    /// requests), reads, and tools that are read-only or idempotent (or
    /// declared safe by policy). Used when a replica takes over a call
    /// whose replica died.
    pub(crate) fn safe_to_repeat(&self, method: &str, params: Option<&RawValue>) -> bool {
        if method == method::PING || self.catalog().list_result(method).is_some() {
            return true;
        }
        match self.route(method, params.map(RawValue::to_owned)) {
            Ok((upstream, routed)) => self.safety(method, upstream, routed.as_deref()).safe,
            // Answered with an error here: nothing reaches an upstream.
            Err(_) => true,
        }
    }

    /// Sends a request to upstream `index`, retrying per its policy, and
    /// restores the downstream id on the answer. `None`: the client
    /// cancelled it (no response is due).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        session: &Arc<Session>,
        index: usize,
        downstream_id: RequestId,
        method: &str,
        params: &Option<Box<RawValue>>,
        sink: Option<Sink>,
        safety: Safety,
    ) -> Option<Response> {
        let Some(upstream) = self.upstreams.get(index) else {
            let e = ErrorObject::new(
                code::METHOD_NOT_FOUND,
                format!("no upstream serves {method}"),
            );
            return Some(Response::err(Some(downstream_id), &e));
        };
        let _active = ActiveCall::new(self);
        let started = tokio::time::Instant::now();
        let labels = metrics::CallLabels {
            upstream: upstream.name.clone(),
            tool: safety.policy_tool().unwrap_or_default().into(),
        };
        let refused = |labels: &metrics::CallLabels| {
            metrics::call(labels, FailureClass::Transient.as_str(), started.elapsed());
        };
        let policy = &self.policies[index];
        if let Err(wait) = policy.rate_check(safety.tool.as_deref()).await {
            self.stats.count(crate::observe::Counter::CallsRateLimited);
            metrics::rate_limited("tool");
            refused(&labels);
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let tool = safety.tool.as_deref().unwrap_or_default();
            let message = format!("rate limit of tool {tool:?} reached; retry in {wait_ms} ms");
            let data = json!({ "tool": tool, "retry_after_ms": wait_ms });
            return Some(fail_fast(
                downstream_id,
                &upstream.name,
                code::RATE_LIMITED,
                message,
                data,
            ));
        }
        let _slots = match policy.enter(safety.tool.as_deref()).await {
            Ok(slots) => slots,
            Err(full) => {
                self.stats.count(crate::observe::Counter::CallsBulkheadFull);
                metrics::bulkhead_rejected(&full.bulkhead);
                refused(&labels);
                let message = format!(
                    "too many calls in flight ({}); retry in {} ms",
                    full.bulkhead, full.retry_after_ms
                );
                let data = json!({ "bulkhead": full.bulkhead, "max_concurrent": full.max_concurrent,
                                   "retry_after_ms": full.retry_after_ms });
                return Some(fail_fast(
                    downstream_id,
                    &upstream.name,
                    code::BULKHEAD_FULL,
                    message,
                    data,
                ));
            }
        };
        policy.record_call();
        let max_attempts = policy.max_attempts(safety.tool.as_deref());
        let split = Params::split(params.as_deref());
        let progress_token = split.as_ref().and_then(Params::progress_token);
        let mut retries = 0u32;
        loop {
            let permits = match policy.admit(safety.policy_tool()) {
                Ok(p) => p,
                Err(open) => {
                    self.stats.count(crate::observe::Counter::CallsBreakerOpen);
                    metrics::breaker_rejected(&open.breaker);
                    refused(&labels);
                    let message = format!(
                        "circuit open ({}): not sent; retry in {} ms",
                        open.breaker, open.retry_after_ms
                    );
                    let data = json!({ "breaker": open.breaker, "reason": open.reason,
                                       "retry_after_ms": open.retry_after_ms, "attempts": retries });
                    return Some(fail_fast(
                        downstream_id,
                        &upstream.name,
                        code::CIRCUIT_OPEN,
                        message,
                        data,
                    ));
                }
            };
            let result = self
                .attempt(
                    session,
                    index,
                    &downstream_id,
                    method,
                    params,
                    progress_token.clone(),
                    sink.clone(),
                    &safety,
                )
                .await;
            let verdict = classify(&result);
            let unhealthy = matches!(
                verdict.class,
                FailureClass::Transient | FailureClass::OutcomeUnknown
            );
            // A lost connection is supervision's business (restart, parking),
            // not a sign of bad answers: one crash fails every call in flight
            // at once and must not open the breakers. Neither does a cancel.
            let supervised = result
                .as_ref()
                .err()
                .is_some_and(UpstreamError::is_supervised);
            // Parked, reconnecting or not reading: no retry, the client
            // gets the answer at once instead of a wait here.
            let max_attempts = match &result {
                Err(e) if e.retry_cannot_help() => retries + 1,
                _ => max_attempts,
            };
            if !supervised {
                permits.into_iter().for_each(|p| p.record(unhealthy));
            }
            let decision = if retries + 1 < max_attempts {
                policy.retry_after(verdict, safety.safe, retries)
            } else {
                RetryDecision::No
            };
            if decision == RetryDecision::BudgetExhausted {
                // Said and counted: a failure the budget kept from a retry
                // looks otherwise like one that was never retryable.
                self.stats
                    .count(crate::observe::Counter::CallsRetryBudgetExhausted);
                metrics::retry_budget_exhausted(&labels);
            }
            if let Some(backoff) = decision.delay() {
                // Honour the upstream's Retry-After (up to a minute).
                let asked = result.as_ref().err().and_then(UpstreamError::retry_after);
                let wait = backoff.max(asked.unwrap_or_default().min(MAX_RETRY_AFTER));
                tracing::debug!(
                    upstream = %upstream.name,
                    class = verdict.class.as_str(),
                    retry = retries + 1,
                    wait_ms = wait.as_millis() as u64,
                    "retrying"
                );
                self.stats.count(crate::observe::Counter::CallsRetried);
                metrics::retry(&labels);
                retries += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            // A call the client cancelled (or whose session ended) is not a
            // failure of the upstream: counted apart.
            let (class, counter) = match result {
                Err(UpstreamError::Cancelled) => {
                    ("cancelled", crate::observe::Counter::CallsCancelled)
                }
                _ => (verdict.class.as_str(), verdict.class.counter()),
            };
            self.stats.count(counter);
            metrics::call(&labels, class, started.elapsed());
            return match result {
                Ok(response) => Some(Response {
                    id: Some(downstream_id),
                    outcome: match response.outcome {
                        Err(e) if decision == RetryDecision::BudgetExhausted => {
                            Err(budget_refusal_noted(&e))
                        }
                        outcome => outcome,
                    },
                }),
                Err(UpstreamError::Cancelled) => None,
                Err(e) => {
                    tracing::debug!(upstream = %upstream.name, error = %e, kind = e.kind(), "call failed");
                    let mut error = e.to_error_object(&upstream.name);
                    if verdict.class == FailureClass::OutcomeUnknown {
                        error.message = format!(
                            "outcome unknown: the request reached upstream {:?} and no answer came ({e}); \
                             it was not retried because the tool is not safe to repeat",
                            &*upstream.name
                        );
                        if safety.safe {
                            error.message =
                                format!("outcome unknown after {} attempts: {e}", retries + 1);
                        }
                    }
                    if let Some(data) = error.data.as_mut() {
                        data["class"] = json!(verdict.class.as_str());
                        data["attempts"] = json!(retries + 1);
                        if decision == RetryDecision::BudgetExhausted {
                            data["retry_refused"] = json!("retry_budget_exhausted");
                            error
                                .message
                                .push_str(" (not retried: the upstream's retry budget is spent)");
                        }
                        if matches!(e, UpstreamError::Closed) {
                            // Best effort: what the child said before it went away.
                            data["stderr_tail"] = json!(upstream.stderr_tail());
                        }
                    }
                    Some(Response::err(Some(downstream_id), &error))
                }
            };
        }
    }

    /// One attempt: a fresh upstream id (and progress token), the route
    /// back registered while it runs.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        session: &Arc<Session>,
        index: usize,
        downstream_id: &RequestId,
        method: &str,
        params: &Option<Box<RawValue>>,
        progress_token: Option<Box<RawValue>>,
        sink: Option<Sink>,
        safety: &Safety,
    ) -> Result<Response, UpstreamError> {
        let tool = safety.tool.as_deref();
        let conn = self.upstreams[index].connection(self.startup_wait).await?;
        let upstream_id = conn.next_id();
        let params = match (&progress_token, Params::split(params.as_deref())) {
            (Some(_), Some(mut p)) => {
                // Ballast's progress token for this attempt is its upstream
                // id: unique among active requests (SPEC.md 24).
                p.set_progress_token(&upstream_id);
                Some(p.into_raw())
            }
            _ => params.clone(),
        };
        let progress = Arc::new(tokio::sync::Notify::new());
        let deadline = self.policies[index].deadline(tool, progress.clone());
        let route = Arc::new(CallRoute {
            progress,
            session: session.clone(),
            started: tokio::time::Instant::now(),
            progress_token,
            sink,
            asked_client: safety.asked_client.clone(),
        });
        self.lock_calls().insert((index, upstream_id), route);
        session.forwarded(downstream_id, index, upstream_id);
        let result = conn
            .request_within(upstream_id, method, params, deadline)
            .await;
        self.lock_calls().remove(&(index, upstream_id));
        result
    }
}

/// The error for a call refused before it was sent (breaker open, bulkhead
/// full): `transient`, with `extra` fields merged into `data`.
fn fail_fast(
    id: RequestId,
    upstream: &str,
    code: i64,
    message: String,
    extra: serde_json::Value,
) -> Response {
    let mut data = json!({ "upstream": upstream, "class": FailureClass::Transient.as_str() });
    if let (Some(d), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    let mut e = ErrorObject::new(code, message);
    e.data = Some(data);
    Response::err(Some(id), &e)
}

/// An upstream's JSON-RPC error with `data.retry_refused =
/// "retry_budget_exhausted"` added (when its `data` is absent or an
/// object; any other `data` is left as the upstream sent it).
fn budget_refusal_noted(error: &RawValue) -> Box<RawValue> {
    let Ok(mut e) = serde_json::from_str::<serde_json::Value>(error.get()) else {
        return error.to_owned();
    };
    let Some(obj) = e.as_object_mut() else {
        return error.to_owned();
    };
    let data = obj.entry("data").or_insert_with(|| json!({}));
    match data.as_object_mut() {
        Some(d) => {
            d.insert("retry_refused".into(), json!("retry_budget_exhausted"));
            crate::jsonrpc::to_raw(&e)
        }
        None => error.to_owned(),
    }
}

/// Counts a call as in flight for its whole life (retry waits included),
/// and wakes the drain when the last one ends.
struct ActiveCall<'a>(&'a Router);

impl<'a> ActiveCall<'a> {
    fn new(router: &'a Router) -> Self {
        router.active.fetch_add(1, Ordering::SeqCst);
        Self(router)
    }
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
