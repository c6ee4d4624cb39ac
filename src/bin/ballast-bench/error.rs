//! Why a call failed, and the one classification of failures into the
//! kinds the report counts.

use std::fmt;
use std::time::Duration;

/// A boxed error from the HTTP body (hyper or a length limit).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why one exchange with the server (a call, or opening a session) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The server answered with a status other than the one expected.
    #[error("HTTP status {status}")]
    Status {
        /// The HTTP status code received.
        status: u16,
    },
    /// The JSON-RPC response carried an `error` object.
    #[error("JSON-RPC error {error}")]
    JsonRpc {
        /// The `error` object, as the server sent it.
        error: String,
    },
    /// The tool ran and returned a result with `isError: true`.
    #[error("the tool returned isError: true")]
    Tool,
    /// No answer within the per-call timeout.
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The per-call timeout that expired.
        timeout: Duration,
    },
    /// No connection to the server could be made.
    #[error("cannot connect")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The connection failed while sending or receiving.
    #[error("connection failed")]
    Io(#[source] BoxError),
    /// The answer was not a valid Streamable HTTP answer to the request.
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was wrong.
        detail: &'static str,
    },
    /// A message of the answer was not valid JSON.
    #[error("invalid JSON in the answer")]
    BadJson(#[source] serde_json::Error),
}

/// The kinds of call errors the report counts, each with a stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ErrorKind {
    /// `http_status_<code>`.
    HttpStatus(u16),
    /// `jsonrpc_error`.
    JsonRpc,
    /// `tool_error`.
    Tool,
    /// `timeout`.
    Timeout,
    /// `connect`.
    Connect,
    /// `io`.
    Io,
    /// `protocol`.
    Protocol,
}

// === impl CallError ===

impl CallError {
    /// The kind the report counts this error under.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { status } => ErrorKind::HttpStatus(*status),
            Self::JsonRpc { .. } => ErrorKind::JsonRpc,
            Self::Tool => ErrorKind::Tool,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Connect(_) => ErrorKind::Connect,
            Self::Io(_) => ErrorKind::Io,
            Self::Protocol { .. } | Self::BadJson(_) => ErrorKind::Protocol,
        }
    }

    /// Whether the server answered the call (so its latency is meaningful).
    pub(crate) fn answered(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::HttpStatus(_) | ErrorKind::JsonRpc | ErrorKind::Tool
        )
    }

    /// Classifies an error of the HTTP client's `request` future.
    pub(crate) fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            Self::Connect(e)
        } else {
            Self::Io(Box::new(e))
        }
    }
}

// === impl ErrorKind ===

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HttpStatus(code) => write!(f, "http_status_{code}"),
            Self::JsonRpc => f.write_str("jsonrpc_error"),
            Self::Tool => f.write_str("tool_error"),
            Self::Timeout => f.write_str("timeout"),
            Self::Connect => f.write_str("connect"),
            Self::Io => f.write_str("io"),
            Self::Protocol => f.write_str("protocol"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_stable() {
        let names: Vec<String> = [
            ErrorKind::HttpStatus(503),
            ErrorKind::JsonRpc,
            ErrorKind::Tool,
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Io,
            ErrorKind::Protocol,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "http_status_503",
                "jsonrpc_error",
                "tool_error",
                "timeout",
                "connect",
                "io",
                "protocol"
            ]
        );
    }
}
