//! Upstream → downstream: what upstreams send on their own.
//!
//! Ownership of a message (which session it belongs to) is decided, in
//! order, by: the request whose response stream carried it (HTTP
//! upstreams); the `progressToken` (progress notifications); otherwise, if
//! exactly one session has calls in flight on that upstream, that session.
//! A server→client request with no owner is answered with an error — it is
//! never broadcast (SPEC.md 6). Catalog changes and unowned notifications go
//! to every session's GET stream.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde_json::json;
use tokio::sync::mpsc;

use super::{CallRoute, Router, ServerRequestRoute, deliver};
use crate::downstream::Sessions;
use crate::jsonrpc::{ErrorObject, Message, Notification, Request, RequestId, code, to_raw};
use crate::mcp::{Params, method};
use crate::upstream::{Connection, UpstreamEvent};

impl Router {
    /// Consumes upstream events until every sender is gone.
    pub(crate) async fn run_events(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<UpstreamEvent>,
        sessions: Arc<Sessions>,
    ) {
        while let Some(event) = rx.recv().await {
            // `handled` drops once the message is placed, releasing the
            // connection to handle its next message (upstream order kept).
            match event {
                UpstreamEvent::Notification {
                    upstream,
                    notification,
                    origin,
                    handled: _handled,
                } => {
                    self.on_notification(upstream, notification, origin, &sessions)
                        .await
                }
                UpstreamEvent::Request {
                    upstream,
                    request,
                    origin,
                    conn,
                    handled: _handled,
                } => self.on_request(upstream, request, origin, conn).await,
                UpstreamEvent::StateChanged { upstream } => {
                    self.purge_server_requests();
                    // Tell every client when the tools they see changed: an
                    // upstream parked (its tools hidden) or back (re-announced).
                    let fingerprint = self.catalog().tools_fingerprint();
                    if self.announced.swap(fingerprint, Ordering::SeqCst) != fingerprint {
                        tracing::info!(upstream = %self.upstreams[upstream].name, "tool list changed; notifying clients");
                        broadcast(&sessions, method::TOOLS_LIST_CHANGED).await;
                    }
                }
            }
        }
    }

    /// The route of the call that owns a message from `upstream`.
    fn owner(&self, upstream: usize, origin: Option<u64>) -> Option<Arc<CallRoute>> {
        let calls = self.lock_calls();
        if let Some(origin) = origin {
            return calls.get(&(upstream, origin)).cloned();
        }
        let mut found: Option<(&u64, &Arc<CallRoute>)> = None;
        for ((u, id), route) in calls.iter() {
            if *u != upstream {
                continue;
            }
            match found {
                Some((_, r)) if r.session.id != route.session.id => return None, // ambiguous
                Some((best, _)) if best >= id => {}
                _ => found = Some((id, route)),
            }
        }
        found.map(|(_, r)| r.clone())
    }

    /// Marks every call of `session` in flight on `upstream` as having
    /// asked its client something (its result is caller-dependent).
    fn mark_asked_client(&self, upstream: usize, session: &str) {
        for ((u, _), route) in self.lock_calls().iter() {
            if *u == upstream && *route.session.id == *session {
                route.asked_client.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn on_notification(
        &self,
        upstream: usize,
        n: Notification,
        origin: Option<u64>,
        sessions: &Sessions,
    ) {
        match n.method.as_str() {
            method::PROGRESS => {
                let Some(mut p) = Params::split(n.params.as_deref()) else {
                    return;
                };
                let token =
                    p.0.get("progressToken")
                        .and_then(|t| serde_json::from_str::<u64>(t.get()).ok());
                let route = token.and_then(|t| self.lock_calls().get(&(upstream, t)).cloned());
                let Some(route) = route else { return }; // progress for a finished call
                route.progress.notify_one();
                let floor = route.sink.as_ref().and_then(|s| s.progress_floor);
                if let Some(floor) = floor {
                    let progress =
                        p.0.get("progress")
                            .and_then(|v| serde_json::from_str::<f64>(v.get()).ok());
                    if progress.is_none_or(|v| v <= floor) {
                        return; // the client saw this far already (a call re-run)
                    }
                }
                let Some(original) = &route.progress_token else {
                    return;
                };
                p.0.insert("progressToken".into(), original.clone());
                let message = Message::Notification(Notification {
                    method: n.method,
                    params: Some(p.into_raw()),
                });
                if !deliver(&route, message).await {
                    tracing::debug!(session = %route.session.id, "progress dropped: no open stream");
                }
            }
            method::TOOLS_LIST_CHANGED
            | method::PROMPTS_LIST_CHANGED
            | method::RESOURCES_LIST_CHANGED => {
                let u = self.upstreams[upstream].clone();
                let sessions = sessions.all();
                tokio::spawn(async move {
                    if let Some(conn) = u.current() {
                        u.refresh_lists(&conn).await;
                    }
                    let bytes = Message::Notification(n).to_bytes();
                    for s in sessions {
                        s.send_on_get_stream(bytes.clone()).await;
                    }
                });
            }
            method::CANCELLED => {
                // The upstream withdrew a server→client request it sent.
                let id = Params::split(n.params.as_deref()).and_then(|p| {
                    p.0.get("requestId")
                        .and_then(|r| serde_json::from_str::<RequestId>(r.get()).ok())
                });
                let Some(id) = id else { return };
                let found = {
                    let mut map = self.lock_server_requests();
                    let key = map
                        .iter()
                        .find(|(_, r)| r.upstream == upstream && r.upstream_id == id)
                        .map(|(k, _)| *k);
                    key.and_then(|k| map.remove(&k).map(|r| (k, r)))
                };
                if let Some((downstream_id, route)) = found
                    && let Some(session) = sessions.get(&route.session)
                {
                    let params = to_raw(
                        &json!({ "requestId": downstream_id, "reason": "cancelled by upstream" }),
                    );
                    let bytes = Message::Notification(Notification {
                        method: n.method,
                        params: Some(params),
                    })
                    .to_bytes();
                    session.send_on_get_stream(bytes).await;
                }
            }
            method::RESOURCES_UPDATED => {
                // Only to the sessions that subscribed to that URI.
                let uri = Params::split(n.params.as_deref()).and_then(|p| p.str_field("uri"));
                let Some(uri) = uri else { return };
                let bytes = Message::Notification(n).to_bytes();
                for s in sessions.all().into_iter().filter(|s| s.is_subscribed(&uri)) {
                    s.send_on_get_stream(bytes.clone()).await;
                }
            }
            _ => match self.owner(upstream, origin) {
                Some(route) => {
                    deliver(&route, Message::Notification(n)).await;
                }
                // Never broadcast what may concern one client only (SPEC.md 6).
                None => {
                    tracing::debug!(method = %n.method, "upstream notification with no owning session; dropped")
                }
            },
        }
    }

    async fn on_request(
        &self,
        upstream: usize,
        request: Request,
        origin: Option<u64>,
        conn: Weak<Connection>,
    ) {
        let Some(route) = self.owner(upstream, origin) else {
            let roots = &self.upstreams[upstream].config.roots;
            if request.method == method::ROOTS_LIST && !roots.is_empty() {
                // Nobody to ask: the roots this upstream is configured with.
                let roots: Vec<_> = roots.iter().map(|uri| json!({ "uri": uri })).collect();
                if let Some(conn) = conn.upgrade() {
                    let result = to_raw(&json!({ "roots": roots }));
                    let _ = conn.respond(request.id, Ok(result)).await;
                }
                return;
            }
            let error = ErrorObject::new(
                code::INTERNAL_ERROR,
                "Ballast cannot tell which client this request is for: no single session has a call in flight on this upstream",
            );
            reject(&conn, request.id, &error).await;
            return;
        };
        // The answer will shape the result of the call that asked (over
        // stdio: of any of this session's calls on the upstream), so such
        // results are for this client only and never cached.
        self.mark_asked_client(upstream, &route.session.id);
        let downstream_id = self.next_server_request_id.fetch_add(1, Ordering::Relaxed);
        self.lock_server_requests().insert(
            downstream_id,
            ServerRequestRoute {
                session: route.session.id.clone(),
                upstream,
                upstream_id: request.id.clone(),
                conn: conn.clone(),
            },
        );
        let message = Message::Request(Request {
            id: RequestId::Number(downstream_id),
            method: request.method,
            params: request.params,
        });
        if !deliver(&route, message).await {
            self.lock_server_requests().remove(&downstream_id);
            let error = ErrorObject::new(
                code::INTERNAL_ERROR,
                "the client has no open stream to receive this request",
            );
            reject(&conn, request.id, &error).await;
        }
    }
}

/// Answers a server→client request with an error, on the connection that sent it.
async fn reject(conn: &Weak<Connection>, id: RequestId, error: &ErrorObject) {
    tracing::debug!(%id, message = %error.message, "server→client request rejected");
    if let Some(conn) = conn.upgrade() {
        let _ = conn.respond(id, Err(error.to_raw())).await;
    }
}

async fn broadcast(sessions: &Sessions, method: &str) {
    let bytes = Message::Notification(Notification {
        method: method.to_owned(),
        params: None,
    })
    .to_bytes();
    for s in sessions.all() {
        s.send_on_get_stream(bytes.clone()).await;
    }
}
