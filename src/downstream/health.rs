//! `/healthz` (the process serves HTTP) and `/readyz` (every required
//! upstream is initialized and the gateway is not draining), both JSON —
//! per upstream its state (`stalled`: a child not reading its stdin), last
//! error, failed attempts, `retry_in_ms` (when the supervisor tries again)
//! and the notifications dropped because a child's queue was full;
//! `/metrics`, the Prometheus text exposition ([`crate::observe::metrics`]).
//! Not subject to Host/Origin checks: load balancers and scrapers probe by IP.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::gateway::Gateway;
use crate::upstream::UpstreamState;

/// Always 200 `{"status":"ok"}` while the process serves.
pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// 200 when ready, else 503; the body details each upstream.
pub(super) async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let upstreams: Vec<_> = gw
        .router
        .upstreams()
        .iter()
        .map(|u| {
            let now = u.state();
            let (state, detail, pid) = match &now {
                UpstreamState::Ready(c) => match c.write_stall() {
                    // A child that stopped reading its stdin (write stall).
                    Some(stalled) => (
                        "stalled",
                        Some(format!(
                            "not reading its input for {} ms",
                            stalled.as_millis()
                        )),
                        c.pid(),
                    ),
                    None => ("ready", None, c.pid()),
                },
                UpstreamState::Connecting { last_error, .. } => {
                    ("connecting", last_error.clone(), None)
                }
                UpstreamState::Parked { last_error, .. } => ("parked", last_error.clone(), None),
                UpstreamState::Stopped => ("stopped", None, None),
            };
            let (attempt, dropped) = match &now {
                UpstreamState::Connecting { attempt, .. } => (Some(*attempt), 0),
                UpstreamState::Ready(c) => (None, c.dropped_frames()),
                _ => (None, 0),
            };
            let retry_in_ms = now.retry_in().map(|d| d.as_millis() as u64);
            json!({ "name": &*u.name, "state": state, "required": u.config.required, "error": detail, "pid": pid,
                    "attempt": attempt, "retry_in_ms": retry_in_ms, "dropped_notifications": dropped })
        })
        .collect();
    let draining = gw.is_draining();
    let ready = !draining && gw.router.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "draining": draining,
        "sessions": gw.sessions.len(),
        "calls_in_flight": gw.router.calls_in_flight(),
        "streams": gw.log.len(),
        "counters": gw.stats.snapshot(),
        "upstreams": upstreams,
        "store": gw.store_status(),
    });
    (status, Json(body)).into_response()
}

/// The Prometheus text format (version 0.0.4) of every `ballast_*` metric,
/// after setting the level gauges from the gateway's current state. 404
/// when another recorder owns the process's metrics.
pub(super) async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    use crate::observe::metrics as m;
    m::levels(m::Levels {
        sessions: gw.sessions.len(),
        streams: gw.log.len(),
        calls_in_flight: gw.router.calls_in_flight(),
    });
    gw.store_status(); // sets the ballast_store_fallback gauge
    for u in gw.router.upstreams() {
        let state = u.state();
        m::upstream_state(
            &u.name,
            matches!(state, UpstreamState::Ready(_)),
            matches!(state, UpstreamState::Parked { .. }),
        );
    }
    match m::render() {
        Some(text) => (
            [(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
