//! Connections a client opens and never finishes (issue 13 item 7): a body
//! that never completes gets 408 after `body_read_timeout` and its
//! connection closes; a connection that never sends a request closes after
//! `header_read_timeout`; and a flood of such connections beyond
//! `max_connections`, against the real binary with few descriptors, does
//! not lock a normal client out.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{BIN, TestGateway, demo_config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

/// Headers of a POST whose body is announced as `INIT` but sent only in
/// part (the first 10 bytes).
fn slow_post(port: u16) -> Vec<u8> {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
        INIT.len()
    )
    .into_bytes();
    req.extend_from_slice(&INIT.as_bytes()[..10]);
    req
}

/// Reads a whole HTTP/1 response until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut buf))
        .await
        .expect("the server closed the connection in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_and_the_connection_closes() {
    let mut config = demo_config();
    config.server.body_read_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&slow_post(gw.addr.port())).await.expect("send");
    let start = tokio::time::Instant::now();
    let resp = read_to_close(&mut s, Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    let body: Value = serde_json::from_str(&resp[resp.find("\r\n\r\n").expect("head") + 4..])
        .expect("a JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    eprintln!("slow body: 408 and closed after {elapsed:?}");
    gw.stop().await;
}

#[tokio::test]
async fn an_h2c_body_that_never_finishes_gets_408() {
    let mut config = demo_config();
    config.server.body_read_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let first = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&INIT.as_bytes()[..10]))
    });
    let body = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        http.post(&gw.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    )
    .await
    .expect("an answer in time")
    .expect("response");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 408);
    let body: Value = resp.json().await.expect("JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let mut config = demo_config();
    config.server.header_read_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    // Nothing at all (the HTTP/1-or-2 sniffing stage), and an HTTP/2
    // preface with no request after it.
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    let mut preface = TcpStream::connect(gw.addr).await.expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    for s in [&mut silent, &mut preface] {
        read_to_close(s, Duration::from_secs(5)).await;
    }
    gw.stop().await;
}

/// Spawns the real binary under `ulimit -n {nofile}` with `server` settings
/// added; returns the child and its port once it listens.
async fn spawn_binary(
    nofile: u32,
    server: &str,
    dir: &std::path::Path,
) -> (tokio::process::Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = dir.join("ballast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n\n\
             [upstreams.demo]\ncommand = {BIN:?}\nargs = [\"demo-upstream\"]\n"
        ),
    )
    .expect("write config");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ballast");
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    while let Some(line) = log.next_line().await.expect("log") {
        if line.contains("ballast listening") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (child, port)
}

/// One `initialize` on a fresh connection; `None` if the connection was
/// closed, refused or gave no answer within `within`.
async fn initialize_once(port: u16, within: Duration) -> Option<u16> {
    let http = reqwest::Client::builder()
        .timeout(within)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let r = http
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

/// Slow-body connections the flood opens: more than the descriptors the
/// process may hold.
const FLOOD: usize = 100;

#[tokio::test]
async fn slow_bodies_beyond_the_connection_cap_do_not_lock_out_a_normal_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port) = spawn_binary(
        64,
        "max_connections = 16\nbody_read_timeout = \"300ms\"",
        dir.path(),
    )
    .await;
    assert_eq!(
        initialize_once(port, Duration::from_secs(5)).await,
        Some(200)
    );
    // FLOOD connections, each with its headers and part of a body, held open.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect (the kernel's backlog takes it)");
        let _ = s.write_all(&slow_post(port)).await;
        flood.push(s);
    }
    // A normal client, retrying when its connection is refused, is served
    // long before the flood's connections would give up.
    let start = tokio::time::Instant::now();
    let mut attempts = 0;
    let served = loop {
        attempts += 1;
        if let Some(status) = initialize_once(port, Duration::from_secs(2)).await {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "no answer within {:?} ({attempts} attempts)",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = start.elapsed();
    eprintln!(
        "{FLOOD} slow bodies, 64 descriptors: normal client served after {elapsed:?} ({attempts} attempts)"
    );
    assert_eq!(served, 200);
    // The flood's connections were all closed (408 or refused).
    for mut s in flood {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "a flood connection is still open");
    }
    child.kill().await.expect("kill");
}
