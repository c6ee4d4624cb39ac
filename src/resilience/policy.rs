//! One upstream's call policy: its circuit breakers (one for the upstream,
//! one per tool), which attempts may be repeated, how long to wait, and the
//! budget that keeps retries from storming.

use std::time::Duration;

use indexmap::IndexMap;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use super::{
    Backoff, Breaker, BreakerOpen, Bulkhead, BulkheadFull, FailureClass, Permit, RetryBudget,
    Verdict,
};
use crate::config::{BreakerConfig, ToolPolicy, UpstreamConfig};
use crate::upstream::Deadline;

/// The call policy of one upstream.
pub struct CallPolicy {
    backoff: Backoff,
    max_attempts: u32,
    budget: RetryBudget,
    tools: IndexMap<String, ToolPolicy>,
    upstream: String,
    breaker_cfg: BreakerConfig,
    breaker: Arc<Breaker>,
    tool_breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    bulkhead: Bulkhead,
    max_wait: std::time::Duration,
    tool_bulkheads: Mutex<HashMap<String, Arc<Bulkhead>>>,
    request_timeout: std::time::Duration,
    max_timeout: std::time::Duration,
    cache: Option<super::StaleCache>,
    /// Per-tool rate limits (one bucket per limited tool, all sessions together).
    tool_rates: HashMap<String, super::RateLimit>,
}

impl CallPolicy {
    /// Built from config.
    /// `breaker` is the upstream's own breaker ([`Breaker`] named
    /// `upstream:<name>`), which its health probes feed too.
    /// `shared`: the tiers replicas share (stale cache, rate limits), if any.
    pub fn new(
        upstream: &str,
        config: &UpstreamConfig,
        upstream_breaker: Arc<Breaker>,
        shared: Option<&super::Shared>,
    ) -> Self {
        let (cfg, breaker, bulkhead, tools) = (
            &config.retry,
            &config.breaker,
            &config.bulkhead,
            &config.tools,
        );
        Self {
            cache: config.cache.enabled.then(|| {
                let cache = super::StaleCache::new(&config.cache);
                match shared {
                    Some(s) => cache.with_shared(s.cache.clone(), upstream),
                    None => cache,
                }
            }),
            tool_rates: tools
                .iter()
                .filter_map(|(name, t)| {
                    let per_sec = t.rate_per_sec?;
                    let burst = per_sec.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
                    let limit = super::RateLimit::new(per_sec, burst)?;
                    let limit = match shared {
                        Some(s) => limit.with_shared(s.rate.clone(), &format!("tool:{upstream}")),
                        None => limit,
                    };
                    Some((name.clone(), limit))
                })
                .collect(),
            request_timeout: config.request_timeout,
            max_timeout: config.max_timeout,
            bulkhead: Bulkhead::new(
                format!("upstream:{upstream}"),
                bulkhead.max_concurrent,
                bulkhead.max_wait,
            ),
            max_wait: bulkhead.max_wait,
            tool_bulkheads: Mutex::new(HashMap::new()),
            upstream: upstream.to_owned(),
            breaker_cfg: breaker.clone(),
            breaker: upstream_breaker,
            tool_breakers: Mutex::new(HashMap::new()),
            backoff: Backoff {
                base: cfg.base,
                multiplier: cfg.multiplier,
                max_delay: cfg.max_delay,
                jitter: true,
            },
            max_attempts: cfg.max_attempts.max(1),
            budget: RetryBudget::new(cfg.budget_ratio, cfg.budget_min_per_sec),
            tools: tools.clone(),
        }
    }

    /// Whether a tool is safe to repeat: the config override if any, else
    /// the tool's annotations (`readOnlyHint` or `idempotentHint`).
    pub fn tool_is_safe(&self, tool: &str, annotated_safe: bool) -> bool {
        self.tools
            .get(tool)
            .and_then(|t| t.idempotent)
            .unwrap_or(annotated_safe)
    }

    /// Whether the config names `tool` (a `tools.<name>` table).
    pub fn configures(&self, tool: &str) -> bool {
        self.tools.contains_key(tool)
    }

    /// Takes a token from `tool`'s rate limit, if it has one.
    ///
    /// # Errors
    /// How long until the next token.
    pub async fn rate_check(&self, tool: Option<&str>) -> Result<(), std::time::Duration> {
        match tool.and_then(|t| self.tool_rates.get(t).map(|l| (t, l))) {
            Some((t, limit)) => limit.check(t).await,
            None => Ok(()),
        }
    }

    /// The stale cache, when enabled.
    pub fn cache(&self) -> Option<&super::StaleCache> {
        self.cache.as_ref()
    }

    /// The public name of `tool`'s fallback tool, if its policy names one.
    pub fn fallback(&self, tool: &str) -> Option<&str> {
        self.tools.get(tool).and_then(|t| t.fallback.as_deref())
    }

    /// Attempts allowed for a call to `tool` (or any other method).
    pub fn max_attempts(&self, tool: Option<&str>) -> u32 {
        tool.and_then(|t| self.tools.get(t))
            .and_then(|t| t.max_attempts)
            .unwrap_or(self.max_attempts)
            .max(1)
    }

    /// Asks the upstream's breaker, then the tool's, to let an attempt through.
    ///
    /// # Errors
    /// [`BreakerOpen`] naming the breaker that refused.
    pub fn admit(&self, tool: Option<&str>) -> Result<Vec<Permit>, BreakerOpen> {
        let mut permits = vec![self.breaker.acquire()?];
        if let Some(tool) = tool {
            let breaker = self
                .tool_breakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(tool.to_owned())
                .or_insert_with(|| {
                    Breaker::new(
                        format!("tool:{}/{tool}", self.upstream),
                        self.breaker_cfg.clone(),
                    )
                })
                .clone();
            permits.push(breaker.acquire()?);
        }
        Ok(permits)
    }

    /// Takes a slot in the upstream's bulkhead and, if the tool has one, in
    /// the tool's; held for the whole call (retries included).
    ///
    /// # Errors
    /// [`BulkheadFull`] naming the full bulkhead.
    pub async fn enter(
        &self,
        tool: Option<&str>,
    ) -> Result<Vec<OwnedSemaphorePermit>, BulkheadFull> {
        let mut slots = vec![self.bulkhead.enter().await?];
        let limit = tool
            .and_then(|t| self.tools.get(t))
            .and_then(|t| t.max_concurrent);
        if let (Some(tool), Some(limit)) = (tool, limit) {
            let bulkhead = self
                .tool_bulkheads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(tool.to_owned())
                .or_insert_with(|| {
                    Arc::new(Bulkhead::new(
                        format!("tool:{}/{tool}", self.upstream),
                        limit,
                        self.max_wait,
                    ))
                })
                .clone();
            slots.push(bulkhead.enter().await?);
        }
        Ok(slots)
    }

    /// How long a call to `tool` may wait: the tool's `timeout` or the
    /// upstream's `request_timeout`, restarted by each wake-up of
    /// `progress`, never past `max_timeout`.
    pub(crate) fn deadline(
        &self,
        tool: Option<&str>,
        progress: Arc<tokio::sync::Notify>,
    ) -> Deadline {
        let timeout = tool
            .and_then(|t| self.tools.get(t))
            .and_then(|t| t.timeout)
            .unwrap_or(self.request_timeout);
        Deadline {
            timeout,
            max: self.max_timeout.max(timeout),
            progress: Some(progress),
        }
    }

    /// Records a call for the budget.
    pub fn record_call(&self) {
        self.budget.deposit();
    }

    /// Whether retry `retry` (0-based) of an attempt classified `verdict`
    /// may follow, and after how long: not when the failure is not
    /// retryable or the call is not safe to repeat once it may have reached
    /// the upstream ([`RetryDecision::No`]), nor when the retry budget is
    /// spent ([`RetryDecision::BudgetExhausted`], which callers report).
    pub fn retry_after(&self, verdict: Verdict, safe: bool, retry: u32) -> RetryDecision {
        let retryable = match verdict.class {
            FailureClass::Transient => !verdict.reached || safe,
            FailureClass::OutcomeUnknown => safe,
            _ => false,
        };
        if !retryable {
            RetryDecision::No
        } else if self.budget.try_withdraw() {
            RetryDecision::After(self.backoff.delay(retry))
        } else {
            RetryDecision::BudgetExhausted
        }
    }
}

/// What the policy says about one more attempt of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry after this backoff.
    After(Duration),
    /// Not retryable: the failure class, or the call is not safe to repeat.
    No,
    /// Retryable, but the retry budget (retries ≤ `budget_ratio` × calls
    /// over 10 s + `budget_min_per_sec`) is spent: refused so retries cannot
    /// storm an upstream that is already failing.
    BudgetExhausted,
}

impl RetryDecision {
    /// The backoff, when a retry may follow.
    pub fn delay(self) -> Option<Duration> {
        match self {
            RetryDecision::After(d) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallPolicy {
        let mut tools = IndexMap::new();
        tools.insert(
            "charge".to_owned(),
            ToolPolicy {
                idempotent: Some(false),
                max_attempts: Some(1),
                max_concurrent: None,
                timeout: None,
                fallback: None,
                rate_per_sec: None,
            },
        );
        let mut config = UpstreamConfig::stdio("demo", vec![]);
        config.tools = tools;
        CallPolicy::new(
            "demo",
            &config,
            Breaker::new("upstream:demo", config.breaker.clone()),
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn only_safe_calls_are_retried_once_they_may_have_reached_the_upstream() {
        let p = policy();
        let v = |class, reached| Verdict { class, reached };
        assert!(
            p.retry_after(v(FailureClass::Transient, false), false, 0)
                .delay()
                .is_some(),
            "never sent: always"
        );
        assert!(
            p.retry_after(v(FailureClass::Transient, true), false, 0)
                .delay()
                .is_none(),
            "reached, unsafe"
        );
        assert!(
            p.retry_after(v(FailureClass::Transient, true), true, 0)
                .delay()
                .is_some(),
            "reached, safe"
        );
        assert!(
            p.retry_after(v(FailureClass::OutcomeUnknown, true), false, 0)
                .delay()
                .is_none()
        );
        assert!(
            p.retry_after(v(FailureClass::OutcomeUnknown, true), true, 0)
                .delay()
                .is_some()
        );
        for class in [
            FailureClass::Permanent,
            FailureClass::ToolError,
            FailureClass::Success,
        ] {
            assert!(
                p.retry_after(v(class, false), true, 0) == RetryDecision::No,
                "{class:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_is_told_apart_from_a_refusal() {
        let p = policy();
        let retryable = Verdict {
            class: FailureClass::Transient,
            reached: false,
        };
        // No calls recorded: the budget holds only its per-second minimum.
        let decisions: Vec<RetryDecision> =
            (0..50).map(|_| p.retry_after(retryable, true, 0)).collect();
        assert!(decisions.iter().any(|d| d.delay().is_some()));
        assert_eq!(
            decisions.last(),
            Some(&RetryDecision::BudgetExhausted),
            "{decisions:?}"
        );
    }

    #[test]
    fn tool_overrides_win_over_annotations() {
        let p = policy();
        assert!(!p.tool_is_safe("charge", true));
        assert!(p.tool_is_safe("echo", true));
        assert_eq!(p.max_attempts(Some("charge")), 1);
        assert_eq!(p.max_attempts(Some("echo")), 3);
    }
}
