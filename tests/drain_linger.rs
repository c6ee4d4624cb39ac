//! The drain's linger (issue 13 item 20): after the last call ends, Ballast
//! keeps answering 503 + `Retry-After` for `server.drain_linger` before it
//! stops accepting, so a client's follow-up right after its answer (the
//! Python SDK lists tools after a call) is refused clearly, not reset.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{McpClient, TestGateway, text_of};

#[tokio::test]
async fn a_follow_up_right_after_the_last_answer_gets_503_not_a_connection_error() {
    let gw = TestGateway::start(support::demo_config()).await;
    let mut client = McpClient::connect(&gw.url).await;
    let id = client.next_id();
    let call = client.request_with_id(
        json!(id),
        "tools/call",
        json!({ "name": "sleep", "arguments": { "ms": 300 } }),
    );
    let drain = async {
        // Drain while the call is in flight upstream.
        loop {
            let (_, r) = gw.readyz().await;
            if r["calls_in_flight"] == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        gw.shutdown.drain.cancel();
    };
    let ((_, answer), ()) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(call, drain) })
            .await
            .expect("the call ends in time");
    assert_eq!(text_of(&answer), "slept 300 ms", "{answer}");

    // The follow-up, at once: a new connection, as a pool that lost its
    // keep-alive connection to the drain would open.
    let follow_up = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(
            "mcp-session-id",
            client.session.as_deref().unwrap_or_default(),
        )
        .body(json!({ "jsonrpc": "2.0", "id": 99, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("the follow-up is answered, not refused at the socket");
    assert_eq!(follow_up.status(), 503);
    assert!(
        follow_up.headers().contains_key("retry-after"),
        "{:?}",
        follow_up.headers()
    );
    let body: serde_json::Value = follow_up.json().await.expect("JSON-RPC error body");
    assert!(body["error"]["code"].is_i64(), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn the_linger_is_bounded_then_the_listener_closes() {
    let mut config = support::demo_config();
    config.server.drain_linger = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let addr = gw.addr;
    let started = tokio::time::Instant::now();
    gw.stop().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "no linger: {took:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener still accepts after the drain"
    );
}
