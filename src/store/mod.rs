//! Stores behind traits, so a shared (Redis) implementation can replace the
//! in-memory one without changing callers (DESIGN.md principle 7).
//!
//! - [`EventLog`] — the retained events of every downstream SSE stream, for
//!   replay on resume (`Last-Event-ID`, T25 "Resumability and Redelivery").
//! - [`SessionStore`] — session records, so any replica sharing the store
//!   can serve a session another one created (`session.rs`).
//! - `memory.rs` — the embedded default event log; `session.rs` also holds
//!   the in-memory session store.
//! - `redis/` — both on Redis, shared by replicas; `fallback.rs` puts
//!   memory behind them for when Redis fails.
//! - `status.rs` — what the stores tell the gateway about themselves
//!   ([`StoreStatus`] for `/readyz`, the tiers and signals of a shared
//!   backend), so no handler asks which backend is configured.

mod fallback;
mod memory;
pub mod redis;
mod session;
mod status;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use self::fallback::{FallbackEventLog, FallbackSessionStore, on_fallback};
pub use self::memory::{EVENT_OVERHEAD, MemoryEventLog};
pub use self::session::{MemorySessionStore, SessionRecord, SessionStore, Stores};
pub use self::status::StoreStatus;

/// Where an event sits: `<stream>:<seq>`, the SSE `id` Ballast sends and the
/// `Last-Event-ID` a client returns (SPEC.md 14: unique across streams, and
/// a cursor within its stream). Seq 0 is the stream's priming event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The stream id: 16 hex digits from a CSPRNG, unique across replicas.
    pub stream: Arc<str>,
    /// Position in the stream; 0 = the priming event, events count from 1.
    pub seq: u64,
}

impl EventId {
    /// Parses `<stream>:<seq>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<EventId> {
        let (stream, seq) = s.rsplit_once(':')?;
        if stream.is_empty() || !stream.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(EventId {
            stream: stream.into(),
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.stream, self.seq)
    }
}

/// A new random stream id (64 bits from a CSPRNG, as 16 hex digits).
pub fn new_stream_id() -> Arc<str> {
    use rand::RngExt;
    let bits: u64 = rand::rng().random();
    format!("{bits:016x}").into()
}

/// The first-event grace of a log in this process's memory (see
/// [`EventLog::first_event_grace`]): 2 ms.
pub const FIRST_EVENT_GRACE: Duration = Duration::from_millis(2);

/// Events read from a stream.
#[derive(Debug, Default)]
pub struct Batch {
    /// `(seq, data)` in order, all after the requested position.
    pub events: Vec<(u64, Bytes)>,
    /// The stream is finished and `events` reaches its end.
    pub finished: bool,
}

/// An unfinished stream whose writer replica died, now claimed by this one.
#[derive(Debug, Clone)]
pub struct Orphan {
    /// The downstream request whose answer the stream was for (JSON-RPC
    /// bytes), if the stream was opened for one.
    pub request: Option<Bytes>,
    /// The last seq the dead writer appended.
    pub last_seq: u64,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The stream does not exist (never opened, or expired).
    #[error("unknown or expired stream")]
    UnknownStream,
    /// The stream's events were dropped to keep the event log within its
    /// global budget (`server.event_log_max_bytes`) before its client read
    /// them: it cannot be resumed.
    #[error("the stream's events were dropped (server.event_log_max_bytes)")]
    EventsLost,
    /// The store itself failed (I/O, timeout).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Limits of one stream's retained events.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Most events kept per stream (count).
    pub max_events: usize,
    /// Most bytes kept per stream (event data plus a fixed per-event
    /// overhead, see `memory::EVENT_OVERHEAD`).
    pub max_bytes: usize,
    /// Most bytes kept by all streams of this process's memory together
    /// (counted the same way); over it, streams lose their events (those
    /// nobody reads first, oldest first) and resuming them fails with
    /// [`StoreError::EventsLost`].
    pub total_max_bytes: usize,
    /// How long a finished stream that was read to its end stays (a client
    /// that lost the connection at that moment can still resume); others
    /// stay the resume window.
    pub delivered_ttl: Duration,
}

/// The retained events of every downstream SSE stream.
///
/// Contract (every implementation):
/// - `append` returns only once the event is durable in this store, so an
///   event is in the log *before* any socket sees it; seqs are 1, 2, 3, …
///   per stream, and stream ids are globally unique, so event ids are too.
/// - A stream belongs to one session (`owner`); resume is only offered to it.
/// - Bounded per stream by [`StreamLimits`]: past either limit the *oldest*
///   events are dropped. A store in this process's memory is also bounded
///   in total ([`StreamLimits::total_max_bytes`]): past it, streams lose
///   their events, and reading such a stream fails with
///   [`StoreError::EventsLost`]. The final response is the last event, so it is
///   never the one dropped; a resume from a dropped position continues at
///   the oldest retained event (interim notifications may be missed).
/// - A finished stream stays readable for the resume window, then is
///   dropped by [`EventLog::expire`]; an unfinished one is kept while its
///   call runs.
pub trait EventLog: Send + Sync + 'static {
    /// Whether replicas share this log: a stream may be written by a
    /// replica that dies (so a replica resuming it follows its writer for
    /// [`EventLog::claim_orphan`]), and the streams of a session that went
    /// idle on one replica stay for the others (the store's own expiry
    /// ends them, not this replica's sweep). Default: `false` (a log in
    /// this process's memory).
    fn is_shared(&self) -> bool {
        false
    }

    /// Longest a new POST stream's response waits for its first event
    /// before the headers go out, so that a quick answer leaves in the same
    /// write as the headers and the priming event (one syscall instead of
    /// three; a shared store may also store it in one step, see
    /// [`redis::SHARED_FIRST_EVENT_GRACE`]). A slow call's headers go out at
    /// most this much later. Default: [`FIRST_EVENT_GRACE`] (2 ms).
    fn first_event_grace(&self) -> Duration {
        FIRST_EVENT_GRACE
    }

    /// Creates stream `stream` owned by session `session`.
    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Creates stream `stream` for the answer to one downstream `request`
    /// (its JSON-RPC bytes), kept with the stream so that, in a shared
    /// store, another replica can take the call over if this one dies
    /// ([`EventLog::claim_orphan`]). Default: [`EventLog::open`].
    fn open_for_request<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
        request: Bytes,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = request;
        self.open(stream, session)
    }

    /// Makes `stream` findable by every replica sharing the store before
    /// its client can learn its id (called before the response headers go
    /// out). A store that defers opening streams opened with
    /// [`EventLog::open_for_request`] until their first event must open it
    /// now. Default: nothing (`open` already did).
    fn make_visible<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = stream;
        Box::pin(async { Ok(()) })
    }

    /// If `stream` is unfinished and the replica writing it is gone (a
    /// shared store's liveness record expired), makes this replica its
    /// writer and returns the orphan; at most one caller wins. Default
    /// (a store private to this process, whose writer is this process):
    /// `None`.
    fn claim_orphan<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Orphan>, StoreError>> {
        let _ = stream;
        Box::pin(async { Ok(None) })
    }

    /// Appends one event; returns its seq.
    ///
    /// # Errors
    /// [`StoreError::UnknownStream`] if the stream is gone.
    fn append<'a>(&'a self, stream: &'a str, data: Bytes)
    -> BoxFuture<'a, Result<u64, StoreError>>;

    /// A response started (`attached`) or stopped reading `stream`: streams
    /// nobody reads are the first to lose their events when a global bound
    /// is exceeded. Default: nothing.
    fn reader(&self, stream: &str, attached: bool) {
        let _ = (stream, attached);
    }

    /// A reader wrote every event of the finished stream to its client: the
    /// stream may go after [`StreamLimits::delivered_ttl`] instead of the
    /// resume window. Default: nothing (kept the resume window).
    fn delivered(&self, stream: &str) {
        let _ = stream;
    }

    /// Appends the stream's last event and marks it finished, as one step
    /// for readers (they get the event and the end together). Default:
    /// [`EventLog::append`] then [`EventLog::finish`].
    ///
    /// # Errors
    /// [`StoreError::UnknownStream`] if the stream is gone.
    fn append_last<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let seq = self.append(stream, data).await?;
            self.finish(stream).await?;
            Ok(seq)
        })
    }

    /// Marks the stream finished: readers end after its last event.
    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The events after seq `after`. If there are none and the stream is
    /// not finished, waits up to `wait` for one.
    ///
    /// # Errors
    /// [`StoreError::UnknownStream`] if the stream is gone.
    fn read<'a>(
        &'a self,
        stream: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, StoreError>>;

    /// The session that owns the stream, if the stream exists.
    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>>;

    /// Drops streams finished more than `resume_window` ago, and every
    /// stream of the sessions in `ended`. Returns how many were dropped.
    fn expire<'a>(&'a self, resume_window: Duration, ended: &'a [Arc<str>])
    -> BoxFuture<'a, usize>;

    /// Number of streams held (for health and tests).
    fn len(&self) -> usize;

    /// Whether no stream is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_reject_garbage() {
        let id = EventId {
            stream: new_stream_id(),
            seq: 42,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in ["", "abc", ":1", "a:b", "a b:1", "ab:-1"] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }
}
