//! `ballast-bench`, the real binary, against a real gateway in front of the
//! demo upstream: counts, tool errors, SSE answers, idle sessions held and
//! released on SIGTERM, and a clear failure when nothing listens.

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{TestGateway, demo_config};
use tokio::process::Command;

/// The generator built for this test run.
const BENCH: &str = env!("CARGO_BIN_EXE_ballast-bench");
/// Longest any one run of the generator may take here.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the generator with `args` to completion.
async fn bench(args: &[&str]) -> Output {
    let child = Command::new(BENCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ballast-bench");
    tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("ballast-bench finished in time")
        .expect("ballast-bench output")
}

/// Runs the generator with `--json` and returns its one JSON line.
async fn bench_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--url", url, "--json"];
    all.extend_from_slice(args);
    let out = bench(&all).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "exactly one line: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn counted_calls_are_all_measured() {
    let gw = TestGateway::start(demo_config()).await;
    let r = bench_json(&gw.url, &["--calls", "300", "-c", "8", "-s", "2"]).await;
    assert_eq!(r["calls"], 300, "{r}");
    assert_eq!(r["error_total"], 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["latency_us"]["p99"].as_u64() >= r["latency_us"]["p50"].as_u64(),
        "{r}"
    );
    assert!(r["throughput"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["duration_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["concurrency"], 8);
    assert_eq!(r["sessions"], 2);
    assert_eq!(r["tool"], "echo");
    assert_eq!(r["url"], gw.url.as_str());
    gw.stop().await;
}

#[tokio::test]
async fn is_error_results_count_as_tool_errors() {
    let gw = TestGateway::start(demo_config()).await;
    let r = bench_json(
        &gw.url,
        &["--tool", "fail", "--args", "{}", "-n", "50", "-c", "4"],
    )
    .await;
    assert_eq!(r["calls"], 50, "{r}");
    assert_eq!(r["errors"], serde_json::json!({ "tool_error": 50 }), "{r}");
    assert_eq!(r["error_total"], 50, "{r}");
    // A tool error is an answer: its latency is measured.
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0, "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn sse_answers_with_progress_are_read_to_the_response() {
    let gw = TestGateway::start(demo_config()).await;
    let args = [
        "--tool",
        "progress",
        "--args",
        r#"{"steps":2,"ms":1}"#,
        "--progress",
        "--calls",
        "20",
        "-c",
        "4",
    ];
    let r = bench_json(&gw.url, &args).await;
    assert_eq!(r["calls"], 20, "{r}");
    assert_eq!(r["error_total"], 0, "{r}");
    gw.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn idle_sessions_are_held_until_sigterm_then_closed() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let gw = TestGateway::start(demo_config()).await;
    let mut child = Command::new(BENCH)
        .args(["--url", &gw.url, "--idle-sessions", "50", "--hold", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ballast-bench");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let opened = tokio::time::timeout(RUN_LIMIT, lines.next_line())
        .await
        .expect("sessions opened in time")
        .expect("read stdout")
        .expect("a line");
    assert!(opened.starts_with("opened 50 of 50 sessions"), "{opened}");
    let (status, ready) = gw.readyz().await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready["sessions"].as_u64().unwrap() >= 50, "{ready}");

    let pid = child.id().expect("bench pid");
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM the bench");
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .expect("bench exited after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let closed = lines.next_line().await.expect("read stdout");
    assert_eq!(closed.as_deref(), Some("closed 50 sessions"));
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["sessions"], 0, "sessions deleted on exit: {ready}");
    gw.stop().await;
}

#[tokio::test]
async fn nothing_listening_exits_1_with_a_clear_message() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = bench(&["--url", &url, "-n", "10", "--json"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no results printed");
    assert!(stderr.contains("could not open"), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test]
async fn out_of_bounds_flags_are_refused() {
    for args in [["-d", "2h"], ["-n", "100000001"]] {
        let out = bench(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[1]), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn help_documents_every_flag() {
    let out = bench(&["--help"]).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--url",
        "--concurrency",
        "--sessions",
        "--duration",
        "--calls",
        "--warmup",
        "--timeout",
        "--tool",
        "--args",
        "--progress",
        "--json",
        "--threads",
        "--idle-sessions",
        "--hold",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}
