//! Errors of the upstream layer, classified by kind (never by message text).

use std::time::Duration;

use serde_json::json;

use crate::jsonrpc::{ErrorObject, code};

/// Why a request to an upstream produced no upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The stdio child could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The upstream is not connected (starting, restarting, or stopped).
    #[error("upstream is not connected")]
    NotConnected,
    /// The connection ended before the answer came; the request may have
    /// reached the upstream (outcome unknown).
    #[error("upstream connection closed before the answer")]
    Closed,
    /// No answer within the request timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The remote upstream answered with a non-success HTTP status.
    #[error("upstream answered HTTP {status}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The `Retry-After` the upstream sent (delay-seconds form), if any.
        retry_after: Option<Duration>,
    },
    /// The HTTP request to the remote upstream failed (connect, TLS, I/O).
    #[error("HTTP transport: {0}")]
    Http(#[from] reqwest::Error),
    /// The upstream broke the protocol (e.g. unparseable `initialize` result).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The request was cancelled (by the downstream client or the drain).
    #[error("cancelled")]
    Cancelled,
    /// A stdio child's input queue had no room until the request's deadline,
    /// or the child is known to have stopped reading (a write stall, for
    /// `stalled_for`): the message was never written. Not retried: the
    /// next attempt would wait the same way.
    #[error("not sent: the child is not reading its input{}", stalled_for.map(|d| format!(" (for {} ms)", d.as_millis())).unwrap_or_default())]
    InputFull {
        /// How long the child has not been reading, if a stall was detected.
        stalled_for: Option<Duration>,
    },
    /// Refused without waiting: the upstream is parked (a crash-looping
    /// child) or reconnecting after failed attempts (a remote upstream that
    /// is down, a child that cannot start). Never sent.
    #[error("upstream is {state}{}; retry in {} ms", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), retry_after.as_millis())]
    Unavailable {
        /// `parked` or `reconnecting`.
        state: &'static str,
        /// Why: the last failure (e.g. `connection refused`,
        /// `5 crashes within 60s`).
        detail: Option<String>,
        /// When the supervisor tries again (end of parking, next attempt).
        retry_after: Duration,
    },
}

impl UpstreamError {
    /// The error for a non-success HTTP answer, with its `Retry-After`
    /// (delay-seconds form; an HTTP-date is ignored).
    pub fn from_status(resp: &reqwest::Response) -> Self {
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        UpstreamError::HttpStatus {
            status: resp.status().as_u16(),
            retry_after,
        }
    }

    /// How long the upstream asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The message with its innermost cause appended when the message does
    /// not show it (reqwest's says `error sending request for url (…)`
    /// and hides `Connection refused`): for logs, `/readyz` and `data.detail`.
    pub fn with_cause(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        let mut innermost = None;
        while let Some(c) = cause {
            innermost = Some(c);
            cause = c.source();
        }
        if let Some(c) = innermost.map(ToString::to_string)
            && !text.ends_with(&c)
        {
            text.push_str(": ");
            text.push_str(&c);
        }
        text
    }

    /// Whether this is nobody listening at a remote upstream's address
    /// (connection refused or connect timeout): the request never left, and
    /// the connection is the supervisor's to re-establish.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpstreamError::Http(e) if e.is_connect())
    }

    /// Whether the failure is supervision's business (a lost or absent
    /// connection, restarts and parking) rather than a sign of bad answers,
    /// so it feeds no circuit breaker: one crash fails every call in flight
    /// at once, and a remote upstream that is down is reconnected.
    pub fn is_supervised(&self) -> bool {
        self.is_unreachable()
            || matches!(
                self,
                UpstreamError::Closed
                    | UpstreamError::NotConnected
                    | UpstreamError::Cancelled
                    | UpstreamError::Unavailable { .. }
            )
    }

    /// Whether another attempt now cannot help: the upstream is parked or
    /// reconnecting (the client gets `retry_after_ms` instead), or a stdio
    /// child is not reading its input (a retry would wait its deadline again).
    pub fn retry_cannot_help(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unavailable { .. } | UpstreamError::InputFull { .. }
        )
    }

    /// A short stable name for logs, metrics and error `data`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Spawn { .. } => "spawn",
            UpstreamError::NotConnected => "not_connected",
            UpstreamError::Closed => "closed",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::HttpStatus { .. } => "http_status",
            UpstreamError::Http(_) => "http_transport",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Cancelled => "cancelled",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::InputFull { .. } => "input_full",
        }
    }

    /// The JSON-RPC error a downstream client receives for this failure of
    /// upstream `upstream`. Detail beyond the kind stays in the log.
    pub fn to_error_object(&self, upstream: &str) -> ErrorObject {
        let mut e = ErrorObject::new(
            code::UPSTREAM_UNAVAILABLE,
            format!("upstream {upstream:?}: {self}"),
        );
        let mut data = json!({ "upstream": upstream, "kind": self.kind() });
        if let UpstreamError::HttpStatus {
            status,
            retry_after,
        } = self
        {
            data["status"] = json!(status);
            if let Some(wait) = retry_after {
                data["retry_after_ms"] = json!(wait.as_millis() as u64);
            }
        }
        if let UpstreamError::Unavailable {
            state,
            detail,
            retry_after,
        } = self
        {
            data["state"] = json!(state);
            data["detail"] = json!(detail);
            data["retry_after_ms"] = json!(retry_after.as_millis() as u64);
        }
        if let UpstreamError::InputFull {
            stalled_for: Some(stalled),
        } = self
        {
            data["stalled_ms"] = json!(stalled.as_millis() as u64);
        }
        e.data = Some(data);
        e
    }
}
