//! The namespace lab that the tests run the real `egress-check` binary in: the test kit's
//! [`TestLab`] (`testkit/src/test_lab.rs` documents its address plan, zone and users).
//!
//! Every test gets a lab of its own ([`Lab::up`]), so tests run in parallel. The lab is torn
//! down when the [`Lab`] is dropped, also when the test panics.
//!
//! What several tests run in it is here too: the story on the lab's names ([`STORY`]) with
//! its firewall ([`STORY_RULES`]), the ad hoc check of the lab's first sink
//! ([`port25_as`]), and the setup lines of the tables of faults and deciding rules
//! ([`Lab::setup`]).
//!
//! These tests need root and the lab's tools. Missing prerequisites make the test **fail**
//! with a message naming what is missing; the only opt-out is `EGRESS_CHECK_SKIP_NETNS=1`,
//! which is refused when `CI=true`.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use egress_check_testkit::{Skip, TestLab};

use super::process::describe;
use super::report::Report;
use super::users::binary_for_other_users;
use super::BIN;

/// The lab's DNS server (in the simulated internet), IPv4.
pub const LAB_DNS_V4: &str = "198.51.100.2";
/// The lab's DNS server, IPv6.
pub const LAB_DNS_V6: &str = "2001:db8:100::2";

/// The story on the lab's names (`tests/fixtures/lab/story.toml`): ec-postfix may send
/// mail, www-data may not; dual.test has two dual-stack MXs.
pub const STORY: &str = "lab/story.toml";

/// The story's firewall, as `iptables`/`ip6tables` rules (see [`words`]): only ec-postfix
/// may connect to port 25.
///
/// [`words`]: super::process::words
pub const STORY_RULES: [&str; 2] = [
    "-A OUTPUT -p tcp --dport 25 -m owner --uid-owner ec-postfix -j ACCEPT",
    "-A OUTPUT -p tcp --dport 25 -j DROP",
];

/// The arguments of an ad hoc check as `user` of port 25 on the lab's sink 203.0.113.10
/// (`--as USER --addr 203.0.113.10 --port 25`), followed by `more` (`--expect`,
/// `--timeout`, further `--addr`s, ...).
pub fn port25_as<'a>(user: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--as", user, "--addr", "203.0.113.10", "--port", "25"];
    args.extend_from_slice(more);
    args
}

/// Wall-clock bound on one run of the binary, so that a hang fails the test instead of
/// stalling the suite.
pub const RUN_LIMIT_SECS: &str = "120";

/// Checks, once per test binary, that the lab can be built here (and reaps the labs of killed
/// test processes): see [`egress_check_testkit::prerequisites`].
fn prerequisites() -> Result<(), Skip> {
    egress_check_testkit::prerequisites()
}

/// Says on stderr that the current test (a `what`) is skipped, and why.
fn announce_skip(what: &str, reason: &Skip) {
    // Straight to stderr, past the test harness's output capture: a skip is never silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {what} ({}): {reason}",
        std::thread::current().name().unwrap_or("?")
    );
}

/// A running namespace lab ([`TestLab`]): the host under test's namespace, and the simulated
/// internet's with DNS, SMTP listeners and sink addresses.
pub struct Lab {
    inner: TestLab,
}

impl Lab {
    /// Brings up a lab with a fresh name unique to this process.
    ///
    /// Returns `None` only when the user opted out with `EGRESS_CHECK_SKIP_NETNS=1` (outside
    /// CI); the skip is announced on stderr. Panics when the lab cannot be built.
    pub fn up() -> Option<Lab> {
        if let Err(reason) = prerequisites() {
            announce_skip("network namespace test", &reason);
            return None;
        }
        let inner = TestLab::up().unwrap_or_else(|e| panic!("cannot bring the lab up: {e}"));
        Some(Lab { inner })
    }

    /// The lab's name.
    #[allow(dead_code)] // Part of the lab's interface; no test needs the name today.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Name of the namespace of the host under test.
    pub fn host_ns(&self) -> String {
        self.inner.host_ns().to_string()
    }

    /// A command that runs `program` inside the host under test's namespace.
    pub fn command(&self, program: &str) -> Command {
        self.inner.command(program)
    }

    /// Runs `program args` in the host namespace; panics unless it succeeds.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.inner
            .exec(program, args)
            .unwrap_or_else(|e| panic!("{e}"))
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
        self.inner
            .nft_file(ruleset)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `egress-check ARGS` as root in the host namespace (bounded in time).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_as_root_or(None, Path::new(BIN), args)
    }

    /// The command [`Lab::run`] runs (`egress-check ARGS` as root in the host namespace,
    /// bounded in time, `NO_COLOR=1`, no standard input), for a test to adjust before it
    /// runs it with [`within_limit`].
    pub fn run_command(&self, args: &[&str]) -> Command {
        self.command_as(None, Path::new(BIN), args)
    }

    /// Runs `egress-check ARGS` as [`Lab::run`] does, with `input` on its standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .run_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        // A scenario that is refused may be refused before all of it is read (EPIPE).
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {BIN}: {e}"));
        within_limit(out, args)
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
        let out = self
            .command_as(user, bin, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        within_limit(out, args)
    }

    fn command_as(&self, user: Option<&str>, bin: &Path, args: &[&str]) -> Command {
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
        cmd
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

/// `out` of `egress-check ARGS` run through `timeout` (as [`Lab::run_command`] does); panics
/// when the time limit stopped it, so that a hang fails the test as a hang.
pub fn within_limit(out: Output, args: &[&str]) -> Output {
    if out.status.code() == Some(124) || out.status.code() == Some(137) {
        panic!(
            "egress-check {} did not finish within {RUN_LIMIT_SECS}s\n{}",
            args.join(" "),
            describe(&out)
        );
    }
    out
}

/// Makes sure the lab's test users (`ec-postfix`, `ec-web`, `ec-suppl`, `ec-nologin`,
/// `www-data`) exist, without building a lab.
///
/// Same prerequisites and opt-out as [`Lab::up`]: returns `false` only when the user opted
/// out with `EGRESS_CHECK_SKIP_NETNS=1` (announced on stderr); panics when the users cannot
/// be created.
pub fn ensure_lab_users() -> bool {
    if let Err(reason) = prerequisites() {
        announce_skip("test needing the lab's users", &reason);
        return false;
    }
    egress_check_testkit::users::ensure()
        .unwrap_or_else(|e| panic!("cannot create the test users: {e}"));
    true
}

/// Fault injection in a lab: the simulated internet's namespace, extra sink addresses, the
/// test kit's helpers that delay packets or reset connections, and the setup lines that use
/// them (the `fault_matrix` and `explain` tests' tables).
impl Lab {
    /// Name of the simulated internet's namespace.
    pub fn net_ns(&self) -> String {
        self.inner.net_ns().to_string()
    }

    /// Starts the host's own mail server on `port` on every address of the host namespace
    /// (what a mail host has); it counts the connections it accepted.
    pub fn host_mta(&self, port: u16) -> egress_check_testkit::mta::Mta {
        self.inner
            .host_mta(port)
            .unwrap_or_else(|e| panic!("host MTA on port {port}: {e}"))
    }

    /// Starts a mail server on `port` on every address of the simulated internet (every
    /// sink answers on it); it counts the connections it accepted, so a test can tell
    /// whether a run probed at all. `port` must be one the sinks do not use (not 25, 26, 587).
    pub fn internet_mta(&self, port: u16) -> egress_check_testkit::mta::Mta {
        self.inner
            .internet_mta(port)
            .unwrap_or_else(|e| panic!("internet MTA on port {port}: {e}"))
    }

    /// Starts a mail server on `port` of the simulated internet's link-local address `addr`.
    pub fn peer_link_local_mta(&self, addr: &str, port: u16) -> egress_check_testkit::mta::Mta {
        let ip = addr
            .parse()
            .unwrap_or_else(|_| panic!("{addr:?} is not an IPv6 address"));
        self.inner
            .peer_link_local_mta(ip, port)
            .unwrap_or_else(|e| panic!("peer MTA on [{addr}]:{port}: {e}"))
    }

    /// Runs `program args` in the simulated internet's namespace; panics unless it succeeds.
    pub fn exec_net(&self, program: &str, args: &[&str]) -> Output {
        self.inner
            .exec_net(program, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Makes `addr` (IPv4 or IPv6) one more sink of the simulated internet: the lab's
    /// listeners answer on it (TCP 25 and 587; 26 closed) and nothing else uses it, so rules
    /// scoped to it affect no other test sharing the lab.
    pub fn add_sink(&self, addr: &str) {
        let ip: IpAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("add_sink: {addr:?} is not an IP address"));
        self.inner
            .add_sink(ip)
            .unwrap_or_else(|e| panic!("add_sink {addr}: {e}"));
    }

    /// Delays every packet sent to NFQUEUE `queue` in the simulated internet by `millis`.
    /// Steer packets to it afterwards, e.g. with
    /// `iptables -t mangle -A PREROUTING ... -j NFQUEUE --queue-num QUEUE --queue-bypass`.
    pub fn delay(&self, queue: u16, millis: u64) {
        self.inner
            .delay(queue, millis)
            .unwrap_or_else(|e| panic!("delay on queue {queue}: {e}"));
    }

    /// Listens on TCP `port` on every address of the simulated internet and resets each
    /// connection right after accepting it.
    pub fn reset_listener(&self, port: u16) {
        self.inner
            .reset_listener(port)
            .unwrap_or_else(|e| panic!("reset listener on port {port}: {e}"));
    }

    /// Runs the setup `lines` of the table row `row` (named in panics), in order, for the
    /// row's addresses `addrs` (IPv4, IPv6): the setup language of the fault matrix's and
    /// the `--explain` tests' tables.
    ///
    /// One command a line, `KIND: WORDS`, words split on whitespace, `{v4}`/`{v6}` replaced
    /// by the row's addresses: `host: CMD..` / `net: CMD..` run in the host under test / the
    /// simulated internet; `host46: ARGS` runs `iptables ARGS` with `{a}` = v4 and
    /// `ip6tables ARGS` with `{a}` = v6 in the host (`net46:` likewise in the simulated
    /// internet); `lab: delay QUEUE MILLIS` and `lab: reset-listener PORT` run
    /// [`Lab::delay`] and [`Lab::reset_listener`].
    pub fn setup(&self, row: &str, addrs: (&str, &str), lines: &[&str]) {
        let fill = |text: &str, a: &str| -> Vec<String> {
            text.replace("{v4}", addrs.0)
                .replace("{v6}", addrs.1)
                .replace("{a}", a)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        for line in lines {
            let (kind, rest) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{row}: bad setup line {line:?}"));
            let run = |words: Vec<String>, net: bool| {
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                let (program, args) = words
                    .split_first()
                    .unwrap_or_else(|| panic!("{row}: empty setup line {line:?}"));
                if net {
                    self.exec_net(program, args);
                } else {
                    self.exec(program, args);
                }
            };
            match kind {
                "host" | "net" => run(fill(rest, ""), kind == "net"),
                "host46" | "net46" => {
                    for (tool, a) in [("iptables", addrs.0), ("ip6tables", addrs.1)] {
                        let mut words = vec![tool.to_string()];
                        words.extend(fill(rest, a));
                        run(words, kind == "net46");
                    }
                }
                "lab" => {
                    let words = fill(rest, "");
                    let args: Vec<&str> = words.iter().map(String::as_str).collect();
                    // Through the lab's typed helpers, not a helper's name: they are what the
                    // lab promises to keep, whatever builds it.
                    let number = |word: &str| -> u64 {
                        word.parse()
                            .unwrap_or_else(|_| panic!("{row}: {word:?} in {line:?}"))
                    };
                    match args.as_slice() {
                        ["delay", queue, millis] => {
                            let queue = u16::try_from(number(queue)).expect("queue number");
                            self.delay(queue, number(millis));
                        }
                        ["reset-listener", port] => {
                            self.reset_listener(u16::try_from(number(port)).expect("port"));
                        }
                        _ => panic!("{row}: unknown lab helper in {line:?}"),
                    }
                }
                other => panic!("{row}: unknown setup kind {other:?}"),
            }
        }
    }
}
