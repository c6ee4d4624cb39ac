//! Downstream sessions of the legacy era (T25 "Session Management",
//! SPEC.md 9–13): one per `initialize`, identified by `Mcp-Session-Id`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::RngExt;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::jsonrpc::RequestId;
use crate::store::{EventLog, StoreError, new_stream_id};

/// Where a downstream stream's messages go: one stream of the event log.
/// Every message is appended there before any socket sees it, so a client
/// that drops can resume with `Last-Event-ID` and lose nothing.
#[derive(Clone)]
pub struct Sink {
    log: Arc<dyn EventLog>,
    /// The stream's id (the `<stream>` of its event ids).
    pub stream: Arc<str>,
    /// Progress at or below this was already sent on the stream (by a
    /// replica that died; see `downstream::takeover`): MCP progress only
    /// increases, so such notifications are dropped.
    pub progress_floor: Option<f64>,
}

impl Sink {
    /// Opens a new log stream owned by `session`.
    ///
    /// # Errors
    /// The store's error.
    pub async fn open(log: Arc<dyn EventLog>, session: &str) -> Result<Sink, StoreError> {
        let stream = new_stream_id();
        log.open(&stream, session).await?;
        Ok(Sink {
            log,
            stream,
            progress_floor: None,
        })
    }

    /// Opens a new log stream owned by `session` for the answer to
    /// `request` (its bytes are kept with the stream in a shared store, so
    /// another replica can take the call over if this one dies).
    ///
    /// # Errors
    /// The store's error.
    pub async fn open_for(
        log: Arc<dyn EventLog>,
        session: &str,
        request: Bytes,
    ) -> Result<Sink, StoreError> {
        let stream = new_stream_id();
        log.open_for_request(&stream, session, request).await?;
        Ok(Sink {
            log,
            stream,
            progress_floor: None,
        })
    }

    /// A handle on an existing stream (for a resume).
    pub fn resumed(log: Arc<dyn EventLog>, stream: Arc<str>) -> Sink {
        Sink {
            log,
            stream,
            progress_floor: None,
        }
    }

    /// Appends a message. False if the stream is gone (expired, session ended).
    pub async fn send(&self, message: Bytes) -> bool {
        self.log.append(&self.stream, message).await.is_ok()
    }

    /// Appends a stream's last message and finishes it, at once (readers
    /// see both together). False if the stream is gone.
    pub async fn send_last(&self, message: Bytes) -> bool {
        self.log.append_last(&self.stream, message).await.is_ok()
    }

    /// Marks the stream finished: readers end after its last event.
    pub async fn finish(&self) {
        let _ = self.log.finish(&self.stream).await;
    }
}

/// One downstream session.
pub struct Session {
    /// The `Mcp-Session-Id`: 32 hex digits from a CSPRNG (SPEC.md 9).
    pub id: Arc<str>,
    /// The negotiated protocol version.
    pub protocol_version: &'static str,
    /// The client's `initialize` params, raw (capabilities, clientInfo).
    pub initialize_params: Option<Arc<RawValue>>,
    /// Downstream request id → the upstream call serving it, once forwarded.
    in_flight: Mutex<HashMap<RequestId, Option<(usize, u64)>>>,
    get_stream: Mutex<Option<Sink>>,
    /// Resource URIs this session subscribed to (`resources/subscribe`).
    subscriptions: Mutex<std::collections::HashSet<String>>,
    /// Last time the client sent something or a message flowed to it.
    last_active: Mutex<Instant>,
    /// Fired when the session ends (DELETE, idle expiry); its streams close.
    pub closed: CancellationToken,
}

/// Why a downstream request could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub enum BeginError {
    /// The same id is already in flight (SPEC.md 13).
    DuplicateId,
    /// The session already has the most requests in flight it may have.
    TooManyRequests,
}

impl Session {
    /// A new session with a fresh id.
    pub fn new(protocol_version: &'static str, initialize_params: Option<Arc<RawValue>>) -> Self {
        let bits: u128 = rand::rng().random();
        Self {
            id: format!("{bits:032x}").into(),
            protocol_version,
            initialize_params,
            in_flight: Mutex::new(HashMap::new()),
            get_stream: Mutex::new(None),
            subscriptions: Mutex::new(std::collections::HashSet::new()),
            last_active: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        }
    }

    /// A local session for a stored record (created by another replica).
    pub fn restore(record: &crate::store::SessionRecord) -> Self {
        let mut s = Self::new(
            crate::mcp::negotiate(&record.protocol_version),
            record.initialize_params.clone(),
        );
        s.id = record.id.clone();
        s
    }

    /// The record to store for this session.
    pub fn record(&self) -> crate::store::SessionRecord {
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        crate::store::SessionRecord {
            id: self.id.clone(),
            protocol_version: self.protocol_version.to_owned(),
            initialize_params: self.initialize_params.clone(),
            created_ms,
        }
    }

    /// Notes activity: the session is not idle.
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Whether nothing flowed for `idle` and no request is in flight.
    pub fn is_idle(&self, idle: std::time::Duration, now: Instant) -> bool {
        let last = *self.last_active.lock().unwrap_or_else(|p| p.into_inner());
        self.lock_in_flight().is_empty() && now.duration_since(last) >= idle
    }

    /// Registers a downstream request as in flight; at most `limit` at once.
    ///
    /// # Errors
    /// [`BeginError::DuplicateId`] if the same id is already in flight,
    /// [`BeginError::TooManyRequests`] at the limit.
    pub fn begin(&self, id: &RequestId, limit: usize) -> Result<(), BeginError> {
        let mut m = self.lock_in_flight();
        if m.contains_key(id) {
            return Err(BeginError::DuplicateId);
        }
        if m.len() >= limit {
            return Err(BeginError::TooManyRequests);
        }
        m.insert(id.clone(), None);
        Ok(())
    }

    /// Notes which upstream call serves downstream request `id`.
    pub fn forwarded(&self, id: &RequestId, upstream: usize, upstream_id: u64) {
        if let Some(slot) = self.lock_in_flight().get_mut(id) {
            *slot = Some((upstream, upstream_id));
        }
    }

    /// The upstream call serving `id`, if forwarded and still in flight.
    pub fn upstream_call(&self, id: &RequestId) -> Option<(usize, u64)> {
        self.lock_in_flight().get(id).copied().flatten()
    }

    /// Removes `id` from the in-flight set.
    pub fn end(&self, id: &RequestId) {
        self.lock_in_flight().remove(id);
    }

    /// Every upstream call still in flight.
    pub fn upstream_calls(&self) -> Vec<(usize, u64)> {
        self.lock_in_flight().values().filter_map(|v| *v).collect()
    }

    /// Records a subscription (`subscribed = true`) or its end.
    pub fn set_subscribed(&self, uri: String, subscribed: bool) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if subscribed {
            subs.insert(uri);
        } else {
            subs.remove(&uri);
        }
    }

    /// Whether this session subscribed to `uri`.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uri)
    }

    /// Installs a new GET stream; returns the one it replaces (to finish).
    pub fn set_get_stream(&self, sink: Sink) -> Option<Sink> {
        self.get_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(sink)
    }

    /// The current GET stream, if any.
    pub fn get_stream(&self) -> Option<Sink> {
        self.get_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends a message to the GET stream. False if there is none.
    pub async fn send_on_get_stream(&self, message: Bytes) -> bool {
        match self.get_stream() {
            Some(sink) => sink.send(message).await,
            None => false,
        }
    }

    fn lock_in_flight(&self) -> MutexGuard<'_, HashMap<RequestId, Option<(usize, u64)>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Most entries one eviction looks at (from the least recently used end)
/// before it gives up: sessions found busy move to the back, so the work
/// per `initialize` is bounded whatever the table holds.
const EVICTION_PROBES: usize = 64;

/// All live sessions of this gateway, with their order of last use (for
/// eviction when the table is full).
#[derive(Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

/// The sessions by id, and the same ids ordered by a lower bound of their
/// last activity: an entry's key is its `last_active` when it was last
/// placed, and is corrected lazily (an eviction that finds a session
/// touched since moves it back), so `touch` stays a plain store.
#[derive(Default)]
struct Table {
    map: HashMap<Arc<str>, (Arc<Session>, OrderKey)>,
    order: BTreeMap<OrderKey, Arc<str>>,
    next: u64,
}

/// (last activity, insertion counter): unique, ordered by time first.
type OrderKey = (Instant, u64);

impl Table {
    fn key(&mut self, at: Instant) -> OrderKey {
        self.next += 1;
        (at, self.next)
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let (s, key) = self.map.remove(id)?;
        self.order.remove(&key);
        Some(s)
    }
}

impl Session {
    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sessions {
    /// Adds a session (replacing one with the same id).
    pub fn insert(&self, session: Arc<Session>) {
        let mut t = self.lock();
        t.remove(&session.id);
        let key = t.key(session.last_active());
        t.order.insert(key, session.id.clone());
        t.map.insert(session.id.clone(), (session, key));
    }

    /// Looks a session up by id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().map.get(id).map(|(s, _)| s.clone())
    }

    /// Removes a session and closes its streams.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.lock().remove(id);
        if let Some(s) = &s {
            s.closed.cancel();
        }
        s
    }

    /// Removes `session` itself (not another session object with its id,
    /// e.g. one loaded again from a shared store) and closes its streams.
    pub fn remove_this(&self, session: &Arc<Session>) {
        let mut t = self.lock();
        if t.map
            .get(&session.id)
            .is_some_and(|(s, _)| Arc::ptr_eq(s, session))
        {
            t.remove(&session.id);
        }
        drop(t);
        session.closed.cancel();
    }

    /// Removes the least recently used idle session — no request in flight
    /// and not `busy` (e.g. a stream of it being read) — and closes its
    /// streams; returns it, for the caller to end. `None` if none of the
    /// `EVICTION_PROBES` (64) least recently used is idle. Amortized
    /// O(log n): a probe either evicts, or moves a session touched since
    /// its last placement (paid for by that touch), or moves one of at
    /// most `EVICTION_PROBES` busy sessions to the back.
    pub fn evict_idle(&self, busy: impl Fn(&Session) -> bool) -> Option<Arc<Session>> {
        let now = Instant::now();
        let mut t = self.lock();
        let mut probes = 0;
        while probes < EVICTION_PROBES {
            let (key, id) = t.order.pop_first()?;
            let Some(session) = t.map.get(&id).map(|(s, _)| s.clone()) else {
                continue;
            };
            let last = session.last_active();
            let moved_to = if last > key.0 {
                // Used since it was placed: back in at its real position.
                Some(last)
            } else if !session.lock_in_flight().is_empty() || busy(&session) {
                probes += 1;
                Some(now)
            } else {
                None
            };
            match moved_to {
                Some(at) => {
                    let key = t.key(at);
                    t.order.insert(key, id.clone());
                    if let Some(entry) = t.map.get_mut(&id) {
                        entry.1 = key;
                    }
                }
                None => {
                    t.map.remove(&id);
                    drop(t);
                    session.closed.cancel();
                    return Some(session);
                }
            }
        }
        None
    }

    /// Ids of the sessions with a request in flight or any activity since `since`.
    pub fn active_since(&self, since: Instant) -> Vec<Arc<str>> {
        self.lock()
            .map
            .values()
            .filter(|(s, _)| s.last_active() >= since || !s.lock_in_flight().is_empty())
            .map(|(s, _)| s.id.clone())
            .collect()
    }

    /// Removes every session idle for `idle` (see [`Session::is_idle`]) and
    /// closes its streams; returns them.
    pub fn remove_idle(&self, idle: std::time::Duration) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut t = self.lock();
        let ids: Vec<Arc<str>> = t
            .map
            .values()
            .filter(|(s, _)| s.is_idle(idle, now))
            .map(|(s, _)| s.id.clone())
            .collect();
        let removed: Vec<Arc<Session>> = ids.iter().filter_map(|id| t.remove(id)).collect();
        drop(t);
        for s in &removed {
            s.closed.cancel();
        }
        removed
    }

    /// A snapshot of all sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().map.values().map(|(s, _)| s.clone()).collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table(n: usize) -> (Sessions, Vec<Arc<Session>>) {
        let t = Sessions::default();
        let all: Vec<_> = (0..n)
            .map(|_| Arc::new(Session::new("2025-11-25", None)))
            .collect();
        for s in &all {
            t.insert(s.clone());
        }
        (t, all)
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_takes_the_least_recently_used_idle_session() {
        let (t, s) = table(4);
        tokio::time::advance(Duration::from_secs(1)).await;
        s[0].touch(); // now the most recently used
        s[1].begin(&RequestId::Number(1), 10).unwrap(); // busy: a call in flight
        let busy_stream = s[2].id.clone(); // busy: a stream being read
        let busy = |x: &Session| x.id == busy_stream;
        let evicted = t.evict_idle(busy).expect("an idle one");
        assert!(Arc::ptr_eq(&evicted, &s[3]), "the LRU idle session");
        assert!(evicted.closed.is_cancelled());
        assert!(Arc::ptr_eq(&t.evict_idle(busy).unwrap(), &s[0]));
        assert!(t.evict_idle(busy).is_none(), "only busy ones left");
        assert_eq!(t.len(), 2);
        s[1].end(&RequestId::Number(1));
        assert!(Arc::ptr_eq(&t.evict_idle(busy).unwrap(), &s[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn one_eviction_looks_at_a_bounded_number_of_busy_sessions() {
        let (t, s) = table(EVICTION_PROBES + 1);
        // Every session but the most recent one is busy.
        for x in &s[..EVICTION_PROBES] {
            x.begin(&RequestId::Number(1), 10).unwrap();
        }
        assert!(
            t.evict_idle(|_| false).is_none(),
            "gave up after the probes"
        );
        // The busy ones went to the back: the next one finds the idle one.
        let last = &s[EVICTION_PROBES];
        assert!(Arc::ptr_eq(&t.evict_idle(|_| false).unwrap(), last));
    }
}
