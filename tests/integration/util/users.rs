//! Users of the passwd database that the tests probe as, and a copy of the binary that
//! they can execute.
//!
//! A test that runs `egress-check` as another user (`runuser`, `setpriv`) cannot run
//! `target/debug/egress-check` in place: a checkout in `/root` or any other private
//! directory (mode 0700) cannot be traversed by that user, and the exec fails with EACCES.
//! [`binary_for_other_users`] runs a copy instead, in a directory of its own that everyone
//! may enter. Runs as root need no copy: the tool re-executes itself through
//! `/proc/self/exe` while still root and drops privileges only inside that worker.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::process::{describe, run_ok, stdout};
use super::BIN;

/// The uid of `user` according to the passwd database.
pub fn uid_of(user: &str) -> u64 {
    let out = run_ok(
        Command::new("id").args(["-u", user]),
        &format!("id -u {user}"),
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id -u {user}: {e}"))
}

/// Output of `id FLAG USER` as a list of numbers.
pub fn id_numbers(flag: &str, user: &str) -> Vec<u32> {
    let out = run_ok(
        Command::new("id").args([flag, user]),
        &format!("id {flag} {user}"),
    );
    stdout(&out)
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("id {flag} {user}: {n:?}: {e}"))
        })
        .collect()
}

/// Whether `getent passwd KEY` knows `key`.
pub fn has_passwd_entry(key: &str) -> bool {
    let out = Command::new("getent")
        .args(["passwd", key])
        .stdin(Stdio::null())
        .output()
        .expect("run getent");
    match out.status.code() {
        Some(0) => true,
        Some(2) => false,
        _ => panic!("getent passwd {key}\n{}", describe(&out)),
    }
}

/// A uid, 12345 or the next one above it, that the passwd database does not know.
pub fn unused_uid() -> u32 {
    (12345..13345)
        .find(|uid| !has_passwd_entry(&uid.to_string()))
        .expect("some uid in 12345..13345 has no passwd entry")
}

/// An unprivileged uid with no capability, to check that a copy is executable by anyone
/// (`nobody` on Debian; `setpriv` needs no passwd entry for it).
const ANY_USER_UID: &str = "65534";

/// A copy of an `egress-check` binary that every user may execute: a 0755 file in a 0755
/// directory created for it under the temporary directory (`TMPDIR`, else `/tmp`), which is
/// removed when this is dropped.
pub struct SharedBinary {
    /// Removed on drop.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SharedBinary {
    /// Copies `source` and checks that an unprivileged user can run the copy (panics,
    /// naming the directory, when it cannot: e.g. a private `TMPDIR`, or a `noexec` mount).
    pub fn copy_of(source: &Path) -> SharedBinary {
        let dir = tempfile::Builder::new()
            .prefix("egress-check-bin-")
            .tempdir()
            .expect("create a directory for the shared copy of the binary");
        // tempfile creates it 0700: only the owner could enter.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 the shared binary's directory");
        let path = dir.path().join("egress-check");
        install_executable(source, &path);
        let shared = SharedBinary { _dir: dir, path };
        let check = Command::new("setpriv")
            .args([
                &format!("--reuid={ANY_USER_UID}"),
                &format!("--regid={ANY_USER_UID}"),
                "--clear-groups",
            ])
            .arg(&shared.path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv");
        assert!(
            check.status.success(),
            "uid {ANY_USER_UID} cannot run the copy of the binary at {}: every directory \
             above it must be searchable by all and its file system must allow exec (set \
             TMPDIR to another directory)\n{}",
            shared.path.display(),
            describe(&check)
        );
        shared
    }

    /// The copy's full path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Copies the executable `source` to `dest`, mode 0755.
///
/// Copied by another process (`install`): a descriptor open for writing in this
/// (multi-threaded) test process could be inherited by a child another test forks at that
/// moment, and exec of the copy would then fail with ETXTBSY until that child execs.
pub fn install_executable(source: &Path, dest: &Path) {
    run_ok(
        Command::new("install")
            .args(["-m", "0755"])
            .arg(source)
            .arg(dest),
        &format!("install {} {}", source.display(), dest.display()),
    );
}

/// The binary under test as a [`SharedBinary`], for running it as another user.
///
/// Tests that hold it at the same time share one copy; the copy is removed when the last of
/// them lets go, so nothing is left in the temporary directory after the suite.
pub fn binary_for_other_users() -> Arc<SharedBinary> {
    static CURRENT: Mutex<Weak<SharedBinary>> = Mutex::new(Weak::new());
    // A test that panicked while holding the lock left a usable value behind.
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = current.upgrade() {
        return shared;
    }
    let shared = Arc::new(SharedBinary::copy_of(Path::new(BIN)));
    *current = Arc::downgrade(&shared);
    shared
}

/// Makes sure the users that the shipped story (`scenarios/story.toml` and its rulesets)
/// names exist: `postfix` and `www-data`. A mail server has them already; where one is
/// missing it is created as a system user without a home or login shell, as `ci/demo` does.
///
/// Needs root; call it after the lab's prerequisites were checked.
pub fn ensure_story_users() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for user in ["postfix", "www-data"] {
            ensure_system_user(user);
        }
    });
}

/// Creates the system user `user` unless the passwd database has it.
fn ensure_system_user(user: &str) {
    let mut last = None;
    // useradd does not wait for the passwd lock that a parallel useradd (the lab creating
    // its users) may hold: it fails, and a later attempt succeeds.
    for _ in 0..10 {
        if has_passwd_entry(user) {
            return;
        }
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run useradd");
        if out.status.success() {
            eprintln!("created system user {user} (the shipped story names it)");
            return;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = last.expect("at least one attempt");
    panic!(
        "cannot create the system user {user} that scenarios/story.toml names\n{}",
        describe(&last)
    );
}
