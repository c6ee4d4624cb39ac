//! What a session keeps is bounded (issue 13 item 6): an `initialize`
//! whose params exceed `server.max_initialize_bytes` is refused with 400
//! and a JSON-RPC -32602 error, and opens no session.

mod support;

use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config};

fn initialize(padding: usize) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 7, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "0", "padding": "x".repeat(padding) } }
    })
}

#[tokio::test]
async fn an_oversized_initialize_is_refused_and_opens_no_session() {
    let gw = TestGateway::start(demo_config()).await;
    let limit = ballast::config::ServerConfig::default().max_initialize_bytes;
    assert_eq!(limit, 64 * 1024);
    // 1 MiB of params: under max_body_bytes (4 MiB), over the session bound.
    let r = McpClient::new(&gw.url).post(&initialize(1 << 20)).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("mcp-session-id").is_none());
    let body: Value = r.json().await.expect("JSON-RPC error");
    assert_eq!(body["id"], 7, "{body}");
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(
        body["error"]["data"]["max_initialize_bytes"], limit,
        "{body}"
    );
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["sessions"], 0, "{ready}");
    // Just under the bound is fine.
    let r = McpClient::new(&gw.url)
        .post(&initialize(limit - 1024))
        .await;
    assert_eq!(r.status(), 200);
    gw.stop().await;
}
