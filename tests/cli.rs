//! What a new user meets on the command line (issue 13 item 18), against
//! the real binary: hints, host names in `--listen`, the demo's banner only
//! once it listens, readable exit statuses, no colour codes in log files,
//! precise JSON config errors, and docs that match the binary.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::binary::{Ballast, free_port};
use support::{BIN, McpClient};

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write");
    path
}

const MCP_JSON: &str =
    r#"{"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}"#;

#[test]
fn serve_config_with_a_json_file_points_to_mcp_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(&dir, "claude_desktop_config.json", MCP_JSON);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&json)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--mcp-config"), "no hint: {stderr}");
}

#[test]
fn json_config_errors_name_file_line_column_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(
        &dir,
        "mcp.json",
        "{\"mcpServers\": {\n  \"time\": {\"command\": \"uvx\", \"args\": [5]}\n}}",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&json)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let want = format!(
        "{}:2:39: mcpServers.time.args[0]: invalid type: integer `5`, expected a string\n",
        json.display()
    );
    assert!(stderr.ends_with(&want), "{stderr}\nwanted: {want}");
}

#[tokio::test]
async fn listen_accepts_a_host_name() {
    let port = free_port();
    let other = free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{other}\"\n\n\
         [upstreams.demo]\ncommand = {BIN:?}\nargs = [\"demo-upstream\"]\n"
    );
    let listen = format!("localhost:{port}");
    let ballast = Ballast::start(port, &toml, &["--listen", &listen]).await;
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", ballast.port))
        .await
        .expect("listening on localhost's IPv4 address");
    assert_eq!(health.status(), 200);
}

#[test]
fn the_demo_prints_no_banner_when_it_cannot_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = Command::new(BIN)
        .args(["demo", "--listen", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(
        !stderr.contains("MCP endpoint"),
        "banner for a port it never got: {stderr}"
    );
}

#[tokio::test]
async fn the_demo_banner_means_the_endpoint_accepts() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = free_port();
    let mut demo = tokio::process::Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn demo");
    let mut lines = BufReader::new(demo.stderr.take().expect("stderr")).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("MCP endpoint") {
                return line;
            }
        }
        panic!("the demo ended without a banner");
    })
    .await
    .expect("banner in time");
    assert!(
        banner.contains(&format!("127.0.0.1:{port}/mcp")),
        "{banner}"
    );
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the endpoint accepts once the banner is out");
    demo.start_kill().expect("kill the demo");
    let _ = demo.wait().await;
}

#[tokio::test]
async fn exit_statuses_are_readable_and_piped_logs_have_no_colour_codes() {
    let ballast = Ballast::start_demo("").await;
    let mut client = McpClient::connect(&ballast.url).await;
    let r = client.call_tool("crash", json!({})).await;
    assert!(r["error"].is_object(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(l) = ballast
            .log_lines()
            .into_iter()
            .find(|l| l.contains("stdio upstream exited"))
        {
            break l;
        }
        assert!(Instant::now() < deadline, "{:#?}", ballast.log_lines());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(exited.contains("exited with code 1"), "{exited}");
    assert!(!exited.contains("ExitStatus"), "{exited}");
    let lines = ballast.log_lines();
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "ANSI codes in a piped log: {:?}",
        lines.iter().find(|l| l.contains('\u{1b}'))
    );
}

/// Item 4: a loopback listener is not warned about (the WARN for one beyond
/// loopback is tested on `warn_if_exposed`; tests never listen beyond
/// loopback).
#[tokio::test]
async fn a_loopback_listener_logs_no_exposure_warning() {
    let ballast = Ballast::start_demo("").await;
    let lines = ballast.log_lines();
    assert!(lines.iter().any(|l| l.contains("ballast listening")));
    assert!(
        !lines.iter().any(|l| l.contains("without authentication")),
        "{lines:#?}"
    );
}

#[cfg(unix)]
#[test]
fn exit_statuses_name_the_signal() {
    use std::os::unix::process::ExitStatusExt;
    let killed = std::process::ExitStatus::from_raw(9);
    assert_eq!(
        ballast::observe::describe_exit(&killed),
        "killed by signal 9 (SIGKILL)"
    );
    let code = std::process::ExitStatus::from_raw(3 << 8);
    assert_eq!(ballast::observe::describe_exit(&code), "exited with code 3");
}

/// Every flag of `serve` and `demo` is documented in the README.
#[test]
fn the_readme_documents_every_command_line_flag() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    for command in ["serve", "demo"] {
        let help = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .expect("help");
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.']))
            .filter(|w| !["--help", "--version"].contains(w))
        {
            assert!(
                readme.contains(flag),
                "README does not mention `{command} {flag}`"
            );
        }
    }
}

/// Every markdown file the README and ARCHITECTURE.md name is in the
/// repository.
#[test]
fn docs_name_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("doc");
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c))) {
            if let Some(name) = word.strip_suffix(".md")
                && !name.is_empty()
            {
                assert!(
                    root.join(word).is_file(),
                    "{doc} names {word}, which is not in the repository"
                );
            }
        }
    }
}
