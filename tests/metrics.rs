//! `/metrics`: the Prometheus text of what the gateway did, checked after
//! real calls through the demo upstream. The recorder is global to this
//! test process, so each test names its upstream uniquely and reads only
//! its own series.

mod support;

use serde_json::json;
use support::{McpClient, TestGateway, text_of};

/// Scrapes `/metrics`: (status, content type, body).
async fn scrape(gw: &TestGateway) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{}/metrics", gw.addr))
        .await
        .expect("scrape");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, r.text().await.expect("body"))
}

/// The value of the sample line starting with `series` (name + labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn config_named(
    name: &str,
    tweak: impl FnOnce(&mut ballast::config::UpstreamConfig),
) -> ballast::Config {
    let mut upstream = support::demo_upstream();
    tweak(&mut upstream);
    let mut config = ballast::Config::default();
    config.add_upstream(name, upstream);
    config
}

#[tokio::test]
async fn calls_retries_latency_and_levels_are_exported() {
    let gw = TestGateway::start(config_named("m_calls", |_| {})).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c
        .call_tool("flaky", json!({ "fail_times": 2, "key": "metrics" }))
        .await;
    assert_eq!(text_of(&r), "succeeded after 2 failures", "{r}");
    let r = c.call_tool("fail", json!({})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");

    let (status, ctype, text) = scrape(&gw).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let s =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        s(r#"ballast_calls_total{upstream="m_calls",tool="flaky",class="success"}"#),
        1.0
    );
    assert_eq!(
        s(r#"ballast_calls_total{upstream="m_calls",tool="fail",class="tool_error"}"#),
        1.0
    );
    assert_eq!(
        s(r#"ballast_retries_total{upstream="m_calls",tool="flaky"}"#),
        2.0
    );
    // A histogram (buckets), not a summary.
    assert_eq!(
        s(
            r#"ballast_call_duration_seconds_count{upstream="m_calls",tool="flaky",class="success"}"#
        ),
        1.0
    );
    assert_eq!(
        s(
            r#"ballast_call_duration_seconds_bucket{upstream="m_calls",tool="flaky",class="success",le="+Inf"}"#
        ),
        1.0
    );
    assert!(s("ballast_sessions") >= 1.0);
    assert_eq!(s(r#"ballast_upstream_up{upstream="m_calls"}"#), 1.0);
    assert_eq!(s(r#"ballast_upstream_parked{upstream="m_calls"}"#), 0.0);
    assert_eq!(
        s(r#"ballast_breaker_state{breaker="upstream:m_calls"}"#),
        0.0
    );
    assert!(
        text.contains("# TYPE ballast_calls_total counter"),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn breaker_transitions_and_fast_failures_are_exported() {
    let gw = TestGateway::start(config_named("m_breaker", |u| {
        u.breaker.consecutive_failures = 2;
        u.breaker.open_duration = std::time::Duration::from_secs(60);
    }))
    .await;
    let mut c = McpClient::connect(&gw.url).await;
    let call = json!({ "fail_times": 5, "key": "m_breaker" });
    for _ in 0..2 {
        let r = c.call_tool("flaky_write", call.clone()).await;
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("flaky failure")),
            "{r}"
        );
    }
    let r = c.call_tool("flaky_write", call).await;
    assert_eq!(r["error"]["code"], json!(-32003), "{r}");

    let (_, _, text) = scrape(&gw).await;
    let s =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        s(r#"ballast_breaker_state{breaker="upstream:m_breaker"}"#),
        1.0
    );
    assert_eq!(
        s(r#"ballast_breaker_transitions_total{breaker="upstream:m_breaker",to="open"}"#),
        1.0
    );
    assert_eq!(
        s(r#"ballast_breaker_rejections_total{breaker="upstream:m_breaker"}"#),
        1.0
    );
    assert_eq!(
        s(r#"ballast_calls_total{upstream="m_breaker",tool="flaky_write",class="transient"}"#),
        3.0,
        "two failures that reached it, one refusal"
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_restarts_are_counted() {
    let gw = TestGateway::start(config_named("m_restart", |_| {})).await;
    let mut c = McpClient::connect(&gw.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("crashed");
    let r = c.call_tool("crash_once", json!({ "marker": marker })).await;
    assert_eq!(text_of(&r), "survived", "{r}");
    let (_, _, text) = scrape(&gw).await;
    assert_eq!(
        sample(
            &text,
            r#"ballast_upstream_restarts_total{upstream="m_restart"}"#
        ),
        Some(1.0),
        "{text}"
    );
    gw.stop().await;
}
