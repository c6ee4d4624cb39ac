//! The shape every upstream kind shares: frames go out through
//! [`Transport::send`]; everything that comes back arrives on one
//! [`Incoming`] channel. The [`super::Connection`] on top is kind-agnostic.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::UpstreamError;
use super::http::HttpTransport;
use super::stdio::StdioTransport;
use crate::config::{UpstreamConfig, UpstreamKind};
use crate::jsonrpc::Message;

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
}

impl Transport {
    /// Opens a transport of the configured kind.
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] if a child cannot be started.
    pub(crate) fn open(
        name: &str,
        cfg: &UpstreamConfig,
        incoming: mpsc::Sender<Incoming>,
    ) -> Result<Transport, UpstreamError> {
        match cfg.kind() {
            UpstreamKind::Stdio => StdioTransport::spawn(name, cfg, incoming).map(Transport::Stdio),
            UpstreamKind::Http => HttpTransport::new(name, cfg, incoming).map(Transport::Http),
        }
    }

    /// Sends one frame. `request_id` is set for requests, so a transport that
    /// fails to deliver can report [`Incoming::Failed`].
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] if the transport is gone.
    pub(crate) async fn send(
        &self,
        frame: Bytes,
        request_id: Option<u64>,
        method: Option<&str>,
    ) -> Result<(), UpstreamError> {
        match self {
            Transport::Stdio(t) => t.send(frame).await,
            Transport::Http(t) => {
                t.send(frame, request_id, method).await;
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
        }
    }

    /// The child's process id, for stdio upstreams.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Transport::Stdio(t) => Some(t.pid()),
            Transport::Http(_) => None,
        }
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
