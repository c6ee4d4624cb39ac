//! The one connection type the stores run their commands on: a
//! standalone Redis's `ConnectionManager`, or a Redis Cluster's
//! connection (which routes each command to the node serving its key's
//! hash slot and follows `MOVED`/`ASK`). Both are cheap to clone
//! (multiplexed) and connect lazily.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A multiplexed connection to a standalone Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum Conn {
    /// A standalone primary; reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster. A pipeline sent on it must keep to one hash slot
    /// (see [`super::RedisBackend::run_each`]).
    Cluster(ClusterConnection),
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
