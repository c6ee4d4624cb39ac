//! `POST /mcp`: one JSON-RPC message (or a 2025-03-26 batch) per request
//! (T25 "Sending Messages to the Server", SPEC.md 1–3, 8–13).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::guard::{self, Accepts, SESSION_HEADER};
use super::{DownstreamError, Outbound, STREAM_QUEUE, Session, sse};
use crate::gateway::Gateway;
use crate::jsonrpc::{
    Body, ErrorObject, Message, Request, RequestId, Response as RpcResponse, code,
};
use crate::mcp::method;
use crate::router::negotiated_version;

/// Handles a POST to the MCP endpoint.
pub(super) async fn post(State(gw): State<Arc<Gateway>>, req: http::Request<HttpBody>) -> Response {
    match handle(gw, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "POST refused");
            e.into_response()
        }
    }
}

async fn handle(
    gw: Arc<Gateway>,
    req: http::Request<HttpBody>,
) -> Result<Response, DownstreamError> {
    let (parts, body) = req.into_parts();
    let cfg = &gw.config.server;
    guard::check_host_and_origin(&parts.headers, parts.uri.authority(), cfg)?;
    guard::check_content_type(&parts.headers)?;
    let accepts = guard::accepts(&parts.headers);
    if !accepts.json && !accepts.sse {
        return Err(DownstreamError::NotAcceptable(
            "application/json or text/event-stream",
        ));
    }
    let bytes = read_body(body, &parts.headers, cfg.max_body_bytes).await?;
    match Body::parse(&bytes)? {
        Body::Single(Message::Request(r)) if r.method == method::INITIALIZE => {
            initialize(&gw, r, accepts).await
        }
        Body::Single(message) => {
            let session = super::session_of(&gw, &parts.headers)?;
            guard::check_protocol_version(&parts.headers)?;
            handle_message(gw, session, message, accepts).await
        }
        Body::Batch(messages) => {
            let session = super::session_of(&gw, &parts.headers)?;
            guard::check_protocol_version(&parts.headers)?;
            if !matches!(session.protocol_version, "2024-11-05" | "2025-03-26") {
                return Err(DownstreamError::BatchNotAllowed(session.protocol_version));
            }
            batch(gw, session, messages).await
        }
    }
}

/// Reads the body, refusing more than `limit` bytes (413).
async fn read_body(
    body: HttpBody,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, DownstreamError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(DownstreamError::PayloadTooLarge { limit_bytes: limit });
    }
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(DownstreamError::PayloadTooLarge { limit_bytes: limit })
        }
        Err(_) => Err(DownstreamError::BodyRead),
    }
}

/// Opens a session and answers `initialize` from the merged capabilities.
async fn initialize(
    gw: &Gateway,
    request: Request,
    accepts: Accepts,
) -> Result<Response, DownstreamError> {
    if gw.is_draining() {
        return Err(DownstreamError::Draining);
    }
    gw.router.wait_ready().await;
    let version = negotiated_version(request.params.as_deref());
    let session = Arc::new(Session::new(version, request.params));
    let result = gw.router.initialize_result(version);
    gw.sessions.insert(session.clone());
    tracing::info!(session = %session.id, protocol_version = version, "session opened");
    let response = Message::Response(RpcResponse::ok(request.id, result));
    let mut resp = if accepts.json {
        json_response(response.to_bytes())
    } else {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Outbound::Final(response.to_bytes()));
        sse::response(rx, vec![], gw.config.server.keepalive_interval)
    };
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(resp)
}

async fn handle_message(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    message: Message,
    accepts: Accepts,
) -> Result<Response, DownstreamError> {
    match message {
        Message::Notification(n) => {
            gw.router.handle_notification(&session, n).await;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Response(r) => {
            gw.router.handle_response(&session, r).await;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Request(r) => {
            if gw.is_draining() {
                return Err(DownstreamError::Draining);
            }
            session
                .begin(&r.id)
                .map_err(|_| DownstreamError::DuplicateRequestId(r.id.clone()))?;
            if accepts.sse {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                spawn_call(gw.clone(), session, r, Some(tx));
                Ok(sse::response(
                    rx,
                    vec![],
                    gw.config.server.keepalive_interval,
                ))
            } else {
                let call = spawn_call(gw, session, r, None);
                match call.await {
                    Ok(bytes) => Ok(json_response(bytes)),
                    Err(_) => Err(DownstreamError::BodyRead),
                }
            }
        }
    }
}

/// Runs one call in its own task: a client that disconnects does not cancel
/// it (T25: a disconnect is not a cancellation). Returns the serialized
/// response; with a sink, also sends it there as the final event. A call
/// the client cancelled ends its stream without a response (U25); JSON mode
/// still has to answer the POST, and gets a "cancelled" error.
fn spawn_call(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    request: Request,
    sink: Option<mpsc::Sender<Outbound>>,
) -> tokio::task::JoinHandle<Bytes> {
    let span = tracing::info_span!("call", session = %session.id, id = %request.id, method = %request.method);
    tokio::spawn(
        async move {
            let id = request.id.clone();
            let response = gw
                .router
                .handle_request(&session, request, sink.clone())
                .await;
            session.end(&id);
            let Some(response) = response else {
                let cancelled = ErrorObject::new(code::INTERNAL_ERROR, "request cancelled");
                return Message::Response(RpcResponse::err(Some(id), &cancelled)).to_bytes();
            };
            let bytes = Message::Response(response).to_bytes();
            if let Some(sink) = sink
                && sink.send(Outbound::Final(bytes.clone())).await.is_err()
            {
                tracing::debug!("client left before the response; dropped");
            }
            bytes
        }
        .instrument(span),
    )
}

/// A batch (2025-03-26): notifications and responses are handled, requests
/// are answered together in one JSON array (202 if there are none). The
/// whole batch is checked (drain, duplicate ids) before any request starts,
/// so a refused batch has no side effects.
async fn batch(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    messages: Vec<Message>,
) -> Result<Response, DownstreamError> {
    let ids: Vec<RequestId> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.id.clone()),
            _ => None,
        })
        .collect();
    if !ids.is_empty() && gw.is_draining() {
        return Err(DownstreamError::Draining);
    }
    for (n, id) in ids.iter().enumerate() {
        if session.begin(id).is_err() {
            ids[..n].iter().for_each(|earlier| session.end(earlier));
            return Err(DownstreamError::DuplicateRequestId(id.clone()));
        }
    }
    let mut calls = Vec::new();
    for message in messages {
        match message {
            Message::Request(r) => calls.push(spawn_call(gw.clone(), session.clone(), r, None)),
            Message::Notification(n) => gw.router.handle_notification(&session, n).await,
            Message::Response(r) => gw.router.handle_response(&session, r).await,
        }
    }
    if calls.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let mut body = vec![b'['];
    for (i, call) in calls.into_iter().enumerate() {
        let bytes = call.await.unwrap_or_default();
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&bytes);
    }
    body.push(b']');
    Ok(json_response(Bytes::from(body)))
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
