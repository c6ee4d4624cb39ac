//! `GET /mcp` (the server→client stream, SPEC.md 5) and `DELETE /mcp`
//! (session end, SPEC.md 12).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use tokio::sync::mpsc;

use super::{DownstreamError, STREAM_QUEUE, guard, sse};
use crate::gateway::Gateway;

/// Opens the session's GET stream (replacing an older one).
pub(super) async fn get(State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    let open = || -> Result<Response, DownstreamError> {
        guard::check_host_and_origin(&headers, uri.authority(), &gw.config.server)?;
        if !guard::accepts(&headers).sse {
            return Err(DownstreamError::NotAcceptable("text/event-stream"));
        }
        let session = super::session_of(&gw, &headers)?;
        guard::check_protocol_version(&headers)?;
        // During the drain, calls in flight may still need the GET stream
        // (sampling, elicitation); it is refused once streams close.
        if gw.streams_closing.is_cancelled() {
            return Err(DownstreamError::Draining);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        session.set_get_stream(tx);
        tracing::debug!(session = %session.id, "GET stream opened");
        let stops = vec![session.closed.clone(), gw.draining.clone()];
        Ok(sse::response(
            rx,
            stops,
            gw.config.server.keepalive_interval,
        ))
    };
    open().unwrap_or_else(IntoResponse::into_response)
}

/// Ends a session: its streams close and its in-flight calls are cancelled
/// upstream. Later use of the id gets 404.
pub(super) async fn delete(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        guard::check_host_and_origin(&headers, uri.authority(), &gw.config.server)?;
        let session = super::session_of(&gw, &headers)?;
        gw.sessions.remove(&session.id);
        gw.router.end_session(&session).await;
        tracing::info!(session = %session.id, "session ended by client");
        Ok::<_, DownstreamError>(StatusCode::OK.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
