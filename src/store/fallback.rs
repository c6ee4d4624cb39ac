//! Redis with a memory fallback: when Redis fails (timeouts, refused
//! connections; its breaker `store:redis` opens), new sessions and new
//! streams go to this process's memory and Ballast keeps serving. When the
//! breaker closes again, new data goes to Redis again; what was placed in
//! memory during the outage stays there for its lifetime (README
//! "Several replicas").
//!
//! A stream that was in Redis when Redis failed mid-stream is *adopted* by
//! memory: its next event continues the seq where Redis stopped, so the
//! readers on this replica go on without a gap.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::redis::{RedisBackend, RedisEventLog, RedisSessionStore};
use super::{
    Batch, EventLog, MemoryEventLog, MemorySessionStore, SessionRecord, SessionStore, StoreError,
};
use crate::observe::metrics;
use crate::resilience::BreakerState;

/// An [`EventLog`] on Redis that falls back to memory.
pub struct FallbackEventLog {
    redis: RedisEventLog,
    memory: MemoryEventLog,
}

impl FallbackEventLog {
    /// Both halves.
    pub fn new(redis: RedisEventLog, memory: MemoryEventLog) -> Self {
        Self { redis, memory }
    }

    /// Moves `stream` to memory after Redis failed mid-stream; `false` if
    /// this process did not open it (then nothing can continue it here).
    fn adopt(&self, stream: &str) -> bool {
        match self.redis.local_stream(stream) {
            Some(l) => {
                tracing::debug!(%stream, last_seq = l.last_seq, "redis failed mid-stream; continuing the stream in memory");
                self.memory.adopt(stream, &l.owner, l.last_seq);
                true
            }
            None => false,
        }
    }
}

impl EventLog for FallbackEventLog {
    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.redis.open(stream, session).await {
                Err(StoreError::Unavailable(_)) => self.memory.open(stream, session).await,
                other => other,
            }
        })
    }

    fn append<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            if self.memory.contains(stream) {
                return self.memory.append(stream, data).await;
            }
            match self.redis.append(stream, data.clone()).await {
                Err(StoreError::Unavailable(_)) if self.adopt(stream) => {
                    self.memory.append(stream, data).await
                }
                other => other,
            }
        })
    }

    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.memory.contains(stream) {
                return self.memory.finish(stream).await;
            }
            match self.redis.finish(stream).await {
                Err(StoreError::Unavailable(_)) if self.adopt(stream) => {
                    self.memory.finish(stream).await
                }
                other => other,
            }
        })
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        Box::pin(async move {
            if self.memory.contains(stream) {
                return self.memory.read(stream, after, wait).await;
            }
            match self.redis.read(stream, after, wait).await {
                // Adopted while this reader waited on Redis.
                Err(StoreError::Unavailable(_)) if self.memory.contains(stream) => {
                    self.memory.read(stream, after, wait).await
                }
                other => other,
            }
        })
    }

    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>> {
        Box::pin(async move {
            if self.memory.contains(stream) {
                return self.memory.owner(stream).await;
            }
            self.redis.owner(stream).await
        })
    }

    fn expire<'a>(
        &'a self,
        resume_window: Duration,
        ended: &'a [Arc<str>],
    ) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            self.memory.expire(resume_window, ended).await
                + self.redis.expire(resume_window, ended).await
        })
    }

    fn len(&self) -> usize {
        self.memory.len() + self.redis.len()
    }
}

/// A [`SessionStore`] on Redis that falls back to memory.
pub struct FallbackSessionStore {
    redis: RedisSessionStore,
    memory: MemorySessionStore,
}

impl FallbackSessionStore {
    /// Both halves.
    pub fn new(redis: RedisSessionStore, memory: MemorySessionStore) -> Self {
        Self { redis, memory }
    }
}

impl SessionStore for FallbackSessionStore {
    fn save(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match self.redis.save(record.clone()).await {
                Err(StoreError::Unavailable(_)) => self.memory.save(record).await,
                other => other,
            }
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move {
            if let Some(record) = self.memory.load(id).await? {
                return Ok(Some(record));
            }
            match self.redis.load(id).await {
                // Unreachable: as good as unknown. The client gets 404 and
                // starts a new session, which this replica can serve now.
                Err(StoreError::Unavailable(e)) => {
                    tracing::debug!(session = %id, error = %e, "session lookup in redis failed");
                    Ok(None)
                }
                other => other,
            }
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.memory.remove(id).await?;
            match self.redis.remove(id).await {
                // Its TTL removes it later.
                Err(StoreError::Unavailable(_)) => Ok(()),
                other => other,
            }
        })
    }

    fn touch<'a>(&'a self, ids: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.redis.touch(ids).await {
                Err(StoreError::Unavailable(_)) => Ok(()),
                other => other,
            }
        })
    }

    fn idle_here<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.memory.idle_here(id).await?;
            self.redis.idle_here(id).await
        })
    }

    fn len(&self) -> usize {
        self.memory.len()
    }
}

/// Whether the stores run on the memory fallback now (the Redis breaker is
/// not closed); also sets the `ballast_store_fallback` gauge.
pub fn on_fallback(backend: &RedisBackend) -> bool {
    let fallback = backend.state() != BreakerState::Closed;
    metrics::store_fallback("redis", fallback);
    fallback
}
