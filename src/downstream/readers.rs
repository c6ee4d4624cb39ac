//! Who is reading which stream: a stream whose call is still running but
//! that nobody has read for `resume_window` is abandoned, and its call is
//! cancelled upstream (when `server.cancel_abandoned_calls` is on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

/// Reader counts per stream, and when each stream was last left unread.
#[derive(Default)]
pub struct Readers {
    map: Mutex<HashMap<Arc<str>, Watch>>,
}

#[derive(Clone, Copy)]
struct Watch {
    readers: usize,
    unread_since: Instant,
}

/// Held by an SSE response while it reads a stream; dropping it detaches.
pub struct ReaderLease {
    readers: Arc<Readers>,
    stream: Arc<str>,
}

impl Readers {
    /// Records a reader on `stream` until the lease drops.
    pub fn attach(self: &Arc<Self>, stream: Arc<str>) -> ReaderLease {
        let mut map = self.lock();
        let w = map.entry(stream.clone()).or_insert(Watch {
            readers: 0,
            unread_since: Instant::now(),
        });
        w.readers += 1;
        ReaderLease {
            readers: self.clone(),
            stream,
        }
    }

    /// Whether `stream` has had no reader for at least `window` (a stream
    /// never read counts from `since`, e.g. when its call started).
    pub fn unread_for(&self, stream: &str, window: std::time::Duration, since: Instant) -> bool {
        let now = Instant::now();
        match self.lock().get(stream) {
            Some(w) => w.readers == 0 && now.duration_since(w.unread_since) >= window,
            None => now.duration_since(since) >= window,
        }
    }

    /// Whether a response is reading `stream` now.
    pub fn is_read(&self, stream: &str) -> bool {
        self.lock().get(stream).is_some_and(|w| w.readers > 0)
    }

    /// Forgets streams nobody reads whose call is over (not in `running`).
    pub fn prune(&self, running: &std::collections::HashSet<Arc<str>>) {
        self.lock()
            .retain(|stream, w| w.readers > 0 || running.contains(stream));
    }

    /// Number of streams tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Watch>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        if let Some(w) = self.readers.lock().get_mut(&self.stream) {
            w.readers = w.readers.saturating_sub(1);
            if w.readers == 0 {
                w.unread_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_stream_counts_as_unread_only_after_the_window_without_readers() {
        let r = Arc::new(Readers::default());
        let start = Instant::now();
        let window = Duration::from_secs(300);
        let lease = r.attach("s".into());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!r.unread_for("s", window, start), "being read");
        drop(lease);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(!r.unread_for("s", window, start));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(r.unread_for("s", window, start));
        assert!(r.unread_for("never-read", window, start));
        r.prune(&Default::default());
        assert!(r.is_empty(), "nobody reads s and its call is over");
    }
}
