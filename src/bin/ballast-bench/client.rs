//! The MCP side of the generator: one hyper-util client (HTTP/1.1
//! keep-alive, a pool sized to the concurrency), sessions, and one
//! `tools/call` exchange.
//!
//! Per call, the request body is the prebuilt template with the id spliced
//! in, and the answer (a JSON body, or an SSE stream read until the event
//! that answers our id) is decoded only as far as [`crate::reply`] needs.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::error::CallError;
use crate::reply::{answer_to, decimal};
use crate::sse::{MAX_EVENT_BYTES, SseReader};

/// The protocol version the generator asks for in `initialize`.
pub(crate) const PROTOCOL_VERSION: &str = "2025-11-25";
/// The `Mcp-Session-Id` header.
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The `MCP-Protocol-Version` header.
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The `Accept` header of every POST: both answer forms.
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
/// The `Content-Type` header of every POST.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// One MCP session, as the workers' requests carry it.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// `Mcp-Session-Id`; `None` when the server is stateless (sent none).
    pub(crate) id: Option<HeaderValue>,
    /// `MCP-Protocol-Version`: the version the server negotiated.
    version: HeaderValue,
}

/// What a finished exchange leaves: its outcome, and the rest of the body
/// when the answer came before the body ended (drain it so the connection
/// can be reused, see [`drain`]).
pub(crate) type Exchange<T> = (Result<T, CallError>, Option<Incoming>);

/// The HTTP client and the prebuilt `tools/call` request.
pub(crate) struct McpClient {
    /// Keep-alive HTTP/1.1 client; its pool holds one idle connection per worker.
    http: Client<HttpConnector, Full<Bytes>>,
    /// The endpoint, and the only URL requests go to.
    uri: Uri,
    /// The `tools/call` body split where the request id goes.
    call: Template,
}

/// A request body split at the places where the id is spliced in.
#[derive(Debug)]
struct Template {
    /// The body's pieces; the id goes between each two.
    pieces: Vec<Vec<u8>>,
}

// === impl McpClient ===

impl McpClient {
    /// A client for `uri` calling `tool` with `arguments` (a JSON object's
    /// text); `progress` adds `_meta.progressToken` (the request id).
    /// `pool` is the number of idle connections kept (the concurrency).
    pub(crate) fn new(uri: Uri, tool: &str, arguments: &str, progress: bool, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .build(connector);
        Self {
            http,
            uri,
            call: Template::tools_call(tool, arguments, progress),
        }
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    pub(crate) async fn open_session(&self) -> Result<Session, CallError> {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "ballast-bench", "version": env!("CARGO_PKG_VERSION") },
            },
        });
        let req = self.post(None, Bytes::from(initialize.to_string()));
        let resp = self
            .http
            .request(req)
            .await
            .map_err(CallError::from_client)?;
        let id = resp.headers().get(SESSION_HEADER).cloned();
        let (result, _) = read_answer(resp, initialize_result).await;
        let result = result?;
        let version = result
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or(HeaderValue::from_static(PROTOCOL_VERSION));
        let session = Session { id, version };

        let initialized = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let req = self.post(Some(&session), Bytes::from_static(initialized));
        let resp = self
            .http
            .request(req)
            .await
            .map_err(CallError::from_client)?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| CallError::Io(e.into()))?;
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
            });
        }
        Ok(session)
    }

    /// Ends a session with `DELETE` (best effort: the answer is ignored).
    pub(crate) async fn close_session(&self, session: &Session) {
        let Some(id) = &session.id else { return };
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = self.uri.clone();
        req.headers_mut().insert(SESSION_HEADER, id.clone());
        req.headers_mut()
            .insert(VERSION_HEADER, session.version.clone());
        if let Ok(resp) = self.http.request(req).await {
            let _ = resp.into_body().collect().await;
        }
    }

    /// One `tools/call` with request id `id` on `session`.
    pub(crate) async fn call(&self, session: &Session, id: u64) -> Exchange<()> {
        let mut digits = [0; 20];
        let id = decimal(id, &mut digits);
        let req = self.post(Some(session), self.call.render(id));
        match self.http.request(req).await {
            Ok(resp) => read_answer(resp, |message| answer_to(message, id)).await,
            Err(e) => (Err(CallError::from_client(e)), None),
        }
    }

    /// A POST of `body` with the MCP headers (and the session's, if any).
    fn post(&self, session: Option<&Session>, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, ACCEPT_BOTH);
        if let Some(session) = session {
            if let Some(id) = &session.id {
                headers.insert(SESSION_HEADER, id.clone());
            }
            headers.insert(VERSION_HEADER, session.version.clone());
        }
        req
    }
}

// === impl Template ===

impl Template {
    /// The `tools/call` body: `{"jsonrpc":"2.0","id":<id>,"method":"tools/call",
    /// "params":{"name":…,"arguments":…[,"_meta":{"progressToken":<id>}]}}`.
    fn tools_call(tool: &str, arguments: &str, progress: bool) -> Self {
        let name = Value::from(tool).to_string();
        let head = br#"{"jsonrpc":"2.0","id":"#.to_vec();
        let params =
            format!(r#","method":"tools/call","params":{{"name":{name},"arguments":{arguments}"#);
        let pieces = if progress {
            vec![
                head,
                format!(r#"{params},"_meta":{{"progressToken":"#).into_bytes(),
                b"}}}".to_vec(),
            ]
        } else {
            vec![head, format!("{params}}}}}").into_bytes()]
        };
        Self { pieces }
    }

    /// The body for request id `id` (its JSON text).
    fn render(&self, id: &[u8]) -> Bytes {
        let len = self.pieces.iter().map(Vec::len).sum::<usize>() + id.len() * self.pieces.len();
        let mut body = Vec::with_capacity(len);
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(id);
            }
            body.extend_from_slice(piece);
        }
        Bytes::from(body)
    }
}

/// Reads an answer: a 200 with a JSON body, or with an SSE stream read
/// until `pick` recognises the response. `pick` returns `None` for
/// messages that are not the response (notifications, server requests).
async fn read_answer<T>(
    resp: Response<Incoming>,
    mut pick: impl FnMut(&[u8]) -> Option<Result<T, CallError>>,
) -> Exchange<T> {
    let status = resp.status();
    let kind = answer_kind(resp.headers().get(CONTENT_TYPE));
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let error = CallError::Status {
            status: status.as_u16(),
        };
        return (Err(error), Some(body));
    }
    match kind {
        Some(AnswerKind::Json) => {
            let bytes = match Limited::new(body, MAX_EVENT_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    let detail = "JSON answer larger than 16 MiB";
                    return (Err(CallError::Protocol { detail }), None);
                }
                Err(e) => return (Err(CallError::Io(e)), None),
            };
            let detail = "the JSON answer is not the response to the request";
            (
                pick(&bytes).unwrap_or(Err(CallError::Protocol { detail })),
                None,
            )
        }
        Some(AnswerKind::Sse) => {
            let mut reader = SseReader::default();
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => return (Err(CallError::Io(e.into())), None),
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if reader.push(&data).is_err() {
                    let detail = "SSE event larger than 16 MiB";
                    return (Err(CallError::Protocol { detail }), None);
                }
                while let Some(message) = reader.next_event() {
                    if let Some(outcome) = pick(message) {
                        return (outcome, Some(body));
                    }
                }
            }
            let detail = "the SSE stream ended before the response";
            (Err(CallError::Protocol { detail }), None)
        }
        None => {
            let detail = "answer is neither application/json nor text/event-stream";
            (Err(CallError::Protocol { detail }), Some(body))
        }
    }
}

/// The form of an answer, by its `Content-Type`.
enum AnswerKind {
    /// `application/json`: one message.
    Json,
    /// `text/event-stream`: messages as SSE events.
    Sse,
}

/// Reads `Content-Type` (media type only, case-insensitive).
fn answer_kind(content_type: Option<&HeaderValue>) -> Option<AnswerKind> {
    let value = content_type?.to_str().ok()?;
    let media = value.split(';').next()?.trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(AnswerKind::Json)
    } else if media.eq_ignore_ascii_case("text/event-stream") {
        Some(AnswerKind::Sse)
    } else {
        None
    }
}

/// Picks the response to `initialize` (id 0): the whole message, or its error.
fn initialize_result(message: &[u8]) -> Option<Result<Value, CallError>> {
    let value: Value = match serde_json::from_slice(message) {
        Ok(v) => v,
        Err(e) => return Some(Err(CallError::BadJson(e))),
    };
    if value.get("method").is_some() || value.get("id") != Some(&json!(0)) {
        return None;
    }
    if let Some(error) = value.get("error") {
        let error = error.to_string();
        return Some(Err(CallError::JsonRpc { error }));
    }
    Some(Ok(value))
}

/// Reads the rest of a body to its end so its connection returns to the
/// pool. The caller bounds the time this may take.
pub(crate) async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_valid_json_with_the_id_spliced_in() {
        let plain = Template::tools_call("echo", r#"{"message":"hi"}"#, false);
        let body: Value = serde_json::from_slice(&plain.render(b"42")).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc":"2.0","id":42,"method":"tools/call",
                   "params":{"name":"echo","arguments":{"message":"hi"}}})
        );
        let progress = Template::tools_call("a\"b", "{}", true);
        let body: Value = serde_json::from_slice(&progress.render(b"7")).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                   "params":{"name":"a\"b","arguments":{},"_meta":{"progressToken":7}}})
        );
    }

    #[test]
    fn answer_kinds() {
        let kind = |v: &'static str| answer_kind(Some(&HeaderValue::from_static(v)));
        assert!(matches!(kind("application/json"), Some(AnswerKind::Json)));
        assert!(matches!(
            kind("Text/Event-Stream; charset=utf-8"),
            Some(AnswerKind::Sse)
        ));
        assert!(kind("text/plain").is_none());
        assert!(answer_kind(None).is_none());
    }
}
