//! Connection limits (issue 13 item 7): the cap on open client
//! connections (`server.max_connections`), the deadline for a
//! connection's first request, and the descriptor limit raised at start.
//!
//! A client that opens connections and never finishes a request cannot
//! take every descriptor: each connection needs a slot; at the cap a new
//! connection waits up to [`ADMISSION_WAIT`] for one (a bounded number
//! wait at once), then is closed. Slots come back as connections end:
//! request bodies have `server.body_read_timeout`, HTTP/1 headers
//! `server.header_read_timeout`, and a connection that has not sent its
//! first request within `header_read_timeout` (HTTP/1 or HTTP/2; nothing
//! at all, or an HTTP/2 preface without a request) is closed, as is an
//! HTTP/2 connection with no request in flight for as long ([`Activity`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Longest a new connection waits for a slot at the cap before it is closed.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Open-connection slots.
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max: usize,
}

impl ConnectionLimit {
    /// `max` slots; at most a quarter as many connections (at least one)
    /// wait for a slot at once, so waiting costs a bounded number of
    /// descriptors too.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            waiting: AtomicUsize::new(0),
            max_waiting: (max / 4).max(1),
            max,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection, held until the permit drops: at once if
    /// one is free, else within [`ADMISSION_WAIT`]. `None`: the connection
    /// is to be closed (no slot in time, or too many already waiting).
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let got = tokio::time::timeout(ADMISSION_WAIT, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        got.ok().and_then(Result::ok)
    }
}

/// What one connection is doing, for its header deadline: until its first
/// request arrives it has `header_read_timeout` to live (HTTP/1 or 2);
/// an HTTP/2 connection with no request in flight — a response counts
/// until its body ends — is closed after `header_read_timeout` too, as a
/// header block it leaves unfinished is invisible here (the HTTP/2 library
/// buffers it) and HTTP/2 has no header timeout of its own. (HTTP/1 has
/// hyper's `header_read_timeout`, which also ends idle keep-alive
/// connections: the same rule.)
pub struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// A request arrived.
    seen: bool,
    /// The connection speaks HTTP/2.
    h2: bool,
    /// Requests in flight (until their response bodies end).
    active: usize,
    /// Since when none has been (or the connection's start).
    since: Instant,
}

/// Held while a request or its response body is in flight.
pub struct ActiveGuard(Arc<Activity>);

impl Activity {
    /// A new connection's.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ActivityState {
                seen: false,
                h2: false,
                active: 0,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An HTTP/1 request arrived: the first-request deadline is met (idle
    /// HTTP/1 connections are hyper's to time out).
    pub fn seen(&self) {
        let mut s = self.lock();
        if !s.seen {
            s.seen = true;
            drop(s);
            self.changed.notify_waiters();
        }
    }

    /// An HTTP/2 request arrived; in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        let mut s = self.lock();
        s.seen = true;
        s.h2 = true;
        s.active += 1;
        drop(s);
        self.changed.notify_waiters();
        ActiveGuard(self.clone())
    }

    /// Resolves when the connection has overstayed `deadline`: no first
    /// request within it, or (HTTP/2) no request in flight for it.
    pub async fn stalled(&self, deadline: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let at = {
                let s = self.lock();
                (!s.seen || (s.h2 && s.active == 0)).then_some(s.since + deadline)
            };
            match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.active -= 1;
        if s.active == 0 {
            s.since = Instant::now();
        }
        drop(s);
        self.0.changed.notify_waiters();
    }
}

/// The connection cap in effect: `configured`, but at most half of
/// `nofile` (the soft descriptor limit), so that upstream pipes, Redis
/// and log files always have descriptors left; at least 1.
pub fn effective_max_connections(configured: usize, nofile: u64) -> usize {
    let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    configured.min(half).max(1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped at 2^20 when
/// the hard limit is unlimited) and returns the soft limit now in effect.
/// A failure to raise is logged and the current limit is returned.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    let target = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
    if soft != RLIM_INFINITY && soft < target {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = target, "raised the open-file limit");
                return u64::from(target);
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
            }
        }
    }
    u64::from(soft)
}

/// Elsewhere there is no descriptor limit to raise.
#[cfg(not(unix))]
pub fn raise_nofile_limit() -> u64 {
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_half_the_descriptor_limit() {
        assert_eq!(effective_max_connections(1024, 1024), 512);
        assert_eq!(effective_max_connections(1024, 1 << 20), 1024);
        assert_eq!(effective_max_connections(16, 64), 16);
        assert_eq!(effective_max_connections(16, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_connection_waits_briefly_then_is_refused() {
        let limit = Arc::new(ConnectionLimit::new(4));
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| limit.admit())).await;
        assert!(held.iter().all(Option::is_some));
        // One may wait (4 / 4); it gets the slot freed within the wait.
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.admit().await.is_some() })
        };
        tokio::task::yield_now().await;
        // A second waiter is refused at once.
        let start = tokio::time::Instant::now();
        assert!(limit.admit().await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
        tokio::time::advance(ADMISSION_WAIT / 2).await;
        drop(held);
        assert!(
            waiter.await.unwrap(),
            "a slot freed within the wait is taken"
        );
        // With every slot held, a waiter gives up after ADMISSION_WAIT.
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| limit.admit())).await;
        let start = tokio::time::Instant::now();
        assert!(limit.admit().await.is_none());
        assert_eq!(start.elapsed(), ADMISSION_WAIT);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_stalls_without_a_first_request_or_idle_on_http2() {
        let d = Duration::from_secs(10);
        // No request at all.
        let a = Activity::new();
        let start = Instant::now();
        a.stalled(d).await;
        assert_eq!(start.elapsed(), d);
        // HTTP/1 after a request: hyper's own timeout, never here.
        let a = Activity::new();
        a.seen();
        assert!(tokio::time::timeout(d * 10, a.stalled(d)).await.is_err());
        // HTTP/2: a request in flight keeps it; idle for `d` after it ends.
        let a = Activity::new();
        let guard = a.begin();
        let stalled = {
            let a = a.clone();
            tokio::spawn(async move { a.stalled(d).await })
        };
        tokio::time::sleep(d * 3).await;
        assert!(!stalled.is_finished(), "busy, not stalled");
        drop(guard);
        let idle_from = Instant::now();
        stalled.await.unwrap();
        assert_eq!(idle_from.elapsed(), d);
    }
}
