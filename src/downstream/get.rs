//! `GET /mcp` (the server→client stream, SPEC.md 5) and `DELETE /mcp`
//! (session end, SPEC.md 12).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};

use super::{DownstreamError, Sink, guard, sse};
use crate::gateway::Gateway;
use crate::store::EventId;

/// Opens the session's GET stream (replacing an older one), or — with
/// `Last-Event-ID` naming one of this session's streams — resumes that
/// stream right after the given event (SPEC.md 15). An id that names no
/// stream of this session (expired, foreign, malformed) opens a new GET
/// stream instead, revealing nothing about other sessions.
pub(super) async fn get(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, DownstreamError> {
    let (gw, uri, headers) = (&gw, &uri, &headers);
    guard::check_host_and_origin(headers, uri.authority(), &gw.config.server)?;
    if !guard::accepts(headers).sse {
        return Err(DownstreamError::NotAcceptable("text/event-stream"));
    }
    let session = super::session_of(gw, headers).await?;
    guard::check_protocol_version(headers)?;
    // During the drain, calls in flight may still need the GET stream
    // (sampling, elicitation); it is refused once streams close.
    if gw.streams_closing.is_cancelled() {
        return Err(DownstreamError::Draining);
    }
    session.touch();
    let stops = vec![session.closed.clone(), gw.streams_closing.clone()];
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(EventId::parse);
    if let Some(from) = resume {
        let owner = gw.log.owner(&from.stream).await?;
        if owner.as_deref() == Some(&*session.id) {
            tracing::debug!(session = %session.id, event = %from, "stream resumed");
            gw.stats.count(crate::observe::Counter::StreamsResumed);
            crate::observe::metrics::stream_resumed();
            let mut spec = super::post::read_spec(
                gw,
                &Sink::resumed(gw.log.clone(), from.stream.clone()),
                stops,
            );
            spec.after = from.seq;
            spec.priming = false;
            // Another replica may be writing it, and may die.
            if gw.log.is_shared() {
                super::takeover::watch(gw.clone(), session.clone(), from.stream.clone());
            }
            return Ok(sse::response(spec));
        }
    }
    let sink = Sink::open(gw.log.clone(), &session.id).await?;
    if let Some(old) = session.set_get_stream(sink.clone()) {
        old.finish().await;
    }
    tracing::debug!(session = %session.id, stream = %sink.stream, "GET stream opened");
    Ok(sse::response(super::post::read_spec(gw, &sink, stops)))
}

/// Ends a session: its streams close and its in-flight calls are cancelled
/// upstream. Later use of the id gets 404.
pub(super) async fn delete(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, DownstreamError> {
    guard::check_host_and_origin(&headers, uri.authority(), &gw.config.server)?;
    let session = super::session_of(&gw, &headers).await?;
    gw.end_session(&session, crate::gateway::SessionEnd::Deleted)
        .await?;
    Ok(StatusCode::OK.into_response())
}
