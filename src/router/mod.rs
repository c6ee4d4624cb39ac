//! The router: which upstream serves a downstream message, and how each
//! message finds its way back.
//!
//! - `catalog.rs` — the merged, namespaced view of all upstreams' lists.
//! - `mod.rs` — downstream → upstream: local answers (`initialize`, `ping`,
//!   list methods), routing by tool/prompt name or resource URI, id and
//!   `progressToken` rewriting, cancellation mapping.
//! - `events.rs` — upstream → downstream: progress, logging, list_changed,
//!   cancellations and server→client requests routed to the owning session.

mod catalog;
mod events;
mod fallback;
mod forward;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use self::catalog::{Catalog, Target, ToolEntry};
use crate::config::Config;
use crate::downstream::{Session, Sink};
use crate::jsonrpc::{
    ErrorObject, Message, Notification, Request, RequestId, Response, code, empty_object, to_raw,
};
use crate::mcp::{self, Params, method};
use crate::observe::Stats;
use crate::resilience::{CallPolicy, StaleCache, is_error_result, is_private};
use crate::upstream::{Connection, Upstream, UpstreamState};

/// How a call's upstream messages get back to the downstream client.
pub(crate) struct CallRoute {
    pub(crate) session: Arc<Session>,
    /// When the call started (a stream never read counts from here).
    pub(crate) started: tokio::time::Instant,
    /// The downstream's `progressToken`, restored on progress notifications.
    pub(crate) progress_token: Option<Box<RawValue>>,
    /// Woken on each progress notification (restarts the call's timeout).
    pub(crate) progress: Arc<tokio::sync::Notify>,
    /// The call's SSE stream; `None` when the client asked for JSON.
    pub(crate) sink: Option<Sink>,
    /// Shared by the call's attempts: set when the upstream asked this
    /// call's client something (see `Safety::asked_client`).
    pub(crate) asked_client: Arc<std::sync::atomic::AtomicBool>,
}

/// A server→client request forwarded to a session, awaiting its answer.
pub(crate) struct ServerRequestRoute {
    pub(crate) session: Arc<str>,
    pub(crate) upstream: usize,
    pub(crate) upstream_id: RequestId,
    /// The connection that sent the request; the answer goes back on it.
    pub(crate) conn: std::sync::Weak<Connection>,
}

/// Routing state shared by all downstream sessions.
pub struct Router {
    upstreams: Vec<Arc<Upstream>>,
    prefixes: Vec<Option<String>>,
    separator: String,
    startup_wait: Duration,
    catalog: RwLock<Arc<Catalog>>,
    /// (upstream, upstream request id) → route back, for every call in flight.
    calls: Mutex<HashMap<(usize, u64), Arc<CallRoute>>>,
    /// Ballast's downstream-facing id → the upstream request it stands for.
    server_requests: Mutex<HashMap<i64, ServerRequestRoute>>,
    next_server_request_id: AtomicI64,
    /// Fingerprint of the tool list last announced to clients.
    announced: std::sync::atomic::AtomicU64,
    /// Calls being forwarded (retry waits included).
    active: std::sync::atomic::AtomicUsize,
    /// Woken whenever the last call in flight finishes (for the drain).
    idle: tokio::sync::Notify,
    /// Retry policy per upstream (same index).
    policies: Vec<CallPolicy>,
    /// Counters (retries, outcomes).
    stats: Arc<Stats>,
}

impl Router {
    /// A router over `upstreams` (indexed as in the config).
    /// `shared`: the tiers replicas share (stale cache, rate limits), if any.
    pub fn new(
        config: &Config,
        upstreams: Vec<Arc<Upstream>>,
        stats: Arc<Stats>,
        shared: Option<&crate::resilience::Shared>,
    ) -> Self {
        let policies = upstreams
            .iter()
            .map(|u| CallPolicy::new(&u.name, &u.config, u.breaker().clone(), shared))
            .collect();
        Self {
            policies,
            stats,
            prefixes: config.prefixes(),
            separator: config.catalog.separator.clone(),
            startup_wait: config.server.startup_wait,
            upstreams,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            calls: Mutex::new(HashMap::new()),
            server_requests: Mutex::new(HashMap::new()),
            next_server_request_id: AtomicI64::new(1),
            active: std::sync::atomic::AtomicUsize::new(0),
            announced: std::sync::atomic::AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }

    /// The upstreams, by index.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The current merged catalog, rebuilt if an upstream changed.
    pub fn catalog(&self) -> Arc<Catalog> {
        let current = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        if current.is_current(&self.upstreams) {
            return current;
        }
        let fresh = Arc::new(Catalog::build(
            &self.upstreams,
            &self.prefixes,
            &self.separator,
        ));
        if let Ok(mut c) = self.catalog.write() {
            *c = fresh.clone();
        }
        fresh
    }

    /// Whether every required upstream is ready (and, for a child, reading
    /// its input: not in a write stall).
    pub fn is_ready(&self) -> bool {
        self.upstreams.iter().all(|u| {
            !u.config.required
                || matches!(u.state(), UpstreamState::Ready(c) if c.write_stall().is_none())
        })
    }

    /// Waits, at most the configured `startup_wait` in all, for the required
    /// upstreams still on their first try since Ballast started
    /// ([`Upstream::first_try`]); one that is down, cannot start, is parked
    /// or was up before is not waited for.
    pub async fn wait_ready(&self) {
        let all = async {
            for u in self.upstreams.iter().filter(|u| u.config.required) {
                u.first_try(self.startup_wait).await;
            }
        };
        let _ = tokio::time::timeout(self.startup_wait, all).await;
    }

    /// Number of upstream calls in flight (for the drain).
    pub fn calls_in_flight(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once no upstream call is in flight.
    pub async fn calls_done(&self) {
        loop {
            let idle = self.idle.notified();
            if self.calls_in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// The `initialize` result for a client that negotiated `version`:
    /// capabilities merged from every ready upstream (L25).
    pub fn initialize_result(&self, version: &str) -> Box<RawValue> {
        let mut caps = serde_json::Map::new();
        let mut instructions = Vec::new();
        for u in &self.upstreams {
            let Some(conn) = u.current() else { continue };
            let Some(info) = conn.info() else { continue };
            let has = |k: &str| info.capabilities.get(k).is_some_and(|v| !v.is_null());
            for k in ["tools", "prompts"] {
                if has(k) {
                    caps.insert(k.into(), json!({ "listChanged": true }));
                }
            }
            if has("resources") {
                let subscribe =
                    info.capabilities.pointer("/resources/subscribe") == Some(&Value::Bool(true));
                let prev = caps
                    .get("resources")
                    .and_then(|r| r.get("subscribe"))
                    .and_then(Value::as_bool);
                caps.insert(
                    "resources".into(),
                    json!({ "listChanged": true, "subscribe": subscribe || prev == Some(true) }),
                );
            }
            for k in ["logging", "completions"] {
                if has(k) {
                    caps.insert(k.into(), json!({}));
                }
            }
            if let Some(i) = &info.instructions {
                instructions.push(i.clone());
            }
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": { "name": "ballast", "version": env!("CARGO_PKG_VERSION") },
        });
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n\n"));
        }
        to_raw(&result)
    }

    /// Answers one downstream request (anything but `initialize`): locally,
    /// from the catalog, or by forwarding it to the upstream that owns it.
    /// Interim messages (progress, server→client requests) go to `sink`.
    /// `None` means the client cancelled the request: it gets no response
    /// (U25 cancellation).
    pub(crate) async fn handle_request(
        &self,
        session: &Arc<Session>,
        request: Request,
        sink: Option<Sink>,
    ) -> Option<Response> {
        let Request { id, method, params } = request;
        if method == method::INITIALIZE {
            // Ballast's own: it opens a session, alone and first. Inside a
            // batch or a session it is refused, never forwarded to the
            // shared upstream connection.
            let e = ErrorObject::new(
                code::INVALID_REQUEST,
                "initialize must be sent alone, as the request that opens a session",
            );
            return Some(Response::err(Some(id), &e));
        }
        if method == method::PING {
            return Some(Response::ok(id, empty_object()));
        }
        if let Some(list) = self.catalog().list_result(&method) {
            return Some(Response::ok(id, list.to_owned()));
        }
        if method == method::SET_LEVEL {
            return Some(self.broadcast_set_level(id, params).await);
        }
        let subscription = matches!(
            method.as_str(),
            method::RESOURCES_SUBSCRIBE | method::RESOURCES_UNSUBSCRIBE
        )
        .then(|| Params::split(params.as_deref()).and_then(|p| p.str_field("uri")))
        .flatten();
        let (upstream, params) = match self.route(&method, params) {
            Ok(r) => r,
            Err(e) => return Some(Response::err(Some(id), &e)),
        };
        let safety = self.safety(&method, upstream, params.as_deref());
        let tool = safety.tool.clone();
        // Only read-only results are stored, and only those that did not
        // depend on the caller (no server→client request during the call);
        // a lookup after a failure needs no annotation (a parked upstream's
        // tools are not in the catalog).
        let read_only = safety.read_only;
        let asked_client = safety.asked_client.clone();
        // The routed params carry the client's arguments unchanged (only the
        // tool name lost its prefix), so nothing is copied for this.
        let cache_key = |scope: Option<&str>| {
            let (routed, tool) = (params.as_deref()?, tool.as_deref()?);
            let args = Params::split(Some(routed)).and_then(|p| {
                p.0.get("arguments")
                    .and_then(|a| serde_json::from_str::<Value>(a.get()).ok())
            });
            Some(StaleCache::key(scope, tool, args.as_ref()))
        };
        let cache = self.policies.get(upstream).and_then(CallPolicy::cache);
        let response = self
            .forward(
                session,
                upstream,
                id.clone(),
                &method,
                &params,
                sink.clone(),
                safety,
            )
            .await?;
        if let (Ok(result), Some(cache)) = (&response.outcome, cache)
            && read_only
            && !is_error_result(result)
            && !asked_client.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(key) = cache_key(is_private(result).then_some(&*session.id))
        {
            cache.put(key, result);
        }
        if method == method::TOOLS_CALL
            && let (Some(routed), Some(tool_name), Err(_)) =
                (params.as_deref(), &tool, &response.outcome)
        {
            if let Some(degraded) = self
                .try_fallbacks(
                    session,
                    &id,
                    routed,
                    upstream,
                    tool_name.clone(),
                    sink,
                    &response,
                )
                .await
            {
                return Some(degraded);
            }
            // Last resort for a read-only tool: its last good result, marked stale.
            // This session's own (private) result first, then a public one.
            let stale = match (cache, fallback::falls_back_on(&response)) {
                (Some(cache), true) => {
                    let mut found = None;
                    for scope in [Some(&*session.id), None] {
                        if let Some(key) = cache_key(scope) {
                            found = cache.get(&key).await;
                        }
                        if found.is_some() {
                            break;
                        }
                    }
                    found
                }
                _ => None,
            };
            if let Some((stale, age)) = stale {
                self.stats.count(crate::observe::Counter::CallsStale);
                crate::observe::metrics::cache_hit("stale");
                crate::observe::metrics::degraded(&self.upstreams[upstream].name, tool_name);
                let marker = json!({
                    "source": "stale_cache",
                    "age_ms": age.as_millis() as u64,
                    "primary_error": fallback::primary_error(&response),
                });
                return Some(Response::ok(id, fallback::mark_degraded(&stale, marker)));
            }
        }
        if let (Some(uri), Ok(_)) = (subscription, &response.outcome) {
            session.set_subscribed(uri, method == method::RESOURCES_SUBSCRIBE);
        }
        Some(response)
    }

    /// Picks the upstream for a method and rewrites namespaced names.
    fn route(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(usize, Option<Box<RawValue>>), ErrorObject> {
        let catalog = self.catalog();
        match method {
            method::TOOLS_CALL | method::PROMPTS_GET => {
                let mut p = Params::split(params.as_deref()).ok_or_else(|| {
                    ErrorObject::new(code::INVALID_PARAMS, "params must be an object")
                })?;
                let name = p.str_field("name").ok_or_else(|| {
                    ErrorObject::new(code::INVALID_PARAMS, "params.name is required")
                })?;
                let target = if method == method::TOOLS_CALL {
                    catalog.tool(&name).map(|t| t.target.clone())
                } else {
                    catalog.prompt(&name).cloned()
                };
                // A name the catalog lacks still goes to the upstream its
                // prefix (or the only upstream) names: servers answer tools
                // they do not list (server-everything's conformance tools).
                // It gets no per-tool state (breaker, metric series): see
                // `Safety::listed`.
                let target = target
                    .or_else(|| self.target_by_prefix(&name))
                    .ok_or_else(|| {
                        ErrorObject::new(
                            code::INVALID_PARAMS,
                            format!(
                                "unknown {}: {name}",
                                if method == method::TOOLS_CALL {
                                    "tool"
                                } else {
                                    "prompt"
                                }
                            ),
                        )
                    })?;
                p.set("name", &target.name);
                Ok((target.upstream, Some(p.into_raw())))
            }
            method::RESOURCES_READ
            | method::RESOURCES_SUBSCRIBE
            | method::RESOURCES_UNSUBSCRIBE => {
                let uri = Params::split(params.as_deref()).and_then(|p| p.str_field("uri"));
                let uri = uri.ok_or_else(|| {
                    ErrorObject::new(code::INVALID_PARAMS, "params.uri is required")
                })?;
                let upstream = catalog
                    .resource_upstream(&uri)
                    .or_else(|| (self.upstreams.len() == 1).then_some(0))
                    .ok_or_else(|| {
                        ErrorObject::new(code::INVALID_PARAMS, format!("unknown resource: {uri}"))
                    })?;
                Ok((upstream, params))
            }
            method::COMPLETE => self.route_completion(&catalog, params),
            _ => Ok((0, params)),
        }
    }

    /// A namespaced name whose prefix names an upstream (used while that
    /// upstream is not ready, so the call waits for it instead of failing);
    /// with a single un-namespaced upstream, that upstream.
    fn target_by_prefix(&self, name: &str) -> Option<Target> {
        if self.upstreams.len() == 1 && self.prefixes[0].is_none() {
            return Some(Target {
                upstream: 0,
                name: name.to_owned(),
            });
        }
        let (prefix, rest) = name.split_once(self.separator.as_str())?;
        let upstream = self
            .prefixes
            .iter()
            .position(|p| p.as_deref() == Some(prefix))?;
        Some(Target {
            upstream,
            name: rest.to_owned(),
        })
    }

    fn route_completion(
        &self,
        catalog: &Catalog,
        params: Option<Box<RawValue>>,
    ) -> Result<(usize, Option<Box<RawValue>>), ErrorObject> {
        let mut p = Params::split(params.as_deref())
            .ok_or_else(|| ErrorObject::new(code::INVALID_PARAMS, "params must be an object"))?;
        let mut reference: Value =
            p.0.get("ref")
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .ok_or_else(|| ErrorObject::new(code::INVALID_PARAMS, "params.ref is required"))?;
        if let Some(name) = reference.get("name").and_then(Value::as_str) {
            let target = catalog
                .prompt(name)
                .cloned()
                .or_else(|| self.target_by_prefix(name))
                .ok_or_else(|| {
                    ErrorObject::new(code::INVALID_PARAMS, format!("unknown prompt: {name}"))
                })?;
            reference["name"] = json!(target.name);
            p.set("ref", &reference);
            return Ok((target.upstream, Some(p.into_raw())));
        }
        let uri = reference
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let upstream = catalog.resource_upstream(uri).unwrap_or(0);
        Ok((upstream, params))
    }

    async fn broadcast_set_level(&self, id: RequestId, params: Option<Box<RawValue>>) -> Response {
        for u in &self.upstreams {
            let Some(conn) = u.current() else { continue };
            let has_logging = conn
                .info()
                .is_some_and(|i| i.capabilities.get("logging").is_some());
            if has_logging {
                let _ = conn
                    .request(conn.next_id(), method::SET_LEVEL, params.clone())
                    .await;
            }
        }
        Response::ok(id, empty_object())
    }

    /// Handles a downstream notification: `initialized`, `cancelled` (mapped
    /// to the upstream call), or anything else (sent to every ready upstream).
    pub(crate) async fn handle_notification(&self, session: &Arc<Session>, n: Notification) {
        match n.method.as_str() {
            // Ballast initialized each upstream itself; requests are not
            // held back until this arrives, because over HTTP it races the
            // client's first request (separate POSTs).
            method::INITIALIZED => {}
            method::CANCELLED => {
                let p = Params::split(n.params.as_deref());
                let id = p
                    .as_ref()
                    .and_then(|p| p.0.get("requestId"))
                    .and_then(|r| serde_json::from_str::<RequestId>(r.get()).ok());
                let reason = p
                    .and_then(|p| p.str_field("reason"))
                    .unwrap_or_else(|| "cancelled by client".into());
                let Some((index, upstream_id)) = id.and_then(|id| session.upstream_call(&id))
                else {
                    return; // already finished: a normal race (U25)
                };
                if let Some(conn) = self.upstreams[index].current() {
                    conn.cancel(upstream_id, &reason).await;
                }
            }
            _ => {
                for u in &self.upstreams {
                    if let Some(conn) = u.current() {
                        let _ = conn.notify(&n.method, n.params.clone()).await;
                    }
                }
            }
        }
    }

    /// Handles a downstream response: the answer to a server→client request
    /// Ballast forwarded; it goes back to the upstream under its own id.
    /// Answers to requests Ballast never sent are ignored (and logged);
    /// returns false for those.
    pub(crate) async fn handle_response(&self, session: &Arc<Session>, response: Response) -> bool {
        let route = match &response.id {
            Some(RequestId::Number(n)) => {
                let mut map = self.lock_server_requests();
                match map.get(n) {
                    Some(r) if *r.session == *session.id => map.remove(n),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(route) = route else {
            tracing::debug!(session = %session.id, id = ?response.id, "response to no request Ballast sent; ignored");
            return false;
        };
        match route.conn.upgrade().filter(|c| !c.is_closed()) {
            Some(conn) => {
                let _ = conn.respond(route.upstream_id, response.outcome).await;
            }
            None => {
                tracing::debug!(session = %session.id, "answer for an upstream connection that is gone; dropped")
            }
        }
        true
    }

    /// Cancels every upstream call of a session that ended (DELETE), and
    /// answers the server→client requests it will never answer.
    pub(crate) async fn end_session(&self, session: &Session) {
        for (index, upstream_id) in session.upstream_calls() {
            if let Some(conn) = self.upstreams[index].current() {
                conn.cancel(upstream_id, "session ended").await;
            }
        }
        let orphaned: Vec<ServerRequestRoute> = {
            let mut map = self.lock_server_requests();
            let ids: Vec<i64> = map
                .iter()
                .filter(|(_, r)| r.session == session.id)
                .map(|(k, _)| *k)
                .collect();
            ids.iter().filter_map(|k| map.remove(k)).collect()
        };
        let error = ErrorObject::new(code::INTERNAL_ERROR, "the client session ended");
        for route in orphaned {
            if let Some(conn) = route.conn.upgrade() {
                let _ = conn.respond(route.upstream_id, Err(error.to_raw())).await;
            }
        }
    }

    /// Drops forwarded server→client requests whose upstream connection is
    /// gone (their answers have nowhere to go).
    pub(crate) fn purge_server_requests(&self) {
        self.lock_server_requests()
            .retain(|_, r| r.conn.upgrade().is_some_and(|c| !c.is_closed()));
    }

    /// Calls in flight whose SSE stream `unread(stream, started)` says
    /// nobody has read for the resume window: `(upstream, id, stream)`.
    pub(crate) fn abandoned_calls(
        &self,
        unread: impl Fn(&str, tokio::time::Instant) -> bool,
    ) -> Vec<(usize, u64, Arc<str>)> {
        self.lock_calls()
            .iter()
            .filter_map(|((u, id), r)| {
                let sink = r.sink.as_ref()?;
                unread(&sink.stream, r.started).then(|| (*u, *id, sink.stream.clone()))
            })
            .collect()
    }

    /// The streams of every call in flight.
    pub(crate) fn running_streams(&self) -> std::collections::HashSet<Arc<str>> {
        self.lock_calls()
            .values()
            .filter_map(|r| r.sink.as_ref().map(|s| s.stream.clone()))
            .collect()
    }

    /// Cancels one upstream call (`notifications/cancelled` upstream); its
    /// stream ends without a response.
    pub(crate) async fn cancel_call(&self, upstream: usize, id: u64, reason: &str) {
        if let Some(conn) = self.upstreams.get(upstream).and_then(|u| u.current()) {
            conn.cancel(id, reason).await;
        }
    }

    fn lock_calls(&self) -> MutexGuard<'_, HashMap<(usize, u64), Arc<CallRoute>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_server_requests(&self) -> MutexGuard<'_, HashMap<i64, ServerRequestRoute>> {
        self.server_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends one message on a call's stream, or on the session's GET stream
/// when the call has none (JSON mode). Returns false if it could not be
/// placed in any stream.
pub(crate) async fn deliver(route: &CallRoute, message: Message) -> bool {
    let bytes = message.to_bytes();
    if let Some(sink) = &route.sink
        && sink.send(bytes.clone()).await
    {
        route.session.touch();
        return true;
    }
    route.session.send_on_get_stream(bytes).await
}

/// The negotiated version for a client's `initialize` params.
pub(crate) fn negotiated_version(params: Option<&RawValue>) -> &'static str {
    let requested = params
        .and_then(|p| serde_json::from_str::<mcp::InitializeParams>(p.get()).ok())
        .map(|p| p.protocol_version)
        .unwrap_or_default();
    mcp::negotiate(&requested)
}
