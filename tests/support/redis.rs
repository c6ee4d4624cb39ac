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

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A free loopback port for a Redis Cluster node: at most 55535, with the
/// node's cluster bus port (10000 higher) free too — a node on a higher
/// port refuses to start ("Redis port number too high").
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port at most 55535 with its cluster bus port free");
}

impl RedisServer {
    /// Starts one on a free port; waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_on(free_port(), Vec::new()).await
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
        // A lost node is never marked failed within a test (node timeout
        // 60 s), so the other nodes keep serving their slots: the tests do
        // not depend on how fast they run.
        let mut server = Self::start_on(
            cluster_port(),
            vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-node-timeout".into(),
                "60000".into(),
                "--dir".into(),
                dir.display().to_string(),
            ],
        )
        .await;
        server.dir = Some(dir);
        server
    }

    async fn start_on(port: u16, extra: Vec<String>) -> Self {
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

    /// Restarts the server on the same port and waits until it serves
    /// again: for a Redis Cluster node (which rejoins with the node id and
    /// slots in its `nodes.conf`), until it reports `cluster_state:ok`.
    #[allow(dead_code)]
    pub async fn restart_serving(&mut self) {
        self.restart().await;
        if !self.extra.iter().any(|a| a == "--cluster-enabled") {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self
            .command(&["CLUSTER", "INFO"])
            .await
            .contains("cluster_state:ok")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the restarted cluster node never rejoined"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
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

/// A real Redis Cluster of `redis-server` nodes on free loopback ports,
/// primaries only, the 16384 hash slots split evenly between them.
#[allow(dead_code)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

#[allow(dead_code)]
impl RedisCluster {
    /// Starts `n` nodes, gives each its share of the slots, introduces
    /// them to each other (`CLUSTER MEET`) and waits until every node
    /// reports `cluster_state:ok` and knows every slot's owner.
    pub async fn start(n: usize) -> Self {
        assert!(n >= 1);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(RedisServer::start_cluster_node().await);
        }
        for (i, node) in nodes.iter().enumerate() {
            let (first, last) = Self::range(n, i);
            let ok = node
                .command(&[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ])
                .await;
            assert!(ok.starts_with("+OK"), "ADDSLOTSRANGE: {ok}");
        }
        for node in &nodes[1..] {
            let ok = nodes[0]
                .command(&["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()])
                .await;
            assert!(ok.starts_with("+OK"), "MEET: {ok}");
        }
        let cluster = Self { nodes };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut ready = true;
            for node in &cluster.nodes {
                let info = node.command(&["CLUSTER", "INFO"]).await;
                ready &= info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{n}\r"))
                    && info.contains("cluster_slots_ok:16384\r");
            }
            if ready {
                return cluster;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {n}-node Redis Cluster never formed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The slots node `i` of `n` serves: (first, last), inclusive.
    fn range(n: usize, i: usize) -> (u16, u16) {
        let per = 16384 / n;
        let first = i * per;
        let last = if i + 1 == n { 16383 } else { first + per - 1 };
        (first as u16, last as u16)
    }

    /// `redis+cluster://` naming every node (as a user would list them).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The hash slot of `key` (asked of the cluster: `CLUSTER KEYSLOT`).
    pub async fn slot(&self, key: &str) -> u16 {
        let reply = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]).await;
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("CLUSTER KEYSLOT")
    }

    /// Index of the node serving `key`.
    pub async fn node_of(&self, key: &str) -> usize {
        let slot = self.slot(key).await;
        (0..self.nodes.len())
            .find(|&i| {
                let (first, last) = Self::range(self.nodes.len(), i);
                (first..=last).contains(&slot)
            })
            .expect("every slot has a node")
    }

    /// One command on the node serving `key`.
    pub async fn command_for(&self, key: &str, args: &[&str]) -> String {
        let node = self.node_of(key).await;
        self.nodes[node].command(args).await
    }
}
