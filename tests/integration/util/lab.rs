//! The namespace lab (`ci/lab`) that the tests run the real `egress-check` binary in.
//!
//! Every test gets a lab of its own ([`Lab::up`]), so tests run in parallel. The lab is torn
//! down when the [`Lab`] is dropped, also when the test panics.
//!
//! These tests need root and the lab's tools. Missing prerequisites make the test **fail**
//! with a message naming what is missing; the only opt-out is `EGRESS_CHECK_SKIP_NETNS=1`,
//! which is refused when `CI=true`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::process::{describe, run_ok};
use super::report::Report;
use super::users::binary_for_other_users;
use super::BIN;

/// The lab's DNS server (dnsmasq in the simulated internet), IPv4.
pub const LAB_DNS_V4: &str = "198.51.100.2";
/// The lab's DNS server, IPv6.
pub const LAB_DNS_V6: &str = "2001:db8:100::2";

/// Tools the lab and the firewall helpers need on `PATH`.
const REQUIRED_TOOLS: &[&str] = &[
    "ip",
    "iptables",
    "ip6tables",
    "nft",
    "dnsmasq",
    "socat",
    "ss",
    "flock",
    "setsid",
    "timeout",
    "runuser",
];

/// Wall-clock bound on one run of the binary, so that a hang fails the test instead of
/// stalling the suite.
const RUN_LIMIT_SECS: &str = "120";

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Path of the `ci/lab` script.
pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ci").join("lab")
}

/// Whether `tool` is an executable file in one of `PATH`'s directories.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Checks, once per test binary, that the lab can be built here.
///
/// Returns `Ok(())` when it can, `Err(reason)` when the user opted out with
/// `EGRESS_CHECK_SKIP_NETNS=1`, and panics otherwise (missing prerequisites, or the opt-out
/// used under `CI=true`).
fn prerequisites() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let mut missing = Vec::new();
            if !nix::unistd::Uid::effective().is_root() {
                missing.push("root privileges (effective uid is not 0)".to_string());
            }
            let tools: Vec<&str> = REQUIRED_TOOLS
                .iter()
                .copied()
                .filter(|t| !on_path(t))
                .collect();
            if !tools.is_empty() {
                missing.push(format!("tools not on PATH: {}", tools.join(", ")));
            }
            let skip = std::env::var("EGRESS_CHECK_SKIP_NETNS").is_ok_and(|v| v == "1");
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            if skip && ci {
                panic!(
                    "EGRESS_CHECK_SKIP_NETNS=1 is not allowed when CI=true: CI must run the \
                     network namespace tests (run as root; see README)"
                );
            }
            if skip {
                return Err(format!(
                    "EGRESS_CHECK_SKIP_NETNS=1 is set{}",
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(" (and this machine lacks: {})", missing.join("; "))
                    }
                ));
            }
            if !missing.is_empty() {
                panic!(
                    "the network namespace tests cannot run: missing {}. Run as root with \
                     iproute2, iptables, nftables, dnsmasq and socat installed; see README. \
                     (To skip them knowingly outside CI, set EGRESS_CHECK_SKIP_NETNS=1.)",
                    missing.join("; ")
                );
            }
            reap_stale_labs();
            Ok(())
        })
        .clone()
}

/// Tears down labs left behind by earlier test processes that were killed before their
/// [`Lab`]s were dropped (names `ec<pid>x<n>` whose pid no longer runs).
fn reap_stale_labs() {
    let Ok(entries) = std::fs::read_dir("/run/egress-check-lab") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ec")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new(lab_script())
            .args(["down", &name])
            .stdin(Stdio::null())
            .output();
    }
}

/// A running namespace lab (see `ci/lab`): `NAME-host` is the host under test, `NAME-net`
/// the simulated internet with DNS, SMTP listeners and sink addresses.
pub struct Lab {
    name: String,
}

impl Lab {
    /// Brings up a lab with a fresh name unique to this process.
    ///
    /// Returns `None` only when the user opted out with `EGRESS_CHECK_SKIP_NETNS=1` (outside
    /// CI); the skip is announced on stderr. Panics when the lab cannot be built.
    pub fn up() -> Option<Lab> {
        if let Err(reason) = prerequisites() {
            // Straight to stderr, past the test harness's output capture: a skip is never
            // silent.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED network namespace test ({}): {reason}",
                std::thread::current().name().unwrap_or("?")
            );
            return None;
        }
        let name = format!(
            "ec{}x{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        // A lab of the same name can only be left over from a crashed process that had our pid.
        let _ = Command::new(lab_script())
            .args(["down", &name])
            .stdin(Stdio::null())
            .output();
        run_ok(
            Command::new(lab_script()).args(["up", &name]),
            &format!("ci/lab up {name}"),
        );
        Some(Lab { name })
    }

    /// The lab's name.
    #[allow(dead_code)] // Part of the lab's interface; no test needs the name today.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Name of the namespace of the host under test.
    pub fn host_ns(&self) -> String {
        format!("{}-host", self.name)
    }

    /// A command that runs `program` inside the host under test's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host_ns(), program]);
        cmd
    }

    /// Runs `program args` in the host namespace; panics unless it succeeds.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        run_ok(
            self.command(program).args(args),
            &format!("[{}] {program} {}", self.name, args.join(" ")),
        )
    }

    /// Runs `iptables ARGS` in the host namespace (e.g. `&["-A", "OUTPUT", ...]`).
    pub fn iptables(&self, args: &[&str]) {
        self.exec("iptables", args);
    }

    /// Runs `ip6tables ARGS` in the host namespace.
    pub fn ip6tables(&self, args: &[&str]) {
        self.exec("ip6tables", args);
    }

    /// Adds the same rule with both `iptables` and `ip6tables`.
    pub fn ip46tables(&self, args: &[&str]) {
        self.iptables(args);
        self.ip6tables(args);
    }

    /// Loads an nftables ruleset (`nft -f -`) in the host namespace.
    pub fn nft_file(&self, ruleset: &str) {
        let what = format!("[{}] nft -f -", self.name);
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(ruleset.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: cannot write ruleset: {e}"));
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed for ruleset:\n{ruleset}\n{}",
            describe(&out)
        );
    }

    /// Runs `egress-check ARGS` as root in the host namespace (bounded in time).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_as_root_or(None, Path::new(BIN), args)
    }

    /// Runs `egress-check ARGS` as the unprivileged `user` in the host namespace.
    ///
    /// Runs the [shared copy](binary_for_other_users) of the binary: `user` may not be able
    /// to reach `target/` (a checkout in a private directory).
    pub fn run_as(&self, user: &str, args: &[&str]) -> Output {
        let shared = binary_for_other_users();
        self.run_binary_as(user, shared.path(), args)
    }

    /// Runs the binary at `bin` with `ARGS` as `user` in the host namespace, as
    /// [`Lab::run_as`] does.
    pub fn run_binary_as(&self, user: &str, bin: &Path, args: &[&str]) -> Output {
        self.run_as_root_or(Some(user), bin, args)
    }

    fn run_as_root_or(&self, user: Option<&str>, bin: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", RUN_LIMIT_SECS, "ip", "netns", "exec"])
            .arg(self.host_ns());
        if let Some(user) = user {
            cmd.args(["runuser", "-u", user, "--"]);
        }
        cmd.arg(bin)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        if out.status.code() == Some(124) || out.status.code() == Some(137) {
            panic!(
                "egress-check {} did not finish within {RUN_LIMIT_SECS}s\n{}",
                args.join(" "),
                describe(&out)
            );
        }
        out
    }

    /// Runs `egress-check ARGS --format json` and parses the report on stdout.
    pub fn run_json(&self, args: &[&str]) -> (Output, Report) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.run(&all);
        let report = Report::parse(&out);
        (out, report)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new(lab_script())
            .args(["down", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("ci/lab down {} failed\n{}", self.name, describe(&out)),
            Err(e) => eprintln!("ci/lab down {}: cannot start: {e}", self.name),
        }
    }
}

/// Makes sure the lab's test users (`ec-postfix`, `ec-web`, `ec-suppl`, `ec-nologin`,
/// `www-data`) exist, without building a lab (`ci/lab users`).
///
/// Same prerequisites and opt-out as [`Lab::up`]: returns `false` only when the user opted
/// out with `EGRESS_CHECK_SKIP_NETNS=1` (announced on stderr); panics when the users cannot
/// be created.
pub fn ensure_lab_users() -> bool {
    if let Err(reason) = prerequisites() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED test needing the lab's users ({}): {reason}",
            std::thread::current().name().unwrap_or("?")
        );
        return false;
    }
    static USERS: OnceLock<()> = OnceLock::new();
    USERS.get_or_init(|| {
        run_ok(Command::new(lab_script()).arg("users"), "ci/lab users");
    });
    true
}

/// Fault injection in a lab: the simulated internet's namespace, extra sink addresses, and
/// the `ci/lab` helpers that delay packets or reset connections (used by
/// the `fault_matrix` tests).
impl Lab {
    /// Name of the simulated internet's namespace (`NAME-net`).
    pub fn net_ns(&self) -> String {
        format!("{}-net", self.name)
    }

    /// A command that runs `program` inside the simulated internet's namespace.
    pub fn net_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net_ns(), program]);
        cmd
    }

    /// Runs `program args` in the simulated internet's namespace; panics unless it succeeds.
    pub fn exec_net(&self, program: &str, args: &[&str]) -> Output {
        run_ok(
            self.net_command(program).args(args),
            &format!("[{}-net] {program} {}", self.name, args.join(" ")),
        )
    }

    /// Runs `ci/lab SUBCOMMAND NAME ARGS..`; panics unless it succeeds.
    pub fn lab(&self, subcommand: &str, args: &[&str]) -> Output {
        run_ok(
            Command::new(lab_script())
                .args([subcommand, &self.name])
                .args(args),
            &format!("ci/lab {subcommand} {} {}", self.name, args.join(" ")),
        )
    }

    /// Makes `addr` (IPv4 or IPv6) one more sink of the simulated internet: the lab's
    /// listeners answer on it (TCP 25 and 587; 26 closed) and nothing else uses it, so rules
    /// scoped to it affect no other test sharing the lab.
    pub fn add_sink(&self, addr: &str) {
        let ip: std::net::IpAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("add_sink: {addr:?} is not an IP address"));
        match ip {
            std::net::IpAddr::V4(_) => {
                self.exec_net("ip", &["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            }
            std::net::IpAddr::V6(_) => self.exec_net(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{addr}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ],
            ),
        };
    }

    /// Delays every packet sent to NFQUEUE `queue` in the simulated internet by `millis`
    /// (`ci/lab delay`). Steer packets to it afterwards, e.g. with
    /// `iptables -t mangle -A PREROUTING ... -j NFQUEUE --queue-num QUEUE --queue-bypass`.
    pub fn delay(&self, queue: u16, millis: u64) {
        self.lab("delay", &[&queue.to_string(), &millis.to_string()]);
    }

    /// Listens on TCP `port` on every address of the simulated internet and resets each
    /// connection right after accepting it (`ci/lab reset-listener`).
    pub fn reset_listener(&self, port: u16) {
        self.lab("reset-listener", &[&port.to_string()]);
    }
}
