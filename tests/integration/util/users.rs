//! Users of the passwd database that the tests probe as, and running the binary as one of
//! them.

use std::process::Command;

use super::process::run_ok;

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
