//! The in-memory [`EventLog`]: the embedded default. Durable for the life of
//! the process; readers waiting for new events are woken by a `Notify`.
//!
//! Bounded twice: per stream by [`StreamLimits`] (the oldest events go),
//! and all streams together by [`StreamLimits::total_max_bytes`]: over it,
//! whole streams lose their events, oldest first event first — streams
//! nobody reads before streams being read — down to 7/8 of the budget; a
//! stream that lost events is marked so, and reading it fails with
//! [`StoreError::EventsLost`] (its client learns the events are gone
//! instead of silently missing them). Sizes count what is held: each
//! event's data plus [`EVENT_OVERHEAD`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Batch, EventLog, StoreError, StreamLimits};

/// Bytes one retained event costs beyond its data, rounded up: its slot in
/// the stream's queue (seq, stamp and the `Bytes` handle: 48 bytes; up to
/// twice that, as a queue's capacity grows by doubling and does not
/// shrink) and the allocator's header and rounding of its buffer (16–32
/// bytes). Counted against both the per-stream and the global bound.
pub const EVENT_OVERHEAD: usize = 128;

/// An [`EventLog`] in this process's memory.
pub struct MemoryEventLog {
    streams: Mutex<HashMap<Arc<str>, Arc<StreamLog>>>,
    limits: StreamLimits,
    /// Bytes held by every stream together (data + overhead).
    retained: AtomicUsize,
    /// Append order across streams (each event's stamp).
    clock: AtomicU64,
    /// One budget enforcement at a time.
    evicting: Mutex<()>,
}

struct StreamLog {
    owner: Arc<str>,
    state: Mutex<LogState>,
    changed: Notify,
}

/// One retained event.
struct Event {
    seq: u64,
    /// Position in the append order across all streams.
    stamp: u64,
    data: Bytes,
}

#[derive(Default)]
struct LogState {
    events: VecDeque<Event>,
    bytes: usize,
    last_seq: u64,
    finished_at: Option<Instant>,
    delivered_at: Option<Instant>,
    /// Responses reading the stream now.
    readers: usize,
    /// The global budget took this stream's events: reads fail with
    /// [`StoreError::EventsLost`], later events are not kept.
    lost: bool,
}

/// What an event of `data` costs to hold.
fn cost(data: &Bytes) -> usize {
    data.len() + EVENT_OVERHEAD
}

impl MemoryEventLog {
    /// An empty log with per-stream and total `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            limits,
            retained: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<StreamLog>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held by all streams (event data plus [`EVENT_OVERHEAD`] each).
    pub fn retained_bytes(&self) -> usize {
        self.retained.load(Ordering::Acquire)
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
            if !s.lost {
                self.add(&mut s, seq, data, |events, seq| {
                    events.partition_point(|e| e.seq < seq)
                });
            }
            if last {
                s.finished_at.get_or_insert_with(Instant::now);
            }
        }
        log.changed.notify_waiters();
        self.enforce_budget();
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
            if !s.lost {
                self.add(&mut s, seq, data, |events, _| events.len());
            }
            if last {
                s.finished_at.get_or_insert_with(Instant::now);
            }
            seq
        };
        log.changed.notify_waiters();
        self.enforce_budget();
        Ok(seq)
    }

    /// Places an event at the index `at` gives, counts it, and trims the
    /// stream to its own limits.
    fn add(
        &self,
        s: &mut LogState,
        seq: u64,
        data: Bytes,
        at: impl FnOnce(&VecDeque<Event>, u64) -> usize,
    ) {
        let size = cost(&data);
        s.bytes += size;
        self.retained.fetch_add(size, Ordering::AcqRel);
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        let i = at(&s.events, seq);
        s.events.insert(i, Event { seq, stamp, data });
        self.trim(s);
    }

    /// Drops the oldest events beyond either limit (never the newest).
    fn trim(&self, s: &mut LogState) {
        while s.events.len() > 1
            && (s.events.len() > self.limits.max_events || s.bytes > self.limits.max_bytes)
        {
            if let Some(old) = s.events.pop_front() {
                s.bytes -= cost(&old.data);
                self.retained.fetch_sub(cost(&old.data), Ordering::AcqRel);
            }
        }
    }

    /// Empties a stream for the global budget: its events are gone and it
    /// is marked lost (readers are woken to learn it).
    fn drop_events(&self, log: &StreamLog) {
        let mut s = log.state();
        s.events = VecDeque::new();
        self.retained.fetch_sub(s.bytes, Ordering::AcqRel);
        s.bytes = 0;
        s.lost = true;
        drop(s);
        log.changed.notify_waiters();
    }

    /// Over [`StreamLimits::total_max_bytes`]: empties streams, the one
    /// with the oldest retained event first — first among streams nobody
    /// reads, then among all — until 7/8 of the budget is held. The low
    /// mark makes the scan (one pass over the streams) rare: at most once
    /// per budget/8 bytes appended.
    fn enforce_budget(&self) {
        let budget = self.limits.total_max_bytes;
        if self.retained_bytes() <= budget {
            return;
        }
        let Ok(_one) = self.evicting.try_lock() else {
            return;
        };
        let low = budget - budget / 8;
        let all: Vec<Arc<StreamLog>> = self.lock().values().cloned().collect();
        let mut dropped = [0usize; 2];
        for (phase, unread_only) in [true, false].into_iter().enumerate() {
            let mut oldest: BinaryHeap<Reverse<(u64, usize)>> = all
                .iter()
                .enumerate()
                .filter_map(|(i, log)| {
                    let s = log.state();
                    let eligible = !unread_only || s.readers == 0;
                    let front = s.events.front().map(|e| e.stamp)?;
                    eligible.then_some(Reverse((front, i)))
                })
                .collect();
            while self.retained_bytes() > low {
                let Some(Reverse((_, i))) = oldest.pop() else {
                    break;
                };
                self.drop_events(&all[i]);
                dropped[phase] += 1;
            }
            if self.retained_bytes() <= low {
                break;
            }
        }
        // One line per pass, not per stream: a flood of streams is one event.
        tracing::warn!(
            unread_streams = dropped[0],
            read_streams = dropped[1],
            budget_bytes = budget,
            "event log over server.event_log_max_bytes: streams' retained events dropped (resuming them gets an error)"
        );
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

    fn reader(&self, stream: &str, attached: bool) {
        if let Ok(log) = self.get(stream) {
            let mut s = log.state();
            s.readers = if attached {
                s.readers + 1
            } else {
                s.readers.saturating_sub(1)
            };
        }
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
                    if s.lost {
                        return Err(StoreError::EventsLost);
                    }
                    // Seqs are ascending: start at the first one after `after`.
                    let start = s.events.partition_point(|e| e.seq <= after);
                    let events: Vec<_> = s
                        .events
                        .range(start..)
                        .map(|e| (e.seq, e.data.clone()))
                        .collect();
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
            if expired || orphaned {
                self.retained.fetch_sub(log.state().bytes, Ordering::AcqRel);
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
            total_max_bytes: 1 << 30,
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

    fn budgeted(total_max_bytes: usize) -> MemoryEventLog {
        MemoryEventLog::new(StreamLimits {
            max_events: 1000,
            max_bytes: 1 << 20,
            total_max_bytes,
            delivered_ttl: Duration::from_secs(1),
        })
    }

    fn kib() -> Bytes {
        Bytes::from(vec![b'x'; 1024 - EVENT_OVERHEAD])
    }

    #[tokio::test(start_paused = true)]
    async fn retained_bytes_count_the_per_event_overhead_and_go_with_the_stream() {
        let l = budgeted(1 << 30);
        l.open("s", "a").await.unwrap();
        l.append("s", Bytes::from_static(b"12345")).await.unwrap();
        assert_eq!(l.retained_bytes(), 5 + EVENT_OVERHEAD);
        l.expire(Duration::ZERO, &["a".into()]).await;
        assert_eq!(l.retained_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_unread_streams_lose_their_events_oldest_first() {
        // Room for just under 10 KiB; each stream holds 3 KiB.
        let l = budgeted(10 * 1024 - 1);
        for s in ["old-unread", "read", "new-unread"] {
            l.open(s, "a").await.unwrap();
        }
        l.reader("read", true);
        for s in ["read", "old-unread", "new-unread"] {
            for _ in 0..3 {
                l.append(s, kib()).await.unwrap();
            }
        }
        assert_eq!(l.retained_bytes(), 9 * 1024);
        // Over the budget: the unread stream with the oldest event goes
        // (down to 7/8 of it), though the stream being read is older.
        l.append("new-unread", kib()).await.unwrap();
        assert!(matches!(
            l.read("old-unread", 0, Duration::ZERO).await,
            Err(StoreError::EventsLost)
        ));
        assert_eq!(
            l.read("read", 0, Duration::ZERO)
                .await
                .unwrap()
                .events
                .len(),
            3
        );
        assert_eq!(
            l.read("new-unread", 0, Duration::ZERO)
                .await
                .unwrap()
                .events
                .len(),
            4
        );
        assert_eq!(l.retained_bytes(), 7 * 1024);
        // A lost stream keeps no new events, and a resume from any point fails.
        l.append("old-unread", kib()).await.unwrap();
        assert_eq!(l.retained_bytes(), 7 * 1024);
        assert!(matches!(
            l.read("old-unread", 2, Duration::ZERO).await,
            Err(StoreError::EventsLost)
        ));
        // Only streams being read left over the budget: they go too.
        l.reader("new-unread", true);
        for _ in 0..4 {
            l.append("read", kib()).await.unwrap();
        }
        assert_eq!(
            l.retained_bytes(),
            4 * 1024,
            "the stream being read, oldest"
        );
        assert!(matches!(
            l.read("read", 0, Duration::ZERO).await,
            Err(StoreError::EventsLost)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reader_learns_at_once_that_its_stream_lost_its_events() {
        let l = Arc::new(budgeted(4 * 1024));
        l.open("waited", "a").await.unwrap();
        l.open("other", "a").await.unwrap();
        l.append("waited", kib()).await.unwrap();
        let reader = {
            let l = l.clone();
            tokio::spawn(async move { l.read("waited", 1, Duration::from_secs(3600)).await })
        };
        tokio::task::yield_now().await;
        for _ in 0..4 {
            l.append("other", kib()).await.unwrap();
        }
        assert!(matches!(reader.await.unwrap(), Err(StoreError::EventsLost)));
    }
}
