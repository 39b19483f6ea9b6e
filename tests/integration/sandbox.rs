//! `egress-check sandbox` and `--netns`: rulesets proven in throwaway namespaces, and
//! nothing left behind afterwards, also after SIGINT in the middle of a run.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::fixtures::scenario;
use crate::util::lab::Lab;
use crate::util::leftovers;
use crate::util::process::{code, describe, stderr, stdout};
use crate::util::report::Report;
use crate::util::users::binary_for_other_users;
use crate::util::BIN;

/// The story's policy with a short timeout; the users are those `ci/lab` creates.
const STORY: &str = r#"
timeout = "1s"

[[target]]
name = "gmail"
mx = "gmail.com"

[[target]]
name = "outlook"
mx = "outlook.com"
ports = [25, 587]

[[check]]
as = ["ec-postfix"]
expect = "allow"

[[check]]
as = ["www-data"]
expect = "deny"
"#;

const IPV4_ONLY: &str = "*filter\n\
:OUTPUT ACCEPT [0:0]\n\
-A OUTPUT -p tcp -m multiport --dports 25,587 -m owner --uid-owner ec-postfix -j ACCEPT\n\
-A OUTPUT -p tcp -m multiport --dports 25,587 -j DROP\n\
COMMIT\n";

const NFT_INET: &str = "table inet egress {\n\
  chain output {\n\
    type filter hook output priority filter; policy accept;\n\
    tcp dport { 25, 587 } meta skuid \"ec-postfix\" accept\n\
    tcp dport { 25, 587 } reject with tcp reset\n\
  }\n\
}\n";

/// Users, scenario and rule files in a temp dir; users are created by bringing a lab up once.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        // `ci/lab up` creates the test users; the lab itself is not needed.
        let _lab = Lab::up()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let fixture = Fixture { dir };
        fixture.write("story.toml", STORY);
        fixture.write("v4.rules", IPV4_ONLY);
        fixture.write("inet.nft", NFT_INET);
        Some(fixture)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write fixture file");
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Runs `egress-check ARGS`, then checks that it left nothing behind.
fn sandbox(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for egress-check");
    let left = leftovers::of_sandbox(pid);
    assert!(
        left.is_empty(),
        "left behind: {left:#?}\n{}",
        describe(&out)
    );
    out
}

fn json_report(args: &[&str]) -> (Output, Report) {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let out = sandbox(&args);
    let report = Report::parse(&out);
    (out, report)
}

#[test]
fn ipv4_only_rules_leak_over_ipv6_and_the_fixes_hold() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");

    let (out, report) = json_report(&["sandbox", &story, "--iptables", &f.path("v4.rules")]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    for p in report.of("www-data", "ipv6") {
        assert_eq!(
            (p.observed.as_str(), p.verdict.as_str()),
            ("connected", "fail"),
            "{p:?}"
        );
    }
    for p in report.of("www-data", "ipv4") {
        assert_eq!(
            (p.observed.as_str(), p.verdict.as_str()),
            ("timeout", "pass"),
            "{p:?}"
        );
        assert_eq!(
            p.witnessed,
            Some(true),
            "ec-postfix connected to the same sink: {p:?}"
        );
    }
    for p in report.of_user("ec-postfix") {
        assert_eq!(p.observed, "connected", "{p:?}");
    }
    // 2 users x (gmail: 1 port + outlook: 2 ports) x 2 families.
    assert_eq!(report.probes.len(), 12, "{}", describe(&out));

    let v6 = f.write("v6.rules", IPV4_ONLY);
    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--iptables",
        &f.path("v4.rules"),
        "--ip6tables",
        &v6,
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(report.passed, 12);

    let (out, report) = json_report(&["sandbox", &story, "--nft", &f.path("inet.nft")]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    for p in report.of_user("www-data") {
        assert_eq!(p.observed, "refused", "reject with tcp reset: {p:?}");
    }
}

#[test]
fn setup_scripts_run_in_the_host_namespace() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");
    let script = |name: &str, body: &str| {
        let path = f.write(name, &format!("#!/bin/sh\nset -e\n{body}\n"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path
    };
    let both = script(
        "both.sh",
        "for t in iptables ip6tables; do\n\
         $t -A OUTPUT -p tcp -m multiport --dports 25,587 -m owner --uid-owner ec-postfix -j ACCEPT\n\
         $t -A OUTPUT -p tcp -m multiport --dports 25,587 -j DROP\n\
         done",
    );
    let out = sandbox(&["sandbox", &story, "--setup", &both]);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let v4 = script(
        "v4.sh",
        "iptables -A OUTPUT -p tcp -m owner --uid-owner www-data -j REJECT --reject-with tcp-reset",
    );
    let out = sandbox(&["sandbox", &story, "--setup", &v4]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(stdout(&out).contains("LEAK: www-data reaches mx.gmail.com port 25 over IPv6"));

    let failing = script("fail.sh", "echo 'ufw: cannot parse line 7' >&2\nexit 3");
    let out = sandbox(&["sandbox", &story, "--setup", &failing]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("ufw: cannot parse line 7"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_broken_ruleset_is_exit_2_with_the_loaders_message() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");
    let bad = f.write(
        "bad.rules",
        "*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp --dport 25 -j DORP\nCOMMIT\n",
    );
    let out = sandbox(&["sandbox", &story, "--iptables", &bad]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    // The loader's own words, with its line (iptables-nft reports at the COMMIT line).
    assert!(
        err.contains("DORP") && err.contains("Error occurred at line"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).is_empty(), "nothing was probed");

    let bad_nft = f.write(
        "bad.nft",
        "table inet x {\n chain c {\n  tcp dport 25 dorp\n }\n}\n",
    );
    let out = sandbox(&["sandbox", &story, "--nft", &bad_nft]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains(":3:"),
        "nft names the line: {}",
        describe(&out)
    );
}

#[test]
fn untested_families_are_inconclusive_never_pass() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");
    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--iptables",
        &f.path("v4.rules"),
        "--no-aaaa",
    ]);
    // IPv4 holds, IPv6 was never tested: that is exit 3, not 0.
    assert_eq!(code(&out), 3, "{}", describe(&out));
    for p in report.probes.iter().filter(|p| p.family == "ipv6") {
        assert_eq!(
            (p.observed.as_str(), p.verdict.as_str()),
            ("no-address", "inconclusive")
        );
        assert!(
            p.detail.as_deref().unwrap_or("").contains("no AAAA record"),
            "{p:?}"
        );
    }
}

#[test]
fn two_sandboxes_at_once_both_answer_correctly() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");
    let v4 = f.path("v4.rules");
    let nft = f.path("inet.nft");
    let leaky = std::thread::spawn({
        let (story, v4) = (story.clone(), v4.clone());
        move || sandbox(&["sandbox", &story, "--iptables", &v4])
    });
    let fixed = std::thread::spawn(move || sandbox(&["sandbox", &story, "--nft", &nft]));
    let leaky = leaky.join().expect("leaky sandbox thread");
    let fixed = fixed.join().expect("fixed sandbox thread");
    assert_eq!(code(&leaky), 1, "{}", describe(&leaky));
    assert_eq!(code(&fixed), 0, "{}", describe(&fixed));
}

#[test]
fn sigint_mid_run_tears_everything_down() {
    let Some(f) = Fixture::new() else { return };
    let slow = f.write(
        "slow.toml",
        &STORY.replace("timeout = \"1s\"", "timeout = \"30s\""),
    );
    let child: Child = Command::new(BIN)
        .args(["sandbox", &slow, "--iptables", &f.path("v4.rules")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check");
    let pid = child.id();
    // Wait until the run is under way: its workers exist.
    let start = Instant::now();
    while !leftovers::of_sandbox(pid)
        .iter()
        .any(|l| l.contains("__probe-as"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no worker appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("send SIGINT");
    let out = child.wait_with_output().expect("wait");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "SIGINT was not acted on"
    );
    assert_eq!(code(&out), 130, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("INTERRUPTED"), "{}", describe(&out));
    // ec-postfix's connections finished before the signal and are reported.
    assert!(
        err.contains("ec-postfix") && err.contains("connected"),
        "{}",
        describe(&out)
    );
    let left = leftovers::of_sandbox(pid);
    assert!(left.is_empty(), "left behind after SIGINT: {left:#?}");
}

#[test]
fn junit_counts_match_the_json_report() {
    let Some(f) = Fixture::new() else { return };
    let story = f.path("story.toml");
    let args = [
        "sandbox",
        story.as_str(),
        "--iptables",
        &f.path("v4.rules"),
        "--no-a",
    ];
    let (_, json) = json_report(&args);
    let mut junit_args = args.to_vec();
    junit_args.extend(["--format", "junit"]);
    let out = sandbox(&junit_args);
    let xml = String::from_utf8(out.stdout.clone()).expect("UTF-8");
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let count = |attr: &str| root.attribute(attr).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count("tests"), Some(json.probes.len() as u64), "{xml}");
    assert_eq!(count("failures"), Some(json.failed), "{xml}");
    assert_eq!(count("errors"), Some(json.inconclusive), "{xml}");
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(cases, json.probes.len());
    assert!(
        json.failed > 0 && json.inconclusive > 0,
        "both kinds are exercised"
    );
}

#[test]
fn netns_option_matches_ip_netns_exec() {
    let Some(lab) = Lab::up() else { return };
    lab.iptables(&[
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        "25",
        "-m",
        "owner",
        "--uid-owner",
        "ec-postfix",
        "-j",
        "ACCEPT",
    ]);
    lab.iptables(&["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "DROP"]);
    let scenario = scenario(
        "timeout = \"1s\"\n[[target]]\nname = \"dual\"\nmx = \"dual.test\"\n\
         [[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n\
         [[check]]\nas = [\"www-data\"]\nexpect = \"deny\"\n",
    );
    let via_exec = lab.run(&["run", scenario.path(), "--format", "json"]);
    let via_option = Command::new(BIN)
        .args([
            "run",
            scenario.path(),
            "--format",
            "json",
            "--netns",
            &lab.host_ns(),
        ])
        .output()
        .expect("run with --netns");
    assert_eq!(code(&via_exec), 1, "{}", describe(&via_exec));
    assert_eq!(code(&via_option), 1, "{}", describe(&via_option));
    let verdicts = |out: &Output| {
        let mut v: Vec<(String, String, String, String, String)> = Report::parse(out)
            .probes
            .into_iter()
            .map(|p| {
                (
                    p.user,
                    p.address.unwrap_or_default(),
                    p.family,
                    p.observed,
                    p.verdict,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(verdicts(&via_exec), verdicts(&via_option));

    let missing = Command::new(BIN)
        .args(["run", scenario.path(), "--netns", "ec-no-such-namespace"])
        .output()
        .expect("run");
    assert_eq!(code(&missing), 2);
    assert!(stderr(&missing).contains("`ec-no-such-namespace` not found"));
}

#[test]
fn sandbox_without_root_is_exit_2_saying_so() {
    let Some(f) = Fixture::new() else { return };
    let own = f.write(
        "own.toml",
        "[[target]]\nname = \"t\"\nmx = \"gmail.com\"\n[[check]]\nas = [\"www-data\"]\nexpect = \"deny\"\n",
    );
    // The fixture's temp dir is root's; let www-data read the scenario.
    for path in [
        f.dir.path().display().to_string(),
        own.clone(),
        f.path("story.toml"),
    ] {
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // A copy www-data can execute wherever the checkout is.
    let shared = binary_for_other_users();
    let as_www_data = |scenario: &str| {
        Command::new("runuser")
            .args(["-u", "www-data", "--"])
            .arg(shared.path())
            .args(["sandbox", scenario])
            .stdin(Stdio::null())
            .output()
            .expect("runuser")
    };
    // Probing as yourself needs no root, but the sandbox does.
    let out = as_www_data(&own);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("must run as root"),
        "{}",
        describe(&out)
    );
    // Another user's checks are refused before anything is built.
    let out = as_www_data(&f.path("story.toml"));
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("needs root"), "{}", describe(&out));
    assert!(stdout(&out).is_empty());
}
