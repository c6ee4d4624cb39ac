//! Resilience policies applied to every call (DESIGN.md "policy pipeline").
//!
//! - `classify.rs` — the one place that decides a call outcome's failure class.
//! - `backoff.rs` — exponential backoff with full jitter.
//! - `budget.rs` — the retry budget (retries ≤ ratio × calls + floor).
//! - `breaker.rs` — the circuit breaker state machine.
//! - `bulkhead.rs` — bounded concurrency with a bounded wait.
//! - `cache.rs` — the stale cache of read-only results.
//! - `rate_limit.rs` — token buckets per session and per tool.
//! - `policy.rs` — one upstream's retry policy and breakers, with per-tool overrides.
//! - `shared.rs` — the tiers replicas share (cache, rate limits), as traits.
//! - `window.rs` — a sliding window of outcomes in constant time per call.

mod backoff;
mod breaker;
mod budget;
mod bulkhead;
mod cache;
mod classify;
mod policy;
mod rate_limit;
mod shared;
mod window;

pub use self::backoff::Backoff;
pub use self::breaker::{Breaker, BreakerOpen, BreakerState, Permit};
pub use self::budget::RetryBudget;
pub use self::bulkhead::{Bulkhead, BulkheadFull};
pub use self::cache::{CacheBounds, CacheKey, ENTRY_OVERHEAD_BYTES, StaleCache, is_private};
pub use self::classify::{FailureClass, Verdict, classify, is_error_result};
pub use self::policy::{CallPolicy, RetryDecision};
pub use self::rate_limit::RateLimit;
pub use self::shared::{Shared, SharedCache, SharedRateLimit};
