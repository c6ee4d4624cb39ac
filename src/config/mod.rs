//! Configuration: the TOML schema, its defaults, and validation.
//!
//! Every field is documented in the README's config reference; `ballast
//! check-config FILE` prints the effective configuration. Unknown fields are
//! errors (`deny_unknown_fields`), reported with file, line, column and the
//! dotted field name (see `load.rs`).

mod listen;
mod load;
mod mcp_servers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use self::listen::{ListenError, is_loopback, resolve_listen, warn_if_exposed};
pub use self::load::{ConfigError, from_toml_str, load_mcp_servers_file, load_toml_file};
pub use self::mcp_servers::from_mcp_servers_json;

/// The whole configuration (`ballast.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The downstream HTTP listener and its protections.
    #[serde(default)]
    pub server: ServerConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// How upstream catalogs are merged and named.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Where sessions and stream events are kept (memory, or Redis shared
    /// by replicas).
    #[serde(default)]
    pub store: StoreConfig,
    /// The MCP servers behind Ballast, by name, in document order. The first
    /// one also receives methods Ballast cannot route by name or URI.
    #[serde(default)]
    pub upstreams: IndexMap<String, toml::Spanned<UpstreamConfig>>,
}

/// `[server]`: the downstream Streamable HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback, SPEC.md 18).
    pub listen: SocketAddr,
    /// Path of the MCP endpoint. Default `/mcp`.
    pub path: String,
    /// Accepted `Host` header names (port ignored); `"*"` accepts any.
    /// Default: `localhost`, `127.0.0.1`, `[::1]` (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` values, as `scheme://host` (any port) or
    /// `scheme://host:port`; `"*"` accepts any. Requests without `Origin`
    /// are accepted. Default: http and https on `localhost`, `127.0.0.1`, `[::1]`.
    pub allowed_origins: Vec<String>,
    /// How long in-flight calls may run after SIGTERM before the gateway
    /// stops waiting. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// During the drain, how long Ballast keeps answering 503 +
    /// `Retry-After` after the last call ended, before it stops accepting:
    /// a client's follow-up right after its answer (the Python SDK lists
    /// tools after a call) then gets a clear refusal instead of a
    /// connection error. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub drain_linger: Duration,
    /// Largest accepted POST body, in bytes. Default 4 MiB; larger → 413.
    pub max_body_bytes: usize,
    /// Largest `initialize` params a session keeps (capabilities,
    /// clientInfo), in bytes of JSON. Default 64 KiB; larger → 400 with
    /// JSON-RPC error -32602 (invalid params).
    pub max_initialize_bytes: usize,
    /// Interval between SSE keep-alive comments on idle streams. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a downstream `initialize` waits for required upstreams on
    /// their very first try since Ballast started (a child still starting)
    /// before answering with what is ready. One that has failed a try
    /// (down, cannot start), is parked, or was up before is not waited for:
    /// sessions start with the upstreams that are up, the others' tools
    /// join later with `list_changed`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    /// How long a finished (or abandoned) SSE stream stays resumable with
    /// `Last-Event-ID`. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub resume_window: Duration,
    /// How long a finished stream that was written to its client in full
    /// stays resumable (for a client that lost the connection at that very
    /// moment); shorter than `resume_window` so memory does not grow with
    /// call rate × resume window. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub delivered_retention: Duration,
    /// Longest one SSE response stays open before Ballast ends it with
    /// `retry:` (the client resumes where it left off). `0s` (default) = no limit.
    #[serde(with = "humantime_serde")]
    pub max_stream_duration: Duration,
    /// A session with no request in flight and nothing flowing for this long
    /// is ended (an open but silent GET stream does not keep it). Default 30 min.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Most sessions at once. At the cap a new session takes the place of
    /// the least recently used idle one (no call in flight, no stream being
    /// read; it ends as on DELETE); if every session is busy → 503 with
    /// `Retry-After`. Default 10,000.
    pub max_sessions: usize,
    /// Most requests in flight per session; more → 429 with `Retry-After`. Default 100.
    pub max_requests_per_session: usize,
    /// Longest a client may take to send request headers (slowloris guard),
    /// and its first request; an HTTP/2 connection with no request in
    /// flight for this long is closed too. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request body once its headers
    /// arrived; slower → 408 with a JSON-RPC error, connection closed. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most client connections open at once (HTTP/1 and HTTP/2 alike); at
    /// the cap a new connection waits up to 1 s for a slot, then is closed.
    /// Never more than half the soft `RLIMIT_NOFILE` (raised to the hard
    /// limit at start). Default 1024.
    pub max_connections: usize,
    /// Most events retained per stream for resume; past it the oldest go. Default 10,000.
    pub stream_max_events: usize,
    /// Most bytes retained per stream for resume (event data plus 128 bytes
    /// per event); past it the oldest events go. Default 16 MiB.
    pub stream_max_bytes: usize,
    /// Most bytes all streams together retain in this process's memory
    /// (counted as `stream_max_bytes` is). Over it, streams lose their
    /// retained events — streams nobody reads first, the one with the
    /// oldest event first — and a resume of such a stream gets a JSON-RPC
    /// error event saying its events were lost. Default 128 MiB.
    pub event_log_max_bytes: usize,
    /// Cancel a call upstream (`notifications/cancelled`) when nobody has
    /// read its stream for `resume_window`. Default true.
    pub cancel_abandoned_calls: bool,
    /// Requests per second each session may make (token bucket); more →
    /// 429 with `Retry-After`. 0 (default) = no limit.
    pub rate_limit_per_session: f64,
    /// Burst size of the per-session bucket. Default 20.
    pub rate_limit_burst: u32,
}

/// `[store]`: where session records and stream events live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (default: this process only) or `redis` (shared by every
    /// replica that uses the same `url` and `deployment`).
    pub kind: StoreKind,
    /// Redis URL: a standalone Redis or Valkey,
    /// `redis://[user:pass@]host:port[/db]` or `rediss://…` (TLS); or a
    /// Redis Cluster, `redis+cluster://[user:pass@]host:port[,host:port…]`
    /// or `rediss+cluster://…`, listing some of its nodes. Default
    /// `redis://127.0.0.1:6379`. Only for `kind = "redis"`.
    pub url: String,
    /// Key namespace: every key is `ballast:<deployment>:…`, so several
    /// deployments can share one Redis. Default `default`.
    pub deployment: String,
    /// Longest one Redis operation may take before it counts as failed and
    /// the memory fallback is used. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// The breaker in front of Redis: while open, new sessions and streams
    /// go to the memory fallback. Defaults: 3 failures in a row, open 5 s.
    pub breaker: BreakerConfig,
}

/// The session and event store's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process's memory.
    Memory,
    /// A Redis (or Valkey) server shared by replicas.
    Redis,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            url: "redis://127.0.0.1:6379".to_owned(),
            deployment: "default".to_owned(),
            op_timeout: Duration::from_millis(250),
            breaker: BreakerConfig {
                consecutive_failures: 3,
                min_calls: 20,
                open_duration: Duration::from_secs(5),
                ..BreakerConfig::default()
            },
        }
    }
}

/// `[log]`: log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` (default) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `ballast=debug`. Default `info`;
    /// the `RUST_LOG` environment variable overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[catalog]`: merging of tools, prompts and resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `auto` (default: namespace when more than one upstream is configured),
    /// `always` or `never`.
    pub namespace: NamespaceMode,
    /// Between prefix and name: `<prefix><separator><name>`. Default `__`.
    pub separator: String,
}

/// When tool and prompt names get the upstream's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// Only when more than one upstream is configured.
    Auto,
    /// Always.
    Always,
    /// Never (names must not collide; a collision at run time hides the later one).
    Never,
}

/// `[upstreams.<name>]`: one MCP server. Exactly one of `command` (stdio
/// child process) or `url` (remote Streamable HTTP endpoint) is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Program to start as a stdio MCP server (T25 "stdio").
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for the child (added to Ballast's own).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Working directory of the child. Default: Ballast's own.
    pub cwd: Option<PathBuf>,
    /// URL of a remote Streamable HTTP MCP endpoint.
    pub url: Option<String>,
    /// Protocol of a remote upstream: `streamable_http` (default) or `sse`
    /// (the 2024-11-05 HTTP+SSE transport: `url` is its SSE endpoint).
    #[serde(default)]
    pub transport: RemoteTransport,
    /// Extra HTTP headers sent to a remote upstream (e.g. its own API key;
    /// the downstream client's token is never forwarded, SPEC.md 20).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Namespace prefix for this upstream's tools and prompts. Default: its name.
    pub prefix: Option<String>,
    /// Whether `/readyz` waits for this upstream (and `initialize` during
    /// its first try, see `startup_wait`). Default true; in `mcpServers`
    /// JSON, `"required": false`.
    #[serde(default = "yes")]
    pub required: bool,
    /// Roots (`file://` URIs) Ballast answers this upstream's `roots/list`
    /// with when no single client owns the request — e.g. a server that asks
    /// at start, outside any call (MCP "Roots"; a request a client owns goes
    /// to that client). Empty (default): such a request gets an error.
    #[serde(default)]
    pub roots: Vec<String>,
    /// Connection sharing. Only `shared` (default) is available today.
    #[serde(default)]
    pub mode: UpstreamMode,
    /// Longest wait for the upstream's `initialize` answer, per attempt. Default 30 s.
    #[serde(default = "default_init_timeout", with = "humantime_serde")]
    pub init_timeout: Duration,
    /// Longest a forwarded request may wait for its answer; each progress
    /// notification restarts it. Default 60 s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The most progress notifications may extend a request's wait to,
    /// from its start. Default 10 min.
    #[serde(default = "default_max_timeout", with = "humantime_serde")]
    pub max_timeout: Duration,
    /// Retry of failed calls (only safe ones: see [`ToolPolicy`]).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Most calls in flight at once to this upstream, and how long a call
    /// waits for a slot before failing fast.
    #[serde(default)]
    pub bulkhead: BulkheadConfig,
    /// Restart supervision: when a crash-looping child is parked.
    #[serde(default)]
    pub supervision: SupervisionConfig,
    /// The stale cache of read-only tool results.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Circuit breakers: one for the upstream, one per tool.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Per-tool overrides, by the tool's name on this upstream (without prefix).
    #[serde(default)]
    pub tools: IndexMap<String, ToolPolicy>,
    /// Each step of a stdio child's shutdown (stdin close → SIGTERM →
    /// SIGKILL) waits this long for the child to exit. Default 2 s.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[upstreams.<name>.retry]`: exponential backoff with full jitter, within
/// a retry budget. Only `transient` failures are retried, and a request that
/// may have reached the upstream only when the call is safe to repeat
/// (read-only or idempotent tool, a read method, or a [`ToolPolicy`] saying so).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retry). Default 3.
    pub max_attempts: u32,
    /// Cap of the first retry's wait. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Growth of the cap per retry (≥ 1.0). Default 2.0.
    pub multiplier: f64,
    /// Largest wait between attempts. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Retries may be at most this fraction of calls (over 10 s). Default 0.2.
    pub budget_ratio: f64,
    /// …plus this many retries per second regardless. Default 1.0.
    pub budget_min_per_sec: f64,
}

/// `[upstreams.<name>.supervision]`: restarts, and parking a crash loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Park a child after this many crashes (lost connections, or started
    /// and failed its handshake) within `park_window`. Default 5. A program
    /// that cannot start and a remote upstream that is down are never
    /// parked: they are retried with backoff (up to 10 s; 1 s for remotes).
    pub park_after: u32,
    /// The window for counting crashes. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub park_window: Duration,
    /// How long a parked upstream waits before trying again. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub park_duration: Duration,
    /// Remote upstreams: a `ping` this often while connected (0 = off). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long a probe waits for its answer. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Probes failed in a row before the connection counts as lost
    /// (readiness red, reconnect). Default 3.
    pub probe_failures: u32,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            park_after: 5,
            park_window: Duration::from_secs(60),
            park_duration: Duration::from_secs(30),
            probe_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            probe_failures: 3,
        }
    }
}

/// `[upstreams.<name>.cache]`: last good results of read-only tools,
/// served (marked stale) when a call and its fallbacks fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether results are kept. Default true.
    pub enabled: bool,
    /// How old a result may be and still be served. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub stale_ttl: Duration,
    /// Most results kept (count). Default 10,000.
    pub max_entries: u64,
    /// Most bytes kept: results' JSON plus 256 bytes each, in this
    /// replica's memory and, separately, in the shared tier (per upstream).
    /// Default 64 MiB.
    pub max_bytes: u64,
    /// A result larger than this (bytes of JSON) is not cached. Default 1 MiB.
    pub max_result_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stale_ttl: Duration::from_secs(600),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_result_bytes: 1024 * 1024,
        }
    }
}

/// `[upstreams.<name>.bulkhead]`: bounded concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadConfig {
    /// Most calls in flight at once (0 = no limit). Default 256.
    pub max_concurrent: usize,
    /// Longest wait for a slot; then the call fails fast (-32004). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// `[upstreams.<name>.breaker]`: when calls stop being sent for a while.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Whether the breakers are on. Default true.
    pub enabled: bool,
    /// Opens after this many failures in a row (transient or outcome
    /// unknown). Default 5.
    pub consecutive_failures: u32,
    /// …or when at least this fraction of calls in `window` failed. Default 0.5.
    pub failure_rate: f64,
    /// …counting only once `window` holds this many calls. Default 20.
    pub min_calls: u32,
    /// The sliding window for the failure rate. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long it stays open before letting probes through. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Probe calls at once while half-open. Default 1.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            open_duration: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }
}

/// `[upstreams.<name>.tools.<tool>]`: policy overrides for one tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Whether repeating the call is safe; overrides the tool's
    /// `readOnlyHint` / `idempotentHint` annotations (untrusted hints).
    pub idempotent: Option<bool>,
    /// Overrides `retry.max_attempts` for this tool.
    pub max_attempts: Option<u32>,
    /// Most calls of this tool at once (its own bulkhead; none if unset).
    pub max_concurrent: Option<usize>,
    /// Overrides `request_timeout` for this tool.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// A tool to call with the same arguments when this one fails, by its
    /// public name (e.g. `backup__search`); its result is marked degraded.
    pub fallback: Option<String>,
    /// Calls per second to this tool, all sessions together (bursts of one
    /// second's worth); more → JSON-RPC -32005 with `retry_after_ms`.
    pub rate_per_sec: Option<f64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_sec: 1.0,
        }
    }
}

/// The protocol of a remote upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteTransport {
    /// Streamable HTTP (2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// HTTP+SSE (2024-11-05): GET the SSE endpoint, POST to the URI its
    /// `endpoint` event names.
    Sse,
}

/// How downstream sessions share an upstream (DESIGN.md "Upstream modes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamMode {
    /// One connection serves every downstream session.
    #[default]
    Shared,
    /// One connection per downstream session (not available yet: rejected
    /// by validation).
    PerSession,
}

/// What kind of transport an upstream uses, derived from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A child process speaking newline-delimited JSON-RPC on stdio.
    Stdio,
    /// A remote Streamable HTTP endpoint.
    Http,
    /// A remote 2024-11-05 HTTP+SSE endpoint.
    Sse,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/mcp".to_owned(),
            allowed_hosts: ["localhost", "127.0.0.1", "[::1]"]
                .map(String::from)
                .to_vec(),
            allowed_origins: ["localhost", "127.0.0.1", "[::1]"]
                .iter()
                .flat_map(|h| [format!("http://{h}"), format!("https://{h}")])
                .collect(),
            drain_timeout: Duration::from_secs(10),
            drain_linger: Duration::from_secs(1),
            max_body_bytes: 4 * 1024 * 1024,
            max_initialize_bytes: 64 * 1024,
            keepalive_interval: Duration::from_secs(15),
            startup_wait: Duration::from_secs(10),
            resume_window: Duration::from_secs(300),
            delivered_retention: Duration::from_secs(2),
            max_stream_duration: Duration::ZERO,
            session_idle_timeout: Duration::from_secs(1800),
            max_sessions: 10_000,
            max_requests_per_session: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            stream_max_events: 10_000,
            stream_max_bytes: 16 * 1024 * 1024,
            event_log_max_bytes: 128 * 1024 * 1024,
            cancel_abandoned_calls: true,
            rate_limit_per_session: 0.0,
            rate_limit_burst: 20,
        }
    }
}

impl ServerConfig {
    /// The per-stream bounds of the event log.
    pub fn stream_limits(&self) -> crate::store::StreamLimits {
        crate::store::StreamLimits {
            max_events: self.stream_max_events,
            max_bytes: self.stream_max_bytes,
            total_max_bytes: self.event_log_max_bytes,
            delivered_ttl: self.delivered_retention,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            namespace: NamespaceMode::Auto,
            separator: "__".to_owned(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_init_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(2)
}

impl UpstreamConfig {
    /// A stdio upstream with default settings.
    pub fn stdio(command: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            command: Some(command.into()),
            args,
            ..Self::http_or_empty(None)
        }
    }

    /// A remote Streamable HTTP upstream with default settings.
    pub fn http(url: impl Into<String>) -> Self {
        Self::http_or_empty(Some(url.into()))
    }

    fn http_or_empty(url: Option<String>) -> Self {
        Self {
            command: None,
            args: Vec::new(),
            env: IndexMap::new(),
            cwd: None,
            url,
            transport: RemoteTransport::StreamableHttp,
            retry: RetryConfig::default(),
            supervision: SupervisionConfig::default(),
            cache: CacheConfig::default(),
            bulkhead: BulkheadConfig::default(),
            breaker: BreakerConfig::default(),
            tools: IndexMap::new(),
            headers: IndexMap::new(),
            prefix: None,
            required: true,
            roots: Vec::new(),
            mode: UpstreamMode::Shared,
            init_timeout: default_init_timeout(),
            request_timeout: default_request_timeout(),
            max_timeout: default_max_timeout(),
            shutdown_grace: default_shutdown_grace(),
        }
    }

    /// The transport kind. Validation guarantees exactly one is configured.
    pub fn kind(&self) -> UpstreamKind {
        match (&self.command, self.transport) {
            (Some(_), _) => UpstreamKind::Stdio,
            (None, RemoteTransport::StreamableHttp) => UpstreamKind::Http,
            (None, RemoteTransport::Sse) => UpstreamKind::Sse,
        }
    }
}

impl Config {
    /// Adds an upstream (for configs built in code, e.g. `ballast demo`).
    pub fn add_upstream(&mut self, name: impl Into<String>, upstream: UpstreamConfig) {
        self.upstreams
            .insert(name.into(), toml::Spanned::new(0..0, upstream));
    }

    /// The namespace prefix of each upstream, in order, or `None` for all
    /// when names are not namespaced.
    pub fn prefixes(&self) -> Vec<Option<String>> {
        let namespaced = match self.catalog.namespace {
            NamespaceMode::Always => true,
            NamespaceMode::Never => false,
            NamespaceMode::Auto => self.upstreams.len() > 1,
        };
        self.upstreams
            .iter()
            .map(|(name, u)| {
                namespaced.then(|| u.get_ref().prefix.clone().unwrap_or_else(|| name.clone()))
            })
            .collect()
    }
}
