//! Supervision: a child that crashes is restarted; one that crash-loops is
//! parked — readiness red, its tools hidden and `tools/list_changed` sent —
//! and re-announced when it recovers.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{McpClient, TestGateway, text_of};

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_crash_loop_is_parked_hidden_and_re_announced_on_recovery() {
    let config = support::demo_config_with(|u| {
        u.supervision.park_after = 2;
        u.supervision.park_duration = Duration::from_millis(800);
    });
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let mut get = c.open_get_stream().await;

    // First crash: restarted, tools stay listed.
    let r = c.call_tool("crash", json!({})).await;
    assert_eq!(r["error"]["data"]["class"], "outcome_unknown", "{r}");
    assert!(r["error"]["data"]["stderr_tail"].is_array(), "{r}");
    // Second crash within the window: parked.
    let _ = c.call_tool("crash", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, r) = gw.readyz().await;
        if r["upstreams"][0]["state"] == "parked" {
            assert_eq!(status, 503, "{r}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked: {r}");
        tokio::task::yield_now().await;
    }
    let changed = get.next().await.expect("list_changed when parked");
    assert_eq!(changed["method"], "notifications/tools/list_changed");
    let (_, list) = c.request("tools/list", json!({})).await;
    assert!(
        tool_names(&list).is_empty(),
        "parked tools are hidden: {list}"
    );

    // After park_duration it restarts and its tools come back, announced.
    let back = get.next().await.expect("list_changed on recovery");
    assert_eq!(back["method"], "notifications/tools/list_changed");
    let (_, list) = c.request("tools/list", json!({})).await;
    assert!(tool_names(&list).contains(&"echo".to_owned()), "{list}");
    let r = c.call_tool("echo", json!({ "message": "recovered" })).await;
    assert_eq!(text_of(&r), "recovered");
    let (status, _) = gw.readyz().await;
    assert_eq!(status, 200);
    gw.stop().await;
}
