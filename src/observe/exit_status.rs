//! A child's exit status as a log reads it: `exited with code 1`,
//! `killed by signal 9 (SIGKILL)` — not `ExitStatus(unix_wait_status(9))`.

use std::process::ExitStatus;

/// Describes how a process ended: `exited with code N`, or on Unix
/// `killed by signal N (SIGNAME)` (plus `, core dumped` when it did).
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default();
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            return format!("killed by signal {signal}{name}{core}");
        }
    }
    // Stopped or continued (not reported by `wait`), or an unknown shape.
    status.to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn codes_and_signals_read_plainly() {
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(0)),
            "exited with code 0"
        );
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(15)),
            "killed by signal 15 (SIGTERM)"
        );
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(11 | 0x80)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
    }
}
