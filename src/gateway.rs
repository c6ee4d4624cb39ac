//! The gateway: configuration, upstream supervisors, router and sessions,
//! wired together; and the drain that ends them in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::downstream::{Readers, Session, Sessions};
use crate::observe::Stats;
use crate::router::Router;
use crate::store::{EventLog, SessionStore, Stores};
use crate::upstream::Upstream;

/// Capacity of the upstream event channel (messages).
const EVENT_QUEUE: usize = 1024;

/// How often expiry runs: a tenth of the shorter of the idle timeout and
/// the resume window, between 50 ms and 10 s.
fn sweep_interval(config: &Config) -> Duration {
    let shortest = config
        .server
        .session_idle_timeout
        .min(config.server.resume_window);
    (shortest / 10).clamp(Duration::from_millis(50), Duration::from_secs(10))
}

/// Everything one running gateway holds.
pub struct Gateway {
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// Routing state and the upstreams.
    pub router: Arc<Router>,
    /// Live downstream sessions.
    pub sessions: Arc<Sessions>,
    /// Every SSE stream's events, for resume.
    pub log: Arc<dyn EventLog>,
    /// Session records (shared by replicas that share the store).
    pub session_store: Arc<dyn SessionStore>,
    /// The stores (for their status; handlers use `log`/`session_store`).
    stores: Stores,
    /// Counters (disconnects by cause, expiries, ignored messages).
    pub stats: Arc<Stats>,
    /// Who reads which stream (to find abandoned calls).
    pub readers: Arc<Readers>,
    /// The per-session rate limit, if configured.
    pub session_rate: Option<crate::resilience::RateLimit>,
    /// Fired when the drain starts: readiness goes red, GET streams close,
    /// new sessions and calls are refused.
    pub draining: CancellationToken,
    /// Fired when the drain has let calls finish: GET streams end with a
    /// `retry:` hint so clients reconnect (to another replica).
    pub streams_closing: CancellationToken,
    stop_upstreams: CancellationToken,
    supervisors: TaskTracker,
}

/// Why a session ends (see [`Gateway::end_session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent `DELETE`.
    Deleted,
    /// Nothing flowed for `session_idle_timeout`.
    Expired,
    /// The table was full and it was the least recently used idle session
    /// (`max_sessions`).
    Evicted,
    /// A 2024-11-05 client left its only stream.
    StreamClosed,
    /// Another replica ended it (DELETE, eviction) and removed its record;
    /// this replica ends its copy (Redis store only).
    EndedElsewhere,
}

impl Gateway {
    /// Starts a supervisor per upstream, the upstream event loop and the
    /// expiry sweeper, over `stores`. Must be called inside a tokio runtime.
    pub fn start_with_stores(config: Config, stores: Stores) -> Arc<Gateway> {
        let upstreams: Vec<_> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, (name, u))| Upstream::new(i, name, u.get_ref().clone()))
            .collect();
        let stats = Arc::new(Stats::default());
        let shared = stores.shared_tiers();
        let router = Arc::new(Router::new(
            &config,
            upstreams.clone(),
            stats.clone(),
            shared.as_ref(),
        ));
        let sessions = Arc::new(Sessions::default());
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let stop_upstreams = CancellationToken::new();
        let supervisors = TaskTracker::new();
        for u in upstreams {
            supervisors.spawn(u.supervise(events_tx.clone(), stop_upstreams.clone()));
        }
        supervisors.close();
        tokio::spawn(router.clone().run_events(events_rx, sessions.clone()));
        let session_rate = crate::resilience::RateLimit::new(
            config.server.rate_limit_per_session,
            config.server.rate_limit_burst,
        )
        .map(|limit| match &shared {
            Some(s) => limit.with_shared(s.rate.clone(), "session"),
            None => limit,
        });
        let gw = Arc::new(Gateway {
            config: Arc::new(config),
            router,
            sessions,
            log: stores.events.clone(),
            session_store: stores.sessions.clone(),
            stores,
            stats,
            readers: Arc::new(Readers::default()),
            session_rate,
            draining: CancellationToken::new(),
            streams_closing: CancellationToken::new(),
            stop_upstreams,
            supervisors,
        });
        tokio::spawn(sweep(Arc::downgrade(&gw)));
        if let Some(lost) = gw.stores.keys_lost() {
            tokio::spawn(write_back_sessions(Arc::downgrade(&gw), lost));
        }
        if let Some(ended) = gw.stores.sessions_ended() {
            tokio::spawn(end_sessions_ended_elsewhere(Arc::downgrade(&gw), ended));
        }
        gw
    }

    /// The stores' status for `/readyz`; also refreshes the
    /// `ballast_store_fallback` gauge.
    pub fn store_status(&self) -> crate::store::StoreStatus {
        self.stores.status()
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Starts the drain: `/readyz` → 503, new sessions and new calls get
    /// 503; calls in flight continue (GET streams too, until
    /// [`Gateway::close_streams`]).
    pub fn begin_drain(&self) {
        if !self.draining.is_cancelled() {
            tracing::info!(
                calls_in_flight = self.router.calls_in_flight(),
                "drain started"
            );
        }
        self.draining.cancel();
    }

    /// Ends `session` — the one path for DELETE, idle expiry, eviction and
    /// a closed 2024-11-05 stream: it leaves the table (its streams close),
    /// its calls are cancelled upstream, and its record is removed from
    /// the session store (expiry only releases it here: in a shared store
    /// the record's own TTL ends it); except on expiry (the sweep drops
    /// those in one pass), its streams leave the event log now. Later use
    /// of its id gets 404.
    ///
    /// # Errors
    /// The session store's error (the session has ended here regardless).
    pub async fn end_session(
        &self,
        session: &Arc<Session>,
        why: SessionEnd,
    ) -> Result<(), crate::store::StoreError> {
        self.sessions.remove_this(session);
        match why {
            SessionEnd::Deleted => tracing::info!(session = %session.id, "session ended by client"),
            SessionEnd::Expired => {
                tracing::info!(session = %session.id, "session expired after being idle");
                self.stats.count(crate::observe::Counter::SessionsExpired);
                crate::observe::metrics::session_expired();
            }
            SessionEnd::Evicted => {
                tracing::info!(session = %session.id, "session evicted: the session table is full and it was the least recently used idle one");
                self.stats.count(crate::observe::Counter::SessionsEvicted);
            }
            SessionEnd::StreamClosed => {
                tracing::info!(session = %session.id, "2024-11-05 SSE session ended");
            }
            SessionEnd::EndedElsewhere => {
                tracing::info!(session = %session.id, "session ended on another replica");
            }
        }
        self.router.end_session(session).await;
        // Its GET stream, if written here, ends (a reader gets `retry:`
        // and the end): with a shared store it would otherwise outlive the
        // session by the 1 h TTL of a live stream.
        if let Some(get) = session.get_stream() {
            get.finish().await;
        }
        let stored = match why {
            SessionEnd::Expired => self.session_store.idle_here(&session.id).await,
            SessionEnd::EndedElsewhere => Ok(()),
            _ => self.session_store.remove(&session.id).await,
        };
        if why != SessionEnd::Expired {
            let ended = std::slice::from_ref(&session.id);
            self.log
                .expire(self.config.server.resume_window, ended)
                .await;
        }
        stored
    }

    /// Makes room for one more session: below `max_sessions` at once; at
    /// it, by ending the least recently used idle session (no call in
    /// flight, no stream being read). False if every session is busy.
    pub async fn room_for_session(&self) -> bool {
        if self.sessions.len() < self.config.server.max_sessions {
            return true;
        }
        let busy = |s: &Session| {
            s.get_stream()
                .is_some_and(|g| self.readers.is_read(&g.stream))
        };
        let Some(evicted) = self.sessions.evict_idle(busy) else {
            return false;
        };
        if let Err(e) = self.end_session(&evicted, SessionEnd::Evicted).await {
            tracing::debug!(session = %evicted.id, error = %e, "could not remove an evicted session's record");
        }
        true
    }

    /// Ends every open SSE GET stream (each gets a `retry:` hint first).
    pub fn close_streams(&self) {
        self.streams_closing.cancel();
    }

    /// Waits until no upstream call is in flight, or `deadline` passes.
    /// Returns the number of calls still in flight (0 = all finished).
    pub async fn wait_calls_done(&self, deadline: Duration) -> usize {
        let _ = tokio::time::timeout(deadline, self.router.calls_done()).await;
        self.router.calls_in_flight()
    }

    /// Closes every upstream (children: stdin-close → SIGTERM → SIGKILL)
    /// and waits for their supervisors to finish.
    pub async fn stop_upstreams(&self) {
        self.stop_upstreams.cancel();
        self.supervisors.wait().await;
    }
}

/// Every `sweep_interval`: ends idle sessions (their calls cancelled,
/// their streams dropped) and drops streams past the resume window.
/// Stops when the gateway is dropped.
async fn sweep(weak: std::sync::Weak<Gateway>) {
    let interval = match weak.upgrade() {
        Some(gw) => sweep_interval(&gw.config),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(gw) = weak.upgrade() else { return };
        // Sessions active here since the last sweep live on in a shared
        // store (its records expire one idle timeout after the last touch).
        let now = tokio::time::Instant::now();
        let active = gw.sessions.active_since(last_sweep);
        last_sweep = now;
        if let Err(e) = gw.session_store.touch(&active).await {
            tracing::debug!(error = %e, "could not refresh session records");
        }
        gw.store_status(); // keeps the fallback gauge current
        let idle = gw
            .sessions
            .remove_idle(gw.config.server.session_idle_timeout);
        let mut ended = Vec::with_capacity(idle.len());
        for s in idle {
            let _ = gw.end_session(&s, SessionEnd::Expired).await;
            ended.push(s.id.clone());
        }
        if gw.config.server.cancel_abandoned_calls {
            let window = gw.config.server.resume_window;
            let abandoned = gw
                .router
                .abandoned_calls(|stream, since| gw.readers.unread_for(stream, window, since));
            for (upstream, id, stream) in abandoned {
                tracing::info!(%stream, "nobody resumed the stream within the resume window; cancelling its call");
                gw.stats.count(crate::observe::Counter::CallsAbandoned);
                gw.router
                    .cancel_call(upstream, id, "client did not return")
                    .await;
            }
        }
        gw.readers.prune(&gw.router.running_streams());
        crate::observe::metrics::upkeep();
        if let Some(rate) = &gw.session_rate {
            rate.retain_recent();
        }
        if gw.log.is_shared() {
            // Shared streams outlive this replica's view of their session:
            // the store's own expiry ends them, not an idle timeout here.
            ended.clear();
        }
        let dropped = gw.log.expire(gw.config.server.resume_window, &ended).await;
        if dropped > 0 {
            tracing::debug!(dropped, "streams dropped from the event log");
        }
    }
}

/// Each time the shared store is found to have lost keys (see
/// [`Stores::keys_lost`]): writes the records of every session this
/// replica holds back to the session store, so other replicas find them
/// again instead of answering 404. Stops when the gateway is dropped.
async fn write_back_sessions(
    weak: std::sync::Weak<Gateway>,
    mut lost: tokio::sync::watch::Receiver<u64>,
) {
    while lost.changed().await.is_ok() {
        let Some(gw) = weak.upgrade() else { return };
        let sessions = gw.sessions.all();
        let mut written = 0usize;
        for s in &sessions {
            if gw.session_store.save(s.record()).await.is_ok() {
                written += 1;
            }
        }
        tracing::info!(
            written,
            held = sessions.len(),
            "session records written back after Redis lost its keys"
        );
    }
}

/// Ends this replica's copy of each session another replica ended (DELETE,
/// eviction; see [`Stores::sessions_ended`]), so it is not served here
/// again. Stops when the gateway is dropped.
async fn end_sessions_ended_elsewhere(
    weak: std::sync::Weak<Gateway>,
    mut ended: tokio::sync::broadcast::Receiver<Arc<str>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let id = match ended.recv().await {
            Ok(id) => id,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "missed ended-session notices; those sessions end here when idle"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(gw) = weak.upgrade() else { return };
        if let Some(session) = gw.sessions.get(&id) {
            let _ = gw.end_session(&session, SessionEnd::EndedElsewhere).await;
        }
    }
}
