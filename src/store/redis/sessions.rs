//! [`SessionStore`] on Redis: one key per session, `session:<id>` under
//! `ballast:<deployment>:`, holding the [`SessionRecord`] as JSON with a TTL
//! of the session idle timeout. Replicas refresh it ([`SessionStore::touch`])
//! while the session is active on them, so it expires only when idle on all.
//! Removing a record (DELETE, eviction) also publishes the session's end,
//! so every replica ends its copy ([`RedisBackend::sessions_ended`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::RedisBackend;
use crate::store::{SessionRecord, SessionStore, StoreError};

/// The Redis session store.
pub struct RedisSessionStore {
    backend: Arc<RedisBackend>,
    idle_timeout: Duration,
}

impl RedisSessionStore {
    /// Records on `backend` that expire `idle_timeout` after their last touch.
    pub fn new(backend: Arc<RedisBackend>, idle_timeout: Duration) -> Self {
        Self {
            backend,
            idle_timeout,
        }
    }

    fn key(&self, id: &str) -> String {
        self.backend.key(&format!("session:{id}"))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.idle_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl SessionStore for RedisSessionStore {
    fn save(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Unavailable(format!("unserializable record: {e}")))?;
            let key = self.key(&record.id);
            let ttl = self.ttl_ms();
            self.backend
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(json)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move {
            let key = self.key(id);
            let json: Option<String> = self
                .backend
                .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
                .await?;
            // A record this version cannot read is as good as unknown.
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key(id);
            // Every replica holding a copy ends it (notify.rs).
            let channel = self.backend.ended_channel(id);
            self.backend
                .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await })
                .await?;
            // Apart, not pipelined: a Redis Cluster routes the channel by
            // its own hash slot.
            self.backend
                .run(|mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(1)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
        })
    }

    fn touch<'a>(&'a self, ids: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let ttl = i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX);
            let touches = ids
                .iter()
                .map(|id| {
                    let key = self.key(id);
                    let mut touch = redis::cmd("PEXPIRE");
                    touch.arg(&key).arg(ttl);
                    (key, touch)
                })
                .collect();
            // One pipeline (one per hash slot on a Redis Cluster).
            self.backend
                .run_each(touches)
                .await
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(()))
        })
    }

    fn idle_here<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        // Shared: another replica may be serving it; the TTL decides.
        Box::pin(async { Ok(()) })
    }

    fn len(&self) -> usize {
        0
    }
}
