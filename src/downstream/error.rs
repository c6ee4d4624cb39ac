//! Downstream request errors and their one mapping to HTTP status and
//! JSON-RPC error (always a JSON body, never HTML).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::jsonrpc::{ErrorObject, ParseError, RequestId, code};

/// Why a downstream HTTP request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// `Host` not in `server.allowed_hosts` (DNS rebinding, SPEC.md 18).
    #[error("Host header not allowed")]
    ForbiddenHost,
    /// `Origin` not in `server.allowed_origins` (SPEC.md 18).
    #[error("Origin not allowed")]
    ForbiddenOrigin,
    /// POST without `Content-Type: application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// `Accept` allows neither JSON nor SSE (or no SSE on GET).
    #[error("Accept must allow {0}")]
    NotAcceptable(&'static str),
    /// Body over `server.max_body_bytes`.
    #[error("body exceeds {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The configured limit, in bytes.
        limit_bytes: usize,
    },
    /// The body did not arrive in full within `server.body_read_timeout`
    /// (408; the connection is closed).
    #[error("request body not received within {} ms", timeout.as_millis())]
    BodyTimeout {
        /// The configured `body_read_timeout`.
        timeout: std::time::Duration,
    },
    /// `initialize` params over `server.max_initialize_bytes` (400, JSON-RPC
    /// -32602 invalid params: they are what a session keeps).
    #[error("initialize params exceed {limit_bytes} bytes (server.max_initialize_bytes)")]
    InitializeTooLarge {
        /// The `initialize` request's id.
        id: RequestId,
        /// The configured limit, in bytes.
        limit_bytes: usize,
    },
    /// The body could not be read from the connection.
    #[error("body could not be read")]
    BodyRead,
    /// The body is not JSON-RPC.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Batches are refused for clients of 2025-06-18 or newer.
    #[error("batches are not supported by protocol version {0}")]
    BatchNotAllowed(&'static str),
    /// No `Mcp-Session-Id` on a request that needs one (SPEC.md 10).
    #[error("Mcp-Session-Id header is required")]
    MissingSession,
    /// No `sessionId` query parameter on a 2024-11-05 `POST /message`.
    #[error(
        "the sessionId query parameter is required (the endpoint event of GET /sse gives the URL to POST to)"
    )]
    MissingSessionQuery,
    /// Unknown, ended or expired session (SPEC.md 11): re-initialize.
    #[error("session not found")]
    UnknownSession,
    /// Invalid or unsupported `MCP-Protocol-Version` (SPEC.md 7).
    #[error("unsupported MCP-Protocol-Version: {0}")]
    BadProtocolVersion(String),
    /// The same request id is already in flight in this session (SPEC.md 13).
    #[error("request id {0} is already in flight in this session")]
    DuplicateRequestId(RequestId),
    /// The gateway is draining: no new sessions or calls.
    #[error("gateway is shutting down")]
    Draining,
    /// `server.max_sessions` reached.
    #[error("too many sessions")]
    TooManySessions,
    /// `server.max_requests_per_session` reached in this session.
    #[error("too many requests in flight in this session")]
    TooManyRequests,
    /// The session's rate limit was reached.
    #[error("rate limit reached; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// Until the next request is allowed.
        retry_after: std::time::Duration,
    },
    /// The event log failed.
    #[error("stream store unavailable")]
    Store(#[from] crate::store::StoreError),
}

impl DownstreamError {
    /// HTTP status and JSON-RPC code: the single mapping.
    pub fn status_and_code(&self) -> (StatusCode, i64) {
        use DownstreamError as E;
        match self {
            E::ForbiddenHost | E::ForbiddenOrigin => (StatusCode::FORBIDDEN, code::INVALID_REQUEST),
            E::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, code::INVALID_REQUEST),
            E::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, code::INVALID_REQUEST),
            E::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, code::INVALID_REQUEST),
            E::BodyRead => (StatusCode::BAD_REQUEST, code::PARSE_ERROR),
            E::InitializeTooLarge { .. } => (StatusCode::BAD_REQUEST, code::INVALID_PARAMS),
            E::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, code::INVALID_REQUEST),
            E::Parse(p) => (StatusCode::BAD_REQUEST, p.code()),
            E::BatchNotAllowed(_) => (StatusCode::BAD_REQUEST, code::INVALID_REQUEST),
            E::MissingSession | E::MissingSessionQuery => {
                (StatusCode::BAD_REQUEST, code::INVALID_REQUEST)
            }
            E::UnknownSession => (StatusCode::NOT_FOUND, code::INVALID_REQUEST),
            E::BadProtocolVersion(_) => (StatusCode::BAD_REQUEST, code::INVALID_REQUEST),
            E::DuplicateRequestId(_) => (StatusCode::BAD_REQUEST, code::INVALID_REQUEST),
            E::Draining => (StatusCode::SERVICE_UNAVAILABLE, code::DRAINING),
            E::TooManySessions | E::Store(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, code::INTERNAL_ERROR)
            }
            E::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, code::INTERNAL_ERROR),
            E::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED),
        }
    }
}

impl IntoResponse for DownstreamError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let id = match &self {
            DownstreamError::DuplicateRequestId(id)
            | DownstreamError::InitializeTooLarge { id, .. } => Some(id.clone()),
            _ => None,
        };
        let mut error = ErrorObject::new(code, self.to_string());
        if let DownstreamError::InitializeTooLarge { limit_bytes, .. } = &self {
            error.data = Some(serde_json::json!({ "max_initialize_bytes": limit_bytes }));
        }
        let retry_after_secs = match &self {
            DownstreamError::RateLimited { retry_after } => {
                let ms = u64::try_from(retry_after.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                error.data = Some(serde_json::json!({ "retry_after_ms": ms }));
                Some(ms.div_ceil(1000))
            }
            DownstreamError::Draining
            | DownstreamError::TooManySessions
            | DownstreamError::TooManyRequests => Some(1),
            _ => None,
        };
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error });
        let mut resp = (status, Json(body)).into_response();
        if matches!(self, DownstreamError::BodyTimeout { .. }) {
            // The rest of the body may still be on its way: HTTP/1 cannot
            // reuse the connection (HTTP/2 drops this header and resets
            // only the stream).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
