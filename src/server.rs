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

use std::net::SocketAddr;
use std::sync::Arc;
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

pub mod limits;

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
    let nofile = limits::raise_nofile_limit();
    let conn_limit = Arc::new(limits::ConnectionLimit::new(
        limits::effective_max_connections(gw.config.server.max_connections, nofile),
    ));
    tracing::debug!(
        max_connections = conn_limit.max(),
        nofile,
        "connection limit"
    );
    let first_request_timeout = gw.config.server.header_read_timeout;
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
        let conn_limit = conn_limit.clone();
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
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    app.clone(),
                    builder.clone(),
                    graceful.watcher(),
                    conn_limit.clone(),
                    first_request_timeout,
                    stats.clone(),
                ));
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

/// Serves one accepted connection once it has a slot (see [`limits`]):
/// closed at once if none comes within [`limits::ADMISSION_WAIT`], and
/// closed if its first request has not arrived within
/// `first_request_timeout` (HTTP/1 or HTTP/2), or, on HTTP/2, once no
/// request has been in flight for as long ([`limits::Activity`]).
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    graceful: hyper_util::server::graceful::Watcher,
    conn_limit: Arc<limits::ConnectionLimit>,
    first_request_timeout: Duration,
    stats: Arc<crate::observe::Stats>,
) {
    let Some(_slot) = conn_limit.admit().await else {
        stats.disconnect(crate::observe::Disconnect::ConnectionLimit);
        tracing::debug!(%peer, max_connections = conn_limit.max(), "connection refused: at the connection limit");
        return;
    };
    let activity = limits::Activity::new();
    let service = {
        let activity = activity.clone();
        tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            // HTTP/1 needs only the first request noted (hyper times idle
            // keep-alive connections out itself); HTTP/2 counts requests in
            // flight until their response bodies end (SSE streams too).
            let guard = if req.version() == http::Version::HTTP_2 {
                Some(activity.begin())
            } else {
                activity.seen();
                None
            };
            let app = app.clone();
            async move {
                let resp = tower::ServiceExt::oneshot(app, req).await?;
                Ok::<_, std::convert::Infallible>(match guard {
                    None => resp,
                    Some(guard) => resp.map(|body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                            let _in_flight = &guard;
                            f
                        }))
                    }),
                })
            }
        })
    };
    let service = TowerToHyperService::new(service);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let conn = graceful.watch(conn.into_owned());
    tokio::pin!(conn);
    let result = tokio::select! {
        r = &mut conn => r,
        () = activity.stalled(first_request_timeout) => {
            stats.disconnect(crate::observe::Disconnect::HeaderTimeout);
            tracing::debug!(%peer, "connection closed: no request within header_read_timeout (or, HTTP/2, none in flight for as long)");
            return;
        }
    };
    if let Err(e) = result {
        // Resets, broken pipes and slow clients are normal
        // client behaviour: classified, counted, logged at debug.
        let cause = disconnect_cause(e.as_ref());
        stats.disconnect(cause);
        tracing::debug!(%peer, cause = cause.as_str(), error = %e, "connection ended with an error");
    }
}
