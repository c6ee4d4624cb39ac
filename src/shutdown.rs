//! Signals and the two-stage shutdown: the first SIGTERM/SIGINT (Ctrl-C /
//! Ctrl-Break on Windows) starts the drain, a second one forces the exit.

use tokio_util::sync::CancellationToken;

/// The shutdown signals a server run obeys. Tests trigger them directly;
/// the binary wires them to OS signals with [`Shutdown::from_signals`].
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Start the drain (first signal).
    pub drain: CancellationToken,
    /// Stop waiting for the drain (second signal).
    pub force: CancellationToken,
}

impl Shutdown {
    /// Signals that only fire when triggered by hand.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals wired to the OS: first signal drains, second forces.
    /// Must be called inside a tokio runtime.
    pub fn from_signals() -> Self {
        let s = Self::new();
        let (drain, force) = (s.drain.clone(), s.force.clone());
        tokio::spawn(async move {
            if wait_for_signal().await.is_err() {
                return;
            }
            tracing::info!("shutdown signal received; draining (send again to force)");
            drain.cancel();
            if wait_for_signal().await.is_ok() {
                tracing::warn!("second shutdown signal; forcing exit");
                force.cancel();
            }
        });
        s
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(windows)]
async fn wait_for_signal() -> std::io::Result<()> {
    let mut c = tokio::signal::windows::ctrl_c()?;
    let mut b = tokio::signal::windows::ctrl_break()?;
    tokio::select! {
        _ = c.recv() => {}
        _ = b.recv() => {}
    }
    Ok(())
}
