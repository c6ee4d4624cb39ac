//! Log output through `tracing`: pretty or JSON lines, filtered by the
//! config's level or `RUST_LOG`. Every line from a call carries its span's
//! `session`, `id` and `method`; upstream lines carry `upstream`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a `tracing` filter directive
/// (e.g. `info`, `ballast=debug`); `RUST_LOG` overrides it. Logs go to
/// stderr, so stdout stays free (the demo upstream speaks MCP on it).
/// Pretty lines are coloured only when stderr is a terminal (and
/// `NO_COLOR` is unset): log files and pipes get plain text.
///
/// # Errors
/// If the filter is invalid or a global subscriber is already set.
pub fn init_logging(
    format: LogFormat,
    level: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    }
}
