//! Downstream sessions of the legacy era (T25 "Session Management",
//! SPEC.md 9–13): one per `initialize`, identified by `Mcp-Session-Id`.

use std::collections::HashMap;
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

/// All live sessions of this gateway.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl Sessions {
    /// Adds a session.
    pub fn insert(&self, session: Arc<Session>) {
        self.lock().insert(session.id.clone(), session);
    }

    /// Looks a session up by id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Removes a session and closes its streams.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.lock().remove(id);
        if let Some(s) = &s {
            s.closed.cancel();
        }
        s
    }

    /// Ids of the sessions with a request in flight or any activity since `since`.
    pub fn active_since(&self, since: Instant) -> Vec<Arc<str>> {
        self.lock()
            .values()
            .filter(|s| {
                let last = *s.last_active.lock().unwrap_or_else(|p| p.into_inner());
                last >= since || !s.lock_in_flight().is_empty()
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Removes every session idle for `idle` (see [`Session::is_idle`]) and
    /// closes its streams; returns them.
    pub fn remove_idle(&self, idle: std::time::Duration) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut map = self.lock();
        let ids: Vec<Arc<str>> = map
            .values()
            .filter(|s| s.is_idle(idle, now))
            .map(|s| s.id.clone())
            .collect();
        let removed: Vec<Arc<Session>> = ids.iter().filter_map(|id| map.remove(id)).collect();
        for s in &removed {
            s.closed.cancel();
        }
        removed
    }

    /// A snapshot of all sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
