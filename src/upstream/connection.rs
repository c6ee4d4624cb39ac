//! One live connection to an upstream, whatever its transport: Ballast's own
//! request ids (unique per upstream, never reused — SPEC.md 13), the map of
//! requests awaiting answers, the `initialize` handshake Ballast performs
//! itself (L25), and dispatch of what the upstream sends on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::transport::{INCOMING_CAPACITY, Incoming, StderrTail, Transport};
use super::{Handled, UpstreamError, UpstreamEvent};
use crate::config::UpstreamConfig;
use crate::jsonrpc::{Message, Notification, Request, RequestId, Response, empty_object, to_raw};
use crate::mcp::{LATEST_LEGACY, method};

type Answer = oneshot::Sender<Result<Response, UpstreamError>>;

/// What the upstream said about itself in its `initialize` result.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The protocol version the upstream agreed to.
    pub protocol_version: String,
    /// Its capabilities object (`tools`, `resources`, `prompts`, `logging`, …).
    #[serde(default)]
    pub capabilities: serde_json::Value,
    /// Its `serverInfo` (`name`, `version`, …).
    #[serde(default)]
    pub server_info: serde_json::Value,
    /// Its `instructions`, if any.
    pub instructions: Option<String>,
}

/// How long a request may wait for its answer.
pub(crate) struct Deadline {
    /// The timeout, restarted by each progress notification.
    pub(crate) timeout: std::time::Duration,
    /// The most it may be extended to, from the start.
    pub(crate) max: std::time::Duration,
    /// Woken on each progress notification for the request.
    pub(crate) progress: Option<Arc<tokio::sync::Notify>>,
}

/// A live upstream connection.
pub struct Connection {
    name: Arc<str>,
    index: usize,
    transport: Transport,
    pending: Mutex<HashMap<u64, Answer>>,
    ids: Arc<AtomicU64>,
    closed: CancellationToken,
    info: OnceLock<ServerInfo>,
    request_timeout: Duration,
    /// Woken when a request found nobody listening (connection refused):
    /// the supervisor probes at once instead of at the next interval.
    unreachable: tokio::sync::Notify,
}

impl Connection {
    /// Opens the transport and starts dispatching what it delivers. Call
    /// [`Connection::initialize`] next.
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] if a stdio child cannot start.
    pub(crate) fn open(
        index: usize,
        name: Arc<str>,
        cfg: &UpstreamConfig,
        ids: Arc<AtomicU64>,
        events: mpsc::Sender<UpstreamEvent>,
        stderr_tail: StderrTail,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let (tx, rx) = mpsc::channel(INCOMING_CAPACITY);
        let closed = CancellationToken::new();
        let transport = Transport::open(&name, cfg, tx, closed.clone(), stderr_tail)?;
        let conn = Arc::new(Connection {
            name,
            index,
            transport,
            pending: Mutex::new(HashMap::new()),
            ids,
            closed,
            info: OnceLock::new(),
            request_timeout: cfg.request_timeout,
            unreachable: tokio::sync::Notify::new(),
        });
        tokio::spawn(conn.clone().dispatch(rx, events));
        Ok(conn)
    }

    /// Runs the `initialize` handshake: request, then `notifications/initialized`.
    ///
    /// # Errors
    /// Any [`UpstreamError`]; [`UpstreamError::Timeout`] after `timeout`.
    pub(crate) async fn initialize(&self, timeout: Duration) -> Result<&ServerInfo, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_LEGACY,
            "capabilities": { "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } },
            "clientInfo": { "name": "ballast", "version": env!("CARGO_PKG_VERSION") },
        });
        let id = self.next_id();
        let response = tokio::time::timeout(
            timeout,
            self.request(id, method::INITIALIZE, Some(to_raw(&params))),
        )
        .await
        .map_err(|_| UpstreamError::Timeout { timeout })??;
        let result = response
            .outcome
            .map_err(|e| UpstreamError::Protocol(format!("initialize failed: {}", e.get())))?;
        let info: ServerInfo = serde_json::from_str(result.get())
            .map_err(|e| UpstreamError::Protocol(format!("bad initialize result: {e}")))?;
        self.transport.set_protocol_version(&info.protocol_version);
        self.notify(method::INITIALIZED, None).await?;
        tracing::info!(
            upstream = %self.name,
            protocol_version = %info.protocol_version,
            server = %info.server_info,
            "upstream initialized"
        );
        Ok(self.info.get_or_init(|| info))
    }

    /// The upstream's `initialize` answer, once initialized.
    pub fn info(&self) -> Option<&ServerInfo> {
        self.info.get()
    }

    /// A fresh request id for this upstream.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends request `id` and waits for its answer, at most the configured
    /// `request_timeout`; on expiry the upstream gets `notifications/cancelled`
    /// (SPEC.md 26).
    ///
    /// # Errors
    /// [`UpstreamError::Timeout`], [`UpstreamError::Closed`] (connection lost
    /// after sending: outcome unknown), [`UpstreamError::Cancelled`], or a
    /// transport error.
    pub(crate) async fn request(
        &self,
        id: u64,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Response, UpstreamError> {
        let deadline = Deadline {
            timeout: self.request_timeout,
            max: self.request_timeout,
            progress: None,
        };
        self.request_within(id, method, params, deadline).await
    }

    /// [`Connection::request`] with its own [`Deadline`]: each wake-up of
    /// `deadline.progress` (a progress notification for this call) restarts
    /// the timeout, never past `deadline.max` from the start (SPEC.md 26).
    ///
    /// # Errors
    /// As [`Connection::request`].
    pub(crate) async fn request_within(
        &self,
        id: u64,
        method: &str,
        params: Option<Box<RawValue>>,
        deadline: Deadline,
    ) -> Result<Response, UpstreamError> {
        // The deadline covers the whole call: the wait for room in the
        // upstream's input queue too.
        let start = tokio::time::Instant::now();
        let cap = start + deadline.max.max(deadline.timeout);
        let mut expires = (start + deadline.timeout).min(cap);
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        let frame = Message::Request(Request {
            id: RequestId::Number(id as i64),
            method: method.to_owned(),
            params,
        })
        .to_bytes();
        let sent = self
            .transport
            .send(frame, Some(id), Some(method), Some(expires))
            .await;
        if let Err(e) = sent {
            self.lock_pending().remove(&id);
            return Err(e);
        }
        tokio::pin!(rx);
        loop {
            let progressed = async {
                match &deadline.progress {
                    Some(p) => p.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = &mut rx => {
                    return match answer {
                        Ok(answer) => answer,
                        Err(_) => Err(UpstreamError::Cancelled),
                    };
                }
                () = tokio::time::sleep_until(expires) => {
                    self.cancel(id, "timeout").await;
                    return Err(UpstreamError::Timeout { timeout: expires.duration_since(start) });
                }
                () = progressed => {
                    expires = (tokio::time::Instant::now() + deadline.timeout).min(cap);
                }
            }
        }
    }

    /// Sends a notification.
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] if the transport is gone.
    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), UpstreamError> {
        let frame = Message::Notification(Notification {
            method: method.to_owned(),
            params,
        })
        .to_bytes();
        self.transport.send(frame, None, Some(method), None).await
    }

    /// Answers a request the upstream sent (server→client direction).
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] if the transport is gone.
    pub(crate) async fn respond(
        &self,
        id: RequestId,
        outcome: Result<Box<RawValue>, Box<RawValue>>,
    ) -> Result<(), UpstreamError> {
        let frame = Message::Response(Response {
            id: Some(id),
            outcome,
        })
        .to_bytes();
        self.transport.send(frame, None, None, None).await
    }

    /// Stops waiting for request `id` and tells the upstream to stop too
    /// (`notifications/cancelled`, U25). The waiting caller gets
    /// [`UpstreamError::Cancelled`].
    pub(crate) async fn cancel(&self, id: u64, reason: &str) {
        if self.lock_pending().remove(&id).is_some() {
            let params = to_raw(&json!({ "requestId": id, "reason": reason }));
            let _ = self.notify(method::CANCELLED, Some(params)).await;
        }
    }

    /// Closes the transport (stdio: stdin-close → SIGTERM → SIGKILL).
    pub(crate) async fn close(&self) {
        self.closed.cancel();
        self.transport.close().await;
        self.fail_all();
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the connection is gone (child exited or closed).
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Resolves once a request on this connection found nobody listening
    /// at the upstream's address (see [`UpstreamError::is_unreachable`]).
    pub(crate) async fn unreachable_seen(&self) {
        self.unreachable.notified().await;
    }

    /// How long a stdio child has not been reading its input, while it is
    /// stalled (write stall); `None` otherwise and for remote upstreams.
    pub fn write_stall(&self) -> Option<Duration> {
        self.transport.stalled_for()
    }

    /// Notifications and responses to a stdio child dropped because its
    /// input queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.transport.dropped()
    }

    /// The stdio child's pid, if any.
    pub fn pid(&self) -> Option<u32> {
        self.transport.pid()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Answer>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail_all(&self) {
        for (_, answer) in self.lock_pending().drain() {
            let _ = answer.send(Err(UpstreamError::Closed));
        }
    }

    async fn dispatch(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Incoming>,
        events: mpsc::Sender<UpstreamEvent>,
    ) {
        loop {
            let incoming = tokio::select! {
                i = rx.recv() => i,
                () = self.closed.cancelled() => None,
            };
            let Some(incoming) = incoming else { break };
            match incoming {
                Incoming::Failed { id, error } => {
                    if error.is_unreachable() {
                        self.unreachable.notify_one();
                    }
                    if let Some(answer) = self.lock_pending().remove(&id) {
                        let _ = answer.send(Err(error));
                    }
                }
                Incoming::Message { message, origin } => {
                    let conn = Arc::downgrade(&self);
                    self.on_message(message, origin, conn, &events).await
                }
            }
        }
        self.closed.cancel();
        self.fail_all();
    }

    async fn on_message(
        &self,
        message: Message,
        origin: Option<u64>,
        conn: Weak<Connection>,
        events: &mpsc::Sender<UpstreamEvent>,
    ) {
        let upstream = self.index;
        match message {
            Message::Response(response) => {
                let id = match &response.id {
                    Some(RequestId::Number(n)) => u64::try_from(*n).ok(),
                    _ => None,
                };
                let answer = id.and_then(|id| self.lock_pending().remove(&id));
                match answer {
                    Some(answer) => {
                        let _ = answer.send(Ok(response));
                    }
                    // Late answer to a cancelled or timed-out request: normal race (U25).
                    None => {
                        tracing::debug!(upstream = %self.name, id = ?response.id, "answer to no pending request; ignored")
                    }
                }
            }
            Message::Request(request) if request.method == method::PING => {
                let _ = self.respond(request.id, Ok(empty_object())).await;
            }
            Message::Request(request) => {
                let (handled, placed) = Handled::new();
                let event = UpstreamEvent::Request {
                    upstream,
                    request,
                    origin,
                    conn,
                    handled,
                };
                self.emit(event, placed, events).await;
            }
            Message::Notification(notification) => {
                let (handled, placed) = Handled::new();
                let event = UpstreamEvent::Notification {
                    upstream,
                    notification,
                    origin,
                    handled,
                };
                self.emit(event, placed, events).await;
            }
        }
    }

    /// Hands an event to the router and waits until it is placed, so the
    /// next message from this upstream cannot overtake it.
    async fn emit(
        &self,
        event: UpstreamEvent,
        placed: tokio::sync::oneshot::Receiver<()>,
        events: &mpsc::Sender<UpstreamEvent>,
    ) {
        if events.send(event).await.is_err() {
            return;
        }
        tokio::select! {
            _ = placed => {}
            () = self.closed.cancelled() => {}
        }
    }
}
