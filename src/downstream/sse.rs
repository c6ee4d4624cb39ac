//! SSE responses as readers of the event log (T25 "Resumability and
//! Redelivery"; SPEC.md 4, 14, 15).
//!
//! Producers never write to sockets: they append to a log stream (see
//! [`super::Sink`]). Every SSE response — the answer to a POST, a GET
//! stream, or a resume with `Last-Event-ID` — reads that stream from a
//! position: events carry ids `<stream>:<seq>`, a new stream starts with a
//! priming event (`<stream>:0`, empty data), and the response ends after the
//! stream is finished and read to its end. A reader that must stop early
//! (drain, session end, `max_stream_duration`) sends `retry:` first, and the
//! stream stays resumable. A slow client costs no buffer: the reader only
//! reads from the log as fast as the socket takes it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use futures_util::{Stream, StreamExt};
use http::HeaderValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::Stats;
use crate::store::{EventId, EventLog};

/// Reconnect delay suggested to clients when Ballast closes a stream
/// before its end (SPEC.md 4: send `retry:` before closing).
pub(crate) const RETRY_AFTER_CLOSE: Duration = Duration::from_millis(1000);

/// How long one log read waits before checking the stop signals again.
const READ_WAIT: Duration = Duration::from_secs(30);

/// What an SSE response reads.
pub(super) struct ReadSpec {
    /// The log.
    pub(super) log: Arc<dyn EventLog>,
    /// The stream to read.
    pub(super) stream: Arc<str>,
    /// Read events after this seq (0 for a new stream).
    pub(super) after: u64,
    /// Send the priming event first (new streams only).
    pub(super) priming: bool,
    /// Any of these ends the response early, with `retry:`.
    pub(super) stops: Vec<CancellationToken>,
    /// Keep-alive comment interval on idle streams.
    pub(super) keepalive: Duration,
    /// End the response after this long, with `retry:` (`None`: never).
    pub(super) max_duration: Option<Duration>,
    /// Where abandoned streams are counted.
    pub(super) stats: Arc<Stats>,
    /// 2024-11-05 transport: send an `endpoint` event with this POST URI
    /// first, instead of the priming event.
    pub(super) endpoint: Option<String>,
    /// Runs when the response ends or the client leaves.
    pub(super) on_close: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Marks the stream as being read while this response lives.
    pub(super) lease: Option<super::ReaderLease>,
}

struct State {
    spec: ReadSpec,
    pending: std::collections::VecDeque<(u64, bytes::Bytes)>,
    finished: bool,
    done: bool,
    deadline: Option<Instant>,
}

/// Counts a response dropped before it ended (the client went away). The
/// stream itself lives on in the log, ready for a resume.
struct AbandonGuard {
    stats: Arc<Stats>,
    /// Told while this response reads the stream ([`EventLog::reader`]).
    log: Arc<dyn EventLog>,
    stream: Arc<str>,
    done: bool,
    on_close: Option<Box<dyn FnOnce() + Send + Sync>>,
    _lease: Option<super::ReaderLease>,
}

impl AbandonGuard {
    fn complete(&mut self) {
        self.done = true;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        self.log.reader(&self.stream, false);
        if !self.done {
            self.stats
                .disconnect(crate::observe::Disconnect::StreamAbandoned);
            tracing::debug!(stream = %self.stream, "client left an SSE stream; it stays resumable");
        }
        if let Some(f) = self.on_close.take() {
            f();
        }
    }
}

/// The SSE response for `spec`.
pub(super) fn response(mut spec: ReadSpec) -> Response {
    let keepalive = spec.keepalive;
    let deadline = spec.max_duration.map(|d| Instant::now() + d);
    // The priming event is written by hand: axum's `Event::data("")` writes
    // no `data:` line, and WHATWG parsers (eventsource-parser, so the
    // TypeScript SDK) dispatch no event without one — the client would never
    // learn the id to resume from. T25: "an event ID and an empty data field".
    let priming = (spec.priming && spec.endpoint.is_none()).then(|| {
        let id = EventId {
            stream: spec.stream.clone(),
            seq: 0,
        };
        bytes::Bytes::from(format!("id: {id}\ndata: \n\n"))
    });
    spec.log.reader(&spec.stream, true);
    let guard = AbandonGuard {
        stats: spec.stats.clone(),
        log: spec.log.clone(),
        stream: spec.stream.clone(),
        done: false,
        on_close: spec.on_close.take(),
        _lease: spec.lease.take(),
    };
    let state = State {
        spec,
        pending: Default::default(),
        finished: false,
        done: false,
        deadline,
    };
    let mut resp = Sse::new(events(state, guard))
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    if let Some(priming) = priming {
        resp = resp.map(|body| {
            let first = stream::once(async { Ok::<_, axum::Error>(priming) });
            Body::from_stream(first.chain(body.into_data_stream()))
        });
    }
    // Keep reverse proxies from buffering the stream (SPEC.md 33).
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn events(state: State, guard: AbandonGuard) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((state, guard), |(mut st, mut guard)| async move {
        if st.done {
            guard.complete();
            return None;
        }
        if let Some(endpoint) = st.spec.endpoint.take() {
            return Some((
                Ok(Event::default().event("endpoint").data(endpoint)),
                (st, guard),
            ));
        }
        loop {
            if let Some((seq, data)) = st.pending.pop_front() {
                st.spec.after = seq;
                let id = EventId {
                    stream: st.spec.stream.clone(),
                    seq,
                };
                let event = Event::default()
                    .event("message")
                    .id(id.to_string())
                    .data(String::from_utf8_lossy(&data));
                return Some((Ok(event), (st, guard)));
            }
            if st.finished {
                // Everything, the final answer included, went out: the
                // stream need not stay for the whole resume window.
                st.spec.log.delivered(&st.spec.stream);
                guard.complete();
                return None;
            }
            let read = st.spec.log.read(&st.spec.stream, st.spec.after, READ_WAIT);
            let stop = async {
                let deadline = async {
                    match st.deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let tokens = any_cancelled(&st.spec.stops);
                tokio::select! {
                    () = tokens => {}
                    () = deadline => {}
                }
            };
            let batch = tokio::select! {
                b = read => b,
                () = stop => {
                    // Closed early by Ballast: tell the client when to resume.
                    st.done = true;
                    return Some((Ok(Event::default().retry(RETRY_AFTER_CLOSE)), (st, guard)));
                }
            };
            match batch {
                Ok(b) => {
                    st.pending.extend(b.events);
                    st.finished = b.finished;
                }
                Err(crate::store::StoreError::Unavailable(_)) => {
                    // The store failed (Redis down): the events are not
                    // lost; tell the client when to resume.
                    st.done = true;
                    return Some((Ok(Event::default().retry(RETRY_AFTER_CLOSE)), (st, guard)));
                }
                Err(crate::store::StoreError::EventsLost) => {
                    // Dropped for the event log's global budget: say so
                    // (README "Resumption"), no id to resume from.
                    st.done = true;
                    let lost = events_lost(&st.spec.stream);
                    return Some((
                        Ok(Event::default().event("message").data(lost)),
                        (st, guard),
                    ));
                }
                Err(crate::store::StoreError::UnknownStream) => {
                    // The stream expired or its session ended.
                    guard.complete();
                    return None;
                }
            }
        }
    })
}

/// The JSON-RPC error event that ends a stream whose events were dropped
/// for `server.event_log_max_bytes`: id null (the stream does not know its
/// request), code -32603, `data.reason = "events_lost"`.
fn events_lost(stream: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": crate::jsonrpc::code::INTERNAL_ERROR,
            "message": "this stream's events were dropped to keep the gateway within server.event_log_max_bytes; they cannot be delivered (send the request again if its answer is still needed)",
            "data": { "reason": "events_lost", "stream": stream },
        },
    })
    .to_string()
}

/// Resolves when any token is cancelled (never, for none).
async fn any_cancelled(tokens: &[CancellationToken]) {
    if tokens.is_empty() {
        return std::future::pending().await;
    }
    futures_util::future::select_all(tokens.iter().map(|t| Box::pin(t.cancelled()))).await;
}
