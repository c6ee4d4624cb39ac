//! Several replicas over one Redis: real `ballast` processes (each with its
//! own demo child) and a real `redis-server` on a free port. A session
//! opened on A is served on B; a stream cut on A is resumed on B; a replica
//! SIGKILLed mid-call loses nothing it answered, and its calls in flight
//! end as documented (re-run when safe, `outcome_unknown` otherwise); many
//! random cut-and-switch cycles lose and duplicate nothing; a Redis outage
//! falls back to memory and recovers.

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sse_stream::SseByteStream;
use support::redis::{RedisCluster, RedisServer};
use support::{BIN, McpClient, text_of};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One `ballast serve` process using `redis`.
struct Replica {
    port: u16,
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// A replica whose store is the Redis at `redis_url` (standalone or
    /// `redis+cluster://`).
    async fn start(redis_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("ballast.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nresume_window = \"60s\"\n\n\
                 [store]\nkind = \"redis\"\nurl = \"{}\"\ndeployment = \"replicas\"\n\n\
                 [store.breaker]\nconsecutive_failures = 2\nopen_duration = \"1s\"\n\n\
                 [upstreams.demo]\ncommand = {BIN:?}\nargs = [\"demo-upstream\"]\n",
                redis_url
            ),
        )
        .expect("write config");
        let mut child = Command::new(BIN)
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
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
        let replica = Self {
            port,
            url: format!("http://127.0.0.1:{port}/mcp"),
            child,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while replica.readyz().await.0 != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica never ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    async fn readyz(&self) -> (u16, Value) {
        match reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port)).await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(_) => (0, Value::Null),
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// SIGKILL, by PID.
    async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

/// SSE events of a response as (id, data).
fn events(resp: reqwest::Response) -> impl Stream<Item = (Option<String>, String)> + Unpin {
    Box::pin(
        SseByteStream::new(resp.bytes_stream())
            .filter_map(|e| async move { e.ok().map(|e| (e.id, e.data.unwrap_or_default())) }),
    )
}

fn client_on(url: &str, session: &McpClient) -> McpClient {
    let mut c = McpClient::new(url);
    c.session = session.session.clone();
    c
}

async fn resume(c: &McpClient, last_event_id: &str) -> reqwest::Response {
    c.resume(last_event_id).await
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": args } })
}

/// Reads a resumed stream to its end; returns the answers with `id`.
async fn answers_in(resp: reqwest::Response, id: u64) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let mut out = Vec::new();
    let mut ev = events(resp);
    while let Some((_, data)) = ev.next().await {
        if let Ok(m) = serde_json::from_str::<Value>(&data)
            && m["id"] == id
            && (m.get("result").is_some() || m.get("error").is_some())
        {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn a_session_initialized_on_a_is_served_and_resumed_on_b() {
    let redis = RedisServer::start().await;
    served_and_resumed_on_b(&redis.url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_session_initialized_on_a_is_served_and_resumed_on_b() {
    let cluster = RedisCluster::start(3).await;
    served_and_resumed_on_b(&cluster.url()).await;
}

async fn served_and_resumed_on_b(redis_url: &str) {
    let a = Replica::start(redis_url).await;
    let b = Replica::start(redis_url).await;
    let on_a = McpClient::connect(&a.url).await;
    let mut on_b = client_on(&b.url, &on_a);
    let r = on_b
        .call_tool("echo", json!({ "message": "served by B" }))
        .await;
    assert_eq!(text_of(&r), "served by B");

    // A 2 s call on A, its client cut after the first event, resumed on B.
    let resp = on_a.post(&call(7, "sleep", json!({ "ms": 2000 }))).await;
    let (priming, _) = events(resp).next().await.expect("priming");
    let answers = answers_in(resume(&on_b, &priming.expect("id")).await, 7).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(text_of(&answers[0]), "slept 2000 ms");
}

#[tokio::test]
async fn a_replica_killed_mid_call_loses_nothing_it_answered() {
    let redis = RedisServer::start().await;
    killed_mid_call(&redis.url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_replica_killed_mid_call_loses_nothing_it_answered() {
    let cluster = RedisCluster::start(3).await;
    killed_mid_call(&cluster.url()).await;
}

async fn killed_mid_call(redis_url: &str) {
    let mut a = Replica::start(redis_url).await;
    let b = Replica::start(redis_url).await;
    let on_a = McpClient::connect(&a.url).await;
    let on_b = client_on(&b.url, &on_a);

    // Answered on A before it dies: replayable from B.
    let resp = on_a
        .post(&call(1, "echo", json!({ "message": "done on A" })))
        .await;
    let mut ev = events(resp);
    let (first, _) = ev.next().await.expect("priming");
    while ev.next().await.is_some() {}
    // In flight on A when it dies: one safe to repeat, one not.
    let mut cut = Vec::new();
    for (id, tool) in [(2, "sleep"), (3, "sleep_write")] {
        let resp = on_a.post(&call(id, tool, json!({ "ms": 3000 }))).await;
        let (priming, _) = events(resp).next().await.expect("priming");
        cut.push((id, priming.expect("id")));
    }
    a.kill().await;

    let replayed = answers_in(resume(&on_b, &first.expect("id")).await, 1).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(text_of(&replayed[0]), "done on A");
    let (safe, unsafe_) = tokio::join!(
        async { answers_in(resume(&on_b, &cut[0].1).await, 2).await },
        async { answers_in(resume(&on_b, &cut[1].1).await, 3).await },
    );
    assert_eq!(safe.len(), 1, "{safe:?}");
    assert_eq!(text_of(&safe[0]), "slept 3000 ms", "re-run on B");
    assert_eq!(unsafe_.len(), 1, "{unsafe_:?}");
    assert_eq!(unsafe_[0]["error"]["code"], json!(-32001), "{unsafe_:?}");
    assert_eq!(unsafe_[0]["error"]["data"]["class"], "outcome_unknown");
    assert_eq!(unsafe_[0]["error"]["data"]["reason"], "replica_lost");
}

/// One call started on a random replica, cut after a random number of
/// events, resumed on a random replica; returns how many answers to it the
/// client saw in all (must be exactly 1).
async fn cut_and_switch(urls: &[String], session: &McpClient, id: u64, seed: u64) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = client_on(&urls[rng.random_range(0..urls.len())], session);
    let steps = rng.random_range(0..4u64);
    let resp = start
        .post(&call(id, "progress", json!({ "steps": steps, "ms": 10 })))
        .await;
    assert_eq!(resp.status(), 200);
    // priming + progress notifications + the answer
    let cut_after = rng.random_range(1..=steps + 2);
    let mut seen = 0;
    let mut answers = 0;
    let mut last = None;
    let mut ev = events(resp);
    while seen < cut_after {
        let Some((eid, data)) = ev.next().await else {
            break;
        };
        seen += 1;
        last = eid.or(last);
        if let Ok(m) = serde_json::from_str::<Value>(&data)
            && m["id"] == id
        {
            answers += 1;
        }
    }
    drop(ev);
    if answers > 0 && seen > steps + 1 {
        return answers;
    }
    let other = client_on(&urls[rng.random_range(0..urls.len())], session);
    answers
        + answers_in(resume(&other, &last.expect("an event id")).await, id)
            .await
            .len()
}

#[tokio::test]
async fn two_hundred_random_cut_and_switch_cycles_lose_and_duplicate_nothing() {
    let redis = RedisServer::start().await;
    cut_and_switch_cycles(&redis.url(), "one Redis").await;
}

#[tokio::test]
async fn on_a_redis_cluster_two_hundred_cut_and_switch_cycles_lose_and_duplicate_nothing() {
    let cluster = RedisCluster::start(3).await;
    cut_and_switch_cycles(&cluster.url(), "a 3-node Redis Cluster").await;
}

async fn cut_and_switch_cycles(redis_url: &str, store: &str) {
    const CYCLES: u64 = 200;
    let a = Replica::start(redis_url).await;
    let b = Replica::start(redis_url).await;
    let urls = Arc::new(vec![a.url.clone(), b.url.clone()]);
    let session = Arc::new(McpClient::connect(&a.url).await);
    let (lost, duplicated) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (urls, session, lost, duplicated, next) = (
                urls.clone(),
                session.clone(),
                lost.clone(),
                duplicated.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as u64;
                    if i >= CYCLES {
                        return;
                    }
                    match cut_and_switch(&urls, &session, 1000 + i, 0x0BA1_1A57 + i).await {
                        0 => lost.fetch_add(1, Ordering::SeqCst),
                        1 => 0,
                        _ => duplicated.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let (lost, duplicated) = (
        lost.load(Ordering::SeqCst),
        duplicated.load(Ordering::SeqCst),
    );
    println!(
        "{CYCLES} cut-and-switch cycles across 2 replicas on {store}: {lost} lost, {duplicated} duplicated"
    );
    for r in [&a, &b] {
        let (_, ready) = r.readyz().await;
        assert_eq!(ready["store"]["fallback"], false, "all in Redis: {ready}");
    }
    assert_eq!((lost, duplicated), (0, 0));
}

/// Calls on `c` (SSE), resuming on the same replica when a stream ends
/// without the answer, as an SDK client does; `Err` if no answer came.
async fn call_resuming(c: &McpClient, id: u64) -> Result<Value, String> {
    let resp = c
        .post(&call(id, "echo", json!({ "message": "load" })))
        .await;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let mut last = None;
    let mut ev = events(resp);
    for attempt in 0..20 {
        while let Some((eid, data)) = ev.next().await {
            last = eid.or(last);
            if let Ok(m) = serde_json::from_str::<Value>(&data)
                && m["id"] == id
            {
                return Ok(m);
            }
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        let Some(from) = &last else {
            return Err("no event id to resume from".into());
        };
        let resp = resume(c, from).await;
        if resp.status() != 200 {
            continue;
        }
        ev = events(resp);
    }
    Err(format!("no answer to {id}"))
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_memory_and_recovers() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    outage_under_load(&url, &mut redis, "redis outage").await;
}

/// One node of three lost: the streams whose slots it served cannot be
/// written, the breaker opens (the whole store falls back to memory, as
/// for a standalone Redis), and when the node is back (same node id and
/// slots) new streams go to it again.
#[tokio::test]
async fn a_redis_cluster_node_outage_falls_back_to_memory_and_recovers() {
    let mut cluster = RedisCluster::start(3).await;
    let url = cluster.url();
    outage_under_load(&url, &mut cluster.nodes[1], "redis cluster node outage").await;
}

/// Calls under load on a replica using `redis_url` while `killed` (the
/// Redis, or one node of the cluster) is SIGKILLed and restarted: no call
/// fails, the fallback is reported and cleared, and new streams are in
/// `killed` again afterwards.
async fn outage_under_load(redis_url: &str, killed: &mut RedisServer, what: &str) {
    let redis = killed;
    let a = Replica::start(redis_url).await;
    let c = Arc::new(McpClient::connect(&a.url).await);
    let (stop, failed, done) = (
        Arc::new(tokio_util::sync::CancellationToken::new()),
        Arc::new(std::sync::Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let load: Vec<_> = (0..4u64)
        .map(|w| {
            let (c, stop, failed, done) = (c.clone(), stop.clone(), failed.clone(), done.clone());
            tokio::spawn(async move {
                let mut id = w * 1_000_000;
                while !stop.is_cancelled() {
                    id += 1;
                    match call_resuming(&c, id).await {
                        Ok(m) if m.get("result").is_some() => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failed.lock().unwrap().push(format!("{id}: {other:?}")),
                    }
                }
            })
        })
        .collect();
    let wait_for = |want: bool| {
        let a = &a;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, r) = a.readyz().await;
                if r["store"]["fallback"] == want {
                    return r;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "store fallback never {want}: {r}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    while done.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill().await;
    let during = wait_for(true).await;
    assert_eq!(during["ready"], true, "still serving: {during}");
    let at_kill = done.load(Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < at_kill + 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        a.metrics()
            .await
            .contains(r#"ballast_store_fallback{store="redis"} 1"#),
        "fallback metric set"
    );
    // A new session during the outage works (memory).
    let mut fresh = McpClient::connect(&a.url).await;
    let r = fresh
        .call_tool("echo", json!({ "message": "during" }))
        .await;
    assert_eq!(text_of(&r), "during");

    redis.restart_serving().await;
    wait_for(false).await;
    let at_recovery = done.load(Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < at_recovery + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    for l in load {
        l.await.expect("load worker");
    }
    // New data goes to the restarted Redis again (streams: `m:` + `s:`,
    // or `o:` when answered at once).
    let keys = redis.command(&["KEYS", "ballast:replicas:[mo]:*"]).await;
    assert!(
        !keys.starts_with("*0"),
        "streams in redis after recovery: {keys}"
    );
    assert!(
        a.metrics()
            .await
            .contains(r#"ballast_store_fallback{store="redis"} 0"#),
        "fallback metric cleared"
    );
    let failed = failed.lock().unwrap().clone();
    println!(
        "{what} under load: {} calls answered, {} failed",
        done.load(Ordering::SeqCst),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
}

/// A safe call re-run on B after A died starts its progress from 1 again;
/// the client, which saw progress up to 6 from A, sees only higher values
/// (MCP: progress increases), then the answer.
#[tokio::test]
async fn progress_never_goes_back_after_a_takeover() {
    let redis = RedisServer::start().await;
    let mut a = Replica::start(&redis.url()).await;
    let b = Replica::start(&redis.url()).await;
    let on_a = McpClient::connect(&a.url).await;
    let on_b = client_on(&b.url, &on_a);
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": { "name": "progress", "arguments": { "steps": 20, "ms": 100 },
                                   "_meta": { "progressToken": "p" } } });
    let progress_of = |data: &str| {
        serde_json::from_str::<Value>(data)
            .ok()
            .filter(|m| m["method"] == "notifications/progress")
            .and_then(|m| m["params"]["progress"].as_f64())
    };
    let mut ev = events(on_a.post(&body).await);
    let mut last_id = None;
    while let Some((id, data)) = ev.next().await {
        last_id = id.or(last_id);
        if progress_of(&data) == Some(6.0) {
            break;
        }
    }
    a.kill().await;
    let resp = resume(&on_b, &last_id.expect("an event id")).await;
    assert_eq!(resp.status(), 200);
    let (mut after, mut answer) = (Vec::new(), None);
    let mut ev = events(resp);
    while let Some((_, data)) = ev.next().await {
        if let Some(p) = progress_of(&data) {
            after.push(p);
        } else if let Ok(m) = serde_json::from_str::<Value>(&data)
            && m["id"] == 9
        {
            answer = Some(m);
        }
    }
    assert!(
        after.iter().all(|p| *p > 6.0) && after.windows(2).all(|w| w[0] < w[1]),
        "progress after the takeover: {after:?}"
    );
    assert_eq!(text_of(&answer.expect("answer")), "done 20 steps");
}

/// FLUSHALL under a live call: its client still gets every progress
/// notification, in order with rising event ids, and its answer (before,
/// the stream was recreated at seq 0 and its events reused ids the client
/// had seen: they were skipped, and the answer with them).
#[tokio::test]
async fn a_live_stream_survives_redis_losing_its_keys() {
    let redis = RedisServer::start().await;
    let a = Replica::start(&redis.url()).await;
    let on_a = McpClient::connect(&a.url).await;
    let body = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/call",
                       "params": { "name": "progress", "arguments": { "steps": 6, "ms": 200 },
                                   "_meta": { "progressToken": "p" } } });
    let mut ev = events(on_a.post(&body).await);
    let (mut seqs, mut progress, mut answer) = (Vec::new(), Vec::new(), None);
    while let Some((id, data)) = ev.next().await {
        let seq: u64 = id
            .as_deref()
            .and_then(|i| i.rsplit(':').next()?.parse().ok())
            .expect("event id <stream>:<seq>");
        seqs.push(seq);
        let Ok(m) = serde_json::from_str::<Value>(&data) else {
            continue; // the priming event
        };
        if m["method"] == "notifications/progress" {
            progress.push(m["params"]["progress"].as_u64().unwrap_or(0));
            if progress.len() == 2 {
                redis.command(&["FLUSHALL"]).await;
            }
        } else if m["id"] == 5 {
            answer = Some(m);
        }
    }
    assert_eq!(progress, vec![1, 2, 3, 4, 5, 6], "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(text_of(&answer.expect("the answer")), "done 6 steps");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("ballast_store_keys_lost_total 1"),
        "{metrics}"
    );
}

/// Redis loses every key (FLUSHALL; a restart without persistence alike):
/// the sessions a replica still holds are written back, so another
/// replica serves them again instead of answering 404 for good.
#[tokio::test]
async fn sessions_a_replica_holds_are_written_back_after_redis_loses_them() {
    let redis = RedisServer::start().await;
    let a = Replica::start(&redis.url()).await;
    let b = Replica::start(&redis.url()).await;
    let on_a = McpClient::connect(&a.url).await;
    let on_b = client_on(&b.url, &on_a);
    redis.command(&["FLUSHALL"]).await;
    // A's heartbeat (every second) finds its canary gone and writes back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 100;
    loop {
        n += 1;
        let status = on_b
            .post(&call(n, "echo", json!({ "message": "back" })))
            .await
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 404);
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never found the session again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session ended on B (DELETE) ends on A too: A answers 404 instead of
/// serving it on.
#[tokio::test]
async fn a_session_deleted_on_one_replica_ends_on_every_replica() {
    let redis = RedisServer::start().await;
    let a = Replica::start(&redis.url()).await;
    let b = Replica::start(&redis.url()).await;
    let mut on_a = McpClient::connect(&a.url).await;
    let on_b = client_on(&b.url, &on_a);
    let r = on_a.call_tool("echo", json!({ "message": "on A" })).await;
    assert_eq!(text_of(&r), "on A");
    assert_eq!(on_b.delete().await, 200);
    // Pub/sub carries the end to A: at once, give or take a round trip.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut n = 100;
    loop {
        n += 1;
        let status = on_a
            .post(&call(n, "echo", json!({ "message": "x" })))
            .await
            .status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "A still serves the deleted session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["sessions"], 0, "{ready}");
}

/// With a Redis store, sessions whose client opened a GET stream and left
/// end after their idle timeout, and their streams go with them: nothing
/// stays on the replica or in Redis past the documented TTLs.
#[tokio::test]
async fn abandoned_get_streams_end_with_their_sessions() {
    let redis = RedisServer::start().await;
    let mut config = support::demo_config();
    config.store.kind = ballast::config::StoreKind::Redis;
    config.store.url = redis.url();
    config.store.deployment = "abandoned".into();
    config.server.session_idle_timeout = Duration::from_millis(500);
    config.server.resume_window = Duration::from_secs(1);
    let stores = ballast::store::Stores::from_config(&config).expect("stores");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = support::TestGateway::start_with_stores(listener, config, stores);
    for _ in 0..20 {
        let c = McpClient::connect(&gw.url).await;
        let mut get = c.open_get_stream().await;
        // Read nothing more: the GET stream is open, then its client leaves.
        let _ = tokio::time::timeout(Duration::from_millis(50), get.next()).await;
    }
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, ready) = gw.readyz().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("ballast:abandoned:[ms]:*")
            .query_async(&mut conn)
            .await
            .expect("keys");
        if ready["sessions"] == 0 && ready["streams"] == 0 && keys.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {ready} and {} stream keys",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}
