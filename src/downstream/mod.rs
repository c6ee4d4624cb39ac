//! The downstream side: the HTTP routes clients connect to.
//!
//! - `post.rs` — `POST /mcp` (messages in; JSON or SSE answers).
//! - `get.rs` — `GET /mcp` (server→client stream, resume) and `DELETE /mcp`.
//! - `legacy_sse.rs` — the 2024-11-05 HTTP+SSE transport (`/sse`, `/message`).
//! - `sse.rs` — stream ids, event ids, priming and keep-alive.
//! - `session.rs` — sessions and their in-flight requests.
//! - `guard.rs` — Host/Origin/Accept/Content-Type/version checks.
//! - `cors.rs` — CORS preflight and headers for allowed origins.
//! - `error.rs` — refusals mapped to HTTP status + JSON-RPC error.
//! - `health.rs` — `/healthz` and `/readyz`.

mod cors;
mod error;
mod get;
mod guard;
mod health;
mod legacy_sse;
mod post;
mod readers;
mod session;
mod sse;
mod takeover;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use http::HeaderMap;

pub use self::error::DownstreamError;
pub use self::guard::{SESSION_HEADER, VERSION_HEADER};
pub use self::legacy_sse::{MESSAGE_PATH, SSE_PATH};
pub use self::readers::{ReaderLease, Readers};
pub use self::session::{BeginError, Session, Sessions, Sink};
use crate::gateway::Gateway;

/// The axum router: the MCP endpoint at `server.path`, plus `/healthz` and
/// `/readyz`. Usable in-process (tower `oneshot`) or behind a listener.
pub fn routes(gw: Arc<Gateway>) -> Router {
    let path = gw.config.server.path.clone();
    Router::new()
        .route(
            &path,
            post(post::post)
                .get(get::get)
                .delete(get::delete)
                .options(cors::preflight),
        )
        .route(
            legacy_sse::SSE_PATH,
            get(legacy_sse::open).options(cors::preflight),
        )
        .route(
            legacy_sse::MESSAGE_PATH,
            post(legacy_sse::message).options(cors::preflight),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            cors::layer,
        ))
        .with_state(gw)
}

/// The session named by `Mcp-Session-Id`: held here, or loaded from the
/// session store (a session another replica created).
///
/// # Errors
/// [`DownstreamError::MissingSession`] (400) without the header,
/// [`DownstreamError::UnknownSession`] (404) if unknown or ended.
async fn session_of(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<Session>, DownstreamError> {
    let id = headers
        .get(SESSION_HEADER)
        .ok_or(DownstreamError::MissingSession)?
        .to_str()
        .map_err(|_| DownstreamError::UnknownSession)?;
    if let Some(s) = gw.sessions.get(id) {
        return Ok(s);
    }
    let record = gw
        .session_store
        .load(id)
        .await?
        .ok_or(DownstreamError::UnknownSession)?;
    let session = Arc::new(Session::restore(&record));
    gw.sessions.insert(session.clone());
    tracing::info!(session = %session.id, "session loaded from the store");
    Ok(session)
}
