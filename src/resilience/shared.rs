//! Tiers shared by replicas (implemented on Redis in `store::redis`): the
//! stale cache's second tier and rate-limit buckets that count every
//! replica's calls. Both are optional and best effort: when the shared
//! tier fails, the local one decides.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use super::CacheBounds;

/// A result cache shared by replicas, one namespace per upstream, each
/// kept within its [`CacheBounds`] (the oldest entries go first).
pub trait SharedCache: Send + Sync + 'static {
    /// Stores `result` under `key` (hex) in `namespace` for `ttl` (in the
    /// background; never delays the call that produced it), evicting the
    /// namespace's oldest entries while it is over `bounds`.
    fn put(
        &self,
        namespace: &str,
        key: &str,
        result: Box<RawValue>,
        ttl: Duration,
        bounds: CacheBounds,
    );

    /// The result under `key` in `namespace` and its age, if any replica
    /// stored one within its TTL. `None` also when the shared tier is
    /// unreachable.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Option<(Box<RawValue>, Duration)>>;
}

/// Token buckets shared by replicas (GCRA).
pub trait SharedRateLimit: Send + Sync + 'static {
    /// Takes a token from bucket `key` (`per_sec` tokens per second, bursts
    /// of `burst`). `Ok(Ok(()))`: allowed; `Ok(Err(wait))`: over the limit
    /// for `wait`; `Err(())`: the shared tier is unreachable (the caller
    /// falls back to its local bucket).
    fn check<'a>(
        &'a self,
        key: &'a str,
        per_sec: f64,
        burst: u32,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, ()>>;
}

/// The shared tiers a gateway uses, when its store is shared.
#[derive(Clone)]
pub struct Shared {
    /// Second tier of every upstream's stale cache.
    pub cache: Arc<dyn SharedCache>,
    /// Rate-limit buckets (per session, per tool).
    pub rate: Arc<dyn SharedRateLimit>,
}
