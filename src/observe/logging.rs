//! Log output through `tracing`: pretty or JSON lines, filtered by the
//! config's level or `RUST_LOG`. Every line from a call carries its span's
//! `session`, `id` and `method`; upstream lines carry `upstream`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The HTTP/2 library's own WARN lines are about peers that misbehave (a
/// rapid-reset client, a protocol error): Ballast classifies and counts
/// those connection ends itself and logs them at DEBUG, so the library is
/// heard only at ERROR — unless the directives name `h2` themselves.
fn with_quiet_libraries(directives: &str) -> String {
    if directives.contains("h2") {
        directives.to_owned()
    } else {
        format!("{directives},h2=error")
    }
}

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
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => v,
        _ => level.to_owned(),
    };
    let filter = EnvFilter::try_new(with_quiet_libraries(&directives))?;
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

#[cfg(test)]
mod tests {
    use super::with_quiet_libraries;

    #[test]
    fn the_h2_library_is_heard_only_at_error_unless_asked_for() {
        assert_eq!(with_quiet_libraries("info"), "info,h2=error");
        assert_eq!(with_quiet_libraries("h2=debug,info"), "h2=debug,info");
    }
}
