//! `egress-check sandbox` and `--netns`: rulesets proven in throwaway namespaces, and
//! nothing left behind afterwards, also after SIGINT in the middle of a run.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::fixtures::{fixture, shipped};
use crate::util::lab::{ensure_lab_users, Lab, STORY, STORY_RULES};
use crate::util::leftovers;
use crate::util::process::{code, describe, stderr, stdout, words};
use crate::util::report::Report;
use crate::util::users::{binary_for_other_users, ensure_story_users};
use crate::util::BIN;

/// The lab's users and the story's (`postfix`, `www-data`), and a temporary directory for
/// the files a test writes (setup scripts, broken rulesets).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        // The sandbox builds its own namespaces: it needs the lab's tools and users, not a lab.
        if !ensure_lab_users() {
            return None;
        }
        ensure_story_users();
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Fixture { dir })
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write fixture file");
        path.display().to_string()
    }
}

/// Starts `egress-check ARGS` with its output piped, for [`Child::wait_with_output`].
fn start(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check")
}

/// Runs `egress-check ARGS`, then checks that it left nothing behind.
fn sandbox(args: &[&str]) -> Output {
    let child = start(args);
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

/// Runs `egress-check ARGS --format json` as [`sandbox`] does, and parses the report.
fn json_report(args: &[&str]) -> (Output, Report) {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let out = sandbox(&args);
    let report = Report::parse(&out);
    (out, report)
}

/// Asserts that a sandboxed story leaks over IPv6: exit 1, `probes` probes in all, www-data's
/// IPv6 probes connect (a fail), its IPv4 probes time out (a pass) and are witnessed, and
/// every probe of `mta`, the user that may send mail (and so witnesses), connects.
#[track_caller]
fn assert_leaks_over_ipv6(out: &Output, report: &Report, mta: &str, probes: usize) {
    assert_eq!(code(out), 1, "{}", describe(out));
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
            "{mta} connected to the same sink: {p:?}"
        );
    }
    for p in report.of_user(mta) {
        assert_eq!(p.observed, "connected", "{p:?}");
    }
    assert_eq!(report.probes.len(), probes, "{}", describe(out));
}

/// Asserts that a sandboxed ruleset held: exit 0, with `probes` passing probes.
#[track_caller]
fn assert_holds(out: &Output, report: &Report, probes: u64) {
    assert_eq!(code(out), 0, "{}", describe(out));
    assert_eq!(report.passed, probes, "{}", describe(out));
}

/// The story as shipped and as `ci/demo` shows it: `scenarios/story.toml` in a sandbox with
/// the admin's IPv4-only ruleset leaks over IPv6; with `story-ipv6.rules` as well, or with
/// `story-fixed.nft` alone, every expectation holds.
#[test]
fn ipv4_only_rules_leak_over_ipv6_and_the_fixes_hold() {
    let Some(_f) = Fixture::new() else { return };
    let story = shipped("story.toml");
    let v4 = shipped("story-ipv4-only.rules");

    let (out, report) = json_report(&["sandbox", &story, "--timeout", "1s", "--iptables", &v4]);
    // 2 users x 2 targets (gmail, outlook; port 25) x 2 families.
    assert_leaks_over_ipv6(&out, &report, "postfix", 8);

    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--timeout",
        "1s",
        "--iptables",
        &v4,
        "--ip6tables",
        &shipped("story-ipv6.rules"),
    ]);
    assert_holds(&out, &report, 8);

    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--timeout",
        "1s",
        "--nft",
        &shipped("story-fixed.nft"),
    ]);
    assert_holds(&out, &report, 8);
    for p in report.of_user("www-data") {
        assert_eq!(
            (p.observed.as_str(), p.witnessed),
            ("timeout", Some(true)),
            "dropped, and postfix connected to the same sink: {p:?}"
        );
    }
}

/// The story with the submission port (`tests/fixtures/sandbox/submission.*`): the sinks
/// answer on every port the scenario names (25 and 587), multiport rules for IPv4 alone leak
/// over IPv6, the same rules for both families hold, and an nftables reject with a TCP reset
/// is observed as `refused`.
#[test]
fn submission_port_is_served_and_an_nft_reject_is_refused() {
    let Some(_f) = Fixture::new() else { return };
    let story = fixture("sandbox/submission.toml");
    let rules = fixture("sandbox/submission.rules");

    let (out, report) = json_report(&["sandbox", &story, "--iptables", &rules]);
    // 2 users x (gmail: 1 port + outlook: 2 ports) x 2 families.
    assert_leaks_over_ipv6(&out, &report, "ec-postfix", 12);

    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--iptables",
        &rules,
        "--ip6tables",
        &rules,
    ]);
    assert_holds(&out, &report, 12);

    let (out, report) = json_report(&[
        "sandbox",
        &story,
        "--nft",
        &fixture("sandbox/submission-reject.nft"),
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    for p in report.of_user("www-data") {
        assert_eq!(p.observed, "refused", "reject with tcp reset: {p:?}");
    }
}

#[test]
fn setup_scripts_run_in_the_host_namespace() {
    let Some(f) = Fixture::new() else { return };
    let story = shipped("story.toml");
    let script = |name: &str, body: &str| {
        let path = f.write(name, &format!("#!/bin/sh\nset -e\n{body}\n"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path
    };
    let both = script(
        "both.sh",
        "for t in iptables ip6tables; do\n\
         $t -A OUTPUT -p tcp --dport 25 -m owner --uid-owner postfix -j ACCEPT\n\
         $t -A OUTPUT -p tcp --dport 25 -j DROP\n\
         done",
    );
    let out = sandbox(&["sandbox", &story, "--timeout", "1s", "--setup", &both]);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let v4 = script(
        "v4.sh",
        "iptables -A OUTPUT -p tcp -m owner --uid-owner www-data -j REJECT --reject-with tcp-reset",
    );
    let out = sandbox(&["sandbox", &story, "--timeout", "1s", "--setup", &v4]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(stdout(&out).contains("LEAK: www-data reaches mx.gmail.com port 25 over IPv6"));

    let failing = script("fail.sh", "echo 'ufw: cannot parse line 7' >&2\nexit 3");
    let out = sandbox(&["sandbox", &story, "--timeout", "1s", "--setup", &failing]);
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
    let story = shipped("story.toml");
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
    let Some(_f) = Fixture::new() else { return };
    let (out, report) = json_report(&[
        "sandbox",
        &shipped("story.toml"),
        "--timeout",
        "1s",
        "--iptables",
        &shipped("story-ipv4-only.rules"),
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
    let Some(_f) = Fixture::new() else { return };
    let story = shipped("story.toml");
    let v4 = shipped("story-ipv4-only.rules");
    let nft = shipped("story-fixed.nft");
    let leaky = std::thread::spawn({
        let (story, v4) = (story.clone(), v4.clone());
        move || sandbox(&["sandbox", &story, "--timeout", "1s", "--iptables", &v4])
    });
    let fixed =
        std::thread::spawn(move || sandbox(&["sandbox", &story, "--timeout", "1s", "--nft", &nft]));
    let leaky = leaky.join().expect("leaky sandbox thread");
    let fixed = fixed.join().expect("fixed sandbox thread");
    assert_eq!(code(&leaky), 1, "{}", describe(&leaky));
    assert_eq!(code(&fixed), 0, "{}", describe(&fixed));
}

#[test]
fn sigint_mid_run_tears_everything_down() {
    let Some(_f) = Fixture::new() else { return };
    // www-data's IPv4 probes are dropped: they hang for 30 s, long enough to be interrupted.
    let child = start(&[
        "sandbox",
        &shipped("story.toml"),
        "--timeout",
        "30s",
        "--iptables",
        &shipped("story-ipv4-only.rules"),
    ]);
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
    // postfix's connections finished before the signal and are reported.
    assert!(
        err.contains("postfix") && err.contains("connected"),
        "{}",
        describe(&out)
    );
    let left = leftovers::of_sandbox(pid);
    assert!(left.is_empty(), "left behind after SIGINT: {left:#?}");
}

#[test]
fn junit_counts_match_the_json_report() {
    let Some(_f) = Fixture::new() else { return };
    let story = shipped("story.toml");
    let v4 = shipped("story-ipv4-only.rules");
    let args = [
        "sandbox",
        story.as_str(),
        "--timeout",
        "1s",
        "--iptables",
        &v4,
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
    // One case per thing checked (user, target, exchange, family, port, expectation), the
    // worst verdict of its addresses.
    let mut cases: std::collections::BTreeMap<_, &str> = std::collections::BTreeMap::new();
    for p in &json.probes {
        let key = (
            p.user.clone(),
            p.target.clone(),
            p.exchange.clone().unwrap_or_else(|| p.target.clone()),
            p.family.clone(),
            p.port,
            p.expect.clone(),
        );
        let worst = cases.entry(key).or_insert("pass");
        let rank = |v: &str| {
            ["fail", "inconclusive", "pass"]
                .iter()
                .position(|w| *w == v)
        };
        if rank(&p.verdict) < rank(worst) {
            *worst = if p.verdict == "fail" {
                "fail"
            } else {
                "inconclusive"
            };
        }
    }
    let with = |v: &str| cases.values().filter(|w| **w == v).count() as u64;
    let count = |attr: &str| root.attribute(attr).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count("tests"), Some(cases.len() as u64), "{xml}");
    assert_eq!(count("failures"), Some(with("fail")), "{xml}");
    assert_eq!(count("errors"), Some(with("inconclusive")), "{xml}");
    let testcases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(testcases, cases.len());
    assert!(
        json.failed > 0 && json.inconclusive > 0,
        "both kinds are exercised"
    );
}

#[test]
fn netns_option_matches_ip_netns_exec() {
    let Some(lab) = Lab::up() else { return };
    for rule in STORY_RULES {
        lab.iptables(&words(rule));
    }
    let story = fixture(STORY);
    let via_exec = lab.run(&["run", &story, "--format", "json"]);
    let via_option = Command::new(BIN)
        .args(["run", &story, "--format", "json", "--netns", &lab.host_ns()])
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
        .args(["run", &story, "--netns", "ec-no-such-namespace"])
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
    // www-data may not be able to read the checkout (a private directory): it gets a copy
    // of the shipped story in the fixture's directory.
    let story = f.write(
        "story.toml",
        &std::fs::read_to_string(shipped("story.toml")).expect("read scenarios/story.toml"),
    );
    // The fixture's temp dir is root's; let www-data read the scenarios.
    for path in [
        f.dir.path().display().to_string(),
        own.clone(),
        story.clone(),
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
        stderr(&out).contains("sandbox needs root"),
        "{}",
        describe(&out)
    );
    // Another user's checks are refused before anything is built.
    let out = as_www_data(&story);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("needs root"), "{}", describe(&out));
    assert!(stdout(&out).is_empty());
}

/// The allowlist of issue 14, proven in the sandbox before it ships: www-data may reach
/// ports 80 and 443 over IPv4 and nothing else (dropped); IPv6 is not filtered at all. The
/// simulated internet answers on every port of its sinks (one transparent listener per
/// family), so a sweep of all 65,535 ports over both families reports exactly three ranges.
#[test]
fn an_allowlist_sweep_in_the_sandbox_reports_exact_ranges() {
    let Some(f) = Fixture::new() else { return };
    let scenario = f.write(
        "sweep.toml",
        "timeout = \"1s\"\n\
         [[target]]\nname = \"web\"\nhost = \"www.example.com\"\nports = [\"1-65535\"]\n\
         [[check]]\nas = [\"www-data\"]\nexpect = \"deny\"\n",
    );
    let rules = f.write(
        "allowlist.nft",
        "table inet allowlist {\n chain output {\n  type filter hook output priority filter;\n\
         \x20 meta skuid \"www-data\" meta nfproto ipv4 tcp dport { 80, 443 } accept\n\
         \x20 meta skuid \"www-data\" meta nfproto ipv4 meta l4proto tcp drop\n }\n}\n",
    );
    let started = Instant::now();
    let out = sandbox(&[
        "sandbox",
        &scenario,
        "--nft",
        &rules,
        "--format",
        "json-compact",
    ]);
    let wall = started.elapsed();
    assert_eq!(code(&out), 1, "{}", describe(&out));
    // Explanations are the sandbox's default only up to a size, and their absence is said.
    assert!(
        stderr(&out).contains("no explanations for this run: 131070 probes, more than the 4096"),
        "{}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("decided_by"),
        "{}",
        describe(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e})\n{}", describe(&out)));
    let ranges: std::collections::BTreeSet<(String, String, String, String, u64)> = doc
        ["probe_ranges"]
        .as_array()
        .expect("probe_ranges")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            let probes = r["probes"].as_u64().expect("probes");
            (
                s("verdict"),
                s("address"),
                s("observed"),
                s("ports"),
                probes,
            )
        })
        .collect();
    let row =
        |v: &str, a: &str, o: &str, p: &str, n: u64| (v.into(), a.into(), o.into(), p.into(), n);
    let expected = [
        row("fail", "198.51.100.25", "connected", "80,443", 2),
        row(
            "pass",
            "198.51.100.25",
            "timeout",
            "1-79,81-442,444-65535",
            65_533,
        ),
        row("fail", "2001:db8:25::25", "connected", "1-65535", 65_535),
    ]
    .into_iter()
    .collect();
    assert_eq!(ranges, expected, "{}", describe(&out));
    assert_eq!(
        (
            doc["failed"].as_u64(),
            doc["passed"].as_u64(),
            doc["inconclusive"].as_u64()
        ),
        (Some(65_537), Some(65_533), Some(0)),
        "{}",
        describe(&out)
    );
    eprintln!("sandbox sweep of 131,070 probes: {wall:?}");
}

/// Scenario, allowing www-data nothing on port 25 and postfix everything, for the DNS tests.
const DNS_SCENARIO: &str = "timeout = \"1s\"\n\
     [[target]]\nname = \"gmail\"\nmx = \"gmail.com\"\n\
     [[check]]\nas = [\"postfix\"]\nexpect = \"allow\"\n\
     [[check]]\nas = [\"www-data\"]\nexpect = \"deny\"\n";

/// `iptables-restore`/`ip6tables-restore` text: DNS only to `resolver` (or to none), and
/// www-data's port 25 dropped.
fn dns_rules(resolver: Option<&str>) -> String {
    let except = resolver.map(|r| format!(" ! -d {r}")).unwrap_or_default();
    format!(
        "*filter\n:OUTPUT ACCEPT [0:0]\n\
         -A OUTPUT -p udp --dport 53{except} -j DROP\n\
         -A OUTPUT -p tcp --dport 53{except} -j DROP\n\
         -A OUTPUT -p tcp --dport 25 -m owner --uid-owner www-data -j DROP\n\
         COMMIT\n"
    )
}

/// A ruleset that lets DNS out only to the host's resolver decides as on the host: the
/// simulated internet answers whatever address the run asks (the scenario's `nameserver`,
/// `--nameserver`, over IPv4 or IPv6), a loopback resolver inside the sandbox host, and a
/// ruleset that drops DNS makes the run inconclusive saying so in words.
#[test]
fn dns_rules_on_the_resolvers_address_decide_as_on_the_host() {
    let Some(f) = Fixture::new() else { return };
    let mut scenario = format!("nameserver = \"9.9.9.9\"\n{DNS_SCENARIO}");
    let only_quad9 = f.write("quad9.toml", &scenario);
    let v4 = f.write("dns4.rules", &dns_rules(Some("9.9.9.9")));
    let v6 = f.write("dns6.rules", &dns_rules(Some("2620:fe::fe")));
    let none = f.write("dns-none.rules", &dns_rules(None));
    let conclusive = |args: &[&str]| {
        let mut full = vec!["sandbox", "--no-explain"];
        full.extend(args);
        let (out, report) = json_report(&full);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        assert_eq!(
            (report.passed, report.probes.len()),
            (4, 4),
            "{}",
            describe(&out)
        );
    };
    // The scenario's resolver, allowed by both families' rules.
    conclusive(&[&only_quad9, "--iptables", &v4, "--ip6tables", &v6]);
    // An IPv6 resolver given on the command line.
    scenario = DNS_SCENARIO.to_string();
    let plain = f.write("plain.toml", &scenario);
    conclusive(&[
        &plain,
        "--nameserver",
        "2620:fe::fe",
        "--iptables",
        &v4,
        "--ip6tables",
        &v6,
    ]);
    // systemd-resolved's stub on loopback: answered inside the sandbox host, so a ruleset
    // dropping all DNS that leaves the host still resolves.
    let stub = f.write(
        "stub.rules",
        &dns_rules(None).replace(" --dport 53 -j DROP", " --dport 53 ! -o lo -j DROP"),
    );
    conclusive(&[
        &plain,
        "--nameserver",
        "127.0.0.53",
        "--iptables",
        &stub,
        "--ip6tables",
        &stub,
    ]);
    // DNS dropped: the detail names the resolver and this host's firewall.
    let (out, report) = json_report(&["sandbox", "--no-explain", &only_quad9, "--iptables", &none]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    for p in &report.probes {
        let detail = p.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(
                "DNS query to 9.9.9.9 blocked by this host's firewall (Operation not permitted)"
            ),
            "{p:?}"
        );
    }
}

/// Without `--nameserver` or the scenario's, the sandboxed run asks the resolvers of
/// `/etc/resolv.conf`, as on the host; systemd-resolved's stub there (`127.0.0.53`) is
/// answered inside the sandbox host, so a ruleset that lets DNS out only over `lo` resolves.
/// The file is bind-mounted in a private mount namespace (`unshare -m`), this host's stays.
#[test]
fn a_loopback_resolver_in_resolv_conf_is_answered_inside_the_sandbox_host() {
    let Some(f) = Fixture::new() else { return };
    let resolv_conf = f.write("resolv.conf", "nameserver 127.0.0.53\noptions edns0\n");
    let plain = f.write("plain.toml", DNS_SCENARIO);
    let stub = f.write(
        "stub.rules",
        &dns_rules(None).replace(" --dport 53 -j DROP", " --dport 53 ! -o lo -j DROP"),
    );
    // unshare execs sh, which execs egress-check: one pid throughout, for the leftovers.
    let child = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --make-rprivate / && mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"",
            "sh",
            &resolv_conf,
            BIN,
            "sandbox",
            &plain,
            "--no-explain",
            "--iptables",
            &stub,
            "--ip6tables",
            &stub,
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the sandbox");
    let left = leftovers::of_sandbox(pid);
    assert!(
        left.is_empty(),
        "left behind: {left:#?}\n{}",
        describe(&out)
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let report = Report::parse(&out);
    assert_eq!(
        (report.passed, report.probes.len()),
        (4, 4),
        "{}",
        describe(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["nameservers"], serde_json::json!(["127.0.0.53:53"]));
}

/// Rules naming the host's interface (`-o ens3`, `oifname`) and its own addresses
/// (`-s 203.0.113.5`, `ip6 saddr`) match in a sandbox given `--uplink` and `--host-addr`,
/// and do not without them; bad values are exit 2 naming them.
#[test]
fn uplink_and_host_addresses_make_interface_and_source_rules_match() {
    let Some(f) = Fixture::new() else { return };
    let story = shipped("story.toml");
    let v4 = f.write(
        "src.rules",
        "*filter\n:OUTPUT ACCEPT [0:0]\n\
         -A OUTPUT -o ens3 -s 203.0.113.5 -p tcp --dport 25 -m owner --uid-owner www-data -j DROP\n\
         COMMIT\n",
    );
    let v6 = f.write(
        "src.nft",
        "table inet t {\n chain o {\n  type filter hook output priority filter;\n\
         \x20 oifname \"ens3\" ip6 saddr 2001:db8:5::5 meta skuid \"www-data\" tcp dport 25 \
         reject with tcp reset\n }\n}\n",
    );
    let base = [
        "sandbox",
        story.as_str(),
        "--timeout",
        "1s",
        "--no-explain",
        "--iptables",
        &v4,
        "--nft",
        &v6,
    ];
    let mut args = base.to_vec();
    args.extend([
        "--uplink",
        "ens3",
        "--host-addr",
        "203.0.113.5",
        "--host-addr",
        "2001:db8:5::5",
    ]);
    let (out, report) = json_report(&args);
    assert_holds(&out, &report, 8);
    for (family, observed) in [("ipv4", "timeout"), ("ipv6", "refused")] {
        for p in report.of("www-data", family) {
            assert_eq!(p.observed, observed, "{p:?}");
        }
    }
    // The same rules on the default eth0 and link addresses match nothing.
    let (out, report) = json_report(&base);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    for p in report.of_user("www-data") {
        assert_eq!(p.observed, "connected", "{p:?}");
    }

    for (option, value) in [
        ("--uplink", "lo"),
        ("--uplink", "eth 0"),
        ("--uplink", "much-too-long-name"),
        ("--host-addr", "192.0.2.2"),
        ("--host-addr", "198.51.100.25"),
        ("--host-addr", "fe80::1"),
        ("--host-addr", "not-an-ip"),
    ] {
        let out = sandbox(&["sandbox", &story, option, value]);
        assert_eq!(code(&out), 2, "{option} {value}: {}", describe(&out));
        assert!(
            stderr(&out).contains(value),
            "{option} {value}: {}",
            describe(&out)
        );
        assert!(stdout(&out).is_empty(), "nothing was probed");
    }
}
