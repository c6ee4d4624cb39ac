//! Taking over a call whose replica died (issue "any replica resumes any
//! stream"): a client that resumes, on this replica, a stream another
//! replica is still writing is followed through the shared event log; if
//! that replica's liveness key expires before the stream finishes, this
//! replica claims the stream ([`crate::store::EventLog::claim_orphan`], at
//! most one claimer wins) and ends the call here:
//!
//! - a request that is safe to repeat (read-only or idempotent tool, a
//!   read, anything Ballast answers itself) is run again here and its
//!   answer is appended to the same stream;
//! - anything else is answered with an `outcome_unknown` error (JSON-RPC
//!   -32001, `data.class = "outcome_unknown"`): it may or may not have taken
//!   effect upstream, and Ballast never repeats it silently.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Session, Sink};
use crate::gateway::Gateway;
use crate::jsonrpc::{ErrorObject, Message, Response, code};
use crate::mcp::method;
use crate::store::{Orphan, StoreError};

/// How often a followed stream's writer is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Follows `stream` (resumed by `session` on this replica) until it
/// finishes, the session ends or the resume window passes; claims it if
/// its writer dies first.
pub(super) fn watch(gw: Arc<Gateway>, session: Arc<Session>, stream: Arc<str>) {
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + gw.config.server.resume_window;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = session.closed.cancelled() => return,
            }
            match gw.log.read(&stream, u64::MAX, Duration::ZERO).await {
                Ok(batch) if batch.finished => return,
                Err(StoreError::UnknownStream | StoreError::EventsLost) => return,
                _ => {}
            }
            if let Ok(Some(orphan)) = gw.log.claim_orphan(&stream).await {
                take_over(&gw, session, stream, orphan).await;
                return;
            }
        }
    });
}

/// The highest `progress` among the progress notifications `stream`
/// carries (a bounded read: at most `stream_max_events` events).
async fn last_progress(gw: &Gateway, stream: &str) -> Option<f64> {
    let batch = gw.log.read(stream, 0, Duration::ZERO).await.ok()?;
    batch
        .events
        .iter()
        .filter_map(|(_, bytes)| match Message::parse(bytes).ok()? {
            Message::Notification(n) if n.method == method::PROGRESS => {
                let params: serde_json::Value = serde_json::from_str(n.params?.get()).ok()?;
                params.get("progress")?.as_f64()
            }
            _ => None,
        })
        .reduce(f64::max)
}

async fn take_over(gw: &Arc<Gateway>, session: Arc<Session>, stream: Arc<str>, orphan: Orphan) {
    let sink = Sink::resumed(gw.log.clone(), stream.clone());
    let request = orphan
        .request
        .as_deref()
        .and_then(|b| Message::parse(b).ok())
        .and_then(|m| match m {
            Message::Request(r) => Some(r),
            _ => None,
        });
    let Some(request) = request else {
        // A GET stream (no request): end it; the client opens a new one.
        tracing::info!(%stream, "the replica writing this stream is gone; ending it");
        sink.finish().await;
        return;
    };
    if gw
        .router
        .safe_to_repeat(&request.method, request.params.as_deref())
    {
        // The re-run starts its progress from 0 again; the client may have
        // seen some from the dead replica, and progress must only grow.
        let mut sink = sink;
        sink.progress_floor = last_progress(gw, &stream).await;
        tracing::info!(%stream, id = %request.id, method = %request.method,
            "the replica running this call is gone; running it again here (safe to repeat)");
        let _ = super::post::begin(gw, &session, &request.id).await;
        super::post::spawn_call(gw.clone(), session, request, Some(sink), true);
        return;
    }
    tracing::info!(%stream, id = %request.id, method = %request.method,
        "the replica running this call is gone; its outcome is unknown (not safe to repeat)");
    let error = ErrorObject {
        code: code::UPSTREAM_UNAVAILABLE,
        message: "outcome unknown: the Ballast replica running this call stopped before it \
                  answered; it was not run again because it is not safe to repeat"
            .into(),
        data: Some(
            json!({ "class": "outcome_unknown", "reason": "replica_lost",
                           "last_event_seq": orphan.last_seq }),
        ),
    };
    let response = Message::Response(Response::err(Some(request.id), &error));
    sink.send_last(response.to_bytes()).await;
}
