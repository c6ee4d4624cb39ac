//! The workload: `concurrency` workers, spread round-robin over the
//! sessions, each with one call in flight, calling back to back.
//!
//! Every worker first makes its warm-up calls (not recorded); then all meet
//! at a barrier and the measured phase starts. It ends at the deadline
//! (`--duration`), after the last ticket (`--calls`), or on a signal,
//! whichever comes first.
//!
//! At the deadline (or on a signal) no new call starts and the measured
//! time stops; calls still in flight may finish (within [`FINISH_GRACE`])
//! but are not counted, so the server sees no abandoned streams and no
//! cancellations from a normal run. Calls still running after the grace
//! are abandoned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{Exchange, McpClient, Session, drain};
use crate::error::{CallError, ErrorKind};
use crate::stats::Stats;

/// After a connect error a worker waits this long before its next call, so
/// a server that is down does not turn the run into a busy loop.
const CONNECT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Longest wait after the deadline for calls in flight to finish.
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// Longest wait for the rest of an answer's body after the response was
/// read (a well-behaved server ends the stream right after it).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How to run the workload.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Workers.
    pub(crate) concurrency: u32,
    /// End of the measured phase after this long, if set.
    pub(crate) duration: Option<Duration>,
    /// End after this many measured calls in total, if set.
    pub(crate) calls: Option<u64>,
    /// Unrecorded calls per worker before measuring.
    pub(crate) warmup: u64,
    /// Per-call timeout.
    pub(crate) timeout: Duration,
}

/// What the workers share.
struct Shared {
    /// The HTTP client.
    client: Arc<McpClient>,
    /// Open sessions; worker `i` uses `sessions[i % len]`.
    sessions: Arc<[Session]>,
    /// The plan.
    plan: Plan,
    /// Next request id (ids are unique across the run; 0 was `initialize`).
    next_id: AtomicU64,
    /// Measured calls started, for the `--calls` limit.
    tickets: AtomicU64,
    /// No new calls, and none counted from now on (the deadline, or a signal).
    finish: CancellationToken,
    /// Abandons calls in flight (the end of the grace after `finish`).
    abandon: CancellationToken,
    /// Workers (and the coordinator) meet here after the warm-up.
    barrier: Barrier,
    /// The measurements.
    stats: Mutex<Stats>,
}

/// Runs the workload; returns what was measured and the measured wall time.
/// Cancelling `finish` ends it as the deadline does.
pub(crate) async fn run(
    client: Arc<McpClient>,
    sessions: Arc<[Session]>,
    plan: Plan,
    finish: CancellationToken,
) -> (Stats, Duration) {
    let workers = usize::try_from(plan.concurrency).unwrap_or(usize::MAX);
    let duration = plan.duration;
    let shared = Arc::new(Shared {
        client,
        sessions,
        plan,
        next_id: AtomicU64::new(1),
        tickets: AtomicU64::new(0),
        finish,
        abandon: CancellationToken::new(),
        barrier: Barrier::new(workers + 1),
        stats: Mutex::new(Stats::new()),
    });
    let mut set = JoinSet::new();
    for index in 0..workers {
        set.spawn(worker(shared.clone(), index));
    }
    shared.barrier.wait().await;
    let started = Instant::now();
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let ended = async {
        tokio::select! {
            () = deadline => {}
            () = shared.finish.cancelled() => {}
        }
    };
    let elapsed = tokio::select! {
        () = join_all(&mut set) => started.elapsed(),
        () = ended => {
            shared.finish.cancel();
            let elapsed = started.elapsed();
            let grace = FINISH_GRACE.min(shared.plan.timeout);
            tokio::select! {
                () = join_all(&mut set) => {}
                () = tokio::time::sleep(grace) => shared.abandon.cancel(),
            }
            elapsed
        }
    };
    join_all(&mut set).await;
    let stats = std::mem::replace(
        &mut *shared.stats.lock().unwrap_or_else(PoisonError::into_inner),
        Stats::new(),
    );
    (stats, elapsed)
}

/// Waits for every task of `set`.
async fn join_all(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

/// One worker: warm-up, barrier, then calls until stopped.
async fn worker(shared: Arc<Shared>, index: usize) {
    let session = &shared.sessions[index % shared.sessions.len()];
    for _ in 0..shared.plan.warmup {
        if call(&shared, session).await.is_none() {
            break;
        }
    }
    shared.barrier.wait().await;
    loop {
        if shared.finish.is_cancelled() {
            break;
        }
        if let Some(limit) = shared.plan.calls
            && shared.tickets.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        let Some((outcome, took)) = call(&shared, session).await else {
            break;
        };
        if shared.finish.is_cancelled() {
            break; // finished after the deadline: not counted
        }
        let connect_error = matches!(&outcome, Err(e) if e.kind() == ErrorKind::Connect);
        shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(outcome.as_ref().copied(), took);
        if connect_error {
            tokio::select! {
                () = shared.finish.cancelled() => break,
                () = tokio::time::sleep(CONNECT_ERROR_PAUSE) => {}
            }
        }
    }
}

/// One call and its latency (until the response was read), then the rest
/// of its body drained; `None` if the run is over (`finish`), or its grace
/// ran out meanwhile (the call is abandoned and not counted).
async fn call(shared: &Shared, session: &Session) -> Option<(Result<(), CallError>, Duration)> {
    if shared.finish.is_cancelled() {
        return None;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let timeout = shared.plan.timeout;
    let exchange = async {
        match tokio::time::timeout(timeout, shared.client.call(session, id)).await {
            Ok(exchange) => exchange,
            Err(_) => (Err(CallError::Timeout { timeout }), None),
        }
    };
    let (outcome, rest): Exchange<()> = tokio::select! {
        biased;
        () = shared.abandon.cancelled() => return None,
        exchange = exchange => exchange,
    };
    let took = started.elapsed();
    if let Some(rest) = rest {
        tokio::select! {
            biased;
            () = shared.abandon.cancelled() => {}
            _ = tokio::time::timeout(DRAIN_LIMIT, drain(rest)) => {}
        }
    }
    Some((outcome, took))
}
