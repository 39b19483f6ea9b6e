//! End-to-end tests: the real `egress-check` binary, run as root inside a network namespace
//! lab (the test kit's `TestLab`) with real firewall rules (iptables, ip6tables, nftables),
//! real users and a simulated dual-stack internet.
//!
//! Lab facts the tests rely on (see `testkit/src/test_lab.rs`):
//! - `dual.test`: MX 10 `mx1.dual.test` (203.0.113.10, 2001:db8:200::10) and MX 20
//!   `mx2.dual.test` (203.0.113.11, 2001:db8:200::11); `host.test` = 203.0.113.10,
//!   2001:db8:200::10; `v4only.test`: MX 10 `mx.v4only.test` (203.0.113.12, no AAAA).
//! - Every sink listens on TCP 25 and 587; TCP 26 is closed.
//! - Users `ec-postfix`, `ec-web`, `ec-suppl` (supplementary group `ec-mailers`), `www-data`.

use crate::util::fixtures::{fixture, fixture_text, scenario, ScenarioFile};
use crate::util::lab::{port25_as, Lab, LAB_DNS_V4, LAB_DNS_V6, STORY, STORY_RULES};
use crate::util::process::{assert_ok_naming, code, describe, stderr, stdout, words};
use crate::util::report::{exchanges_and_families, Report};
use crate::util::users::uid_of;

fn mx_address(exchange: &str, family: &str) -> &'static str {
    match (exchange, family) {
        ("mx1.dual.test", "ipv4") => "203.0.113.10",
        ("mx1.dual.test", "ipv6") => "2001:db8:200::10",
        ("mx2.dual.test", "ipv4") => "203.0.113.11",
        ("mx2.dual.test", "ipv6") => "2001:db8:200::11",
        other => panic!("unexpected exchange/family {other:?}"),
    }
}

/// Checks the identity fields of every probe of a `dual.test` report: uid, target, domain,
/// port, exchange coverage and that each exchange was probed at its own address.
#[track_caller]
fn assert_dual_test_probes(report: &Report, users: &[(&str, &str)]) {
    for &(user, expect) in users {
        let uid = uid_of(user);
        let probes = report.of_user(user);
        let expected_pairs = ["mx1.dual.test", "mx2.dual.test"]
            .iter()
            .flat_map(|x| ["ipv4", "ipv6"].map(|f| (x.to_string(), f.to_string())))
            .collect();
        assert_eq!(
            exchanges_and_families(&probes),
            expected_pairs,
            "{user} must probe both exchanges over both families: {probes:#?}"
        );
        for p in probes {
            assert_eq!(p.uid, uid, "uid of {user}'s probe: {p:#?}");
            assert_eq!(p.expect, expect, "{p:#?}");
            assert_eq!(p.target, "mail", "{p:#?}");
            assert_eq!(
                p.domain.as_deref().map(|d| d.trim_end_matches('.')),
                Some("dual.test"),
                "{p:#?}"
            );
            assert_eq!(p.port, 25, "{p:#?}");
            let exchange = p.exchange.as_deref().expect("exchange");
            assert_eq!(
                p.address.as_deref(),
                Some(mx_address(exchange, &p.family)),
                "{p:#?}"
            );
        }
    }
}

/// Checks a report of the story ([`STORY`]): every probe's identity (as
/// [`assert_dual_test_probes`] does), ec-postfix connecting to both exchanges over both
/// families, www-data's IPv4 probes timing out (a pass), and what www-data's IPv6 probes
/// observed with their verdict: `("connected", "fail")` where the firewall leaks,
/// `("timeout", "pass")` where it holds.
#[track_caller]
fn assert_story_probes(report: &Report, www_data_ipv6: (&str, &str)) {
    assert_dual_test_probes(report, &[("ec-postfix", "allow"), ("www-data", "deny")]);
    report.expect_probes("ec-postfix", "ipv4", 2, &["connected"], "pass");
    report.expect_probes("ec-postfix", "ipv6", 2, &["connected"], "pass");
    report.expect_probes("www-data", "ipv4", 2, &["timeout"], "pass");
    let (observed, verdict) = www_data_ipv6;
    report.expect_probes("www-data", "ipv6", 2, &[observed], verdict);
}

/// Test 1, the story: port 25 blocked with iptables only. www-data's IPv4 connects time out
/// (pass) but its IPv6 connects get through (fail), and the human report calls it a LEAK.
#[test]
fn story_iptables_only_leaks_over_ipv6() {
    let Some(lab) = Lab::up() else { return };
    for rule in STORY_RULES {
        lab.iptables(&words(rule));
    }
    let file = fixture(STORY);

    let (out, report) = lab.run_json(&["run", &file]);
    assert_eq!(
        code(&out),
        1,
        "a leak is a failed check\n{}",
        describe(&out)
    );
    assert_story_probes(&report, ("connected", "fail"));
    assert_eq!(
        (report.passed, report.failed, report.inconclusive),
        (6, 2, 0)
    );

    let out = lab.run(&["run", &file]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("LEAK") && l.contains("IPv6")),
        "the human report must name the family split as a LEAK over IPv6\n{}",
        describe(&out)
    );
    assert!(text.contains("www-data"), "{}", describe(&out));
}

/// Test 2: the same rules for both families close the leak.
#[test]
fn story_iptables_and_ip6tables_pass() {
    let Some(lab) = Lab::up() else { return };
    for rule in STORY_RULES {
        lab.ip46tables(&words(rule));
    }
    let file = fixture(STORY);

    let (out, report) = lab.run_json(&["run", &file]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_story_probes(&report, ("timeout", "pass"));
    assert_eq!(
        (report.passed, report.failed, report.inconclusive),
        (8, 0, 0)
    );

    let out = lab.run(&["run", &file]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        !stdout(&out).contains("LEAK"),
        "no leak to report\n{}",
        describe(&out)
    );
}

/// Test 3: one nftables `inet` table covers both families (skuid by user name).
#[test]
fn story_nftables_inet_table_passes() {
    let Some(lab) = Lab::up() else { return };
    lab.nft_file(&fixture_text("lab/story-inet.nft"));
    // This time the scenario names the nameserver instead of relying on resolv.conf.
    let file = scenario(&format!(
        "nameserver = \"{LAB_DNS_V4}\"\n{}",
        fixture_text(STORY)
    ));

    let (out, report) = lab.run_json(&["run", file.path()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_story_probes(&report, ("timeout", "pass"));
}

/// Asserts that every probe of `target` (one per family) observed one of `observed`, passed,
/// and went to the right address.
#[track_caller]
fn expect_target(report: &Report, target: &str, addrs: [&str; 2], observed: &[&str]) {
    let probes: Vec<_> = report
        .probes
        .iter()
        .filter(|p| p.target == target)
        .collect();
    assert_eq!(
        probes.len(),
        2,
        "one probe per family for {target}: {probes:#?}"
    );
    for (family, addr) in ["ipv4", "ipv6"].into_iter().zip(addrs) {
        let p = probes
            .iter()
            .find(|p| p.family == family)
            .unwrap_or_else(|| panic!("no {family} probe for {target}: {probes:#?}"));
        assert_eq!(p.address.as_deref(), Some(addr), "{p:#?}");
        assert!(
            observed.contains(&p.observed.as_str()) && p.verdict == "pass",
            "{target} over {family}: expected observed {observed:?} and verdict pass, got \
             observed {:?} verdict {:?} (detail: {:?})",
            p.observed,
            p.verdict,
            p.detail
        );
    }
}

/// The IPv4 and IPv6 address of the lab's sinks .10, .11 and .12.
const ADDRS_10: [&str; 2] = ["203.0.113.10", "2001:db8:200::10"];
const ADDRS_11: [&str; 2] = ["203.0.113.11", "2001:db8:200::11"];
const ADDRS_12: [&str; 2] = ["203.0.113.12", "2001:db8:200::12"];

/// A target that ec-web may not reach: its name, its IPv4 and IPv6 address, its port, and
/// the outcomes its probes may observe.
type Denied<'a> = (&'a str, [&'a str; 2], u16, &'a [&'a str]);

/// Runs a scenario (with `timeout`) in which ec-web may reach none of `targets`, and asserts
/// that every expectation held (exit 0) with one probe per target and family, to the
/// target's address, observing one of its outcomes (see [`expect_target`]).
#[track_caller]
fn assert_denied(lab: &Lab, timeout: &str, targets: &[Denied]) {
    let mut text = format!("timeout = \"{timeout}\"\n");
    for (name, [v4, v6], port, _) in targets {
        text += &format!(
            "\n[[target]]\nname = \"{name}\"\naddress = [\"{v4}\", \"{v6}\"]\nports = [{port}]\n"
        );
    }
    text += "\n[[check]]\nas = [\"ec-web\"]\nexpect = \"deny\"\n";
    let file = scenario(&text);
    let (out, report) = lab.run_json(&["run", file.path()]);
    assert_eq!(code(&out), 0, "{text}\n{}", describe(&out));
    assert_eq!(
        report.probes.len(),
        2 * targets.len(),
        "{:#?}",
        report.probes
    );
    for &(name, addrs, _, observed) in targets {
        expect_target(&report, name, addrs, observed);
    }
}

/// Test 4: how blocking is observed. DROP is a `timeout`; REJECT with a TCP reset is
/// `refused`; REJECT with ICMP port-unreachable is `refused` or `unreachable`; ICMP
/// host/address-unreachable is `unreachable`; a closed port (real RST) is `refused`.
#[test]
fn drop_times_out_and_reject_is_refused_or_unreachable() {
    let Some(lab) = Lab::up() else { return };
    // The same faults for each family, at .10 (DROP), .11 (reset) and .12 (ICMP errors).
    for rule in [
        "-d 203.0.113.10 --dport 25 -j DROP",
        "-d 203.0.113.11 --dport 25 -j REJECT --reject-with tcp-reset",
        "-d 203.0.113.12 --dport 25 -j REJECT --reject-with icmp-port-unreachable",
        "-d 203.0.113.12 --dport 587 -j REJECT --reject-with icmp-host-unreachable",
    ] {
        lab.iptables(&words(&format!("-A OUTPUT -p tcp {rule}")));
    }
    for rule in [
        "-d 2001:db8:200::10 --dport 25 -j DROP",
        "-d 2001:db8:200::11 --dport 25 -j REJECT --reject-with tcp-reset",
        "-d 2001:db8:200::12 --dport 25 -j REJECT --reject-with icmp6-port-unreachable",
        "-d 2001:db8:200::12 --dport 587 -j REJECT --reject-with icmp6-addr-unreachable",
    ] {
        lab.ip6tables(&words(&format!("-A OUTPUT -p tcp {rule}")));
    }

    assert_denied(&lab, "1s", &[("drop", ADDRS_10, 25, &["timeout"])]);
    // 3s, not 1s: the kernel ignores an ICMPv6 error generated by a local OUTPUT REJECT for the
    // first SYN (the socket is still owned by connect()); connect() fails only when the SYN is
    // retransmitted after 1s. IPv4 fails at once.
    assert_denied(
        &lab,
        "3s",
        &[
            ("reset", ADDRS_11, 25, &["refused"]),
            ("icmp-port", ADDRS_12, 25, &["refused", "unreachable"]),
            ("icmp-host", ADDRS_12, 587, &["unreachable"]),
            ("closed", ADDRS_10, 26, &["refused"]),
        ],
    );
}

/// Test 5: owner matches by uid and by supplementary group. ec-suppl is allowed only through
/// its *supplementary* group ec-mailers, so its probes connect only if the probing child
/// carries the user's supplementary groups; ec-web is rejected by uid (a reset, to tell that
/// rule from the final DROP that ec-postfix meets).
#[test]
fn owner_match_by_uid_and_supplementary_group() {
    let Some(lab) = Lab::up() else { return };
    for rule in [
        "-m owner --uid-owner ec-web -j REJECT --reject-with tcp-reset",
        "-m owner --gid-owner ec-mailers --suppl-groups -j ACCEPT",
        "-j DROP",
    ] {
        lab.ip46tables(&words(&format!("-A OUTPUT -p tcp --dport 25 {rule}")));
    }

    let file = scenario(&format!(
        r#"
timeout = "1s"
nameserver = "{LAB_DNS_V4}"

[[target]]
name = "relay"
host = "host.test"
ports = [25]

[[check]]
as = ["ec-suppl"]
expect = "allow"

[[check]]
as = ["ec-web", "ec-postfix"]
expect = "deny"
"#
    ));
    let (out, report) = lab.run_json(&["run", file.path()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    for family in ["ipv4", "ipv6"] {
        report.expect_probes("ec-suppl", family, 1, &["connected"], "pass");
        report.expect_probes("ec-web", family, 1, &["refused"], "pass");
        report.expect_probes("ec-postfix", family, 1, &["timeout"], "pass");
    }
    for p in &report.probes {
        assert_eq!(p.uid, uid_of(&p.user), "{p:#?}");
        let want = if p.family == "ipv4" {
            "203.0.113.10"
        } else {
            "2001:db8:200::10"
        };
        assert_eq!(p.address.as_deref(), Some(want), "{p:#?}");
    }
}

/// The arguments of an ad hoc check that ec-web may not reach port 25 of `domain`'s exchanges
/// (timeout 1 s), followed by `more`.
fn web_denies_mx<'a>(domain: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--as", "ec-web", "--mx", domain];
    args.extend(words("--port 25 --expect deny --timeout 1s"));
    args.extend_from_slice(more);
    args
}

/// Test 6: a family without addresses is never a pass: v4only.test has no AAAA, so the IPv6
/// probe is `no-address`/`inconclusive` and the run exits 3 although IPv4 passed.
#[test]
fn missing_family_is_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    lab.ip46tables(&words(
        "-A OUTPUT -p tcp --dport 25 -j REJECT --reject-with tcp-reset",
    ));
    let (out, report) = lab.run_json(&web_denies_mx("v4only.test", &["--nameserver", LAB_DNS_V4]));
    assert_eq!(code(&out), 3, "{}", describe(&out));
    report.expect_probes("ec-web", "ipv4", 1, &["refused"], "pass");
    report.expect_probes("ec-web", "ipv6", 1, &["no-address"], "inconclusive");
    let v4 = &report.of("ec-web", "ipv4")[0];
    assert_eq!(v4.address.as_deref(), Some("203.0.113.12"), "{v4:#?}");
    let v6 = &report.of("ec-web", "ipv6")[0];
    assert_eq!(
        v6.address, None,
        "no-address probe has a null address: {v6:#?}"
    );
    assert_eq!(
        (report.passed, report.failed, report.inconclusive),
        (1, 0, 1)
    );
}

/// Runs an ad hoc deny check of `domain` as ec-web and asserts that every probe is
/// inconclusive and the exit code is 3.
#[track_caller]
fn assert_dns_failure_inconclusive(lab: &Lab, domain: &str, extra: &[&str]) -> (String, Report) {
    let (out, report) = lab.run_json(&web_denies_mx(domain, extra));
    assert_eq!(
        code(&out),
        3,
        "{domain}: a DNS failure is inconclusive\n{}",
        describe(&out)
    );
    assert!(
        !report.probes.is_empty(),
        "{domain}: the failure must be reported as probes\n{}",
        describe(&out)
    );
    for p in &report.probes {
        assert_eq!(p.verdict, "inconclusive", "{domain}: {p:#?}");
        assert_ne!(p.observed, "connected", "{domain}: {p:#?}");
    }
    assert_eq!(report.passed + report.failed, 0, "{}", describe(&out));
    let mut said = stderr(&out);
    for p in &report.probes {
        said.push('\n');
        said.push_str(p.detail.as_deref().unwrap_or(""));
    }
    (said, report)
}

/// Test 7a: NXDOMAIN, SERVFAIL and an exchange that does not resolve are inconclusive, and
/// the report says which name failed.
#[test]
fn dns_failures_are_inconclusive_and_named() {
    let Some(lab) = Lab::up() else { return };
    // (domain, further arguments, the name that failed: for dangling.test its exchange)
    let cases: [(&str, &[&str], &str); 3] = [
        ("nx.test", &["--nameserver", LAB_DNS_V4], "nx.test"),
        ("servfail.test", &[], "servfail.test"),
        ("dangling.test", &[], "missing.dangling.test"),
    ];
    for (domain, extra, failed) in cases {
        let (said, _) = assert_dns_failure_inconclusive(&lab, domain, extra);
        assert!(
            said.contains(failed),
            "stderr or a probe's detail must name {failed}:\n{said}"
        );
    }
}

/// Test 7b: a nameserver that does not answer makes every probe inconclusive (exit 3).
#[test]
fn unreachable_nameserver_is_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    // 198.51.100.99 is on the lab's link but no host has it: queries go unanswered.
    assert_dns_failure_inconclusive(&lab, "dual.test", &["--nameserver", "198.51.100.99"]);
}

/// Test 8a: a broken scenario is exit 2 with `FILE:LINE:COLUMN` on stderr, and nothing is
/// probed.
#[test]
fn broken_scenario_is_exit_2_with_line_and_column() {
    let Some(lab) = Lab::up() else { return };
    let tail = "\n[[check]]\nas = [\"ec-web\"]\nexpect = \"deny\"\n";
    let cases: [(&str, String, &str); 5] = [
        (
            "unknown key",
            format!("timeout = \"1s\"\n\n[[target]]\nname = \"mx\"\nmx = \"dual.test\"\ncolour = \"blue\"\n{tail}"),
            "bad.toml:6:1",
        ),
        (
            "wrong type",
            format!("timeout = \"1s\"\n[[target]]\nname = \"mx\"\nports = \"25\"\nmx = \"dual.test\"\n{tail}"),
            "bad.toml:4:9",
        ),
        (
            "bad expect value",
            "timeout = \"1s\"\n[[target]]\nname = \"mx\"\nmx = \"dual.test\"\n\n[[check]]\nas = [\"ec-web\"]\nexpect = \"maybe\"\n".to_string(),
            "bad.toml:8:10",
        ),
        (
            "bad timeout",
            format!("timeout = \"soon\"\n[[target]]\nname = \"mx\"\nmx = \"dual.test\"\n{tail}"),
            "bad.toml:1:11",
        ),
        (
            "unterminated string, a syntax error",
            format!("timeout = \"1s\"\n[[target]]\nname = \"mx\"\nmx = \"dual.test\n{tail}"),
            "bad.toml:4:",
        ),
    ];
    for (what, text, location) in cases {
        let file = ScenarioFile::new("bad.toml", &text);
        let out = lab.run(&["run", file.path()]);
        assert_eq!(
            code(&out),
            2,
            "{what}: exit 2 expected\n{text}\n{}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains(location),
            "{what}: stderr must point at {location}\n{text}\n{}",
            describe(&out)
        );
    }

    // A target with two kinds: the error must point into that table (lines 2-5).
    let text = format!("timeout = \"1s\"\n[[target]]\nname = \"mx\"\nmx = \"dual.test\"\nhost = \"host.test\"\n{tail}");
    let file = ScenarioFile::new("bad.toml", &text);
    let out = lab.run(&["run", file.path()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        (2..=5).any(|line| err.contains(&format!("bad.toml:{line}:"))),
        "stderr must point into the [[target]] table (lines 2-5)\n{text}\n{}",
        describe(&out)
    );
}

/// Test 8b: an unknown user is exit 2 naming the user, from the command line and from a
/// scenario.
#[test]
fn unknown_user_is_exit_2_naming_the_user() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run(&port25_as("ec-no-such-user", &["--timeout", "1s"]));
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("ec-no-such-user"),
        "{}",
        describe(&out)
    );

    let file = scenario(
        r#"
timeout = "1s"

[[target]]
name = "sink"
address = ["203.0.113.10"]

[[check]]
as = ["ec-ghost"]
expect = "deny"
"#,
    );
    let out = lab.run(&["run", file.path()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("ec-ghost"), "{}", describe(&out));
}

/// Test 8c: probing as another user needs root; without it the run is a privilege error.
#[test]
fn probing_without_root_is_exit_2() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run_as("ec-web", &port25_as("www-data", &["--timeout", "1s"]));
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

/// The numbers that appear in `line` once the lab's addresses are removed from it.
fn numbers_besides_addresses(line: &str) -> Vec<String> {
    let mut rest = line.to_string();
    for addr in [
        "2001:db8:200::10",
        "2001:db8:200::11",
        "203.0.113.10",
        "203.0.113.11",
    ] {
        rest = rest.replace(addr, " ");
    }
    rest.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every string and number in a JSON document.
fn json_leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.trim_end_matches('.').to_string()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_leaves(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_leaves(v, out)),
        _ => {}
    }
}

/// Whether some JSON object has `name` as a string member and `preference` as a number member.
fn json_has_exchange(v: &serde_json::Value, name: &str, preference: u64) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            let named = o
                .values()
                .any(|m| m.as_str().map(|s| s.trim_end_matches('.')) == Some(name));
            let pref = o.values().any(|m| m.as_u64() == Some(preference));
            (named && pref) || o.values().any(|m| json_has_exchange(m, name, preference))
        }
        serde_json::Value::Array(a) => a.iter().any(|m| json_has_exchange(m, name, preference)),
        _ => false,
    }
}

const DUAL_ADDRESSES: [&str; 4] = [
    "203.0.113.10",
    "2001:db8:200::10",
    "203.0.113.11",
    "2001:db8:200::11",
];

/// Test 9: `resolve` lists both exchanges with their preferences and both address families,
/// in the human and the JSON format, with the system resolver (resolv.conf) and with
/// `--nameserver` over IPv4 (with a port) and IPv6.
#[test]
fn resolve_lists_exchanges_preferences_and_families() {
    let Some(lab) = Lab::up() else { return };

    let out = lab.run(&["resolve", "dual.test"]);
    let text = assert_ok_naming(&out, DUAL_ADDRESSES);
    for (exchange, pref) in [("mx1.dual.test", "10"), ("mx2.dual.test", "20")] {
        let line = text
            .lines()
            .find(|l| l.contains(exchange))
            .unwrap_or_else(|| panic!("{exchange} missing\n{}", describe(&out)));
        assert!(
            numbers_besides_addresses(line).iter().any(|n| n == pref),
            "the line naming {exchange} must show its preference {pref}: {line:?}\n{}",
            describe(&out)
        );
    }

    for nameserver in [format!("{LAB_DNS_V4}:53"), LAB_DNS_V6.to_string()] {
        let out = lab.run(&[
            "resolve",
            "dual.test",
            "--format",
            "json",
            "--nameserver",
            &nameserver,
        ]);
        assert_eq!(
            code(&out),
            0,
            "--nameserver {nameserver}\n{}",
            describe(&out)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", describe(&out)));
        let mut leaves = Vec::new();
        json_leaves(&doc, &mut leaves);
        for addr in DUAL_ADDRESSES {
            assert!(
                leaves.iter().any(|l| l == addr),
                "{addr} missing\n{}",
                describe(&out)
            );
        }
        assert!(
            json_has_exchange(&doc, "mx1.dual.test", 10),
            "mx1 with preference 10\n{}",
            describe(&out)
        );
        assert!(
            json_has_exchange(&doc, "mx2.dual.test", 20),
            "mx2 with preference 20\n{}",
            describe(&out)
        );
    }
}

/// Test 9b: `resolve` needs no root.
#[test]
fn resolve_needs_no_root() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run_as(
        "ec-web",
        &["resolve", "dual.test", "--nameserver", LAB_DNS_V4],
    );
    assert_ok_naming(
        &out,
        ["mx1.dual.test", "mx2.dual.test"]
            .into_iter()
            .chain(DUAL_ADDRESSES),
    );
}

/// Test 9c: `resolve` follows an exchange that is a CNAME, lists every one of eight
/// exchanges, falls back to the domain's own addresses without MX (RFC 5321 5.1) and lists no
/// address for a null MX (RFC 7505).
#[test]
fn resolve_follows_cname_and_lists_many_exchanges() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run(&["resolve", "cname.test", "--nameserver", LAB_DNS_V4]);
    assert_ok_naming(
        &out,
        ["alias.cname.test", "203.0.113.10", "2001:db8:200::10"],
    );

    let out = lab.run(&["resolve", "many.test", "--nameserver", LAB_DNS_V4]);
    assert_ok_naming(&out, (1..=8).map(|i| format!("mx{i}.many.test")));

    let out = lab.run(&["resolve", "nomx.test", "--nameserver", LAB_DNS_V4]);
    // No MX: the domain's own addresses, as an implicit MX.
    assert_ok_naming(&out, ["203.0.113.12", "2001:db8:200::12"]);

    let out = lab.run(&["resolve", "nullmx.test", "--nameserver", LAB_DNS_V4]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("203.0.113.") && !text.contains("2001:db8:"),
        "a null MX has no address to probe\n{}",
        describe(&out)
    );
}

/// The built-in scenario of `egress-check --as USER` names real mail domains; where DNS cannot
/// answer them (the lab's server refuses names outside `.test`), every probe is inconclusive
/// and the exit code is 3: an unanswered lookup is never a pass.
#[test]
fn built_in_scenario_without_dns_answers_is_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run(&[
        "--as",
        "www-data",
        "--nameserver",
        LAB_DNS_V4,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let report = Report::parse(&out);
    let domains: std::collections::BTreeSet<String> = report
        .probes
        .iter()
        .filter_map(|p| p.domain.clone())
        .collect();
    assert_eq!(
        domains,
        ["gmail.com", "outlook.com", "yahoo.com"]
            .map(String::from)
            .into()
    );
    for p in &report.probes {
        assert_eq!(
            (p.observed.as_str(), p.verdict.as_str()),
            ("no-address", "inconclusive")
        );
        assert_eq!(p.expect, "deny");
        assert!(
            p.detail.as_deref().unwrap_or("").contains("REFUSED"),
            "{p:?}"
        );
    }
}
