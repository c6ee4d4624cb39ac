//! A full session table (issue 13 item 8): at `max_sessions` a new
//! `initialize` evicts the least recently used idle session (no call in
//! flight, no open stream), whose owner gets 404 and re-initializes; only
//! when every session is busy is the answer 503 + `Retry-After`.

mod support;

use futures_util::StreamExt;
use serde_json::json;
use support::{McpClient, TestGateway, demo_config};

const MAX: usize = 5;

/// A JSON-RPC `ping` on `c`'s session: the HTTP status.
async fn ping(c: &McpClient) -> u16 {
    c.post(&json!({ "jsonrpc": "2.0", "id": "p", "method": "ping" }))
        .await
        .status()
        .as_u16()
}

/// An `initialize` on a new connection: the HTTP status and `Retry-After`.
async fn initialize(url: &str) -> (u16, Option<String>) {
    let r = McpClient::new(url)
        .post(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "0" } }
        }))
        .await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (r.status().as_u16(), retry_after)
}

#[tokio::test]
async fn a_full_table_gives_way_to_a_new_session_by_evicting_the_least_recently_used_idle_one() {
    let mut config = demo_config();
    config.server.max_sessions = MAX;
    let gw = TestGateway::start(config).await;
    let mut clients = Vec::new();
    for _ in 0..MAX {
        clients.push(McpClient::connect(&gw.url).await);
    }
    // Session 0 is the least recently used once the others were used after it.
    for c in &clients[1..] {
        assert_eq!(ping(c).await, 200);
    }
    let newcomer = McpClient::connect(&gw.url).await;
    assert_eq!(
        ping(&clients[0]).await,
        404,
        "the LRU idle session gave way"
    );
    for c in &clients[1..] {
        assert_eq!(ping(c).await, 200, "the others live on");
    }
    assert_eq!(ping(&newcomer).await, 200);
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["sessions"], MAX, "{ready}");

    // Now every session busy: GET streams open on four, a call in flight on
    // the fifth.
    let mut busy: Vec<McpClient> = clients.drain(1..).collect();
    busy.push(newcomer);
    let mut streams = Vec::new();
    for c in &busy[..MAX - 1] {
        streams.push(c.open_get_stream().await);
    }
    let caller = &busy[MAX - 1];
    let call = caller
        .post(
            &json!({ "jsonrpc": "2.0", "id": "slow", "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 1500 } } }),
        )
        .await;
    assert_eq!(call.status(), 200);
    let (status, retry_after) = initialize(&gw.url).await;
    assert_eq!(status, 503, "nobody is idle");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The call ends: its session is idle again and gives way.
    let answer = support::messages(call)
        .filter(|m| futures_util::future::ready(m["id"] == "slow"))
        .next()
        .await
        .expect("the call's answer");
    assert!(answer["result"].is_object(), "{answer}");
    let (status, _) = initialize(&gw.url).await;
    assert_eq!(status, 200);
    assert_eq!(
        ping(caller).await,
        404,
        "the session whose call ended gave way"
    );
    for c in &busy[..MAX - 1] {
        assert_eq!(ping(c).await, 200, "sessions with a stream open stay");
    }
    drop(streams);
    gw.stop().await;
}

#[tokio::test]
async fn an_evicted_session_is_gone_from_the_shared_store_too() {
    let redis = support::redis::RedisServer::start().await;
    let mut config = demo_config();
    config.server.max_sessions = 2;
    config.store.kind = ballast::config::StoreKind::Redis;
    config.store.url = redis.url();
    config.store.deployment = format!("evict{}", support::redis::unique());
    let replica = |config: &ballast::config::Config| {
        let config = config.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let stores = ballast::store::Stores::from_config(&config).expect("stores");
            TestGateway::start_with_stores(listener, config, stores)
        }
    };
    let a = replica(&config).await;
    let oldest = McpClient::connect(&a.url).await;
    let other = McpClient::connect(&a.url).await;
    assert_eq!(ping(&other).await, 200);
    let _newcomer = McpClient::connect(&a.url).await;
    assert_eq!(ping(&oldest).await, 404, "evicted on A");
    // Another replica sharing the store finds no record of it either (as
    // after a DELETE), but the others'.
    let b = replica(&config).await;
    let on_b = |c: &McpClient| {
        let mut b_client = McpClient::new(&b.url);
        b_client.session = c.session.clone();
        b_client
    };
    assert_eq!(ping(&on_b(&oldest)).await, 404);
    assert_eq!(ping(&on_b(&other)).await, 200);
    a.stop().await;
    b.stop().await;
}
