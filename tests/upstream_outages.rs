//! Outages of an upstream and how fast Ballast gets over them (issue 13,
//! items 9–11 and 13): a restarted remote upstream that forgot its session,
//! a remote upstream briefly down (Streamable HTTP and 2024-11-05 SSE),
//! calls to an upstream that is down, and sessions that start while an
//! upstream cannot.
//!
//! Seconds to first success (or to failure) are printed, so a run shows
//! the figures the issue asks for.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ballast::config::{RemoteTransport, UpstreamConfig};
use serde_json::{Value, json};
use support::log_capture::captured;
use support::{McpClient, TestGateway, demo_config, text_of};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A remote upstream that answers like the TypeScript SDK's servers
/// (server-everything's `streamableHttp` mode): gateway A behind a small
/// proxy that turns A's 404 for an unknown session into
/// `400 "Bad Request: No valid session ID provided"`, byte for byte what
/// server-everything sends. Stopping it closes the proxy's listener and
/// every connection, like a process that exits.
struct TsSdkStyleServer {
    a: TestGateway,
    proxy: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
}

impl TsSdkStyleServer {
    /// Starts on `addr` (port 0: any free port).
    async fn start(addr: SocketAddr) -> Self {
        let a = TestGateway::start(demo_config()).await;
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let target = a.addr;
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let client = client.clone();
            async move { rewrite_404(&client, target, req).await }
        });
        let proxy = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { a, proxy, addr }
    }

    async fn stop(self) {
        self.proxy.abort();
        let _ = self.proxy.await;
        self.a.stop().await;
    }
}

async fn rewrite_404(
    client: &reqwest::Client,
    target: SocketAddr,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let url = format!("http://{target}{}", parts.uri);
    let resp = client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(resp) = resp else {
        return http::StatusCode::BAD_GATEWAY.into_response();
    };
    if resp.status() == http::StatusCode::NOT_FOUND {
        let body = r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#;
        return (
            http::StatusCode::BAD_REQUEST,
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            body,
        )
            .into_response();
    }
    let mut out = axum::response::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(axum::body::Body::from_stream(resp.bytes_stream()))
        .expect("response")
}

/// Calls `echo` through `c` until it succeeds, at most `bound`; returns the
/// time from `since` to the first success, or `None` if none came.
async fn first_success(c: &mut McpClient, since: Instant, bound: Duration) -> Option<Duration> {
    let mut last = Value::Null;
    while since.elapsed() < bound {
        let r = c.call_tool("echo", json!({ "message": "back" })).await;
        if r["result"].is_object() {
            assert_eq!(text_of(&r), "back");
            return Some(since.elapsed());
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("no success within {bound:?}; last answer {last}");
    None
}

#[tokio::test]
async fn a_restarted_upstream_that_answers_400_for_its_lost_session_is_back_within_2s() {
    let server = TsSdkStyleServer::start("127.0.0.1:0".parse().expect("addr")).await;
    let addr = server.addr;
    let mut config = ballast::Config::default();
    config.add_upstream("ts", UpstreamConfig::http(format!("http://{addr}/mcp")));
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let r = c.call_tool("echo", json!({ "message": "before" })).await;
    assert_eq!(text_of(&r), "before", "{r}");

    server.stop().await;
    let server = TsSdkStyleServer::start(addr).await;
    let back = Instant::now();
    let took = first_success(&mut c, back, Duration::from_secs(100)).await;
    eprintln!("restarted upstream answering 400: first success after {took:?}");
    let took = took.expect("calls succeed again");
    assert!(
        took <= Duration::from_secs(2),
        "first success after {took:?}"
    );
    // A session that starts now is served too.
    let mut fresh = McpClient::connect(&b.url).await;
    let r = fresh.call_tool("echo", json!({ "message": "new" })).await;
    assert_eq!(text_of(&r), "new", "{r}");
    b.stop().await;
    server.stop().await;
}

/// Gateway A (demo upstream) is B's remote upstream (`upstream(A's
/// address)`); A stops for 3 s and restarts on the same port. Returns
/// (seconds until a call made just after A stopped failed, seconds from
/// A's restart to B's first successful call).
async fn outage_of_3s(
    upstream: impl Fn(SocketAddr) -> UpstreamConfig,
) -> (Duration, Option<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a_addr = listener.local_addr().expect("addr");
    let a = TestGateway::start_on(listener, demo_config());
    let mut config = ballast::Config::default();
    config.add_upstream("remote", upstream(a_addr));
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let r = c.call_tool("echo", json!({ "message": "up" })).await;
    assert_eq!(text_of(&r), "up", "{r}");

    a.stop().await;
    let stopped = Instant::now();
    // A client calling during the outage (not the one measuring recovery,
    // so a hung call cannot shift the timeline).
    let mut during = McpClient::connect(&b.url).await;
    let failing = tokio::spawn(async move {
        let start = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            during.call_tool("echo", json!({ "message": "down" })),
        )
        .await;
        (start.elapsed(), r)
    });
    tokio::time::sleep_until(stopped + Duration::from_secs(3)).await;
    let listener = TcpListener::bind(a_addr).await.expect("rebind A");
    let a2 = TestGateway::start_on(listener, demo_config());
    let recovered = first_success(&mut c, Instant::now(), Duration::from_secs(60)).await;
    let (failed_after, answer) = failing.await.expect("caller");
    eprintln!("the call during the outage, after {failed_after:?}: {answer:?}");
    b.stop().await;
    a2.stop().await;
    (failed_after, recovered)
}

fn assert_quick_outage(label: &str, failed_after: Duration, recovered: Option<Duration>) {
    eprintln!(
        "{label}: a call during the outage failed after {failed_after:?}; first success {recovered:?} after the restart"
    );
    let recovered = recovered.expect("calls succeed again");
    assert!(
        recovered <= Duration::from_secs(3),
        "{label}: first success {recovered:?} after the restart"
    );
    assert!(
        failed_after <= Duration::from_secs(2),
        "{label}: the call during the outage took {failed_after:?} to fail"
    );
}

#[tokio::test]
async fn a_2024_11_05_sse_upstream_down_for_3s_is_used_again_within_seconds() {
    let (failed_after, recovered) = outage_of_3s(|a| {
        let mut u = UpstreamConfig::http(format!("http://{a}/sse"));
        u.transport = RemoteTransport::Sse;
        u
    })
    .await;
    assert_quick_outage("2024-11-05 SSE upstream", failed_after, recovered);
}

#[tokio::test]
async fn a_streamable_http_upstream_down_for_3s_is_used_again_within_seconds() {
    let (failed_after, recovered) =
        outage_of_3s(|a| UpstreamConfig::http(format!("http://{a}/mcp"))).await;
    assert_quick_outage("Streamable HTTP upstream", failed_after, recovered);
}

/// Polls `/readyz` until `upstream` satisfies `done`, at most 20 s.
async fn wait_upstream(gw: &TestGateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, r) = gw.readyz().await;
        if done(&r["upstreams"][0]) {
            return r["upstreams"][0].clone();
        }
        assert!(Instant::now() < deadline, "never reached: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_executable_is_retried_and_logged_as_cannot_start_never_parked() {
    captured();
    let mut config = ballast::Config::default();
    let mut u = UpstreamConfig::stdio("/nonexistent/ballast-no-such-mcp-server", vec![]);
    u.required = false;
    u.supervision.park_after = 2;
    config.add_upstream("missing", u);
    let gw = TestGateway::start(config).await;
    let up = wait_upstream(&gw, |u| u["attempt"].as_u64().unwrap_or(0) >= 4).await;
    assert_eq!(up["state"], "connecting", "{up}");
    assert!(
        up["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot start"),
        "{up}"
    );
    let lines = captured().lock().expect("lines").clone();
    let ours: Vec<_> = lines.iter().filter(|l| l.contains("missing")).collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("upstream cannot start: not found")),
        "{ours:?}"
    );
    assert!(
        !ours.iter().any(|l| l.contains("crash-looping")),
        "{ours:?}"
    );
    gw.stop().await;
}

/// A call to an upstream that is parked, or down and being reconnected,
/// fails at once with an error naming the upstream, its state and when to
/// retry — also for a tool that left the catalog with it.
#[tokio::test]
async fn calls_to_a_parked_upstream_fail_fast_with_its_state_and_a_retry_hint() {
    let config = support::demo_config_with(|u| {
        u.supervision.park_after = 1;
        u.supervision.park_duration = Duration::from_secs(60);
    });
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let _ = c.call_tool("crash", json!({})).await;
    wait_upstream(&gw, |u| u["state"] == "parked").await;
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.call_tool("echo", json!({ "message": "parked?" })),
    )
    .await
    .expect("the call ends");
    let took = start.elapsed();
    eprintln!("call to a parked upstream failed after {took:?}: {r}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(r["error"]["code"], json!(-32001), "{r}");
    assert_eq!(r["error"]["data"]["upstream"], "demo", "{r}");
    assert_eq!(r["error"]["data"]["state"], "parked", "{r}");
    let wait = r["error"]["data"]["retry_after_ms"].as_u64().expect("hint");
    assert!((1_000..=60_000).contains(&wait), "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("demo") && message.contains("parked"),
        "{r}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn calls_to_an_unreachable_remote_upstream_fail_fast_with_its_state_and_a_retry_hint() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // closed again: nobody listens there
    let mut u = UpstreamConfig::http(format!("http://127.0.0.1:{port}/mcp"));
    u.required = false;
    let mut config = ballast::Config::default();
    config.add_upstream("gone", u);
    let gw = TestGateway::start(config).await;
    wait_upstream(&gw, |u| u["attempt"].as_u64().unwrap_or(0) >= 1).await;
    let mut c = McpClient::connect(&gw.url).await;
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.call_tool("echo", json!({ "message": "anyone?" })),
    )
    .await
    .expect("the call ends");
    let took = start.elapsed();
    eprintln!("call to an unreachable upstream failed after {took:?}: {r}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(r["error"]["code"], json!(-32001), "{r}");
    assert_eq!(r["error"]["data"]["state"], "reconnecting", "{r}");
    let wait = r["error"]["data"]["retry_after_ms"].as_u64().expect("hint");
    assert!((1..=2_000).contains(&wait), "{r}");
    gw.stop().await;
}

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

/// Issue 13 item 13: a required upstream that cannot start does not hold
/// every `initialize` for `startup_wait`; the session starts with the
/// upstream that is up.
#[tokio::test]
async fn initialize_answers_at_once_when_a_required_upstream_cannot_start() {
    let mut config = ballast::Config::default();
    config.server.startup_wait = Duration::from_secs(30);
    config.add_upstream("good", support::demo_upstream());
    config.add_upstream(
        "missing",
        UpstreamConfig::stdio("/nonexistent/ballast-no-such-mcp-server", vec![]),
    );
    let gw = TestGateway::start(config).await;
    let start = Instant::now();
    let c = tokio::time::timeout(Duration::from_secs(40), McpClient::connect(&gw.url)).await;
    let took = start.elapsed();
    eprintln!("initialize with a required upstream that cannot start: {took:?}");
    let mut c = c.expect("initialize answers");
    assert!(took < Duration::from_secs(5), "initialize took {took:?}");
    let (_, list) = c.request("tools/list", json!({})).await;
    let names = tool_names(&list);
    assert!(names.contains(&"good__echo".to_owned()), "{names:?}");
    let r = c.call_tool("good__echo", json!({ "message": "hi" })).await;
    assert_eq!(text_of(&r), "hi", "{r}");
    let (status, _) = gw.readyz().await;
    assert_eq!(status, 503, "a required upstream is missing");
    gw.stop().await;
}

/// An upstream that comes up after the session started: its tools join
/// the catalog and the session hears `tools/list_changed` on its GET stream.
#[tokio::test]
async fn a_late_upstream_joins_the_session_with_list_changed() {
    use futures_util::StreamExt;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // nobody listens there yet
    let mut config = ballast::Config::default();
    config.server.startup_wait = Duration::from_secs(30);
    config.add_upstream("good", support::demo_upstream());
    config.add_upstream(
        "late",
        UpstreamConfig::http(format!("http://127.0.0.1:{port}/mcp")),
    );
    let gw = TestGateway::start(config).await;
    let mut c = tokio::time::timeout(Duration::from_secs(5), McpClient::connect(&gw.url))
        .await
        .expect("initialize answers at once");
    let (_, list) = c.request("tools/list", json!({})).await;
    assert!(
        !tool_names(&list).iter().any(|n| n.starts_with("late__")),
        "{list}"
    );
    let mut get = c.open_get_stream().await;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind late");
    let late = TestGateway::start_on(listener, demo_config());
    let changed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = get.next().await {
            if m["method"] == "notifications/tools/list_changed" {
                return m;
            }
        }
        panic!("GET stream ended");
    })
    .await
    .expect("list_changed when the late upstream comes up");
    assert_eq!(changed["method"], "notifications/tools/list_changed");
    let (_, list) = c.request("tools/list", json!({})).await;
    assert!(
        tool_names(&list).contains(&"late__echo".to_owned()),
        "{list}"
    );
    let r = c
        .call_tool("late__echo", json!({ "message": "joined" }))
        .await;
    assert_eq!(text_of(&r), "joined", "{r}");
    gw.stop().await;
    late.stop().await;
}
