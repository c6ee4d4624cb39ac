//! The real `ballast` binary as a child process: a TOML config in a temp
//! dir, the "ballast listening" log line as the ready signal, and its log
//! lines collected for assertions.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BIN;

/// A running `ballast serve` on 127.0.0.1.
pub struct Ballast {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub port: u16,
    /// `http://127.0.0.1:<port>/mcp`
    pub url: String,
    /// Every stderr line so far (the log).
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Ballast {
    /// `ballast serve --config <file>` where the file is `server_toml`
    /// (the `[server]` table's extra lines) plus a demo upstream, listening
    /// on a free loopback port. Returns once the socket accepts.
    pub async fn start_demo(server_toml: &str) -> Self {
        let port = free_port();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_toml}\n\n\
             [upstreams.demo]\ncommand = {BIN:?}\nargs = [\"demo-upstream\"]\n"
        );
        Self::start(port, &toml, &[]).await
    }

    /// `ballast serve --config <file with toml>` plus `args`; `port` must
    /// be the one the config listens on.
    pub async fn start(port: u16, toml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("ballast.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ballast");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("log") {
                let listening = line.contains("ballast listening");
                log.lock().unwrap().push(line);
                if listening {
                    return true;
                }
            }
            false
        })
        .await
        .expect("ballast started in time");
        assert!(ready, "ballast exited: {:#?}", log.lock().unwrap());
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            pid,
            port,
            url: format!("http://127.0.0.1:{port}/mcp"),
            log,
            _dir: dir,
        }
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
            .await
            .expect("readyz");
        (r.status().as_u16(), r.json().await.expect("readyz json"))
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// The live (not zombie) processes whose process group is `pgid`, read
/// from /proc.
#[cfg(target_os = "linux")]
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces, so split
        // after its closing parenthesis.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[0] != "X" && fields[2] == pgid.to_string()
        {
            members.push(pid);
        }
    }
    members
}
