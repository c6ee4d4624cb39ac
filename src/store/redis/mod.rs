//! Redis (or Valkey) implementations of the stores, shared by every replica
//! that uses the same Redis and deployment name.
//!
//! - [`RedisBackend`] — one lazily connected `ConnectionManager`
//!   (DEPENDENCIES.md: the eager constructor blocks for seconds when Redis
//!   is down), every operation bounded by `op_timeout` and guarded by a
//!   circuit breaker named `store:redis`, and the key namespace
//!   `ballast:<deployment>:`.
//! - [`RedisEventLog`] (`events.rs`) — streams as Redis Streams.
//! - [`RedisSessionStore`] (`sessions.rs`) — records as JSON strings with a TTL.
//! - [`RedisCache`] (`cache.rs`) and [`RedisRateLimit`] (`rate.rs`) — the
//!   stale cache's shared tier and shared rate-limit buckets; see [`shared`].
//!
//! Every key has a TTL; nothing secret is stored (session records hold the
//! negotiated version and the client's `initialize` params, never tokens).

mod batch;
mod cache;
mod events;
mod notify;
mod rate;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

pub use self::batch::{EXPIRE_FLUSH, SetBatcher, Then};
pub use self::cache::RedisCache;
pub use self::events::{HEARTBEAT, LIVE_TTL, Local, REPLICA_TTL, RedisEventLog};
pub use self::notify::POLL;
pub use self::rate::RedisRateLimit;
pub use self::sessions::RedisSessionStore;
use super::StoreError;
use crate::config::StoreConfig;
use crate::resilience::{Breaker, BreakerState};

/// A connection to Redis behind a timeout and a breaker.
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    op_timeout: Duration,
    breaker: Arc<Breaker>,
    replica: Arc<str>,
    /// Whether the Redis Cluster ERROR was logged (once per process).
    cluster_logged: std::sync::atomic::AtomicBool,
}

/// The breaker's name in logs, metrics and `/readyz`.
pub const BREAKER_NAME: &str = "store:redis";

impl RedisBackend {
    /// Prepares a connection to `config.url` without connecting (the first
    /// operation connects; a Redis that is down costs only that operation's
    /// timeout, then the breaker).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the URL does not parse.
    pub fn new(config: &StoreConfig) -> Result<Arc<Self>, StoreError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("bad redis url: {e}")))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Arc::new(Self {
            client,
            conn,
            prefix: format!("ballast:{}:", config.deployment),
            op_timeout: config.op_timeout,
            breaker: Breaker::new(BREAKER_NAME, config.breaker.clone()),
            replica: crate::store::new_stream_id(),
            cluster_logged: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// `ballast:<deployment>:<suffix>`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// This process's replica id (16 hex digits, random per start): the
    /// writer recorded on the streams it opens, and its liveness key
    /// `replica:<id>`.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The key namespace, `ballast:<deployment>:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The breaker's state: anything but closed means new data goes to
    /// the memory fallback.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one operation on a clone of the shared connection, within
    /// `op_timeout`, if the breaker lets it through; a timeout or a Redis
    /// I/O error counts as a failure for the breaker.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: breaker open, timeout, or a Redis error.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let permit = self
            .breaker
            .acquire()
            .map_err(|open| StoreError::Unavailable(format!("{} open", open.breaker)))?;
        match tokio::time::timeout(self.op_timeout, op(self.conn.clone())).await {
            Ok(Ok(v)) => {
                permit.record(false);
                Ok(v)
            }
            Ok(Err(e)) => {
                // Server-side answers (a script error, a wrong type) say
                // nothing about Redis being reachable. A cluster redirect
                // does: this Redis cannot hold our keys (see `cluster`).
                let unreachable = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                    || e.is_cluster_error();
                if e.is_cluster_error() {
                    self.cluster_refused();
                }
                permit.record(unreachable);
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                permit.record(true);
                Err(StoreError::Unavailable(format!(
                    "redis did not answer within {:?}",
                    self.op_timeout
                )))
            }
        }
    }

    /// Redis answered as a Redis Cluster node (`MOVED`, `ASK`, `TRYAGAIN`,
    /// `CLUSTERDOWN`): Redis Cluster is not supported (a stream's keys and
    /// the group-committed pipelines span hash slots). Each such answer
    /// counts as a failure for the breaker, so Ballast runs on the memory
    /// fallback; logs one ERROR per process saying so.
    fn cluster_refused(&self) {
        if !self
            .cluster_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                breaker = BREAKER_NAME,
                "the redis store's url points at a Redis Cluster node, and Redis Cluster is \
                 not supported: give [store] url a standalone Redis or Valkey (a primary); \
                 until then new sessions and streams stay in this replica's memory"
            );
        }
    }

    /// A dedicated connection for pub/sub (not multiplexed).
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }
}

/// The tiers replicas share through `backend`: the stale cache and the
/// rate-limit buckets.
pub fn shared(backend: &Arc<RedisBackend>) -> crate::resilience::Shared {
    crate::resilience::Shared {
        cache: Arc::new(RedisCache::new(backend.clone())),
        rate: Arc::new(RedisRateLimit::new(backend.clone())),
    }
}
