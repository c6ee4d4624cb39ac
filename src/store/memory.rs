//! The in-memory [`EventLog`]: the embedded default. Durable for the life of
//! the process; readers waiting for new events are woken by a `Notify`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Batch, EventLog, StoreError, StreamLimits};

/// An [`EventLog`] in this process's memory.
pub struct MemoryEventLog {
    streams: Mutex<HashMap<Arc<str>, Arc<StreamLog>>>,
    limits: StreamLimits,
}

struct StreamLog {
    owner: Arc<str>,
    state: Mutex<LogState>,
    changed: Notify,
}

#[derive(Default)]
struct LogState {
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    last_seq: u64,
    finished_at: Option<Instant>,
    delivered_at: Option<Instant>,
}

impl MemoryEventLog {
    /// An empty log with per-stream `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<StreamLog>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `stream` is held here.
    pub fn contains(&self, stream: &str) -> bool {
        self.lock().contains_key(stream)
    }

    /// Takes over `stream` of session `owner` from another store that
    /// failed mid-stream: its next event gets seq `last_seq + 1`, so event
    /// ids continue where that store stopped. No-op if already held.
    pub fn adopt(&self, stream: &str, owner: &str, last_seq: u64) {
        self.lock().entry(stream.into()).or_insert_with(|| {
            Arc::new(StreamLog {
                owner: owner.into(),
                state: Mutex::new(LogState {
                    last_seq,
                    ..LogState::default()
                }),
                changed: Notify::new(),
            })
        });
    }

    /// Stores an event whose seq another store assigned (a local copy of a
    /// shared stream): kept in seq order, within the same limits; `last`
    /// also finishes the stream (readers see both at once).
    ///
    /// # Errors
    /// [`StoreError::UnknownStream`] if the stream is not held here.
    pub fn insert(
        &self,
        stream: &str,
        seq: u64,
        data: Bytes,
        last: bool,
    ) -> Result<(), StoreError> {
        let log = self.get(stream)?;
        {
            let mut s = log.state();
            s.last_seq = s.last_seq.max(seq);
            s.bytes += data.len();
            let at = s.events.partition_point(|(q, _)| *q < seq);
            s.events.insert(at, (seq, data));
            self.trim(&mut s);
            if last {
                s.finished_at.get_or_insert_with(Instant::now);
            }
        }
        log.changed.notify_waiters();
        Ok(())
    }

    /// Appends one event (and, if `last`, finishes the stream) under one lock
    /// and one wake-up.
    fn push(&self, stream: &str, data: Bytes, last: bool) -> Result<u64, StoreError> {
        let log = self.get(stream)?;
        let seq = {
            let mut s = log.state();
            s.last_seq += 1;
            let seq = s.last_seq;
            s.bytes += data.len();
            s.events.push_back((seq, data));
            // Bounded: drop the oldest beyond either limit (never the newest).
            self.trim(&mut s);
            if last {
                s.finished_at.get_or_insert_with(Instant::now);
            }
            seq
        };
        log.changed.notify_waiters();
        Ok(seq)
    }

    /// Drops the oldest events beyond either limit (never the newest).
    fn trim(&self, s: &mut LogState) {
        while s.events.len() > 1
            && (s.events.len() > self.limits.max_events || s.bytes > self.limits.max_bytes)
        {
            if let Some((_, old)) = s.events.pop_front() {
                s.bytes -= old.len();
            }
        }
    }

    fn get(&self, stream: &str) -> Result<Arc<StreamLog>, StoreError> {
        self.lock()
            .get(stream)
            .cloned()
            .ok_or(StoreError::UnknownStream)
    }
}

impl StreamLog {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventLog for MemoryEventLog {
    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let log = Arc::new(StreamLog {
            owner: session.into(),
            state: Mutex::new(LogState::default()),
            changed: Notify::new(),
        });
        self.lock().insert(stream.into(), log);
        Box::pin(async { Ok(()) })
    }

    fn append<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let result = self.push(stream, data, false);
        Box::pin(async move { result })
    }

    fn append_last<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let result = self.push(stream, data, true);
        Box::pin(async move { result })
    }

    fn delivered(&self, stream: &str) {
        if let Ok(log) = self.get(stream) {
            let mut s = log.state();
            if s.finished_at.is_some() {
                s.delivered_at.get_or_insert_with(Instant::now);
            }
        }
    }

    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.get(stream).map(|log| {
            log.state().finished_at.get_or_insert_with(Instant::now);
            log.changed.notify_waiters();
        });
        Box::pin(async move { result })
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        Box::pin(async move {
            let log = self.get(stream)?;
            let deadline = Instant::now() + wait;
            loop {
                let changed = log.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                {
                    let s = log.state();
                    // Seqs are ascending: start at the first one after `after`.
                    let start = s.events.partition_point(|(seq, _)| *seq <= after);
                    let events: Vec<_> = s.events.range(start..).cloned().collect();
                    let finished = s.finished_at.is_some();
                    if !events.is_empty() || finished {
                        return Ok(Batch { events, finished });
                    }
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(Batch::default());
                }
            }
        })
    }

    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>> {
        let owner = self.lock().get(stream).map(|l| l.owner.clone());
        Box::pin(async move { Ok(owner) })
    }

    fn expire<'a>(
        &'a self,
        resume_window: Duration,
        ended: &'a [Arc<str>],
    ) -> BoxFuture<'a, usize> {
        let now = Instant::now();
        let mut streams = self.lock();
        let before = streams.len();
        streams.retain(|_, log| {
            let expired = {
                let s = log.state();
                s.finished_at
                    .is_some_and(|t| now.duration_since(t) >= resume_window)
                    || s.delivered_at
                        .is_some_and(|t| now.duration_since(t) >= self.limits.delivered_ttl)
            };
            let orphaned = ended.iter().any(|s| **s == *log.owner);
            if orphaned {
                // Wake readers so they notice the stream is gone.
                log.changed.notify_waiters();
            }
            !expired && !orphaned
        });
        let dropped = before - streams.len();
        Box::pin(async move { dropped })
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_events: usize) -> MemoryEventLog {
        MemoryEventLog::new(StreamLimits {
            max_events,
            max_bytes: 1 << 20,
            delivered_ttl: Duration::from_secs(1),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn append_read_finish_and_resume_from_a_position() {
        let l = log(100);
        l.open("s1", "sess").await.unwrap();
        for i in 1..=3u8 {
            assert_eq!(
                l.append("s1", Bytes::from(vec![i])).await.unwrap(),
                u64::from(i)
            );
        }
        let b = l.read("s1", 1, Duration::ZERO).await.unwrap();
        assert_eq!(b.events.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
        assert!(!b.finished);
        l.finish("s1").await.unwrap();
        let b = l.read("s1", 3, Duration::from_secs(60)).await.unwrap();
        assert!(b.events.is_empty() && b.finished);
        assert_eq!(l.owner("s1").await.unwrap().as_deref(), Some("sess"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reader_is_woken_by_an_append() {
        let l = Arc::new(log(100));
        l.open("s", "x").await.unwrap();
        let reader = {
            let l = l.clone();
            tokio::spawn(async move { l.read("s", 0, Duration::from_secs(3600)).await })
        };
        tokio::task::yield_now().await;
        l.append("s", Bytes::from_static(b"e")).await.unwrap();
        let b = reader.await.unwrap().unwrap();
        assert_eq!(b.events.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_events_go_when_the_stream_is_full() {
        let l = log(2);
        l.open("s", "x").await.unwrap();
        for _ in 0..5 {
            l.append("s", Bytes::from_static(b"e")).await.unwrap();
        }
        let b = l.read("s", 0, Duration::ZERO).await.unwrap();
        assert_eq!(b.events.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_read_to_its_end_goes_after_the_delivered_ttl() {
        let l = log(10);
        for s in ["read", "unread", "running"] {
            l.open(s, "a").await.unwrap();
            l.append(s, Bytes::from_static(b"x")).await.unwrap();
        }
        l.finish("read").await.unwrap();
        l.finish("unread").await.unwrap();
        l.delivered("read");
        l.delivered("running"); // not finished: nothing to deliver yet
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.expire(Duration::from_secs(300), &[]).await, 1);
        assert!(l.read("read", 0, Duration::ZERO).await.is_err());
        assert!(l.read("unread", 0, Duration::ZERO).await.is_ok());
        assert!(l.read("running", 0, Duration::ZERO).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn finished_streams_expire_after_the_window_and_ended_sessions_at_once() {
        let l = log(10);
        l.open("done", "a").await.unwrap();
        l.open("running", "a").await.unwrap();
        l.open("other", "b").await.unwrap();
        l.finish("done").await.unwrap();
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(l.expire(Duration::from_secs(300), &[]).await, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.expire(Duration::from_secs(300), &[]).await, 1);
        assert_eq!(l.expire(Duration::from_secs(300), &["b".into()]).await, 1);
        assert_eq!(l.len(), 1);
        assert!(matches!(
            l.read("done", 0, Duration::ZERO).await,
            Err(StoreError::UnknownStream)
        ));
    }
}
