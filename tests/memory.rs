//! A consumer that never reads cannot make the gateway hold more than the
//! configured per-stream bound: the event log keeps at most
//! `stream_max_bytes` per stream, and a response reads the log only as
//! fast as its socket takes it. Measured as the process's RSS (VmRSS), with
//! a generous bound; this file holds one test so nothing else runs beside it.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::{McpClient, TestGateway, demo_config, rss_bytes};

/// Notifications sent, and bytes each: 128 MiB in all.
const COUNT: u64 = 2048;
const BYTES: u64 = 64 * 1024;
/// The per-stream bound under test.
const STREAM_MAX_BYTES: usize = 2 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_does_not_grow_memory_past_the_bound() {
    let mut config = demo_config();
    config.server.stream_max_bytes = STREAM_MAX_BYTES;
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    // Warm up allocator and connections with a small flood first.
    let (_, warm) = c
        .request("tools/call", json!({ "name": "flood", "arguments": { "count": 64, "bytes": BYTES }, "_meta": { "progressToken": 1 } }))
        .await;
    assert_eq!(warm["result"]["content"][0]["text"], "flooded 64");
    let before = rss_bytes();

    let call = json!({ "jsonrpc": "2.0", "id": "flood", "method": "tools/call",
                       "params": { "name": "flood", "arguments": { "count": COUNT, "bytes": BYTES }, "_meta": { "progressToken": 2 } } });
    let resp = c.post(&call).await; // ...and never read
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = gw.readyz().await;
        if r["calls_in_flight"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flood did not finish: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss_bytes();
    let sent = COUNT * BYTES;
    let growth = after.saturating_sub(before);
    eprintln!(
        "slow consumer: sent {} MiB, RSS before {} MiB, after {} MiB, growth {} MiB (bound {} MiB per stream)",
        sent >> 20,
        before >> 20,
        after >> 20,
        growth >> 20,
        STREAM_MAX_BYTES >> 20
    );
    assert!(
        growth < 48 * 1024 * 1024,
        "RSS grew {} MiB for {} MiB sent",
        growth >> 20,
        sent >> 20
    );

    // The stream is intact where it matters: reading it now yields the
    // retained tail and the response.
    let mut messages = support::messages(resp);
    let mut last = None;
    while let Some(m) = messages.next().await {
        last = Some(m);
    }
    let last = last.expect("messages");
    assert_eq!(last["id"], "flood");
    assert_eq!(
        last["result"]["content"][0]["text"],
        format!("flooded {COUNT}")
    );
    gw.stop().await;
}
