//! SSE encoding of downstream streams (T25 "Sending Messages to the Server",
//! "Listening for Messages from the Server"; SPEC.md 4, 14).
//!
//! Each stream has an id unique in this process; its events carry ids
//! `<stream>:<seq>`, so `Last-Event-ID` names both stream and position. The
//! first event is a priming event (an id, empty data). A call's stream ends
//! after its response; a GET stream ends when the session ends or the
//! gateway drains. Idle streams get keep-alive comments.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use futures_util::stream;
use http::HeaderValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Outbound;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// Reconnect delay suggested to clients when Ballast closes a stream
/// (SPEC.md 4: send `retry:` before closing).
const RETRY_AFTER_CLOSE: Duration = Duration::from_millis(1000);

/// A fresh stream id (base-36 counter, unique in this process).
fn next_stream_id() -> String {
    let mut n = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let mut digits = Vec::new();
    loop {
        let d = (n % 36) as u32;
        digits.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

enum Phase {
    Priming,
    Open,
    Done,
}

struct State {
    rx: mpsc::Receiver<Outbound>,
    stream_id: String,
    seq: u64,
    phase: Phase,
    stops: Vec<CancellationToken>,
}

/// An SSE response that relays `rx` until a [`Outbound::Final`] message,
/// until `rx` closes, or until any of `stops` fires (then a `retry:` event
/// is sent before the close).
pub(super) fn response(
    rx: mpsc::Receiver<Outbound>,
    stops: Vec<CancellationToken>,
    keepalive: Duration,
) -> Response {
    let state = State {
        rx,
        stream_id: next_stream_id(),
        seq: 0,
        phase: Phase::Priming,
        stops,
    };
    let mut resp = Sse::new(events(state))
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    // Keep reverse proxies from buffering the stream (SPEC.md 33).
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn events(state: State) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut st| async move {
        match st.phase {
            Phase::Done => None,
            Phase::Priming => {
                st.phase = Phase::Open;
                let event = Event::default().id(format!("{}:0", st.stream_id)).data("");
                Some((Ok(event), st))
            }
            Phase::Open => {
                let stop = async {
                    match st.stops.as_slice() {
                        [] => std::future::pending().await,
                        [a] => a.cancelled().await,
                        [a, b, ..] => {
                            tokio::select! { () = a.cancelled() => {}, () = b.cancelled() => {} }
                        }
                    }
                };
                let next = tokio::select! {
                    m = st.rx.recv() => m,
                    () = stop => {
                        // Closed by Ballast: tell the client when to come back.
                        st.phase = Phase::Done;
                        return Some((Ok(Event::default().retry(RETRY_AFTER_CLOSE)), st));
                    }
                };
                let (bytes, last) = match next? {
                    Outbound::Interim(b) => (b, false),
                    Outbound::Final(b) => (b, true),
                };
                if last {
                    st.phase = Phase::Done;
                }
                st.seq += 1;
                let event = Event::default()
                    .event("message")
                    .id(format!("{}:{}", st.stream_id, st.seq))
                    .data(String::from_utf8_lossy(&bytes));
                Some((Ok(event), st))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_unique_visible_ascii() {
        let a = next_stream_id();
        let b = next_stream_id();
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
