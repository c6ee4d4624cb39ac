//! The built-in demo upstream: a stdio MCP server run by re-executing the
//! `ballast` binary (`ballast demo-upstream`), so `ballast demo` and the
//! tests exercise a real child process and a real pipe.
//!
//! Tools (arguments in braces):
//! - `echo {message}` — returns the message (read-only).
//! - `sleep {ms}` — waits, then returns `slept <ms> ms` (read-only, idempotent).
//! - `sleep_write {ms}` — the same, but not annotated as safe to repeat
//!   (a slow call with an effect, for outcome-unknown tests).
//! - `fail {message?}` — returns an `isError: true` result.
//! - `flaky {fail_times, key?}` — the first `fail_times` calls per `key` fail
//!   with JSON-RPC error -32603, then it succeeds (read-only).
//! - `flaky_write {fail_times, key?}` — the same, but not annotated as safe
//!   to repeat (so Ballast must not retry it).
//! - `crash` — the process exits with status 1 without answering.
//! - `crash_once {marker}` — exits without answering if the file `marker`
//!   does not exist yet (creating it first); else answers `survived`
//!   (read-only: a crash mid-call that a retry on the restarted child fixes).
//! - `progress {steps, ms}` — sends `steps` progress notifications `ms` apart.
//! - `log {message, level?}` — sends a `notifications/message` log line.
//! - `flood {count, bytes}` — sends `count` progress notifications, each
//!   padded to about `bytes` bytes (for slow-consumer tests).
//! - `sample {prompt}` — asks the client `sampling/createMessage`, returns its text.
//! - `sample_read_only {prompt}` — the same, annotated read-only (its result
//!   depends on the caller, not on state: the stale-cache isolation case).
//! - `elicit {message}` — asks the client `elicitation/create`, returns its answer.
//! - `roots` — the answer to the `roots/list` it asked once initialized, when
//!   started with `BALLAST_DEMO_ASK_ROOTS=1` in its environment (as
//!   server-filesystem asks at start, outside any call); else `not asked`.
//!
//! Also one resource (`demo://readme`) and one prompt (`greeting {name}`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};

use crate::jsonrpc::{
    ErrorObject, Message, Notification, Request, RequestId, Response, code, to_raw,
};
use crate::mcp::{self, method};

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Result<Value, Value>>>>>;

struct Demo {
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    next_id: AtomicI64,
    flaky: Mutex<HashMap<String, u64>>,
    calls: Mutex<HashMap<RequestId, tokio::task::AbortHandle>>,
    /// The answer to the `roots/list` asked at start, if asked.
    roots: Mutex<Option<Value>>,
}

/// Runs the demo upstream on this process's stdin/stdout until stdin closes.
///
/// # Errors
/// I/O errors on stdout.
pub async fn run_demo_upstream() -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let (stdin, stdout) = stdio_pipes();
    let writer = tokio::spawn(crate::upstream::write_lines(stdout, rx));
    let demo = Arc::new(Demo {
        out: tx,
        pending: Arc::default(),
        next_id: AtomicI64::new(1),
        flaky: Mutex::default(),
        calls: Mutex::default(),
        roots: Mutex::default(),
    });
    let mut reader = BufReader::with_capacity(64 * 1024, stdin);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        // Bounded like Ballast's own reader: an endless line is skipped, not buffered.
        if crate::upstream::read_line_bounded(&mut reader, &mut line).await? == 0 {
            break;
        }
        let frame = line.trim_ascii();
        if frame.is_empty() {
            continue;
        }
        match Message::parse(frame) {
            Ok(m) => demo.clone().on_message(m).await,
            Err(e) => eprintln!("demo: bad frame: {e}"),
        }
    }
    drop(demo);
    writer.await.unwrap_or(Ok(()))
}

/// Reader for stdin and writer for stdout. When they are pipes (as when
/// Ballast runs this as its child), they are driven by the reactor like
/// sockets; tokio's `stdin()`/`stdout()` would hand every read and write to
/// a blocking thread. Anything else (a terminal, a file) falls back to those.
fn stdio_pipes() -> (
    Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
) {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use tokio::net::unix::pipe;
        let input = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)).ok());
        let output = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)).ok());
        if let (Some(input), Some(output)) = (input, output) {
            return (Box::new(input), Box::new(output));
        }
    }
    (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
}

impl Demo {
    async fn send(&self, m: Message) {
        let _ = self.out.send(m.to_bytes()).await;
    }

    async fn reply(&self, id: RequestId, result: Result<Value, ErrorObject>) {
        let response = match result {
            Ok(v) => Response::ok(id, to_raw(&v)),
            Err(e) => Response::err(Some(id), &e),
        };
        self.send(Message::Response(response)).await;
    }

    async fn on_message(self: Arc<Self>, m: Message) {
        match m {
            Message::Request(r) => self.on_request(r).await,
            Message::Notification(n) if n.method == method::CANCELLED => {
                let id = n
                    .params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|p| serde_json::from_value::<RequestId>(p["requestId"].clone()).ok());
                if let Some(handle) = id.and_then(|id| self.calls.lock().ok()?.remove(&id)) {
                    handle.abort();
                }
            }
            Message::Notification(n)
                if n.method == method::INITIALIZED
                    && std::env::var_os("BALLAST_DEMO_ASK_ROOTS").is_some_and(|v| v == "1") =>
            {
                let demo = self.clone();
                tokio::spawn(async move {
                    let answer = demo.ask(method::ROOTS_LIST, json!({})).await;
                    let text = match answer {
                        Ok(v) => v.to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                    if let Ok(mut roots) = demo.roots.lock() {
                        *roots = Some(Value::String(text));
                    }
                });
            }
            Message::Notification(_) => {}
            Message::Response(r) => {
                let Some(RequestId::Number(id)) = r.id else {
                    return;
                };
                let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(w) = waiter {
                    let parse = |raw: Box<serde_json::value::RawValue>| {
                        serde_json::from_str(raw.get()).unwrap_or(Value::Null)
                    };
                    let _ = w.send(r.outcome.map(parse).map_err(parse));
                }
            }
        }
    }

    async fn on_request(self: Arc<Self>, r: Request) {
        let params: Value = r
            .params
            .as_ref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        let result = match r.method.as_str() {
            method::INITIALIZE => {
                let requested = params["protocolVersion"].as_str().unwrap_or_default();
                Ok(json!({
                    "protocolVersion": mcp::negotiate(requested),
                    "capabilities": { "tools": { "listChanged": true }, "resources": {}, "prompts": {}, "logging": {} },
                    "serverInfo": { "name": "ballast-demo", "version": env!("CARGO_PKG_VERSION") },
                }))
            }
            method::PING | method::SET_LEVEL => Ok(json!({})),
            method::TOOLS_LIST => Ok(json!({ "tools": tools() })),
            method::RESOURCES_LIST => Ok(json!({ "resources": [
                { "uri": "demo://readme", "name": "readme", "mimeType": "text/plain" }
            ]})),
            method::RESOURCE_TEMPLATES_LIST => Ok(json!({ "resourceTemplates": [] })),
            method::RESOURCES_READ => match params["uri"].as_str() {
                Some("demo://readme") => Ok(json!({ "contents": [
                    { "uri": "demo://readme", "mimeType": "text/plain", "text": "Ballast demo upstream." }
                ]})),
                _ => Err(ErrorObject::new(code::INVALID_PARAMS, "unknown resource")),
            },
            method::PROMPTS_LIST => Ok(json!({ "prompts": [
                { "name": "greeting", "arguments": [{ "name": "name", "required": true }] }
            ]})),
            method::PROMPTS_GET => {
                let name = params
                    .pointer("/arguments/name")
                    .and_then(Value::as_str)
                    .unwrap_or("world");
                Ok(json!({ "messages": [
                    { "role": "user", "content": { "type": "text", "text": format!("Hello, {name}!") } }
                ]}))
            }
            method::TOOLS_CALL => {
                let id = r.id.clone();
                let demo = self.clone();
                let task = tokio::spawn(async move {
                    let result = demo.call_tool(&params).await;
                    demo.calls.lock().ok().map(|mut c| c.remove(&id));
                    demo.reply(id, result).await;
                });
                if let Ok(mut calls) = self.calls.lock()
                    && !task.is_finished()
                {
                    calls.insert(r.id, task.abort_handle());
                }
                return;
            }
            other => Err(ErrorObject::new(
                code::METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            )),
        };
        self.reply(r.id, result).await;
    }

    async fn call_tool(&self, params: &Value) -> Result<Value, ErrorObject> {
        let args = &params["arguments"];
        let num = |k: &str, d: u64| args[k].as_u64().unwrap_or(d);
        let text = |t: String| json!({ "content": [{ "type": "text", "text": t }] });
        match params["name"].as_str().unwrap_or_default() {
            "echo" => Ok(text(
                args["message"].as_str().unwrap_or_default().to_owned(),
            )),
            "sleep" | "sleep_write" => {
                let ms = num("ms", 0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(text(format!("slept {ms} ms")))
            }
            "fail" => Ok(json!({
                "content": [{ "type": "text", "text": args["message"].as_str().unwrap_or("failed on purpose") }],
                "isError": true
            })),
            "flaky" | "flaky_write" => {
                let key = args["key"].as_str().unwrap_or("default").to_owned();
                let seen = {
                    let mut f = self
                        .flaky
                        .lock()
                        .map_err(|_| ErrorObject::new(code::INTERNAL_ERROR, "lock"))?;
                    let c = f.entry(key).or_insert(0);
                    *c += 1;
                    *c
                };
                if seen <= num("fail_times", 1) {
                    Err(ErrorObject::new(
                        code::INTERNAL_ERROR,
                        format!("flaky failure {seen}"),
                    ))
                } else {
                    Ok(text(format!("succeeded after {} failures", seen - 1)))
                }
            }
            "crash_once" => {
                let marker = std::path::PathBuf::from(args["marker"].as_str().unwrap_or_default());
                if marker.as_os_str().is_empty() || marker.exists() {
                    Ok(text("survived".into()))
                } else {
                    let _ = std::fs::write(&marker, b"crashed once");
                    eprintln!("demo: crashing once on request");
                    std::process::exit(1);
                }
            }
            "crash" => {
                eprintln!("demo: crashing on request");
                std::process::exit(1);
            }
            "progress" => {
                let steps = num("steps", 3);
                let ms = num("ms", 10);
                let token = params.pointer("/_meta/progressToken").cloned();
                for i in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if let Some(token) = &token {
                        let p = json!({ "progressToken": token, "progress": i, "total": steps, "message": format!("step {i}") });
                        self.notify(method::PROGRESS, p).await;
                    }
                }
                Ok(text(format!("done {steps} steps")))
            }
            "flood" => {
                let count = num("count", 10);
                let pad = "x".repeat(usize::try_from(num("bytes", 100)).unwrap_or(100));
                let token = params
                    .pointer("/_meta/progressToken")
                    .cloned()
                    .unwrap_or(json!("flood"));
                for i in 1..=count {
                    let p = json!({ "progressToken": token, "progress": i, "total": count, "message": pad });
                    self.notify(method::PROGRESS, p).await;
                }
                Ok(text(format!("flooded {count}")))
            }
            "log" => {
                let level = args["level"].as_str().unwrap_or("info");
                self.notify(
                    "notifications/message",
                    json!({ "level": level, "logger": "demo", "data": args["message"] }),
                )
                .await;
                Ok(text("logged".into()))
            }
            "sample" | "sample_read_only" => {
                let prompt = args["prompt"].as_str().unwrap_or_default();
                let req = json!({
                    "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
                    "maxTokens": 100
                });
                match self.ask("sampling/createMessage", req).await {
                    Ok(v) => Ok(text(format!(
                        "sampled: {}",
                        v.pointer("/content/text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    ))),
                    Err(e) => Ok(
                        json!({ "content": [{ "type": "text", "text": format!("sampling failed: {e}") }], "isError": true }),
                    ),
                }
            }
            "elicit" => {
                let req = json!({
                    "message": args["message"].as_str().unwrap_or("?"),
                    "requestedSchema": { "type": "object", "properties": { "answer": { "type": "string" } } }
                });
                match self.ask("elicitation/create", req).await {
                    Ok(v) => Ok(text(format!("elicited: {v}"))),
                    Err(e) => Ok(
                        json!({ "content": [{ "type": "text", "text": format!("elicitation failed: {e}") }], "isError": true }),
                    ),
                }
            }
            "roots" => {
                let roots = self.roots.lock().ok().and_then(|r| r.clone());
                Ok(text(roots.map_or_else(
                    || "not asked".to_owned(),
                    |v| v.as_str().unwrap_or_default().to_owned(),
                )))
            }
            other => Err(ErrorObject::new(
                code::INVALID_PARAMS,
                format!("unknown tool: {other}"),
            )),
        }
    }

    async fn notify(&self, method: &str, params: Value) {
        self.send(Message::Notification(Notification {
            method: method.to_owned(),
            params: Some(to_raw(&params)),
        }))
        .await;
    }

    /// Sends a server→client request and waits for the answer.
    async fn ask(&self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        self.send(Message::Request(Request {
            id: RequestId::Number(id),
            method: method.to_owned(),
            params: Some(to_raw(&params)),
        }))
        .await;
        rx.await.unwrap_or_else(|_| Err(json!("no answer")))
    }
}

fn tools() -> Value {
    let obj = |props: Value| json!({ "type": "object", "properties": props });
    let ro = json!({ "readOnlyHint": true });
    json!([
        { "name": "echo", "description": "Returns the message.", "inputSchema": obj(json!({ "message": { "type": "string" } })), "annotations": ro },
        { "name": "sleep", "description": "Waits ms milliseconds.", "inputSchema": obj(json!({ "ms": { "type": "integer" } })),
          "annotations": { "readOnlyHint": true, "idempotentHint": true } },
        { "name": "sleep_write", "description": "Waits ms milliseconds; not safe to repeat.",
          "inputSchema": obj(json!({ "ms": { "type": "integer" } })) },
        { "name": "fail", "description": "Returns an isError result.", "inputSchema": obj(json!({ "message": { "type": "string" } })) },
        { "name": "flaky", "description": "Fails fail_times times per key, then succeeds.",
          "inputSchema": obj(json!({ "fail_times": { "type": "integer" }, "key": { "type": "string" } })), "annotations": ro },
        { "name": "flaky_write", "description": "Like flaky, but not safe to repeat.",
          "inputSchema": obj(json!({ "fail_times": { "type": "integer" }, "key": { "type": "string" } })) },
        { "name": "crash", "description": "Exits the upstream process.", "inputSchema": obj(json!({})) },
        { "name": "crash_once", "description": "Exits the first time (per marker file), then answers.",
          "inputSchema": obj(json!({ "marker": { "type": "string" } })), "annotations": ro },
        { "name": "progress", "description": "Sends progress notifications.",
          "inputSchema": obj(json!({ "steps": { "type": "integer" }, "ms": { "type": "integer" } })), "annotations": ro },
        { "name": "flood", "description": "Sends count progress notifications of about bytes bytes each.",
          "inputSchema": obj(json!({ "count": { "type": "integer" }, "bytes": { "type": "integer" } })) },
        { "name": "log", "description": "Sends a log notification.",
          "inputSchema": obj(json!({ "message": { "type": "string" }, "level": { "type": "string" } })) },
        { "name": "sample", "description": "Asks the client for an LLM sample.", "inputSchema": obj(json!({ "prompt": { "type": "string" } })) },
        { "name": "sample_read_only", "description": "Like sample, annotated read-only.", "inputSchema": obj(json!({ "prompt": { "type": "string" } })),
          "annotations": ro },
        { "name": "elicit", "description": "Asks the user a question.", "inputSchema": obj(json!({ "message": { "type": "string" } })) },
        { "name": "roots", "description": "The roots/list answer it got at start.", "inputSchema": obj(json!({})), "annotations": ro }
    ])
}
