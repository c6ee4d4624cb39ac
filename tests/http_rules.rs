//! The HTTP rules of the Streamable HTTP transport that the gateway enforces
//! itself (SPEC.md 2, 7, 9–12, 18): sessions, Host/Origin, media types.

mod support;

use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config};

async fn error_code(resp: reqwest::Response) -> i64 {
    let body: Value = resp.json().await.expect("JSON error body");
    body["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {body}"))
}

#[tokio::test]
async fn session_lifecycle_statuses() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let id = c.session.clone().expect("session");
    assert!(
        id.bytes().all(|b| (0x21..=0x7e).contains(&b)) && id.len() >= 32,
        "{id}"
    );

    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    // No session header → 400.
    let mut anon = McpClient::new(&gw.url);
    let r = anon.post(&ping).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, -32600);
    // Unknown session → 404.
    anon.session = Some("no-such-session".into());
    assert_eq!(anon.post(&ping).await.status(), 404);
    // Unsupported protocol version header → 400.
    let r = c
        .post_with(&ping, &[("mcp-protocol-version", "1999-01-01")])
        .await;
    assert_eq!(r.status(), 400);
    // A notification is accepted with 202 and an empty body.
    let r = c
        .post(&json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" }))
        .await;
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.expect("body").is_empty());
    // DELETE ends the session; its id is then unknown.
    assert_eq!(c.delete().await, 200);
    assert_eq!(c.post(&ping).await.status(), 404);
    assert_eq!(c.delete().await, 404);
    gw.stop().await;
}

#[tokio::test]
async fn foreign_host_and_origin_are_forbidden() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::new(&gw.url);
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let r = c.post_with(&init, &[("host", "evil.example.com")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, -32600);
    let r = c
        .post_with(&init, &[("origin", "https://evil.example.com")])
        .await;
    assert_eq!(r.status(), 403);
    // A loopback browser origin is fine.
    let r = c
        .post_with(&init, &[("origin", "http://localhost:5173")])
        .await;
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn media_types_and_body_size_are_checked() {
    let mut config = demo_config();
    config.server.max_body_bytes = 1024;
    let gw = TestGateway::start(config).await;
    let c = McpClient::connect(&gw.url).await;
    let http = reqwest::Client::new();
    let session = c.session.clone().expect("session");
    let r = http
        .post(&gw.url)
        .header("content-type", "text/plain")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 415);
    let r = http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .header("mcp-session-id", &session)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 406);
    let big = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": { "name": "echo", "arguments": { "message": "x".repeat(4096) } } });
    let r = c.post(&big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, -32600);
    let r = c.post_with(&json!("not an object"), &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, -32600);
    // The session is still usable after every refusal.
    let mut c = c;
    let (_, pong) = c.request("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    gw.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = TestGateway::start(demo_config()).await;
    // An initialize waits for the upstream, so afterwards /readyz is green.
    let _c = McpClient::connect(&gw.url).await;
    let (status, body) = gw.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstreams"][0]["state"], "ready");
    let health: Value = reqwest::get(format!("http://{}/healthz", gw.addr))
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    gw.stop().await;
}

#[tokio::test]
async fn batches_from_2025_03_26_clients_are_answered_and_refused_whole() {
    let gw = TestGateway::start(demo_config()).await;
    let old = McpClient::connect_as(&gw.url, "2025-03-26").await;
    let flaky = |id: i64| {
        json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                                  "params": { "name": "flaky_write", "arguments": { "fail_times": 1, "key": "batch" } } })
    };
    // A duplicate id refuses the whole batch: nothing in it runs.
    let r = old.post(&json!([flaky(1), flaky(1)])).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, -32600);
    // The first flaky call therefore still fails (it is the key's first call).
    let r = old
        .post(&json!([flaky(2), { "jsonrpc": "2.0", "method": "notifications/initialized" }]))
        .await;
    assert_eq!(r.status(), 200);
    let answers: Value = r.json().await.expect("json array");
    assert_eq!(answers.as_array().map(Vec::len), Some(1), "{answers}");
    assert_eq!(answers[0]["id"], json!(2));
    assert_eq!(answers[0]["error"]["code"], json!(-32603), "{answers}");
    // A 2025-11-25 client may not batch.
    let c = McpClient::connect(&gw.url).await;
    let r = c
        .post(&json!([{ "jsonrpc": "2.0", "id": 1, "method": "ping" }]))
        .await;
    assert_eq!(r.status(), 400);
    gw.stop().await;
}
