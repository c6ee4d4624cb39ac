//! SIGTERM on the real binary: calls in flight finish, new work is refused,
//! the process exits 0 and leaves no child behind.

mod support;

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use support::{BIN, McpClient, text_of};
use tokio::io::{AsyncBufReadExt, BufReader};

const CALLS: usize = 20;

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_reaps_children() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ballast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"20s\"\n\n\
             [upstreams.demo]\ncommand = {BIN:?}\nargs = [\"demo-upstream\"]\n"
        ),
    )
    .expect("write config");
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ballast");
    let pid = Pid::from_raw(child.id().expect("pid") as i32);
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The "listening" line is the signal that the socket accepts.
    while let Some(line) = log.next_line().await.expect("log") {
        if line.contains("ballast listening") {
            break;
        }
    }
    let log_task = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Ok(Some(l)) = log.next_line().await {
            lines.push(l);
        }
        lines
    });
    let url = format!("http://127.0.0.1:{port}/mcp");
    let client = McpClient::connect(&url).await;
    let readyz = || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .expect("readyz");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    let (status, ready) = readyz().await;
    assert_eq!(status, 200, "{ready}");
    let upstream_pid = ready["upstreams"][0]["pid"].as_i64().expect("upstream pid") as i32;

    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let session = client.session.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut c = McpClient::new(&url);
                c.session = session;
                c.request_with_id(
                    json!(i),
                    "tools/call",
                    json!({ "name": "sleep", "arguments": { "ms": 1000 } }),
                )
                .await
                .1
            })
        })
        .collect();
    // Wait until all calls are in flight upstream.
    loop {
        let (_, r) = readyz().await;
        if r["calls_in_flight"] == json!(CALLS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    // Draining: readiness is red and new sessions are refused, while the
    // calls in flight go on.
    loop {
        let (status, r) = readyz().await;
        if r["draining"] == json!(true) {
            assert_eq!(status, 503);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = McpClient::new(&url)
        .post(&json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } }))
        .await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    for call in calls {
        let response = call.await.expect("call task");
        assert_eq!(text_of(&response), "slept 1000 ms", "{response}");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exited in time")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    // The upstream child is gone (reaped, not a zombie or an orphan).
    assert_eq!(
        kill(Pid::from_raw(upstream_pid), None),
        Err(nix::errno::Errno::ESRCH),
        "upstream child {upstream_pid} still exists"
    );
    let lines = log_task.await.expect("log task");
    assert!(
        lines.iter().any(|l| l.contains("drain complete")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("ERROR")), "{lines:#?}");
}
