//! Redis with a memory fallback: when Redis fails (timeouts, refused
//! connections; its breaker `store:redis` opens), new sessions and new
//! streams go to this process's memory and Ballast keeps serving. When the
//! breaker closes again, new data goes to Redis again; what was placed in
//! memory during the outage stays there for its lifetime (README
//! "Several replicas").
//!
//! A stream this replica opens for a request is created in Redis with its
//! first event when that comes quickly (one round trip; an answer as one
//! key, group-committed by the batch writer), or by `make_visible` before
//! the client can learn its id. A stream this replica writes is mirrored
//! in memory, and readers here read the mirror: an event enters it only
//! once Redis has it. When Redis fails mid-stream the stream continues in
//! memory from the seq Redis stopped at, so the readers on this replica go
//! on without a gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::redis::{RedisBackend, RedisEventLog, RedisSessionStore};
use super::{
    Batch, EventLog, MemoryEventLog, MemorySessionStore, SessionRecord, SessionStore, StoreError,
};
use crate::observe::metrics;
use crate::resilience::BreakerState;

/// Where a stream this replica writes stands, when not simply in Redis
/// (mirrored here).
enum Place {
    /// Opened for a request, not yet in Redis: its first event opens it
    /// there in the same round trip, or `make_visible` does first.
    Pending { session: Arc<str>, request: Bytes },
    /// Held only in memory: opened during an outage, or moved there when
    /// Redis failed mid-stream.
    MemoryOnly,
    /// In Redis as one key (answered at once), not delivered yet.
    OneShot,
}

/// An [`EventLog`] on Redis that falls back to memory.
///
/// The streams this replica opens in Redis are also copied to memory (a
/// mirror with the same bounds), so their readers here never wait on
/// Redis, and a Redis failure mid-stream loses nothing on this replica:
/// the stream continues in memory from the seq Redis stopped at. Streams
/// other replicas write are read from Redis.
pub struct FallbackEventLog {
    redis: RedisEventLog,
    memory: Arc<MemoryEventLog>,
    /// Streams pending, memory-only or one-shot; the others in `memory`
    /// mirror Redis.
    places: Arc<Mutex<HashMap<Arc<str>, Place>>>,
}

fn lock(places: &Mutex<HashMap<Arc<str>, Place>>) -> MutexGuard<'_, HashMap<Arc<str>, Place>> {
    places.lock().unwrap_or_else(|p| p.into_inner())
}

impl FallbackEventLog {
    /// Both halves.
    pub fn new(redis: RedisEventLog, memory: MemoryEventLog) -> Self {
        Self {
            redis,
            memory: Arc::new(memory),
            places: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn places(&self) -> MutexGuard<'_, HashMap<Arc<str>, Place>> {
        lock(&self.places)
    }

    fn is_memory_only(&self, stream: &str) -> bool {
        matches!(self.places().get(stream), Some(Place::MemoryOnly))
    }

    fn set_memory_only(&self, stream: &str) {
        self.places().insert(stream.into(), Place::MemoryOnly);
    }

    /// Takes `stream`'s pending opening, if it has one.
    fn take_pending(&self, stream: &str) -> Option<(Arc<str>, Bytes)> {
        let mut places = self.places();
        match places.remove(stream)? {
            Place::Pending { session, request } => Some((session, request)),
            other => {
                places.insert(stream.into(), other);
                None
            }
        }
    }

    /// Redis failed for `stream`: from now on it lives in memory only. A
    /// mirrored stream has its events already; a stream this replica took
    /// over from a dead one continues after its last seq. `false` if
    /// nothing here can continue it.
    fn move_to_memory(&self, stream: &str) -> bool {
        if !self.memory.contains(stream) {
            let Some(l) = self.redis.local_stream(stream) else {
                return false;
            };
            self.memory.adopt(stream, &l.owner, l.last_seq);
        }
        tracing::debug!(%stream, "redis failed mid-stream; the stream continues in memory");
        self.set_memory_only(stream);
        true
    }

    /// Appends (and, if `last`, finishes): to Redis and its mirror here, or
    /// to memory alone once Redis failed for this stream.
    async fn push(&self, stream: &str, data: Bytes, last: bool) -> Result<u64, StoreError> {
        let in_memory = |data| async move {
            if last {
                self.memory.append_last(stream, data).await
            } else {
                self.memory.append(stream, data).await
            }
        };
        // One look: memory-only, pending (taken), or in Redis.
        let place = {
            let mut places = self.places();
            let place = places.remove(stream);
            if let Some(Place::MemoryOnly) = place {
                places.insert(stream.into(), Place::MemoryOnly);
            }
            place
        };
        let opening = match place {
            Some(Place::MemoryOnly) => return in_memory(data).await,
            Some(Place::Pending { session, .. }) if last => {
                self.store_one_shot(stream, session, data);
                return Ok(1);
            }
            Some(Place::Pending { session, request }) => Some((session, request)),
            Some(Place::OneShot) | None => None,
        };
        let in_redis = match (opening, last) {
            (Some((session, request)), _) => {
                self.redis
                    .open_and_push(stream, &session, Some(request), data.clone(), last)
                    .await
            }
            (None, true) => self.redis.append_last(stream, data.clone()).await,
            (None, false) => self.redis.append(stream, data.clone()).await,
        };
        match in_redis {
            Ok(seq) => match self.memory.insert(stream, seq, data, last) {
                // Not mirrored here: a stream this replica took over.
                Ok(()) | Err(StoreError::UnknownStream) => Ok(seq),
                Err(e) => Err(e),
            },
            Err(StoreError::Unavailable(_)) if self.move_to_memory(stream) => in_memory(data).await,
            Err(e) => Err(e),
        }
    }

    /// A pending stream's first event is its last (a call answered before
    /// its stream had to be visible): it goes to Redis as one key, in the
    /// batch writer's next pipeline, and into the mirror — where readers
    /// see it — once Redis has it; or, if Redis failed, into memory alone.
    /// Seq 1. The caller does not wait for Redis: whoever reads the stream
    /// does, through the mirror.
    fn store_one_shot(&self, stream: &str, session: Arc<str>, data: Bytes) {
        let memory = self.memory.clone();
        let places = self.places.clone();
        let key: Arc<str> = stream.into();
        let event = data.clone();
        let then = Box::new(move |stored: Result<(), StoreError>| {
            let place = match stored {
                Ok(()) => Place::OneShot,
                Err(e) => {
                    tracing::debug!(stream = %key, error = %e, "redis failed; the answer stays in memory");
                    Place::MemoryOnly
                }
            };
            lock(&places).insert(key.clone(), place);
            // Gone only if its session ended meanwhile.
            let _ = memory.insert(&key, 1, event, true);
        });
        self.redis.store_one_shot(stream, session, data, then);
    }

    async fn opened(
        &self,
        stream: &str,
        session: &str,
        in_redis: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match in_redis {
            Ok(()) => self.memory.open(stream, session).await,
            Err(StoreError::Unavailable(_)) => {
                self.set_memory_only(stream);
                self.memory.open(stream, session).await
            }
            Err(e) => Err(e),
        }
    }
}

impl EventLog for FallbackEventLog {
    /// Redis's answer, also while new streams go to memory: the streams
    /// already in Redis are still shared.
    fn is_shared(&self) -> bool {
        self.redis.is_shared()
    }

    /// Redis's grace, also while new streams go to memory.
    fn first_event_grace(&self) -> Duration {
        self.redis.first_event_grace()
    }

    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let in_redis = self.redis.open(stream, session).await;
            self.opened(stream, session, in_redis).await
        })
    }

    fn open_for_request<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
        request: Bytes,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // Deferred: a quick answer opens it in Redis with its first
            // event (one round trip); `make_visible` opens it otherwise.
            self.memory.open(stream, session).await?;
            let place = Place::Pending {
                session: session.into(),
                request,
            };
            self.places().insert(stream.into(), place);
            Ok(())
        })
    }

    fn make_visible<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some((session, request)) = self.take_pending(stream) else {
                return Ok(());
            };
            match self.redis.open_for_request(stream, &session, request).await {
                Err(StoreError::Unavailable(_)) => {
                    self.set_memory_only(stream);
                    Ok(())
                }
                other => other,
            }
        })
    }

    fn claim_orphan<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::Orphan>, StoreError>> {
        if self.memory.contains(stream) {
            // Written here: not an orphan.
            return Box::pin(async { Ok(None) });
        }
        self.redis.claim_orphan(stream)
    }

    fn append<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.push(stream, data, false))
    }

    fn append_last<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.push(stream, data, true))
    }

    fn reader(&self, stream: &str, attached: bool) {
        self.memory.reader(stream, attached);
    }

    fn delivered(&self, stream: &str) {
        // Both copies go early, as in memory alone.
        self.memory.delivered(stream);
        let place = self.places().remove(stream);
        match place {
            Some(Place::OneShot) => self.redis.shorten(stream, true),
            None => self.redis.shorten(stream, false),
            Some(other) => {
                self.places().insert(stream.into(), other);
            }
        }
    }

    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.is_memory_only(stream) {
                return self.memory.finish(stream).await;
            }
            match self.redis.finish(stream).await {
                Ok(()) if self.memory.contains(stream) => self.memory.finish(stream).await,
                Err(StoreError::Unavailable(_)) if self.move_to_memory(stream) => {
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
            match self.memory.read(stream, after, wait).await {
                Err(StoreError::UnknownStream) => {}
                // The mirror gave its copy up for the memory budget; Redis
                // still has the events unless the stream lived only here.
                Err(StoreError::EventsLost) if !self.is_memory_only(stream) => {}
                held_here => return held_here,
            }
            match self.redis.read(stream, after, wait).await {
                // Moved to memory while this reader waited on Redis.
                Err(StoreError::Unavailable(_)) if self.memory.contains(stream) => {
                    self.memory.read(stream, after, wait).await
                }
                other => other,
            }
        })
    }

    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>> {
        Box::pin(async move {
            if let Some(owner) = self.memory.owner(stream).await? {
                return Ok(Some(owner));
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
            let dropped = self.memory.expire(resume_window, ended).await;
            self.redis.expire(resume_window, ended).await;
            self.places().retain(|s, _| self.memory.contains(s));
            dropped
        })
    }

    fn len(&self) -> usize {
        self.memory.len()
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
