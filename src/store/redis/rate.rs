//! [`SharedRateLimit`] on Redis: GCRA (the generic cell rate algorithm, as
//! in redis-cell) in one Lua script per check, so every replica's calls
//! draw from the same bucket. Key `rate:<namespace>:<key>` holds the
//! theoretical arrival time (ms, Redis's own clock) and expires when the
//! bucket is full again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::RedisBackend;
use crate::resilience::SharedRateLimit;

/// KEYS[1] bucket; ARGV[1] ms per token, ARGV[2] burst. Returns
/// `{1, 0}` (allowed) or `{0, wait_ms}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, 0}
";

/// The Redis rate-limit tier.
pub struct RedisRateLimit {
    backend: Arc<RedisBackend>,
    script: redis::Script,
}

impl RedisRateLimit {
    /// Buckets on `backend`.
    pub fn new(backend: Arc<RedisBackend>) -> Self {
        Self {
            backend,
            script: redis::Script::new(GCRA),
        }
    }
}

impl SharedRateLimit for RedisRateLimit {
    fn check<'a>(
        &'a self,
        key: &'a str,
        per_sec: f64,
        burst: u32,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, ()>> {
        Box::pin(async move {
            let bucket = self.backend.key(&format!("rate:{key}"));
            let interval_ms = 1000.0 / per_sec;
            let script = &self.script;
            let (allowed, wait_ms): (i64, i64) = self
                .backend
                .run(|mut c| async move {
                    script
                        .key(&bucket)
                        .arg(interval_ms)
                        .arg(burst)
                        .invoke_async(&mut c)
                        .await
                })
                .await
                .map_err(|_| ())?;
            if allowed == 1 {
                Ok(Ok(()))
            } else {
                Ok(Err(Duration::from_millis(
                    u64::try_from(wait_ms).unwrap_or(0).max(1),
                )))
            }
        })
    }
}
