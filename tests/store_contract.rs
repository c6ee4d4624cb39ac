//! The store contracts (`EventLog`, `SessionStore`), run as the same test
//! functions against the memory implementations and the Redis ones (a real
//! `redis-server` per test, on a free port) — plus what only a shared store
//! can do: a second replica's store sees the first one's data, and a reader
//! on one is woken by an append on the other.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ballast::config::StoreConfig;
use ballast::store::redis::{REPLICA_TTL, RedisBackend, RedisEventLog, RedisSessionStore};
use ballast::store::{
    EventLog, FallbackEventLog, MemoryEventLog, MemorySessionStore, SessionRecord, SessionStore,
    StoreError, StreamLimits,
};
use bytes::Bytes;
use support::redis::{RedisCluster, RedisServer};

const LIMITS: StreamLimits = StreamLimits {
    max_events: 4,
    max_bytes: 1024,
    total_max_bytes: 1 << 30,
    delivered_ttl: Duration::from_millis(100),
};
const WINDOW: Duration = Duration::from_millis(300);

fn store_config(url: &str, deployment: &str) -> StoreConfig {
    StoreConfig {
        kind: ballast::config::StoreKind::Redis,
        url: url.into(),
        deployment: deployment.into(),
        ..StoreConfig::default()
    }
}

/// `SET <k> v PX 60000`, as [`RedisBackend::run_each`] takes it.
fn set_v(k: &str) -> (String, redis::Cmd) {
    let mut set = redis::cmd("SET");
    set.arg(k).arg("v").arg("PX").arg(60_000);
    (k.to_owned(), set)
}

/// One batch: `SET <k> v` for each of `keys`.
async fn set_all(backend: &RedisBackend, keys: &[String]) -> Vec<Result<(), StoreError>> {
    backend
        .run_each(keys.iter().map(|k| set_v(k)).collect())
        .await
}

/// 30 keys whose hash tags spread them over every node of a 3-node
/// cluster.
fn spread_keys() -> Vec<String> {
    (0..30)
        .map(|i| format!("ballast:contract:x:{{k{i}}}"))
        .collect()
}

fn redis_log(url: &str) -> Arc<dyn EventLog> {
    let backend = RedisBackend::new(&store_config(url, "contract")).expect("backend");
    Arc::new(RedisEventLog::new(backend, LIMITS, WINDOW))
}

/// The event log a replica runs with a Redis store: Redis with a memory
/// mirror and fallback.
fn replica_log(url: &str) -> Arc<dyn EventLog> {
    replica_log_with(url, WINDOW)
}

fn replica_log_with(url: &str, resume_window: Duration) -> Arc<dyn EventLog> {
    let backend = RedisBackend::new(&store_config(url, "contract")).expect("backend");
    let redis_log = RedisEventLog::new(backend, LIMITS, resume_window);
    Arc::new(FallbackEventLog::new(
        redis_log,
        MemoryEventLog::new(LIMITS),
    ))
}

fn redis_sessions(url: &str, idle: Duration) -> Arc<dyn SessionStore> {
    let backend = RedisBackend::new(&store_config(url, "contract")).expect("backend");
    Arc::new(RedisSessionStore::new(backend, idle))
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// Append, read from a position, finish, owner, unknown streams.
async fn events_round_trip(log: Arc<dyn EventLog>) {
    log.open("s1", "sess").await.expect("open");
    assert_eq!(
        log.owner("s1").await.expect("owner").as_deref(),
        Some("sess")
    );
    assert_eq!(log.owner("nope").await.expect("owner"), None);
    for (i, m) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(log.append("s1", b(m)).await.expect("append"), i as u64 + 1);
    }
    let all = log.read("s1", 0, Duration::ZERO).await.expect("read");
    assert_eq!(all.events, vec![(1, b("a")), (2, b("b")), (3, b("c"))]);
    assert!(!all.finished);
    let tail = log.read("s1", 2, Duration::ZERO).await.expect("read");
    assert_eq!(tail.events, vec![(3, b("c"))]);
    log.finish("s1").await.expect("finish");
    let done = log
        .read("s1", 3, Duration::from_secs(5))
        .await
        .expect("read");
    assert!(done.events.is_empty() && done.finished, "{done:?}");
    assert!(matches!(
        log.append("nope", b("x")).await,
        Err(StoreError::UnknownStream)
    ));
    assert!(matches!(
        log.read("nope", 0, Duration::ZERO).await,
        Err(StoreError::UnknownStream)
    ));
}

/// A reader waiting on `reader_log` is woken by an append on `writer_log`
/// (the same store, or another replica's view of it) well before its wait
/// ends.
async fn waiting_reader_is_woken(writer_log: Arc<dyn EventLog>, reader_log: Arc<dyn EventLog>) {
    writer_log.open("w1", "sess").await.expect("open");
    let reader = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let batch = reader_log
            .read("w1", 0, Duration::from_secs(30))
            .await
            .expect("read");
        (batch, started.elapsed())
    });
    // Let the reader start waiting (no signal to wait on from outside).
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer_log.append("w1", b("hello")).await.expect("append");
    let (batch, waited) = reader.await.expect("reader");
    assert_eq!(batch.events, vec![(1, b("hello"))]);
    assert!(
        waited < Duration::from_secs(10),
        "woken, not timed out: {waited:?}"
    );
}

/// Past either limit the oldest events go; the newest stays.
async fn streams_are_bounded(log: Arc<dyn EventLog>) {
    log.open("big", "sess").await.expect("open");
    for i in 1..=6 {
        log.append("big", b(&format!("e{i}")))
            .await
            .expect("append");
    }
    let seqs: Vec<u64> = log
        .read("big", 0, Duration::ZERO)
        .await
        .expect("read")
        .events
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(seqs, vec![3, 4, 5, 6], "max_events = 4");
    // One event bigger than max_bytes: everything older goes, it stays.
    let huge = "x".repeat(2000);
    log.append("big", b(&huge)).await.expect("append");
    let kept = log.read("big", 0, Duration::ZERO).await.expect("read");
    assert_eq!(kept.events.len(), 1);
    assert_eq!(kept.events[0].0, 7);
}

/// A finished stream stays readable for the resume window, then is gone.
async fn finished_streams_expire(log: Arc<dyn EventLog>) {
    log.open("old", "sess").await.expect("open");
    log.append("old", b("x")).await.expect("append");
    log.finish("old").await.expect("finish");
    assert!(log.read("old", 0, Duration::ZERO).await.is_ok());
    tokio::time::sleep(WINDOW + Duration::from_millis(200)).await;
    log.expire(WINDOW, &[]).await;
    assert!(matches!(
        log.read("old", 0, Duration::ZERO).await,
        Err(StoreError::UnknownStream)
    ));
}

fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        protocol_version: "2025-11-25".into(),
        initialize_params: Some(
            serde_json::value::RawValue::from_string(r#"{"capabilities":{"sampling":{}}}"#.into())
                .expect("raw")
                .into(),
        ),
        created_ms: 1,
    }
}

/// Save on one view, load on another (the same store or another replica's
/// view of it), remove.
async fn sessions_round_trip(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    a.save(record("r1")).await.expect("save");
    let loaded = b.load("r1").await.expect("load").expect("found");
    assert_eq!(loaded.protocol_version, "2025-11-25");
    assert_eq!(
        loaded.initialize_params.expect("params").get(),
        r#"{"capabilities":{"sampling":{}}}"#
    );
    a.touch(&["r1".into()]).await.expect("touch");
    b.remove("r1").await.expect("remove");
    assert!(a.load("r1").await.expect("load").is_none());
}

#[tokio::test]
async fn memory_event_log_keeps_the_contract() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryEventLog::new(LIMITS));
    events_round_trip(log.clone()).await;
    waiting_reader_is_woken(log.clone(), log.clone()).await;
    streams_are_bounded(log.clone()).await;
    finished_streams_expire(log).await;
}

#[tokio::test]
async fn redis_event_log_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let log = redis_log(&redis.url());
    events_round_trip(log.clone()).await;
    waiting_reader_is_woken(log.clone(), log.clone()).await;
    streams_are_bounded(log.clone()).await;
    finished_streams_expire(log).await;
}

#[tokio::test]
async fn a_reader_on_one_replica_follows_appends_made_on_another() {
    let redis = RedisServer::start().await;
    waiting_reader_is_woken(redis_log(&redis.url()), redis_log(&redis.url())).await;
}

/// The wake-up across replicas is Redis pub/sub, not the reader's periodic
/// re-check: with that re-check and the read's own wait both an hour long,
/// a reader on another replica still gets an event appended after it began
/// waiting.
#[tokio::test]
async fn a_reader_on_another_replica_is_woken_by_pub_sub() {
    let redis = RedisServer::start().await;
    woken_by_pub_sub(&redis.url(), &redis, &redis, "ps").await;
}

/// [`a_reader_on_another_replica_is_woken_by_pub_sub`] on `url`, where
/// replicas subscribe on `subscriptions` and `stream`'s keys are on `data`.
async fn woken_by_pub_sub(
    url: &str,
    subscriptions: &RedisServer,
    data: &RedisServer,
    stream: &'static str,
) {
    const HOUR: Duration = Duration::from_secs(3600);
    let writer = redis_log(url);
    let backend = RedisBackend::new(&store_config(url, "contract")).expect("backend");
    let reader_log = RedisEventLog::new(backend, LIMITS, WINDOW).with_poll(HOUR);
    writer.open(stream, "sess").await.expect("open");
    // Let the reader's pub/sub subscription come up first.
    let mut subscribed = false;
    for _ in 0..200 {
        let clients = subscriptions.command(&["CLIENT", "LIST"]).await;
        if clients.matches(" psub=1 ").count() == 2 {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        subscribed,
        "both replicas subscribe to their stream channels"
    );
    let xranges = || async {
        let stats = data.command(&["INFO", "commandstats"]).await;
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_xrange:calls="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = xranges().await;
    let reader = tokio::spawn(async move { reader_log.read(stream, 0, HOUR).await });
    // The reader has looked once and found nothing: it is waiting now.
    while xranges().await == before {
        tokio::task::yield_now().await;
    }
    writer.append(stream, b("hello")).await.expect("append");
    let batch = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reader was never woken")
        .expect("join")
        .expect("read");
    assert_eq!(batch.events, vec![(1, b("hello"))]);
}

/// An unfinished stream whose writer is alive is not claimed; once the
/// writer's liveness key is gone (its process died), one replica claims it
/// and gets its request and last seq; of two replicas claiming at the same
/// moment exactly one wins; a claim after that finds nothing.
async fn orphans_are_claimed_once_their_writer_is_gone(url: &str) {
    const RACED: usize = 6;
    let writer = redis_log(url);
    for i in 0..=RACED {
        let stream = format!("orphan{i}");
        writer
            .open_for_request(&stream, "sess", b(r#"{"id":9}"#))
            .await
            .expect("open");
        writer.append(&stream, b("progress")).await.expect("append");
    }
    let (a, b2) = (redis_log(url), redis_log(url));
    assert!(a.claim_orphan("orphan0").await.expect("claim").is_none());
    drop(writer); // its heartbeat stops; the liveness key expires
    let deadline = tokio::time::Instant::now() + REPLICA_TTL * 4;
    let orphan = loop {
        if let Some(o) = a.claim_orphan("orphan0").await.expect("claim") {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(orphan.request, Some(b(r#"{"id":9}"#)));
    assert_eq!(orphan.last_seq, 1);
    assert!(
        b2.claim_orphan("orphan0").await.expect("claim").is_none(),
        "claimed once: its new writer is alive"
    );
    a.append_last("orphan0", b("answer")).await.expect("answer");
    let all = b2.read("orphan0", 0, Duration::ZERO).await.expect("read");
    assert_eq!(all.events, vec![(1, b("progress")), (2, b("answer"))]);
    assert!(all.finished);
    // Both see the dead writer; the compare-and-set lets one through.
    for i in 1..=RACED {
        let stream = format!("orphan{i}");
        let (x, y) = tokio::join!(a.claim_orphan(&stream), b2.claim_orphan(&stream));
        let winners = [x.expect("claim"), y.expect("claim")]
            .iter()
            .filter(|o| o.is_some())
            .count();
        assert_eq!(winners, 1, "{stream}: exactly one claimer wins");
    }
}

#[tokio::test]
async fn redis_orphans_are_claimed_once_their_writer_is_gone() {
    let redis = RedisServer::start().await;
    orphans_are_claimed_once_their_writer_is_gone(&redis.url()).await;
}

/// The same contract functions on a real three-node Redis Cluster, named by
/// a `redis+cluster://` URL: events, a reader on another replica, bounds,
/// expiry, orphans, session records.
#[tokio::test]
async fn redis_cluster_keeps_the_contract() {
    let cluster = RedisCluster::start(3).await;
    let url = cluster.url();
    let log = redis_log(&url);
    events_round_trip(log.clone()).await;
    waiting_reader_is_woken(log.clone(), redis_log(&url)).await;
    streams_are_bounded(log.clone()).await;
    finished_streams_expire(log).await;
    orphans_are_claimed_once_their_writer_is_gone(&url).await;
    let idle = Duration::from_secs(60);
    sessions_round_trip(redis_sessions(&url, idle), redis_sessions(&url, idle)).await;
}

/// On a Redis Cluster the replicas subscribe on the first node, and a
/// stream whose keys are on another node still wakes its reader at once
/// (classic `PUBLISH` reaches every node): the same hour-long test.
#[tokio::test]
async fn on_a_redis_cluster_pub_sub_wakes_readers_of_streams_on_other_nodes() {
    let cluster = RedisCluster::start(3).await;
    let mut stream = None;
    for name in ["ps0", "ps1", "ps2", "ps3", "ps4", "ps5", "ps6", "ps7"] {
        if cluster
            .node_of(&format!("ballast:contract:s:{{{name}}}"))
            .await
            != 0
        {
            stream = Some(name);
            break;
        }
    }
    let stream = stream.expect("a stream on another node");
    let node = cluster
        .node_of(&format!("ballast:contract:s:{{{stream}}}"))
        .await;
    woken_by_pub_sub(
        &cluster.url(),
        &cluster.nodes[0],
        &cluster.nodes[node],
        stream,
    )
    .await;
}

/// The first node listed is down when the replicas start: they connect
/// through the other seed nodes, subscribe on the next one, and a reader
/// of a stream on a live node is still woken by pub/sub.
#[tokio::test]
async fn on_a_redis_cluster_with_its_first_node_down_replicas_subscribe_on_the_next() {
    let mut cluster = RedisCluster::start(3).await;
    let mut stream = None;
    for name in [
        "pd0", "pd1", "pd2", "pd3", "pd4", "pd5", "pd6", "pd7", "pd8", "pd9",
    ] {
        if cluster
            .node_of(&format!("ballast:contract:s:{{{name}}}"))
            .await
            == 2
        {
            stream = Some(name);
            break;
        }
    }
    let stream = stream.expect("a stream on node 2");
    cluster.nodes[0].kill().await;
    woken_by_pub_sub(&cluster.url(), &cluster.nodes[1], &cluster.nodes[2], stream).await;
}

/// Writes that span hash slots (here keys on all three nodes, in one call)
/// are split into one pipeline per slot, and every one lands on the node
/// serving it.
#[tokio::test]
async fn on_a_redis_cluster_one_write_spanning_slots_lands_on_every_node() {
    let cluster = RedisCluster::start(3).await;
    let backend = RedisBackend::new(&store_config(&cluster.url(), "contract")).expect("backend");
    let keys = spread_keys();
    let cmds = keys.iter().map(|k| set_v(k)).collect();
    let results = backend.run_each(cmds).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut nodes = std::collections::BTreeSet::new();
    for k in &keys {
        nodes.insert(cluster.node_of(k).await);
        let got = cluster.command_for(k, &["GET", k]).await;
        assert!(got.contains("\r\nv\r\n"), "{k}: {got}");
    }
    assert_eq!(nodes.len(), 3, "the keys span all three nodes");
    assert!(!ballast::store::on_fallback(&backend));
}

/// A batch spanning slots goes as one pipeline per node, grouped by the
/// slot map the replica read. When a slot moves to another node under that
/// map (resharding), the batch grouped by it fails for the keys of the node
/// that lost the slot — all of them, since they shared its pipeline; those
/// writes would go to memory — and the next batch, grouped by the map read
/// again, lands on every node, the moved key on its new owner.
#[tokio::test]
async fn on_a_redis_cluster_a_slot_moved_under_the_slot_map_fails_one_batch_then_lands() {
    let cluster = RedisCluster::start(3).await;
    let backend = RedisBackend::new(&store_config(&cluster.url(), "contract")).expect("backend");
    let keys = spread_keys();
    let first = set_all(&backend, &keys).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");

    // A key in a slot no other key uses, moved from its node to the next.
    let mut key_slots = Vec::new();
    for k in &keys {
        key_slots.push(cluster.slot(k).await);
    }
    let mut moved = String::new();
    for j in 0.. {
        moved = format!("ballast:contract:x:{{moved{j}}}");
        if !key_slots.contains(&cluster.slot(&moved).await) {
            break;
        }
    }
    let slot = cluster.slot(&moved).await.to_string();
    let from = cluster.node_of(&moved).await;
    let to = (from + 1) % 3;
    let to_id = cluster.nodes[to].command(&["CLUSTER", "MYID"]).await;
    let to_id = to_id.lines().nth(1).expect("MYID").to_owned();
    for node in [to, from, (to + 1) % 3] {
        let ok = cluster.nodes[node]
            .command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
            .await;
        assert!(ok.starts_with("+OK"), "SETSLOT: {ok}");
    }

    let mut batch: Vec<String> = keys.clone();
    batch.push(moved.clone());
    let stale = backend
        .run_each(batch.iter().map(|k| set_v(k)).collect())
        .await;
    let mut expected_failed = Vec::new();
    for (i, k) in batch.iter().enumerate() {
        if i + 1 == batch.len() || cluster.node_of(k).await == from {
            expected_failed.push(i);
        }
    }
    let failed: Vec<usize> = (0..batch.len()).filter(|&i| stale[i].is_err()).collect();
    assert_eq!(failed, expected_failed, "the old owner's whole pipeline");
    assert!(failed.len() > 1, "keys of one node share one pipeline");

    let again = backend
        .run_each(batch.iter().map(|k| set_v(k)).collect())
        .await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    let got = cluster.nodes[to].command(&["GET", &moved]).await;
    assert!(got.contains("\r\nv\r\n"), "{moved} on its new owner: {got}");
    assert!(!ballast::store::on_fallback(&backend));
}

/// Answers to many calls at once go out as group-committed batches that
/// span hash slots on every node: each is in the cluster (read by another
/// replica, which has no copy of its own), its key on the node serving its
/// slot; their delivered TTL cuts and a touch of many sessions (both
/// batched across slots) land too.
#[tokio::test]
async fn on_a_redis_cluster_batches_spanning_slots_reach_every_node() {
    let cluster = RedisCluster::start(3).await;
    let url = cluster.url();
    let writer = replica_log_with(&url, Duration::from_secs(60));
    let other = redis_log(&url);
    let streams: Vec<String> = (0..60).map(|i| format!("q{i}")).collect();
    let answered = streams.iter().map(|stream| {
        let writer = writer.clone();
        async move {
            writer
                .open_for_request(stream, "sess", b("{}"))
                .await
                .expect("open");
            writer
                .append_last(stream, b("answer"))
                .await
                .expect("answer");
            writer
                .read(stream, 0, Duration::from_secs(10))
                .await
                .expect("read")
        }
    });
    for seen in futures_util::future::join_all(answered).await {
        assert_eq!(seen.events, vec![(1, b("answer"))]);
    }
    let mut nodes = std::collections::BTreeSet::new();
    for stream in &streams {
        let all = other.read(stream, 0, Duration::ZERO).await.expect("read");
        assert_eq!(all.events, vec![(1, b("answer"))], "{stream}");
        let key = format!("ballast:contract:o:{{{stream}}}");
        nodes.insert(cluster.node_of(&key).await);
        let exists = cluster.command_for(&key, &["EXISTS", &key]).await;
        assert_eq!(exists.trim(), ":1", "{key} on the node serving its slot");
    }
    assert_eq!(nodes.len(), 3, "the streams span all three nodes");

    for stream in &streams {
        writer.delivered(stream);
    }
    let limit = i64::try_from(LIMITS.delivered_ttl.as_millis()).expect("ms");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for stream in &streams {
        let key = format!("ballast:contract:o:{{{stream}}}");
        loop {
            let ttl = cluster.command_for(&key, &["PTTL", &key]).await;
            let ms: i64 = ttl.trim().trim_start_matches(':').parse().expect("PTTL");
            if ms <= limit {
                break; // cut (or already expired: -2)
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} not cut: {ms}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let sessions = redis_sessions(&url, Duration::from_secs(600));
    let ids: Vec<Arc<str>> = (0..30).map(|i| Arc::from(format!("t{i}"))).collect();
    for id in &ids {
        sessions.save(record(id)).await.expect("save");
    }
    let short = redis_sessions(&url, Duration::from_secs(5));
    short.touch(&ids).await.expect("touch across slots");
    for id in &ids {
        let key = format!("ballast:contract:session:{id}");
        let ttl = cluster.command_for(&key, &["PTTL", &key]).await;
        let ms: i64 = ttl.trim().trim_start_matches(':').parse().expect("PTTL");
        assert!(ms > 0 && ms <= 5000, "{key} touched to the 5 s TTL: {ms}");
    }
}

#[tokio::test]
async fn memory_session_store_keeps_the_contract() {
    let s: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::default());
    sessions_round_trip(s.clone(), s).await;
}

#[tokio::test]
async fn redis_session_store_keeps_the_contract_across_replicas() {
    let redis = RedisServer::start().await;
    let idle = Duration::from_secs(60);
    sessions_round_trip(
        redis_sessions(&redis.url(), idle),
        redis_sessions(&redis.url(), idle),
    )
    .await;
}

#[tokio::test]
async fn redis_keys_are_namespaced_and_all_have_ttls() {
    let redis = RedisServer::start().await;
    let log = redis_log(&redis.url());
    let sessions = redis_sessions(&redis.url(), Duration::from_secs(60));
    log.open("ns", "sess").await.expect("open");
    log.append("ns", b("x")).await.expect("append");
    sessions.save(record("ns-session")).await.expect("save");
    let quick = replica_log(&redis.url());
    quick
        .open_for_request("ns-quick", "sess", b("{}"))
        .await
        .expect("open");
    quick.append_last("ns-quick", b("x")).await.expect("answer");
    // Readers see it once Redis has it.
    let read = quick.read("ns-quick", 0, Duration::from_secs(10)).await;
    assert_eq!(read.expect("read").events.len(), 1);
    let keys = redis.command(&["KEYS", "*"]).await;
    let names: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    let mut kinds: Vec<&str> = names
        .iter()
        .filter_map(|k| k.strip_prefix("ballast:contract:"))
        .map(|k| k.split(':').next().unwrap_or_default())
        .collect();
    kinds.sort_unstable();
    // Two replicas' canaries, stream meta, a one-event stream, two
    // replicas' liveness keys, stream events, session record.
    assert_eq!(
        kinds,
        [
            "canary", "canary", "m", "o", "replica", "replica", "s", "session"
        ],
        "{keys}"
    );
    for key in names {
        assert!(key.starts_with("ballast:contract:"), "{key}");
        let ttl = redis.command(&["PTTL", key]).await;
        let ms: i64 = ttl.trim().trim_start_matches(':').parse().expect("PTTL");
        assert!(ms > 0, "{key} has no TTL ({ms})");
    }
}

/// A call answered before its stream had to be visible: one `SET` (the
/// `o:` key) instead of a Redis Stream, which every other replica still
/// reads, owns and finishes like any stream — and which, once delivered,
/// expires after `delivered_ttl` instead of the (here 1 min) resume window.
#[tokio::test]
async fn a_stream_answered_at_once_is_one_key_that_other_replicas_read() {
    let redis = RedisServer::start().await;
    let writer = replica_log_with(&redis.url(), Duration::from_secs(60));
    let other = redis_log(&redis.url());
    writer
        .open_for_request(
            "quick",
            "sess",
            b(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
        )
        .await
        .expect("open");
    let seq = writer
        .append_last("quick", b("answer"))
        .await
        .expect("answer");
    assert_eq!(seq, 1);
    // The writer's own readers see it once Redis has it, not before.
    let here = writer.read("quick", 0, Duration::from_secs(10)).await;
    assert_eq!(here.expect("read").events, vec![(1, b("answer"))]);
    let keys = redis.command(&["KEYS", "ballast:contract:*{quick}"]).await;
    assert!(keys.contains("ballast:contract:o:{quick}"), "{keys}");
    assert!(
        !keys.contains(":m:{quick}") && !keys.contains(":s:{quick}"),
        "{keys}"
    );

    let all = other.read("quick", 0, Duration::ZERO).await.expect("read");
    assert_eq!(all.events, vec![(1, b("answer"))]);
    assert!(all.finished);
    let rest = other.read("quick", 1, Duration::ZERO).await.expect("read");
    assert!(rest.events.is_empty() && rest.finished);
    assert_eq!(
        other.owner("quick").await.expect("owner").as_deref(),
        Some("sess")
    );
    assert!(other.claim_orphan("quick").await.expect("claim").is_none());
    other
        .finish("quick")
        .await
        .expect("finishing a finished stream");

    // Delivered to its client: Redis keeps it `delivered_ttl`, as memory
    // does (not the minute it was stored for: it is gone, or about to go).
    writer.delivered("quick");
    let limit = i64::try_from(LIMITS.delivered_ttl.as_millis()).expect("ms");
    let mut shortened = false;
    for _ in 0..200 {
        let ttl = redis.command(&["PTTL", "ballast:contract:o:{quick}"]).await;
        let ms: i64 = ttl.trim().trim_start_matches(':').parse().expect("PTTL");
        if ms <= limit {
            shortened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(shortened, "the delivered stream's TTL is cut to {limit} ms");

    tokio::time::sleep(LIMITS.delivered_ttl + Duration::from_millis(200)).await;
    assert!(matches!(
        other.read("quick", 0, Duration::ZERO).await,
        Err(StoreError::UnknownStream)
    ));
    assert_eq!(other.owner("quick").await.expect("owner"), None);
}

/// An answer is in Redis before any reader of its replica sees it: each
/// time the writer's reader gets the event, the key is there already.
#[tokio::test]
async fn a_quick_answer_is_in_redis_before_its_readers_see_it() {
    let redis = RedisServer::start().await;
    let writer = replica_log_with(&redis.url(), Duration::from_secs(60));
    for i in 0..50 {
        let stream = format!("d{i}");
        writer
            .open_for_request(&stream, "sess", b("{}"))
            .await
            .expect("open");
        writer
            .append_last(&stream, b("answer"))
            .await
            .expect("answer");
        let seen = writer
            .read(&stream, 0, Duration::from_secs(10))
            .await
            .expect("read");
        assert_eq!(seen.events.len(), 1);
        let key = format!("ballast:contract:o:{{{stream}}}");
        let exists = redis.command(&["EXISTS", &key]).await;
        assert_eq!(exists.trim(), ":1", "{key} in Redis when its reader saw it");
    }
}

/// A stream made visible before its first event (a slower call) is a Redis
/// Stream another replica can follow live.
#[tokio::test]
async fn a_stream_made_visible_first_is_followed_by_other_replicas() {
    let redis = RedisServer::start().await;
    let writer = replica_log(&redis.url());
    let other = redis_log(&redis.url());
    writer
        .open_for_request("slow", "sess", b("{}"))
        .await
        .expect("open");
    writer.make_visible("slow").await.expect("visible");
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move { other.read("slow", 0, Duration::from_secs(5)).await })
    };
    writer.append("slow", b("progress")).await.expect("append");
    let first = waiting.await.expect("join").expect("read");
    assert_eq!(first.events, vec![(1, b("progress"))]);
    assert!(!first.finished);
    writer
        .append_last("slow", b("answer"))
        .await
        .expect("answer");
    let rest = other.read("slow", 1, Duration::ZERO).await.expect("read");
    assert_eq!(rest.events, vec![(2, b("answer"))]);
    assert!(rest.finished);
    let keys = redis.command(&["KEYS", "ballast:contract:*{slow}"]).await;
    assert!(
        keys.contains(":m:{slow}") && keys.contains(":s:{slow}"),
        "{keys}"
    );
    assert!(!keys.contains(":o:{slow}"), "{keys}");
}

/// A standalone `url` that points at a Redis Cluster node (here one of
/// two, each serving half the hash slots, so half the keys are `MOVED`)
/// opens the store's breaker, and the streams go to memory instead of
/// failing: a cluster is named by `redis+cluster://`.
#[tokio::test]
async fn a_cluster_node_given_as_a_standalone_url_is_refused_and_streams_stay_in_memory() {
    let cluster = RedisCluster::start(2).await;
    let node_a = &cluster.nodes[0];
    let backend = RedisBackend::new(&store_config(&node_a.url(), "cluster")).expect("backend");
    let log = FallbackEventLog::new(
        RedisEventLog::new(backend.clone(), LIMITS, WINDOW),
        MemoryEventLog::new(LIMITS),
    );
    // Streams whose keys node B serves: node A answers MOVED for each.
    let mut streams = Vec::new();
    for i in 0..200 {
        let stream = format!("c{i}");
        if cluster
            .node_of(&format!("ballast:cluster:o:{{{stream}}}"))
            .await
            == 1
        {
            streams.push(stream);
        }
        if streams.len() == 10 {
            break;
        }
    }
    assert_eq!(streams.len(), 10);
    for stream in streams {
        log.open_for_request(&stream, "sess", b("{}"))
            .await
            .expect("open");
        let seq = log.append_last(&stream, b("answer")).await.expect("answer");
        assert_eq!(seq, 1);
        let back = log
            .read(&stream, 0, Duration::from_secs(10))
            .await
            .expect("read");
        assert_eq!(back.events, vec![(1, b("answer"))], "{stream}");
    }
    assert!(
        ballast::store::on_fallback(&backend),
        "the breaker opened: new data goes to memory"
    );
}

#[tokio::test]
async fn a_session_record_expires_after_the_idle_timeout_unless_touched() {
    let redis = RedisServer::start().await;
    let s = redis_sessions(&redis.url(), Duration::from_millis(400));
    s.save(record("t1")).await.expect("save");
    s.save(record("t2")).await.expect("save");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.touch(&["t1".into()]).await.expect("touch");
    }
    assert!(s.load("t1").await.expect("load").is_some(), "touched: kept");
    assert!(s.load("t2").await.expect("load").is_none(), "idle: expired");
}

fn shared_tiers(url: &str) -> ballast::resilience::Shared {
    let backend = RedisBackend::new(&store_config(url, "contract")).expect("backend");
    ballast::store::redis::shared(&backend)
}

#[tokio::test]
async fn rate_limit_buckets_are_shared_by_replicas_and_fall_back_to_local() {
    use ballast::resilience::RateLimit;
    let mut redis = RedisServer::start().await;
    let on = |tiers: ballast::resilience::Shared| {
        RateLimit::new(1.0, 3)
            .expect("limit")
            .with_shared(tiers.rate, "session")
    };
    let (a, b) = (
        on(shared_tiers(&redis.url())),
        on(shared_tiers(&redis.url())),
    );
    assert!(a.check("s1").await.is_ok());
    assert!(b.check("s1").await.is_ok());
    assert!(a.check("s1").await.is_ok());
    // Three tokens taken across two replicas: the bucket is empty for both.
    let wait = b.check("s1").await.expect_err("over the shared limit");
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert!(a.check("s2").await.is_ok(), "keys are independent");
    // Redis gone: each replica's own bucket decides (a full one: 3 tokens).
    redis.kill().await;
    for _ in 0..3 {
        assert!(a.check("s1").await.is_ok());
    }
    assert!(a.check("s1").await.is_err());
}

#[tokio::test]
async fn the_stale_cache_is_shared_by_replicas() {
    use ballast::resilience::StaleCache;
    let redis = RedisServer::start().await;
    let cache = |tiers: ballast::resilience::Shared| {
        StaleCache::new(&ballast::config::CacheConfig::default()).with_shared(tiers.cache, "demo")
    };
    let (a, b) = (
        cache(shared_tiers(&redis.url())),
        cache(shared_tiers(&redis.url())),
    );
    let key = StaleCache::key(None, "echo", Some(&serde_json::json!({ "message": "hi" })));
    let raw = serde_json::value::RawValue::from_string(r#"{"content":[]}"#.into()).expect("raw");
    a.put(key, &raw);
    // The write is in the background: wait for B to see it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (got, age) = loop {
        if let Some(hit) = b.get(&key).await {
            break hit;
        }
        assert!(tokio::time::Instant::now() < deadline, "never shared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.get(), r#"{"content":[]}"#);
    assert!(age < Duration::from_secs(5), "{age:?}");
    let other = StaleCache::key(None, "echo", Some(&serde_json::json!({ "message": "ho" })));
    assert!(b.get(&other).await.is_none());
}

/// The shared tier keeps each upstream within its bounds: count, then
/// bytes; the oldest entries go first, index and sizes agree.
#[tokio::test]
async fn the_shared_stale_cache_is_bounded_by_count_and_bytes() {
    use ballast::resilience::{CacheBounds, StaleCache};
    let redis = RedisServer::start().await;
    let tiers = shared_tiers(&redis.url());
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ttl = Duration::from_secs(60);
    let bounds = CacheBounds {
        max_entries: 5,
        max_bytes: 1 << 20,
        max_result_bytes: 1 << 20,
    };
    let result = |n: usize, bytes: usize| {
        serde_json::value::RawValue::from_string(format!("\"{n}{}\"", "x".repeat(bytes)))
            .expect("raw")
    };
    let key = |n: usize| StaleCache::key(None, "t", Some(&serde_json::json!({ "n": n }))).hex();
    // (index size, entry keys, total bytes) of namespace `ns`.
    async fn held(conn: &mut redis::aio::MultiplexedConnection, ns: &str) -> (usize, usize, u64) {
        let index: usize = redis::cmd("ZCARD")
            .arg(format!("ballast:contract:cache-index:{{{ns}}}"))
            .query_async(conn)
            .await
            .expect("zcard");
        let entries: Vec<String> = redis::cmd("KEYS")
            .arg(format!("ballast:contract:cache:{{{ns}}}:*"))
            .query_async(conn)
            .await
            .expect("keys");
        let total: Option<u64> = redis::cmd("HGET")
            .arg(format!("ballast:contract:cache-sizes:{{{ns}}}"))
            .arg("#total")
            .query_async(conn)
            .await
            .expect("hget");
        (index, entries.len(), total.unwrap_or(0))
    }
    // The writes are in the background, in order: wait for the last one.
    let landed = async |ns: &str, last: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tiers.cache.get(ns, last).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for n in 0..20 {
        tiers
            .cache
            .put("count", &key(n), result(n, 10), ttl, bounds);
    }
    landed("count", &key(19)).await;
    let (index, entries, _) = held(&mut conn, "count").await;
    assert_eq!((index, entries), (5, 5));
    // Oldest first: the last five written are the ones kept.
    assert!(tiers.cache.get("count", &key(15)).await.is_some());
    assert!(tiers.cache.get("count", &key(14)).await.is_none());

    // 100 KiB results into 512 KiB: never more than 512 KiB held.
    let bytes = CacheBounds {
        max_entries: 1000,
        max_bytes: 512 * 1024,
        ..bounds
    };
    for n in 0..20 {
        tiers
            .cache
            .put("bytes", &key(n), result(n, 100 * 1024), ttl, bytes);
    }
    landed("bytes", &key(19)).await;
    let (index, entries, total) = held(&mut conn, "bytes").await;
    assert_eq!(index, entries);
    assert!((1..=5).contains(&index), "{index} entries");
    assert!(total <= 512 * 1024, "{total} bytes");
}

/// One node of three lost: every batch spanning the slots fails for that
/// node's pipeline, and the breaker sees those failures in a row — the
/// slot map read again after each failed batch (answered by a live node)
/// is not counted as a success between them — so it opens after
/// `consecutive_failures` (3) batches and new data goes to memory.
#[tokio::test]
async fn on_a_redis_cluster_a_lost_node_opens_the_breaker() {
    let mut cluster = RedisCluster::start(3).await;
    let backend = RedisBackend::new(&store_config(&cluster.url(), "contract")).expect("backend");
    let keys = spread_keys();
    let first = set_all(&backend, &keys).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    cluster.nodes[1].kill().await;
    for batch in 1..=3 {
        assert!(
            !ballast::store::on_fallback(&backend),
            "open before batch {batch}"
        );
        let sent = backend
            .run_each(keys.iter().map(|k| set_v(k)).collect())
            .await;
        assert!(
            sent.iter().any(Result::is_err),
            "batch {batch} reached the lost node"
        );
    }
    assert!(
        ballast::store::on_fallback(&backend),
        "3 failed batches in a row"
    );
}

/// Redis loses a live stream's keys (FLUSHALL here; a restart without
/// persistence or eviction alike): the writer goes on after its last seq,
/// never reusing one a client may have seen, and readers anywhere get the
/// new events after the ones they had.
#[tokio::test]
async fn redis_keys_lost_under_a_live_stream_never_reuse_a_seq() {
    let redis = RedisServer::start().await;
    let writer = replica_log(&redis.url());
    let other = redis_log(&redis.url());
    writer.open("s1", "sess").await.expect("open");
    for (n, e) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(
            writer.append("s1", b(e)).await.expect("append"),
            n as u64 + 1
        );
    }
    let seen = other.read("s1", 0, Duration::ZERO).await.expect("read");
    assert_eq!(seen.events.len(), 3);
    redis.command(&["FLUSHALL"]).await;
    assert_eq!(writer.append("s1", b("d")).await.expect("append"), 4);
    assert_eq!(writer.append_last("s1", b("e")).await.expect("append"), 5);
    // The writer's own readers read its memory copy: in order, no seq
    // twice (the oldest went for `max_events` = 4).
    let all = writer.read("s1", 0, Duration::ZERO).await.expect("read");
    let seqs: Vec<u64> = all.events.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    // A reader elsewhere that had read to 3 gets 4 and 5, then the end.
    let rest = other.read("s1", 3, Duration::ZERO).await.expect("read");
    assert_eq!(rest.events, vec![(4, b("d")), (5, b("e"))]);
    assert!(rest.finished);
    // One that had read less cannot be given what Redis lost: it is told.
    assert!(matches!(
        other.read("s1", 1, Duration::ZERO).await,
        Err(StoreError::EventsLost)
    ));
}

/// A session record removed through one replica's store (DELETE, eviction)
/// is announced to every other replica, which ends its copy.
#[tokio::test]
async fn a_session_removed_on_one_replica_is_announced_to_the_others() {
    let redis = RedisServer::start().await;
    let backend_a = RedisBackend::new(&store_config(&redis.url(), "contract")).expect("backend");
    // A's event log runs its pub/sub listener.
    let _log_a = RedisEventLog::new(backend_a.clone(), LIMITS, WINDOW);
    let mut ended = backend_a.sessions_ended();
    let b = redis_sessions(&redis.url(), Duration::from_secs(60));
    b.save(record("gone")).await.expect("save");
    // The listener subscribes in the background: remove until A hears it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        b.remove("gone").await.expect("remove");
        if let Ok(heard) = tokio::time::timeout(Duration::from_millis(200), ended.recv()).await {
            assert_eq!(&*heard.expect("announce"), "gone");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never announced");
    }
    assert!(b.load("gone").await.expect("load").is_none());
}
