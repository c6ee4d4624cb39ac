//! Safe retries against the real demo upstream: transient failures of
//! read-only tools are retried (with backoff, within the budget); tools not
//! safe to repeat are not; a child that crashes mid-call is retried on the
//! restarted child only when the tool is safe; otherwise the client is told
//! the outcome is unknown.

mod support;

use serde_json::json;
use support::{McpClient, TestGateway, demo_config, text_of};

#[tokio::test]
async fn a_flaky_read_only_tool_succeeds_through_retries() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool("flaky", json!({ "fail_times": 2, "key": "ro" }))
        .await;
    assert_eq!(text_of(&r), "succeeded after 2 failures", "{r}");
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["counters"]["calls.retried"], 2, "{ready}");
    gw.stop().await;
}

#[tokio::test]
async fn a_tool_not_safe_to_repeat_returns_its_first_error() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool("flaky_write", json!({ "fail_times": 2, "key": "rw" }))
        .await;
    assert_eq!(r["error"]["code"], json!(-32603), "{r}");
    assert_eq!(r["error"]["message"], "flaky failure 1");
    let (_, ready) = gw.readyz().await;
    assert!(ready["counters"]["calls.retried"].is_null(), "{ready}");
    gw.stop().await;
}

#[tokio::test]
async fn a_crash_mid_call_is_retried_on_the_restarted_child_for_a_safe_tool() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let (_, before) = gw.readyz().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("crashed");
    let r = c.call_tool("crash_once", json!({ "marker": marker })).await;
    assert_eq!(text_of(&r), "survived", "{r}");
    assert!(marker.exists(), "the first attempt did crash the child");
    let (_, after) = gw.readyz().await;
    assert_ne!(
        before["upstreams"][0]["pid"], after["upstreams"][0]["pid"],
        "a new child"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_crash_mid_call_on_an_unsafe_tool_reports_an_unknown_outcome() {
    let gw = TestGateway::start(demo_config()).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c.call_tool("crash", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "outcome_unknown", "{r}");
    assert_eq!(r["error"]["data"]["attempts"], 1);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("outcome unknown"),
        "{r}"
    );
    // The next call works once the child is back.
    let r = c.call_tool("echo", json!({ "message": "back" })).await;
    assert_eq!(text_of(&r), "back");
    gw.stop().await;
}

#[tokio::test]
async fn a_tool_policy_can_forbid_retries_of_an_annotated_tool() {
    let config = support::demo_config_with(|upstream| {
        upstream.tools.insert(
            "flaky".into(),
            ballast::config::ToolPolicy {
                idempotent: Some(false),
                max_attempts: None,
                max_concurrent: None,
                timeout: None,
                fallback: None,
                rate_per_sec: None,
            },
        );
    });
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool("flaky", json!({ "fail_times": 1, "key": "policy" }))
        .await;
    assert_eq!(r["error"]["message"], "flaky failure 1", "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_then_half_opens_and_closes() {
    let config = support::demo_config_with(|upstream| {
        upstream.breaker.consecutive_failures = 3;
        upstream.breaker.open_duration = std::time::Duration::from_millis(300);
    });
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let call = json!({ "fail_times": 3, "key": "breaker" });
    for n in 1..=3 {
        let r = c.call_tool("flaky_write", call.clone()).await;
        assert_eq!(r["error"]["message"], format!("flaky failure {n}"), "{r}");
    }
    // Open: refused without reaching the upstream.
    let r = c.call_tool("flaky_write", call.clone()).await;
    assert_eq!(r["error"]["code"], json!(-32003), "{r}");
    assert_eq!(r["error"]["data"]["breaker"], "upstream:demo");
    assert_eq!(r["error"]["data"]["reason"], "consecutive_failures");
    let wait = r["error"]["data"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(wait > 0 && wait <= 300, "{wait}");
    // After the open duration a probe goes through; the upstream's 4th call
    // succeeds, which closes the circuit.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 20)).await;
    let r = c.call_tool("flaky_write", call.clone()).await;
    assert_eq!(
        text_of(&r),
        "succeeded after 3 failures",
        "the refused call never reached it: {r}"
    );
    let r = c
        .call_tool("echo", json!({ "message": "closed again" }))
        .await;
    assert_eq!(text_of(&r), "closed again");
    gw.stop().await;
}

#[tokio::test]
async fn a_full_bulkhead_fails_fast_with_a_retry_hint() {
    let config = support::demo_config_with(|upstream| {
        upstream.bulkhead.max_concurrent = 1;
        upstream.bulkhead.max_wait = std::time::Duration::from_millis(50);
    });
    let gw = TestGateway::start(config).await;
    let c = McpClient::connect(&gw.url).await;
    let slow = c.request_with_id(
        json!("slow"),
        "tools/call",
        json!({ "name": "sleep", "arguments": { "ms": 600 } }),
    );
    let blocked = async {
        // Once the slow call holds the only slot, the next one is refused.
        loop {
            let (_, r) = gw.readyz().await;
            if r["calls_in_flight"] == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        c.request_with_id(
            json!("fast"),
            "tools/call",
            json!({ "name": "echo", "arguments": { "message": "x" } }),
        )
        .await
    };
    let ((_, slow), (_, refused)) = tokio::join!(slow, blocked);
    assert_eq!(text_of(&slow), "slept 600 ms");
    assert_eq!(refused["error"]["code"], json!(-32004), "{refused}");
    assert_eq!(refused["error"]["data"]["bulkhead"], "upstream:demo");
    assert_eq!(refused["error"]["data"]["retry_after_ms"], 50);
    gw.stop().await;
}

/// A forwarder in front of `target` that answers the first `tools/call`
/// with 503 + `Retry-After: 1` and forwards everything else unchanged.
async fn refuse_once_with_retry_after(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let refused = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (refused, client) = (refused.clone(), client.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            if String::from_utf8_lossy(&body).contains("tools/call")
                && !refused.swap(true, Ordering::SeqCst)
            {
                return axum::response::Response::builder()
                    .status(503)
                    .header("retry-after", "1")
                    .body(axum::body::Body::empty())
                    .expect("response");
            }
            let mut headers = parts.headers.clone();
            headers.remove("host");
            let resp = client
                .request(parts.method, format!("http://{target}{}", parts.uri))
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("forward");
            let mut out = axum::response::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            out.body(axum::body::Body::from_stream(resp.bytes_stream()))
                .expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn an_http_upstreams_retry_after_is_honoured() {
    let a = TestGateway::start(demo_config()).await;
    let front = refuse_once_with_retry_after(a.addr).await;
    let mut config = ballast::Config::default();
    config.add_upstream(
        "a",
        ballast::config::UpstreamConfig::http(format!("http://{front}/mcp")),
    );
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let started = tokio::time::Instant::now();
    let r = c.call_tool("echo", json!({ "message": "after 503" })).await;
    assert_eq!(text_of(&r), "after 503", "{r}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "waited the upstream's Retry-After"
    );
    let (_, ready) = b.readyz().await;
    assert_eq!(ready["counters"]["calls.retried"], 1, "{ready}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn progress_extends_a_tools_timeout_and_silence_ends_it() {
    use ballast::config::ToolPolicy;
    use std::time::Duration;
    let quick = ToolPolicy {
        timeout: Some(Duration::from_millis(250)),
        max_attempts: Some(1),
        ..ToolPolicy::default()
    };
    let config = support::demo_config_with(|u| {
        u.tools.insert("progress".into(), quick.clone());
        u.tools.insert("sleep".into(), quick.clone());
    });
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    // 5 × 100 ms = 500 ms in all, but each progress notification restarts the 250 ms.
    let (_, r) = c
        .request(
            "tools/call",
            json!({ "name": "progress", "arguments": { "steps": 5, "ms": 100 }, "_meta": { "progressToken": "p" } }),
        )
        .await;
    assert_eq!(text_of(&r), "done 5 steps", "{r}");
    // Silence for longer than the timeout ends the call.
    let r = c.call_tool("sleep", json!({ "ms": 600 })).await;
    assert_eq!(r["error"]["data"]["kind"], "timeout", "{r}");
    assert_eq!(r["error"]["data"]["class"], "outcome_unknown");
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_tool_falls_back_to_another_upstreams_tool_and_says_so() {
    let mut config = ballast::Config::default();
    let mut primary = support::demo_upstream();
    primary.tools.insert(
        "flaky_write".into(),
        ballast::config::ToolPolicy {
            fallback: Some("backup__echo".into()),
            ..Default::default()
        },
    );
    config.add_upstream("primary", primary);
    config.add_upstream("backup", support::demo_upstream());
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool(
            "primary__flaky_write",
            json!({ "fail_times": 5, "key": "fb", "message": "from the fallback" }),
        )
        .await;
    assert_eq!(text_of(&r), "from the fallback", "{r}");
    let degraded = &r["result"]["_meta"]["ballast/degraded"];
    assert_eq!(degraded["source"], "fallback");
    assert_eq!(degraded["tool"], "backup__echo");
    assert_eq!(degraded["primary_error"]["message"], "flaky failure 1");
    // A call that succeeds is not marked.
    let r = c
        .call_tool("backup__echo", json!({ "message": "plain" }))
        .await;
    assert!(r["result"]["_meta"].is_null(), "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn a_read_only_result_is_served_stale_and_marked_when_the_upstream_is_down() {
    use std::time::Duration;
    let mut config = support::demo_config_with(|u| {
        u.supervision.park_after = 1;
        u.supervision.park_duration = Duration::from_secs(60);
        u.retry.max_attempts = 1;
    });
    config.server.startup_wait = Duration::from_millis(200);
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let fresh = c
        .call_tool("echo", json!({ "message": "cached", "z": 1 }))
        .await;
    assert_eq!(text_of(&fresh), "cached");
    assert!(fresh["result"]["_meta"].is_null());
    // The only upstream crashes and is parked: nothing can answer now.
    let _ = c.call_tool("crash", json!({})).await;
    loop {
        let (_, r) = gw.readyz().await;
        if r["upstreams"][0]["state"] == "parked" {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Same call (arguments in another order): the last good result, marked.
    let stale = c
        .call_tool("echo", json!({ "z": 1, "message": "cached" }))
        .await;
    assert_eq!(text_of(&stale), "cached", "{stale}");
    let mark = &stale["result"]["_meta"]["ballast/degraded"];
    assert_eq!(mark["source"], "stale_cache", "{stale}");
    assert!(mark["age_ms"].as_u64().is_some());
    assert!(mark["primary_error"]["code"].is_i64());
    // A call never answered before has nothing to fall back on.
    let none = c
        .call_tool("echo", json!({ "message": "never seen" }))
        .await;
    assert!(none["error"].is_object(), "{none}");
    gw.stop().await;
}

#[tokio::test]
async fn rate_limits_per_session_and_per_tool_say_when_to_come_back() {
    let mut config = support::demo_config_with(|u| {
        u.tools.insert(
            "sleep".into(),
            ballast::config::ToolPolicy {
                rate_per_sec: Some(1.0),
                ..Default::default()
            },
        );
    });
    config.server.rate_limit_per_session = 0.5;
    config.server.rate_limit_burst = 3;
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    // Per tool: one sleep per second for everyone.
    let r = c.call_tool("sleep", json!({ "ms": 1 })).await;
    assert_eq!(text_of(&r), "slept 1 ms");
    let r = c.call_tool("sleep", json!({ "ms": 1 })).await;
    assert_eq!(r["error"]["code"], json!(-32005), "{r}");
    assert!(
        r["error"]["data"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 1000),
        "{r}"
    );
    // Per session: a burst of 3 requests (two calls so far, this ping is the
    // third), then 429 with Retry-After.
    let ping = json!({ "jsonrpc": "2.0", "id": 99, "method": "ping" });
    assert_eq!(c.post(&ping).await.status(), 200);
    let resp = c.post(&ping).await;
    assert_eq!(resp.status(), 429);
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&secs), "{secs}");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], json!(-32005));
    // Another session has its own bucket.
    let mut other = McpClient::connect(&gw.url).await;
    assert_eq!(
        text_of(&other.call_tool("echo", json!({ "message": "mine" })).await),
        "mine"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_retry_the_budget_refused_says_so() {
    // Retries ≤ 0 × calls + 0.1/s over a 10 s window: one retry in all.
    let gw = TestGateway::start(support::demo_config_with(|u| {
        u.retry.budget_ratio = 0.0;
        u.retry.budget_min_per_sec = 0.1;
    }))
    .await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool("flaky", json!({ "fail_times": 1, "key": "budget-a" }))
        .await;
    assert_eq!(text_of(&r), "succeeded after 1 failures", "{r}");
    let r = c
        .call_tool("flaky", json!({ "fail_times": 1, "key": "budget-b" }))
        .await;
    // The upstream's own error, with the refusal noted in its data.
    assert_eq!(r["error"]["message"], "flaky failure 1", "{r}");
    assert_eq!(
        r["error"]["data"]["retry_refused"], "retry_budget_exhausted",
        "{r}"
    );
    // A crash mid-call of a safe tool: Ballast's own error says it too.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = c
        .call_tool("crash_once", json!({ "marker": dir.path().join("m") }))
        .await;
    assert_eq!(
        r["error"]["data"]["retry_refused"], "retry_budget_exhausted",
        "{r}"
    );
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("retry budget"), "{message}");
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("ballast_retry_budget_exhausted_total{upstream=\"demo\",tool=\"flaky\"} 1")
            && metrics.contains(
                "ballast_retry_budget_exhausted_total{upstream=\"demo\",tool=\"crash_once\"} 1"
            ),
        "{metrics}"
    );
    gw.stop().await;
}
