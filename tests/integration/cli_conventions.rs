//! The conventions of `egress-check run` that scripts and `egress-check.service` rely on:
//! where scenarios come from (files, a directory's `*.toml` in lexical order, `-` for
//! standard input, /etc/egress-check without FILE) and `--output [FORMAT=]FILE`.
//!
//! The real binary runs as root in a namespace lab of the test's own ([`Lab`]) and probes,
//! as the lab's `ec-web`, real egress destinations of the simulated internet: a sink's
//! closed port (refused, so a deny passes) and a counting listener on every sink
//! ([`Lab::internet_mta`]; connected, so an allow passes and a deny fails), which also tells
//! whether a run probed at all. Loopback would not do: it never crosses the egress path, so
//! a literal 127.0.0.1 is refused and a local probe is never a pass.
//!
//! The test of the /etc/egress-check default also puts a scenario there in a private mount
//! namespace, without touching the host's /etc. Tests that probe nothing run the binary
//! directly, without a lab. Missing prerequisites fail the tests; the only opt-out is
//! `EGRESS_CHECK_SKIP_NETNS=1` (refused under `CI=true`).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use egress_check_testkit::mta::Mta;
use egress_check_testkit::test_lab::{CLOSED_PORT, SINKS_V4};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::lab::{within_limit, Lab, RUN_LIMIT_SECS};
use crate::util::process::{describe, stderr, stdout, wait_for, Running};
use crate::util::report::Report;
use crate::util::BIN;

/// The user every check probes as: one of the lab's test users (the binary runs as root).
const USER: &str = "ec-web";

/// The port of the counting listener ([`Lab::internet_mta`]): no sink uses it otherwise.
const COUNTING_PORT: u16 = 2526;

/// How long the tests wait for a connection a run made to show in the listener's count:
/// the handshake is complete before the run reports `connected`, so only the listener's
/// accept is left, which takes milliseconds. Waiting for a connection that must not have
/// happened takes all of it; waiting for one that must have happened takes at most
/// [`ARRIVAL`] (generous: the CI machine is shared).
const SETTLE: Duration = Duration::from_millis(500);
const ARRIVAL: Duration = Duration::from_secs(10);

/// The first IPv4 sink of the lab, a real egress destination.
fn sink() -> String {
    SINKS_V4[0].to_string()
}

/// A scenario with one target (the [`sink`]'s `port`, named `name`) and one check as
/// [`USER`].
fn scenario(name: &str, port: u16, expect: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\naddress = [\"{}\"]\nports = [{port}]\n\n\
         [[check]]\nas = [\"{USER}\"]\nexpect = \"{expect}\"\n",
        sink()
    )
}

/// A deny on the sink's closed port: the probe is refused, a passing deny.
fn closed(name: &str) -> String {
    scenario(name, CLOSED_PORT, "deny")
}

/// A counting listener on every sink of `lab`: a probe of [`COUNTING_PORT`] connects, and
/// [`connected`] tells whether one did.
fn listener(lab: &Lab) -> Mta {
    lab.internet_mta(COUNTING_PORT)
}

/// Whether anything connected to `listener` within `limit`.
fn connected(listener: &Mta, limit: Duration) -> bool {
    wait_for(limit, || listener.accepted() > 0)
}

/// The `--format json` document on stdout, for fields the shared parser does not read.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err})\n{}", describe(out)))
}

/// The targets of the report's probes, in report order; each probe must have observed
/// `observed` (the destination it meant to reach answered as planned).
fn targets_probed(out: &Output, observed: &str) -> Vec<String> {
    Report::parse(out)
        .probes
        .iter()
        .map(|p| {
            assert_eq!(p.observed, observed, "{p:#?}\n{}", describe(out));
            p.target.clone()
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_runs_its_toml_files_in_lexical_order() {
    let Some(lab) = Lab::up() else { return };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    // Byte order, not numeric: "10-" sorts before "9-".
    write("9-second.toml", &closed("second"));
    write("10-first.toml", &closed("first"));
    // None of these is a scenario; loading any of them would be exit 2.
    write("notes.txt", "not toml");
    write(".editor-swap.toml", "not toml");
    write("old.toml.dpkg-old", "not toml");
    std::fs::create_dir(dir.path().join("archive.toml")).unwrap();

    let out = lab.run(&["run", dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(targets_probed(&out, "refused"), ["first", "second"]);
}

/// Probes nothing (exit 2 before any probe), so it needs no lab.
#[test]
fn a_directory_without_scenarios_is_exit_2_naming_it_and_what_to_put_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), "scenarios go here").unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("{}: no scenario to run", dir.path().display())),
        "{message}"
    );
    assert!(message.contains("*.toml"), "{message}");
    assert!(out.stdout.is_empty());
}

#[test]
fn dash_reads_one_scenario_from_standard_input() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run_with_stdin(&["run", "-", "--format", "json"], &closed("piped"));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(targets_probed(&out, "refused"), ["piped"]);

    // Errors name standard input with line and column.
    let bad = format!(
        "[[target]]\nname = \"t\"\naddress = [\"{}\"]\nports = [0]\n\n\
         [[check]]\nas = [\"root\"]\nexpect = \"deny\"\n",
        sink()
    );
    let out = lab.run_with_stdin(&["run", "-"], &bad);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("<stdin>:4:10: port 0 is out of range"),
        "{}",
        stderr(&out)
    );

    // Standard input can be read once.
    let out = lab.run_with_stdin(&["run", "-", "-"], "");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("more than once"), "{}", stderr(&out));
}

/// Runs `egress-check run ARGS` in `lab`'s host namespace, in a private mount namespace whose
/// /etc is an overlay of the real one, after `setup` (shell commands) has prepared
/// /etc/egress-check there; the real /etc is never written to.
///
/// The overlay comes first, then `ip netns exec` (as [`Lab::run`] does): its mount namespace
/// is a copy of the private one, so the binary sees the overlay, and the lab's resolv.conf is
/// bound over the overlay's.
fn run_with_private_etc(lab: &Lab, setup: &str, args: &[&str]) -> Output {
    let layers = tempfile::tempdir().unwrap();
    for dir in ["upper", "work"] {
        std::fs::create_dir(layers.path().join(dir)).unwrap();
    }
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={0}/upper,workdir={0}/work /etc\n\
         rm -rf /etc/egress-check\n\
         {setup}\n\
         exec ip netns exec {1} \"$0\" run \"$@\"",
        layers.path().display(),
        lab.host_ns()
    );
    let out = Command::new("timeout")
        .args(["--kill-after=10", RUN_LIMIT_SECS])
        .args(["unshare", "--mount", "--propagation", "private"])
        .args(["sh", "-c", &script, BIN])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run timeout (coreutils) and unshare (util-linux)");
    let out = within_limit(out, args);
    let err = stderr(&out);
    assert!(
        !err.contains("mount:")
            && !err.contains("unshare:")
            && !err.contains("Cannot open network namespace")
            && !err.contains("setting the network namespace"),
        "could not set up the private /etc in the lab's host namespace: {err}"
    );
    out
}

#[test]
fn without_file_run_uses_etc_egress_check() {
    let Some(lab) = Lab::up() else { return };
    // No directory: exit 2, saying what to create.
    let out = run_with_private_etc(&lab, ":", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("/etc/egress-check does not exist"),
        "{}",
        stderr(&out)
    );

    // As the package installs it (a README, no scenario): exit 2 naming the directory.
    let out = run_with_private_etc(
        &lab,
        "mkdir /etc/egress-check; echo notes > /etc/egress-check/README",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("/etc/egress-check: no scenario to run"),
        "{}",
        stderr(&out)
    );

    // Scenarios: every *.toml, in lexical order.
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("b.toml"), closed("from-b")).unwrap();
    std::fs::write(source.path().join("a.toml"), closed("from-a")).unwrap();
    let setup = format!(
        "mkdir /etc/egress-check; cp {}/*.toml /etc/egress-check/",
        source.path().display()
    );
    let out = run_with_private_etc(&lab, &setup, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(targets_probed(&out, "refused"), ["from-a", "from-b"]);
}

#[test]
fn output_writes_every_report_and_the_exit_code_is_the_runs() {
    let Some(lab) = Lab::up() else { return };
    let listener = listener(&lab);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("leak.toml");
    // Expect deny to a port that accepts: a failed check, exit 1.
    std::fs::write(&file, scenario("open", COUNTING_PORT, "deny")).unwrap();
    let out_dir = work.path().join("reports");
    std::fs::create_dir(&out_dir).unwrap();
    let json_path = out_dir.join("last.json");
    std::fs::write(&json_path, "the previous report").unwrap();
    let (xml_path, txt_path) = (out_dir.join("last.xml"), out_dir.join("last.txt"));

    let (xml_output, txt_output) = (
        format!("junit={}", xml_path.display()),
        format!("human={}", txt_path.display()),
    );
    let args = [
        "run",
        file.to_str().unwrap(),
        "--format",
        "json",
        // No FORMAT=: --format's.
        "--output",
        json_path.to_str().unwrap(),
        "--output",
        &xml_output,
        "--output",
        &txt_output,
    ];
    // Without the NO_COLOR that `Lab::run` sets: the human file must be plain on its own.
    let mut cmd = lab.run_command(&args);
    cmd.env_remove("NO_COLOR");
    let out = within_limit(cmd.output().expect("run the binary"), &args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(connected(&listener, ARRIVAL), "{}", describe(&out));

    // The file holds exactly what stdout got.
    assert_eq!(std::fs::read(&json_path).unwrap(), out.stdout);
    assert_eq!(json(&out)["failed"], 1);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("the JUnit file is XML");
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        1,
        "{xml}"
    );
    let human = std::fs::read_to_string(&txt_path).unwrap();
    assert!(human.contains("FAIL"), "{human}");
    assert!(!human.contains('\u{1b}'), "no colour in a file: {human:?}");
    // Nothing else is left in the directory: no temporary file.
    assert_eq!(names_in(&out_dir), ["last.json", "last.txt", "last.xml"]);
}

#[test]
fn an_unusable_output_directory_is_exit_2_before_anything_is_probed() {
    let Some(lab) = Lab::up() else { return };
    let listener = listener(&lab);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("s.toml");
    std::fs::write(&file, scenario("open", COUNTING_PORT, "allow")).unwrap();
    let missing = work.path().join("missing").join("last.json");
    for (output, message) in [
        (
            format!("json={}", missing.display()),
            format!("{} does not exist", missing.parent().unwrap().display()),
        ),
        // Not writable even for root.
        (
            "/proc/egress-check-last.json".to_string(),
            "cannot create a file in /proc".to_string(),
        ),
        (
            format!("json={}", work.path().display()),
            "is a directory".to_string(),
        ),
        (
            "jsn=last.json".to_string(),
            "unknown report format `jsn`".to_string(),
        ),
    ] {
        let out = lab.run(&["run", file.to_str().unwrap(), "--output", &output]);
        assert_eq!(out.status.code(), Some(2), "{output}: {}", describe(&out));
        assert!(
            stderr(&out).contains(&message),
            "{output}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{output}: nothing was run");
        assert!(
            !connected(&listener, SETTLE),
            "{output}: a probe ran although the output was unusable"
        );
    }
    assert_eq!(names_in(work.path()), ["s.toml"]);

    // The listener does see this scenario's probe when the run goes ahead: the checks above
    // are not vacuous.
    let out = lab.run(&["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(connected(&listener, ARRIVAL), "{}", describe(&out));
}

/// Packets counted by rule 1 of the host namespace's OUTPUT chain (iptables): the DROP rule
/// of [`an_interrupted_run_replaces_no_output_file`].
fn dropped_packets(lab: &Lab) -> u64 {
    let out = lab.exec("iptables", &["-w", "-n", "-v", "-x", "-L", "OUTPUT", "1"]);
    // `-L CHAIN N` prints just that rule: "pkts bytes target prot ...".
    let text = stdout(&out);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("iptables -L OUTPUT 1: unexpected output {text:?}"))
}

/// SIGTERM and SIGINT while a probe is in flight: the run's exit code is the signal's, and
/// the previous report stays in place, with no temporary file beside it.
#[test]
fn an_interrupted_run_replaces_no_output_file() {
    let Some(lab) = Lab::up() else { return };
    // The sink's port 25 hangs (DROP), and the probe waits for it far longer than the test
    // does: the run is in flight until signalled.
    let sink = sink();
    lab.iptables(&[
        "-I", "OUTPUT", "1", "-p", "tcp", "-d", &sink, "--dport", "25", "-j", "DROP",
    ]);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("s.toml");
    std::fs::write(
        &file,
        format!("timeout = \"60s\"\n\n{}", scenario("hanging", 25, "deny")),
    )
    .unwrap();
    let out_dir = work.path().join("reports");
    std::fs::create_dir(&out_dir).unwrap();
    let report = out_dir.join("last.json");

    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        std::fs::write(&report, "the previous report").unwrap();
        // Count this run's SYNs only.
        lab.iptables(&["-w", "-Z", "OUTPUT"]);
        // No wrapper: `ip netns exec` execs the binary, so this pid is egress-check's.
        let running = Running::spawn(
            Command::new("ip")
                .args(["netns", "exec", &lab.host_ns(), BIN])
                .args(["run", file.to_str().unwrap(), "--format", "json"])
                .arg("--output")
                .arg(format!("json={}", report.display()))
                .env("NO_COLOR", "1"),
        );
        // Its first SYN dropped means the run is probing, its signal handlers set.
        if !wait_for(Duration::from_secs(20), || dropped_packets(&lab) > 0) {
            let out = running.wait(Duration::ZERO);
            panic!(
                "{signal}: no SYN to {sink}:25 within 20 s\n{}",
                describe(out.as_ref().unwrap_or_else(|o| o))
            );
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(running.pid() as i32), signal)
            .expect("signal the run");
        let out = running
            .wait(Duration::from_secs(20))
            .unwrap_or_else(|out| panic!("{signal}: no exit within 20 s\n{}", describe(&out)));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{signal}: {}",
            describe(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&report).unwrap(),
            "the previous report",
            "{signal}"
        );
        assert_eq!(names_in(&out_dir), ["last.json"], "{signal}");
        // The partial report still goes where it went before --output existed.
        assert!(!json(&out)["interrupted"].is_null(), "{signal}");
    }
}

/// The example the Debian package ships for /etc/egress-check/ must be a valid scenario
/// that checks only users every Debian system has.
#[test]
fn the_packaged_example_scenario_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/examples/mail-egress.toml");
    let example = egress_check::scenario::load(&path).expect("the example is valid");
    let users: Vec<&str> = example
        .checks
        .iter()
        .flat_map(|c| c.users.iter().map(|u| u.name.as_str()))
        .collect();
    assert_eq!(users, ["www-data", "nobody"]);
}
