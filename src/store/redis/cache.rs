//! [`SharedCache`] on Redis: `cache:<upstream>\0<tool>\0<arguments>` under
//! `ballast:<deployment>:` holds `{"at": <unix ms>, "result": …}` for the
//! stale TTL. Writes go out in the background; reads happen only when a
//! call and its fallbacks failed and the local copy has none.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::RedisBackend;
use crate::resilience::SharedCache;

/// The Redis cache tier.
pub struct RedisCache {
    backend: Arc<RedisBackend>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// When the result was stored, Unix ms.
    at: u64,
    result: Box<RawValue>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedisCache {
    /// A cache tier on `backend`.
    pub fn new(backend: Arc<RedisBackend>) -> Self {
        Self { backend }
    }
}

impl SharedCache for RedisCache {
    fn put(&self, key: String, result: Box<RawValue>, ttl: Duration) {
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let Ok(value) = serde_json::to_string(&Stored {
                at: now_ms(),
                result,
            }) else {
                return;
            };
            let key = backend.key(&format!("cache:{key}"));
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let stored = backend
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            if let Err(e) = stored {
                tracing::debug!(error = %e, "could not share a cached result");
            }
        });
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<(Box<RawValue>, Duration)>> {
        Box::pin(async move {
            let key = self.backend.key(&format!("cache:{key}"));
            let value: Option<String> = self
                .backend
                .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
                .await
                .ok()?;
            let stored: Stored = serde_json::from_str(&value?).ok()?;
            let age = Duration::from_millis(now_ms().saturating_sub(stored.at));
            Some((stored.result, age))
        })
    }
}
