//! HTTP/2 has a header deadline too (issue 14 item 2): a raw h2c client
//! that leaves a header block unfinished (HEADERS without END_HEADERS, then
//! nothing) has its connection closed after `header_read_timeout`, whether
//! it is the connection's first request or a later one; a connection with
//! a stream open (an SSE GET) is not idle and stays.

mod support;

use std::time::Duration;

use support::{McpClient, TestGateway, demo_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(300);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: 9-byte header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK for `GET http://127.0.0.1/healthz`: static-table `:method GET`,
/// `:scheme http`, then `:path` and `:authority` as literals with indexed
/// names, without indexing.
fn healthz_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86];
    for (name_index, value) in [(4u8, "/healthz"), (1, "127.0.0.1")] {
        b.push(name_index);
        b.push(u8::try_from(value.len()).expect("short"));
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Reads until the server closes; returns the bytes and how long it took.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = tokio::time::Instant::now();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the connection is still open after 5 s");
    (got, start.elapsed())
}

async fn gateway() -> TestGateway {
    let mut config = demo_config();
    config.server.header_read_timeout = TIMEOUT;
    config.server.keepalive_interval = Duration::from_millis(100);
    TestGateway::start(config).await
}

#[tokio::test]
async fn an_unfinished_first_header_block_is_closed_after_the_header_timeout() {
    let gw = gateway().await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_STREAM, 1, &healthz_block()[..2]));
    s.write_all(&out).await.expect("send");
    let (_, took) = until_closed(&mut s).await;
    assert!(took >= TIMEOUT - Duration::from_millis(50), "{took:?}");
    gw.stop().await;
}

#[tokio::test]
async fn an_unfinished_header_block_after_a_request_is_closed_after_the_header_timeout() {
    let gw = gateway().await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &healthz_block(),
    ));
    s.write_all(&out).await.expect("send");
    // The answer to stream 1 (a HEADERS frame on stream 1) comes back first.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !answered_stream_1(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    // Then a second request whose header block never ends.
    s.write_all(&frame(HEADERS, END_STREAM, 3, &healthz_block()[..2]))
        .await
        .expect("send");
    let (_, took) = until_closed(&mut s).await;
    assert!(took >= TIMEOUT - Duration::from_millis(50), "{took:?}");
    gw.stop().await;
}

/// Whether `bytes` (server frames) hold a HEADERS frame on stream 1.
fn answered_stream_1(bytes: &[u8]) -> bool {
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
                & 0x7fff_ffff;
        if bytes[at + 3] == HEADERS && stream == 1 {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test]
async fn an_h2_connection_with_a_stream_open_is_not_idle() {
    let gw = gateway().await;
    let mut c = McpClient::connect(&gw.url).await;
    c.http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = c
        .http
        .get(&gw.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().expect("session"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let mut body = resp.bytes_stream();
    // Keep-alive comments keep coming long after the header timeout.
    let start = tokio::time::Instant::now();
    while start.elapsed() < TIMEOUT * 4 {
        let chunk = tokio::time::timeout(
            Duration::from_secs(2),
            futures_util::StreamExt::next(&mut body),
        )
        .await
        .expect("a keep-alive in time");
        assert!(matches!(chunk, Some(Ok(_))), "stream ended: {chunk:?}");
    }
    // And the same connection serves a call.
    let r = c
        .call_tool("echo", serde_json::json!({ "message": "still here" }))
        .await;
    assert_eq!(support::text_of(&r), "still here");
    gw.stop().await;
}

const RST_STREAM: u8 = 0x3;

/// A rapid-reset client (CVE-2023-44487 style: requests opened and reset
/// at once, over and over) is cut off by the HTTP/2 library, and that is
/// client misbehaviour: counted and logged at DEBUG, never a WARN line per
/// attacker connection.
#[tokio::test]
async fn a_rapid_reset_client_is_cut_off_without_a_warn() {
    let ballast = support::binary::Ballast::start_demo("").await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", ballast.port))
            .await
            .expect("connect");
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        for n in 0..200u32 {
            let id = 2 * n + 1;
            out.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &healthz_block(),
            ));
            out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        }
        s.write_all(&out).await.expect("send");
        let (got, _) = until_closed(&mut s).await;
        // The server said GOAWAY (frame type 7) before closing.
        assert!(
            got.windows(2).any(|w| w == [0x07, 0x00]),
            "no GOAWAY in {} bytes",
            got.len()
        );
    }
    let warns: Vec<String> = ballast
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert!(warns.is_empty(), "{warns:#?}");
    // Counted as client disconnects on /readyz.
    let (_, ready) = ballast.readyz().await;
    let counted: u64 = ready["counters"]
        .as_object()
        .map(|c| {
            c.iter()
                .filter(|(k, _)| k.starts_with("disconnects."))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert!(counted >= 3, "{ready}");
}
