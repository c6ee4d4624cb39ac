//! What one client can see of another's, or make Ballast create: a cached
//! result that depended on its caller is never served to another session,
//! `initialize` never reaches the shared upstream connection, and a tool
//! name a client typed creates no metric series or breaker.

mod support;

use std::time::Duration;

use ballast::config::ToolPolicy;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config, demo_config_with, text_of};

/// A client's answer to a `sampling/createMessage` request.
fn sampling_answer(request: &Value, text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": request["id"],
            "result": { "role": "assistant", "model": "test", "content": { "type": "text", "text": text } } })
}

#[tokio::test]
async fn a_result_that_asked_its_client_is_never_served_stale_to_another() {
    // `sample_read_only` is read-only (its results are cached), asks the calling
    // client for sampling, and times out after 300 ms when nobody answers.
    let gw = TestGateway::start(demo_config_with(|u| {
        u.tools.insert(
            "sample_read_only".into(),
            ToolPolicy {
                timeout: Some(Duration::from_millis(300)),
                max_attempts: Some(1),
                ..ToolPolicy::default()
            },
        );
    }))
    .await;
    let a = McpClient::connect(&gw.url).await;
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "sample_read_only", "arguments": { "prompt": "same" } } });
    let mut stream = support::messages(a.post(&call).await);
    let request = stream.next().await.expect("A's sampling request");
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(
        a.post(&sampling_answer(&request, "secret of A"))
            .await
            .status(),
        202
    );
    let fin = stream.next().await.expect("A's result");
    assert_eq!(text_of(&fin), "sampled: secret of A", "{fin}");

    // B makes the same call and never answers its own sampling request: the
    // call fails, and it must fail — not come back with A's answer.
    let mut b = McpClient::connect(&gw.url).await;
    let (interim, fin) = b
        .request(
            "tools/call",
            json!({ "name": "sample_read_only", "arguments": { "prompt": "same" } }),
        )
        .await;
    assert_eq!(
        interim[0]["method"], "sampling/createMessage",
        "{interim:?}"
    );
    assert!(fin.get("error").is_some(), "B got a result: {fin}");
    assert!(!fin.to_string().contains("secret of A"), "leaked: {fin}");
    gw.stop().await;
}

#[tokio::test]
async fn initialize_in_a_batch_is_refused_and_never_forwarded() {
    let gw = TestGateway::start(demo_config()).await;
    let old = McpClient::connect_as(&gw.url, "2025-03-26").await;
    let r = old
        .post(&json!([
            { "jsonrpc": "2.0", "id": 5, "method": "initialize",
              "params": { "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } },
            { "jsonrpc": "2.0", "method": "notifications/initialized" },
            { "jsonrpc": "2.0", "id": 6, "method": "ping" }
        ]))
        .await;
    assert_eq!(r.status(), 200);
    let answers: Value = r.json().await.expect("json array");
    let by_id = |id: i64| {
        answers
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == json!(id)))
            .cloned()
            .unwrap_or_else(|| panic!("no answer {id} in {answers}"))
    };
    let init = by_id(5);
    assert_eq!(init["error"]["code"], json!(-32600), "{init}");
    assert!(init.get("result").is_none(), "upstream answered: {init}");
    assert_eq!(by_id(6)["result"], json!({}));
    // The session and the upstream connection are unharmed.
    let r = old
        .post(&json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": { "name": "echo", "arguments": { "message": "still here" } } }))
        .await;
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

/// A tool name the catalog lacks still reaches its upstream (servers answer
/// tools they do not list: server-everything's conformance tools), which
/// refuses it here; it makes no metric series, breaker or other per-tool
/// state, so names a client types cannot grow memory or `/metrics`.
#[tokio::test]
async fn unknown_tools_create_no_metric_series_or_breaker() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    for n in 0..20 {
        let r = c.call_tool(&format!("no_such_tool_{n}"), json!({})).await;
        assert_eq!(r["error"]["code"], json!(-32602), "{r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("unknown tool"), "{message}");
    }
    let r = c.call_tool("echo", json!({ "message": "x" })).await;
    assert_eq!(text_of(&r), "x");
    let metrics = gw.metrics().await;
    assert!(!metrics.contains("no_such_tool"), "{metrics}");
    let (_, ready) = gw.readyz().await;
    assert!(!ready.to_string().contains("no_such_tool"), "{ready}");
    gw.stop().await;
}
