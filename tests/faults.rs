//! Fault injection on real sockets: clients whose connections are cut at
//! random points — before the response headers, mid-event, between events —
//! reconnect with `Last-Event-ID`, and every response must arrive exactly
//! once, with nothing lost or duplicated. The gateway's log must show no
//! WARN or ERROR for any of it. Also: a slowloris client is cut off at the
//! header-read timeout.
//!
//! The run is seeded: set `BALLAST_FAULT_SEED` to replay one; the seed is
//! printed at the start and in every failure message.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use support::log_capture::captured;
use support::{McpClient, TestGateway, demo_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// At least this many connections are cut during the run.
const MIN_CUTS: usize = 500;
/// Calls running at once.
const CONCURRENCY: usize = 8;
/// Upper bound on calls, so the run always ends.
const MAX_CALLS: usize = 3000;

#[derive(Default)]
struct Tally {
    calls: usize,
    cuts: usize,
    lost: usize,
    duplicated: usize,
}

/// Sends raw request bytes on a fresh TCP connection and closes it at once:
/// a cut before any response header.
async fn send_and_vanish(addr: std::net::SocketAddr, request: String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    // SO_LINGER 0: the close is a reset, as when a client crashes.
    let _ = s.set_zero_linger();
    drop(s);
}

fn raw_post(addr: std::net::SocketAddr, session: &str, body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn raw_resume(addr: std::net::SocketAddr, session: &str, last_event_id: &str) -> String {
    format!(
        "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
         Mcp-Session-Id: {session}\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
    )
}

/// Reads a response body up to `cut_at` bytes (then drops the connection),
/// or to its end. Returns the complete events received and whether the
/// connection was cut.
async fn read_with_cut(
    resp: reqwest::Response,
    cut_at: Option<usize>,
) -> (Vec<sse_stream::Sse>, bool) {
    let mut body = resp.bytes_stream();
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let mut total = 0;
    let mut cut = false;
    while let Some(chunk) = body.next().await {
        let Ok(mut chunk) = chunk else { break };
        if let Some(limit) = cut_at
            && total + chunk.len() >= limit
        {
            chunk.truncate(limit - total);
            chunks.push(Ok(chunk));
            cut = true;
            break;
        }
        total += chunk.len();
        chunks.push(Ok(chunk));
    }
    drop(body); // closes the connection when cut
    let events = SseByteStream::new(futures_util::stream::iter(chunks))
        .filter_map(|e| async move { e.ok() })
        .collect()
        .await;
    (events, cut)
}

/// One logical call, driven through random cuts until its response arrives.
/// Returns (cuts, messages of the final attempt, whether it was a progress call).
async fn faulty_call(
    gw_addr: std::net::SocketAddr,
    c: &McpClient,
    rng: &mut StdRng,
    n: usize,
) -> (usize, Vec<Value>, bool) {
    let session = c.session.clone().expect("session");
    let mut cuts = 0;
    let mut received = Vec::new();
    // The request; a cut before the headers means the client never learned
    // the stream, so (like an SDK) it sends the request again with a new id.
    let mut attempt = 0;
    let (id, is_progress, mut last_event_id) = loop {
        attempt += 1;
        let id = format!("c{n}-{attempt}");
        let is_progress = rng.random_bool(0.5);
        let body = if is_progress {
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "progress", "arguments": { "steps": 3, "ms": 2 }, "_meta": { "progressToken": id } } })
        } else {
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "sleep", "arguments": { "ms": 5 } } })
        };
        if rng.random_bool(0.1) {
            send_and_vanish(gw_addr, raw_post(gw_addr, &session, &body.to_string())).await;
            cuts += 1;
            continue;
        }
        let resp = c.post(&body).await;
        assert_eq!(resp.status(), 200);
        let cut_at = rng.random_bool(0.7).then(|| rng.random_range(0..700));
        let (events, cut) = read_with_cut(resp, cut_at).await;
        cuts += usize::from(cut);
        let last = events.iter().filter_map(|e| e.id.clone()).next_back();
        received.extend(events.iter().filter_map(|e| {
            e.data
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::from_str::<Value>(d).expect("json"))
        }));
        match last {
            Some(last) if cut => break (id, is_progress, Some(last)),
            Some(_) => break (id, is_progress, None), // complete
            None if cut => {
                // Cut before the priming event: no position to resume from.
                continue;
            }
            None => panic!("stream without events"),
        }
    };
    // Resume until the stream has been read to its end.
    while let Some(from) = last_event_id.take() {
        if rng.random_bool(0.1) {
            send_and_vanish(gw_addr, raw_resume(gw_addr, &session, &from)).await;
            cuts += 1;
            last_event_id = Some(from);
            continue;
        }
        let resp = c
            .http
            .get(&c.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("last-event-id", &from)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200);
        let cut_at = rng.random_bool(0.5).then(|| rng.random_range(0..400));
        let (events, cut) = read_with_cut(resp, cut_at).await;
        cuts += usize::from(cut);
        received.extend(events.iter().filter_map(|e| {
            e.data
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::from_str::<Value>(d).expect("json"))
        }));
        let newest = events
            .iter()
            .filter_map(|e| e.id.clone())
            .next_back()
            .unwrap_or(from);
        if cut {
            last_event_id = Some(newest);
        }
    }
    let mine: Vec<Value> = received
        .into_iter()
        .filter(|m| m["id"] == json!(id) || m["params"]["progressToken"] == json!(id))
        .collect();
    (cuts, mine, is_progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_cuts_lose_and_duplicate_nothing() {
    let lines = captured();
    let seed: u64 = std::env::var("BALLAST_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("fault run seed: {seed} (BALLAST_FAULT_SEED={seed} replays it)");
    let gw = TestGateway::start(demo_config()).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let url = gw.url.clone();
        let addr = gw.addr;
        let tally = tally.clone();
        workers.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let c = McpClient::connect(&url).await;
            let mut n = 0;
            loop {
                {
                    let t = tally.lock().expect("tally");
                    if t.cuts >= MIN_CUTS || t.calls >= MAX_CALLS {
                        return;
                    }
                }
                n += 1;
                let (cuts, mine, is_progress) =
                    faulty_call(addr, &c, &mut rng, w * 100_000 + n).await;
                let finals = mine
                    .iter()
                    .filter(|m| m.get("result").is_some() || m.get("error").is_some())
                    .count();
                let progress: Vec<u64> = mine
                    .iter()
                    .filter_map(|m| m["params"]["progress"].as_u64())
                    .collect();
                let expected: &[u64] = if is_progress { &[1, 2, 3] } else { &[] };
                let mut t = tally.lock().expect("tally");
                t.calls += 1;
                t.cuts += cuts;
                let mut seen = progress.clone();
                seen.dedup();
                let lost = finals == 0 || expected.iter().any(|p| !progress.contains(p));
                let duplicated =
                    finals > 1 || seen.len() != progress.len() || progress.len() > expected.len();
                if lost || duplicated {
                    eprintln!("seed {seed}: call {n} of worker {w}: {mine:?}");
                }
                t.lost += usize::from(lost);
                t.duplicated += usize::from(duplicated);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (calls, cuts, lost, duplicated) = {
        let t = tally.lock().expect("tally");
        (t.calls, t.cuts, t.lost, t.duplicated)
    };
    eprintln!(
        "fault run: seed {seed}: {calls} calls, {cuts} cuts, {lost} lost, {duplicated} duplicated"
    );
    assert!(cuts >= MIN_CUTS, "seed {seed}: only {cuts} cuts");
    assert_eq!((lost, duplicated), (0, 0), "seed {seed}: lost/duplicated");
    let (_, r) = gw.readyz().await;
    eprintln!("counters after the run: {}", r["counters"]);
    gw.stop().await;
    let bad = lines.lock().expect("lines").clone();
    assert!(
        bad.is_empty(),
        "seed {seed}: WARN/ERROR lines during the fault run:\n{}",
        bad.join("")
    );
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_header_read_timeout() {
    let lines = captured();
    let mut config = demo_config();
    config.server.header_read_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    // Dribble one header line at a time; the server must hang up on us.
    let dribble = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), dribble).await;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_) | Err(_))),
        "connection still open"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, r) = gw.readyz().await;
        if r["counters"]["disconnects.header_timeout"]
            .as_u64()
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not counted: {r}");
        tokio::task::yield_now().await;
    }
    gw.stop().await;
    let bad: Vec<String> = lines
        .lock()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("header"))
        .cloned()
        .collect();
    assert!(bad.is_empty(), "slowloris logged above debug: {bad:?}");
}
