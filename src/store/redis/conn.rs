//! The one connection type the stores run their commands on: a
//! standalone Redis's `ConnectionManager`, or a Redis Cluster's
//! connection (which routes each command to the node serving its key's
//! hash slot and follows `MOVED`/`ASK`). Both are cheap to clone
//! (multiplexed) and connect lazily.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A multiplexed connection to a standalone Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum Conn {
    /// A standalone primary; reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster. A pipeline sent on it must keep to one hash slot
    /// (see [`super::RedisBackend::run_each`]).
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `pipeline`, whose replies are ignored: on a Redis Cluster to
    /// the primary the cluster client knows for `slot` (so it may hold
    /// commands for other slots of that node); on a standalone Redis to it.
    ///
    /// # Errors
    /// The first error a command answered (`MOVED` for one whose slot the
    /// node does not serve), or the connection's.
    pub async fn send_ignoring_replies(
        &mut self,
        pipeline: Pipeline,
        slot: u16,
    ) -> RedisResult<()> {
        match self {
            Self::Single(c) => pipeline.query_async(c).await,
            Self::Cluster(c) => {
                let n = pipeline.len();
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                match c
                    .route_pipeline(pipeline, 0, n, route)
                    .await?
                    .into_iter()
                    .find_map(|v| match v {
                        Value::ServerError(e) => Some(e),
                        _ => None,
                    }) {
                    Some(e) => Err(e.into()),
                    None => Ok(()),
                }
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
