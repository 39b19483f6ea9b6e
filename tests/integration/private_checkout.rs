//! A checkout in a private directory (`/root/...`, mode 0700): other users cannot traverse
//! it, so they cannot execute `target/debug/egress-check` in place. Neither the tool nor the
//! suite may depend on them being able to.
//!
//! - The tool: a worker is `/proc/self/exe` re-executed while still root, which drops
//!   privileges only afterwards and never executes anything again. Were it to exec after the
//!   drop, the exec would fail here with EACCES.
//! - The suite: tests that run the binary as another user run a
//!   [`SharedBinary`] copy of it, never the file in the checkout.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::lab::{port25_as, Lab, LAB_DNS_V4};
use crate::util::process::{assert_ok_naming, code, describe, words};
use crate::util::report::Report;
use crate::util::users::{id_numbers, install_executable, uid_of, SharedBinary};
use crate::util::BIN;

/// Whether `user` may execute `path` (`access(X_OK)` as that user, which needs search
/// permission on every directory above it).
fn executable_by(user: &str, path: &Path) -> bool {
    let out: Output = Command::new("setpriv")
        .args([
            &format!("--reuid={}", uid_of(user)),
            &format!("--regid={}", id_numbers("-g", user)[0]),
            "--init-groups",
            "test",
            "-x",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("test -x {} as {user}\n{}", path.display(), describe(&out)),
    }
}

/// A private checkout's binary: `DIR/target/debug/egress-check`, with DIR mode 0700 as
/// `/root` is, and everything below it as cargo leaves it.
struct PrivateCheckout {
    dir: tempfile::TempDir,
}

impl PrivateCheckout {
    fn new() -> PrivateCheckout {
        let dir = tempfile::Builder::new()
            .prefix("egress-check-private-checkout-")
            .tempdir()
            .expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let checkout = PrivateCheckout { dir };
        let debug = checkout.bin().parent().expect("has a parent").to_path_buf();
        std::fs::create_dir_all(&debug).expect("create target/debug");
        for sub in [checkout.dir.path().join("target"), debug] {
            std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // Not std::fs::copy: the copy is executed below (see install_executable).
        install_executable(Path::new(BIN), &checkout.bin());
        checkout
    }

    fn bin(&self) -> std::path::PathBuf {
        self.dir.path().join("target/debug/egress-check")
    }
}

/// From a 0700 directory that ec-web cannot enter: (a) as root, probing as ec-web works (its
/// worker re-executes the private binary while still root), and the probe's connection is
/// really ec-web's (an owner rule lets only ec-web through); (b) the suite's copy for other
/// users, made from the private binary, runs as ec-web.
#[test]
fn a_checkout_other_users_cannot_enter_works() {
    let Some(lab) = Lab::up() else { return };
    let checkout = PrivateCheckout::new();
    let private = checkout.bin();

    // Control: the directory really is closed to ec-web, and the file itself is executable.
    assert!(
        !executable_by("ec-web", &private),
        "control: ec-web must not be able to execute {}",
        private.display()
    );
    assert!(executable_by("root", &private), "control: root can");

    // (a) Only ec-web may connect to port 25; everyone else is reset.
    lab.ip46tables(&words(
        "-A OUTPUT -p tcp --dport 25 -m owner ! --uid-owner ec-web -j REJECT --reject-with tcp-reset",
    ));
    let mut cmd = lab.command(private.to_str().expect("UTF-8 path"));
    let out = cmd
        .args(port25_as(
            "ec-web",
            &words("--addr 2001:db8:200::10 --expect allow --timeout 5s --format json"),
        ))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the private binary");
    assert_eq!(
        code(&out),
        0,
        "probing as ec-web from a private checkout\n{}",
        describe(&out)
    );
    let report = Report::parse(&out);
    for family in ["ipv4", "ipv6"] {
        report.expect_probes("ec-web", family, 1, &["connected"], "pass");
    }
    for p in &report.probes {
        assert_eq!(p.uid, uid_of("ec-web"), "{p:#?}");
    }

    // (b) The suite's copy for other users, made from the private binary.
    let shared = SharedBinary::copy_of(&private);
    assert_eq!(
        std::fs::read(shared.path()).expect("read the copy"),
        std::fs::read(&private).expect("read the private binary"),
        "the shared copy is the private binary"
    );
    assert!(executable_by("ec-web", shared.path()));
    let out = lab.run_binary_as(
        "ec-web",
        shared.path(),
        &["resolve", "dual.test", "--nameserver", LAB_DNS_V4],
    );
    assert_ok_naming(&out, ["mx1.dual.test", "2001:db8:200::10"]);
}
