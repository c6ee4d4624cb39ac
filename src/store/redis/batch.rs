//! Group commit for one-event streams (the `o:` keys, see `events.rs`):
//! the `SET`s of calls answered at about the same time go to Redis as one
//! pipeline, one round trip and one socket write for all of them, with one
//! pipeline in flight at a time. `SET`s that come while a pipeline is in
//! flight go in the next one, so a busy replica sends few large writes
//! instead of many small ones (fewer syscalls on both sides), and a quiet
//! one sends each `SET` at once (a batch of one: no added wait). On a
//! Redis Cluster a batch goes as one pipeline per node
//! ([`RedisBackend::run_each`]).
//!
//! The `PEXPIRE`s that shorten delivered streams' TTLs ride along with the
//! next pipeline, unanswered. They do not wake the batching task; it wakes
//! at least every [`EXPIRE_FLUSH`] and then sends any that wait.
//!
//! Each `SET` comes with what to do once Redis answered it (`then`, run on
//! the batching task): the caller puts the event where readers see it only
//! there, so Redis has it before any socket does. A failed pipeline fails
//! every `SET` in it (each then falls back to memory, as a failed `SET`
//! would).

use std::io::Write;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::RedisBackend;
use crate::store::StoreError;

/// Most `SET`s in one pipeline.
const MAX_BATCH: usize = 256;

/// Longest a `PEXPIRE` waits for a pipeline to ride with: 100 ms.
pub const EXPIRE_FLUSH: Duration = Duration::from_millis(100);

/// `PEXPIRE`s waiting for the next pipeline: (key, TTL ms).
type Expires = Arc<Mutex<Vec<(String, u64)>>>;

fn take(expires: &Expires) -> Vec<(String, u64)> {
    std::mem::take(&mut *expires.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A value written as `<head>\n<body>`, straight into the command (no
/// joined copy first).
pub struct Joined {
    /// Before the newline (it must not hold one).
    pub head: Arc<str>,
    /// After it.
    pub body: Bytes,
}

impl redis::ToRedisArgs for Joined {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        let mut arg = out.writer_for_next_arg();
        // Writing to a command's memory buffer cannot fail.
        let _ = arg.write_all(self.head.as_bytes());
        let _ = arg.write_all(b"\n");
        let _ = arg.write_all(&self.body);
    }
}

/// What runs once Redis answered a `SET` (or its pipeline failed).
pub type Then = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// `SET key value PX ttl_ms`, and what to do once it is answered.
struct Set {
    key: String,
    value: Joined,
    ttl_ms: u64,
    then: Then,
}

/// The sending side; the task that writes the batches ends when it drops.
pub struct SetBatcher {
    tx: mpsc::UnboundedSender<Set>,
    expires: Expires,
}

impl SetBatcher {
    /// Spawns the batching task on the current tokio runtime (panics
    /// outside one, as `tokio::spawn` does). It holds `backend` weakly and
    /// ends when the batcher or the backend is dropped.
    pub fn new(backend: &Arc<RedisBackend>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let expires = Expires::default();
        tokio::spawn(run(Arc::downgrade(backend), rx, expires.clone()));
        Self { tx, expires }
    }

    /// `SET key value PX ttl_ms` in the next pipeline; `then` runs on the
    /// batching task with Redis's answer — `Err(StoreError::Unavailable)`
    /// when the pipeline failed (breaker open, timeout, Redis error) — or
    /// at once, with that error, if the batching task is gone. `then` must
    /// be quick and must not block: the next batch waits for it.
    pub fn set(&self, key: String, value: Joined, ttl_ms: u64, then: Then) {
        let set = Set {
            key,
            value,
            ttl_ms,
            then,
        };
        if let Err(mpsc::error::SendError(Set { then, .. })) = self.tx.send(set) {
            then(Err(StoreError::Unavailable(
                "redis batch writer stopped".into(),
            )));
        }
    }

    /// `PEXPIRE key ttl_ms` with the next pipeline (at most
    /// [`EXPIRE_FLUSH`] later), without waiting for it. A lost one (Redis
    /// failed) leaves the longer TTL.
    pub fn expire(&self, key: String, ttl_ms: u64) {
        self.expires
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, ttl_ms));
    }
}

async fn run(backend: Weak<RedisBackend>, mut rx: mpsc::UnboundedReceiver<Set>, expires: Expires) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wakes at least every EXPIRE_FLUSH to send waiting PEXPIREs.
        let received =
            tokio::time::timeout(EXPIRE_FLUSH, rx.recv_many(&mut batch, MAX_BATCH)).await;
        if received == Ok(0) {
            return; // the batcher was dropped
        }
        let expiring = take(&expires);
        if batch.is_empty() && expiring.is_empty() {
            continue;
        }
        let Some(b) = backend.upgrade() else { return };
        let mut cmds = Vec::with_capacity(batch.len() + expiring.len());
        let mut thens = Vec::with_capacity(batch.len());
        for Set {
            key,
            value,
            ttl_ms,
            then,
        } in batch.drain(..)
        {
            // Sized once: SET, key, value, PX, ttl.
            let size = 3 + key.len() + value.head.len() + 1 + value.body.len() + 2 + 20;
            let mut set = redis::Cmd::with_capacity(5, size);
            set.arg("SET").arg(&key).arg(value).arg("PX").arg(ttl_ms);
            cmds.push((key, set));
            thens.push(then);
        }
        for (key, ttl_ms) in expiring {
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&key).arg(ttl_ms);
            cmds.push((key, expire));
        }
        // One pipeline (one per hash slot on a Redis Cluster).
        let sent = b.run_each(cmds).await;
        drop(b);
        for (then, sent) in thens.into_iter().zip(sent) {
            then(sent);
        }
    }
}
