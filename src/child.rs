//! The parent side of a fenced child process, a probe worker ([`crate::worker`]) or the
//! resolver process ([`crate::dns_process`]): spawning `/proc/self/exe` as one, feeding it
//! its request, keeping what it says on stderr, and telling from its exit status whether the
//! fence ([`crate::fence`]) killed it. And the one step every such child (the sandbox's
//! internet process too) takes towards its parent: [`die_with_parent`].

use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, Command};

/// Spawns `command` (`/proc/self/exe`, its subcommand and user and arguments) as our child:
/// `test_fault` passed on as `--test-fault`, a clean environment in `/`, stdio piped, in its
/// own process group, killed when the [`Child`] is dropped.
pub fn spawn<F: clap::ValueEnum>(
    command: &mut Command,
    test_fault: Option<&F>,
) -> std::io::Result<Child> {
    if let Some(fault) = test_fault {
        command.arg("--test-fault").arg(
            fault
                .to_possible_value()
                .expect("no variant is skipped")
                .get_name(),
        );
    }
    command
        .arg("--parent")
        .arg(std::process::id().to_string())
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches only us, and we decide.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Writes `body` to the child's stdin and closes it.
pub async fn feed(mut stdin: ChildStdin, body: Vec<u8>) {
    // A child that died early closes its stdin; its exit status tells why.
    let _ = stdin.write_all(&body).await;
    let _ = stdin.shutdown().await;
}

/// The first `max` bytes the child writes to stderr, as text. The pipe stays open (it is
/// borrowed), so that a child that says more is not killed for it by SIGPIPE.
pub async fn diagnostics(stderr: &mut ChildStderr, max: u64) -> String {
    let mut text = String::new();
    let _ = stderr.take(max).read_to_string(&mut text).await;
    text
}

/// Whether the child was killed by its fence's seccomp filter (SIGSYS).
pub fn fenced(status: &ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(status) == Some(nix::libc::SIGSYS)
}

/// Why a child cannot tie its life to its parent's.
#[derive(Debug, thiserror::Error)]
pub enum TieError {
    /// The parent-death signal could not be set.
    #[error("prctl(PR_SET_PDEATHSIG): {0}")]
    DeathSignal(#[source] nix::Error),
    /// The parent named on the command line is not our parent (any more).
    #[error("parent process {0} is gone")]
    ParentGone(i32),
}

/// Child side, once the child has its final identity: it is killed when its parent dies,
/// and refuses to go on when `parent` (the pid the parent put on its command line) is no
/// longer its parent, having died before the signal was set. Called after the identity
/// drop because the kernel clears the parent-death signal on credential changes.
pub fn die_with_parent(parent: Option<i32>) -> Result<(), TieError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(TieError::DeathSignal)?;
    match parent {
        Some(pid) if nix::unistd::getppid().as_raw() != pid => Err(TieError::ParentGone(pid)),
        _ => Ok(()),
    }
}
