//! Truth at the edges (issue 9): destinations that never leave the host, and AAAA records
//! that are really IPv4. The real binary runs in namespace labs (`ci/lab`, see
//! `tests/common`) whose host runs a mail server listening on port 25 on every address, as
//! an MTA host does: a probe that wrongly connects to the host itself would succeed there.
//!
//! Every report of every test is checked against the invariants ([`check_invariants`]):
//! the verdict follows from expect and observed, `error`/`no-address` and local probes never
//! pass, a passing deny is witnessed exactly when a non-local probe connected to the same
//! address, interface and port, no local probe is part of a family split, and a probe's
//! family is the family of its address on the wire (never an IPv4-mapped address).
//!
//! What is specific to the lab: the edge records are in the test kit's zone
//! (`testkit/src/test_lab.rs`), the host's MTA is the test kit's, and [`Link`] reads the
//! lab's veth and its link-local addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Output};

use egress_check_testkit::mta::Mta;
use serde_json::Value;

use crate::util::fixtures::scenario;
use crate::util::lab::{Lab, LAB_DNS_V4};
use crate::util::process::{code, describe, stderr, stdout, words};
use crate::util::report::{judge, Probe, Report};

/// What a mail server host has: a listener on port 25 on every address of the host
/// namespace (both families, loopback and link-local included), greeting like an MTA. It
/// counts the connections it accepted.
fn mail_server_on_every_host_address(lab: &Lab) -> Mta {
    lab.host_mta(25)
}

/// Connections the host's own mail server accepted so far.
fn accepted(server: &Mta) -> usize {
    server.accepted()
}

/// The nameserver with the edge records (the lab's own: its zone has them, see
/// `testkit/src/test_lab.rs`), for `--nameserver`.
fn edge_ns() -> String {
    LAB_DNS_V4.to_string()
}

/// The arguments of an ad hoc check as `user` expecting `expect` (`--as USER --expect EXPECT
/// --timeout 1s`), followed by the words of `more` (destinations, `--nameserver`, `--local`).
///
/// The timeout is 1 s, not the default 3 s, only to keep the probes that a rule drops short:
/// every outcome these tests assert is the same either way.
fn adhoc<'a>(user: &'a str, expect: &'a str, more: &'a str) -> Vec<&'a str> {
    let mut args = vec!["--as", user, "--expect", expect, "--timeout", "1s"];
    args.extend(words(more));
    args
}

/// The lab's own host addresses (the test kit's address plan), which the edge zone answers
/// for `self.test`.
const HOST_V4: &str = "198.51.100.1";
const HOST_V6: &str = "2001:db8:100::1";

/// The lab's veth link as the host sees it: its interface, and the link-local addresses of
/// both ends.
struct Link {
    interface: String,
    index: u32,
    host_link_local: String,
    peer_link_local: String,
}

impl Link {
    fn of(lab: &Lab) -> Link {
        // The kernel adds a link-local address once both veth ends are up, and only uses it
        // after duplicate address detection: wait (bounded) until it is there and usable.
        let link_local = |ns: &str| -> (String, String) {
            let start = std::time::Instant::now();
            loop {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns, "ip", "-6", "-o", "addr", "show"])
                    .args(["scope", "link", "-tentative"])
                    .output()
                    .expect("ip addr");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                // "3: eth0@if2    inet6 fe80::.../64 scope link ..."
                let fields: Vec<&str> = text.split_whitespace().collect();
                if fields.len() > 3 {
                    let interface = fields[1].split('@').next().unwrap().to_string();
                    let addr = fields[3].split('/').next().unwrap().to_string();
                    return (interface, addr);
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "no usable link-local address in {ns}: {text:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        let (interface, host_link_local) = link_local(&lab.host_ns());
        let (_, peer_link_local) = link_local(&lab.net_ns());
        // `ip netns exec` mounts the namespace's own /sys.
        let out = lab.exec("cat", &[&format!("/sys/class/net/{interface}/ifindex")]);
        let index = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("interface index");
        Link {
            interface,
            index,
            host_link_local,
            peer_link_local,
        }
    }
}

/// One probe's fields that the shared report parser does not know (added for issue 9).
#[derive(Debug)]
struct Edge {
    local: bool,
    record: Option<String>,
    zone: Option<String>,
}

/// A run's JSON report, parsed and checked against every invariant.
struct Run {
    out: Output,
    report: Report,
    doc: Value,
    edges: Vec<Edge>,
}

impl Run {
    fn probes(&self) -> impl Iterator<Item = (&Probe, &Edge)> {
        self.report.probes.iter().zip(&self.edges)
    }

    fn exit(&self) -> i32 {
        code(&self.out)
    }
}

/// Runs `egress-check ARGS --format json` in the lab's host namespace and checks every
/// invariant of the report.
fn checked(lab: &Lab, args: &[&str], host_addresses: &[&str]) -> Run {
    let (out, report) = lab.run_json(args);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let edges = doc["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| Edge {
            local: p["local"]
                .as_bool()
                .unwrap_or_else(|| panic!("probe without `local`: {p}")),
            record: p["record"].as_str().map(String::from),
            zone: p["zone"].as_str().map(String::from),
        })
        .collect();
    let run = Run {
        out,
        report,
        doc,
        edges,
    };
    let errors = check_invariants(&run, host_addresses);
    assert!(
        errors.is_empty(),
        "invariants broken:\n  {}\n{}",
        errors.join("\n  "),
        describe(&run.out)
    );
    run
}

/// Addresses a connection to which never leaves the host, whatever the namespace.
fn stays_on_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.octets()[0] == 0 || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_multicast(),
    }
}

/// Every rule a report must obey; `host_addresses` are the probing namespace's own.
fn check_invariants(run: &Run, host_addresses: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    let report = &run.report;
    if run.exit() != report.documented_exit() {
        errors.push(format!(
            "exit {} disagrees with failed={} inconclusive={}",
            run.exit(),
            report.failed,
            report.inconclusive
        ));
    }
    let connected: BTreeSet<(String, Option<String>, u64)> = run
        .probes()
        .filter(|(p, e)| p.observed == "connected" && !e.local)
        .filter_map(|(p, e)| Some((p.address.clone()?, e.zone.clone(), p.port)))
        .collect();
    for (p, e) in run.probes() {
        let at = format!(
            "{} {} {:?}:{} ({:?})",
            p.user, p.family, p.address, p.port, p.detail
        );
        let verdict = if e.local {
            "inconclusive"
        } else {
            judge(&p.expect, &p.observed)
        };
        if p.verdict != verdict {
            errors.push(format!(
                "{at}: expect {} observed {} local {} must be {verdict}, is {}",
                p.expect, p.observed, e.local, p.verdict
            ));
        }
        if (e.local || matches!(p.observed.as_str(), "error" | "no-address")) && p.verdict == "pass"
        {
            errors.push(format!("{at}: {} (local {}) passed", p.observed, e.local));
        }
        let witnessed = (p.expect == "deny" && p.verdict == "pass").then(|| {
            p.address
                .as_ref()
                .is_some_and(|a| connected.contains(&(a.clone(), e.zone.clone(), p.port)))
        });
        if p.witnessed != witnessed {
            errors.push(format!(
                "{at}: witnessed is {:?}, the run's non-local connections say {witnessed:?}",
                p.witnessed
            ));
        }
        if e.local
            && (p.witnessed.is_some()
                || p.detail
                    .as_deref()
                    .is_none_or(|d| !d.contains("local: does not cross the egress path")))
        {
            errors.push(format!(
                "{at}: a local probe must say so and witness nothing"
            ));
        }
        match p.address.as_deref().map(|a| a.parse::<IpAddr>().unwrap()) {
            Some(ip) => {
                let wire = match ip {
                    IpAddr::V4(_) => "ipv4",
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "mapped",
                    IpAddr::V6(_) => "ipv6",
                };
                if wire != p.family {
                    errors.push(format!(
                        "{at}: family {} but the wire says {wire}",
                        p.family
                    ));
                }
                let own = host_addresses.contains(&ip.to_string().as_str());
                if (stays_on_host(ip) || own) != e.local {
                    errors.push(format!(
                        "{at}: the address stays on the host: {}, but local is {}",
                        stays_on_host(ip) || own,
                        e.local
                    ));
                }
                if let IpAddr::V6(v6) = ip {
                    if v6.segments()[0] & 0xffc0 == 0xfe80 && e.zone.is_none() {
                        errors.push(format!("{at}: link-local without an interface"));
                    }
                }
            }
            None => {
                if p.observed != "no-address" || e.local || e.record.is_some() || e.zone.is_some() {
                    errors.push(format!("{at}: {} without an address", p.observed));
                }
            }
        }
        if p.observed == "no-address" && p.address.is_some() {
            errors.push(format!("{at}: no-address probe with an address"));
        }
    }
    // Family splits: exactly those of the non-local probes.
    let mut want: BTreeSet<(String, String, u64, String, String)> = BTreeSet::new();
    let keyed = |p: &Probe| {
        (
            p.user.clone(),
            p.exchange.clone().unwrap_or_else(|| p.target.clone()),
            p.port,
        )
    };
    let non_local: Vec<&Probe> = run
        .probes()
        .filter(|(_, e)| !e.local)
        .map(|(p, _)| p)
        .collect();
    for p in &non_local {
        for q in &non_local {
            if keyed(p) == keyed(q)
                && p.observed == "connected"
                && matches!(q.observed.as_str(), "refused" | "unreachable" | "timeout")
                && !non_local.iter().any(|r| {
                    keyed(r) == keyed(q) && r.family == q.family && r.observed == "connected"
                })
            {
                let (user, exchange, port) = keyed(p);
                want.insert((user, exchange, port, p.family.clone(), q.family.clone()));
            }
        }
    }
    let got: BTreeSet<(String, String, u64, String, String)> = run.doc["family_splits"]
        .as_array()
        .expect("family_splits")
        .iter()
        .map(|s| {
            (
                s["user"].as_str().unwrap().to_string(),
                s["exchange"].as_str().unwrap().to_string(),
                s["port"].as_u64().unwrap(),
                s["leaking"].as_str().unwrap().to_string(),
                s["blocked"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    if got != want {
        errors.push(format!(
            "family splits {got:?}, the non-local probes make {want:?}"
        ));
    }
    errors
}

/// Runs the binary (any output format) and returns its output, for usage errors.
fn run_raw(lab: &Lab, args: &[&str]) -> Output {
    lab.run(args)
}

#[track_caller]
fn assert_usage_error(out: &Output, words: &[&str]) {
    assert_eq!(code(out), 2, "{}", describe(out));
    assert!(
        stdout(out).is_empty(),
        "nothing may be probed: {}",
        describe(out)
    );
    let err = stderr(out);
    for w in words {
        assert!(err.contains(w), "stderr lacks {w:?}: {}", describe(out));
    }
}

/// Sinkhole answers (0.0.0.0, ::), loopback and the host's own addresses from DNS are never
/// probed, although the host's MTA would have answered on every one of them: each is
/// no-address with the record, the nameserver and why. `resolve` shows them first.
#[test]
fn dns_answers_that_stay_on_the_host_are_never_probed() {
    let Some(lab) = Lab::up() else { return };
    let server = mail_server_on_every_host_address(&lab);
    let ns = edge_ns();
    let host = [HOST_V4, HOST_V6];

    let args = format!(
        "--nameserver {ns} --mx sinkhole.test --mx loopback.test --mx self.test \
         --host www.blocked.test"
    );
    let run = checked(&lab, &adhoc("ec-postfix", "allow", &args), &host);
    assert_eq!(run.exit(), 3, "{}", describe(&run.out));
    assert_eq!(run.report.probes.len(), 8, "{:#?}", run.report.probes);
    for (p, _) in run.probes() {
        assert_eq!(p.observed, "no-address", "{p:#?}");
        let detail = p.detail.as_deref().unwrap();
        assert!(
            detail.starts_with(&format!("DNS server {ns} answered ")),
            "{detail}"
        );
        assert!(detail.contains("not probed"), "{detail}");
    }
    let detail_of = |exchange: &str, family: &str| {
        run.report
            .probes
            .iter()
            .find(|p| p.exchange.as_deref() == Some(exchange) && p.family == family)
            .and_then(|p| p.detail.clone())
            .unwrap_or_else(|| panic!("no {family} probe of {exchange}"))
    };
    let sink = detail_of("mx.sinkhole.test", "ipv4");
    assert!(
        sink.contains("answered A 0.0.0.0 for mx.sinkhole.test: a sinkhole or a broken zone"),
        "{sink}"
    );
    assert!(detail_of("mx.sinkhole.test", "ipv6").contains("answered AAAA :: for"));
    assert!(detail_of("mx.loopback.test", "ipv6").contains("AAAA ::1"));
    assert!(detail_of("mx.self.test", "ipv4").contains("an address of this host"));
    assert!(detail_of("www.blocked.test", "ipv4").contains("A 0.0.0.0"));
    assert_eq!(
        accepted(&server),
        0,
        "the host's MTA was reached: {}",
        "(see the test kit's host MTA)"
    );

    // A good answer next to a sinkhole is probed; the sinkhole stays visible.
    let run = run_mixed(&lab, &ns, &host);
    assert_eq!(accepted(&server), 0, "{}", "(see the test kit's host MTA)");
    drop(run);

    // `resolve` says so before anything runs, and exits 3.
    let out = lab.run(&["resolve", "--nameserver", &ns, "sinkhole.test", "self.test"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("A    0.0.0.0  -- NOT PROBED (unspecified): a sinkhole or a broken zone"),
        "{text}"
    );
    assert!(
        text.contains(&format!("A    {HOST_V4}  -- NOT PROBED (own)")),
        "{text}"
    );
    let out = lab.run(&[
        "resolve",
        "--nameserver",
        &ns,
        "--format",
        "json",
        "sinkhole.test",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ipv6 = &doc[0]["exchanges"][0]["ipv6"];
    assert_eq!(ipv6["addresses"], serde_json::json!(["::"]), "{doc}");
    assert_eq!(ipv6["special"][0]["class"], "unspecified", "{doc}");
    assert_eq!(ipv6["special"][0]["probed"], false, "{doc}");
}

fn run_mixed(lab: &Lab, ns: &str, host: &[&str]) -> Run {
    let args = format!("--nameserver {ns} --mx mixed.test");
    let run = checked(lab, &adhoc("ec-postfix", "allow", &args), host);
    let mut seen: Vec<(String, Option<String>, String)> = run
        .report
        .probes
        .iter()
        .map(|p| (p.family.clone(), p.address.clone(), p.observed.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("ipv4".into(), None, "no-address".into()),
            (
                "ipv4".into(),
                Some("203.0.113.12".into()),
                "connected".into()
            ),
            (
                "ipv6".into(),
                Some("2001:db8:200::12".into()),
                "connected".into()
            ),
        ],
        "{}",
        describe(&run.out)
    );
    let merged = run
        .probes()
        .find(|(p, _)| p.address.as_deref() == Some("203.0.113.12"))
        .unwrap();
    assert_eq!(
        merged.1.record.as_deref(),
        Some("A 203.0.113.12, AAAA ::ffff:203.0.113.12")
    );
    run
}

/// An IPv4-mapped AAAA is IPv4 on the wire. With ip6tables dropping port 25, the mapped
/// "IPv6" probe used to connect and pass: IPv6 looked open while it was blocked. Now it is
/// reported under IPv4, and IPv6 is no-address.
#[test]
fn mapped_aaaa_with_ip6tables_dropping_port_25() {
    let Some(lab) = Lab::up() else { return };
    let ns = edge_ns();
    lab.ip6tables(&words("-A OUTPUT -p tcp --dport 25 -j DROP"));
    let link = Link::of(&lab);
    let host = [HOST_V4, HOST_V6, link.host_link_local.as_str()];

    let args =
        format!("--nameserver {ns} --mx mapped.test --mx maponly.test --addr ::ffff:203.0.113.12");
    let run = checked(&lab, &adhoc("ec-postfix", "allow", &args), &host);
    assert_eq!(run.exit(), 3, "{}", describe(&run.out));
    for (p, e) in run.probes() {
        match p.family.as_str() {
            "ipv4" => {
                assert_eq!(
                    (p.observed.as_str(), p.verdict.as_str()),
                    ("connected", "pass"),
                    "{p:#?}"
                );
                let record = e.record.as_deref().unwrap_or_default();
                assert!(record.contains("::ffff:203.0.113."), "{p:#?} {e:?}");
                assert!(
                    p.detail.as_deref().unwrap().contains("IPv4-mapped"),
                    "{p:#?}"
                );
            }
            _ => {
                // IPv6 was never tested: visibly, not as a pass.
                assert_eq!(p.observed, "no-address", "{p:#?}");
                assert!(
                    p.detail.as_deref().unwrap().contains("IPv4-mapped"),
                    "{p:#?}"
                );
            }
        }
    }
    assert_eq!(run.report.of("ec-postfix", "ipv4").len(), 3);
    assert_eq!(
        run.report.of("ec-postfix", "ipv6").len(),
        2,
        "the literal is IPv4 only"
    );
    let literal = run
        .probes()
        .find(|(p, _)| p.target == "::ffff:203.0.113.12")
        .unwrap();
    assert_eq!(literal.0.address.as_deref(), Some("203.0.113.12"));
    assert_eq!(literal.1.record.as_deref(), Some("::ffff:203.0.113.12"));

    // IPv6 really is blocked: a scoped link-local probe to the peer times out.
    let peer = format!("{}%{}", link.peer_link_local, link.interface);
    let run = checked(
        &lab,
        &adhoc("ec-web", "deny", &format!("--addr {peer}")),
        &host,
    );
    let (p, e) = run.probes().next().unwrap();
    assert_eq!(
        (p.observed.as_str(), p.verdict.as_str()),
        ("timeout", "pass"),
        "{p:#?}"
    );
    assert_eq!(e.zone.as_deref(), Some(link.interface.as_str()));
}

/// The reverse: iptables drops port 25, IPv6 is open. The mapped "IPv6" probe used to time
/// out and pass a deny that was never tested over IPv6. Now the IPv4 deny is reported as
/// what it is, IPv6 is no-address, and no family split is claimed.
#[test]
fn mapped_aaaa_with_iptables_dropping_port_25() {
    let Some(lab) = Lab::up() else { return };
    let ns = edge_ns();
    lab.iptables(&words("-A OUTPUT -p tcp --dport 25 -j DROP"));
    let host = [HOST_V4, HOST_V6];

    let args =
        format!("--nameserver {ns} --mx maponly.test --mx mapped.test --addr ::ffff:203.0.113.12");
    let run = checked(&lab, &adhoc("ec-web", "deny", &args), &host);
    assert_eq!(run.exit(), 3, "{}", describe(&run.out));
    for p in run.report.of("ec-web", "ipv4") {
        assert_eq!(
            (p.observed.as_str(), p.verdict.as_str()),
            ("timeout", "pass"),
            "{p:#?}"
        );
    }
    for p in run.report.of("ec-web", "ipv6") {
        assert_eq!(p.observed, "no-address", "{p:#?}");
    }
    assert_eq!(run.report.of("ec-web", "ipv4").len(), 3);

    // The MTA's user: IPv4 fails (it is dropped), IPv6 is untested; no split either way.
    let args = format!("--nameserver {ns} --mx mapped.test");
    let run = checked(&lab, &adhoc("ec-postfix", "allow", &args), &host);
    assert_eq!(run.exit(), 1, "{}", describe(&run.out));
    assert!(run.doc["family_splits"].as_array().unwrap().is_empty());
    run.report
        .expect_probes("ec-postfix", "ipv4", 1, &["timeout"], "fail");
    run.report
        .expect_probes("ec-postfix", "ipv6", 1, &["no-address"], "inconclusive");
}

/// Literal destinations that are not egress are usage errors (exit 2, nothing probed, the
/// fix named); scenario errors keep `file:line:col`, also for the checks that need the
/// probing namespace (the host's own address).
#[test]
fn literal_destinations_that_are_not_egress_are_usage_errors() {
    let Some(lab) = Lab::up() else { return };
    let server = mail_server_on_every_host_address(&lab);
    let link = Link::of(&lab);
    let own_link_local = format!("{}%{}", link.host_link_local, link.interface);
    for (addr, words) in [
        (
            "0.0.0.0",
            &["`0.0.0.0` is an unspecified address", "not a destination"][..],
        ),
        ("0.1.2.3", &["unspecified"][..]),
        ("::", &["`::` is an unspecified address"][..]),
        ("224.0.0.1", &["multicast"][..]),
        ("ff02::1", &["multicast"][..]),
        ("255.255.255.255", &["limited broadcast"][..]),
        (
            "198.51.100.255",
            &["the broadcast address of the subnet of interface"][..],
        ),
        ("127.0.0.1", &["loopback", "--local"][..]),
        ("::1", &["loopback", "--local"][..]),
        ("::ffff:127.0.0.1", &["loopback"][..]),
        (HOST_V4, &["an address of this host", "--local"][..]),
        (HOST_V6, &["an address of this host", "--local"][..]),
        (own_link_local.as_str(), &["an address of this host"][..]),
        ("fe80::1", &["link-local", "`fe80::1%eth0`"][..]),
        (
            "fe80::1%no-such-if",
            &["no interface `no-such-if`", "lo"][..],
        ),
        ("192.0.2.1%lo", &["only an IPv6 link-local address"][..]),
    ] {
        let args = format!("--addr {addr}");
        assert_usage_error(&run_raw(&lab, &adhoc("ec-postfix", "allow", &args)), words);
    }
    // Unspecified, multicast and broadcast stay errors with the opt-in.
    for addr in ["0.0.0.0", "::", "224.0.0.1", "198.51.100.255"] {
        let args = format!("--local --addr {addr}");
        assert_usage_error(
            &run_raw(&lab, &adhoc("ec-postfix", "allow", &args)),
            &["not a destination"],
        );
    }
    assert_usage_error(
        &run_raw(
            &lab,
            &["--as", "ec-postfix", "--local", "--mx", "dual.test"],
        ),
        &["--addr"],
    );

    // Scenario files: located, both for what the file alone shows and for what only the
    // namespace shows.
    for (addresses, location, words) in [
        ("\"203.0.113.10\", \"0.0.0.0\"", ":5:28:", "unspecified"),
        ("\"127.0.0.1\"", ":5:12:", "local = true"),
        ("\"fe80::1\"", ":5:12:", "`fe80::1%eth0`"),
        (
            &format!("\"203.0.113.10\", \"{HOST_V4}\"") as &str,
            ":5:28:",
            "an address of this host",
        ),
        ("\"fe80::1%nope\"", ":5:12:", "no interface `nope`"),
    ] {
        let file = scenario(&format!(
            "timeout = \"1s\"\n\n[[target]]\nname = \"t\"\naddress = [{addresses}]\n\n\
             [[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n"
        ));
        let out = run_raw(&lab, &["run", file.path()]);
        assert_usage_error(&out, &[&format!("scenario.toml{location}"), words]);
    }
    let file = scenario(
        "[[target]]\nname = \"t\"\nmx = \"dual.test\"\nlocal = true\n\n\
         [[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n",
    );
    assert_usage_error(
        &run_raw(&lab, &["run", file.path()]),
        &[
            "scenario.toml:4:9:",
            "`local` applies to `address` targets only",
        ],
    );
    assert_eq!(
        accepted(&server),
        0,
        "something was probed: {}",
        "(see the test kit's host MTA)"
    );
}

/// Opted-in local destinations are probed and shown, but never pass (inconclusive), never
/// witness a deny and are never part of a family split, even when the loopback of one
/// family is blocked and the other's is open.
#[test]
fn opted_in_local_destinations_never_pass_witness_or_split() {
    let Some(lab) = Lab::up() else { return };
    let server = mail_server_on_every_host_address(&lab);
    let link = Link::of(&lab);
    let own_link_local = format!("{}%{}", link.host_link_local, link.interface);
    let own_by_index = format!("{}%{}", link.host_link_local, link.index);
    let host = [HOST_V4, HOST_V6, link.host_link_local.as_str()];
    for expect in ["allow", "deny"] {
        let args = format!(
            "--local --addr 127.0.0.1 --addr ::1 --addr {HOST_V4} --addr {HOST_V6} \
             --addr {own_link_local} --addr ::ffff:127.0.0.2"
        );
        let run = checked(&lab, &adhoc("ec-postfix", expect, &args), &host);
        assert_eq!(run.exit(), 3, "{}", describe(&run.out));
        assert_eq!(run.report.probes.len(), 6);
        for (p, e) in run.probes() {
            assert!(e.local, "{p:#?}");
            assert_eq!(
                (p.observed.as_str(), p.verdict.as_str()),
                ("connected", "inconclusive")
            );
        }
        let human = lab.run(&adhoc(
            "ec-postfix",
            expect,
            &format!("--local --addr {own_by_index}"),
        ));
        assert_eq!(code(&human), 3, "{}", describe(&human));
        let text = stdout(&human);
        assert!(
            text.contains(&format!("[{}%{}]:25", link.host_link_local, link.interface)),
            "{text}"
        );
        assert!(
            text.contains("[local]") && text.contains("local: does not cross the egress path"),
            "{text}"
        );
    }
    assert!(
        accepted(&server) >= 12,
        "{}",
        "(see the test kit's host MTA)"
    );

    // Loopback blocked over IPv4 only: not a split, because loopback is not the egress path.
    lab.iptables(&words(
        "-A OUTPUT -d 127.0.0.1 -p tcp --dport 25 -j REJECT --reject-with tcp-reset",
    ));
    // ... while the real egress path is dropped for ec-web, so its deny of the sink passes;
    // a local connection to the host must not witness it.
    lab.iptables(&words(
        "-A OUTPUT -m owner --uid-owner ec-web -d 203.0.113.0/24 -p tcp --dport 25 -j DROP",
    ));
    let file = scenario(
        "timeout = \"1s\"\n\n\
         [[target]]\nname = \"lo\"\naddress = [\"127.0.0.1\", \"::1\"]\nlocal = true\n\n\
         [[target]]\nname = \"sink\"\naddress = [\"203.0.113.10\"]\n\n\
         [[check]]\nas = [\"ec-web\", \"ec-postfix\"]\nto = [\"lo\"]\nexpect = \"allow\"\n\n\
         [[check]]\nas = [\"ec-web\"]\nto = [\"sink\"]\nexpect = \"deny\"\n",
    );
    let run = checked(&lab, &["run", file.path()], &host);
    assert_eq!(run.exit(), 3, "{}", describe(&run.out));
    assert!(
        run.doc["family_splits"].as_array().unwrap().is_empty(),
        "{}",
        describe(&run.out)
    );
    let mut seen: Vec<(String, String, String, bool)> = run
        .probes()
        .map(|(p, e)| {
            (
                p.user.clone(),
                p.family.clone(),
                p.observed.clone(),
                e.local,
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("ec-postfix".into(), "ipv4".into(), "refused".into(), true),
            ("ec-postfix".into(), "ipv6".into(), "connected".into(), true),
            ("ec-web".into(), "ipv4".into(), "refused".into(), true),
            ("ec-web".into(), "ipv4".into(), "timeout".into(), false),
            ("ec-web".into(), "ipv6".into(), "connected".into(), true),
        ]
    );
    let deny = run.probes().find(|(_, e)| !e.local).unwrap().0;
    assert_eq!(
        (deny.verdict.as_str(), deny.witnessed),
        ("pass", Some(false))
    );
    assert_eq!(run.report.passed, 1);
}

/// Link-local needs its interface, given by name or index; with it the probe crosses the
/// link like any other (and the firewall judges it); literal mapped addresses are IPv4.
#[test]
fn scoped_link_local_and_mapped_literals_are_probed_as_they_go_out() {
    let Some(lab) = Lab::up() else { return };
    let link = Link::of(&lab);
    // The lab's sinks listen on their own addresses, not on the link's: a mail server on the
    // peer's link-local address is what this test talks to.
    let _peer = lab.peer_link_local_mta(&link.peer_link_local, 25);
    let host = [HOST_V4, HOST_V6, link.host_link_local.as_str()];
    let by_name = format!("{}%{}", link.peer_link_local, link.interface);
    let by_index = format!("{}%{}", link.peer_link_local, link.index);
    let file = scenario(&format!(
        "timeout = \"1s\"\n\n[[target]]\nname = \"peer\"\naddress = [\"{by_name}\", \
         \"::ffff:203.0.113.11\"]\n\n[[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n"
    ));
    let run = checked(&lab, &["run", file.path()], &host);
    assert_eq!(run.exit(), 0, "{}", describe(&run.out));
    let mut seen: Vec<(String, String, Option<String>, Option<String>)> = run
        .probes()
        .map(|(p, e)| {
            (
                p.family.clone(),
                p.address.clone().unwrap(),
                e.zone.clone(),
                e.record.clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "ipv4".into(),
                "203.0.113.11".into(),
                None,
                Some("::ffff:203.0.113.11".into())
            ),
            (
                "ipv6".into(),
                link.peer_link_local.clone(),
                Some(link.interface.clone()),
                Some(by_name.clone())
            ),
        ]
    );
    let run = checked(
        &lab,
        &adhoc("ec-postfix", "allow", &format!("--addr {by_index}")),
        &host,
    );
    run.report
        .expect_probes("ec-postfix", "ipv6", 1, &["connected"], "pass");

    // ip6tables sees link-local traffic: blocked for ec-web, its deny passes, witnessed
    // by ec-postfix's connection over the same interface.
    lab.ip6tables(&words(
        "-A OUTPUT -m owner --uid-owner ec-web -p tcp --dport 25 -j REJECT --reject-with tcp-reset",
    ));
    let file = scenario(&format!(
        "timeout = \"1s\"\n\n[[target]]\nname = \"peer\"\naddress = [\"{by_name}\"]\n\n\
         [[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n\n\
         [[check]]\nas = [\"ec-web\"]\nexpect = \"deny\"\n"
    ));
    let run = checked(&lab, &["run", file.path()], &host);
    assert_eq!(run.exit(), 0, "{}", describe(&run.out));
    run.report
        .expect_probes("ec-web", "ipv6", 1, &["refused", "timeout"], "pass");
    assert_eq!(run.report.of("ec-web", "ipv6")[0].witnessed, Some(true));
}
