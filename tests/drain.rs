//! SIGTERM on the real binary: calls in flight finish, new work is refused,
//! the process exits 0 and leaves no child behind. (Unix: signals, process
//! groups and pidfds; the drain's HTTP behaviour is in `drain_linger.rs`.)

#![cfg(unix)]

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

/// Waits (up to `within`) for process `pid` to terminate, using a pidfd,
/// which becomes readable when the process exits — the kernel's own signal,
/// also for processes that are not our children. A pid that no longer
/// exists counts as exited.
async fn exited(pid: i32, within: Duration) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return true;
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(_) => return true,
    };
    tokio::task::spawn_blocking(move || {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: within.as_secs() as i64,
            tv_nsec: i64::from(within.subsec_nanos()),
        };
        poll(&mut fds, Some(&timeout)).is_ok_and(|ready| ready > 0)
    })
    .await
    .expect("poll task")
}

#[tokio::test]
async fn drain_kills_the_upstreams_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild.pid");
    // The upstream's shell starts a grandchild that ignores stdin close and
    // SIGTERM, then becomes the demo upstream itself.
    let script =
        format!("trap '' TERM; sleep 1000 & echo $! > {pidfile:?}; exec {BIN:?} demo-upstream",);
    let mut config = ballast::Config::default();
    let mut upstream = ballast::config::UpstreamConfig::stdio("sh", vec!["-c".into(), script]);
    upstream.shutdown_grace = Duration::from_millis(200);
    config.add_upstream("demo", upstream);
    let gw = support::TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    assert_eq!(
        text_of(&c.call_tool("echo", json!({ "message": "up" })).await),
        "up"
    );
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        !exited(grandchild, Duration::ZERO).await,
        "grandchild should run before the drain"
    );
    gw.stop().await;
    assert!(
        exited(grandchild, Duration::from_secs(5)).await,
        "grandchild {grandchild} survived the drain"
    );
}

#[tokio::test]
async fn get_streams_end_with_a_retry_hint_when_the_drain_closes_them() {
    use futures_util::StreamExt;
    let gw = support::TestGateway::start(support::demo_config()).await;
    let c = McpClient::connect(&gw.url).await;
    let resp = c
        .http
        .get(&gw.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap_or_default())
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let mut events = sse_stream::SseByteStream::new(resp.bytes_stream());
    let priming = events.next().await.expect("priming").expect("event");
    assert!(priming.id.is_some() && priming.data.as_deref().unwrap_or("").is_empty());
    gw.shutdown.drain.cancel();
    let mut last = None;
    while let Some(Ok(e)) = events.next().await {
        last = Some(e);
    }
    let last = last.expect("an event before the close");
    assert_eq!(last.retry, Some(1000), "{last:?}");
    gw.stop().await;
}
