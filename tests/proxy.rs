//! End to end through the gateway to the real demo upstream (a child
//! process on stdio): tool calls, progress, server→client requests,
//! id isolation between sessions, namespacing of several upstreams.

mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config, demo_upstream, text_of};

#[tokio::test]
async fn initialize_list_and_call_through_stdio_upstream() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let (_, tools) = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for expected in [
        "echo", "sleep", "fail", "flaky", "crash", "progress", "sample", "elicit",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let r = c
        .call_tool("echo", json!({ "message": "hello through ballast" }))
        .await;
    assert_eq!(text_of(&r), "hello through ballast");
    let r = c.call_tool("fail", json!({})).await;
    assert_eq!(r["result"]["isError"], json!(true));
    // Resources and prompts are proxied too.
    let (_, read) = c
        .request("resources/read", json!({ "uri": "demo://readme" }))
        .await;
    assert_eq!(
        read["result"]["contents"][0]["text"],
        "Ballast demo upstream."
    );
    let (_, prompt) = c
        .request(
            "prompts/get",
            json!({ "name": "greeting", "arguments": { "name": "Ada" } }),
        )
        .await;
    assert_eq!(
        prompt["result"]["messages"][0]["content"]["text"],
        "Hello, Ada!"
    );
    // Unknown methods are forwarded and the upstream's own error comes back.
    let (_, unknown) = c.request("vendor/whatever", json!({ "x": 1 })).await;
    assert_eq!(unknown["error"]["code"], json!(-32601), "{unknown}");
    gw.stop().await;
}

#[tokio::test]
async fn progress_notifications_arrive_with_the_clients_token() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let (interim, fin) = c
        .request(
            "tools/call",
            json!({ "name": "progress", "arguments": { "steps": 4, "ms": 5 }, "_meta": { "progressToken": "tok-α" } }),
        )
        .await;
    assert_eq!(text_of(&fin), "done 4 steps");
    let progress: Vec<&Value> = interim
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 4, "{interim:?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["params"]["progressToken"], "tok-α");
        assert_eq!(p["params"]["progress"], json!(i + 1));
    }
    gw.stop().await;
}

#[tokio::test]
async fn sampling_request_reaches_the_calling_session_and_the_answer_returns() {
    let gw = TestGateway::start(demo_config()).await;
    let bystander = McpClient::connect(&gw.url).await;
    let mut bystander_stream = bystander.open_get_stream().await;
    let mut c = McpClient::connect(&gw.url).await;
    let id = c.next_id();
    let resp = c
        .post(&json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": { "name": "sample", "arguments": { "prompt": "2+2?" } } }))
        .await;
    let mut stream = support::messages(resp);
    let request = stream
        .next()
        .await
        .expect("sampling request on the call's stream");
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(request["params"]["messages"][0]["content"]["text"], "2+2?");
    let answer = json!({ "jsonrpc": "2.0", "id": request["id"],
                         "result": { "role": "assistant", "model": "test", "content": { "type": "text", "text": "4" } } });
    assert_eq!(c.post(&answer).await.status(), 202);
    let fin = stream.next().await.expect("tool result");
    assert_eq!(fin["id"], json!(id));
    assert_eq!(text_of(&fin), "sampled: 4");
    // The bystander's GET stream saw nothing of that: its first message is
    // the marker provoked now — a log line from a JSON-only call of its own,
    // which (having no SSE stream) is delivered on its GET stream.
    let marker = json!({ "jsonrpc": "2.0", "id": 99, "method": "tools/call",
                         "params": { "name": "log", "arguments": { "message": "marker" } } });
    let resp = bystander
        .http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header(
            "mcp-session-id",
            bystander.session.as_deref().unwrap_or_default(),
        )
        .body(marker.to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    let first = bystander_stream.next().await.expect("bystander message");
    assert_eq!(first["method"], "notifications/message", "{first}");
    assert_eq!(first["params"]["data"], "marker");
    gw.stop().await;
}

#[tokio::test]
async fn elicitation_answer_is_routed_back() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let id = c.next_id();
    let resp = c
        .post(&json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": { "name": "elicit", "arguments": { "message": "name?" } } }))
        .await;
    let mut stream = support::messages(resp);
    let request = stream.next().await.expect("elicitation request");
    assert_eq!(request["method"], "elicitation/create");
    let answer = json!({ "jsonrpc": "2.0", "id": request["id"],
                         "result": { "action": "accept", "content": { "answer": "Ada" } } });
    assert_eq!(c.post(&answer).await.status(), 202);
    let fin = stream.next().await.expect("tool result");
    assert!(text_of(&fin).contains("\"Ada\""), "{fin}");
    gw.stop().await;
}

#[tokio::test]
async fn two_sessions_with_the_same_request_id_get_their_own_answers() {
    let gw = TestGateway::start(demo_config()).await;
    let a = McpClient::connect(&gw.url).await;
    let b = McpClient::connect(&gw.url).await;
    let call = |ms: u64| json!({ "name": "sleep", "arguments": { "ms": ms } });
    let (ra, rb) = tokio::join!(
        a.request_with_id(json!(7), "tools/call", call(150)),
        b.request_with_id(json!(7), "tools/call", call(30)),
    );
    assert_eq!(ra.1["id"], json!(7));
    assert_eq!(rb.1["id"], json!(7));
    assert_eq!(text_of(&ra.1), "slept 150 ms");
    assert_eq!(text_of(&rb.1), "slept 30 ms");
    gw.stop().await;
}

#[tokio::test]
async fn json_only_clients_get_json_answers() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let resp = c
        .http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", c.session.as_deref().unwrap_or_default())
        .body(
            json!({ "jsonrpc": "2.0", "id": "j1", "method": "tools/call",
                      "params": { "name": "echo", "arguments": { "message": "json" } } })
            .to_string(),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["id"], "j1");
    assert_eq!(text_of(&body), "json");
    gw.stop().await;
}

#[tokio::test]
async fn several_upstreams_are_merged_and_namespaced() {
    let mut config = ballast::Config::default();
    config.add_upstream("alpha", demo_upstream());
    config.add_upstream("beta", demo_upstream());
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let (_, tools) = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alpha__echo") && names.contains(&"beta__echo"),
        "{names:?}"
    );
    assert!(!names.contains(&"echo"));
    let r = c.call_tool("beta__echo", json!({ "message": "b" })).await;
    assert_eq!(text_of(&r), "b");
    let (_, prompt) = c
        .request(
            "prompts/get",
            json!({ "name": "alpha__greeting", "arguments": { "name": "A" } }),
        )
        .await;
    assert_eq!(
        prompt["result"]["messages"][0]["content"]["text"],
        "Hello, A!"
    );
    let r = c.call_tool("gamma__echo", json!({})).await;
    assert_eq!(r["error"]["code"], json!(-32602), "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn remote_streamable_http_upstream_is_proxied_and_survives_a_forgotten_session() {
    // Gateway A fronts the demo; gateway B fronts A as an HTTP upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a_addr = listener.local_addr().expect("addr");
    let a = TestGateway::start_on(listener, demo_config());
    let mut config = ballast::Config::default();
    config.add_upstream(
        "remote",
        ballast::config::UpstreamConfig::http(a.url.clone()),
    );
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let (interim, fin) = c
        .request(
            "tools/call",
            json!({ "name": "progress", "arguments": { "steps": 2, "ms": 5 }, "_meta": { "progressToken": 5 } }),
        )
        .await;
    assert_eq!(text_of(&fin), "done 2 steps");
    assert_eq!(
        interim
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count(),
        2
    );

    // Restart A on the same port: it no longer knows B's session. B must
    // re-initialize on the 404 without the client noticing.
    a.stop().await;
    let listener = tokio::net::TcpListener::bind(a_addr).await.expect("rebind");
    let a2 = TestGateway::start_on(listener, demo_config());
    let r = c
        .call_tool("echo", json!({ "message": "after restart" }))
        .await;
    assert_eq!(text_of(&r), "after restart");
    b.stop().await;
    a2.stop().await;
}
