//! The frames waiting for a stdio child's stdin, the task writing them, and
//! the watch for a child that stopped reading.
//!
//! The queue is bounded. A request waits for room only until its own
//! deadline (the call's timeout covers its time in the queue); a
//! notification or a response never waits: when the queue is full it is
//! dropped and counted, so no call path can block on a child without a
//! deadline. The writer records every write that moved bytes into the pipe;
//! frames waiting with no progress for [`WRITE_STALL_AFTER`] is a *write
//! stall* — the child stopped reading its input (stopped, hung, or blocked
//! writing a stdout nobody drains). A stall is logged once at WARN, shown
//! on `/readyz` (readiness red), and while it lasts a request that finds
//! the queue full fails at once instead of waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::UpstreamError;

/// Frames waiting while no byte reaches the child for this long is a
/// write stall.
pub(crate) const WRITE_STALL_AFTER: Duration = Duration::from_secs(5);
/// How often the watcher looks for a stall.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Largest batch of queued frames written at once, in bytes: under load
/// many frames wait, and a syscall per frame is the cost.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The sending side of a child's stdin: a bounded queue and its record of
/// progress. Dropping it closes the child's stdin once the queue is written.
pub(crate) struct StdinQueue {
    tx: mpsc::Sender<Bytes>,
    progress: Arc<Progress>,
}

/// What the queue, the writer and the watcher share.
#[derive(Default)]
struct Progress {
    /// Frames accepted and not yet fully written.
    waiting: AtomicUsize,
    /// When the writer last moved bytes, or the queue last stopped being
    /// empty (an idle child is not stalled).
    last_progress: Mutex<Option<Instant>>,
    /// When the current stall began; `None` while the child reads.
    stalled_since: Mutex<Option<Instant>>,
    /// Notifications and responses dropped because the queue was full.
    dropped: AtomicU64,
    /// The writer ended (stdin closed or broken).
    done: AtomicBool,
}

impl StdinQueue {
    /// A queue of `capacity` frames for `stdin`, with its writer and
    /// watcher tasks; both end when the queue is dropped and written, or
    /// the pipe breaks.
    pub(crate) fn start(
        name: Arc<str>,
        stdin: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let progress = Arc::new(Progress::default());
        tokio::spawn(write(name.clone(), stdin, rx, progress.clone()));
        tokio::spawn(watch(name, progress.clone()));
        Self { tx, progress }
    }

    /// Queues one frame (without its newline). A request (`deadline` set)
    /// waits for room until `deadline`, unless the child is stalled; a
    /// notification or response (`None`) never waits and is dropped when
    /// the queue is full.
    ///
    /// # Errors
    /// [`UpstreamError::InputFull`] when the frame could not be queued (it
    /// is never written); [`UpstreamError::Closed`] if stdin is gone.
    pub(crate) async fn send(
        &self,
        frame: Bytes,
        deadline: Option<Instant>,
    ) -> Result<(), UpstreamError> {
        let p = &self.progress;
        let frame = match self.tx.try_send(frame) {
            Ok(()) => {
                p.accepted();
                return Ok(());
            }
            Err(TrySendError::Closed(_)) => return Err(UpstreamError::Closed),
            Err(TrySendError::Full(frame)) => frame,
        };
        let stalled_for = p.stalled_for();
        let Some(deadline) = deadline.filter(|_| stalled_for.is_none()) else {
            if deadline.is_none() {
                p.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return Err(UpstreamError::InputFull { stalled_for });
        };
        match tokio::time::timeout_at(deadline, self.tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(frame);
                p.accepted();
                Ok(())
            }
            Ok(Err(_)) => Err(UpstreamError::Closed),
            Err(_) => Err(UpstreamError::InputFull {
                stalled_for: p.stalled_for(),
            }),
        }
    }

    /// How long the child has not been reading its input, while it is
    /// stalled.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        self.progress.stalled_for()
    }

    /// Notifications and responses dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.progress.dropped.load(Ordering::Relaxed)
    }
}

impl Progress {
    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_stalled(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.stalled_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A frame entered the queue.
    fn accepted(&self) {
        if self.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.lock_last() = Some(Instant::now());
        }
    }

    /// The writer moved bytes; `written` frames are now fully out.
    fn progressed(&self, written: usize) {
        *self.lock_last() = Some(Instant::now());
        if written > 0 {
            self.waiting.fetch_sub(written, Ordering::SeqCst);
        }
    }

    fn stalled_for(&self) -> Option<Duration> {
        self.lock_stalled().map(|since| since.elapsed())
    }
}

/// Writes each queued frame as one line until the queue closes or the pipe
/// breaks, recording progress after every write that moved bytes.
async fn write(
    name: Arc<str>,
    mut out: impl tokio::io::AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Bytes>,
    progress: Arc<Progress>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let result: std::io::Result<()> = async {
        while let Some(frame) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&frame);
            buf.push(b'\n');
            let mut frames = 1;
            while buf.len() < MAX_BATCH_BYTES
                && let Ok(more) = rx.try_recv()
            {
                buf.extend_from_slice(&more);
                buf.push(b'\n');
                frames += 1;
            }
            let mut at = 0;
            while at < buf.len() {
                let n = out.write(&buf[at..]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                at += n;
                progress.progressed(0);
            }
            out.flush().await?;
            progress.progressed(frames);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // A dead child: the stdout reader sees EOF and ends the connection.
        tracing::debug!(upstream = %name, error.kind = ?e.kind(), "stdin closed by the child");
    }
    progress.done.store(true, Ordering::SeqCst);
    // Dropping `out` closes the pipe: the first shutdown step.
}

/// Looks for a write stall every [`CHECK_EVERY`] until the writer ends:
/// WARN once when one begins, INFO when the child reads again.
async fn watch(name: Arc<str>, progress: Arc<Progress>) {
    while !progress.done.load(Ordering::SeqCst) {
        tokio::time::sleep(CHECK_EVERY).await;
        let waiting = progress.waiting.load(Ordering::SeqCst);
        let idle = progress
            .lock_last()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let stalled = waiting > 0 && idle >= WRITE_STALL_AFTER;
        let mut since = progress.lock_stalled();
        match (stalled, since.is_some()) {
            (true, false) => {
                *since = Some(Instant::now() - idle);
                tracing::warn!(
                    upstream = %name,
                    frames_waiting = waiting,
                    no_progress_ms = idle.as_millis() as u64,
                    "stdio upstream stopped reading its input (write stall): requests to it fail when their deadline passes, notifications to it are dropped"
                );
            }
            (false, true) => {
                *since = None;
                tracing::info!(upstream = %name, "stdio upstream reads its input again");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer nobody reads: the queue fills, a notification is dropped
    /// and counted, a request waits only until its deadline, and the stall
    /// is reported after [`WRITE_STALL_AFTER`].
    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_a_stall_and_nothing_waits_past_its_deadline() {
        // A 1-byte pipe nobody reads: the first write fills it.
        let (writer, _reader) = tokio::io::duplex(1);
        let q = StdinQueue::start("t".into(), writer, 2);
        let mut queued = 0;
        while q.send(Bytes::from_static(b"{}"), None).await.is_ok() {
            queued += 1;
            assert!(queued <= 3, "the queue is bounded");
            tokio::task::yield_now().await;
        }
        assert_eq!(q.dropped(), 1);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let r = q.send(Bytes::from_static(b"{}"), Some(deadline)).await;
        assert!(matches!(
            r,
            Err(UpstreamError::InputFull { stalled_for: None })
        ));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(q.stalled_for().is_none());
        tokio::time::sleep(WRITE_STALL_AFTER).await;
        assert!(q.stalled_for().is_some());
        // Stalled: a request no longer waits.
        let start = Instant::now();
        let r = q
            .send(
                Bytes::from_static(b"{}"),
                Some(start + Duration::from_secs(1)),
            )
            .await;
        assert!(matches!(
            r,
            Err(UpstreamError::InputFull {
                stalled_for: Some(_)
            })
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// A reader that keeps up: never a stall, nothing dropped.
    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_up_is_never_stalled() {
        use tokio::io::AsyncReadExt;
        let (writer, mut reader) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while reader.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let q = StdinQueue::start("t".into(), writer, 4);
        for _ in 0..100 {
            q.send(
                Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}"),
                Some(Instant::now() + Duration::from_secs(1)),
            )
            .await
            .expect("queued");
        }
        tokio::time::sleep(WRITE_STALL_AFTER * 2).await;
        assert!(q.stalled_for().is_none());
        assert_eq!(q.dropped(), 0);
    }
}
