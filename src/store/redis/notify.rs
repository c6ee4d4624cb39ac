//! Waking readers of a Redis-held stream when an event is appended: at once
//! for appends made by this process, and through Redis pub/sub (one
//! `PSUBSCRIBE` connection per process) for appends made by another
//! replica — so a stream whose call runs on replica A is followed on B as
//! soon as A appends. Readers also re-check on a short poll, so a lost
//! pub/sub message (Redis restarting) only delays them. On a Redis Cluster
//! the subscription is on one node (classic `PUBLISH` reaches every node);
//! when that node is lost the listener moves to the next seed node. The
//! same subscription carries sessions ended on any replica
//! (`n:ended:<session>`), handed to [`RedisBackend::sessions_ended`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use super::RedisBackend;

/// Longest a reader waits between checks of Redis, in case a pub/sub
/// message was lost.
pub const POLL: Duration = Duration::from_millis(500);

/// Per-stream wake-ups for readers waiting in this process.
#[derive(Default)]
pub(super) struct Waiters {
    by_stream: Mutex<HashMap<Arc<str>, Weak<Notify>>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Weak<Notify>>> {
        self.by_stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wake-up for `stream`, shared by every reader waiting on it here;
    /// dropped with its last reader.
    pub(super) fn register(&self, stream: &str) -> Arc<Notify> {
        let mut map = self.lock();
        if let Some(n) = map.get(stream).and_then(Weak::upgrade) {
            return n;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let n = Arc::new(Notify::new());
        map.insert(stream.into(), Arc::downgrade(&n));
        n
    }

    /// Wakes every reader of `stream` in this process.
    pub(super) fn wake(&self, stream: &str) {
        let n = self.lock().get(stream).and_then(Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

/// The pub/sub channel of `stream`'s appends.
pub(super) fn channel(backend: &RedisBackend, stream: &str) -> String {
    backend.key(&format!("n:{stream}"))
}

/// Listens for appends made by any replica and wakes local readers, until
/// `stop` is cancelled (the event log was dropped). Reconnects with a
/// capped backoff while Redis is down.
pub(super) async fn listen(
    backend: Weak<RedisBackend>,
    waiters: Weak<Waiters>,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::select! {
        () = listen_until_dropped(backend, waiters) => {}
        () = stop.cancelled() => {}
    }
}

async fn listen_until_dropped(backend: Weak<RedisBackend>, waiters: Weak<Waiters>) {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0_usize;
    // Subscriptions failed in a row, and whether that was reported.
    let (mut failed, mut warned) = (0_usize, false);
    loop {
        let Some(b) = backend.upgrade() else { return };
        let pattern = b.key("n:*");
        let strip = b.key("n:");
        let nodes = b.pubsub_nodes.len();
        let store_up = b.state() == crate::resilience::BreakerState::Closed;
        let subscribed = async {
            let mut pubsub = b.pubsub(attempt).await?;
            pubsub.psubscribe(&pattern).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::time::timeout(Duration::from_secs(2), subscribed).await;
        drop(b);
        if pubsub.as_ref().is_ok_and(Result::is_ok) {
            if warned {
                tracing::info!("redis pub/sub subscribed again");
            }
            (failed, warned) = (0, false);
        } else {
            failed += 1;
            // Every node tried, and the store itself answers: the nodes
            // listed in `url` are gone (a cluster that was reshaped), not
            // Redis. Readers on other replicas' streams now wait for
            // their poll instead of a wake-up.
            if failed >= nodes && store_up && !warned {
                warned = true;
                tracing::warn!(
                    nodes,
                    "redis pub/sub: no node listed in [store] url takes a subscription; \
                     readers of streams written by other replicas fall back to polling"
                );
            }
        }
        match pubsub {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(w) = waiters.upgrade() else { return };
                    let Some(name) = msg.get_channel_name().strip_prefix(&strip) else {
                        continue;
                    };
                    match name.strip_prefix(super::ENDED_PREFIX) {
                        Some(session) => {
                            if let Some(b) = backend.upgrade() {
                                b.session_ended(session);
                            }
                        }
                        None => w.wake(name),
                    }
                }
                tracing::debug!("redis pub/sub connection closed; resubscribing");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "redis pub/sub subscribe failed"),
            Err(_) => tracing::debug!("redis pub/sub subscribe timed out"),
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
