//! JSON-RPC 2.0 envelopes as MCP uses them (SPEC.md items 1, 8, 13).
//!
//! Ballast decodes only the envelope — `id`, `method` and where the payload
//! sits — and keeps `params`, `result` and `error` as raw JSON
//! ([`RawValue`]), so unknown methods and fields pass through byte for byte.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// JSON-RPC error codes used by Ballast (JSON-RPC 2.0 §5.1 and MCP).
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal JSON-RPC error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Ballast: the upstream that owns the call is not available
    /// (not connected yet, exited, or its transport failed).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
    /// Ballast: the gateway is draining and takes no new work.
    pub const DRAINING: i64 = -32002;
    /// Ballast: a circuit breaker is open; the call was not sent.
    pub const CIRCUIT_OPEN: i64 = -32003;
    /// Ballast: the bulkhead is full; the call was not sent.
    pub const BULKHEAD_FULL: i64 = -32004;
    /// Ballast: a rate limit was reached; the call was not sent.
    pub const RATE_LIMITED: i64 = -32005;
}

/// A JSON-RPC request id: a string or an integer, never null (SPEC.md 13).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// An integer id.
    Number(i64),
    /// A string id.
    String(Arc<str>),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// One JSON-RPC message, classified by shape.
#[derive(Debug)]
pub enum Message {
    /// Has `id` and `method`: expects a response.
    Request(Request),
    /// Has `method`, no `id`: no response.
    Notification(Notification),
    /// Has `id` and `result` or `error`.
    Response(Response),
}

/// A request: `{"jsonrpc":"2.0","id":…,"method":…,"params":…}`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The sender's id for this request.
    pub id: RequestId,
    /// The method name, e.g. `tools/call`.
    pub method: String,
    /// Raw params, untouched.
    pub params: Option<Box<RawValue>>,
}

/// A notification: `{"jsonrpc":"2.0","method":…,"params":…}`.
#[derive(Debug)]
pub struct Notification {
    /// The method name, e.g. `notifications/progress`.
    pub method: String,
    /// Raw params, untouched.
    pub params: Option<Box<RawValue>>,
}

/// A response: `{"jsonrpc":"2.0","id":…,"result":…}` or `…"error":…}`.
#[derive(Debug)]
pub struct Response {
    /// The id of the request this answers. `None` only for error responses
    /// to messages whose id could not be read (JSON-RPC 2.0 §5).
    pub id: Option<RequestId>,
    /// `Ok(result)` or `Err(error object)`, both raw.
    pub outcome: Result<Box<RawValue>, Box<RawValue>>,
}

/// Why a body is not a JSON-RPC message. Maps to -32700 / -32600.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all, or not UTF-8 (JSON-RPC -32700).
    #[error("parse error: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// JSON, but not a JSON-RPC 2.0 message object (JSON-RPC -32600).
    #[error("invalid request: {0}")]
    InvalidMessage(&'static str),
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::InvalidJson(_) => code::PARSE_ERROR,
            ParseError::InvalidMessage(_) => code::INVALID_REQUEST,
        }
    }
}

/// A JSON-RPC error object, for errors Ballast produces itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    /// JSON-RPC error code (see [`code`]).
    pub code: i64,
    /// Short human-readable description.
    pub message: String,
    /// Structured detail, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ErrorObject {
    /// An error with a code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The error as a raw JSON value, for a [`Response`] outcome.
    pub fn to_raw(&self) -> Box<RawValue> {
        to_raw(self)
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<RequestId>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// Distinguishes `"id": null` (`Some(None)`) from an absent id (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<RequestId>>, D::Error> {
    Option::<RequestId>::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct WireOut<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RawValue>,
}

/// A parsed HTTP body: one message, or a batch (2025-03-26 clients only).
#[derive(Debug)]
pub enum Body {
    /// A single message.
    Single(Message),
    /// A JSON array of messages.
    Batch(Vec<Message>),
}

impl Message {
    /// Parses one message from bytes.
    ///
    /// # Errors
    /// [`ParseError::InvalidJson`] if the bytes are not UTF-8 JSON,
    /// [`ParseError::InvalidMessage`] if the JSON is not a JSON-RPC 2.0 message.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let wire: Wire<'_> = match serde_json::from_slice(bytes) {
            Ok(w) => w,
            Err(e) if e.is_data() => {
                // Valid JSON of the wrong shape (an array, a number, a bad id).
                return Err(ParseError::InvalidMessage("not a JSON-RPC message object"));
            }
            Err(e) => return Err(ParseError::InvalidJson(e)),
        };
        Self::from_wire(wire)
    }

    fn from_wire(wire: Wire<'_>) -> Result<Message, ParseError> {
        if wire.jsonrpc != Some("2.0") {
            return Err(ParseError::InvalidMessage("jsonrpc must be \"2.0\""));
        }
        match (wire.id, wire.method) {
            (Some(Some(id)), Some(method)) => Ok(Message::Request(Request {
                id,
                method,
                params: wire.params,
            })),
            (Some(None), Some(_)) => Err(ParseError::InvalidMessage("request id must not be null")),
            (None, Some(method)) => Ok(Message::Notification(Notification {
                method,
                params: wire.params,
            })),
            (id, None) => {
                let outcome = match (wire.result, wire.error) {
                    (Some(r), None) => Ok(r),
                    (None, Some(e)) => Err(e),
                    _ => {
                        return Err(ParseError::InvalidMessage(
                            "response needs exactly one of result, error",
                        ));
                    }
                };
                Ok(Message::Response(Response {
                    id: id.flatten(),
                    outcome,
                }))
            }
        }
    }

    /// Serializes the message as compact JSON (no trailing newline).
    pub fn to_bytes(&self) -> Bytes {
        let out = match self {
            Message::Request(r) => WireOut {
                jsonrpc: "2.0",
                id: Some(&r.id),
                method: Some(&r.method),
                params: r.params.as_deref(),
                result: None,
                error: None,
            },
            Message::Notification(n) => WireOut {
                jsonrpc: "2.0",
                id: None,
                method: Some(&n.method),
                params: n.params.as_deref(),
                result: None,
                error: None,
            },
            Message::Response(r) => WireOut {
                jsonrpc: "2.0",
                id: r.id.as_ref(),
                method: None,
                params: None,
                result: r.outcome.as_ref().ok().map(|v| &**v),
                error: r.outcome.as_ref().err().map(|v| &**v),
            },
        };
        // Serializing borrowed raw values and strings cannot fail.
        let mut v = serde_json::to_vec(&out).unwrap_or_default();
        // The buffer grew by doubling: without this a retained message
        // (the event log keeps them for resume) holds up to twice its size.
        v.shrink_to_fit();
        Bytes::from(v)
    }

    /// The method name, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request(r) => Some(&r.method),
            Message::Notification(n) => Some(&n.method),
            Message::Response(_) => None,
        }
    }
}

impl Body {
    /// Parses an HTTP body: one message object or a non-empty array of them.
    ///
    /// # Errors
    /// As [`Message::parse`]; an empty array is [`ParseError::InvalidMessage`].
    pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'[') {
            return Message::parse(bytes).map(Body::Single);
        }
        let items: Vec<&RawValue> =
            serde_json::from_slice(bytes).map_err(ParseError::InvalidJson)?;
        if items.is_empty() {
            return Err(ParseError::InvalidMessage("empty batch"));
        }
        items
            .into_iter()
            .map(|raw| Message::parse(raw.get().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map(Body::Batch)
    }
}

impl Response {
    /// A success response.
    pub fn ok(id: RequestId, result: Box<RawValue>) -> Self {
        Self {
            id: Some(id),
            outcome: Ok(result),
        }
    }

    /// An error response.
    pub fn err(id: Option<RequestId>, error: &ErrorObject) -> Self {
        Self {
            id,
            outcome: Err(error.to_raw()),
        }
    }
}

/// Serializes any value into a raw JSON value.
///
/// Only for types whose serialization cannot fail (plain data, string keys).
pub fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

/// The raw JSON value `{}`.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_unknown_fields_in_params() {
        let src = br#"{"jsonrpc":"2.0","id":7,"method":"x/y","params":{"a":[1,{"b":null}],"_meta":{"k":1}}}"#;
        let msg = Message::parse(src).unwrap();
        assert_eq!(&msg.to_bytes()[..], &src[..]);
    }

    #[test]
    fn shapes_are_classified() {
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","method":"n"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(Response { outcome: Ok(_), .. }))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#),
            Ok(Message::Response(Response {
                id: None,
                outcome: Err(_)
            }))
        ));
    }

    #[test]
    fn bad_input_maps_to_codes() {
        let cases: [(&[u8], i64); 6] = [
            (b"{not json", code::PARSE_ERROR),
            (b"\xff\xfe", code::PARSE_ERROR),
            (b"42", code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
                code::INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST),
        ];
        for (input, expected) in cases {
            let err = Message::parse(input).unwrap_err();
            assert_eq!(err.code(), expected, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn batches_parse_and_empty_batch_is_invalid() {
        let body = Body::parse(
            br#" [{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":1,"method":"b"}]"#,
        )
        .unwrap();
        assert!(matches!(body, Body::Batch(v) if v.len() == 2));
        assert_eq!(
            Body::parse(b"[]").unwrap_err().code(),
            code::INVALID_REQUEST
        );
    }
}
