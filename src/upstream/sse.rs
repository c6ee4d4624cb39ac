//! A remote 2024-11-05 HTTP+SSE upstream (SPEC.md 35, client side): one
//! long GET on the SSE endpoint carries every server message; its first
//! event, `endpoint`, names the URI to POST messages to. The transport has
//! no resumption: when the stream ends, the connection is closed and the
//! supervisor reconnects (a new session, a new `initialize`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, header};
use sse_stream::SseByteStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use super::transport::{Incoming, forward_frame, remote_client};
use crate::config::UpstreamConfig;

/// An HTTP+SSE client transport.
pub(crate) struct SseTransport {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    client: reqwest::Client,
    headers: HeaderMap,
    /// The POST URI from the `endpoint` event, once it arrived.
    endpoint: watch::Receiver<Option<reqwest::Url>>,
    incoming: mpsc::Sender<Incoming>,
    /// How long a send waits for the `endpoint` event.
    endpoint_wait: Duration,
    closed: CancellationToken,
}

impl SseTransport {
    /// Opens the SSE stream in the background. `closed` fires when it ends.
    ///
    /// # Errors
    /// [`UpstreamError::Protocol`] for an unusable URL or header.
    pub(crate) fn open(
        name: &str,
        cfg: &UpstreamConfig,
        incoming: mpsc::Sender<Incoming>,
        closed: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let (url, headers, client) = remote_client(cfg)?;
        let (endpoint_tx, endpoint) = watch::channel(None);
        let inner = Arc::new(Inner {
            name: name.into(),
            client,
            headers,
            endpoint,
            incoming,
            endpoint_wait: cfg.init_timeout,
            closed,
        });
        tokio::spawn(inner.clone().read_stream(url, endpoint_tx));
        Ok(Self { inner })
    }

    /// POSTs one frame to the endpoint (in the background); failures of a
    /// request arrive as [`Incoming::Failed`].
    pub(crate) fn send(&self, frame: Bytes, request_id: Option<u64>) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(error) = inner.post(frame).await {
                match request_id {
                    Some(id) => {
                        let _ = inner.incoming.send(Incoming::Failed { id, error }).await;
                    }
                    None => {
                        tracing::debug!(upstream = %inner.name, %error, "upstream did not accept a message")
                    }
                }
            }
        });
    }

    /// Closes the stream (the server ends the session when it sees that).
    pub(crate) fn close(&self) {
        self.inner.closed.cancel();
    }
}

impl Inner {
    async fn post(&self, frame: Bytes) -> Result<(), UpstreamError> {
        let mut endpoint = self.endpoint.clone();
        // The watch guard must not live across the POST below.
        let url = match tokio::time::timeout(self.endpoint_wait, endpoint.wait_for(Option::is_some))
            .await
        {
            Ok(Ok(url)) => url.clone(),
            _ => None,
        };
        let url = url.ok_or(UpstreamError::NotConnected)?;
        let resp = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(frame)
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::from_status(&resp))
        }
    }

    /// Reads the SSE stream until it ends or the transport closes; then
    /// fires `closed` so the connection ends and the supervisor reconnects.
    async fn read_stream(
        self: Arc<Self>,
        url: reqwest::Url,
        endpoint: watch::Sender<Option<reqwest::Url>>,
    ) {
        let request = self
            .client
            .get(url.clone())
            .headers(self.headers.clone())
            .header(header::ACCEPT, "text/event-stream")
            .send();
        let resp = tokio::select! {
            r = request => r,
            () = self.closed.cancelled() => return,
        };
        match resp {
            Ok(r) if r.status().is_success() => {
                let mut events = SseByteStream::new(r.bytes_stream());
                loop {
                    let event = tokio::select! {
                        e = events.next() => e,
                        () = self.closed.cancelled() => break,
                    };
                    let Some(Ok(event)) = event else {
                        tracing::debug!(upstream = %self.name, "upstream SSE stream ended");
                        break;
                    };
                    let data = event.data.unwrap_or_default();
                    let keep_reading = match event.event.as_deref() {
                        Some("endpoint") => match url.join(data.trim()) {
                            Ok(u) => {
                                endpoint.send_replace(Some(u));
                                true
                            }
                            Err(e) => {
                                tracing::warn!(upstream = %self.name, error = %e, "upstream sent an unusable endpoint");
                                false
                            }
                        },
                        None | Some("message") if !data.is_empty() => {
                            forward_frame(&self.name, &self.incoming, data.as_bytes(), None).await
                        }
                        _ => true,
                    };
                    if !keep_reading {
                        break;
                    }
                }
            }
            Ok(r) => {
                tracing::debug!(upstream = %self.name, status = r.status().as_u16(), "SSE endpoint refused")
            }
            Err(e) => {
                tracing::debug!(upstream = %self.name, error = %e, "SSE endpoint unreachable")
            }
        }
        self.closed.cancel();
    }
}
