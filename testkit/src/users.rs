//! The test users, created once system-wide and never removed:
//! `ec-postfix`, `ec-web`, `ec-suppl` (supplementary member of
//! `ec-mailers`), `ec-nologin` (nologin shell), and `www-data`; and, for
//! the benchmark, any named nologin users ([`ensure_nologin`]).
//!
//! Idempotent and safe under parallel test processes: the work is serialised
//! with an exclusive `flock` on a lock file, because `useradd` does not wait
//! for another `useradd`'s lock on `/etc/passwd` (it fails instead).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Group, User};

use crate::TestkitError;

/// Users whose shell is `/bin/sh`.
pub const SHELL_USERS: [&str; 3] = ["ec-postfix", "ec-web", "ec-suppl"];
/// The user with a nologin shell.
pub const NOLOGIN_USER: &str = "ec-nologin";
/// The web server's user (most systems have it already).
pub const WWW_DATA: &str = "www-data";
/// The group `ec-suppl` is a supplementary member of.
pub const MAILERS: &str = "ec-mailers";
/// The user in [`MAILERS`].
pub const SUPPL_USER: &str = "ec-suppl";

/// Where the lock file lives.
const LOCK_DIR: &str = "/run/egress-check-testkit";
/// The nologin shell.
const NOLOGIN: &str = "/usr/sbin/nologin";

/// Creates whatever is missing of the test users and groups. Cheap after
/// the first success in a process.
pub fn ensure() -> Result<(), TestkitError> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *done {
        return Ok(());
    }
    let _lock = lock()?;
    if group(MAILERS)?.is_none() {
        run("groupadd", &["--system", MAILERS])?;
    }
    for name in SHELL_USERS {
        add_user(name, "/nonexistent", "/bin/sh")?;
    }
    add_user(NOLOGIN_USER, "/nonexistent", NOLOGIN)?;
    add_user(WWW_DATA, "/var/www", NOLOGIN)?;
    // ec-suppl's primary group is ec-suppl; ec-mailers is supplementary.
    let member = group(MAILERS)?.is_some_and(|g| g.mem.iter().any(|m| m == SUPPL_USER));
    if !member {
        run("usermod", &["--append", "--groups", MAILERS, SUPPL_USER])?;
    }
    *done = true;
    Ok(())
}

/// Creates whichever of `names` is missing as a system user with a group of
/// its own name, no home directory and a nologin shell (the benchmark's
/// `ecb-u01`...), under the same lock as [`ensure`].
pub fn ensure_nologin<S: AsRef<str>>(names: &[S]) -> Result<(), TestkitError> {
    let _lock = lock()?;
    for name in names {
        add_user(name.as_ref(), "/nonexistent", NOLOGIN)?;
    }
    Ok(())
}

/// The exclusive lock, held until the returned value is dropped.
fn lock() -> Result<Flock<File>, TestkitError> {
    let io_err = |context: String| move |error| TestkitError::Io { context, error };
    std::fs::create_dir_all(LOCK_DIR).map_err(io_err(format!("cannot create {LOCK_DIR}")))?;
    let path = Path::new(LOCK_DIR).join("users.lock");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| TestkitError::Io {
        context: format!("cannot lock {}", path.display()),
        error: errno.into(),
    })
}

fn group(name: &str) -> Result<Option<Group>, TestkitError> {
    Group::from_name(name).map_err(|error| TestkitError::Lookup {
        what: format!("group {name}"),
        error,
    })
}

/// `useradd --system --user-group` unless `name` exists.
fn add_user(name: &str, home: &str, shell: &str) -> Result<(), TestkitError> {
    let exists = User::from_name(name)
        .map_err(|error| TestkitError::Lookup {
            what: format!("user {name}"),
            error,
        })?
        .is_some();
    if exists {
        return Ok(());
    }
    run(
        "useradd",
        &[
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            home,
            "--shell",
            shell,
            name,
        ],
    )
}

fn run(program: &str, args: &[&str]) -> Result<(), TestkitError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| TestkitError::Spawn {
            program: program.to_owned(),
            error,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(TestkitError::Command {
        command: format!("{program} {}", args.join(" ")),
        output,
    })
}
