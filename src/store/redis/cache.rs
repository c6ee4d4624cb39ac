//! [`SharedCache`] on Redis, under `ballast:<deployment>:`, one namespace
//! per upstream, all its keys in one hash slot (`{<upstream>}`):
//!
//! - `cache:{<upstream>}:<key>` — `{"at": <unix ms>, "result": …}` for the
//!   stale TTL (`<key>` is the SHA-256 hex of scope, tool and arguments);
//! - `cache-index:{<upstream>}` — sorted set, key → when stored (µs of
//!   Redis's clock, strictly increasing, so the oldest is first);
//! - `cache-sizes:{<upstream>}` — hash, key → weight (bytes, as
//!   [`CacheBounds::weight`]), and `#total`.
//!
//! One Lua script per write stores the entry and, while the namespace is
//! over its [`CacheBounds`] (`max_entries`, `max_bytes`), drops its oldest
//! entries; index entries past the TTL are dropped as it goes (at most 100
//! per write), and index and sizes expire with the TTL when writes stop.
//! Writes go out in the background; reads happen only when a call and its
//! fallbacks failed and the local copy has none.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::RedisBackend;
use crate::resilience::{CacheBounds, SharedCache};

/// KEYS[1] entry, KEYS[2] index, KEYS[3] sizes; ARGV[1] key, ARGV[2]
/// value, ARGV[3] TTL (ms), ARGV[4] max entries, ARGV[5] max bytes,
/// ARGV[6] the entry keys' prefix, ARGV[7] this entry's weight.
const PUT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[3])
local max_entries = tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5])
local weight = tonumber(ARGV[7])
local total = tonumber(redis.call('HGET', KEYS[3], '#total') or '0')
local function drop(m)
  total = total - tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HDEL', KEYS[3], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('UNLINK', ARGV[6] .. m)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 1000, 'LIMIT', 0, 100)) do
  drop(m)
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then drop(ARGV[1]) end
while redis.call('ZCARD', KEYS[2]) > 0
  and (redis.call('ZCARD', KEYS[2]) + 1 > max_entries or total + weight > max_bytes) do
  drop(redis.call('ZRANGE', KEYS[2], 0, 0)[1])
end
if weight > max_bytes then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
if newest and tonumber(newest) >= now then now = tonumber(newest) + 1 end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], weight, '#total', total + weight)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
";

/// The Redis cache tier.
pub struct RedisCache {
    backend: Arc<RedisBackend>,
    script: redis::Script,
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
        Self {
            backend,
            script: redis::Script::new(PUT),
        }
    }

    /// The name of entry `key` of `namespace` (without the deployment prefix).
    fn entry(namespace: &str, key: &str) -> String {
        format!("cache:{{{namespace}}}:{key}")
    }
}

impl SharedCache for RedisCache {
    fn put(
        &self,
        namespace: &str,
        key: &str,
        result: Box<RawValue>,
        ttl: Duration,
        bounds: CacheBounds,
    ) {
        let backend = self.backend.clone();
        let script = self.script.clone();
        let entry = backend.key(&Self::entry(namespace, key));
        let entry_prefix = backend.key(&Self::entry(namespace, ""));
        let index = backend.key(&format!("cache-index:{{{namespace}}}"));
        let sizes = backend.key(&format!("cache-sizes:{{{namespace}}}"));
        let member = key.to_owned();
        tokio::spawn(async move {
            let Ok(value) = serde_json::to_string(&Stored {
                at: now_ms(),
                result,
            }) else {
                return;
            };
            let weight = bounds.weight(value.len());
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let script = &script;
            let stored = backend
                .run(|mut c| {
                    let mut invocation = script.prepare_invoke();
                    invocation
                        .key(&entry)
                        .key(&index)
                        .key(&sizes)
                        .arg(&member)
                        .arg(&value)
                        .arg(ttl)
                        .arg(bounds.max_entries)
                        .arg(bounds.max_bytes)
                        .arg(&entry_prefix)
                        .arg(weight);
                    async move { invocation.invoke_async::<i64>(&mut c).await }
                })
                .await;
            if let Err(e) = stored {
                tracing::debug!(error = %e, "could not share a cached result");
            }
        });
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Option<(Box<RawValue>, Duration)>> {
        Box::pin(async move {
            let key = self.backend.key(&Self::entry(namespace, key));
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
