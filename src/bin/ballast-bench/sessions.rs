//! Opening and closing many sessions at once, a bounded number at a time,
//! each exchange under the per-call timeout.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;

use crate::client::{McpClient, Session};
use crate::error::CallError;

/// Sessions opened (or closed) concurrently.
pub(crate) const PARALLEL: usize = 32;
/// Longest time closing all sessions at the end may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// What opening `n` sessions gave.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The sessions that opened.
    pub(crate) sessions: Vec<Session>,
    /// The first failure, if any failed.
    pub(crate) first_error: Option<CallError>,
    /// How many failed.
    pub(crate) failed: u32,
}

/// Opens `n` sessions, at most [`PARALLEL`] at a time.
pub(crate) async fn open(client: &McpClient, n: u32, timeout: Duration) -> Opened {
    let mut results = stream::iter(0..n)
        .map(|_| async move {
            tokio::time::timeout(timeout, client.open_session())
                .await
                .unwrap_or(Err(CallError::Timeout { timeout }))
        })
        .buffer_unordered(PARALLEL);
    let mut opened = Opened {
        sessions: Vec::with_capacity(usize::try_from(n).unwrap_or_default()),
        first_error: None,
        failed: 0,
    };
    while let Some(result) = results.next().await {
        match result {
            Ok(session) => opened.sessions.push(session),
            Err(e) => {
                opened.failed += 1;
                opened.first_error.get_or_insert(e);
            }
        }
    }
    opened
}

/// Deletes `sessions` (best effort, at most [`CLOSE_LIMIT`] in all).
pub(crate) async fn close(client: &McpClient, sessions: &[Session]) {
    let all = stream::iter(sessions)
        .map(|s| client.close_session(s))
        .buffer_unordered(PARALLEL)
        .collect::<()>();
    let _ = tokio::time::timeout(CLOSE_LIMIT, all).await;
}
