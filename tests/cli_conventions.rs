//! The conventions of `egress-check run` that scripts and `egress-check.service` rely on:
//! where scenarios come from (files, a directory's `*.toml` in lexical order, `-` for
//! standard input, /etc/egress-check without FILE) and `--output [FORMAT=]FILE`.
//!
//! The real binary runs and probes 127.0.0.1 only, as the user running the tests, so most
//! of these need neither root nor a network. The test of the /etc/egress-check default
//! needs root, to put a scenario there in a private mount namespace without touching the
//! host's /etc: without root it fails, unless `EGRESS_CHECK_SKIP_NETNS=1` skips it knowingly
//! (refused when `CI=true`).

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_egress-check");

/// The login name of the user running the tests: probing as yourself needs no privileges.
fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .expect("passwd lookup")
        .expect("the test user has a passwd entry")
        .name
}

/// A scenario with one target (127.0.0.1:`port`, named `name`) and one check as [`me`].
fn scenario(name: &str, port: u16, expect: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\naddress = [\"127.0.0.1\"]\nports = [{port}]\n\n\
         [[check]]\nas = [\"{}\"]\nexpect = \"{expect}\"\n",
        me()
    )
}

/// A local TCP port that accepts connections (they wait in the backlog), so that a probe
/// observes `connected`, and that can tell whether anything connected.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        listener.set_nonblocking(true).expect("non-blocking");
        Listener(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("local address").port()
    }

    fn was_connected(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(err) if err.kind() == ErrorKind::WouldBlock => false,
            Err(err) => panic!("accept: {err}"),
        }
    }
}

/// A local port nothing listens on: a probe observes `refused`, a passing deny.
fn closed_port() -> u16 {
    Listener::new().port()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn targets_probed(report: &Value) -> Vec<String> {
    report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["target"].as_str().expect("target").to_string())
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
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    // Byte order, not numeric: "10-" sorts before "9-".
    write("9-second.toml", &scenario("second", closed_port(), "deny"));
    write("10-first.toml", &scenario("first", closed_port(), "deny"));
    // None of these is a scenario; loading any of them would be exit 2.
    write("notes.txt", "not toml");
    write(".editor-swap.toml", "not toml");
    write("old.toml.dpkg-old", "not toml");
    std::fs::create_dir(dir.path().join("archive.toml")).unwrap();

    let out = run(&[dir.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(targets_probed(&json(&out)), ["first", "second"]);
}

#[test]
fn a_directory_without_scenarios_is_exit_2_naming_it_and_what_to_put_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), "scenarios go here").unwrap();
    let out = run(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
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
    let run_stdin = |args: &[&str], text: &str| {
        let mut child = Command::new(BIN)
            .arg("run")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // A scenario that is refused may be refused before all of it is read.
        let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
        child.wait_with_output().expect("wait")
    };

    let out = run_stdin(
        &["-", "--format", "json"],
        &scenario("piped", closed_port(), "deny"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(targets_probed(&json(&out)), ["piped"]);

    // Errors name standard input with line and column.
    let bad = "[[target]]\nname = \"t\"\naddress = [\"127.0.0.1\"]\nports = [0]\n\n\
               [[check]]\nas = [\"root\"]\nexpect = \"deny\"\n";
    let out = run_stdin(&["-"], bad);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("<stdin>:4:10: port 0 is out of range"),
        "{}",
        stderr(&out)
    );

    // Standard input can be read once.
    let out = run_stdin(&["-", "-"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("more than once"), "{}", stderr(&out));
}

/// Whether this test may run: root, or a knowing skip outside CI.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    let skip = std::env::var("EGRESS_CHECK_SKIP_NETNS").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if skip && !ci {
        eprintln!("{test}: SKIPPED (EGRESS_CHECK_SKIP_NETNS=1): needs root for a mount namespace");
        return false;
    }
    panic!(
        "{test} needs root (a private mount namespace over /etc); run the tests as root \
         (to skip it knowingly outside CI, set EGRESS_CHECK_SKIP_NETNS=1)"
    );
}

/// Runs `egress-check run ARGS` in a private mount namespace whose /etc is an overlay of
/// the real one, after `setup` (shell commands) has prepared /etc/egress-check there; the
/// real /etc is never written to.
fn run_with_private_etc(setup: &str, args: &[&str]) -> Output {
    let layers = tempfile::tempdir().unwrap();
    for dir in ["upper", "work"] {
        std::fs::create_dir(layers.path().join(dir)).unwrap();
    }
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={0}/upper,workdir={0}/work /etc\n\
         rm -rf /etc/egress-check\n\
         {setup}\n\
         exec \"$0\" run \"$@\"",
        layers.path().display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            BIN,
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        !stderr(&out).contains("mount:") && !stderr(&out).contains("unshare:"),
        "could not set up the private /etc: {}",
        stderr(&out)
    );
    out
}

#[test]
fn without_file_run_uses_etc_egress_check() {
    if !root_or_skip("without_file_run_uses_etc_egress_check") {
        return;
    }
    // No directory: exit 2, saying what to create.
    let out = run_with_private_etc(":", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/etc/egress-check does not exist"),
        "{}",
        stderr(&out)
    );

    // As the package installs it (a README, no scenario): exit 2 naming the directory.
    let out = run_with_private_etc(
        "mkdir /etc/egress-check; echo notes > /etc/egress-check/README",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/etc/egress-check: no scenario to run"),
        "{}",
        stderr(&out)
    );

    // Scenarios: every *.toml, in lexical order.
    let source = tempfile::tempdir().unwrap();
    std::fs::write(
        source.path().join("b.toml"),
        scenario("from-b", closed_port(), "deny"),
    )
    .unwrap();
    std::fs::write(
        source.path().join("a.toml"),
        scenario("from-a", closed_port(), "deny"),
    )
    .unwrap();
    let setup = format!(
        "mkdir /etc/egress-check; cp {}/*.toml /etc/egress-check/",
        source.path().display()
    );
    let out = run_with_private_etc(&setup, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(targets_probed(&json(&out)), ["from-a", "from-b"]);
}

#[test]
fn output_writes_every_report_and_the_exit_code_is_the_runs() {
    let listener = Listener::new();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("leak.toml");
    // Expect deny to a port that accepts: a failed check, exit 1.
    std::fs::write(&file, scenario("open", listener.port(), "deny")).unwrap();
    let out_dir = work.path().join("reports");
    std::fs::create_dir(&out_dir).unwrap();
    let json_path = out_dir.join("last.json");
    std::fs::write(&json_path, "the previous report").unwrap();
    let (xml_path, txt_path) = (out_dir.join("last.xml"), out_dir.join("last.txt"));

    let out = run(&[
        file.to_str().unwrap(),
        "--format",
        "json",
        // No FORMAT=: --format's.
        "--output",
        json_path.to_str().unwrap(),
        "--output",
        &format!("junit={}", xml_path.display()),
        "--output",
        &format!("human={}", txt_path.display()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(listener.was_connected());

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
    let listener = Listener::new();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("s.toml");
    std::fs::write(&file, scenario("open", listener.port(), "allow")).unwrap();
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
        let out = run(&[file.to_str().unwrap(), "--output", &output]);
        assert_eq!(out.status.code(), Some(2), "{output}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&message),
            "{output}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{output}: nothing was run");
        assert!(
            !listener.was_connected(),
            "{output}: a probe ran although the output was unusable"
        );
    }
    assert_eq!(names_in(work.path()), ["s.toml"]);
}

#[test]
fn an_interrupted_run_replaces_no_output_file() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("s.toml");
    let out_dir = work.path().join("reports");
    std::fs::create_dir(&out_dir).unwrap();
    let report = out_dir.join("last.json");

    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        // A nameserver that never answers keeps the run in DNS resolution until signalled;
        // a new one each time, so that no query of the previous run is mistaken for this
        // run's.
        let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
        dns.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        std::fs::write(
            &file,
            format!(
                "nameserver = \"{}\"\n\n[[target]]\nname = \"mail\"\nmx = \"blackhole.test\"\n\n\
                 [[check]]\nas = [\"{}\"]\nexpect = \"deny\"\n",
                dns.local_addr().unwrap(),
                me()
            ),
        )
        .unwrap();
        std::fs::write(&report, "the previous report").unwrap();
        let mut child = Command::new(BIN)
            .args([
                "run",
                file.to_str().unwrap(),
                "--format",
                "json",
                "--output",
            ])
            .arg(format!("json={}", report.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Its first query arriving means the run is resolving, its signal handlers set.
        let mut buf = [0u8; 512];
        if let Err(err) = dns.recv_from(&mut buf) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no DNS query within 20 s ({err}): {}", stderr(&out));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .expect("signal the run");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{signal}: the run did not end within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
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
