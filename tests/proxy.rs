//! End to end through the gateway to the real demo upstream (a child
//! process on stdio): tool calls, progress, server→client requests,
//! id isolation between sessions, namespacing of several upstreams.

mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config, demo_upstream, text_of};

/// Starts a `sample` call; returns the call's message stream.
async fn start_sample(c: &McpClient, id: i64, prompt: &str) -> support::Messages {
    let call = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": { "name": "sample", "arguments": { "prompt": prompt } } });
    support::messages(c.post(&call).await)
}

/// A client's answer to a `sampling/createMessage` request.
fn sampling_answer(request: &Value, text: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": request["id"],
            "result": { "role": "assistant", "model": "test", "content": { "type": "text", "text": text } } })
}

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
    let mut stream = start_sample(&c, id, "2+2?").await;
    let request = stream
        .next()
        .await
        .expect("sampling request on the call's stream");
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(request["params"]["messages"][0]["content"]["text"], "2+2?");
    assert_eq!(c.post(&sampling_answer(&request, "4")).await.status(), 202);
    let fin = stream.next().await.expect("tool result");
    assert_eq!(fin["id"], json!(id));
    assert_eq!(text_of(&fin), "sampled: 4");
    // The bystander's GET stream saw nothing of that: its first message is
    // the marker provoked now — a log line from a JSON-only call of its own,
    // which (having no SSE stream) is delivered on its GET stream.
    let marker = json!({ "jsonrpc": "2.0", "id": 99, "method": "tools/call",
                         "params": { "name": "log", "arguments": { "message": "marker" } } });
    let resp = bystander
        .post_raw(marker.to_string(), "application/json")
        .await;
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
        .post_raw(
            json!({ "jsonrpc": "2.0", "id": "j1", "method": "tools/call",
                      "params": { "name": "echo", "arguments": { "message": "json" } } })
            .to_string(),
            "application/json",
        )
        .await;
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
    // After A restarts it no longer knows B's session: B re-initializes on
    // the 404 without the client noticing.
    support::check_chain_survives_upstream_restart(|a| {
        ballast::config::UpstreamConfig::http(format!("http://{a}/mcp"))
    })
    .await;
}

#[tokio::test]
async fn newlines_in_raw_json_cannot_smuggle_a_message_to_a_stdio_child() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let (_, before) = gw.readyz().await;
    // Pretty-printed JSON whose middle line is a complete `crash` request.
    let body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"m\",\"x\":\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"crash\"}}\n}}}";
    let resp = c
        .post_raw(body, "application/json, text/event-stream")
        .await;
    let answer = support::messages(resp).next().await.expect("answer");
    assert_eq!(text_of(&answer), "m");
    // The child did not crash: same pid, and it still answers.
    let r = c
        .call_tool("echo", json!({ "message": "still here" }))
        .await;
    assert_eq!(text_of(&r), "still here");
    let (_, after) = gw.readyz().await;
    assert_eq!(before["upstreams"][0]["pid"], after["upstreams"][0]["pid"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_stale_answer_never_reaches_a_restarted_upstream() {
    let gw = TestGateway::start(demo_config()).await;
    let a = McpClient::connect(&gw.url).await;
    let mut a_stream = start_sample(&a, 1, "old").await;
    let stale = a_stream.next().await.expect("sampling request to A");
    assert_eq!(stale["method"], "sampling/createMessage");
    // Another session crashes the child; A's call fails with it.
    let mut b = McpClient::connect(&gw.url).await;
    let crashed = b.call_tool("crash", json!({})).await;
    assert!(crashed["error"].is_object(), "{crashed}");
    let a_result = a_stream.next().await.expect("A's call ends");
    assert!(a_result["error"].is_object(), "{a_result}");
    // On the restarted child, C's sampling request gets the child's id 1 again.
    let c = McpClient::connect(&gw.url).await;
    let mut c_stream = start_sample(&c, 1, "new").await;
    let fresh = c_stream.next().await.expect("sampling request to C");
    assert_eq!(fresh["params"]["messages"][0]["content"]["text"], "new");
    // A answers its old request late: it must not resolve C's.
    assert_eq!(
        a.post(&sampling_answer(&stale, "STALE")).await.status(),
        202
    );
    assert_eq!(
        c.post(&sampling_answer(&fresh, "fresh")).await.status(),
        202
    );
    let fin = c_stream.next().await.expect("C's result");
    assert_eq!(text_of(&fin), "sampled: fresh");
    gw.stop().await;
}

#[tokio::test]
async fn a_cancelled_call_ends_its_stream_without_a_response() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let resp = c
        .post(
            &json!({ "jsonrpc": "2.0", "id": "slow", "method": "tools/call",
                        "params": { "name": "sleep", "arguments": { "ms": 60000 } } }),
        )
        .await;
    let mut stream = support::messages(resp);
    // Wait until the call is in flight upstream, then cancel it.
    loop {
        let (_, r) = gw.readyz().await;
        if r["calls_in_flight"] == json!(1) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let cancel = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": { "requestId": "slow", "reason": "user pressed stop" } });
    assert_eq!(c.post(&cancel).await.status(), 202);
    let rest: Vec<Value> = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut v = Vec::new();
        while let Some(m) = stream.next().await {
            v.push(m);
        }
        v
    })
    .await
    .expect("stream closed promptly after the cancellation");
    assert!(
        rest.is_empty(),
        "no response after a cancellation: {rest:?}"
    );
    let (_, r) = gw.readyz().await;
    assert_eq!(r["calls_in_flight"], json!(0));
    // Counted as cancelled, not as a failure of the upstream.
    assert_eq!(r["counters"]["calls.cancelled"], json!(1), "{r}");
    assert!(r["counters"]["calls.permanent"].is_null(), "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn a_broken_upstream_answer_stream_is_resumed_with_last_event_id() {
    // Client → B → (proxy that cuts once) → A → demo.
    let a = TestGateway::start(demo_config()).await;
    let (proxy, severed) = support::severing_proxy(a.addr).await;
    let mut config = ballast::Config::default();
    config.add_upstream(
        "a",
        ballast::config::UpstreamConfig::http(format!("http://{proxy}/mcp")),
    );
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let r = c.call_tool("sleep", json!({ "ms": 300 })).await;
    assert!(
        severed.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy never cut"
    );
    assert_eq!(text_of(&r), "slept 300 ms", "{r}");
    let (_, ar) = a.readyz().await;
    assert!(
        ar["counters"]["streams.resumed"].as_u64().unwrap_or(0) >= 1,
        "{ar}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn roots_asked_outside_any_call_are_answered_from_config() {
    // Like server-filesystem started without directories: the upstream asks
    // `roots/list` as soon as it is initialized, when no client has a call
    // in flight. Ballast answers with the upstream's configured roots.
    let mut upstream = demo_upstream();
    upstream
        .env
        .insert("BALLAST_DEMO_ASK_ROOTS".into(), "1".into());
    upstream.roots = vec!["file:///srv/ballast-test".into()];
    let mut config = ballast::Config::default();
    config.add_upstream("demo", upstream);
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    // The answer reaches the upstream asynchronously: poll its record of it
    // (bounded: 100 tries, 20 ms apart).
    let mut seen = String::new();
    for _ in 0..100 {
        seen = text_of(&c.call_tool("roots", json!({})).await).to_owned();
        if seen != "not asked" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let answer: Value = serde_json::from_str(&seen).unwrap_or_else(|_| panic!("{seen}"));
    assert_eq!(
        answer,
        json!({ "roots": [{ "uri": "file:///srv/ballast-test" }] })
    );
    gw.stop().await;
}
