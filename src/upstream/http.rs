//! A remote Streamable HTTP upstream (T25, client side).
//!
//! Every request is its own POST; its answer comes back as JSON or as an SSE
//! stream, and everything read from that stream is tagged with the request
//! id (its *origin*). The `Mcp-Session-Id` the server issued is kept and sent
//! on every request; a 404 (or, from TypeScript SDK servers, a 400) on a
//! session means the server forgot it, so the transport replays the recorded `initialize` + `notifications/initialized`
//! and retries the request once — the caller never sees it (SPEC.md 11).
//! After `notifications/initialized`, a GET stream is held open for
//! server→client messages (405 means the server offers none). An answer
//! stream that breaks before the answer is resumed with `GET` +
//! `Last-Event-ID` (backoff 50 ms doubling to 2 s, within the request
//! timeout) when the server gave event ids; without ids the call fails as
//! `Closed` (outcome unknown).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sse_stream::SseByteStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use super::transport::{Incoming, forward_frame, parse_frame, remote_client};
use crate::config::UpstreamConfig;
use crate::jsonrpc::{Body, Message, RequestId, Response};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// Largest JSON answer body read from an upstream, in bytes.
const MAX_JSON_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest pause between GET stream reconnects.
const MAX_GET_BACKOFF: Duration = Duration::from_secs(10);
/// First pause before resuming a broken answer stream; doubles per attempt.
const MIN_RESUME_BACKOFF: Duration = Duration::from_millis(50);

/// Longest `retry:` from an upstream's SSE stream that Ballast honours.
const MAX_SERVER_RETRY: Duration = Duration::from_secs(60);
/// Longest pause between attempts to resume a broken answer stream.
const MAX_RESUME_BACKOFF: Duration = Duration::from_secs(2);

/// A Streamable HTTP client transport.
pub(crate) struct HttpTransport {
    inner: Arc<Inner>,
    /// Longest a background POST may run (its answer included).
    request_timeout: Duration,
}

struct Inner {
    name: Arc<str>,
    url: reqwest::Url,
    client: reqwest::Client,
    headers: HeaderMap,
    incoming: mpsc::Sender<Incoming>,
    state: std::sync::Mutex<SessionState>,
    /// Serializes re-initialization after a lost session (404 or 400).
    reinit: tokio::sync::Mutex<()>,
    /// Bumped on every (re-)initialization.
    generation: AtomicU64,
    get_stream_started: AtomicBool,
    closed: CancellationToken,
}

#[derive(Default)]
struct SessionState {
    session_id: Option<HeaderValue>,
    protocol_version: Option<HeaderValue>,
    /// The `initialize` request as first sent, replayed on re-initialization.
    initialize: Option<Bytes>,
    initialized: Option<Bytes>,
}

impl HttpTransport {
    /// Builds the client. No connection is made until the first send.
    ///
    /// # Errors
    /// [`UpstreamError::Protocol`] for an unusable URL or header.
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        incoming: mpsc::Sender<Incoming>,
    ) -> Result<Self, UpstreamError> {
        let (url, headers, client) = remote_client(cfg)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                url,
                client,
                headers,
                incoming,
                state: std::sync::Mutex::new(SessionState::default()),
                reinit: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                get_stream_started: AtomicBool::new(false),
                closed: CancellationToken::new(),
            }),
            request_timeout: cfg.request_timeout,
        })
    }

    /// Sends one frame. The handshake (`initialize`, then
    /// `notifications/initialized`) is sent in order and awaited, so no
    /// request can overtake it (SPEC.md 16); everything else is POSTed in
    /// the background, bounded by `request_timeout` and by [`Self::close`].
    /// Answers and failures arrive on the incoming channel.
    pub(crate) async fn send(&self, frame: Bytes, request_id: Option<u64>, method: Option<&str>) {
        let inner = self.inner.clone();
        let handshake = matches!(method, Some("initialize" | "notifications/initialized"));
        match method {
            Some("initialize") => inner.lock_state().initialize = Some(frame.clone()),
            Some("notifications/initialized") => {
                inner.lock_state().initialized = Some(frame.clone())
            }
            _ => {}
        }
        let start_get = method == Some("notifications/initialized")
            && !self.inner.get_stream_started.swap(true, Ordering::SeqCst);
        let deadline = self.request_timeout;
        let task = async move {
            let result = tokio::select! {
                r = inner.post(frame, request_id) => r,
                () = tokio::time::sleep(deadline) => Err(UpstreamError::Timeout { timeout: deadline }),
                () = inner.closed.cancelled() => Err(UpstreamError::Closed),
            };
            if let Err(error) = result {
                match request_id {
                    Some(id) => {
                        let _ = inner.incoming.send(Incoming::Failed { id, error }).await;
                    }
                    None => {
                        tracing::debug!(upstream = %inner.name, %error, "upstream did not accept a notification or response")
                    }
                }
            }
            if start_get {
                tokio::spawn(inner.clone().get_stream());
            }
        };
        if handshake {
            task.await;
        } else {
            tokio::spawn(task);
        }
    }

    /// Records the negotiated version for the `MCP-Protocol-Version` header.
    pub(crate) fn set_protocol_version(&self, version: &str) {
        self.inner.lock_state().protocol_version = HeaderValue::try_from(version).ok();
    }

    /// Ends the session with DELETE (best effort, 2 s) and stops the GET stream.
    pub(crate) async fn close(&self) {
        self.inner.closed.cancel();
        let session = self.inner.lock_state().session_id.clone();
        if let Some(session) = session {
            let req = self
                .inner
                .client
                .delete(self.inner.url.clone())
                .headers(self.inner.headers.clone())
                .header(SESSION_HEADER, session);
            let _ = tokio::time::timeout(Duration::from_secs(2), req.send()).await;
        }
    }
}

/// Whether `status`, answering a request that carried the upstream's
/// `Mcp-Session-Id`, means the upstream no longer knows that session.
///
/// SPEC.md 11 says 404; the TypeScript SDK's servers (server-everything's
/// Streamable HTTP mode among them) answer `400 "No valid session ID
/// provided"` instead, so a restarted one would otherwise fail every call
/// until health probes noticed. Either status is an HTTP-level refusal:
/// the server did not accept the JSON-RPC message (T25: "If the server
/// cannot accept the input, it MUST return an HTTP error status code"), so
/// re-sending it once after re-initializing cannot repeat an effect, safe
/// tool or not. A 400 for another reason costs one extra `initialize`; the
/// second 400 goes to the caller.
fn session_lost(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let session = self.lock_state().session_id.clone();
        self.request_in(method, session.as_ref())
    }

    /// A request on an explicit session (or none), with the configured
    /// headers and the negotiated protocol version.
    fn request_in(
        &self,
        method: reqwest::Method,
        session: Option<&HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let state = self.lock_state();
        let mut req = self
            .client
            .request(method, self.url.clone())
            .headers(self.headers.clone());
        if let Some(s) = session {
            req = req.header(SESSION_HEADER, s.clone());
        }
        if let Some(v) = &state.protocol_version {
            req = req.header(VERSION_HEADER, v.clone());
        }
        req
    }

    /// POSTs one frame; on a lost session ([`session_lost`]: 404 or 400 to
    /// a request that carried the session id), re-initializes and retries
    /// once. Answers are forwarded to the incoming channel.
    async fn post(
        self: &Arc<Self>,
        frame: Bytes,
        request_id: Option<u64>,
    ) -> Result<(), UpstreamError> {
        let is_initialize = self.lock_state().initialize.as_ref() == Some(&frame);
        for attempt in 0..2 {
            let generation = self.generation.load(Ordering::SeqCst);
            let had_session = self.lock_state().session_id.is_some();
            let resp = self
                .request(reqwest::Method::POST)
                .header(header::ACCEPT, ACCEPT_BOTH)
                .header(header::CONTENT_TYPE, "application/json")
                .body(frame.clone())
                .send()
                .await?;
            let status = resp.status();
            if session_lost(status) && had_session && !is_initialize && attempt == 0 {
                tracing::info!(upstream = %self.name, status = status.as_u16(), "upstream forgot the session; re-initializing");
                self.reinitialize(generation).await?;
                continue;
            }
            if !status.is_success() {
                return Err(UpstreamError::from_status(&resp));
            }
            if is_initialize {
                self.lock_state().session_id = resp.headers().get(SESSION_HEADER).cloned();
            }
            if status == StatusCode::ACCEPTED || request_id.is_none() {
                return Ok(());
            }
            return self.read_answer(resp, request_id, true).await.map(|_| ());
        }
        Err(UpstreamError::HttpStatus {
            status: 404,
            retry_after: None,
        })
    }

    /// Reads a JSON or SSE answer. Forwards messages to the incoming channel
    /// when `forward`, and returns the response to `request_id` once seen.
    async fn read_answer(
        &self,
        resp: reqwest::Response,
        request_id: Option<u64>,
        forward: bool,
    ) -> Result<Option<Response>, UpstreamError> {
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let wanted = request_id
            .and_then(|id| i64::try_from(id).ok())
            .map(RequestId::Number);
        if is_sse {
            let mut resp = resp;
            let mut backoff = MIN_RESUME_BACKOFF;
            let mut last_event_id = None;
            let mut server_retry = None;
            loop {
                match self
                    .read_sse(
                        resp,
                        request_id,
                        wanted.as_ref(),
                        forward,
                        (&mut last_event_id, &mut server_retry),
                    )
                    .await
                {
                    Some(answer) => return Ok(answer),
                    None if request_id.is_none() => return Ok(None),
                    None => {}
                }
                // The stream ended without the answer. With an event id to
                // resume from, reconnect (T25 resumability); else it is lost.
                let Some(from) = last_event_id.clone() else {
                    return Err(UpstreamError::Closed);
                };
                resp = loop {
                    // The server's `retry:` is the least wait (SEP-1699:
                    // the client MUST wait it before reconnecting).
                    tokio::time::sleep(backoff.max(server_retry.unwrap_or_default())).await;
                    backoff = (backoff * 2).min(MAX_RESUME_BACKOFF);
                    tracing::debug!(upstream = %self.name, last_event_id = %from, "resuming the upstream stream");
                    let attempt = self
                        .request(reqwest::Method::GET)
                        .header(header::ACCEPT, "text/event-stream")
                        .header("last-event-id", from.as_str())
                        .send()
                        .await;
                    match attempt {
                        Ok(r) if r.status().is_success() => break r,
                        Ok(r) => return Err(UpstreamError::from_status(&r)),
                        // Not reachable right now: try again (bounded by the
                        // caller's request timeout).
                        Err(e) => {
                            tracing::debug!(upstream = %self.name, error = %e, "upstream resume failed; retrying")
                        }
                    }
                };
            }
        }
        let bytes = resp.bytes().await?;
        if bytes.len() > MAX_JSON_BODY_BYTES {
            return Err(UpstreamError::Protocol("answer body too large".into()));
        }
        let messages = match Body::parse(&bytes) {
            Ok(Body::Single(m)) => vec![m],
            Ok(Body::Batch(ms)) => ms,
            Err(e) => return Err(UpstreamError::Protocol(format!("bad JSON answer: {e}"))),
        };
        let mut found = None;
        for m in messages {
            if let Some(answer) = self.deliver(m, request_id, wanted.as_ref(), forward).await {
                found = answer;
            }
        }
        Ok(found)
    }

    /// Reads one SSE response until the answer to `wanted` (returned as in
    /// [`Self::deliver`]) or the stream's end (`None`), recording the last
    /// event id seen and the last `retry:` (capped at [`MAX_SERVER_RETRY`])
    /// in `seen`.
    async fn read_sse(
        &self,
        resp: reqwest::Response,
        origin: Option<u64>,
        wanted: Option<&RequestId>,
        forward: bool,
        seen: (&mut Option<String>, &mut Option<Duration>),
    ) -> Option<Option<Response>> {
        let (last_event_id, server_retry) = seen;
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "upstream SSE stream broke");
                    return None;
                }
            };
            if let Some(id) = event.id.clone().filter(|id| !id.is_empty()) {
                *last_event_id = Some(id);
            }
            if let Some(ms) = event.retry {
                *server_retry = Some(Duration::from_millis(ms).min(MAX_SERVER_RETRY));
            }
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            if event.event.as_deref().is_some_and(|e| e != "message") {
                continue;
            }
            if let Some(m) = parse_frame(&self.name, data.as_bytes())
                && let Some(answer) = self.deliver(m, origin, wanted, forward).await
            {
                return Some(answer);
            }
        }
        None
    }

    /// Forwards one message (or keeps it, when not forwarding). Returns
    /// `Some` when it is the answer to `wanted`: `Some(Some(response))` if
    /// kept, `Some(None)` if forwarded.
    async fn deliver(
        &self,
        message: Message,
        origin: Option<u64>,
        wanted: Option<&RequestId>,
        forward: bool,
    ) -> Option<Option<Response>> {
        let is_answer =
            matches!(&message, Message::Response(r) if r.id.is_some() && r.id.as_ref() == wanted);
        if forward {
            let _ = self
                .incoming
                .send(Incoming::Message { message, origin })
                .await;
            return is_answer.then_some(None);
        }
        match message {
            Message::Response(r) if is_answer => Some(Some(r)),
            _ => None,
        }
    }

    /// Replays `initialize` and `notifications/initialized` on a new session,
    /// unless another task already did since `seen_generation`. The old
    /// session id stays in use until the new session is fully set up, so
    /// requests sent meanwhile get a 404 (or 400) and retry with it.
    async fn reinitialize(self: &Arc<Self>, seen_generation: u64) -> Result<(), UpstreamError> {
        let _guard = self.reinit.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen_generation {
            return Ok(());
        }
        let (init, initialized) = {
            let s = self.lock_state();
            (s.initialize.clone(), s.initialized.clone())
        };
        let init = init.ok_or_else(|| UpstreamError::Protocol("no initialize to replay".into()))?;
        let init_id = Message::parse(&init).ok().and_then(|m| match m {
            Message::Request(r) => match r.id {
                RequestId::Number(n) => u64::try_from(n).ok(),
                RequestId::String(_) => None,
            },
            _ => None,
        });
        let resp = self.post_in(None, init).await?;
        let session = resp.headers().get(SESSION_HEADER).cloned();
        self.read_answer(resp, init_id, false).await?;
        if let Some(initialized) = initialized {
            self.post_in(session.as_ref(), initialized).await?;
        }
        self.lock_state().session_id = session;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// POSTs `body` on an explicit session; a non-success status is an error.
    async fn post_in(
        &self,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = self
            .request_in(reqwest::Method::POST, session)
            .header(header::ACCEPT, ACCEPT_BOTH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(UpstreamError::from_status(&resp))
        }
    }

    /// Holds the GET stream open for server→client messages, reconnecting
    /// with backoff and `Last-Event-ID`, until the transport closes.
    async fn get_stream(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut last_event_id: Option<String> = None;
        while !self.closed.is_cancelled() {
            let generation = self.generation.load(Ordering::SeqCst);
            let mut req = self
                .request(reqwest::Method::GET)
                .header(header::ACCEPT, "text/event-stream");
            if let Some(id) = &last_event_id {
                req = req.header("last-event-id", id.as_str());
            }
            let resp = tokio::select! {
                r = req.send() => r,
                () = self.closed.cancelled() => return,
            };
            match resp {
                Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::debug!(upstream = %self.name, "upstream offers no GET stream (405)");
                    return;
                }
                Ok(r) if session_lost(r.status()) => {
                    last_event_id = None;
                    if let Err(e) = self.reinitialize(generation).await {
                        tracing::debug!(upstream = %self.name, error = %e, "re-initialization failed");
                    }
                }
                Ok(r) if r.status().is_success() => {
                    backoff = Duration::from_millis(100);
                    let mut events = SseByteStream::new(r.bytes_stream());
                    loop {
                        let event = tokio::select! {
                            e = events.next() => e,
                            () = self.closed.cancelled() => return,
                        };
                        let Some(Ok(event)) = event else { break };
                        if let Some(id) = event.id.clone() {
                            last_event_id = Some(id);
                        }
                        let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                            continue;
                        };
                        if !forward_frame(&self.name, &self.incoming, data.as_bytes(), None).await {
                            return;
                        }
                    }
                }
                Ok(r) => {
                    tracing::debug!(upstream = %self.name, status = r.status().as_u16(), "GET stream refused")
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "GET stream connect failed")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.closed.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_GET_BACKOFF);
        }
    }
}
