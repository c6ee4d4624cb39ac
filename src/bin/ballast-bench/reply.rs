//! Reading one JSON-RPC message of an answer, minimally: is it the response
//! to our request, and did the call succeed? Only the envelope and
//! `result.isError` are decoded; `id` and `error` are borrowed raw, so no
//! value tree is built per call.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::error::CallError;

/// The fields of a JSON-RPC message the generator looks at.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// Request or response id (absent or null for notifications).
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    /// Present on requests and notifications, which are never our answer.
    #[serde(default)]
    method: Option<IgnoredAny>,
    /// A JSON-RPC error.
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    /// A successful result.
    #[serde(default)]
    result: Option<ToolResult>,
}

/// The part of a `tools/call` result that says whether the tool failed.
#[derive(Deserialize)]
struct ToolResult {
    /// MCP: a tool's own failure is a result with `isError: true`.
    #[serde(rename = "isError", default)]
    is_error: Option<bool>,
}

/// Reads `message`: `None` when it is not the response to the request with
/// id `id` (given as its JSON text, e.g. `42`), else the call's outcome.
pub(crate) fn answer_to(message: &[u8], id: &[u8]) -> Option<Result<(), CallError>> {
    let envelope: Envelope<'_> = match serde_json::from_slice(message) {
        Ok(e) => e,
        Err(e) => return Some(Err(CallError::BadJson(e))),
    };
    if envelope.method.is_some() || envelope.id.is_none_or(|raw| raw.get().as_bytes() != id) {
        return None;
    }
    Some(match (envelope.error, envelope.result) {
        (Some(error), _) => Err(CallError::JsonRpc {
            error: error.get().to_owned(),
        }),
        (
            None,
            Some(ToolResult {
                is_error: Some(true),
            }),
        ) => Err(CallError::Tool),
        (None, Some(_)) => Ok(()),
        (None, None) => Err(CallError::Protocol {
            detail: "a response with neither result nor error",
        }),
    })
}

/// Writes `n` in decimal into `buf`; returns the digits.
pub(crate) fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kind(message: &str, id: &str) -> Option<Result<(), ErrorKind>> {
        answer_to(message.as_bytes(), id.as_bytes()).map(|r| r.map_err(|e| e.kind()))
    }

    #[test]
    fn outcomes() {
        let ok = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
        assert_eq!(kind(ok, "7"), Some(Ok(())));
        assert_eq!(kind(ok, "8"), None);
        let tool = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":true}}"#;
        assert_eq!(kind(tool, "7"), Some(Err(ErrorKind::Tool)));
        let rpc = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"no"}}"#;
        assert_eq!(kind(rpc, "7"), Some(Err(ErrorKind::JsonRpc)));
        assert_eq!(kind("{", "7"), Some(Err(ErrorKind::Protocol)));
    }

    #[test]
    fn notifications_and_server_requests_are_not_answers() {
        let progress =
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7}}"#;
        assert_eq!(kind(progress, "7"), None);
        let request = r#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}}"#;
        assert_eq!(kind(request, "7"), None);
    }

    #[test]
    fn decimals() {
        let mut buf = [0; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1234567, &mut buf), b"1234567");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
