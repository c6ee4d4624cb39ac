//! The one signal source: SIGINT or SIGTERM (Ctrl-C elsewhere).
//!
//! Handlers are installed when [`Signals::install`] returns, so a signal
//! that arrives after that (for example right after idle mode printed that
//! its sessions are open) is never lost to the default disposition.

/// Installed SIGINT and SIGTERM handlers.
#[derive(Debug)]
pub(crate) struct Signals {
    /// SIGINT.
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    /// SIGTERM.
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

// === impl Signals ===

impl Signals {
    /// Installs the handlers (needs a running tokio runtime).
    pub(crate) fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Completes on the next SIGINT or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let interrupt = async {
                match &mut self.interrupt {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let terminate = async {
                match &mut self.terminate {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
