//! Shared fixtures for the integration tests that run the real `egress-check` binary inside a
//! network namespace lab: the test kit's [`TestLab`] (`testkit/src/test_lab.rs` documents its
//! address plan, zone and users).
//!
//! Every test gets a lab of its own ([`Lab::up`]), so tests run in parallel. The lab is torn
//! down when the [`Lab`] is dropped, also when the test panics.
//!
//! These tests need root and the lab's tools. Missing prerequisites make the test **fail**
//! with a message naming what is missing; the only opt-out is `EGRESS_CHECK_SKIP_NETNS=1`,
//! which is refused when `CI=true`.

#![allow(dead_code)] // Each test crate uses a different subset of the helpers.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};

use egress_check_testkit::{Skip, TestLab};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_egress-check");

/// The lab's DNS server (in the simulated internet), IPv4.
pub const LAB_DNS_V4: &str = "198.51.100.2";
/// The lab's DNS server, IPv6.
pub const LAB_DNS_V6: &str = "2001:db8:100::2";

/// Wall-clock bound on one run of the binary, so that a hang fails the test instead of
/// stalling the suite.
const RUN_LIMIT_SECS: &str = "120";

/// Checks, once per test binary, that the lab can be built here (and reaps the labs of killed
/// test processes): see [`egress_check_testkit::prerequisites`].
///
/// Returns `Ok(())` when it can, `Err(reason)` when the user opted out with
/// `EGRESS_CHECK_SKIP_NETNS=1`, and panics otherwise (missing prerequisites, or the opt-out
/// used under `CI=true`).
fn prerequisites() -> Result<(), Skip> {
    egress_check_testkit::prerequisites()
}

/// Renders a process's exit status and output for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(out.status.success(), "{what} failed\n{}", describe(&out));
    out
}

/// A running namespace lab ([`TestLab`]): the host under test's namespace, and the simulated
/// internet's with DNS, SMTP listeners and sink addresses.
pub struct Lab {
    inner: TestLab,
}

impl Lab {
    /// Brings up a lab with fresh names unique to this process (creating the test users first).
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
        let inner = TestLab::up().unwrap_or_else(|e| panic!("cannot bring the lab up: {e}"));
        Some(Lab { inner })
    }

    /// The lab's name.
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
        self.run_as_root_or(None, args)
    }

    /// Runs `egress-check ARGS` as the unprivileged `user` in the host namespace.
    pub fn run_as(&self, user: &str, args: &[&str]) -> Output {
        self.run_as_root_or(Some(user), args)
    }

    fn run_as_root_or(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", RUN_LIMIT_SECS, "ip", "netns", "exec"])
            .arg(self.host_ns());
        if let Some(user) = user {
            cmd.args(["runuser", "-u", user, "--"]);
        }
        cmd.arg(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
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

/// A scenario file in a temporary directory of its own (removed on drop), so that its file
/// name is known exactly, e.g. for `bad.toml:3:9` in error messages.
pub struct ScenarioFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ScenarioFile {
    /// Writes `text` to a new temporary file called `file_name`.
    pub fn new(file_name: &str, text: &str) -> ScenarioFile {
        let dir = tempfile::Builder::new()
            .prefix("egress-check-scenario")
            .tempdir()
            .expect("create temporary directory");
        let path = dir.path().join(file_name);
        std::fs::write(&path, text).expect("write scenario");
        ScenarioFile { _dir: dir, path }
    }

    /// The file's full path, as a string for command lines.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

/// Writes `text` to a temporary `scenario.toml`.
pub fn scenario(text: &str) -> ScenarioFile {
    ScenarioFile::new("scenario.toml", text)
}

/// The `--format json` report, checked against the documented schema while parsing.
#[derive(Debug)]
pub struct Report {
    /// Probes that passed.
    pub passed: u64,
    /// Probes that failed.
    pub failed: u64,
    /// Probes that were inconclusive.
    pub inconclusive: u64,
    /// Every probe.
    pub probes: Vec<Probe>,
}

/// One probe of the JSON report.
#[derive(Debug, Clone)]
pub struct Probe {
    pub user: String,
    pub uid: u64,
    pub target: String,
    pub domain: Option<String>,
    /// The exchange's name without a trailing dot.
    pub exchange: Option<String>,
    pub address: Option<String>,
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub port: u64,
    /// `allow` or `deny`.
    pub expect: String,
    /// `connected`, `refused`, `unreachable`, `timeout`, `error` or `no-address`.
    pub observed: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub witnessed: Option<bool>,
    pub elapsed_ms: f64,
    pub detail: Option<String>,
}

fn field<'a>(obj: &'a Value, key: &str, ctx: &str) -> &'a Value {
    obj.get(key)
        .unwrap_or_else(|| panic!("JSON report: {ctx} has no `{key}`: {obj}"))
}

fn string(obj: &Value, key: &str, ctx: &str) -> String {
    field(obj, key, ctx)
        .as_str()
        .unwrap_or_else(|| panic!("JSON report: {ctx}.{key} is not a string: {obj}"))
        .to_string()
}

fn opt_string(obj: &Value, key: &str, ctx: &str) -> Option<String> {
    match field(obj, key, ctx) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("JSON report: {ctx}.{key} is neither a string nor null: {other}"),
    }
}

fn uint(obj: &Value, key: &str, ctx: &str) -> u64 {
    field(obj, key, ctx)
        .as_u64()
        .unwrap_or_else(|| panic!("JSON report: {ctx}.{key} is not an unsigned integer: {obj}"))
}

fn one_of(value: String, allowed: &[&str], what: &str) -> String {
    assert!(
        allowed.contains(&value.as_str()),
        "JSON report: {what} is {value:?}, not one of {allowed:?}"
    );
    value
}

impl Report {
    /// Parses stdout of `--format json`, panicking (with the whole output) on anything that
    /// does not follow the documented schema.
    pub fn parse(out: &Output) -> Report {
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{}", describe(out)));
        let probes = field(&doc, "probes", "report")
            .as_array()
            .unwrap_or_else(|| panic!("JSON report: `probes` is not an array\n{}", describe(out)))
            .iter()
            .enumerate()
            .map(|(i, p)| Probe::from_json(p, &format!("probes[{i}]")))
            .collect::<Vec<_>>();
        let report = Report {
            passed: uint(&doc, "passed", "report"),
            failed: uint(&doc, "failed", "report"),
            inconclusive: uint(&doc, "inconclusive", "report"),
            probes,
        };
        let count = |v: &str| report.probes.iter().filter(|p| p.verdict == v).count() as u64;
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (count("pass"), count("fail"), count("inconclusive")),
            "JSON report: totals (passed, failed, inconclusive) disagree with the probes' \
             verdicts\n{}",
            describe(out)
        );
        report
    }

    /// The probes run as `user`.
    pub fn of_user(&self, user: &str) -> Vec<&Probe> {
        self.probes.iter().filter(|p| p.user == user).collect()
    }

    /// The probes run as `user` over `family` (`ipv4` or `ipv6`).
    pub fn of(&self, user: &str, family: &str) -> Vec<&Probe> {
        self.probes
            .iter()
            .filter(|p| p.user == user && p.family == family)
            .collect()
    }

    /// Asserts that `user` has exactly `count` probes over `family`, each with the given
    /// observation and verdict.
    #[track_caller]
    pub fn expect_probes(
        &self,
        user: &str,
        family: &str,
        count: usize,
        observed: &[&str],
        verdict: &str,
    ) {
        let probes = self.of(user, family);
        assert_eq!(
            probes.len(),
            count,
            "expected {count} {family} probe(s) as {user}, got {}: {probes:#?}",
            probes.len()
        );
        for p in probes {
            assert!(
                observed.contains(&p.observed.as_str()) && p.verdict == verdict,
                "probe as {user} over {family} to {:?} port {}: expected observed {observed:?} \
                 and verdict {verdict:?}, got observed {:?} verdict {:?} (detail: {:?})",
                p.address,
                p.port,
                p.observed,
                p.verdict,
                p.detail
            );
        }
    }
}

impl Probe {
    fn from_json(p: &Value, ctx: &str) -> Probe {
        assert!(p.is_object(), "JSON report: {ctx} is not an object: {p}");
        let witnessed = match field(p, "witnessed", ctx) {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => panic!("JSON report: {ctx}.witnessed is neither a bool nor null: {other}"),
        };
        let elapsed_ms = field(p, "elapsed_ms", ctx)
            .as_f64()
            .unwrap_or_else(|| panic!("JSON report: {ctx}.elapsed_ms is not a number: {p}"));
        let address = opt_string(p, "address", ctx);
        if let Some(a) = &address {
            a.parse::<std::net::IpAddr>().unwrap_or_else(|_| {
                panic!("JSON report: {ctx}.address {a:?} is not an IP address")
            });
        }
        Probe {
            user: string(p, "user", ctx),
            uid: uint(p, "uid", ctx),
            target: string(p, "target", ctx),
            domain: opt_string(p, "domain", ctx),
            exchange: opt_string(p, "exchange", ctx).map(|e| e.trim_end_matches('.').to_string()),
            address,
            family: one_of(
                string(p, "family", ctx),
                &["ipv4", "ipv6"],
                &format!("{ctx}.family"),
            ),
            port: uint(p, "port", ctx),
            expect: one_of(
                string(p, "expect", ctx),
                &["allow", "deny"],
                &format!("{ctx}.expect"),
            ),
            observed: one_of(
                string(p, "observed", ctx),
                &[
                    "connected",
                    "refused",
                    "unreachable",
                    "timeout",
                    "error",
                    "no-address",
                ],
                &format!("{ctx}.observed"),
            ),
            verdict: one_of(
                string(p, "verdict", ctx),
                &["pass", "fail", "inconclusive"],
                &format!("{ctx}.verdict"),
            ),
            witnessed,
            elapsed_ms,
            detail: opt_string(p, "detail", ctx),
        }
    }
}

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

/// The set of `(exchange, family)` pairs among `probes`, for asserting coverage.
pub fn exchanges_and_families(probes: &[&Probe]) -> BTreeSet<(String, String)> {
    probes
        .iter()
        .map(|p| (p.exchange.clone().unwrap_or_default(), p.family.clone()))
        .collect()
}

/// Exit code of a finished process (panics if it was killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal\n{}", describe(out)))
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Makes sure the lab's test users (`ec-postfix`, `ec-web`, `ec-suppl`, `ec-nologin`,
/// `www-data`) exist, without building a lab.
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
    egress_check_testkit::users::ensure()
        .unwrap_or_else(|e| panic!("cannot create the test users: {e}"));
    true
}

/// Fault injection in a lab: the simulated internet's namespace, extra sink addresses, and
/// the test kit's helpers that delay packets or reset connections (used by
/// `tests/fault_matrix.rs`).
impl Lab {
    /// Name of the simulated internet's namespace.
    pub fn net_ns(&self) -> String {
        self.inner.net_ns().to_string()
    }

    /// A command that runs `program` inside the simulated internet's namespace.
    pub fn net_command(&self, program: &str) -> Command {
        self.inner.net_command(program)
    }

    /// Runs `program args` in the simulated internet's namespace; panics unless it succeeds.
    pub fn exec_net(&self, program: &str, args: &[&str]) -> Output {
        self.inner
            .exec_net(program, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a lab helper by the name `ci/lab` gave it: `delay QUEUE MS` ([`Lab::delay`]) or
    /// `reset-listener PORT` ([`Lab::reset_listener`]); panics unless it succeeds.
    pub fn lab(&self, subcommand: &str, args: &[&str]) -> Output {
        let number = |i: usize| -> u64 {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("lab {subcommand} {args:?}: argument {i} is no number"))
        };
        let small = |i: usize| -> u16 {
            u16::try_from(number(i))
                .unwrap_or_else(|_| panic!("lab {subcommand} {args:?}: argument {i} is too big"))
        };
        match (subcommand, args.len()) {
            ("delay", 2) => self.delay(small(0), number(1)),
            ("reset-listener", 1) => self.reset_listener(small(0)),
            _ => panic!("unknown lab helper: {subcommand} {args:?}"),
        }
        Output {
            status: ExitStatus::from_raw(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
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
}
