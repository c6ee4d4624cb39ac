//! CORS for browser-based clients, driven by `server.allowed_origins`
//! (the Fetch standard's CORS protocol; issue 13 item 19).
//!
//! - A preflight (`OPTIONS` on an MCP endpoint) from an allowed origin gets
//!   204 with `Access-Control-Allow-Origin` (the request's own origin, with
//!   `Vary: Origin`), the methods and request headers MCP uses, and a
//!   `Max-Age` so browsers cache it.
//! - Every answer to a request whose `Origin` is allowed carries
//!   `Access-Control-Allow-Origin` and exposes `Mcp-Session-Id` (the one
//!   MCP header Ballast sends), so a page can read the session id and the
//!   JSON-RPC error bodies of refusals.
//! - A disallowed origin gets no CORS headers at all: its preflight and its
//!   requests get the usual 403 (DNS-rebinding protection, SPEC.md 18).
//!
//! No credentials mode: MCP authenticates with headers, not cookies.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::guard;
use crate::gateway::Gateway;

/// Methods a page may use on an MCP endpoint.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a page may send: the MCP ones, `Last-Event-ID` for
/// resumption and `Authorization` for bearer tokens.
const ALLOW_HEADERS: &str =
    "content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, authorization";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "Mcp-Session-Id";
/// How long a browser may cache a preflight, in seconds (2 h: Chromium's cap).
const MAX_AGE_SECS: u32 = 7200;

/// `OPTIONS` on an MCP endpoint. From an allowed origin (and `Host`): 204
/// with the preflight headers. Without `Origin`: 204 with `Allow`.
///
/// # Errors
/// 403 ([`super::DownstreamError::ForbiddenOrigin`] or `ForbiddenHost`)
/// for a foreign origin or host, with no CORS headers.
pub(super) async fn preflight(
    State(gw): State<Arc<Gateway>>,
    request: Request,
) -> Result<Response, super::DownstreamError> {
    guard::check_host_and_origin(
        request.headers(),
        request.uri().authority(),
        &gw.config.server,
    )?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW_METHODS));
    if request.headers().contains_key(header::ORIGIN) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECS),
        );
    }
    // `Access-Control-Allow-Origin` and `Vary` come from [`layer`].
    Ok(resp)
}

/// Middleware over every route: an answer to a request whose `Origin` is
/// allowed gets `Access-Control-Allow-Origin: <that origin>`,
/// `Access-Control-Expose-Headers` and `Vary: Origin`.
pub(super) async fn layer(
    State(gw): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = allowed_origin(request.headers(), &gw.config.server.allowed_origins);
    let mut resp = next.run(request).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// The request's `Origin`, if it is in `allowed`.
fn allowed_origin(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    guard::origin_allowed(text, allowed).then(|| origin.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    #[test]
    fn only_allowed_origins_are_echoed() {
        let allowed = ServerConfig::default().allowed_origins;
        let mut h = HeaderMap::new();
        assert_eq!(allowed_origin(&h, &allowed), None);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:3000"),
        );
        assert_eq!(
            allowed_origin(&h, &allowed),
            Some(HeaderValue::from_static("http://localhost:3000"))
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost.evil.com"),
        );
        assert_eq!(allowed_origin(&h, &allowed), None);
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(allowed_origin(&h, &allowed), None);
    }
}
