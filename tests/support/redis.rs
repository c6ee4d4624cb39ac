//! A real `redis-server` (Debian's) for a test: started on a free loopback
//! port with persistence off, killed by its PID when dropped, and
//! restartable on the same port (to test outages and recovery).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A number no other call in this process got.
#[allow(dead_code)]
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments (e.g. cluster mode).
    extra: Vec<String>,
    /// A directory of this server's own, removed when it is dropped.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one on a free port; waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// Starts one as a Redis Cluster node (no slots yet), its cluster state
    /// file in a fresh temporary directory.
    #[allow(dead_code)]
    pub async fn start_cluster_node() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ballast-redis-cluster-{}-{}",
            std::process::id(),
            crate::support::redis::unique()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self::start_with(vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--dir".into(),
            dir.display().to_string(),
        ])
        .await;
        server.dir = Some(dir);
        server
    }

    async fn start_with(extra: Vec<String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut server = Self {
            port,
            child: None,
            extra,
            dir: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// (Re)starts the server on the same port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.ping().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server never answered PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the server (by its PID) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether it answers PING now.
    pub async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"+PONG\r\n"
    }

    /// Runs one command with redis-cli-free RESP: returns the raw reply.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to redis");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
