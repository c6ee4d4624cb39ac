//! A stdio upstream's process tree, per platform: how the child is spawned
//! so that it and its descendants end with Ballast, and how the tree is
//! signalled and killed.
//!
//! - **Unix**: the child leads its own process group, so shutdown signals
//!   and the drop guard ([`TreeGuard`]) reach grandchildren too.
//! - **Linux**: the child also gets `PR_SET_PDEATHSIG = SIGKILL`
//!   (prctl(2)), so it dies even when Ballast itself is SIGKILLed and no
//!   guard runs (issue 13 item 15). The kernel sends the parent-death signal
//!   when the *thread* that forked the child exits, not the process; tokio
//!   threads come and go (a blocking-pool thread ends after 10 s idle, a
//!   worker after `block_in_place`), so every child is forked on one
//!   dedicated thread that lives as long as the process. Grandchildren are
//!   not covered by the signal (they are re-parented, not signalled); the
//!   orderly paths still kill the whole group.
//! - **Windows**: the child is put in a job object with
//!   `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` (process-wrap's `JobObject` +
//!   `KillOnDrop`). Only Ballast holds the job handle, so the whole tree
//!   dies when Ballast exits, however it exits. The child also starts a new
//!   process group (`CREATE_NEW_PROCESS_GROUP`), so a console Ctrl-C goes to
//!   Ballast, which drains, and not to its children, which would die with
//!   calls in flight — as the process group does on Unix. Windows has no
//!   gentle "terminate" for a console tree, so [`terminate`] reports `false`
//!   and the orderly shutdown goes from closing stdin straight to the kill.

use std::io;

use process_wrap::tokio::{ChildWrapper, CommandWrap};

/// Spawns `cmd` with the platform's tree wrappers (see the module docs).
///
/// # Errors
/// The spawn error (program not found, permission denied, …).
pub(crate) fn spawn(mut cmd: CommandWrap) -> io::Result<Box<dyn ChildWrapper>> {
    #[cfg(unix)]
    cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    {
        use windows::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP;
        cmd.wrap(process_wrap::tokio::CreationFlags(CREATE_NEW_PROCESS_GROUP));
        cmd.wrap(process_wrap::tokio::KillOnDrop);
        cmd.wrap(process_wrap::tokio::JobObject);
    }
    #[cfg(target_os = "linux")]
    {
        cmd.wrap(linux::ParentDeathSignal);
        linux::spawn_on_spawner_thread(cmd)
    }
    #[cfg(not(target_os = "linux"))]
    cmd.spawn()
}

/// Asks the whole tree to stop: SIGTERM to the process group on Unix.
/// Returns whether a request was sent (never on Windows, which has no such
/// signal for a console tree: the caller kills instead).
pub(crate) fn terminate(child: &dyn ChildWrapper) -> bool {
    #[cfg(unix)]
    {
        child
            .signal(nix::sys::signal::Signal::SIGTERM as i32)
            .is_ok()
    }
    #[cfg(not(unix))]
    {
        let _ = child;
        false
    }
}

/// Kills the child's whole tree when dropped, or at [`TreeGuard::kill_now`].
/// Covers every exit path inside Ballast, including panics and runtime
/// teardown. On Windows the job object does this when the child is dropped,
/// so the guard only holds the id.
pub(crate) struct TreeGuard {
    /// The child's process id, which is also its process group id on Unix;
    /// `None` once the tree has been killed.
    pid: Option<u32>,
}

impl TreeGuard {
    /// A guard for the tree led by process `pid`.
    pub(crate) fn new(pid: u32) -> Self {
        Self { pid: Some(pid) }
    }

    /// Kills whatever is left in the tree (stragglers after the leader
    /// exited), once.
    pub(crate) fn kill_now(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pid.take().and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{Signal, killpg};
            let _ = killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        }
        #[cfg(not(unix))]
        self.pid.take();
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::sync::OnceLock;
    use std::sync::mpsc;

    use nix::errno::Errno;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;
    use process_wrap::tokio::{ChildWrapper, CommandWrap, CommandWrapper};

    /// A spawn to run on the spawner thread.
    type Job = Box<dyn FnOnce() + Send>;

    /// Sets `PR_SET_PDEATHSIG = SIGKILL` in the child before it execs.
    #[derive(Debug)]
    pub(super) struct ParentDeathSignal;

    impl CommandWrapper for ParentDeathSignal {
        fn pre_spawn(
            &mut self,
            command: &mut tokio::process::Command,
            _core: &CommandWrap,
        ) -> io::Result<()> {
            die_with_parent(command, nix::unistd::getpid());
            Ok(())
        }
    }

    /// Makes the child die by SIGKILL when its parent thread (the spawner
    /// thread, so: Ballast) ends. If Ballast already died between fork and
    /// prctl, the child sees another parent and does not exec.
    #[allow(unsafe_code)]
    fn die_with_parent(command: &mut tokio::process::Command, parent: Pid) {
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe calls are allowed. It makes two raw system
        // calls, prctl(2) and getppid(2), touches no lock and allocates
        // nothing (an `io::Error` from an errno is not boxed).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                if nix::unistd::getppid() != parent {
                    return Err(Errno::ESRCH.into());
                }
                Ok(())
            });
        }
    }

    /// The process-wide spawner thread's queue; `None` if the thread could
    /// not be started.
    fn spawner() -> Option<&'static mpsc::Sender<Job>> {
        static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
        SPAWNER
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("ballast-spawner".into())
                    .spawn(move || {
                        // Lives until the process ends: the parent thread of
                        // every child, so PDEATHSIG means "Ballast died".
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }

    /// Spawns `cmd` on the spawner thread, inside the caller's tokio
    /// runtime (the child's pipes and reaper belong to it). Blocks the
    /// caller for the fork/exec, as spawning in place would.
    pub(super) fn spawn_on_spawner_thread(cmd: CommandWrap) -> io::Result<Box<dyn ChildWrapper>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let gone = || io::Error::other("the child spawner thread has ended");
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _in_runtime = runtime.enter();
            let mut cmd = cmd;
            let _ = tx.send(cmd.spawn());
        });
        spawner().ok_or_else(gone)?.send(job).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Stdio;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// The PDEATHSIG pitfall: the signal fires when the *thread* that forked
    /// the child ends. A child spawned from a thread that then exits must
    /// live on.
    #[tokio::test]
    async fn a_child_outlives_the_thread_that_asked_for_it() {
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::spawn(move || {
            let _in_runtime = runtime.enter();
            let cmd = CommandWrap::with_new("cat", |c| {
                c.stdin(Stdio::piped()).stdout(Stdio::piped());
            });
            (nix::unistd::gettid(), spawn(cmd).expect("spawn cat"))
        });
        let (tid, mut child) = thread.join().expect("spawning thread");
        // The thread is fully gone (its exit, and any parent-death signal
        // it caused, are done) once the kernel drops it from our task list.
        let task = format!("/proc/self/task/{tid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::path::Path::new(&task).exists() {
            assert!(std::time::Instant::now() < deadline, "thread never ended");
            tokio::task::yield_now().await;
        }
        // A pending SIGKILL would end `cat` before it echoes: an echo proves
        // it is alive.
        let mut stdin = child.stdin().take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout().take().expect("stdout"));
        stdin.write_all(b"alive\n").await.expect("write");
        let mut line = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stdout.read_line(&mut line),
        )
        .await
        .expect("echo in time");
        assert_eq!(
            (read.ok(), line.as_str()),
            (Some(6), "alive\n"),
            "cat died with its spawning thread"
        );
        drop(stdin);
        let status = child.wait().await.expect("wait");
        assert!(status.success(), "{status:?}");
    }
}
