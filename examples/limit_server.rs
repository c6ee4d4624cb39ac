//! The **limit** reference of `bench/compare.sh`: the smallest HTTP server
//! that speaks enough MCP over Streamable HTTP for `ballast-bench`, with no
//! upstream behind it. Its throughput and latency are the ceiling of this
//! machine with this load generator; every gateway is compared against it.
//!
//! ```sh
//! cargo build --release --example limit_server
//! target/release/examples/limit_server 18999     # listens on 127.0.0.1:18999, any path
//! ```
//!
//! Every POST body is one JSON-RPC message, parsed only as far as `id` and
//! `method`:
//! - `initialize` → a result (the client's protocol version echoed back)
//!   and a fresh `Mcp-Session-Id` header;
//! - a notification (no `id`) or a response → `202 Accepted`, empty;
//! - `tools/call` → the canned `{"content":[{"type":"text","text":"hi"}]}`
//!   result with the request's own id spliced in;
//! - `tools/list` → one `echo` tool; any other request → an empty result.
//!
//! `DELETE` (ending a session) → `200`; anything else → `405`. Answers are
//! `application/json`, never SSE. Sessions are not tracked: the header is
//! handed out and never checked, because the limit measures HTTP, not state.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;

/// Largest request body read; larger ones get 413.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Protocol version answered when `initialize` names none.
const DEFAULT_PROTOCOL_VERSION: &str = "2025-11-25";
/// `application/json`, the only answer type.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Source of session ids (`limit-1`, `limit-2`, …).
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// What the server reads of a JSON-RPC message: borrowed, nothing else parsed.
#[derive(Deserialize)]
struct Message<'a> {
    /// The request id, kept as its raw JSON text to splice into the answer.
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    /// Absent on responses.
    #[serde(borrow, default)]
    method: Option<&'a str>,
    /// Read only for `initialize` (the protocol version).
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

/// The part of `initialize` params the answer echoes.
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "protocolVersion", borrow, default)]
    protocol_version: Option<&'a str>,
}

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: limit_server PORT   (listens on 127.0.0.1:PORT)");
            std::process::exit(2);
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("limit_server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("limit_server: listening on http://{addr}/");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and the like: say so and keep serving the others.
                eprintln!("limit_server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// One HTTP request → one answer.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return Ok(status(StatusCode::OK)),
        _ => return Ok(status(StatusCode::METHOD_NOT_ALLOWED)),
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    let Ok(msg) = serde_json::from_slice::<Message<'_>>(&body) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let (Some(id), Some(method)) = (msg.id, msg.method) else {
        // A notification or a response.
        return Ok(status(StatusCode::ACCEPTED));
    };
    let id = id.get();
    Ok(match method {
        "tools/call" => json(answer(id, r#"{"content":[{"type":"text","text":"hi"}]}"#)),
        "initialize" => {
            let version = msg
                .params
                .and_then(|p| p.protocol_version)
                .filter(|v| !v.contains(['"', '\\']))
                .unwrap_or(DEFAULT_PROTOCOL_VERSION);
            let result = format!(
                r#"{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"limit_server","version":"0.1.0"}}}}"#
            );
            let mut resp = json(answer(id, &result));
            let session = format!("limit-{}", SESSIONS.fetch_add(1, Ordering::Relaxed) + 1);
            resp.headers_mut().insert(
                "mcp-session-id",
                HeaderValue::from_str(&session).expect("ascii session id"),
            );
            resp
        }
        "tools/list" => json(answer(
            id,
            r#"{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}"#,
        )),
        _ => json(answer(id, "{}")),
    })
}

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`, both given as JSON text.
fn answer(id: &str, result: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(40 + id.len() + result.len());
    out.put_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.put_slice(id.as_bytes());
    out.put_slice(br#","result":"#);
    out.put_slice(result.as_bytes());
    out.put_u8(b'}');
    out.freeze()
}

/// A `200` with a JSON body.
fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

/// An empty answer with `code`.
fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}
