//! `/healthz` (the process serves HTTP) and `/readyz` (every required
//! upstream is initialized and the gateway is not draining), both JSON.
//! Not subject to Host/Origin checks: load balancers probe by IP.

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
            let (state, detail, pid) = match u.state() {
                UpstreamState::Ready(c) => ("ready", None, c.pid()),
                UpstreamState::Connecting { last_error, .. } => ("connecting", last_error, None),
                UpstreamState::Parked { last_error, .. } => ("parked", last_error, None),
                UpstreamState::Stopped => ("stopped", None, None),
            };
            json!({ "name": &*u.name, "state": state, "required": u.config.required, "error": detail, "pid": pid })
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
    });
    (status, Json(body)).into_response()
}
