//! Outages of an upstream and how fast Ballast gets over them (issue 13,
//! items 9–11 and 13): a restarted remote upstream that forgot its session,
//! a remote upstream briefly down (Streamable HTTP and 2024-11-05 SSE),
//! calls to an upstream that is down, and sessions that start while an
//! upstream cannot.
//!
//! Seconds to first success (or to failure) are printed, so a run shows
//! the figures the issue asks for.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ballast::config::UpstreamConfig;
use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config, text_of};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A remote upstream that answers like the TypeScript SDK's servers
/// (server-everything's `streamableHttp` mode): gateway A behind a small
/// proxy that turns A's 404 for an unknown session into
/// `400 "Bad Request: No valid session ID provided"`, byte for byte what
/// server-everything sends. Stopping it closes the proxy's listener and
/// every connection, like a process that exits.
struct TsSdkStyleServer {
    a: TestGateway,
    proxy: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
}

impl TsSdkStyleServer {
    /// Starts on `addr` (port 0: any free port).
    async fn start(addr: SocketAddr) -> Self {
        let a = TestGateway::start(demo_config()).await;
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let target = a.addr;
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let client = client.clone();
            async move { rewrite_404(&client, target, req).await }
        });
        let proxy = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { a, proxy, addr }
    }

    async fn stop(self) {
        self.proxy.abort();
        let _ = self.proxy.await;
        self.a.stop().await;
    }
}

async fn rewrite_404(
    client: &reqwest::Client,
    target: SocketAddr,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let url = format!("http://{target}{}", parts.uri);
    let resp = client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(resp) = resp else {
        return http::StatusCode::BAD_GATEWAY.into_response();
    };
    if resp.status() == http::StatusCode::NOT_FOUND {
        let body = r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#;
        return (
            http::StatusCode::BAD_REQUEST,
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            body,
        )
            .into_response();
    }
    let mut out = axum::response::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(axum::body::Body::from_stream(resp.bytes_stream()))
        .expect("response")
}

/// Calls `echo` through `c` until it succeeds, at most `bound`; returns the
/// time from `since` to the first success, or `None` if none came.
async fn first_success(c: &mut McpClient, since: Instant, bound: Duration) -> Option<Duration> {
    let mut last = Value::Null;
    while since.elapsed() < bound {
        let r = c.call_tool("echo", json!({ "message": "back" })).await;
        if r["result"].is_object() {
            assert_eq!(text_of(&r), "back");
            return Some(since.elapsed());
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("no success within {bound:?}; last answer {last}");
    None
}

#[tokio::test]
async fn a_restarted_upstream_that_answers_400_for_its_lost_session_is_back_within_2s() {
    let server = TsSdkStyleServer::start("127.0.0.1:0".parse().expect("addr")).await;
    let addr = server.addr;
    let mut config = ballast::Config::default();
    config.add_upstream("ts", UpstreamConfig::http(format!("http://{addr}/mcp")));
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let r = c.call_tool("echo", json!({ "message": "before" })).await;
    assert_eq!(text_of(&r), "before", "{r}");

    server.stop().await;
    let server = TsSdkStyleServer::start(addr).await;
    let back = Instant::now();
    let took = first_success(&mut c, back, Duration::from_secs(100)).await;
    eprintln!("restarted upstream answering 400: first success after {took:?}");
    let took = took.expect("calls succeed again");
    assert!(
        took <= Duration::from_secs(2),
        "first success after {took:?}"
    );
    // A session that starts now is served too.
    let mut fresh = McpClient::connect(&b.url).await;
    let r = fresh.call_tool("echo", json!({ "message": "new" })).await;
    assert_eq!(text_of(&r), "new", "{r}");
    b.stop().await;
    server.stop().await;
}
