//! A stdio upstream: a child process speaking newline-delimited JSON-RPC
//! (T25 "stdio", SPEC.md 22).
//!
//! The child's tree ends with Ballast (its own process group on Unix, plus
//! the parent-death signal on Linux; a job object on Windows — see
//! `process_tree`), so shutdown and the drop guard reach grandchildren too.
//! Its stderr is log output: each line is logged at
//! INFO, tagged with the upstream name — never as an error.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use process_wrap::tokio::{ChildWrapper, CommandWrap};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::UpstreamError;
use super::process_tree::{self, TreeGuard};
use super::transport::{Incoming, STDERR_TAIL_LINES, StderrTail, forward_frame};
use crate::config::UpstreamConfig;
use crate::observe::describe_exit;

/// Frames queued for the child's stdin before `send` waits (backpressure).
const STDIN_QUEUE: usize = 256;
/// Longest accepted stdout line, in bytes; a longer line is skipped.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// A running child process and the tasks that serve its pipes.
pub(crate) struct StdioTransport {
    stdin: std::sync::Mutex<Option<Arc<super::stdin_queue::StdinQueue>>>,
    stop: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    pid: u32,
}

impl StdioTransport {
    /// Starts the child with the configured program, args, env and cwd.
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] if the program cannot be started.
    pub(crate) fn spawn(
        name: &str,
        cfg: &UpstreamConfig,
        incoming: mpsc::Sender<Incoming>,
        stderr_tail: StderrTail,
    ) -> Result<Self, UpstreamError> {
        let program = cfg.command.clone().unwrap_or_default();
        let cmd = CommandWrap::with_new(&program, |c| {
            c.args(&cfg.args)
                .envs(&cfg.env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(dir) = &cfg.cwd {
                c.current_dir(dir);
            }
        });
        let mut child = process_tree::spawn(cmd).map_err(|source| UpstreamError::Spawn {
            command: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let name: Arc<str> = name.into();
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let stdin = stdin.map(|s| {
            Arc::new(super::stdin_queue::StdinQueue::start(
                name.clone(),
                s,
                STDIN_QUEUE,
            ))
        });
        if let Some(stdout) = stdout {
            tokio::spawn(read_stdout(name.clone(), stdout, incoming));
        }
        if let Some(stderr) = stderr {
            tokio::spawn(log_stderr(name.clone(), stderr, stderr_tail));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let grace = cfg.shutdown_grace;
        tokio::spawn(supervise_process(name.clone(), child, pid, grace, stop_rx));
        tracing::info!(upstream = %name, pid, command = %program, "started stdio upstream");
        Ok(Self {
            stdin: std::sync::Mutex::new(stdin),
            stop: std::sync::Mutex::new(Some(stop_tx)),
            pid,
        })
    }

    /// Queues one frame for the child's stdin (a newline is appended): a
    /// request waits for room until its `deadline`, anything else never
    /// waits (see `stdin_queue::StdinQueue::send`).
    ///
    /// # Errors
    /// [`UpstreamError::InputFull`] if it could not be queued;
    /// [`UpstreamError::Closed`] if stdin is closed or the child is gone.
    pub(crate) async fn send(
        &self,
        frame: Bytes,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), UpstreamError> {
        let frame = one_line(frame);
        let queue = self.queue().ok_or(UpstreamError::Closed)?;
        queue.send(frame, deadline).await
    }

    /// How long the child has not been reading its stdin, while stalled.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        self.queue().and_then(|q| q.stalled_for())
    }

    /// Notifications and responses dropped because the child's queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.queue().map_or(0, |q| q.dropped())
    }

    fn queue(&self) -> Option<Arc<super::stdin_queue::StdinQueue>> {
        self.stdin.lock().ok().and_then(|q| q.clone())
    }

    /// Orderly shutdown: close stdin, wait `shutdown_grace`, SIGTERM the
    /// group (Unix), wait again, kill the tree, reap. Returns once the child
    /// has been reaped.
    pub(crate) async fn close(&self) {
        // The supervisor hears "stop" before stdin closes: a child that
        // exits at once on EOF is then an expected exit, not one on its own
        // (which logs a WARN).
        let stop = self.stop.lock().ok().and_then(|mut s| s.take());
        let (done_tx, done_rx) = oneshot::channel();
        let stopping = stop.is_some_and(|stop| stop.send(done_tx).is_ok());
        self.stdin.lock().map(|mut s| s.take()).ok();
        if stopping {
            let _ = done_rx.await;
        }
    }

    /// The child's process id (also its process group id on Unix).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

/// Makes a frame one line (SPEC.md 22: no embedded newlines). Raw params
/// keep the client's bytes, and in valid JSON a raw CR or LF can only be
/// whitespace between tokens, so replacing it with a space keeps the
/// meaning — and stops a client from smuggling a second message onto the
/// child's stdin.
fn one_line(frame: Bytes) -> Bytes {
    if !frame.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return frame;
    }
    let cleaned: Vec<u8> = frame
        .iter()
        .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
        .collect();
    Bytes::from(cleaned)
}

/// Owns the child: reaps it when it exits on its own, or runs the orderly
/// shutdown when asked. Dropping this task kills the group (guard).
async fn supervise_process(
    name: Arc<str>,
    mut child: Box<dyn ChildWrapper>,
    pid: u32,
    grace: Duration,
    stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut guard = TreeGuard::new(pid);
    let mut stop = stop;
    tokio::select! {
        status = child.wait() => {
            // `close` asks to stop before it closes stdin, so an exit it
            // caused finds the request here: expected, not a WARN.
            if let Ok(done) = stop.try_recv() {
                tracing::info!(upstream = %name, pid, status = %exit_text(&status), "stdio upstream exited after stdin close");
                guard.kill_now();
                let _ = done.send(());
            } else {
                tracing::warn!(upstream = %name, pid, status = %exit_text(&status), "stdio upstream exited");
                // The leader is gone; its group may still hold grandchildren.
            }
        }
        stop = &mut stop => {
            // stdin is already closed by `close` (or the transport was dropped).
            if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
                tracing::info!(upstream = %name, pid, status = %describe_exit(&status), "stdio upstream exited after stdin close");
            } else if process_tree::terminate(&*child)
                && let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await
            {
                tracing::info!(upstream = %name, pid, status = %describe_exit(&status), "stdio upstream exited after SIGTERM");
            } else {
                let _ = child.start_kill();
                let status = child.wait().await;
                tracing::warn!(upstream = %name, pid, status = %exit_text(&status), "stdio upstream killed");
            }
            if let Ok(done) = stop {
                // Kill stragglers left in the tree, then report done.
                guard.kill_now();
                let _ = done.send(());
            }
        }
    }
    drop(guard);
}

/// An exit status for the log, or why it is unknown.
fn exit_text(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => describe_exit(s),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Writes each frame from `rx` as one line until `rx` closes. Everything
/// queued goes out in one write (up to 256 KiB): under load many frames
/// wait, and a syscall per frame is the cost.
///
/// # Errors
/// The first write error (the other end closed the pipe).
pub(crate) async fn write_lines(
    mut out: impl tokio::io::AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        buf.push(b'\n');
        while buf.len() < 256 * 1024
            && let Ok(more) = rx.try_recv()
        {
            buf.extend_from_slice(&more);
            buf.push(b'\n');
        }
        out.write_all(&buf).await?;
        out.flush().await?;
    }
    Ok(())
}

async fn read_stdout(
    name: Arc<str>,
    stdout: impl AsyncRead + Unpin,
    incoming: mpsc::Sender<Incoming>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        match read_line_bounded(&mut reader, &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(upstream = %name, error.kind = ?e.kind(), "stdout read ended");
                break;
            }
        }
        let frame = line.trim_ascii();
        if frame.is_empty() {
            continue;
        }
        if !forward_frame(&name, &incoming, frame, None).await {
            break;
        }
    }
}

/// Reads one `\n`-terminated line into `line`; a line longer than
/// [`MAX_LINE_BYTES`] is consumed whole and left empty (skipped). Returns
/// the bytes consumed (0 at EOF).
pub(crate) async fn read_line_bounded(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    let mut overflow = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !overflow && line.len() + n <= MAX_LINE_BYTES {
            line.extend_from_slice(chunk);
        } else {
            overflow = true;
            line.clear();
        }
        reader.consume(n);
        consumed += n;
        if done {
            if overflow {
                tracing::warn!(
                    max_bytes = MAX_LINE_BYTES,
                    "upstream sent an oversized line; skipped"
                );
            }
            return Ok(consumed);
        }
    }
}

async fn log_stderr(name: Arc<str>, stderr: impl AsyncRead + Unpin, tail: StderrTail) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut t) = tail.lock() {
            if t.len() >= STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.clone());
        }
        tracing::info!(target: "ballast::upstream::stderr", upstream = %name, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_one_line_without_changing_json() {
        let pretty = Bytes::from_static(b"{\n  \"a\": [1,\r\n 2]\n}");
        let line = one_line(pretty);
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v, serde_json::json!({ "a": [1, 2] }));
    }

    #[tokio::test]
    async fn oversized_lines_are_skipped_whole() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{}\n");
        let mut reader = BufReader::with_capacity(1024, &input[..]);
        let mut line = Vec::new();
        read_line_bounded(&mut reader, &mut line).await.unwrap();
        assert!(line.is_empty());
        read_line_bounded(&mut reader, &mut line).await.unwrap();
        assert_eq!(line, b"{}\n");
    }
}
