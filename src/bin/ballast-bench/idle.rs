//! Idle mode (`--idle-sessions N`): open N sessions, say how many opened,
//! hold them without calls until `--hold` passes or a signal comes, then
//! delete them. For measuring what idle sessions cost a server.

use std::time::Duration;

use crate::client::McpClient;
use crate::sessions;
use crate::signal::Signals;

/// Opens `n` sessions and holds them for `hold` (or until SIGINT/SIGTERM).
/// Fails only when no session at all could be opened.
pub(crate) async fn hold(
    client: &McpClient,
    n: u32,
    hold: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let opened = sessions::open(client, n, timeout).await;
    if let Some(e) = opened.first_error {
        if opened.sessions.is_empty() {
            return Err(
                anyhow::Error::new(e).context(format!("could not open any of {n} sessions"))
            );
        }
        eprintln!(
            "ballast-bench: {} of {n} sessions failed to open; first error: {:#}",
            opened.failed,
            anyhow::Error::new(e)
        );
    }
    if opened.sessions.iter().all(|s| s.id.is_none()) {
        eprintln!("ballast-bench: the server returned no session ids (stateless); holding nothing");
    }
    let mut signals = Signals::install();
    println!(
        "opened {} of {n} sessions; holding them for {hold:?} (SIGINT/SIGTERM to end)",
        opened.sessions.len()
    );
    tokio::select! {
        () = tokio::time::sleep(hold) => {}
        () = signals.recv() => {}
    }
    sessions::close(client, &opened.sessions).await;
    println!("closed {} sessions", opened.sessions.len());
    Ok(())
}
