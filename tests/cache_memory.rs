//! The stale cache is bounded by bytes, not only by entries: 150 read-only
//! calls with unique 1 MB arguments and results (each result cached) grow
//! the process by about `cache.max_bytes`, not by 150 MB plus the keys.
//! Measured as the process's RSS (VmRSS); this file holds one test so
//! nothing else runs beside it.

mod support;

use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config_with, rss_bytes};

const CACHE_MAX_BYTES: u64 = 8 * 1024 * 1024;
const MESSAGE_BYTES: usize = 1024 * 1024;

/// One `echo` call with a unique 1 MB message, answered as JSON (no SSE
/// stream is retained for it).
async fn echo_unique(c: &McpClient, n: usize) {
    let mut message = format!("{n:08}");
    message.push_str(&"m".repeat(MESSAGE_BYTES));
    let body = json!({ "jsonrpc": "2.0", "id": n, "method": "tools/call",
                       "params": { "name": "echo", "arguments": { "message": message } } });
    let r = c.post_raw(body.to_string(), "application/json").await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json answer");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text.len(), message.len(), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_large_results_grow_memory_only_to_the_cache_bound() {
    let gw = TestGateway::start(demo_config_with(|u| {
        u.cache.max_bytes = CACHE_MAX_BYTES;
        u.cache.max_result_bytes = 2 * MESSAGE_BYTES;
    }))
    .await;
    let c = McpClient::connect(&gw.url).await;
    // Warm up the allocator and connections: fill the cache once.
    for n in 0..20 {
        echo_unique(&c, n).await;
    }
    let before = rss_bytes();
    for n in 20..170 {
        echo_unique(&c, n).await;
    }
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "stale cache: 150 unique 1 MB results, RSS before {} MiB, after {} MiB, growth {} MiB (cache bound {} MiB)",
        before >> 20,
        after >> 20,
        growth >> 20,
        CACHE_MAX_BYTES >> 20
    );
    assert!(
        growth < CACHE_MAX_BYTES + 32 * 1024 * 1024,
        "RSS grew {} MiB with a {} MiB cache",
        growth >> 20,
        CACHE_MAX_BYTES >> 20
    );
    gw.stop().await;
}
