//! The HTTP handlers ask the store, not the deployment, how to treat a
//! stream (issue 15 item 3): an event log that says it is shared by
//! replicas gets the request kept with a call's stream, `make_visible`
//! before the client learns the stream id, its own first-event grace, a
//! resumed stream followed for takeover, and the streams of a session
//! that went idle here left to it — whatever the store is built on. Here a
//! shared log that is not Redis: the in-memory log behind a wrapper that
//! says it is shared and records what the gateway asks of it.

mod support;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ballast::store::{
    Batch, EventLog, MemoryEventLog, MemorySessionStore, Orphan, SessionRecord, SessionStore,
    StoreError, Stores,
};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use sse_stream::SseByteStream;
use support::{McpClient, TestGateway, demo_config};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A first-event grace no other wait in the gateway uses.
const GRACE: Duration = Duration::from_millis(37);

/// What the gateway asked of the stores, in order.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    OpenForRequest { stream: String, request: Bytes },
    MakeVisible(String),
    Read { after: u64, wait: Duration },
    ClaimOrphan(String),
    Expire { ended: Vec<String> },
    IdleHere(String),
}

/// The record and a signal bumped on each entry.
struct Recorder {
    asked: Mutex<Vec<Asked>>,
    changed: watch::Sender<u64>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            asked: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        })
    }

    fn note(&self, a: Asked) {
        self.lock().push(a);
        self.changed.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Asked>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (up to 10 s) until `holds` is true of the record.
    async fn until(&self, what: &str, holds: impl Fn(&[Asked]) -> bool) -> Vec<Asked> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let asked = self.lock();
                if holds(&asked) {
                    return asked.clone();
                }
            }
            let waited = tokio::time::timeout_at(deadline, rx.changed()).await;
            assert!(waited.is_ok(), "{what}: never asked; got {:?}", self.lock());
        }
    }
}

/// The in-memory log, saying it is shared, recording what it is asked.
struct SharedLog {
    inner: MemoryEventLog,
    rec: Arc<Recorder>,
}

impl EventLog for SharedLog {
    fn is_shared(&self) -> bool {
        true
    }

    fn first_event_grace(&self) -> Duration {
        GRACE
    }

    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.open(stream, session)
    }

    fn open_for_request<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
        request: Bytes,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.rec.note(Asked::OpenForRequest {
            stream: stream.into(),
            request,
        });
        self.inner.open(stream, session)
    }

    fn make_visible<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.rec.note(Asked::MakeVisible(stream.into()));
        Box::pin(async { Ok(()) })
    }

    fn claim_orphan<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Orphan>, StoreError>> {
        self.rec.note(Asked::ClaimOrphan(stream.into()));
        Box::pin(async { Ok(None) })
    }

    fn append<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.append(stream, data)
    }

    fn reader(&self, stream: &str, attached: bool) {
        self.inner.reader(stream, attached);
    }

    fn delivered(&self, stream: &str) {
        self.inner.delivered(stream);
    }

    fn append_last<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.append_last(stream, data)
    }

    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.finish(stream)
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        self.rec.note(Asked::Read { after, wait });
        self.inner.read(stream, after, wait)
    }

    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>> {
        self.inner.owner(stream)
    }

    fn expire<'a>(
        &'a self,
        resume_window: Duration,
        ended: &'a [Arc<str>],
    ) -> BoxFuture<'a, usize> {
        self.rec.note(Asked::Expire {
            ended: ended.iter().map(|s| s.to_string()).collect(),
        });
        self.inner.expire(resume_window, ended)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// The in-memory session store, recording `idle_here`.
struct Sessions {
    inner: MemorySessionStore,
    rec: Arc<Recorder>,
}

impl SessionStore for Sessions {
    fn save(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.save(record)
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        self.inner.load(id)
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.remove(id)
    }

    fn touch<'a>(&'a self, ids: &'a [Arc<str>]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.touch(ids)
    }

    fn idle_here<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.rec.note(Asked::IdleHere(id.into()));
        // Shared: the record stays for the other replicas.
        Box::pin(async { Ok(()) })
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

fn shared_stores(rec: &Arc<Recorder>) -> Stores {
    let limits = demo_config().server.stream_limits();
    Stores {
        sessions: Arc::new(Sessions {
            inner: MemorySessionStore::default(),
            rec: rec.clone(),
        }),
        events: Arc::new(SharedLog {
            inner: MemoryEventLog::new(limits),
            rec: rec.clone(),
        }),
        redis: None,
    }
}

async fn gateway(config: ballast::Config, stores: &Stores) -> TestGateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    TestGateway::start_with_stores(listener, config, stores.clone())
}

#[tokio::test]
async fn a_shared_log_keeps_the_request_makes_the_stream_visible_and_sets_the_grace() {
    let rec = Recorder::new();
    let gw = gateway(demo_config(), &shared_stores(&rec)).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c.call_tool("echo", json!({ "message": "kept" })).await;
    assert_eq!(r["result"]["content"][0]["text"], "kept", "{r}");

    let asked = rec.lock().clone();
    let call = asked
        .iter()
        .find_map(|a| match a {
            Asked::OpenForRequest { stream, request } => {
                let body: serde_json::Value = serde_json::from_slice(request).ok()?;
                (body["method"] == "tools/call").then(|| (stream.clone(), body))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the call's request was not kept: {asked:?}"));
    assert_eq!(call.1["params"]["arguments"]["message"], "kept");
    assert!(
        asked.contains(&Asked::MakeVisible(call.0.clone())),
        "stream {} not made visible: {asked:?}",
        call.0
    );
    assert!(
        asked.contains(&Asked::Read {
            after: 0,
            wait: GRACE
        }),
        "the store's first-event grace was not used: {asked:?}"
    );
    // The stores' status is the stores', not the handler's guess.
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["store"], json!({ "kind": "memory" }), "{ready}");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_resumed_from_a_shared_log_is_followed_for_takeover() {
    let rec = Recorder::new();
    let stores = shared_stores(&rec);
    let a = gateway(demo_config(), &stores).await;
    let b = gateway(demo_config(), &stores).await;
    let on_a = McpClient::connect(&a.url).await;
    let mut on_b = McpClient::new(&b.url);
    on_b.session = on_a.session.clone();

    let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 2500 } } });
    let resp = on_a.post(&call).await;
    let mut events =
        Box::pin(SseByteStream::new(resp.bytes_stream()).filter_map(|e| async move { e.ok() }));
    let priming = events.next().await.expect("priming").id.expect("id");
    drop(events);
    let stream = priming.rsplit_once(':').expect("stream:seq").0.to_owned();
    let resumed = on_b.resume(&priming).await;
    assert_eq!(resumed.status(), 200);

    // B follows the stream's writer through the store while the call runs.
    rec.until("claim_orphan on the resumed stream", |asked| {
        asked.contains(&Asked::ClaimOrphan(stream.clone()))
    })
    .await;
    let answer = support::messages(resumed)
        .next()
        .await
        .expect("answer via B");
    assert_eq!(answer["id"], 7, "{answer}");
    for gw in [a, b] {
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_session_idle_here_leaves_its_streams_to_a_shared_log() {
    let rec = Recorder::new();
    let mut config = demo_config();
    config.server.session_idle_timeout = Duration::from_millis(300);
    let gw = gateway(config, &shared_stores(&rec)).await;
    let mut c = McpClient::connect(&gw.url).await;
    let _ = c.call_tool("echo", json!({ "message": "x" })).await;
    let id = c.session.clone().expect("session");

    // The sweep that expires the session then expires the log.
    let asked = rec
        .until("an expiry pass after the session went idle", |asked| {
            asked
                .iter()
                .skip_while(|a| **a != Asked::IdleHere(id.clone()))
                .any(|a| matches!(a, Asked::Expire { .. }))
        })
        .await;
    for a in &asked {
        if let Asked::Expire { ended } = a {
            assert!(
                !ended.contains(&id),
                "the shared log was told to drop the streams of a session that only went idle here: {asked:?}"
            );
        }
    }
    gw.stop().await;
}
