//! Resumable streams (SPEC.md 4, 14, 15): a client that drops mid-stream
//! resumes with `Last-Event-ID` and receives exactly what followed, on that
//! stream only; streams closed by Ballast carry `retry:`; limits and expiry.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sse_stream::{Sse, SseByteStream};
use support::{McpClient, TestGateway, demo_config};

/// Raw SSE events of a response.
fn raw_events(resp: reqwest::Response) -> impl futures_util::Stream<Item = Sse> + Unpin {
    Box::pin(SseByteStream::new(resp.bytes_stream()).filter_map(|e| async move { e.ok() }))
}

fn data(e: &Sse) -> Option<Value> {
    e.data
        .as_deref()
        .filter(|d| !d.is_empty())
        .and_then(|d| serde_json::from_str(d).ok())
}

async fn resume(c: &McpClient, last_event_id: &str) -> reqwest::Response {
    let resp = c.resume(last_event_id).await;
    assert_eq!(resp.status(), 200);
    resp
}

fn progress_call(id: i64, steps: u64, ms: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "progress", "arguments": { "steps": steps, "ms": ms }, "_meta": { "progressToken": id } } })
}

#[tokio::test]
async fn a_dropped_stream_resumes_after_the_last_event_seen() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let mut events = raw_events(c.post(&progress_call(11, 5, 40)).await);
    let priming = events.next().await.expect("priming");
    let stream = priming.id.clone().expect("priming id");
    assert!(
        stream.ends_with(":0") && data(&priming).is_none(),
        "{priming:?}"
    );
    let first = events.next().await.expect("first progress");
    assert_eq!(data(&first).expect("json")["params"]["progress"], 1);
    let last_seen = first.id.clone().expect("event id");
    drop(events); // the client drops mid-call

    let mut rest = raw_events(resume(&c, &last_seen).await);
    let mut got = Vec::new();
    while let Some(e) = rest.next().await {
        if let Some(m) = data(&e) {
            got.push(m);
        }
    }
    let progress: Vec<u64> = got
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .filter_map(|m| m["params"]["progress"].as_u64())
        .collect();
    assert_eq!(progress, [2, 3, 4, 5], "exactly what followed: {got:?}");
    let finals: Vec<&Value> = got.iter().filter(|m| m["id"] == 11).collect();
    assert_eq!(finals.len(), 1, "{got:?}");
    assert_eq!(finals[0]["result"]["content"][0]["text"], "done 5 steps");
    gw.stop().await;
}

#[tokio::test]
async fn a_result_produced_while_the_client_was_away_is_parked_for_resume() {
    let gw = TestGateway::start(demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let call = json!({ "jsonrpc": "2.0", "id": 21, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 100 } } });
    let mut events = raw_events(c.post(&call).await);
    let priming = events.next().await.expect("priming").id.expect("id");
    drop(events);
    // The call finishes with nobody connected...
    loop {
        let (_, r) = gw.readyz().await;
        if r["calls_in_flight"] == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // ...and the result is waiting.
    let mut rest = raw_events(resume(&c, &priming).await);
    let fin = rest.next().await.expect("parked result");
    assert_eq!(
        data(&fin).expect("json")["result"]["content"][0]["text"],
        "slept 100 ms"
    );
    assert!(
        rest.next().await.is_none(),
        "the stream ends after its response"
    );
    let (_, r) = gw.readyz().await;
    assert!(
        r["counters"]["disconnects.stream_abandoned"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{r}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn another_sessions_stream_cannot_be_resumed() {
    let gw = TestGateway::start(demo_config()).await;
    let owner = McpClient::connect(&gw.url).await;
    let thief = McpClient::connect(&gw.url).await;
    let mut events = raw_events(owner.post(&progress_call(31, 2, 5)).await);
    let stream_id = events.next().await.expect("priming").id.expect("id");
    // The thief names the owner's stream: it gets a fresh GET stream of its
    // own (priming event with a different stream), none of the owner's events.
    let mut stolen = raw_events(resume(&thief, &stream_id).await);
    let first = stolen.next().await.expect("priming of a new stream");
    let first_id = first.id.clone().expect("id");
    assert!(
        first_id.ends_with(":0") && data(&first).is_none(),
        "{first:?}"
    );
    assert_ne!(first_id.split(':').next(), stream_id.split(':').next());
    while events.next().await.is_some() {}
    gw.stop().await;
}

#[tokio::test]
async fn long_streams_are_closed_with_retry_and_resume_where_they_left_off() {
    let mut config = demo_config();
    config.server.max_stream_duration = Duration::from_millis(150);
    let gw = TestGateway::start(config).await;
    let c = McpClient::connect(&gw.url).await;
    let call = json!({ "jsonrpc": "2.0", "id": 41, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 400 } } });
    let mut events = raw_events(c.post(&call).await);
    let mut last_id = None;
    let mut retry = None;
    while let Some(e) = events.next().await {
        if e.id.is_some() {
            last_id = e.id.clone();
        }
        if e.retry.is_some() {
            retry = e.retry;
        }
        assert!(data(&e).is_none(), "no response before the cut: {e:?}");
    }
    assert_eq!(retry, Some(1000), "closed with a retry hint");
    // Resume (possibly more than once, each leg capped at 150 ms).
    let mut answer = None;
    while answer.is_none() {
        let mut leg = raw_events(resume(&c, last_id.as_deref().expect("an id")).await);
        while let Some(e) = leg.next().await {
            if e.id.is_some() {
                last_id = e.id.clone();
            }
            if let Some(m) = data(&e) {
                answer = Some(m);
            }
        }
    }
    assert_eq!(
        answer.expect("answer")["result"]["content"][0]["text"],
        "slept 400 ms"
    );
    gw.stop().await;
}

#[tokio::test]
async fn idle_sessions_expire_and_free_their_resources() {
    let mut config = demo_config();
    config.server.session_idle_timeout = Duration::from_millis(300);
    config.server.resume_window = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let _ = c.call_tool("echo", json!({ "message": "x" })).await;
    let _get = c.open_get_stream().await; // open but silent: still idle
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw.readyz().await;
        if r["sessions"] == 0 && r["streams"] == 0 {
            assert_eq!(r["counters"]["sessions.expired"], 1, "{r}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session did not expire: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r) = c
        .request_raw_status(json!({ "jsonrpc": "2.0", "id": 9, "method": "ping" }))
        .await;
    assert_eq!(r, 404, "an expired session is unknown");
    gw.stop().await;
}

#[tokio::test]
async fn session_and_request_limits_answer_with_retry_after() {
    let mut config = demo_config();
    config.server.max_sessions = 1;
    config.server.max_requests_per_session = 1;
    let gw = TestGateway::start(config).await;
    let c = McpClient::connect(&gw.url).await;
    let slow = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 300 } } });
    let mut first = raw_events(c.post(&slow).await);
    let _ = first.next().await; // in flight now: the only session is busy
    let second = McpClient::new(&gw.url)
        .post(&json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } }))
        .await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    let r = c
        .post(&json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" }))
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    while first.next().await.is_some() {}
    gw.stop().await;
}

#[tokio::test]
async fn a_call_nobody_comes_back_for_is_cancelled_after_the_resume_window() {
    let mut config = demo_config();
    config.server.resume_window = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let c = McpClient::connect(&gw.url).await;
    let call = json!({ "jsonrpc": "2.0", "id": 51, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 60000 } } });
    let mut events = raw_events(c.post(&call).await);
    let _priming = events.next().await.expect("priming");
    drop(events); // the client leaves and never returns
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw.readyz().await;
        if r["calls_in_flight"] == 0 {
            assert_eq!(r["counters"]["calls.abandoned"], 1, "{r}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call not cancelled: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A call whose stream is being read is never cancelled, however long.
    let (_, fin) = McpClient::connect(&gw.url)
        .await
        .request_with_id(
            json!(52),
            "tools/call",
            json!({ "name": "sleep", "arguments": { "ms": 800 } }),
        )
        .await;
    assert_eq!(fin["result"]["content"][0]["text"], "slept 800 ms");
    gw.stop().await;
}
