//! The 2024-11-05 HTTP+SSE transport, for old clients (SPEC.md 35):
//! `GET /sse` opens a session whose one SSE stream carries every message to
//! the client, starting with an `endpoint` event naming the POST URI
//! (`/message?sessionId=<id>`); the client POSTs each message there and gets
//! 202, and the answer arrives on the stream. Same protections as the
//! Streamable HTTP endpoint (Host/Origin, body limit, session and request
//! limits, keep-alive). The stream is the session: when the client leaves
//! it, the session ends (this transport has no resumption).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;

use super::post::{begin, read_body, read_spec, respond, spawn_call};
use super::{DownstreamError, Session, Sink, guard, sse};
use crate::gateway::Gateway;
use crate::jsonrpc::{Body, Message, Response as RpcResponse};
use crate::mcp::method;
use crate::router::negotiated_version;

/// Path of the SSE stream.
pub const SSE_PATH: &str = "/sse";
/// Path clients POST messages to.
pub const MESSAGE_PATH: &str = "/message";
/// Protocol version of sessions opened on this transport.
const VERSION: &str = "2024-11-05";

/// The `sessionId` query parameter of `POST /message`.
#[derive(Deserialize)]
pub(super) struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `GET /sse`: opens a session and its stream.
pub(super) async fn open(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, DownstreamError> {
    guard::check_host_and_origin(&headers, uri.authority(), &gw.config.server)?;
    if !guard::accepts(&headers).sse {
        return Err(DownstreamError::NotAcceptable("text/event-stream"));
    }
    if gw.is_draining() {
        return Err(DownstreamError::Draining);
    }
    if !gw.room_for_session().await {
        return Err(DownstreamError::TooManySessions);
    }
    let session = Arc::new(Session::new(VERSION, None));
    let sink = Sink::open(gw.log.clone(), &session.id).await?;
    session.set_get_stream(sink.clone());
    gw.sessions.insert(session.clone());
    tracing::info!(session = %session.id, "2024-11-05 SSE session opened");
    let mut spec = read_spec(
        &gw,
        &sink,
        vec![session.closed.clone(), gw.streams_closing.clone()],
    );
    spec.priming = false;
    spec.max_duration = None; // this transport cannot resume
    spec.endpoint = Some(format!("{MESSAGE_PATH}?sessionId={}", session.id));
    let (gw2, id) = (gw.clone(), session.id.clone());
    spec.on_close = Some(Box::new(move || {
        // The client left its only stream: the session is over.
        tokio::spawn(async move {
            if let Some(s) = gw2.sessions.get(&id) {
                let _ = gw2
                    .end_session(&s, crate::gateway::SessionEnd::StreamClosed)
                    .await;
            }
        });
    }));
    Ok(sse::response(spec))
}

/// `POST /message?sessionId=…`: one message (or a batch) in; 202 out.
pub(super) async fn message(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<SessionQuery>,
    req: http::Request<HttpBody>,
) -> Result<Response, DownstreamError> {
    let (parts, body) = req.into_parts();
    guard::check_host_and_origin(&parts.headers, parts.uri.authority(), &gw.config.server)?;
    guard::check_content_type(&parts.headers)?;
    let id = q.session_id.ok_or(DownstreamError::MissingSessionQuery)?;
    let session = gw
        .sessions
        .get(&id)
        .ok_or(DownstreamError::UnknownSession)?;
    let sink = session
        .get_stream()
        .ok_or(DownstreamError::UnknownSession)?;
    let bytes = read_body(body, &parts.headers, &gw.config.server).await?;
    let messages = match Body::parse(&bytes)? {
        Body::Single(m) => vec![m],
        Body::Batch(ms) => ms,
    };
    session.touch();
    for message in messages {
        match message {
            Message::Request(r) if r.method == method::INITIALIZE => {
                let version = negotiated_version(r.params.as_deref());
                gw.router.wait_ready().await;
                let result = gw.router.initialize_result(version);
                sink.send(Message::Response(RpcResponse::ok(r.id, result)).to_bytes())
                    .await;
            }
            Message::Request(r) => {
                if gw.is_draining() {
                    return Err(DownstreamError::Draining);
                }
                begin(&gw, &session, &r.id).await?;
                spawn_call(gw.clone(), session.clone(), r, Some(sink.clone()), false);
            }
            Message::Notification(n) => gw.router.handle_notification(&session, n).await,
            Message::Response(r) => respond(&gw, &session, r).await,
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
