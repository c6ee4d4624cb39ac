//! A stdio child that stops reading its stdin (issue 13 item 12): the real
//! demo child is stopped with SIGSTOP and flooded with client
//! notifications. No notification POST may block, a call with a short
//! timeout must fail within its timeout (its wait for room in the child's
//! queue included), `/readyz` must show the write stall (and the log a WARN,
//! once), and after SIGCONT calls work again.

#![cfg(unix)]

mod support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use support::log_capture::captured;
use support::{McpClient, TestGateway, text_of};
use tokio::time::Instant;

/// The call timeout configured for the demo upstream.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Notifications sent to the stopped child: of 4 KiB each, more than its
/// pipe, the writer's batch and its 256-frame queue hold together.
const FLOOD: usize = 600;

/// Sends SIGCONT when dropped, so a failing test leaves no stopped child.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

async fn upstream_state(gw: &TestGateway) -> (u16, Value) {
    let (status, r) = gw.readyz().await;
    (status, r["upstreams"][0].clone())
}

#[tokio::test]
async fn a_stopped_child_hangs_no_call_and_no_notification_and_is_reported() {
    captured();
    let config = support::demo_config_with(|u| u.request_timeout = CALL_TIMEOUT);
    let gw = TestGateway::start(config).await;
    let mut c = McpClient::connect(&gw.url).await;
    let r = c.call_tool("echo", json!({ "message": "up" })).await;
    assert_eq!(text_of(&r), "up", "{r}");
    let (_, up) = upstream_state(&gw).await;
    let pid = Pid::from_raw(up["pid"].as_i64().expect("pid") as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the child");
    let _resume = Resume(pid);

    // The flood, from the same session, counting the POSTs answered.
    let mut flooder = McpClient::new(&gw.url);
    flooder.session = c.session.clone();
    let (sent_tx, mut sent) = tokio::sync::watch::channel(0usize);
    let flood_started = Instant::now();
    let flood = tokio::spawn(async move {
        let pad = "x".repeat(4096);
        for i in 0..FLOOD {
            let n = json!({ "jsonrpc": "2.0", "method": "notifications/flood", "params": { "i": i, "pad": pad } });
            let r = flooder.post(&n).await;
            assert_eq!(r.status(), 202);
            sent_tx.send_replace(i + 1);
        }
    });
    // Wait until the queue must be full (or the flood is stuck: old code).
    let _ = tokio::time::timeout(Duration::from_secs(10), sent.wait_for(|n| *n >= FLOOD / 2)).await;

    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(40),
        c.call_tool("echo", json!({ "message": "stuck?" })),
    )
    .await;
    let took = start.elapsed();
    eprintln!("call to the stopped child ended after {took:?}: {r:?}");
    let r = r.expect("the call ends");
    assert!(
        took <= CALL_TIMEOUT + Duration::from_millis(1500),
        "a call with a {CALL_TIMEOUT:?} timeout took {took:?}"
    );
    assert_eq!(r["error"]["code"], json!(-32001), "{r}");

    let flooded = tokio::time::timeout(Duration::from_secs(20), flood).await;
    eprintln!(
        "{} of {FLOOD} notification POSTs answered after {:?}",
        *sent.borrow(),
        flood_started.elapsed()
    );
    flooded
        .expect("no notification POST blocks on the stopped child")
        .expect("flood");

    // /readyz: stalled (503), the dropped notifications counted.
    let deadline = Instant::now() + Duration::from_secs(15);
    let up = loop {
        let (status, up) = upstream_state(&gw).await;
        if up["state"] == "stalled" {
            assert_eq!(status, 503, "{up}");
            break up;
        }
        assert!(Instant::now() < deadline, "no stall reported: {up}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("readyz while stopped: {up}");
    assert!(
        up["dropped_notifications"].as_u64().unwrap_or(0) > 0,
        "{up}"
    );
    // A call now fails at once.
    let start = Instant::now();
    let r = c.call_tool("echo", json!({ "message": "still?" })).await;
    assert_eq!(r["error"]["data"]["kind"], "input_full", "{r}");
    assert!(start.elapsed() < CALL_TIMEOUT, "{:?}", start.elapsed());
    let warns = captured()
        .lock()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("stopped reading its input"))
        .count();
    assert_eq!(warns, 1, "one WARN per stall");

    // SIGCONT: the child reads again; calls work, readiness comes back.
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.call_tool("echo", json!({ "message": "back" })).await;
        if r["result"].is_object() {
            assert_eq!(text_of(&r), "back");
            break;
        }
        assert!(Instant::now() < deadline, "never back: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, up) = upstream_state(&gw).await;
        if status == 200 {
            assert_eq!(up["state"], "ready", "{up}");
            break;
        }
        assert!(Instant::now() < deadline, "readiness never came back: {up}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}
