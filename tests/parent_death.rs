//! Children die with Ballast, even when Ballast itself is SIGKILLed and no
//! drop guard or drain runs (issue 13 item 15: `PR_SET_PDEATHSIG` on Linux).

#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use support::McpClient;
use support::binary::{Ballast, group_members};

#[tokio::test]
async fn sigkill_of_ballast_ends_its_busy_child_and_the_childs_group() {
    let mut ballast = Ballast::start_demo("").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        let (_, ready) = ballast.readyz().await;
        if let Some(pid) = ready["upstreams"][0]["pid"].as_i64() {
            break pid as i32;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream never started: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        group_members(child),
        vec![child],
        "the child leads its group"
    );

    // A long call keeps the child busy (it is not waiting on stdin).
    let mut client = McpClient::connect(&ballast.url).await;
    let call = tokio::spawn(async move {
        client
            .http
            .post(&client.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", client.session.take().unwrap_or_default())
            .body(
                json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": { "name": "sleep", "arguments": { "ms": 60_000 } } })
                .to_string(),
            )
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = ballast.readyz().await;
        if r["calls_in_flight"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the call never started: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    kill(Pid::from_raw(ballast.pid as i32), Signal::SIGKILL).expect("SIGKILL ballast");
    let status = ballast.child.wait().await.expect("wait for ballast");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(5);
    loop {
        let left = group_members(child);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child's group {left:?} outlived ballast by 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "child {child} gone {:?} after ballast was SIGKILLed",
        killed_at.elapsed()
    );
    call.abort();
}
