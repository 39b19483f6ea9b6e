//! Users of the passwd database that the tests probe as, and running the binary as one of
//! them.

use std::process::{Command, Stdio};

use super::process::{describe, run_ok, stdout};

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
    let out = Command::new("id")
        .args([flag, user])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("id {flag} {user}: {e}"));
    assert!(out.status.success(), "id {flag} {user}\n{}", describe(&out));
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
