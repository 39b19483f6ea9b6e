//! Hardening (issue 15): the worker's fence (Landlock and a seccomp allowlist) and what a
//! worker the fence killed leaves in the report; `--output` files that a planted link cannot
//! turn against root.
//!
//! The identity checks of `__probe-as --diagnose` live in `robustness` (which also checks
//! the fence fields there for every lab user); this module proves the fence *acts*: a call
//! outside the allowlist kills the worker, and the run says so instead of passing.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::lab::{ensure_lab_users, port25_as, Lab};
use crate::util::process::{code, describe, stderr, stdout, words};
use crate::util::BIN;

/// `__probe-as USER --diagnose`, parsed.
fn diagnose(user: &str) -> Value {
    let out = Command::new(BIN)
        .args(["__probe-as", user, "--diagnose"])
        .stdin(Stdio::null())
        .output()
        .expect("run egress-check");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)))
}

/// The diagnosis shows both layers as the kernel enforces them: the `Seccomp:` line of
/// `/proc/self/status` says `filter`, and once Landlock is up opening `/etc/passwd` (world
/// readable) fails with EACCES. A kernel without Landlock fails this test: nothing here
/// would prove the layer then.
#[test]
fn diagnose_shows_the_fence_enforced_by_the_kernel() {
    if !ensure_lab_users() {
        return;
    }
    for user in ["www-data", "ec-suppl", "nobody"] {
        let d = diagnose(user);
        assert_eq!(d["seccomp"], "filter", "seccomp mode as {user}: {d}");
        assert!(
            d["seccomp_allowed_calls"].as_u64().is_some_and(|n| n > 0),
            "{d}"
        );
        assert_eq!(
            d["landlock"]["status"], "enforced",
            "Landlock as {user} (a kernel without it cannot prove this layer): {d}"
        );
        assert_eq!(
            d["landlock_open_file"], "EACCES",
            "a world-readable file must be out of reach once Landlock is up, as {user}: {d}"
        );
    }
}

/// A worker that makes a system call outside its allowlist (the hidden test hook makes it
/// open a Unix socket once fenced) is killed by the kernel; every probe it owed is `error`,
/// inconclusive, naming the seccomp filter, and the run exits 3. The same check without the
/// hook connects and passes: the fence itself does not get in the probe's way.
#[test]
fn a_forbidden_call_kills_the_worker_and_its_probes_are_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    let allow = words("--expect allow --timeout 5s");

    let (out, report) = lab.run_json(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "control run\n{}", describe(&out));
    report.expect_probes("ec-postfix", "ipv4", 1, &["connected"], "pass");

    let mut faulty = allow.clone();
    faulty.extend(["--test-worker-fault", "forbidden-call"]);
    let (out, report) = lab.run_json(&port25_as("ec-postfix", &faulty));
    assert_eq!(code(&out), 3, "{}", describe(&out));
    report.expect_probes("ec-postfix", "ipv4", 1, &["error"], "inconclusive");
    for p in &report.probes {
        let detail = p.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("seccomp filter (SIGSYS)"),
            "the detail must name the cause: {p:#?}"
        );
    }
    assert!(
        stderr(&out).contains("seccomp filter"),
        "stderr names it too\n{}",
        describe(&out)
    );
}

/// The test hook is not advertised: no help text lists it.
#[test]
fn the_test_hook_is_hidden() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(code(&out), 0, "{}", describe(&out));
        assert!(
            !stdout(&out).contains("test-worker-fault"),
            "{}",
            describe(&out)
        );
    }
}

/// Runs `program args` as `nobody` (setpriv, no groups); panics unless it succeeds.
fn as_nobody(program: &str, args: &[&str]) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .args(args)
        .output()
        .expect("run setpriv");
    assert_eq!(
        code(&out),
        0,
        "as nobody: {program} {args:?}\n{}",
        describe(&out)
    );
}

/// `--output` into a sticky, world-writable directory (like `/tmp`) where another user
/// (`nobody`) planted symlinks at the report's name and at the temporary names it can
/// guess, pointing at a file only root may write: the run replaces the link at the final
/// name with a root-owned regular file holding the report, never writes through a link,
/// leaves the guessed links as they were, and a second run over a private (0600) report
/// keeps it private.
#[test]
fn output_into_a_shared_directory_cannot_be_turned_against_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(lab) = Lab::up() else { return };
    let base = tempfile::Builder::new()
        .prefix("egress-check-hardening.")
        .tempdir()
        .expect("temporary directory");
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let report = shared.join("last.json");
    let victim_text = victim.display().to_string();
    let mut planted = vec![report.clone()];
    for guess in [".last.json.tmp", ".last.json..tmp", "last.json.tmp"] {
        planted.push(shared.join(guess));
    }
    for link in &planted {
        as_nobody("ln", &["-s", &victim_text, &link.display().to_string()]);
    }

    let output = format!("json={}", report.display());
    let allow = ["--expect", "allow", "--timeout", "5s", "--output", &output];
    let out = lab.run(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read victim"),
        "precious\n",
        "the planted link was followed"
    );
    let meta = std::fs::symlink_metadata(&report).expect("stat report");
    assert!(
        meta.file_type().is_file(),
        "a regular file replaces the link: {meta:?}"
    );
    assert_eq!(meta.uid(), 0, "owned by root");
    let text = std::fs::read_to_string(&report).expect("read report");
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(json["passed"], 1, "{text}");
    for link in &planted[1..] {
        let meta = std::fs::symlink_metadata(link).expect("planted link");
        assert!(
            meta.file_type().is_symlink(),
            "{} was replaced",
            link.display()
        );
    }
    let entries = std::fs::read_dir(&shared).expect("list").count();
    assert_eq!(entries, planted.len(), "no temporary file is left behind");

    // A private report stays private when it is replaced.
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = lab.run(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let mode = std::fs::metadata(&report).expect("stat").mode() & 0o7777;
    assert_eq!(
        mode & !0o600,
        0,
        "the replaced report is {mode:o}, wider than 0600"
    );
}
