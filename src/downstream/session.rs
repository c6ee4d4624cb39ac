//! Downstream sessions of the legacy era (T25 "Session Management",
//! SPEC.md 9–13): one per `initialize`, identified by `Mcp-Session-Id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::RngExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::jsonrpc::RequestId;

/// A message queued for a downstream stream (serialized JSON-RPC).
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A notification or server→client request related to the call.
    Interim(Bytes),
    /// The response that ends the call's stream.
    Final(Bytes),
}

/// Where a downstream call's messages go: the SSE stream of its POST, if
/// the client accepted one.
pub type Sink = mpsc::Sender<Outbound>;

/// Capacity of one downstream stream's queue, in messages.
pub const STREAM_QUEUE: usize = 64;

/// One downstream session.
pub struct Session {
    /// The `Mcp-Session-Id`: 32 hex digits from a CSPRNG (SPEC.md 9).
    pub id: Arc<str>,
    /// The negotiated protocol version.
    pub protocol_version: &'static str,
    /// The client's `initialize` params, raw (capabilities, clientInfo).
    pub initialize_params: Option<Box<RawValue>>,
    /// Downstream request id → the upstream call serving it, once forwarded.
    in_flight: Mutex<HashMap<RequestId, Option<(usize, u64)>>>,
    get_stream: Mutex<Option<Sink>>,
    /// Resource URIs this session subscribed to (`resources/subscribe`).
    subscriptions: Mutex<std::collections::HashSet<String>>,
    /// Fired when the session ends (DELETE); its streams close.
    pub closed: CancellationToken,
}

/// Why a downstream request id could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub struct DuplicateId;

impl Session {
    /// A new session with a fresh id.
    pub fn new(protocol_version: &'static str, initialize_params: Option<Box<RawValue>>) -> Self {
        let bits: u128 = rand::rng().random();
        Self {
            id: format!("{bits:032x}").into(),
            protocol_version,
            initialize_params,
            in_flight: Mutex::new(HashMap::new()),
            get_stream: Mutex::new(None),
            subscriptions: Mutex::new(std::collections::HashSet::new()),
            closed: CancellationToken::new(),
        }
    }

    /// Registers a downstream request as in flight.
    ///
    /// # Errors
    /// [`DuplicateId`] if the same id is already in flight (SPEC.md 13).
    pub fn begin(&self, id: &RequestId) -> Result<(), DuplicateId> {
        let mut m = self.lock_in_flight();
        if m.contains_key(id) {
            return Err(DuplicateId);
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

    /// Installs a new GET stream, replacing (and so closing) any older one.
    pub fn set_get_stream(&self, sink: Sink) {
        *self.get_stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Queues a message on the GET stream. Returns false if there is none,
    /// it is closed, or it is full (a slow consumer).
    pub fn send_on_get_stream(&self, message: Bytes) -> bool {
        let guard = self.get_stream.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|s| s.try_send(Outbound::Interim(message)).is_ok())
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
