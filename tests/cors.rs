//! CORS for browser-based clients (issue 13 item 19), driven by
//! `server.allowed_origins`: a preflight from an allowed origin is answered,
//! answers to it carry `Access-Control-Allow-Origin` and expose
//! `Mcp-Session-Id`; a disallowed origin gets its 403 and no CORS headers.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{McpClient, TestGateway};

const ALLOWED: &str = "http://localhost:5173";
const FOREIGN: &str = "https://evil.example.com";

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn lower_list(v: Option<&str>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn preflight(gw: &TestGateway, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, &gw.url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, mcp-session-id, mcp-protocol-version",
        )
        .send()
        .await
        .expect("OPTIONS")
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered() {
    let gw = TestGateway::start(support::demo_config()).await;
    let r = preflight(&gw, ALLOWED).await;
    assert_eq!(r.status(), 204, "{:?}", r.headers());
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ALLOWED));
    assert!(lower_list(header(&r, "vary")).contains(&"origin".into()));
    let methods = lower_list(header(&r, "access-control-allow-methods"));
    for m in ["get", "post", "delete", "options"] {
        assert!(methods.contains(&m.into()), "{methods:?}");
    }
    let headers = lower_list(header(&r, "access-control-allow-headers"));
    for h in [
        "content-type",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "authorization",
    ] {
        assert!(headers.contains(&h.into()), "{headers:?}");
    }
    let max_age: u64 = header(&r, "access-control-max-age")
        .expect("max-age")
        .parse()
        .expect("seconds");
    assert!(max_age > 0);
    gw.stop().await;
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_cors_headers_and_expose_the_session_id() {
    let gw = TestGateway::start(support::demo_config()).await;
    let mut client = McpClient::new(&gw.url);
    let init = client
        .post_with(
            &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize",
                     "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": { "name": "browser", "version": "0" } } }),
            &[("origin", ALLOWED)],
        )
        .await;
    assert_eq!(init.status(), 200);
    assert_eq!(header(&init, "access-control-allow-origin"), Some(ALLOWED));
    assert!(lower_list(header(&init, "vary")).contains(&"origin".into()));
    assert!(
        lower_list(header(&init, "access-control-expose-headers"))
            .contains(&"mcp-session-id".into()),
        "{:?}",
        init.headers()
    );
    client.session = Some(header(&init, "mcp-session-id").expect("session").into());
    // Refusals are readable by the page too (here: not a JSON-RPC message
    // → 400).
    let bad = client
        .post_with(&json!({ "jsonrpc": "2.0" }), &[("origin", ALLOWED)])
        .await;
    assert!(bad.status().is_client_error(), "{}", bad.status());
    assert_eq!(header(&bad, "access-control-allow-origin"), Some(ALLOWED));
    // A request without Origin (not a browser) gets no CORS headers.
    let plain = client
        .post(&json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" }))
        .await;
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
    gw.stop().await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_and_no_cors_headers() {
    let gw = TestGateway::start(support::demo_config()).await;
    let r = preflight(&gw, FOREIGN).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "access-control-allow-methods"), None);
    let post = McpClient::new(&gw.url)
        .post_with(
            &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize",
                     "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": { "name": "t", "version": "0" } } }),
            &[("origin", FOREIGN)],
        )
        .await;
    assert_eq!(post.status(), 403);
    assert_eq!(header(&post, "access-control-allow-origin"), None);
    assert_eq!(header(&post, "access-control-expose-headers"), None);
    gw.stop().await;
}
