//! The 2024-11-05 HTTP+SSE transport (SPEC.md 35): `GET /sse` → `endpoint`
//! event; messages POSTed to it get 202 and are answered on the stream;
//! leaving the stream ends the session.

mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use support::{TestGateway, demo_config, text_of};

#[tokio::test]
async fn old_clients_use_the_sse_endpoint_and_message_posts() {
    let gw = TestGateway::start(demo_config()).await;
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(resp.status(), 200);
    let mut events =
        Box::pin(SseByteStream::new(resp.bytes_stream()).filter_map(|e| async move { e.ok() }));
    let endpoint = events.next().await.expect("endpoint event");
    assert_eq!(endpoint.event.as_deref(), Some("endpoint"));
    let post_uri = endpoint.data.expect("uri");
    assert!(post_uri.starts_with("/message?sessionId="), "{post_uri}");
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{base}{post_uri}");
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    let mut next_message = async || -> Value {
        loop {
            let e = events.next().await.expect("event");
            if let Some(d) = e.data.filter(|d| !d.is_empty()) {
                return serde_json::from_str(&d).expect("json");
            }
        }
    };
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": { "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": { "name": "old", "version": "0" } } });
    assert_eq!(post(init).await, 202);
    let r = loop {
        let m = next_message().await;
        if m["id"] == 1 {
            break m;
        }
    };
    assert_eq!(r["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await,
        202
    );
    let call = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": { "name": "progress", "arguments": { "steps": 2, "ms": 5 }, "_meta": { "progressToken": "p" } } });
    assert_eq!(post(call).await, 202);
    // Other notifications (e.g. tools/list_changed when the upstream came
    // up) may be interleaved; the call's own messages arrive in order.
    let mut got = Vec::new();
    let fin = loop {
        let m = next_message().await;
        if m["id"] == 2 {
            break m;
        }
        got.push(m);
    };
    assert_eq!(text_of(&fin), "done 2 steps");
    let progress = got
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 2, "{got:?}");

    // Unknown session → 404; missing → 400.
    let r = http
        .post(format!("{base}/message?sessionId=nope"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{base}/message"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("JSON error body");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sessionId query parameter"),
        "names what is missing: {message}"
    );

    // Leaving the stream ends the session.
    let (_, before) = gw.readyz().await;
    assert_eq!(before["sessions"], 1);
    drop(events);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, r) = gw.readyz().await;
        if r["sessions"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session not ended: {r}"
        );
        tokio::task::yield_now().await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_old_transport_upstream_is_proxied_and_reconnected_after_it_restarts() {
    // B reaches A over 2024-11-05 HTTP+SSE; when A restarts, B's SSE stream
    // ends and its supervisor opens a new session.
    support::check_chain_survives_upstream_restart(|a| {
        let mut upstream = ballast::config::UpstreamConfig::http(format!("http://{a}/sse"));
        upstream.transport = ballast::config::RemoteTransport::Sse;
        upstream
    })
    .await;
}
