//! Test support: a gateway on a real loopback socket in front of the real
//! demo upstream (the `ballast` binary as a child), and a small MCP client
//! that speaks Streamable HTTP over reqwest and reads SSE incrementally.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use ballast::Shutdown;
use ballast::config::{Config, UpstreamConfig};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod binary;
pub mod log_capture;
pub mod redis;

/// The `ballast` binary built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_ballast");

/// An upstream config that runs the demo upstream as a child.
pub fn demo_upstream() -> UpstreamConfig {
    UpstreamConfig::stdio(BIN, vec!["demo-upstream".into()])
}

/// A config with one demo upstream named `demo`, adjusted by `tweak`.
pub fn demo_config_with(tweak: impl FnOnce(&mut UpstreamConfig)) -> Config {
    let mut upstream = demo_upstream();
    tweak(&mut upstream);
    let mut c = Config::default();
    c.add_upstream("demo", upstream);
    c
}

/// A config with one demo upstream named `demo`.
pub fn demo_config() -> Config {
    let mut c = Config::default();
    c.add_upstream("demo", demo_upstream());
    c
}

/// A gateway running in-process on 127.0.0.1:<ephemeral>.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub url: String,
    pub shutdown: Shutdown,
    handle: JoinHandle<Result<(), ballast::server::ServeError>>,
}

impl TestGateway {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Self::start_on(listener, config)
    }

    pub fn start_on(listener: TcpListener, config: Config) -> Self {
        let stores = ballast::store::Stores::memory(config.server.stream_limits());
        Self::start_with_stores(listener, config, stores)
    }

    /// A gateway over the given stores (replicas share them).
    pub fn start_with_stores(
        listener: TcpListener,
        config: Config,
        stores: ballast::store::Stores,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}{}", config.server.path);
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(ballast::run_with_stores(
            listener,
            config,
            shutdown.clone(),
            stores,
        ));
        Self {
            addr,
            url,
            shutdown,
            handle,
        }
    }

    /// Drains and waits for the server to return.
    pub async fn stop(self) {
        self.shutdown.drain.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("drain finished in time")
            .expect("server task")
            .expect("server result");
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let r = reqwest::get(format!("http://{}/readyz", self.addr))
            .await
            .expect("readyz");
        (r.status().as_u16(), r.json().await.expect("readyz json"))
    }
}

/// This process's resident set size (VmRSS), in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// One JSON-RPC message read from a response (JSON body or SSE event).
pub type Messages = std::pin::Pin<Box<dyn Stream<Item = Value> + Send>>;

/// A minimal MCP client over Streamable HTTP.
pub struct McpClient {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    next_id: i64,
}

impl McpClient {
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            session: None,
            next_id: 1,
        }
    }

    /// `initialize` + `notifications/initialized`.
    pub async fn connect(url: &str) -> Self {
        Self::connect_as(url, "2025-11-25").await
    }

    /// `initialize` asking for protocol `version`, + `notifications/initialized`.
    pub async fn connect_as(url: &str, version: &str) -> Self {
        let mut c = Self::new(url);
        let resp = c
            .post(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": { "protocolVersion": version, "capabilities": { "sampling": {}, "elicitation": {} },
                            "clientInfo": { "name": "test", "version": "0" } }
            }))
            .await;
        assert_eq!(resp.status(), 200, "initialize status");
        c.session = Some(
            resp.headers()
                .get("mcp-session-id")
                .expect("session id header")
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
        let init = messages(resp).next().await.expect("initialize answer");
        assert!(init["result"]["protocolVersion"].is_string(), "{init}");
        let r = c
            .post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        assert_eq!(r.status(), 202);
        c
    }

    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// POSTs a body with the session header and both Accept types.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.post_with(body, &[]).await
    }

    pub async fn post_with(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("POST")
    }

    /// POSTs raw body bytes on this session with the given `Accept`.
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        accept: &str,
    ) -> reqwest::Response {
        self.http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", accept)
            .header(
                "mcp-session-id",
                self.session.as_deref().unwrap_or_default(),
            )
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs a body; returns (body text, HTTP status).
    pub async fn request_raw_status(&self, body: Value) -> (String, u16) {
        let r = self.post(&body).await;
        let status = r.status().as_u16();
        (r.text().await.unwrap_or_default(), status)
    }

    /// Sends a request and returns (interim messages, final response).
    pub async fn request(&mut self, method: &str, params: Value) -> (Vec<Value>, Value) {
        let id = self.next_id();
        self.request_with_id(json!(id), method, params).await
    }

    pub async fn request_with_id(
        &self,
        id: Value,
        method: &str,
        params: Value,
    ) -> (Vec<Value>, Value) {
        let resp = self
            .post(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await;
        assert_eq!(resp.status(), 200, "{method} status");
        let mut interim = Vec::new();
        let mut stream = messages(resp);
        while let Some(m) = stream.next().await {
            if m.get("id") == Some(&id) && (m.get("result").is_some() || m.get("error").is_some()) {
                return (interim, m);
            }
            interim.push(m);
        }
        panic!("stream ended without a response to {id}; got {interim:?}");
    }

    pub async fn call_tool(&mut self, name: &str, args: Value) -> Value {
        self.request("tools/call", json!({ "name": name, "arguments": args }))
            .await
            .1
    }

    /// `GET` with `Last-Event-ID`: resumes a stream of this session.
    pub async fn resume(&self, last_event_id: &str) -> reqwest::Response {
        self.http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header(
                "mcp-session-id",
                self.session.as_deref().unwrap_or_default(),
            )
            .header("last-event-id", last_event_id)
            .send()
            .await
            .expect("GET resume")
    }

    /// Opens the GET stream.
    pub async fn open_get_stream(&self) -> Messages {
        let resp = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.as_deref().unwrap_or(""))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200, "GET stream status");
        messages(resp)
    }

    pub async fn delete(&self) -> u16 {
        self.http
            .delete(&self.url)
            .header("mcp-session-id", self.session.as_deref().unwrap_or(""))
            .send()
            .await
            .expect("DELETE")
            .status()
            .as_u16()
    }
}

/// The JSON-RPC messages of a response: the JSON body, or each SSE event's
/// data (priming events with empty data are skipped).
pub fn messages(resp: reqwest::Response) -> Messages {
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        Box::pin(
            SseByteStream::new(resp.bytes_stream()).filter_map(|e| async move {
                let data = e.ok()?.data?;
                if data.is_empty() {
                    return None;
                }
                serde_json::from_str(&data).ok()
            }),
        )
    } else {
        Box::pin(futures_util::stream::once(async move {
            resp.json::<Value>().await.expect("JSON body")
        }))
    }
}

/// The text of a tools/call result's first content item.
pub fn text_of(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"))
}

/// A loopback TCP proxy that severs (resets) the first connection carrying a
/// `tools/call` as soon as the response's first SSE event id has passed.
/// Returns its address and a flag set once it has cut.
pub async fn severing_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let severed = Arc::new(AtomicBool::new(false));
    let flag = severed.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(target)
                .await
                .expect("connect gateway");
            let severed = flag.clone();
            tokio::spawn(async move {
                let (mut cbuf, mut sbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
                let mut armed = false;
                loop {
                    tokio::select! {
                        r = client.read(&mut cbuf) => {
                            let Ok(n @ 1..) = r else { break };
                            armed |= String::from_utf8_lossy(&cbuf[..n]).contains("tools/call");
                            if server.write_all(&cbuf[..n]).await.is_err() {
                                break;
                            }
                        }
                        r = server.read(&mut sbuf) => {
                            let Ok(n @ 1..) = r else { break };
                            if client.write_all(&sbuf[..n]).await.is_err() {
                                break;
                            }
                            let has_event_id = String::from_utf8_lossy(&sbuf[..n]).contains("id: ");
                            if armed && has_event_id && !severed.swap(true, Ordering::SeqCst) {
                                let _ = client.set_zero_linger();
                                break; // both sockets drop: the connection is cut
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, severed)
}

/// Client → gateway B → gateway A → demo, where `upstream_to(a_addr)` says
/// how B reaches A. Checks a call with progress, then restarts A on the same
/// port (A forgets B's session) and checks B recovers without the client
/// noticing.
pub async fn check_chain_survives_upstream_restart(
    upstream_to: impl Fn(SocketAddr) -> UpstreamConfig,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a_addr = listener.local_addr().expect("addr");
    let a = TestGateway::start_on(listener, demo_config());
    let mut config = Config::default();
    config.add_upstream("a", upstream_to(a_addr));
    let b = TestGateway::start(config).await;
    let mut c = McpClient::connect(&b.url).await;
    let call = json!({ "name": "progress", "arguments": { "steps": 2, "ms": 5 }, "_meta": { "progressToken": 5 } });
    let (interim, fin) = c.request("tools/call", call).await;
    assert_eq!(text_of(&fin), "done 2 steps");
    let progress = interim
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 2, "{interim:?}");

    a.stop().await;
    let listener = TcpListener::bind(a_addr).await.expect("rebind");
    let a2 = TestGateway::start_on(listener, demo_config());
    let r = c
        .call_tool("echo", json!({ "message": "after restart" }))
        .await;
    assert_eq!(text_of(&r), "after restart", "{r}");
    b.stop().await;
    a2.stop().await;
}
