//! The bad input matrix: each malformed request gets the right HTTP status
//! and JSON-RPC error (a JSON body, never HTML, never a panic), and the
//! session stays usable afterwards.

mod support;

use serde_json::{Value, json};
use support::{McpClient, TestGateway, demo_config, text_of};

struct Case {
    name: &'static str,
    content_type: &'static str,
    accept: &'static str,
    session: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: Option<i64>,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, status: u16, code: Option<i64>) -> Case {
    Case {
        name,
        content_type: "application/json",
        accept: "application/json, text/event-stream",
        session: None,
        body: body.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_code_and_the_session_survives() {
    let mut config = demo_config();
    config.server.max_body_bytes = 2048;
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let session = c.session.clone().expect("session");
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let cases = vec![
        case(
            "invalid JSON",
            &b"{\"jsonrpc\": \"2.0\", \"id\": 1,"[..],
            400,
            Some(-32700),
        ),
        case(
            "invalid UTF-8",
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}"[..],
            400,
            Some(-32700),
        ),
        case("not an object", &b"\"ping\""[..], 400, Some(-32600)),
        case(
            "wrong jsonrpc version",
            &br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#[..],
            400,
            Some(-32600),
        ),
        case(
            "null request id",
            &br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#[..],
            400,
            Some(-32600),
        ),
        case(
            "batch from a 2025-11-25 client",
            format!("[{}]", String::from_utf8_lossy(ping)),
            400,
            Some(-32600),
        ),
        case("oversized body", vec![b' '; 4096], 413, Some(-32600)),
        Case {
            content_type: "text/plain",
            ..case("wrong Content-Type", &ping[..], 415, Some(-32600))
        },
        Case {
            accept: "text/html",
            ..case("unacceptable Accept", &ping[..], 406, Some(-32600))
        },
        Case {
            session: Some(""),
            ..case("missing session", &ping[..], 400, Some(-32600))
        },
        Case {
            session: Some("0000"),
            ..case("unknown session", &ping[..], 404, Some(-32600))
        },
        case(
            "a response to a request Ballast never sent",
            &br#"{"jsonrpc":"2.0","id":424242,"result":{}}"#[..],
            202,
            None,
        ),
    ];
    for case in cases {
        let mut req = c
            .http
            .post(&gw.url)
            .header("content-type", case.content_type)
            .header("accept", case.accept);
        match case.session {
            None => req = req.header("mcp-session-id", &session),
            Some("") => {}
            Some(s) => req = req.header("mcp-session-id", s),
        }
        let resp = req.body(case.body).send().await.expect("POST");
        assert_eq!(resp.status().as_u16(), case.status, "{}", case.name);
        if let Some(code) = case.code {
            assert_eq!(
                resp.headers()["content-type"],
                "application/json",
                "{}",
                case.name
            );
            let body: Value = resp.json().await.expect("JSON error body");
            assert_eq!(body["jsonrpc"], "2.0", "{}", case.name);
            assert_eq!(body["error"]["code"], json!(code), "{}: {body}", case.name);
        }
        // The session is still usable after each refusal.
        let r = c.call_tool("echo", json!({ "message": case.name })).await;
        assert_eq!(text_of(&r), case.name);
    }

    // A request id already in flight in the session: -32600, the first call unharmed.
    let slow = json!({ "jsonrpc": "2.0", "id": "dup", "method": "tools/call",
                       "params": { "name": "sleep", "arguments": { "ms": 200 } } });
    let first = c.post(&slow).await;
    let mut first = support::messages(first);
    let second = c.post(&slow).await;
    assert_eq!(second.status(), 400);
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["error"]["code"], json!(-32600));
    assert_eq!(body["id"], "dup");
    use futures_util::StreamExt;
    let fin = first.next().await.expect("first call answered");
    assert_eq!(text_of(&fin), "slept 200 ms");

    // An unknown method is forwarded; the upstream's -32601 comes back.
    let (_, unknown) = c.request("no/such/method", json!({})).await;
    assert_eq!(unknown["error"]["code"], json!(-32601));

    let (_, r) = gw.readyz().await;
    assert_eq!(r["counters"]["responses.ignored"], 1, "{r}");
    gw.stop().await;
}
