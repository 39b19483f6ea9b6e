//! Sweeps (issue 14): every port of a sink over both families in the lab, reported as port
//! ranges, and every one of 131,070 probes reported exactly once, also when the descriptor
//! limit forces the run into many small workers.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::fixtures::scenario;
use crate::util::lab::{within_limit, Lab, RUN_LIMIT_SECS};
use crate::util::process::{code, describe, stderr};
use crate::util::report::Report;
use crate::util::users::ensure_story_users;
use crate::util::BIN;

/// Every port of the lab's first sink, both families, as www-data expecting deny; one
/// target, so the two families are one exchange and a family split can show.
const SWEEP: &str = r#"
timeout = "1s"

[[target]]
name = "sink"
address = ["203.0.113.10", "2001:db8:200::10"]
ports = ["1-65535"]

[[check]]
as = ["www-data"]
expect = "deny"
"#;

/// An allowlist: over IPv4 www-data may reach port 25 of the sink and nothing else of it
/// (dropped); over IPv6 nothing is filtered. The sink listens on 25 and 587 (the lab's
/// `PORTS`); its other ports answer with a reset.
#[test]
fn an_allowlist_sweep_reports_exact_ranges() {
    let Some(lab) = Lab::up() else { return };
    ensure_story_users();
    // Appended to OUTPUT for TCP to the sink: `rule`.
    let to_sink = |rule: &[&str]| {
        lab.iptables(&[&["-A", "OUTPUT", "-p", "tcp", "-d", "203.0.113.10"], rule].concat());
    };
    to_sink(&[
        "--dport",
        "25",
        "-m",
        "owner",
        "--uid-owner",
        "www-data",
        "-j",
        "ACCEPT",
    ]);
    to_sink(&["-j", "DROP"]);
    let file = scenario(SWEEP);
    let human = tempfile::NamedTempFile::new().expect("temp file");
    let human_spec = format!("human={}", human.path().display());
    let out = lab.run(&[
        "run",
        file.path(),
        "--format",
        "json-compact",
        "--output",
        &human_spec,
    ]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e})\n{}", describe(&out)));
    assert_eq!(doc["compact"], true);
    let ranges: Vec<(String, String, String, String, u64)> = doc["probe_ranges"]
        .as_array()
        .expect("probe_ranges")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                s("verdict"),
                s("address"),
                s("observed"),
                s("ports"),
                r["probes"].as_u64().unwrap(),
            )
        })
        .collect();
    let row = |v: &str, a: &str, o: &str, p: &str, n| {
        (
            v.to_string(),
            a.to_string(),
            o.to_string(),
            p.to_string(),
            n,
        )
    };
    let expected: BTreeSet<_> = [
        row("fail", "203.0.113.10", "connected", "25", 1),
        row("fail", "2001:db8:200::10", "connected", "25,587", 2),
        row("pass", "203.0.113.10", "timeout", "1-24,26-65535", 65_534),
        row(
            "pass",
            "2001:db8:200::10",
            "refused",
            "1-24,26-586,588-65535",
            65_533,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        ranges.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{}",
        describe(&out)
    );
    assert_eq!(ranges.len(), 4, "each group once: {ranges:?}");
    assert_eq!(
        (
            doc["failed"].as_u64(),
            doc["passed"].as_u64(),
            doc["inconclusive"].as_u64()
        ),
        (Some(3), Some(131_067), Some(0))
    );
    let splits = doc["family_splits"].as_array().expect("family_splits");
    assert_eq!(splits.len(), 1, "{splits:?}");
    assert_eq!(splits[0]["ports"], "587");
    assert_eq!(splits[0]["leaking"], "ipv6");

    let text = std::fs::read_to_string(human.path()).expect("human report");
    assert!(
        text.starts_with("LEAK: www-data reaches sink port 587 over IPv6 while IPv4 is blocked"),
        "{text}"
    );
    assert!(
        text.contains("203.0.113.10 1-24,26-65535 timeout"),
        "{text}"
    );
    assert!(
        text.contains("[2001:db8:200::10] 1-24,26-586,588-65535 refused"),
        "{text}"
    );
    assert!(text.lines().count() < 20, "{text}");
}

/// 131,070 probes under `prlimit --nofile=1024:1024`: the run is spread over many small
/// workers, says it was limited, and reports every probe exactly once.
#[test]
fn a_sweep_under_a_low_descriptor_limit_reports_every_probe_once() {
    let Some(lab) = Lab::up() else { return };
    ensure_story_users();
    lab.ip46tables(&[
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-m",
        "owner",
        "--uid-owner",
        "www-data",
        "-j",
        "DROP",
    ]);
    let file = scenario(SWEEP);
    let args = ["run", file.path(), "--format", "json"];
    let out = lab
        .command("timeout")
        .args([
            "--kill-after=10",
            RUN_LIMIT_SECS,
            "prlimit",
            "--nofile=1024:1024",
            BIN,
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run egress-check under prlimit");
    let out = within_limit(out, &args);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stderr(&out).contains("limited by the descriptor limit"),
        "{}",
        describe(&out)
    );
    let report = Report::parse(&out);
    assert_eq!(report.probes.len(), 131_070);
    let distinct: BTreeSet<(&str, u64)> = report
        .probes
        .iter()
        .map(|p| (p.family.as_str(), p.port))
        .collect();
    assert_eq!(distinct.len(), 131_070, "a probe reported twice");
    assert!(
        report
            .probes
            .iter()
            .all(|p| p.observed == "timeout" && p.verdict == "pass"),
        "every probe was dropped: {:?}",
        report.probes.iter().find(|p| p.observed != "timeout")
    );
}

/// A ruleset that lets DNS out only to another resolver: the lab's DNS server is refused by
/// this host's own firewall, and the report says so in words, not in a resolver library's.
#[test]
fn dns_blocked_by_this_hosts_firewall_says_so() {
    let Some(lab) = Lab::up() else { return };
    ensure_story_users();
    for proto in ["udp", "tcp"] {
        lab.ip46tables(&["-A", "OUTPUT", "-p", proto, "--dport", "53", "-j", "DROP"]);
    }
    let (out, report) = lab.run_json(&[
        "--as",
        "www-data",
        "--mx",
        "dual.test",
        "--nameserver",
        crate::util::lab::LAB_DNS_V4,
    ]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let detail = report.probes[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains(
            "DNS query to 198.51.100.2 blocked by this host's firewall (Operation not permitted)"
        ),
        "{}",
        describe(&out)
    );
}

/// A full accept queue is a kernel limit, not a verdict: a listener in the probes' own
/// namespace with a backlog of 0 that never accepts overflows as soon as a few local probes
/// reach it (`TcpExt ListenOverflows` moves), and then the timeout of a dropped, non-local
/// probe, which alone would pass, is inconclusive with the counter and the namespace named.
#[test]
fn a_listen_queue_overflow_makes_timeouts_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    ensure_story_users();
    const PORT: u16 = 2599;
    // Made inside the lab's host namespace from a thread that entered it; the socket stays
    // in that namespace after the thread ends.
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.host_ns())).expect("host netns");
    let listener = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let addr: std::net::SocketAddr = ([0, 0, 0, 0], PORT).into();
        socket.bind(&addr.into()).expect("bind");
        socket.listen(0).expect("listen");
        socket
    })
    .join()
    .expect("listener thread");
    lab.iptables(&[
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "203.0.113.10",
        "--dport",
        "2599",
        "-j",
        "DROP",
    ]);
    let mut args = vec!["--as", "www-data", "--local", "--timeout", "1s"];
    let loopbacks: Vec<String> = (1..=16).map(|i| format!("127.0.0.{i}")).collect();
    for addr in &loopbacks {
        args.extend(["--addr", addr.as_str()]);
    }
    args.extend([
        "--addr",
        "203.0.113.10",
        "--port",
        "2599",
        "--expect",
        "deny",
    ]);
    let (out, report) = lab.run_json(&args);
    drop(listener);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let dropped = report
        .probes
        .iter()
        .find(|p| p.address.as_deref() == Some("203.0.113.10"))
        .expect("the dropped probe");
    assert_eq!(
        (dropped.observed.as_str(), dropped.verdict.as_str()),
        ("timeout", "inconclusive"),
        "{}",
        describe(&out)
    );
    let detail = dropped.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("TcpExt ListenOverflows +")
            && detail.contains("in the probes' network namespace"),
        "{detail}"
    );
}
