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
mod stdio;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub(crate) use self::connection::Deadline;
pub use self::connection::{Connection, ServerInfo};
pub use self::error::UpstreamError;
pub use self::lists::Lists;
pub(crate) use self::stdio::{read_line_bounded, write_lines};
use crate::config::UpstreamConfig;
use crate::jsonrpc::{Notification, Request};

/// First pause before reconnecting; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

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
    /// Connecting or restarting; `attempt` counts failures since the last success.
    Connecting {
        /// Failed attempts so far.
        attempt: u32,
        /// The last failure, for `/readyz`.
        last_error: Option<String>,
    },
    /// Initialized and serving.
    Ready(Arc<Connection>),
    /// Crashed too often: hidden from the catalog until `park_duration` passes.
    Parked {
        /// Crashes counted in the window.
        crashes: u32,
        /// The last failure.
        last_error: Option<String>,
    },
    /// Shut down.
    Stopped,
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
            }),
            lists: std::sync::RwLock::new(Arc::new(Lists::default())),
            generation: AtomicU64::new(0),
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

    /// Waits up to `wait` for a live connection.
    ///
    /// # Errors
    /// [`UpstreamError::NotConnected`] if none appears in time or the
    /// upstream is stopped.
    pub async fn connection(&self, wait: Duration) -> Result<Arc<Connection>, UpstreamError> {
        let mut rx = self.state.subscribe();
        let ready = rx.wait_for(|s| matches!(s, UpstreamState::Ready(_) | UpstreamState::Stopped));
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(s)) => match &*s {
                UpstreamState::Ready(c) => Ok(c.clone()),
                _ => Err(UpstreamError::NotConnected),
            },
            _ => Err(UpstreamError::NotConnected),
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
    /// initializes with exponential backoff and jitter, fetches the catalog,
    /// publishes `Ready`, and starts over when the connection ends (a stdio
    /// child that exits is restarted). On `stop`, closes the connection
    /// (stdin-close → SIGTERM → SIGKILL for a child) and publishes `Stopped`.
    pub async fn supervise(
        self: Arc<Self>,
        events: mpsc::Sender<UpstreamEvent>,
        stop: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0u32;
        let sup = self.config.supervision.clone();
        let mut crashes: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
        while !stop.is_cancelled() {
            match self.connect(&events, &stop).await {
                Ok(conn) => {
                    attempt = 0;
                    self.set_state(UpstreamState::Ready(conn.clone()));
                    let _ = events
                        .send(UpstreamEvent::StateChanged {
                            upstream: self.index,
                        })
                        .await;
                    let since = Instant::now();
                    tokio::select! {
                        () = conn.closed() => {}
                        () = self.probe(&conn) => {
                            tracing::warn!(upstream = %self.name, "health probes unanswered; reconnecting");
                            conn.close().await;
                        }
                        () = stop.cancelled() => {
                            conn.close().await;
                            break;
                        }
                    }
                    let tail = self.stderr_tail().join("\n");
                    tracing::warn!(upstream = %self.name, stderr_tail = %tail, "upstream connection lost; restarting");
                    crate::observe::metrics::upstream_restart(&self.name);
                    crashes.push_back(Instant::now());
                    self.set_state(UpstreamState::Connecting {
                        attempt: 0,
                        last_error: Some("connection lost".into()),
                    });
                    let _ = events
                        .send(UpstreamEvent::StateChanged {
                            upstream: self.index,
                        })
                        .await;
                    if since.elapsed() >= STABLE_AFTER {
                        backoff = MIN_BACKOFF;
                    }
                }
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 {
                        tracing::warn!(upstream = %self.name, error = %e, "upstream not available yet; retrying with backoff");
                    } else {
                        tracing::debug!(upstream = %self.name, error = %e, attempt, "upstream connect attempt failed");
                    }
                    self.set_state(UpstreamState::Connecting {
                        attempt,
                        last_error: Some(e.to_string()),
                    });
                    crashes.push_back(Instant::now());
                }
            }
            while crashes
                .front()
                .is_some_and(|t| t.elapsed() > sup.park_window)
            {
                crashes.pop_front();
            }
            if crashes.len() >= sup.park_after.max(1) as usize {
                let count = crashes.len() as u32;
                crashes.clear();
                let tail = self.stderr_tail().join("\n");
                tracing::warn!(
                    upstream = %self.name,
                    crashes = count,
                    park_ms = sup.park_duration.as_millis() as u64,
                    stderr_tail = %tail,
                    "upstream crash-looping: parked (its tools are hidden until it recovers)"
                );
                self.set_state(UpstreamState::Parked {
                    crashes: count,
                    last_error: Some(format!("{count} crashes within {:?}", sup.park_window)),
                });
                let _ = events
                    .send(UpstreamEvent::StateChanged {
                        upstream: self.index,
                    })
                    .await;
                tokio::select! {
                    () = tokio::time::sleep(sup.park_duration) => {}
                    () = stop.cancelled() => break,
                }
                backoff = MIN_BACKOFF;
                continue;
            }
            // Full jitter on the upper half: never a thundering herd of restarts.
            let pause = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.set_state(UpstreamState::Stopped);
        let _ = events
            .send(UpstreamEvent::StateChanged {
                upstream: self.index,
            })
            .await;
    }

    /// Probes a remote upstream with `ping` every `probe_interval`; returns
    /// once `probe_failures` probes in a row got no answer in time. Any
    /// answer (even an error) counts as alive. Never returns for stdio
    /// upstreams (their exit is seen directly) or with probes off.
    async fn probe(&self, conn: &Connection) {
        let sup = &self.config.supervision;
        if matches!(self.config.kind(), crate::config::UpstreamKind::Stdio)
            || sup.probe_interval.is_zero()
        {
            return std::future::pending().await;
        }
        let mut failures = 0;
        loop {
            tokio::time::sleep(sup.probe_interval).await;
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
                Err(e) => {
                    failures += 1;
                    self.breaker.observe(true);
                    tracing::debug!(upstream = %self.name, error = %e, failures, "health probe failed");
                    if failures >= sup.probe_failures.max(1) {
                        return;
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
