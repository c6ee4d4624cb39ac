//! Redis (or Valkey) implementations of the stores, shared by every replica
//! that uses the same Redis and deployment name.
//!
//! - [`RedisBackend`] — one lazily connected connection ([`Conn`]): a
//!   `ConnectionManager` for a standalone Redis, a cluster connection for a
//!   Redis Cluster ([`Target`], `target.rs`); DEPENDENCIES.md: the eager
//!   constructors block for seconds when Redis is down. Every operation is
//!   bounded by `op_timeout` and guarded by a circuit breaker named
//!   `store:redis`; keys live under `ballast:<deployment>:`.
//! - Redis Cluster: every multi-key command and script touches one
//!   stream's keys, which share a hash slot (`{<stream>}` hash tags); writes
//!   that span streams or sessions go through [`RedisBackend::run_each`],
//!   one pipeline per node (`slots.rs`: the slot map it groups by);
//!   pub/sub uses one node (classic `PUBLISH` reaches every node of a
//!   cluster).
//! - [`RedisEventLog`] (`events.rs`) — streams as Redis Streams.
//! - [`RedisSessionStore`] (`sessions.rs`) — records as JSON strings with a TTL.
//! - [`RedisCache`] (`cache.rs`) and [`RedisRateLimit`] (`rate.rs`) — the
//!   stale cache's shared tier and shared rate-limit buckets; see [`shared`].
//!
//! Every key has a TTL; nothing secret is stored (session records hold the
//! negotiated version and the client's `initialize` params, never tokens).

mod batch;
mod cache;
mod conn;
mod events;
mod notify;
mod rate;
mod sessions;
mod slots;
mod target;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

pub use self::batch::{EXPIRE_FLUSH, SetBatcher, Then};
pub use self::cache::RedisCache;
pub use self::conn::Conn;
pub use self::events::{
    HEARTBEAT, LIVE_TTL, Local, REPLICA_TTL, RedisEventLog, SHARED_FIRST_EVENT_GRACE,
};
pub use self::notify::POLL;
pub use self::rate::RedisRateLimit;
pub use self::sessions::RedisSessionStore;
pub use self::target::{BadUrl, Target};
use super::StoreError;
use crate::config::StoreConfig;
use crate::resilience::{Breaker, BreakerState};

/// A connection to Redis behind a timeout and a breaker.
pub struct RedisBackend {
    /// One client per node a pub/sub connection may use (the standalone
    /// Redis, or a cluster's seed nodes, tried in turn).
    pubsub_nodes: Vec<redis::Client>,
    conn: Conn,
    prefix: String,
    op_timeout: Duration,
    breaker: Arc<Breaker>,
    replica: Arc<str>,
    /// Whether the Redis Cluster ERROR was logged (once per process).
    cluster_logged: std::sync::atomic::AtomicBool,
    /// A Redis Cluster's slot → node map, for grouping batches by node.
    slots: slots::SlotMap,
    /// Bumped each time Redis is found to have lost keys this replica had
    /// written (see [`RedisBackend::keys_lost`]).
    lost: tokio::sync::watch::Sender<u64>,
    /// Sessions ended on any replica (DELETE, eviction), as told by pub/sub
    /// (see [`RedisBackend::sessions_ended`]).
    ended: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// Ended-session notices a slow receiver may lag behind by before it
/// misses some (count).
const ENDED_BACKLOG: usize = 1024;

/// Ended-session channels share the stream channels' `n:` pattern (one
/// subscription); stream ids are hex, so this prefix tells them apart.
pub(crate) const ENDED_PREFIX: &str = "ended:";

/// The breaker's name in logs, metrics and `/readyz`.
pub const BREAKER_NAME: &str = "store:redis";

impl RedisBackend {
    /// Prepares a connection to `config.url` without connecting (the first
    /// operation connects; a Redis that is down costs only that operation's
    /// timeout, then the breaker).
    ///
    /// A `redis+cluster://` URL ([`Target`]) gives a Redis Cluster
    /// connection, which also connects on first use.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the URL does not parse.
    pub fn new(config: &StoreConfig) -> Result<Arc<Self>, StoreError> {
        let bad =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("bad redis url: {e}"));
        let target = Target::parse(&config.url).map_err(|e| bad(&e))?;
        let pubsub_nodes = target
            .nodes()
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let conn = match &target {
            Target::Single(_) => {
                let manager_config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.op_timeout))
                    .set_response_timeout(Some(config.op_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(100));
                let client = pubsub_nodes[0].clone();
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, manager_config)
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                )
            }
            Target::Cluster(nodes) => {
                // No request is sent twice (retries 0): the cluster client
                // re-sends a request whose connection failed after it was
                // written, and an append is not idempotent (a re-sent one
                // would store its event twice). A command that meets a
                // redirect (failover, resharding) fails instead, the slot
                // map is rebuilt for the next one, and the caller falls
                // back to memory for that write, as when a standalone
                // Redis fails; the `ConnectionManager` never re-sends
                // either.
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .retries(0)
                    .build()
                    .map_err(|e| bad(&e))?;
                let cluster_config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(config.op_timeout)
                    .set_response_timeout(config.op_timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(cluster_config))
            }
        };
        Ok(Arc::new(Self {
            pubsub_nodes,
            conn,
            prefix: format!("ballast:{}:", config.deployment),
            op_timeout: config.op_timeout,
            breaker: Breaker::new(BREAKER_NAME, config.breaker.clone()),
            replica: crate::store::new_stream_id(),
            cluster_logged: std::sync::atomic::AtomicBool::new(false),
            slots: slots::SlotMap::default(),
            lost: tokio::sync::watch::Sender::new(0),
            ended: tokio::sync::broadcast::Sender::new(ENDED_BACKLOG),
        }))
    }

    /// The ids of sessions ended on any replica (a DELETE or an eviction
    /// there: the record is removed and `PUBLISH`ed on
    /// `n:ended:<session>`), so that this replica ends its copy
    /// before serving it again. A receiver more than 1,024 notices behind
    /// misses the oldest (those sessions end here on their idle timeout).
    pub fn sessions_ended(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.ended.subscribe()
    }

    /// The pub/sub channel a session's end is published on.
    pub(crate) fn ended_channel(&self, session: &str) -> String {
        self.key(&format!("n:{ENDED_PREFIX}{session}"))
    }

    /// A session ended on some replica (from pub/sub).
    pub(crate) fn session_ended(&self, session: &str) {
        let _ = self.ended.send(session.into());
    }

    /// Changes each time Redis is found to have lost keys this replica
    /// wrote (FLUSHALL, a restart without persistence, eviction): by the
    /// heartbeat (this replica's `canary:<replica>` key, kept for an hour,
    /// was gone) or by an append to a live stream. Records this replica
    /// holds are written back on it.
    pub fn keys_lost(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lost.subscribe()
    }

    /// Says that Redis lost keys this replica wrote.
    pub(crate) fn note_keys_lost(&self) {
        self.lost.send_modify(|n| *n += 1);
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

    /// Whether the store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
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
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let permit = self.permit()?;
        let (result, unreachable) = self.bounded(op(self.conn.clone())).await;
        permit.record(unreachable);
        result
    }

    fn permit(&self) -> Result<crate::resilience::Permit, StoreError> {
        self.breaker
            .acquire()
            .map_err(|open| StoreError::Unavailable(format!("{} open", open.breaker)))
    }

    /// `op` within `op_timeout`; also whether its failure says Redis is
    /// unreachable (what the breaker counts).
    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> (Result<T, StoreError>, bool) {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                // Server-side answers (a script error, a wrong type) say
                // nothing about Redis being reachable. A cluster error
                // does: a redirect the cluster connection could not follow
                // (or a standalone URL naming a cluster node, see
                // `cluster_refused`), or a cluster that is down.
                let unreachable = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                    || e.is_cluster_error();
                if e.is_cluster_error() {
                    self.cluster_refused();
                }
                (Err(StoreError::Unavailable(e.to_string())), unreachable)
            }
            Err(_) => (
                Err(StoreError::Unavailable(format!(
                    "redis did not answer within {:?}",
                    self.op_timeout
                ))),
                true,
            ),
        }
    }

    /// Commands that each touch one key (`(key, command)`; replies are
    /// ignored), sent as few pipelines as the store allows: one on a
    /// standalone Redis; on a Redis Cluster one per primary (by the slot
    /// map, `slots.rs`; one per hash slot while there is none),
    /// concurrently, each within `op_timeout`. The whole
    /// call is one breaker call: it fails if any pipeline found Redis
    /// unreachable. Returns, per command in order, its pipeline's result.
    pub async fn run_each(&self, cmds: Vec<(String, redis::Cmd)>) -> Vec<Result<(), StoreError>> {
        let n = cmds.len();
        if n == 0 {
            return Vec::new();
        }
        if !self.is_cluster() {
            let mut pipe = redis::Pipeline::with_capacity(n);
            for (_, cmd) in cmds {
                pipe.add_command(cmd).ignore();
            }
            let sent = self
                .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await;
            return vec![sent; n];
        }
        let (keys, cmds): (Vec<String>, Vec<redis::Cmd>) = cmds.into_iter().unzip();
        let slots: Vec<u16> = keys.iter().map(|k| slots::slot_of(k.as_bytes())).collect();
        let permit = match self.permit() {
            Ok(p) => p,
            Err(open) => return vec![Err(open); n],
        };
        let map = self.slot_map().await;
        let groups = slots::group(&slots, map.as_deref());
        let mut cmds: Vec<Option<redis::Cmd>> = cmds.into_iter().map(Some).collect();
        let sends = groups.into_iter().map(|g| {
            let mut pipe = redis::Pipeline::with_capacity(g.indices.len());
            for &i in &g.indices {
                if let Some(cmd) = cmds[i].take() {
                    pipe.add_command(cmd).ignore();
                }
            }
            let mut c = self.conn.clone();
            async move {
                let (sent, unreachable) = self.bounded(c.send_ignoring_replies(pipe, g.slot)).await;
                (g.indices, sent, unreachable)
            }
        });
        let mut results = vec![Ok(()); n];
        let mut any_unreachable = false;
        for (indices, sent, unreachable) in futures_util::future::join_all(sends).await {
            any_unreachable |= unreachable;
            if sent.is_err() && map.is_some() {
                // Perhaps grouped by a stale map (resharding, failover).
                self.slots.invalidate();
            }
            for i in indices {
                results[i] = sent.clone();
            }
        }
        permit.record(any_unreachable);
        results
    }

    /// The cluster's slot map to group a batch by, read (`CLUSTER SLOTS`,
    /// within `op_timeout`) when there is none or it is old; `None` while
    /// it cannot be read (see `slots.rs`). Only for a batch that has its
    /// breaker permit, and not a breaker call itself: any node answers it,
    /// so its success would hide from the breaker that the batch's node is
    /// lost (a lost node's batches fail, a re-read follows each, and the
    /// breaker would never see failures in a row).
    async fn slot_map(&self) -> Option<Arc<slots::NodeMap>> {
        let now = tokio::time::Instant::now();
        match self.slots.current(now) {
            slots::Lookup::Fresh(map) => Some(map),
            slots::Lookup::Wait => None,
            slots::Lookup::Read => {
                let mut c = self.conn.clone();
                let (reply, _) = self
                    .bounded(async move {
                        redis::cmd("CLUSTER")
                            .arg("SLOTS")
                            .query_async::<redis::Value>(&mut c)
                            .await
                    })
                    .await;
                let map = reply.ok().and_then(|r| slots::NodeMap::parse(&r, now));
                self.slots.store(map, now)
            }
        }
    }

    /// A standalone `url` answered as a Redis Cluster node (`MOVED`, `ASK`,
    /// `TRYAGAIN`, `CLUSTERDOWN`): a cluster needs a `redis+cluster://`
    /// URL. Each such answer counts as a failure for the breaker, so
    /// Ballast runs on the memory fallback; logs one ERROR per process
    /// saying so.
    fn cluster_refused(&self) {
        if !self.is_cluster()
            && !self
                .cluster_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                breaker = BREAKER_NAME,
                "the redis store's url points at a Redis Cluster node: write it as \
                 redis+cluster://host:port[,host:port…] (or rediss+cluster://); until then \
                 new sessions and streams stay in this replica's memory"
            );
        }
    }

    /// A dedicated connection for pub/sub (not multiplexed), on node
    /// `attempt` modulo the nodes known ([`Target::nodes`]), so a listener
    /// that lost its node tries the next one.
    async fn pubsub(&self, attempt: usize) -> redis::RedisResult<redis::aio::PubSub> {
        let node = &self.pubsub_nodes[attempt % self.pubsub_nodes.len()];
        node.get_async_pubsub().await
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
