//! What the stores say about themselves to the rest of the gateway, so
//! that nothing outside `store/` asks which backend is configured: their
//! status for `/readyz` (and the `ballast_store_fallback` gauge), the tiers
//! replicas share through them, and the signals of a shared backend the
//! gateway acts on.

use std::sync::Arc;

use serde::Serialize;

use super::Stores;
use crate::resilience::BreakerState;

/// The stores' state, as `/readyz` shows it under `"store"`:
/// `{"kind": "memory"}`, or `{"kind": "redis", "fallback": bool,
/// "breaker": "closed"|"open"|"half_open"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreStatus {
    /// In this process's memory.
    Memory,
    /// On Redis, with a memory fallback.
    Redis {
        /// True while new sessions and streams go to memory because Redis
        /// failed (its breaker `store:redis` is not closed).
        fallback: bool,
        /// The `store:redis` breaker: `closed`, `open` or `half_open`.
        breaker: &'static str,
    },
}

impl Stores {
    /// The stores' current status. Also sets the `ballast_store_fallback`
    /// gauge from it (see [`super::on_fallback`]).
    pub fn status(&self) -> StoreStatus {
        let Some(redis) = &self.redis else {
            return StoreStatus::Memory;
        };
        let breaker = match redis.state() {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        StoreStatus::Redis {
            fallback: super::on_fallback(redis),
            breaker,
        }
    }

    /// The resilience tiers replicas share through these stores (the stale
    /// cache, the rate-limit buckets); `None` for stores private to this
    /// process.
    pub fn shared_tiers(&self) -> Option<crate::resilience::Shared> {
        self.redis.as_ref().map(super::redis::shared)
    }

    /// Changes each time the shared backend is found to have lost keys this
    /// replica wrote (the gateway writes its session records back); `None`
    /// for stores that cannot lose them. See
    /// [`super::redis::RedisBackend::keys_lost`].
    pub fn keys_lost(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.redis.as_ref().map(|r| r.keys_lost())
    }

    /// The ids of sessions other replicas ended (the gateway ends its own
    /// copy); `None` for stores no other replica uses. See
    /// [`super::redis::RedisBackend::sessions_ended`].
    pub fn sessions_ended(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        self.redis.as_ref().map(|r| r.sessions_ended())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_reads_as_readyz_showed_it() {
        let memory = serde_json::to_value(StoreStatus::Memory).expect("json");
        assert_eq!(memory, json!({ "kind": "memory" }));
        let redis = StoreStatus::Redis {
            fallback: true,
            breaker: "half_open",
        };
        assert_eq!(
            serde_json::to_string(&redis).expect("json"),
            r#"{"kind":"redis","fallback":true,"breaker":"half_open"}"#
        );
    }

    #[test]
    fn memory_stores_share_nothing() {
        let stores = Stores::memory(crate::config::Config::default().server.stream_limits());
        assert_eq!(stores.status(), StoreStatus::Memory);
        assert!(stores.shared_tiers().is_none());
        assert!(stores.keys_lost().is_none());
        assert!(stores.sessions_ended().is_none());
        assert!(!stores.events.is_shared());
        assert_eq!(
            stores.events.first_event_grace(),
            super::super::FIRST_EVENT_GRACE
        );
    }
}
