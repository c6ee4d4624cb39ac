//! The shape every upstream kind shares: frames go out through
//! [`Transport::send`]; everything that comes back arrives on one
//! [`Incoming`] channel. The [`super::Connection`] on top is kind-agnostic.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::UpstreamError;
use super::http::HttpTransport;
use super::sse::SseTransport;
use super::stdio::StdioTransport;
use crate::config::{UpstreamConfig, UpstreamKind};
use crate::jsonrpc::Message;

/// The last lines a stdio child wrote to stderr (shared with its upstream,
/// so they outlive the child for logs and error `data`).
pub(crate) type StderrTail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

/// Lines kept in a [`StderrTail`].
pub(crate) const STDERR_TAIL_LINES: usize = 20;

/// Capacity of the incoming channel of one upstream connection (messages).
pub(crate) const INCOMING_CAPACITY: usize = 1024;

/// What a transport delivers to its connection.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message from the upstream. `origin` is the upstream request id whose
    /// response stream carried it (HTTP), so server→client requests and
    /// notifications can be tied to the call that caused them.
    Message {
        /// The message.
        message: Message,
        /// The request whose stream carried it, if known.
        origin: Option<u64>,
    },
    /// Request `id` will get no answer from the upstream.
    Failed {
        /// The upstream request id.
        id: u64,
        /// Why.
        error: UpstreamError,
    },
}

/// One upstream transport. The incoming channel closing means the
/// connection is gone (child exited).
pub(crate) enum Transport {
    /// A child process on stdio.
    Stdio(StdioTransport),
    /// A remote Streamable HTTP endpoint.
    Http(HttpTransport),
    /// A remote 2024-11-05 HTTP+SSE endpoint.
    Sse(SseTransport),
}

impl Transport {
    /// Opens a transport of the configured kind.
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] if a child cannot be started.
    /// `closed` is the connection's token: a transport whose link ends for
    /// good (the SSE stream of a 2024-11-05 server) fires it.
    pub(crate) fn open(
        name: &str,
        cfg: &UpstreamConfig,
        incoming: mpsc::Sender<Incoming>,
        closed: tokio_util::sync::CancellationToken,
        stderr_tail: StderrTail,
    ) -> Result<Transport, UpstreamError> {
        match cfg.kind() {
            UpstreamKind::Stdio => {
                StdioTransport::spawn(name, cfg, incoming, stderr_tail).map(Transport::Stdio)
            }
            UpstreamKind::Http => HttpTransport::new(name, cfg, incoming).map(Transport::Http),
            UpstreamKind::Sse => {
                SseTransport::open(name, cfg, incoming, closed).map(Transport::Sse)
            }
        }
    }

    /// Sends one frame. `request_id` is set for requests, so a transport that
    /// fails to deliver can report [`Incoming::Failed`]; `deadline` is the
    /// request's, which bounds its wait for room in a stdio child's queue
    /// (`None`: a notification or response, which never waits).
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] if the transport is gone;
    /// [`UpstreamError::InputFull`] if a stdio child's queue had no room.
    pub(crate) async fn send(
        &self,
        frame: Bytes,
        request_id: Option<u64>,
        method: Option<&str>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), UpstreamError> {
        match self {
            Transport::Stdio(t) => t.send(frame, deadline).await,
            Transport::Http(t) => {
                t.send(frame, request_id, method).await;
                Ok(())
            }
            Transport::Sse(t) => {
                t.send(frame, request_id);
                Ok(())
            }
        }
    }

    /// Tells the transport which protocol version was negotiated.
    pub(crate) fn set_protocol_version(&self, version: &str) {
        if let Transport::Http(t) = self {
            t.set_protocol_version(version);
        }
    }

    /// Ends the transport: a stdio child gets stdin-close → SIGTERM →
    /// SIGKILL (each step after `shutdown_grace`); an HTTP session gets DELETE.
    pub(crate) async fn close(&self) {
        match self {
            Transport::Stdio(t) => t.close().await,
            Transport::Http(t) => t.close().await,
            Transport::Sse(t) => t.close(),
        }
    }

    /// How long a stdio child has not been reading its input, while it is
    /// stalled (see `stdin_queue`); `None` for remote upstreams.
    pub(crate) fn stalled_for(&self) -> Option<std::time::Duration> {
        match self {
            Transport::Stdio(t) => t.stalled_for(),
            Transport::Http(_) | Transport::Sse(_) => None,
        }
    }

    /// Notifications and responses dropped because a stdio child's queue
    /// was full.
    pub(crate) fn dropped(&self) -> u64 {
        match self {
            Transport::Stdio(t) => t.dropped(),
            Transport::Http(_) | Transport::Sse(_) => 0,
        }
    }

    /// The child's process id, for stdio upstreams.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Transport::Stdio(t) => Some(t.pid()),
            Transport::Http(_) | Transport::Sse(_) => None,
        }
    }
}

/// What a remote upstream needs: its URL, the configured extra headers,
/// and an HTTP client (10 s connect timeout).
///
/// # Errors
/// [`UpstreamError::Protocol`] for an unusable URL or header.
pub(crate) fn remote_client(
    cfg: &UpstreamConfig,
) -> Result<(reqwest::Url, http::HeaderMap, reqwest::Client), UpstreamError> {
    let url = cfg.url.as_deref().unwrap_or_default();
    let url =
        reqwest::Url::parse(url).map_err(|e| UpstreamError::Protocol(format!("bad url: {e}")))?;
    let mut headers = http::HeaderMap::new();
    for (k, v) in &cfg.headers {
        let k = http::HeaderName::try_from(k.as_str())
            .map_err(|e| UpstreamError::Protocol(format!("header {k}: {e}")))?;
        let v = http::HeaderValue::try_from(v.as_str())
            .map_err(|e| UpstreamError::Protocol(format!("header value: {e}")))?;
        headers.insert(k, v);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()?;
    Ok((url, headers, client))
}

/// Parses a frame and hands it to the connection. Returns false when the
/// connection is gone (the reader should stop); a bad frame is skipped.
pub(crate) async fn forward_frame(
    upstream: &str,
    incoming: &mpsc::Sender<Incoming>,
    frame: &[u8],
    origin: Option<u64>,
) -> bool {
    match parse_frame(upstream, frame) {
        Some(message) => incoming
            .send(Incoming::Message { message, origin })
            .await
            .is_ok(),
        None => true,
    }
}

/// Parses one frame from an upstream; a bad frame is logged and skipped.
pub(crate) fn parse_frame(upstream: &str, frame: &[u8]) -> Option<Message> {
    match Message::parse(frame) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(upstream, error = %e, "upstream sent an invalid JSON-RPC frame; skipped");
            None
        }
    }
}
