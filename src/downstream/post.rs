//! `POST /mcp`: one JSON-RPC message (or a 2025-03-26 batch) per request
//! (T25 "Sending Messages to the Server", SPEC.md 1–3, 8–13).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tracing::Instrument;

use super::guard::{self, Accepts, SESSION_HEADER};
use super::session::BeginError;
use super::{DownstreamError, Session, Sink, sse};
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
    let bytes = read_body(body, &parts.headers, cfg).await?;
    match Body::parse(&bytes)? {
        Body::Single(Message::Request(r)) if r.method == method::INITIALIZE => {
            initialize(&gw, r, accepts).await
        }
        Body::Single(message) => {
            let session = super::session_of(&gw, &parts.headers).await?;
            guard::check_protocol_version(&parts.headers)?;
            handle_message(gw, session, message, accepts, bytes).await
        }
        Body::Batch(messages) => {
            let session = super::session_of(&gw, &parts.headers).await?;
            guard::check_protocol_version(&parts.headers)?;
            if !matches!(session.protocol_version, "2024-11-05" | "2025-03-26") {
                return Err(DownstreamError::BatchNotAllowed(session.protocol_version));
            }
            batch(gw, session, messages).await
        }
    }
}

/// Reads the body, refusing more than `max_body_bytes` (413) and a body
/// not complete within `body_read_timeout` (408, connection closed).
pub(super) async fn read_body(
    body: HttpBody,
    headers: &HeaderMap,
    cfg: &crate::config::ServerConfig,
) -> Result<Bytes, DownstreamError> {
    let limit = cfg.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(DownstreamError::PayloadTooLarge { limit_bytes: limit });
    }
    let limited = http_body_util::Limited::new(body, limit);
    let collect = http_body_util::BodyExt::collect(limited);
    let Ok(collected) = tokio::time::timeout(cfg.body_read_timeout, collect).await else {
        return Err(DownstreamError::BodyTimeout {
            timeout: cfg.body_read_timeout,
        });
    };
    match collected {
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
    // A session keeps its params for its life: bounded well below the body limit.
    let limit = gw.config.server.max_initialize_bytes;
    if request
        .params
        .as_ref()
        .is_some_and(|p| p.get().len() > limit)
    {
        return Err(DownstreamError::InitializeTooLarge {
            id: request.id,
            limit_bytes: limit,
        });
    }
    if !gw.room_for_session().await {
        return Err(DownstreamError::TooManySessions);
    }
    gw.router.wait_ready().await;
    let version = negotiated_version(request.params.as_deref());
    let session = Arc::new(Session::new(version, request.params.map(Arc::from)));
    let result = gw.router.initialize_result(version);
    gw.session_store.save(session.record()).await?;
    gw.sessions.insert(session.clone());
    tracing::info!(session = %session.id, protocol_version = version, "session opened");
    let response = Message::Response(RpcResponse::ok(request.id, result));
    let mut resp = if accepts.json {
        json_response(response.to_bytes())
    } else {
        let sink = Sink::open(gw.log.clone(), &session.id).await?;
        sink.send_last(response.to_bytes()).await;
        sse::response(read_spec(gw, &sink, vec![]))
    };
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(resp)
}

/// How a new SSE response reads `sink`'s stream from its start.
pub(super) fn read_spec(
    gw: &Gateway,
    sink: &Sink,
    stops: Vec<tokio_util::sync::CancellationToken>,
) -> sse::ReadSpec {
    let cfg = &gw.config.server;
    sse::ReadSpec {
        log: gw.log.clone(),
        stream: sink.stream.clone(),
        after: 0,
        priming: true,
        stops,
        keepalive: cfg.keepalive_interval,
        max_duration: (!cfg.max_stream_duration.is_zero()).then_some(cfg.max_stream_duration),
        stats: gw.stats.clone(),
        endpoint: None,
        on_close: None,
        lease: Some(gw.readers.attach(sink.stream.clone())),
    }
}

/// Handles one message of session `session`; `raw` is the POST body, which
/// holds exactly `message` (kept with a request's stream in a shared store).
async fn handle_message(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    message: Message,
    accepts: Accepts,
    raw: Bytes,
) -> Result<Response, DownstreamError> {
    session.touch();
    match message {
        Message::Notification(n) => {
            gw.router.handle_notification(&session, n).await;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Response(r) => {
            respond(&gw, &session, r).await;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Request(r) => {
            if gw.is_draining() {
                return Err(DownstreamError::Draining);
            }
            begin(&gw, &session, &r.id).await?;
            if accepts.sse {
                // The body as received, which is this one request: a shared
                // store keeps it with the stream (takeover), others drop it.
                let opened = Sink::open_for(gw.log.clone(), &session.id, raw).await;
                let sink = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        session.end(&r.id);
                        return Err(e.into());
                    }
                };
                let spec = read_spec(&gw, &sink, vec![session.closed.clone()]);
                spawn_call(gw.clone(), session, r, Some(sink.clone()), true);
                // The priming event still leads the stream; waiting a moment
                // (as long as the store asks) lets a quick answer share the
                // first write with it (and, in a shared store, be stored as
                // one key).
                let grace = gw.log.first_event_grace();
                let _ = gw.log.read(&sink.stream, 0, grace).await;
                // Other replicas must find the stream once the client has
                // its id (a no-op for a store private to this process).
                if let Err(e) = gw.log.make_visible(&sink.stream).await {
                    tracing::debug!(stream = %sink.stream, error = %e, "stream not visible to other replicas");
                }
                Ok(sse::response(spec))
            } else {
                let id = r.id.clone();
                let call = spawn_call(gw, session, r, None, true);
                Ok(json_response(answer_of(id, call.await)))
            }
        }
    }
}

/// Runs one call in its own task: a client that disconnects does not cancel
/// it (T25: a disconnect is not a cancellation). Returns the serialized
/// response; with a sink, also sends it there as the final event. A call
/// the client cancelled ends its stream without a response (U25); JSON mode
/// still has to answer the POST, and gets a "cancelled" error.
pub(super) fn spawn_call(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    request: Request,
    sink: Option<Sink>,
    finish_stream: bool,
) -> tokio::task::JoinHandle<Bytes> {
    let span = tracing::info_span!("call", session = %session.id, id = %request.id, method = %request.method);
    tokio::spawn(
        async move {
            let id = request.id.clone();
            let call = gw.router.handle_request(&session, request, sink.clone());
            let response = unless_panicked(&id, call).await;
            session.end(&id);
            session.touch();
            let Some(response) = response else {
                if let Some(sink) = sink.filter(|_| finish_stream) {
                    sink.finish().await;
                }
                let cancelled = ErrorObject::new(code::INTERNAL_ERROR, "request cancelled");
                return Message::Response(RpcResponse::err(Some(id), &cancelled)).to_bytes();
            };
            let bytes = Message::Response(response).to_bytes();
            if let Some(sink) = sink {
                // In the log before any socket sees it: a client that left
                // gets it on resume (T25: a disconnect is not a cancellation).
                let placed = if finish_stream {
                    sink.send_last(bytes.clone()).await
                } else {
                    sink.send(bytes.clone()).await
                };
                if !placed {
                    tracing::debug!("stream gone before the response (session ended)");
                }
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
        if let Err(e) = begin(&gw, &session, id).await {
            ids[..n].iter().for_each(|earlier| session.end(earlier));
            return Err(e);
        }
    }
    let mut calls = Vec::new();
    for message in messages {
        match message {
            Message::Request(r) => {
                let id = r.id.clone();
                calls.push((id, spawn_call(gw.clone(), session.clone(), r, None, true)));
            }
            Message::Notification(n) => gw.router.handle_notification(&session, n).await,
            Message::Response(r) => respond(&gw, &session, r).await,
        }
    }
    if calls.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let mut answers = Vec::with_capacity(calls.len());
    for (id, call) in calls {
        answers.push(answer_of(id, call.await));
    }
    Ok(json_response(batch_body(&answers)))
}

/// A batch's answer: the calls' answers (each one serialized JSON-RPC
/// response) as one JSON array, in order.
fn batch_body(answers: &[Bytes]) -> Bytes {
    let len = answers.iter().map(Bytes::len).sum::<usize>() + answers.len() + 1;
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(answer);
    }
    body.push(b']');
    Bytes::from(body)
}

/// Runs the router's part of call `id`; if it panics, answers `id` with
/// JSON-RPC -32603 (internal error) instead, so the client hears about it
/// on every transport and the call still ends in its session. The panic
/// itself is reported by the panic hook and logged here; its message is
/// not sent to the client.
async fn unless_panicked(
    id: &RequestId,
    call: impl std::future::Future<Output = Option<RpcResponse>>,
) -> Option<RpcResponse> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(id = %id, "call panicked: answered with an internal error");
            Some(RpcResponse::err(Some(id.clone()), &internal_error()))
        }
    }
}

/// A call task's serialized answer; -32603 (internal error) for `id` when
/// the task returned none (it panicked outside [`unless_panicked`], or was
/// aborted as the runtime shut down).
fn answer_of(id: RequestId, joined: Result<Bytes, tokio::task::JoinError>) -> Bytes {
    joined.unwrap_or_else(|e| {
        tracing::error!(id = %id, error = %e, "call task ended without an answer");
        Message::Response(RpcResponse::err(Some(id), &internal_error())).to_bytes()
    })
}

/// What a client is told about a call that failed inside Ballast.
fn internal_error() -> ErrorObject {
    ErrorObject::new(code::INTERNAL_ERROR, "internal error")
}

/// Hands a client's response to the router; counts one Ballast never asked for.
pub(super) async fn respond(gw: &Gateway, session: &Arc<Session>, response: RpcResponse) {
    if !gw.router.handle_response(session, response).await {
        gw.stats.count(crate::observe::Counter::ResponsesIgnored);
    }
}

/// Registers a request in its session, within the per-session limits
/// (requests in flight, and the rate limit).
pub(super) async fn begin(
    gw: &Gateway,
    session: &Session,
    id: &RequestId,
) -> Result<(), DownstreamError> {
    session.touch();
    if let Some(rate) = &gw.session_rate {
        rate.check(&session.id).await.map_err(|retry_after| {
            crate::observe::metrics::rate_limited("session");
            DownstreamError::RateLimited { retry_after }
        })?;
    }
    session
        .begin(id, gw.config.server.max_requests_per_session)
        .map_err(|e| match e {
            BeginError::DuplicateId => DownstreamError::DuplicateRequestId(id.clone()),
            BeginError::TooManyRequests => DownstreamError::TooManyRequests,
        })
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn a_router_bug() -> Option<RpcResponse> {
        panic!("a bug in the router");
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    /// A call whose router part panics is answered -32603 for its id (it
    /// used to unwind the call task: no answer, and its id stayed in flight).
    #[tokio::test]
    async fn a_panicking_call_is_answered_with_an_internal_error_for_its_id() {
        let id = RequestId::Number(7);
        let response = unless_panicked(&id, async { a_router_bug() })
            .await
            .expect("an answer");
        let answer = parse(&Message::Response(response).to_bytes());
        assert_eq!(answer["id"], json!(7), "{answer}");
        assert_eq!(answer["error"]["code"], json!(-32603), "{answer}");
        let fine = unless_panicked(&id, async { None }).await;
        assert!(fine.is_none(), "a call's own answer is kept");
    }

    /// A batch with a call task that panicked is one valid JSON array with
    /// -32603 for that call's id (it used to have an empty slot: `[,…]`).
    #[tokio::test]
    async fn a_batch_with_a_panicked_call_task_stays_valid_json() {
        let ok = Message::Response(RpcResponse::err(
            Some(RequestId::Number(1)),
            &ErrorObject::new(code::METHOD_NOT_FOUND, "no such method"),
        ))
        .to_bytes();
        let first = tokio::spawn(async move { ok });
        let second =
            tokio::spawn(async { a_router_bug().map(|_| Bytes::new()).unwrap_or_default() });
        let answers = [
            answer_of(RequestId::Number(1), first.await),
            answer_of(RequestId::String("two".into()), second.await),
        ];
        let body = parse(&batch_body(&answers));
        let items = body.as_array().expect("an array");
        assert_eq!(items.len(), 2, "{body}");
        assert_eq!(items[0]["id"], json!(1), "{body}");
        assert_eq!(items[0]["error"]["code"], json!(-32601), "{body}");
        assert_eq!(items[1]["id"], json!("two"), "{body}");
        assert_eq!(items[1]["error"]["code"], json!(-32603), "{body}");
    }
}
