//! The store traits are the seam for running several replicas: two gateways
//! over the same stores serve each other's sessions and resume each other's
//! streams (here with the in-memory stores shared in one process; the Redis
//! stores are an open issue).

mod support;

use futures_util::StreamExt;
use serde_json::json;
use sse_stream::SseByteStream;
use support::{McpClient, TestGateway, demo_config, text_of};
use tokio::net::TcpListener;

async fn replica(stores: &ballast::store::Stores) -> TestGateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    TestGateway::start_with_stores(listener, demo_config(), stores.clone())
}

#[tokio::test]
async fn a_session_opened_on_one_replica_is_served_and_resumed_on_another() {
    let stores = ballast::store::Stores::memory(demo_config().server.stream_limits());
    let a = replica(&stores).await;
    let b = replica(&stores).await;
    let on_a = McpClient::connect(&a.url).await;
    let mut on_b = McpClient::new(&b.url);
    on_b.session = on_a.session.clone();

    // B never saw this session's initialize: it loads it from the store.
    let r = on_b
        .call_tool("echo", json!({ "message": "served by B" }))
        .await;
    assert_eq!(text_of(&r), "served by B");

    // A call started on A, its client cut, resumed on B.
    let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 300 } } });
    let resp = on_a.post(&call).await;
    let mut events =
        Box::pin(SseByteStream::new(resp.bytes_stream()).filter_map(|e| async move { e.ok() }));
    let priming = events.next().await.expect("priming").id.expect("id");
    drop(events);
    let resumed = on_b
        .http
        .get(&b.url)
        .header("accept", "text/event-stream")
        .header(
            "mcp-session-id",
            on_b.session.as_deref().unwrap_or_default(),
        )
        .header("last-event-id", &priming)
        .send()
        .await
        .expect("GET on B");
    assert_eq!(resumed.status(), 200);
    let answer = support::messages(resumed)
        .next()
        .await
        .expect("answer via B");
    assert_eq!(answer["id"], 7);
    assert_eq!(text_of(&answer), "slept 300 ms");

    // Ending the session through B makes it unknown to a third replica.
    assert_eq!(on_b.delete().await, 200);
    let c = replica(&stores).await;
    let mut on_c = McpClient::new(&c.url);
    on_c.session = on_a.session.clone();
    let (_, status) = on_c
        .request_raw_status(json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }))
        .await;
    assert_eq!(status, 404);
    for gw in [a, b, c] {
        gw.stop().await;
    }
}
