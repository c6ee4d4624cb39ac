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

#[cfg(unix)]
#[tokio::test]
async fn killing_the_child_under_50_calls_ends_every_call_and_the_next_one_works() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let gw = TestGateway::start(support::demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let (_, ready) = gw.readyz().await;
    let pid = ready["upstreams"][0]["pid"].as_i64().expect("pid") as i32;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            c.request_with_id(
                json!(i),
                "tools/call",
                json!({ "name": "sleep", "arguments": { "ms": 400 } }),
            )
        })
        .collect();
    let all = futures_util::future::join_all(calls);
    let killer = async {
        loop {
            let (_, r) = gw.readyz().await;
            if r["calls_in_flight"] == 50 {
                break;
            }
            tokio::task::yield_now().await;
        }
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the child");
    };
    let (results, ()) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(all, killer) })
            .await
            .expect("no call hangs");
    let mut ok = 0;
    for (_, r) in &results {
        if r["result"].is_object() {
            assert_eq!(text_of(r), "slept 400 ms");
            ok += 1;
        } else {
            // The retry budget is spent: a clear class, never a hang.
            assert_eq!(r["error"]["data"]["class"], "outcome_unknown", "{r}");
        }
    }
    let (_, ready) = gw.readyz().await;
    eprintln!(
        "after SIGKILL under 50 calls: {ok} succeeded via retry, {} outcome_unknown; counters {}",
        50 - ok,
        ready["counters"]
    );
    assert!(ok >= 10, "retries within the budget succeed: {ok}");
    let mut c = c;
    let r = c.call_tool("echo", json!({ "message": "next" })).await;
    assert_eq!(text_of(&r), "next");
    gw.stop().await;
}

#[tokio::test]
async fn a_remote_upstream_that_stops_answering_probes_turns_readiness_red_until_it_is_back() {
    let (a, a_addr, b) = behind_a_remote_gateway("a", |upstream| {
        upstream.supervision.probe_interval = Duration::from_millis(100);
        upstream.supervision.probe_timeout = Duration::from_millis(200);
        upstream.supervision.probe_failures = 2;
        upstream.supervision.park_after = 1000;
    })
    .await;
    let wait_for = |want: u16| {
        let b = &b;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (status, r) = b.readyz().await;
                if status == want {
                    return r;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "readyz never became {want}: {r}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(200).await;
    a.stop().await; // A is gone: probes fail, B's readiness turns red.
    let red = wait_for(503).await;
    assert_eq!(red["upstreams"][0]["state"], "connecting", "{red}");
    let listener = tokio::net::TcpListener::bind(a_addr).await.expect("rebind");
    let a2 = TestGateway::start_on(listener, support::demo_config());
    wait_for(200).await; // back
    b.stop().await;
    a2.stop().await;
}

#[tokio::test]
async fn failed_health_probes_open_the_upstream_breaker() {
    let (a, a_addr, b) = behind_a_remote_gateway("probed", |upstream| {
        upstream.supervision.probe_interval = Duration::from_millis(50);
        upstream.supervision.probe_timeout = Duration::from_millis(100);
        // Probes alone never trigger a reconnect here: only the breaker reacts.
        upstream.supervision.probe_failures = 1_000;
        upstream.breaker.consecutive_failures = 3;
        upstream.breaker.open_duration = Duration::from_secs(60);
    })
    .await;
    let mut c = McpClient::connect(&b.url).await;
    let r = c.call_tool("echo", json!({ "message": "up" })).await;
    assert_eq!(text_of(&r), "up");
    a.stop().await;
    // Something still accepts at A's address but never answers: probes
    // time out (a refused connection would be a reconnect, not a failure).
    let _silent = tokio::net::TcpListener::bind(a_addr).await.expect("rebind");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // No call reaches the upstream while we wait for the breaker: the
        // only failures it can count are the probes'.
        let scraped = b.metrics().await;
        if scraped.contains(r#"ballast_breaker_state{breaker="upstream:probed"} 1"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker never opened:\n{scraped}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.call_tool("echo", json!({ "message": "refused" })).await;
    assert_eq!(r["error"]["code"], json!(-32003), "{r}");
    assert_eq!(r["error"]["data"]["breaker"], "upstream:probed", "{r}");
    b.stop().await;
}

/// Gateway A (demo upstream) on a free port, and gateway B with A as its
/// remote upstream named `name`, configured by `tweak`: (A, A's address, B).
async fn behind_a_remote_gateway(
    name: &str,
    tweak: impl FnOnce(&mut ballast::config::UpstreamConfig),
) -> (TestGateway, std::net::SocketAddr, TestGateway) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a_addr = listener.local_addr().expect("addr");
    let a = TestGateway::start_on(listener, support::demo_config());
    let mut upstream = ballast::config::UpstreamConfig::http(format!("http://{a_addr}/mcp"));
    tweak(&mut upstream);
    let mut config = ballast::Config::default();
    config.add_upstream(name, upstream);
    (a, a_addr, TestGateway::start(config).await)
}
