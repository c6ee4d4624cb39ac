//! The one place that decides what a call's outcome means (DESIGN.md
//! "failure class"): by error kind, HTTP status, JSON-RPC code and
//! `isError` — never by message text.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{Response, code};
use crate::upstream::UpstreamError;

/// What a call's outcome means for retry, breakers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// A result (not `isError`).
    Success,
    /// Retry may help: the upstream was unavailable or overloaded.
    Transient,
    /// Retry will not help: the request itself is wrong or not allowed.
    Permanent,
    /// The tool ran and returned `isError: true`.
    ToolError,
    /// Served from a fallback or stale cache.
    Degraded,
    /// The request reached the upstream and no answer came: side effects
    /// are possible.
    OutcomeUnknown,
}

/// A classified outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The class.
    pub class: FailureClass,
    /// Whether the request may have reached the upstream (so repeating it
    /// may repeat its effects).
    pub reached: bool,
}

impl FailureClass {
    /// Stable lowercase name for metrics, logs and error `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Success => "success",
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
            FailureClass::ToolError => "tool_error",
            FailureClass::Degraded => "degraded",
            FailureClass::OutcomeUnknown => "outcome_unknown",
        }
    }

    /// The `/readyz` counter of a call that finished with this class
    /// (`calls.<as_str>`).
    pub fn counter(self) -> crate::observe::Counter {
        use crate::observe::Counter;
        match self {
            FailureClass::Success => Counter::CallsSuccess,
            FailureClass::Transient => Counter::CallsTransient,
            FailureClass::Permanent => Counter::CallsPermanent,
            FailureClass::ToolError => Counter::CallsToolError,
            FailureClass::Degraded => Counter::CallsDegraded,
            FailureClass::OutcomeUnknown => Counter::CallsOutcomeUnknown,
        }
    }
}

#[derive(Deserialize)]
struct ErrorCode {
    code: i64,
}

#[derive(Deserialize)]
struct IsError {
    #[serde(default, rename = "isError")]
    is_error: bool,
}

/// Classifies one attempt's outcome.
pub fn classify(outcome: &Result<Response, UpstreamError>) -> Verdict {
    let v = |class, reached| Verdict { class, reached };
    match outcome {
        Ok(response) => match &response.outcome {
            Ok(result) => {
                if is_error_result(result) {
                    v(FailureClass::ToolError, true)
                } else {
                    v(FailureClass::Success, true)
                }
            }
            Err(error) => {
                let code = serde_json::from_str::<ErrorCode>(error.get())
                    .map(|e| e.code)
                    .ok();
                match code {
                    Some(
                        code::INVALID_REQUEST
                        | code::METHOD_NOT_FOUND
                        | code::INVALID_PARAMS
                        | code::PARSE_ERROR,
                    ) => v(FailureClass::Permanent, true),
                    // The server handled the request and failed: it may have
                    // had effects, so only safe calls are repeated.
                    _ => v(FailureClass::Transient, true),
                }
            }
        },
        Err(e) => match e {
            // Never sent.
            UpstreamError::Spawn { .. }
            | UpstreamError::NotConnected
            | UpstreamError::Unavailable { .. }
            | UpstreamError::InputFull { .. } => v(FailureClass::Transient, false),
            UpstreamError::Http(err) if err.is_connect() => v(FailureClass::Transient, false),
            UpstreamError::HttpStatus { status, .. } => match status {
                429 | 502 | 503 | 504 => v(FailureClass::Transient, false),
                401 | 403 => v(FailureClass::Permanent, false),
                400..=499 => v(FailureClass::Permanent, false),
                _ => v(FailureClass::OutcomeUnknown, true),
            },
            // Sent, and then the answer never came.
            UpstreamError::Http(_) | UpstreamError::Closed | UpstreamError::Timeout { .. } => {
                v(FailureClass::OutcomeUnknown, true)
            }
            UpstreamError::Protocol(_) | UpstreamError::Cancelled => {
                v(FailureClass::Permanent, true)
            }
        },
    }
}

/// Whether a tool result says `isError: true`.
pub fn is_error_result(result: &RawValue) -> bool {
    serde_json::from_str::<IsError>(result.get()).is_ok_and(|r| r.is_error)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jsonrpc::{ErrorObject, RequestId};

    #[test]
    fn each_class_counts_under_calls_and_its_name() {
        for class in [
            FailureClass::Success,
            FailureClass::Transient,
            FailureClass::Permanent,
            FailureClass::ToolError,
            FailureClass::Degraded,
            FailureClass::OutcomeUnknown,
        ] {
            assert_eq!(class.counter().key(), format!("calls.{}", class.as_str()));
        }
    }

    fn ok(json: &str) -> Result<Response, UpstreamError> {
        Ok(Response::ok(
            RequestId::Number(1),
            RawValue::from_string(json.into()).unwrap(),
        ))
    }

    fn rpc_err(code: i64) -> Result<Response, UpstreamError> {
        Ok(Response::err(
            Some(RequestId::Number(1)),
            &ErrorObject::new(code, "whatever the text says"),
        ))
    }

    #[test]
    fn classification_table() {
        use FailureClass::*;
        let rows: Vec<(&str, Result<Response, UpstreamError>, FailureClass, bool)> = vec![
            ("result", ok(r#"{"content":[]}"#), Success, true),
            (
                "isError result",
                ok(r#"{"content":[],"isError":true}"#),
                ToolError,
                true,
            ),
            ("isError false", ok(r#"{"isError":false}"#), Success, true),
            ("-32600", rpc_err(-32600), Permanent, true),
            ("-32601", rpc_err(-32601), Permanent, true),
            ("-32602", rpc_err(-32602), Permanent, true),
            ("-32603 internal", rpc_err(-32603), Transient, true),
            ("server error", rpc_err(-32000), Transient, true),
            (
                "not connected",
                Err(UpstreamError::NotConnected),
                Transient,
                false,
            ),
            (
                "parked or reconnecting",
                Err(UpstreamError::Unavailable {
                    state: "parked",
                    detail: None,
                    retry_after: Duration::from_secs(1),
                }),
                Transient,
                false,
            ),
            (
                "child not reading its input",
                Err(UpstreamError::InputFull { stalled_for: None }),
                Transient,
                false,
            ),
            (
                "HTTP 429",
                Err(UpstreamError::HttpStatus {
                    status: 429,
                    retry_after: None,
                }),
                Transient,
                false,
            ),
            (
                "HTTP 502",
                Err(UpstreamError::HttpStatus {
                    status: 502,
                    retry_after: None,
                }),
                Transient,
                false,
            ),
            (
                "HTTP 503",
                Err(UpstreamError::HttpStatus {
                    status: 503,
                    retry_after: None,
                }),
                Transient,
                false,
            ),
            (
                "HTTP 504",
                Err(UpstreamError::HttpStatus {
                    status: 504,
                    retry_after: None,
                }),
                Transient,
                false,
            ),
            (
                "HTTP 401",
                Err(UpstreamError::HttpStatus {
                    status: 401,
                    retry_after: None,
                }),
                Permanent,
                false,
            ),
            (
                "HTTP 403",
                Err(UpstreamError::HttpStatus {
                    status: 403,
                    retry_after: None,
                }),
                Permanent,
                false,
            ),
            (
                "HTTP 500",
                Err(UpstreamError::HttpStatus {
                    status: 500,
                    retry_after: None,
                }),
                OutcomeUnknown,
                true,
            ),
            (
                "connection lost after send",
                Err(UpstreamError::Closed),
                OutcomeUnknown,
                true,
            ),
            (
                "timeout",
                Err(UpstreamError::Timeout {
                    timeout: Duration::from_secs(1),
                }),
                OutcomeUnknown,
                true,
            ),
            (
                "protocol violation",
                Err(UpstreamError::Protocol("x".into())),
                Permanent,
                true,
            ),
            ("cancelled", Err(UpstreamError::Cancelled), Permanent, true),
        ];
        for (name, outcome, class, reached) in rows {
            assert_eq!(classify(&outcome), Verdict { class, reached }, "{name}");
        }
    }
}
