//! Session records behind a trait: what any replica needs to serve a
//! session it did not create (its negotiated version and the client's
//! `initialize` params). The live parts of a session — requests in flight,
//! open streams — stay in the process that holds them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StoreError;

/// The stored part of a session. Holds no secrets (no tokens).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The `Mcp-Session-Id` (shared with the live session: one allocation).
    pub id: Arc<str>,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The client's `initialize` params, raw (shared with the live session).
    pub initialize_params: Option<Arc<RawValue>>,
    /// Creation time, Unix ms.
    pub created_ms: u64,
}

/// Stored sessions.
///
/// Contract (every implementation):
/// - `save` returns once the record is durable in this store; `load` on any
///   replica sharing the store then finds it.
/// - `remove` makes the id unknown everywhere (a client then gets 404).
/// - Records are bounded in time: an implementation may expire a record
///   that has not been saved or touched for the session idle timeout.
/// - A session that went idle on one replica (`idle_here`) is removed only
///   from a store private to that replica; a shared store keeps it while
///   another replica touches it.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores (or replaces) a record.
    fn save(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The record for `id`, if stored.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;

    /// Forgets `id` everywhere (the client deleted it).
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks `ids` as active now: their records live another idle timeout.
    fn touch<'a>(&'a self, ids: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Session `id` went idle on this replica and was ended here.
    fn idle_here<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Number of records held in this process's memory (for health and
    /// tests; a remote store reports 0).
    fn len(&self) -> usize;

    /// Whether no record is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`SessionStore`] in this process's memory (the default).
#[derive(Default)]
pub struct MemorySessionStore {
    records: Mutex<HashMap<Arc<str>, SessionRecord>>,
}

impl MemorySessionStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, SessionRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionStore for MemorySessionStore {
    fn save(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.lock().insert(record.id.clone(), record);
        Box::pin(async { Ok(()) })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        let record = self.lock().get(id).cloned();
        Box::pin(async move { Ok(record) })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().remove(id);
        Box::pin(async { Ok(()) })
    }

    fn touch<'a>(&'a self, _ids: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), StoreError>> {
        // Records live until removed: this process's sweeper ends them.
        Box::pin(async { Ok(()) })
    }

    fn idle_here<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.remove(id)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The stores a gateway uses; replicas that share them can serve each
/// other's sessions and resume each other's streams.
#[derive(Clone)]
pub struct Stores {
    /// Session records.
    pub sessions: Arc<dyn SessionStore>,
    /// Stream events.
    pub events: Arc<dyn super::EventLog>,
    /// The Redis connection behind both, when `[store] kind = "redis"`
    /// (for `/readyz` and metrics: whether the memory fallback is in use).
    pub redis: Option<Arc<super::redis::RedisBackend>>,
}

impl Stores {
    /// In-memory stores with the given per-stream limits.
    pub fn memory(limits: super::StreamLimits) -> Self {
        Self {
            sessions: Arc::new(MemorySessionStore::default()),
            events: Arc::new(super::MemoryEventLog::new(limits)),
            redis: None,
        }
    }

    /// The stores `config` asks for: memory, or Redis with a memory
    /// fallback. Connects lazily; must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the Redis URL does not parse.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, StoreError> {
        let limits = config.server.stream_limits();
        match config.store.kind {
            crate::config::StoreKind::Memory => Ok(Self::memory(limits)),
            crate::config::StoreKind::Redis => {
                use super::fallback::{FallbackEventLog, FallbackSessionStore};
                use super::redis::{RedisBackend, RedisEventLog, RedisSessionStore};
                let backend = RedisBackend::new(&config.store)?;
                let events = FallbackEventLog::new(
                    RedisEventLog::new(backend.clone(), limits, config.server.resume_window),
                    super::MemoryEventLog::new(limits),
                );
                let sessions = FallbackSessionStore::new(
                    RedisSessionStore::new(backend.clone(), config.server.session_idle_timeout),
                    MemorySessionStore::default(),
                );
                Ok(Self {
                    sessions: Arc::new(sessions),
                    events: Arc::new(events),
                    redis: Some(backend),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn save_load_remove() {
        let s = MemorySessionStore::default();
        let rec = SessionRecord {
            id: "a".into(),
            protocol_version: "2025-11-25".into(),
            initialize_params: None,
            created_ms: 1,
        };
        s.save(rec).await.unwrap();
        assert_eq!(
            s.load("a").await.unwrap().unwrap().protocol_version,
            "2025-11-25"
        );
        s.remove("a").await.unwrap();
        assert!(s.load("a").await.unwrap().is_none());
        assert!(s.is_empty());
    }
}
