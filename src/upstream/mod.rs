//! Upstreams: the MCP servers behind Ballast.
//!
//! Each kind (stdio child, remote Streamable HTTP, remote 2024-11-05
//! HTTP+SSE) implements the same
//! transport shape (`transport.rs`); [`Connection`] adds ids, the pending
//! map and the `initialize` handshake on top; [`Upstream`] supervises
//! connections: connect with backoff, reconnect (restart a child) when one
//! ends, and publish its state for routing and `/readyz`.

mod connection;
mod error;
mod http;
mod lists;
mod process_tree;
mod sse;
mod stdin_queue;
mod stdio;
mod supervisor;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use self::connection::Deadline;
pub use self::connection::{Connection, ServerInfo};
pub use self::error::UpstreamError;
pub use self::lists::Lists;
pub(crate) use self::stdio::{read_line_bounded, write_lines};
use self::supervisor::{Failure, MIN_BACKOFF, Next, Supervisor};
use crate::config::UpstreamConfig;
use crate::jsonrpc::{Notification, Request};

/// Something an upstream sent on its own, or a change of its state, for the
/// router.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// A notification (progress, logging, list_changed, cancelled, …).
    Notification {
        /// Index of the upstream in the config.
        upstream: usize,
        /// The notification, params raw.
        notification: Notification,
        /// The upstream request whose response stream carried it, if known.
        origin: Option<u64>,
        /// Fired once the router has placed it (see [`Handled`]).
        handled: Handled,
    },
    /// A server→client request (sampling, elicitation, roots/list, …).
    Request {
        /// Index of the upstream in the config.
        upstream: usize,
        /// The request with the upstream's own id.
        request: Request,
        /// The upstream request whose response stream carried it, if known.
        origin: Option<u64>,
        /// The connection that sent it: the answer must go back on it, not
        /// on a later connection (a restarted child reuses ids).
        conn: std::sync::Weak<Connection>,
        /// Fired once the router has placed it (see [`Handled`]).
        handled: Handled,
    },
    /// The upstream became ready or stopped being ready.
    StateChanged {
        /// Index of the upstream in the config.
        upstream: usize,
    },
}

/// Dropped (or fired) when the router has placed an upstream message in its
/// downstream stream. The connection waits for it before handling the next
/// message, so a notification the upstream sent before a response is in the
/// call's stream before that response (upstream order is kept).
#[derive(Debug)]
pub struct Handled(Option<tokio::sync::oneshot::Sender<()>>);

impl Handled {
    pub(crate) fn new() -> (Handled, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Handled(Some(tx)), rx)
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Where an upstream is in its life.
#[derive(Clone)]
pub enum UpstreamState {
    /// Connecting or restarting; `attempt` counts failures since the last
    /// success (0: the first try is under way, calls wait for it; more:
    /// calls are refused at once with [`UpstreamError::Unavailable`]).
    Connecting {
        /// Failed attempts so far.
        attempt: u32,
        /// The last failure, for `/readyz`.
        last_error: Option<String>,
        /// When the next attempt starts, after a failed one.
        retry_at: Option<tokio::time::Instant>,
    },
    /// Initialized and serving.
    Ready(Arc<Connection>),
    /// A child crashed too often: hidden from the catalog until `until`
    /// (`park_duration` after it was parked). Remote upstreams are never
    /// parked: they reconnect with backoff.
    Parked {
        /// Crashes counted in the window.
        crashes: u32,
        /// The last failure.
        last_error: Option<String>,
        /// When it tries again.
        until: tokio::time::Instant,
    },
    /// Shut down.
    Stopped,
}

impl UpstreamState {
    /// How long until the supervisor tries again, while parked or waiting
    /// between attempts (at least 100 ms); `None` otherwise.
    pub fn retry_in(&self) -> Option<Duration> {
        let at = match self {
            UpstreamState::Parked { until, .. } => *until,
            UpstreamState::Connecting {
                retry_at: Some(at), ..
            } => *at,
            _ => return None,
        };
        Some(
            at.saturating_duration_since(Instant::now())
                .max(MIN_BACKOFF),
        )
    }
}

/// One configured upstream and its supervisor state.
pub struct Upstream {
    /// Position in the config (used in routing keys).
    pub index: usize,
    /// The configured name.
    pub name: Arc<str>,
    /// Its settings.
    pub config: UpstreamConfig,
    ids: Arc<AtomicU64>,
    state: watch::Sender<UpstreamState>,
    lists: std::sync::RwLock<Arc<Lists>>,
    generation: AtomicU64,
    /// Set once it has been ready: later outages are not waited for by
    /// `initialize` (see [`Upstream::first_try`]).
    ever_ready: std::sync::atomic::AtomicBool,
    stderr_tail: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    breaker: Arc<crate::resilience::Breaker>,
}

impl Upstream {
    /// A new, not yet connected upstream.
    pub fn new(index: usize, name: &str, config: UpstreamConfig) -> Arc<Self> {
        Arc::new(Self {
            index,
            name: name.into(),
            ids: Arc::new(AtomicU64::new(1)),
            state: watch::Sender::new(UpstreamState::Connecting {
                attempt: 0,
                last_error: None,
                retry_at: None,
            }),
            lists: std::sync::RwLock::new(Arc::new(Lists::default())),
            generation: AtomicU64::new(0),
            ever_ready: std::sync::atomic::AtomicBool::new(false),
            stderr_tail: Arc::default(),
            breaker: crate::resilience::Breaker::new(
                format!("upstream:{name}"),
                config.breaker.clone(),
            ),
            config,
        })
    }

    /// The upstream's circuit breaker (`upstream:<name>`): fed by the
    /// outcomes of its calls (see `router::forward`) and of its health probes.
    pub fn breaker(&self) -> &Arc<crate::resilience::Breaker> {
        &self.breaker
    }

    /// The current state.
    pub fn state(&self) -> UpstreamState {
        self.state.borrow().clone()
    }

    /// The live connection, if ready.
    pub fn current(&self) -> Option<Arc<Connection>> {
        match &*self.state.borrow() {
            UpstreamState::Ready(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// The live connection; while the upstream's first try (to start, or
    /// to come back after a lost connection) is under way, waits up to
    /// `wait` for it.
    ///
    /// # Errors
    /// [`UpstreamError::Unavailable`] at once when the upstream is parked
    /// or a try has failed and the next is pending (its `retry_after` says
    /// when); [`UpstreamError::NotConnected`] if it is still starting after
    /// `wait`, or stopped.
    pub async fn connection(&self, wait: Duration) -> Result<Arc<Connection>, UpstreamError> {
        let mut rx = self.state.subscribe();
        let settled = async {
            rx.wait_for(|s| !matches!(s, UpstreamState::Connecting { attempt: 0, .. }))
                .await
                .map(|s| s.clone())
        };
        let state = match tokio::time::timeout(wait, settled).await {
            Ok(Ok(state)) => state,
            _ => return Err(UpstreamError::NotConnected),
        };
        let retry_after = state.retry_in().unwrap_or(MIN_BACKOFF);
        match state {
            UpstreamState::Ready(c) => Ok(c),
            UpstreamState::Parked { last_error, .. } => Err(UpstreamError::Unavailable {
                state: "parked",
                detail: last_error,
                retry_after,
            }),
            UpstreamState::Connecting { last_error, .. } => Err(UpstreamError::Unavailable {
                state: "reconnecting",
                detail: last_error,
                retry_after,
            }),
            UpstreamState::Stopped => Err(UpstreamError::NotConnected),
        }
    }

    /// Waits up to `wait` while the upstream is on its very first try since
    /// Ballast started (a child starting up, a remote being reached);
    /// returns at once once it has been ready, or once a try has failed
    /// (down, cannot start) or it is parked — a session then starts without
    /// it, and its tools join later with `list_changed`.
    pub async fn first_try(&self, wait: Duration) {
        if !self.ever_ready.load(Ordering::SeqCst) {
            let _ = self.connection(wait).await;
        }
    }

    /// The catalog lists as last fetched (empty while not ready).
    pub fn lists(&self) -> Arc<Lists> {
        self.lists.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Bumped whenever [`Upstream::lists`] or the state changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Fetches tools, prompts, resources and templates again from `conn`.
    pub async fn refresh_lists(&self, conn: &Connection) {
        let lists = Lists::fetch(conn).await;
        if let Ok(mut l) = self.lists.write() {
            *l = Arc::new(lists);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The last lines (up to 20) a stdio child wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether its tools belong in the catalog: ready, or briefly
    /// reconnecting (calls wait for it); not parked or stopped.
    pub fn is_listed(&self) -> bool {
        matches!(
            self.state(),
            UpstreamState::Ready(_) | UpstreamState::Connecting { .. }
        )
    }

    fn set_state(&self, state: UpstreamState) {
        if matches!(state, UpstreamState::Ready(_)) {
            self.ever_ready.store(true, Ordering::SeqCst);
        }
        // A restarting upstream keeps its catalog (calls wait for it); a
        // parked or stopped one is hidden.
        if matches!(state, UpstreamState::Parked { .. } | UpstreamState::Stopped)
            && let Ok(mut l) = self.lists.write()
        {
            *l = Arc::new(Lists::default());
        }
        self.state.send_replace(state);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps the upstream connected until `stop` fires: connects and
    /// initializes, fetches the catalog, publishes `Ready`, and starts over
    /// when the connection ends (a stdio child that exits is restarted). On
    /// `stop`, closes the connection (stdin-close → SIGTERM → SIGKILL for a
    /// child) and publishes `Stopped`.
    ///
    /// When to try again, and when a crash-looping child is parked, is the
    /// policy in `supervisor.rs`: backoff with full jitter, and a child
    /// parked after `park_after` crashes within `park_window`. A program
    /// that cannot start ("cannot start: not found") and a remote upstream
    /// that is down are retried with backoff and never parked.
    pub async fn supervise(
        self: Arc<Self>,
        events: mpsc::Sender<UpstreamEvent>,
        stop: CancellationToken,
    ) {
        let remote = !matches!(self.config.kind(), crate::config::UpstreamKind::Stdio);
        let mut policy = Supervisor::new(&self.config.supervision, remote);
        while !stop.is_cancelled() {
            let next = match self.connect(&events, &stop).await {
                Ok(conn) => {
                    policy.connected();
                    let Some(lived) = self.serve(conn, &events, &stop).await else {
                        break;
                    };
                    policy.lost(Instant::now(), lived)
                }
                Err(_) if stop.is_cancelled() => break,
                Err(e) => {
                    let failure = Failure::of(&e, remote);
                    let next = policy.failed(Instant::now(), failure);
                    self.log_failure(failure, &e, policy.attempt(), policy.max_backoff());
                    if let Next::Retry { delay } = next {
                        self.set_state(UpstreamState::Connecting {
                            attempt: policy.attempt(),
                            last_error: Some(e.with_cause()),
                            retry_at: Some(Instant::now() + delay),
                        });
                    }
                    next
                }
            };
            let resume_at = match next {
                Next::Retry { delay } => Instant::now() + delay,
                Next::Park { crashes, until } => {
                    self.park(crashes, until, &events).await;
                    until
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(resume_at) => {}
                () = stop.cancelled() => break,
            }
        }
        self.set_state(UpstreamState::Stopped);
        self.announce(&events).await;
    }

    /// Serves `conn` until it is lost (it ends, or health probes give up
    /// on it) and returns how long it lived, having published `Connecting`
    /// (calls wait for the next try); `None` when `stop` fired (closed).
    async fn serve(
        &self,
        conn: Arc<Connection>,
        events: &mpsc::Sender<UpstreamEvent>,
        stop: &CancellationToken,
    ) -> Option<Duration> {
        self.set_state(UpstreamState::Ready(conn.clone()));
        self.announce(events).await;
        let since = Instant::now();
        let lost = tokio::select! {
            () = conn.closed() => "connection lost",
            reason = self.probe(&conn) => {
                tracing::warn!(upstream = %self.name, reason, "reconnecting");
                conn.close().await;
                reason
            }
            () = stop.cancelled() => {
                conn.close().await;
                return None;
            }
        };
        let tail = self.stderr_tail().join("\n");
        tracing::warn!(upstream = %self.name, stderr_tail = %tail, "upstream connection lost; restarting");
        crate::observe::metrics::upstream_restart(&self.name);
        self.set_state(UpstreamState::Connecting {
            attempt: 0,
            last_error: Some(lost.into()),
            retry_at: None,
        });
        self.announce(events).await;
        Some(since.elapsed())
    }

    /// Parks a crash-looping child until `until`: hidden from the catalog,
    /// readiness red, calls refused at once.
    async fn park(&self, crashes: u32, until: Instant, events: &mpsc::Sender<UpstreamEvent>) {
        let sup = &self.config.supervision;
        let tail = self.stderr_tail().join("\n");
        tracing::warn!(
            upstream = %self.name,
            crashes,
            park_ms = sup.park_duration.as_millis() as u64,
            stderr_tail = %tail,
            "upstream crash-looping: parked (its tools are hidden until it recovers)"
        );
        self.set_state(UpstreamState::Parked {
            crashes,
            last_error: Some(format!(
                "crash-looping: {crashes} crash(es) within {:?}",
                sup.park_window
            )),
            until,
        });
        self.announce(events).await;
    }

    /// Tells the router the state changed.
    async fn announce(&self, events: &mpsc::Sender<UpstreamEvent>) {
        let _ = events
            .send(UpstreamEvent::StateChanged {
                upstream: self.index,
            })
            .await;
    }

    /// Logs a failed connect attempt: the first of a series at WARN (saying
    /// which kind of failure it is), the rest at DEBUG.
    fn log_failure(&self, failure: Failure, e: &UpstreamError, attempt: u32, max: Duration) {
        let max_backoff_ms = max.as_millis() as u64;
        if attempt > 1 {
            tracing::debug!(upstream = %self.name, error = %e, attempt, "upstream connect attempt failed");
            return;
        }
        match failure {
            Failure::CannotStart => {
                let reason = match e {
                    UpstreamError::Spawn { source, .. } => match source.kind() {
                        std::io::ErrorKind::NotFound => "not found".to_owned(),
                        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                        _ => source.to_string(),
                    },
                    other => other.to_string(),
                };
                let command = self.config.command.as_deref().unwrap_or_default();
                tracing::warn!(upstream = %self.name, command, max_backoff_ms, "upstream cannot start: {reason}; retrying with backoff");
            }
            Failure::Unreachable => {
                tracing::warn!(upstream = %self.name, error = %e.with_cause(), max_backoff_ms, "upstream unreachable; reconnecting with backoff");
            }
            Failure::Crash => {
                let tail = self.stderr_tail().join("\n");
                tracing::warn!(upstream = %self.name, error = %e, stderr_tail = %tail, "upstream failed to initialize; restarting with backoff");
            }
        }
    }

    /// Watches a remote upstream's connection: a `ping` every
    /// `probe_interval` (0 = none), and one at once when a request found
    /// nobody listening. Returns why the connection counts as lost: a probe
    /// found nobody listening, or `probe_failures` probes in a row got no
    /// answer in time. Any answer (even an error) counts as alive. Never
    /// returns for stdio upstreams (their exit is seen directly).
    async fn probe(&self, conn: &Connection) -> &'static str {
        let sup = &self.config.supervision;
        if matches!(self.config.kind(), crate::config::UpstreamKind::Stdio) {
            return std::future::pending().await;
        }
        let mut failures = 0;
        loop {
            let interval = async {
                if sup.probe_interval.is_zero() {
                    std::future::pending().await
                } else {
                    tokio::time::sleep(sup.probe_interval).await
                }
            };
            tokio::select! {
                () = interval => {}
                () = conn.unreachable_seen() => {}
            }
            let deadline = Deadline {
                timeout: sup.probe_timeout,
                max: sup.probe_timeout,
                progress: None,
            };
            match conn
                .request_within(conn.next_id(), crate::mcp::method::PING, None, deadline)
                .await
            {
                Ok(_) => {
                    failures = 0;
                    self.breaker.observe(false);
                }
                // Nobody listening: supervision reconnects; no breaker food.
                Err(e) if e.is_unreachable() => return "nobody listening at the upstream's address",
                Err(e) => {
                    failures += 1;
                    self.breaker.observe(true);
                    tracing::debug!(upstream = %self.name, error = %e, failures, "health probe failed");
                    if failures >= sup.probe_failures.max(1) {
                        return "health probes unanswered";
                    }
                }
            }
        }
    }

    async fn connect(
        &self,
        events: &mpsc::Sender<UpstreamEvent>,
        stop: &CancellationToken,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let conn = Connection::open(
            self.index,
            self.name.clone(),
            &self.config,
            self.ids.clone(),
            events.clone(),
            self.stderr_tail.clone(),
        )?;
        let ready = async {
            conn.initialize(self.config.init_timeout).await?;
            self.refresh_lists(&conn).await;
            Ok::<_, UpstreamError>(())
        };
        let outcome = tokio::select! {
            r = ready => r,
            () = stop.cancelled() => Err(UpstreamError::Cancelled),
            () = conn.closed() => Err(UpstreamError::Closed),
        };
        match outcome {
            Ok(()) => Ok(conn),
            Err(e) => {
                conn.close().await;
                Err(e)
            }
        }
    }
}
