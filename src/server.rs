//! The server loop: accept connections on a bound listener, serve HTTP/1.1
//! and HTTP/2, and drain on shutdown (STYLE.md 1 and 7).
//!
//! Drain order: readiness red and new work refused (the listener keeps
//! answering so load balancers see 503s, not resets) → calls in flight
//! finish, up to `drain_timeout` → 503s go on for `drain_linger` (a
//! client's follow-up to its last answer is refused, not reset) → GET
//! streams end with a `retry:` hint → stop accepting, connections close
//! after their current response → upstreams close (children: stdin-close →
//! SIGTERM → SIGKILL). A forced shutdown skips the waiting.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::downstream;
use crate::gateway::Gateway;
use crate::observe::disconnect_cause;
use crate::shutdown::Shutdown;
use crate::store::Stores;

/// After calls finish, how long open connections get to flush and close.
const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading the listener's address failed.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The configured store cannot be set up (a Redis URL that does not parse).
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Runs a gateway on `listener` until `shutdown` drains it. Returns after
/// the drain, with every upstream child reaped.
///
/// # Errors
/// [`ServeError::Listener`] if the listener is unusable,
/// [`ServeError::Store`] if the configured store cannot be set up.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let stores = Stores::from_config(&config)?;
    run_with_stores(listener, config, shutdown, stores).await
}

/// [`run`] over the given stores: gateways that share stores serve each
/// other's sessions and resume each other's streams.
///
/// # Errors
/// [`ServeError::Listener`] if the listener is unusable.
pub async fn run_with_stores(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    stores: Stores,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let drain_timeout = config.server.drain_timeout;
    let drain_linger = config.server.drain_linger;
    crate::observe::metrics::install();
    let gw = Gateway::start_with_stores(config, stores);
    tracing::info!(%addr, path = %gw.config.server.path, upstreams = gw.router.upstreams().len(), "ballast listening");
    crate::config::warn_if_exposed(&addr);
    let app = downstream::routes(gw.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gw.config.server.header_read_timeout);

    let accept_until = |stop: tokio_util::sync::CancellationToken| {
        let listener = &listener;
        let builder = &builder;
        let graceful = &graceful;
        let app = app.clone();
        let stats = gw.stats.clone();
        async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(s) => s,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::debug!(error.kind = ?e.kind(), "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = stop.cancelled() => return,
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                let stats = stats.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        // Resets, broken pipes and slow clients are normal
                        // client behaviour: classified, counted, logged at debug.
                        let cause = disconnect_cause(e.as_ref());
                        stats.disconnect(cause);
                        tracing::debug!(%peer, cause, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    };

    // Serve normally until the drain starts.
    accept_until(shutdown.drain.clone()).await;
    gw.begin_drain();
    // Keep answering (503s, /readyz) while calls in flight finish, and for
    // `drain_linger` after.
    let calls_done = async {
        let left = gw.wait_calls_done(drain_timeout).await;
        if left > 0 {
            tracing::warn!(
                calls_left = left,
                "drain timeout: calls still in flight are abandoned"
            );
        }
        tokio::time::sleep(drain_linger).await;
    };
    let stop_accepting = tokio_util::sync::CancellationToken::new();
    tokio::select! {
        () = async { calls_done.await; stop_accepting.cancel(); } => {}
        () = accept_until(stop_accepting.clone()) => {}
        () = shutdown.force.cancelled() => {}
    }
    gw.close_streams();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(CONNECTION_CLOSE_GRACE) => {}
        () = shutdown.force.cancelled() => {}
    }
    // A second signal does not wait for children: the drop guard of each
    // stdio transport SIGKILLs its process group when the runtime ends.
    tokio::select! {
        () = gw.stop_upstreams() => {}
        () = shutdown.force.cancelled() => tracing::warn!("forced exit: upstreams killed without waiting"),
    }
    tracing::info!("drain complete");
    Ok(())
}
