//! `--explain`: the rule the report names is the rule the test set up to decide, compared by
//! handle and by text against the live ruleset (`nft -a list ruleset`); verdicts and exit
//! codes are those of the same run without `--explain`; what tracing cannot see
//! (iptables-legacy) is said, never "no rule"; a block beyond the host is called out; our
//! temporary table is gone after every exit path, also after a SIGKILL (the next run reaps it).

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::util::fixtures::{fixture, scenario};
use crate::util::lab::{Lab, LAB_DNS_V4, STORY};
use crate::util::process::{code, describe, stderr, stdout, wait_for, words, Running};
use crate::util::BIN;

/// The JSON report of a run.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e})\n{}", describe(out)))
}

fn probes(doc: &Value) -> &Vec<Value> {
    doc["probes"].as_array().expect("probes[]")
}

/// What must not change with `--explain`: per probe, who, where, observed, verdict, witness.
fn verdicts(doc: &Value) -> BTreeSet<String> {
    probes(doc)
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p["user"], p["address"], p["port"], p["observed"], p["verdict"], p["witnessed"]
            )
        })
        .collect()
}

/// The probe of `user` to `address`.
fn probe<'a>(doc: &'a Value, user: &str, address: &str) -> &'a Value {
    probes(doc)
        .iter()
        .find(|p| p["user"] == user && p["address"] == address)
        .unwrap_or_else(|| panic!("no probe of {user} to {address} in {doc:#}"))
}

/// Our trace tables in the lab's host namespace.
fn trace_tables(lab: &Lab) -> Vec<String> {
    let out = lab.exec("nft", &["list", "tables"]);
    stdout(&out)
        .lines()
        .filter(|l| l.contains("egress_check_trace_"))
        .map(str::to_owned)
        .collect()
}

/// The handle and text (counters elided, as the report gives it) of the only rule of the
/// live ruleset in `family table chain` whose text contains every word of `marker`.
fn live_rule(lab: &Lab, family: &str, table: &str, chain: &str, marker: &[&str]) -> (u64, String) {
    let out = lab.exec("nft", &["-a", "list", "chain", family, table, chain]);
    let found: Vec<(u64, String)> = stdout(&out)
        .lines()
        .filter(|l| marker.iter().all(|m| l.contains(m)))
        .filter_map(|l| {
            let (text, handle) = l.trim().rsplit_once(" # handle ")?;
            Some((handle.trim().parse().ok()?, elide_counters(text)))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one rule with {marker:?} in {family} {table} {chain}:\n{}",
        stdout(&out)
    );
    found.into_iter().next().unwrap()
}

fn elide_counters(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            out.push("counter");
            i += 5;
        } else {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

/// Runs `scenario` with and without `--explain`; asserts the same exit code and verdicts;
/// returns the explained report.
fn run_both(lab: &Lab, scenario_path: &str) -> Value {
    let plain = lab.run(&["run", scenario_path, "--format", "json"]);
    let explained = lab.run(&["run", scenario_path, "--format", "json", "--explain"]);
    assert_eq!(
        code(&plain),
        code(&explained),
        "exit codes differ with --explain\nplain: {}\nexplained: {}",
        describe(&plain),
        describe(&explained)
    );
    let (p, e) = (json(&plain), json(&explained));
    assert_eq!(verdicts(&p), verdicts(&e), "verdicts differ with --explain");
    for key in [
        "passed",
        "failed",
        "inconclusive",
        "unwitnessed_denies",
        "family_splits",
    ] {
        assert_eq!(p[key], e[key], "{key} differs with --explain");
    }
    // Without --explain the report has none of its fields.
    for pr in probes(&p) {
        assert!(
            pr.get("decided_by").is_none() && pr.get("trace").is_none(),
            "{pr}"
        );
    }
    assert!(
        trace_tables(lab).is_empty(),
        "trace table left: {:?}",
        trace_tables(lab)
    );
    e
}

/// Asserts `decided_by` names exactly the rule `(handle, text)` of `family table chain`.
fn assert_rule(
    p: &Value,
    family: &str,
    table: &str,
    chain: &str,
    rule: &(u64, String),
    verdict: &str,
) {
    let d = &p["decided_by"];
    let ctx = format!("{p:#}");
    assert_eq!(d["kind"], "rule", "{ctx}");
    assert_eq!(d["verdict"], verdict, "{ctx}");
    assert_eq!(d["family"], family, "{ctx}");
    assert_eq!(d["table"], table, "{ctx}");
    assert_eq!(d["chain"], chain, "{ctx}");
    assert_eq!(d["handle"], rule.0, "{ctx}");
    assert_eq!(d["rule"], rule.1.as_str(), "{ctx}");
    // The trace lists the deciding rule too.
    assert!(
        p["trace"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["handle"] == rule.0 && s["table"] == table && s["chain"] == chain),
        "{ctx}"
    );
}

fn scenario_for(
    addrs: &[&str],
    timeout: &str,
    checks: &[(&str, &str)],
) -> crate::util::fixtures::ScenarioFile {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let mut text = format!(
        "timeout = \"{timeout}\"\nnameserver = \"{LAB_DNS_V4}\"\n\n[[target]]\nname = \"t\"\naddress = [{}]\nports = [25]\n",
        list.join(", ")
    );
    for (user, expect) in checks {
        text.push_str(&format!(
            "\n[[check]]\nas = [\"{user}\"]\nexpect = \"{expect}\"\n"
        ));
    }
    scenario(&text)
}

const WITNESSED: &[(&str, &str)] = &[("ec-postfix", "allow"), ("www-data", "deny")];

#[test]
fn story_names_the_ipv4_rule_and_no_ipv6_rule() {
    let Some(lab) = Lab::up() else { return };
    // The story's firewall as one rule, not STORY_RULES: with no rule accepting ec-postfix,
    // the chain's policy decides its probes, and this test checks that the policy is named.
    lab.iptables(&words(
        "-A OUTPUT -p tcp --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
    ));
    let story = fixture(STORY);
    let doc = run_both(&lab, &story);
    let rule = live_rule(&lab, "ip", "filter", "OUTPUT", &["dport 25", "drop"]);
    for addr in ["203.0.113.10", "203.0.113.11"] {
        let p = probe(&doc, "www-data", addr);
        assert_rule(p, "ip", "filter", "OUTPUT", &rule, "drop");
        assert_eq!(p["decided_by"]["hook"], "output");
        // ec-postfix: nothing matched, the chain's policy let it through.
        let ok = &probe(&doc, "ec-postfix", addr)["decided_by"];
        assert_eq!(
            (ok["kind"].as_str(), ok["verdict"].as_str()),
            (Some("policy"), Some("accept")),
            "{ok}"
        );
        assert_eq!(
            ok["text"],
            "policy accept of ip filter OUTPUT (hook output), no rule matched"
        );
    }
    for addr in ["2001:db8:200::10", "2001:db8:200::11"] {
        let d = &probe(&doc, "www-data", addr)["decided_by"];
        assert_eq!(d["kind"], "no-filtering", "{d}");
        assert_eq!(
            d["text"],
            "no IPv6 filtering at all: nothing in nf_tables saw this packet except the trace"
        );
    }
    // The human report: one line under each probe, and the headline names both sides.
    let human = lab.run(&["run", &story, "--explain"]);
    let text = stdout(&human);
    assert!(
        text.starts_with(&format!(
            "LEAK: www-data reaches mx1.dual.test port 25 over IPv6 while IPv4 is blocked: IPv4: \
             dropped by ip filter OUTPUT `{}`; IPv6: no rule",
            rule.1
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n      dropped by ip filter OUTPUT (hook output) rule {}: `{}`",
            rule.0, rule.1
        )),
        "{text}"
    );
}

/// Who is decided where: (user, nft family for IPv4 and IPv6, table, chain, words of the
/// rule's text (`{a}` is the family's address), verdict).
type Decided = (
    &'static str,
    [&'static str; 2],
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
);

/// One deciding rule: the setup, who probes, and where the decision must be.
struct Row {
    name: &'static str,
    addrs: (&'static str, &'static str),
    /// Setup lines as [`Lab::setup`] reads them.
    setup: &'static [&'static str],
    timeout: &'static str,
    checks: &'static [(&'static str, &'static str)],
    /// (user, nft family per IP family, table, chain, marker words, verdict); `{a}` is the
    /// family's address.
    decided: &'static [Decided],
    /// Jump path expected for the deciding rule.
    path: &'static [&'static str],
}

/// What a row has unless it says otherwise: a 1 s timeout, ec-postfix allowed and www-data
/// denied ([`WITNESSED`]), and a deciding rule in the chain the hook runs (no jump).
const ROW: Row = Row {
    name: "",
    addrs: ("", ""),
    setup: &[],
    timeout: "1s",
    checks: WITNESSED,
    decided: &[],
    path: &[],
};

const ROWS: &[Row] = &[
    Row {
        name: "iptables-nft and ip6tables-nft DROP",
        addrs: ("203.0.113.60", "2001:db8:200::60"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP"],
        decided: &[("www-data", ["ip", "ip6"], "filter", "OUTPUT", &["{a}", "drop"], "drop")],
        ..ROW
    },
    Row {
        name: "REJECT tcp-reset",
        addrs: ("203.0.113.61", "2001:db8:200::61"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with tcp-reset"],
        decided: &[("www-data", ["ip", "ip6"], "filter", "OUTPUT", &["{a}", "reject with tcp reset"], "drop")],
        ..ROW
    },
    Row {
        name: "REJECT icmp admin prohibited",
        addrs: ("203.0.113.62", "2001:db8:200::62"),
        setup: &[
            "host: iptables -A OUTPUT -p tcp -d {v4} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp-admin-prohibited",
            "host: ip6tables -A OUTPUT -p tcp -d {v6} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp6-adm-prohibited",
        ],
        timeout: "3s",
        decided: &[("www-data", ["ip", "ip6"], "filter", "OUTPUT", &["{a}", "reject with icmp"], "drop")],
        ..ROW
    },
    Row {
        name: "nft inet table",
        addrs: ("203.0.113.63", "2001:db8:200::63"),
        setup: &[
            "host: nft add table inet ex63",
            "host: nft add chain inet ex63 out { type filter hook output priority 0 ; policy accept ; }",
            "host: nft add rule inet ex63 out ip daddr {v4} tcp dport 25 meta skuid www-data drop",
            "host: nft add rule inet ex63 out ip6 daddr {v6} tcp dport 25 meta skuid www-data drop",
        ],
        decided: &[("www-data", ["inet", "inet"], "ex63", "out", &["{a}", "drop"], "drop")],
        ..ROW
    },
    Row {
        name: "jump into a user chain",
        addrs: ("203.0.113.65", "2001:db8:200::65"),
        setup: &[
            "host46: -N EC65",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -j EC65",
            "host46: -A EC65 -m owner ! --uid-owner ec-postfix -j DROP",
        ],
        decided: &[("www-data", ["ip", "ip6"], "filter", "EC65", &["drop"], "drop")],
        path: &["jump EC65"],
        ..ROW
    },
    Row {
        name: "owner rule on a supplementary group",
        addrs: ("203.0.113.66", "2001:db8:200::66"),
        setup: &[
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --gid-owner ec-mailers --suppl-groups -j ACCEPT",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -j DROP",
        ],
        checks: &[("ec-suppl", "allow"), ("ec-web", "deny")],
        decided: &[
            ("ec-suppl", ["ip", "ip6"], "filter", "OUTPUT", &["{a}", "accept"], "accept"),
            ("ec-web", ["ip", "ip6"], "filter", "OUTPUT", &["{a}", "drop"], "drop"),
        ],
        ..ROW
    },
];

/// A chain policy DROP: the policy decides, and the rule that let ec-postfix through is named.
const POLICY_DROP: &[&str] = &[
    "host: nft add table inet ex64",
    "host: nft add chain inet ex64 out { type filter hook output priority 0 ; policy drop ; }",
    "host: nft add rule inet ex64 out ip daddr != {v4} accept",
    "host: nft add rule inet ex64 out ip6 daddr != {v6} accept",
    "host: nft add rule inet ex64 out meta skuid ec-postfix accept",
];

/// Makes `addrs` (IPv4, IPv6) sinks of the simulated internet and runs the `setup` lines of
/// the row `name` for them.
fn set_up(lab: &Lab, name: &str, addrs: (&str, &str), setup: &[&str]) {
    lab.add_sink(addrs.0);
    lab.add_sink(addrs.1);
    lab.setup(name, addrs, setup);
}

#[test]
fn the_deciding_rule_is_the_one_set_up_by_handle_and_text() {
    let Some(lab) = Lab::up() else { return };
    for row in ROWS {
        set_up(&lab, row.name, row.addrs, row.setup);
    }
    let mut failures = Vec::new();
    for row in ROWS {
        let file = scenario_for(&[row.addrs.0, row.addrs.1], row.timeout, row.checks);
        let doc = run_both(&lab, file.path());
        for (user, families, table, chain, marker, verdict) in row.decided {
            for (i, addr) in [row.addrs.0, row.addrs.1].into_iter().enumerate() {
                let family = families[i];
                let marker: Vec<String> = marker.iter().map(|m| m.replace("{a}", addr)).collect();
                let marker: Vec<&str> = marker.iter().map(String::as_str).collect();
                let rule = live_rule(&lab, family, table, chain, &marker);
                let p = probe(&doc, user, addr);
                let result = std::panic::catch_unwind(|| {
                    assert_rule(p, family, table, chain, &rule, verdict);
                    let path: Vec<&str> = p["decided_by"]["path"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    assert_eq!(path, row.path, "{p:#}");
                });
                if result.is_err() {
                    failures.push(format!("{}: {user} {addr}", row.name));
                }
            }
        }
        // The supplementary-group rule is `xt match owner` to nft: the iptables form says it.
        if row.name.contains("supplementary") {
            let d = &probe(&doc, "ec-suppl", row.addrs.0)["decided_by"];
            assert!(
                d["iptables"]
                    .as_str()
                    .is_some_and(|t| t.contains("--suppl-groups")),
                "{d}"
            );
            assert!(
                d["text"].as_str().unwrap().contains("--suppl-groups"),
                "{d}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "rows whose deciding rule was not the one set up: {failures:#?}"
    );
}

#[test]
fn a_chain_policy_drop_is_named_as_the_policy() {
    let Some(lab) = Lab::up() else { return };
    let (v4, v6) = ("203.0.113.64", "2001:db8:200::64");
    set_up(&lab, "policy drop", (v4, v6), POLICY_DROP);
    let file = scenario_for(&[v4, v6], "1s", WITNESSED);
    let doc = run_both(&lab, file.path());
    for addr in [v4, v6] {
        let d = &probe(&doc, "www-data", addr)["decided_by"];
        assert_eq!(d["kind"], "policy", "{d}");
        assert_eq!(d["verdict"], "drop", "{d}");
        assert_eq!(
            (
                d["family"].as_str(),
                d["table"].as_str(),
                d["chain"].as_str()
            ),
            (Some("inet"), Some("ex64"), Some("out"))
        );
        assert_eq!(
            d["text"],
            "policy drop of inet ex64 out (hook output), no rule matched"
        );
        let rule = live_rule(&lab, "inet", "ex64", "out", &["skuid", "accept"]);
        assert_rule(
            probe(&doc, "ec-postfix", addr),
            "inet",
            "ex64",
            "out",
            &rule,
            "accept",
        );
    }
}

#[test]
fn a_block_beyond_the_host_is_called_out() {
    let Some(lab) = Lab::up() else { return };
    let (v4, v6) = ("203.0.113.67", "2001:db8:200::67");
    // The host accepts everything; the simulated internet drops port 25 to these addresses
    // (an upstream firewall, a provider's port-25 block).
    set_up(
        &lab,
        "block beyond the host",
        (v4, v6),
        &["net46: -A INPUT -p tcp -d {a} --dport 25 -j DROP"],
    );
    let file = scenario_for(&[v4, v6], "1s", &[("www-data", "deny")]);
    let doc = run_both(&lab, file.path());
    for addr in [v4, v6] {
        let p = probe(&doc, "www-data", addr);
        assert_eq!(p["verdict"], "pass", "the verdict stays: {p:#}");
        let d = &p["decided_by"];
        assert_eq!(d["kind"], "beyond-host", "{d}");
        assert!(
            d["text"]
                .as_str()
                .unwrap()
                .starts_with("accepted by this host (no "),
            "{d}"
        );
        assert!(
            d["text"].as_str().unwrap().contains("blocked beyond it"),
            "{d}"
        );
    }
    assert_eq!(doc["not_enforced_by_host"], 2, "{doc:#}");
    let human = stdout(&lab.run(&["run", file.path(), "--explain"]));
    let summary = human
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_default();
    assert!(
        summary.contains("2 denies not enforced by this host"),
        "{human}"
    );
}

#[test]
fn legacy_iptables_rules_are_not_visible_never_no_rule() {
    let Some(lab) = Lab::up() else { return };
    lab.exec(
        "iptables-legacy",
        &words("-A OUTPUT -p tcp -d 203.0.113.10 --dport 25 -m owner --uid-owner www-data -j DROP"),
    );
    let file = scenario_for(&["203.0.113.10"], "1s", WITNESSED);
    let doc = run_both(&lab, file.path());
    let d = &probe(&doc, "www-data", "203.0.113.10")["decided_by"];
    assert_eq!(d["kind"], "not-visible", "{d}");
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .contains("iptables-legacy has 1 IPv4 rule(s)"),
        "{d}"
    );
    let d = &probe(&doc, "ec-postfix", "203.0.113.10")["decided_by"];
    assert_ne!(d["kind"], "no-filtering", "{d}");
}

#[test]
fn explain_needs_root() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run_as(
        "ec-web",
        &["--as", "ec-web", "--addr", "203.0.113.10", "--explain"],
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("--explain needs root"),
        "{}",
        describe(&out)
    );
}

/// Starts a run with `--explain` whose probes hang (DROP, 20 s timeout); returns it once
/// its trace table exists.
fn start_hanging(lab: &Lab) -> Running {
    lab.iptables(&words(
        "-A OUTPUT -p tcp -d 203.0.113.10 --dport 25 -j DROP",
    ));
    let file = scenario_for(&["203.0.113.10"], "20s", &[("ec-web", "deny")]);
    // The scenario file must outlive the run: leak its directory for the test's duration.
    let path = file.path().to_owned();
    std::mem::forget(file);
    // Not `Lab::run_command`: its `timeout` would be the process the tests signal, while
    // `ip netns exec` execs the binary itself.
    let mut cmd = lab.command(BIN);
    cmd.args(["run", &path, "--explain"]).env("NO_COLOR", "1");
    let running = Running::spawn(&mut cmd);
    assert!(
        wait_for(Duration::from_secs(20), || !trace_tables(lab).is_empty()),
        "the trace table never appeared"
    );
    running
}

fn interrupted_run_removes_its_table(signal: Signal, exit: i32) {
    let Some(lab) = Lab::up() else { return };
    let running = start_hanging(&lab);
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(running.pid() as i32), signal).expect("kill");
    let out = running
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|out| panic!("still running after {signal}: {}", describe(&out)));
    assert_eq!(code(&out), exit, "{}", describe(&out));
    assert!(
        trace_tables(&lab).is_empty(),
        "left after {signal}: {:?}",
        trace_tables(&lab)
    );
}

#[test]
fn sigint_removes_the_trace_table() {
    interrupted_run_removes_its_table(Signal::SIGINT, 130);
}

#[test]
fn sigterm_removes_the_trace_table() {
    interrupted_run_removes_its_table(Signal::SIGTERM, 143);
}

#[test]
fn a_table_left_by_a_sigkilled_run_is_reaped_by_the_next() {
    let Some(lab) = Lab::up() else { return };
    let running = start_hanging(&lab);
    let pid = running.pid();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
    let _ = running.wait(Duration::from_secs(20));
    let left = trace_tables(&lab);
    assert_eq!(left.len(), 1, "a SIGKILLed run cannot clean up: {left:?}");
    assert!(
        left[0].contains(&format!("egress_check_trace_{pid}")),
        "{left:?}"
    );
    let file = scenario_for(&["203.0.113.11"], "1s", &[("ec-postfix", "allow")]);
    let out = lab.run(&["run", file.path(), "--explain"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("egress_check_trace_{pid}")),
        "{}",
        describe(&out)
    );
    assert!(trace_tables(&lab).is_empty(), "{:?}", trace_tables(&lab));
}
