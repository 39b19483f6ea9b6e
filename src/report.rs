//! Reports: a run's [`Judgement`] written for people (human), scripts (json) and CI test
//! reporters (junit), and `resolve`'s answers ([`ResolveReport`]). Rendering only: every
//! verdict was decided in [`crate::verdict`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::probe::Observed;
use crate::service::ServiceIdentity;
use crate::verdict::{FamilySplit, Judgement, ProbeRecord, Verdict};
use crate::vocab::{counted, Expectation, Family};

pub mod prometheus;
mod resolution;

pub use resolution::ResolveReport;

/// `address:port` of a probe (`[fe80::1%eth0]:25` with an interface), or
/// `(no address):port`.
fn endpoint(p: &ProbeRecord) -> String {
    match (p.address, &p.zone) {
        (Some(addr), Some(zone)) => format!("[{addr}%{zone}]:{}", p.spec.port),
        (Some(addr), None) => SocketAddr::new(addr, p.spec.port).to_string(),
        (None, _) => format!("(no address):{}", p.spec.port),
    }
}

/// The exchange (with its MX preference) or the target's name.
fn host(p: &ProbeRecord) -> String {
    match (&p.spec.exchange, p.spec.preference) {
        (Some(name), Some(pref)) => format!("{name} (MX {pref})"),
        (Some(name), None) => name.clone(),
        (None, _) => p.spec.target.clone(),
    }
}

/// The `pid:`/`unit:` identity a probe's `user` names, if it is one.
fn service_of<'a>(report: &'a Judgement, user: &str) -> Option<&'a ServiceIdentity> {
    report.identities.iter().find(|s| s.key == user)
}

/// How a group's header names who probed: `www-data (uid 33)`, or the identity with its
/// process (`unit:php8.2-fpm.service (pid 812, uid 33 www-data)`).
fn who(report: &Judgement, user: &str, uid: u32) -> String {
    match service_of(report, user) {
        Some(service) => service.describe(),
        None => format!("{user} (uid {uid})"),
    }
}

/// A name for JUnit that stays the same across runs: the user, the unit, or for `pid:`
/// the program and its user (a pid changes with every restart).
/// Used for JUnit names and Prometheus labels, which must not change from run to run.
pub(crate) fn stable_label(report: &Judgement, user: &str) -> String {
    match service_of(report, user) {
        Some(s) if s.unit.is_none() => format!(
            "process:{}/{}",
            s.comm,
            s.user_name
                .clone()
                .unwrap_or_else(|| s.credentials.uid().to_string())
        ),
        _ => user.to_string(),
    }
}

/// One paragraph per `pid:`/`unit:` identity: where its probes stood, and what could not be
/// reproduced there.
pub fn identities_text(identities: &[ServiceIdentity]) -> String {
    let mut out = String::new();
    for s in identities {
        let _ = writeln!(
            out,
            "{}: cgroup {}, network namespace net:[{}]{}",
            s.describe(),
            s.cgroup.as_deref().unwrap_or("(none joined)"),
            s.netns.inode,
            if s.netns.foreign {
                " (its own)"
            } else {
                " (this host's)"
            }
        );
        for what in &s.not_reproduced {
            let _ = writeln!(out, "  not reproduced: {what}");
        }
    }
    out
}

/// The one-line summary.
pub fn summary(report: &Judgement) -> String {
    let mut line = format!(
        "{} failed, {} inconclusive, {} passed ({})",
        report.failed,
        report.inconclusive,
        report.passed,
        counted(report.probes.len(), "probe", "probes")
    );
    if report.unwitnessed_denies > 0 {
        let _ = write!(
            line,
            "; {} not witnessed",
            counted(report.unwitnessed_denies, "deny", "denies")
        );
    }
    if let Some(count) = report.not_enforced_by_host.filter(|&n| n > 0) {
        let _ = write!(
            line,
            "; {} not enforced by this host",
            counted(count, "deny", "denies")
        );
    }
    line
}

/// The JSON document.
pub fn to_json(report: &Judgement) -> String {
    serde_json::to_string_pretty(report).expect("a report always serializes")
}

/// JUnit XML: one test suite per user; one test case per thing checked (user, target,
/// exchange, family, port, expectation), with all its addresses inside.
///
/// CI reporters track a case by suite, class and name to say "newly failing" and keep its
/// history, so a name says only what is checked: never the outcome (a broken firewall would
/// make the passing case vanish and a new failing one appear) nor the address (MX addresses
/// rotate). A case fails if any of its addresses fails (`<failure>`), else it is
/// inconclusive if any is (`<error>`, so CI reporters keep the two apart); the message
/// lists each address and its outcome, `system-out` their details.
pub fn to_junit(report: &Judgement) -> String {
    use quick_junit::{NonSuccessKind, Report as JunitReport, TestCase, TestCaseStatus, TestSuite};

    type CaseKey<'a> = (&'a str, &'a str, String, Family, u16, Expectation);
    let mut cases: BTreeMap<CaseKey<'_>, Vec<&ProbeRecord>> = BTreeMap::new();
    for p in &report.probes {
        let exchange = p
            .spec
            .exchange
            .clone()
            .unwrap_or_else(|| p.spec.target.clone());
        cases
            .entry((
                p.spec.user.as_str(),
                p.spec.target.as_str(),
                exchange,
                p.spec.family,
                p.spec.port,
                p.spec.expect,
            ))
            .or_default()
            .push(p);
    }
    let timestamp = report
        .run
        .as_ref()
        .map(|run| chrono::DateTime::<chrono::Utc>::from(run.started).fixed_offset());
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for ((user, target, exchange, family, port, expect), mut probes) in cases {
        probes.sort_by_key(|p| (p.verdict, p.address));
        let worst = probes
            .iter()
            .map(|p| p.verdict)
            .min()
            .unwrap_or(Verdict::Pass);
        let outcomes = probes
            .iter()
            .map(|p| {
                format!(
                    "{} {} ({})",
                    endpoint(p),
                    p.observed.as_str(),
                    p.verdict.label().to_lowercase()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let status = match worst {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(format!("expected {expect}: {outcomes}"));
                let failed = probes.iter().find(|p| p.verdict == Verdict::Fail);
                status.set_type(failed.map_or("fail", |p| p.observed.as_str()));
                status
            }
            Verdict::Inconclusive => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                status.set_message(format!("inconclusive (expected {expect}): {outcomes}"));
                let first = probes.iter().find(|p| p.verdict == Verdict::Inconclusive);
                status.set_type(format!(
                    "inconclusive-{}",
                    first.map_or("error", |p| p.observed.as_str())
                ));
                status
            }
        };
        let mut case = TestCase::new(
            format!("{exchange} {family} port {port} expect {expect}"),
            status,
        );
        // Names that stay stable across runs: the unit or user, never a pid.
        let label = stable_label(report, user);
        case.set_classname(format!("egress-check.{label}.{target}"));
        case.set_time(std::time::Duration::from_millis(
            probes.iter().map(|p| p.elapsed_ms).max().unwrap_or(0),
        ));
        let system_out = probes
            .iter()
            .map(|p| {
                let mut line = format!(
                    "{} {} {} {}",
                    host(p),
                    endpoint(p),
                    p.observed.as_str(),
                    p.verdict.label()
                );
                if let Some(detail) = &p.detail {
                    let _ = write!(line, " -- {detail}");
                }
                if let Some(e) = &p.explanation {
                    let _ = write!(line, "\n  decided by: {}", e.decided_by.text);
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n");
        case.set_system_out(system_out);
        suites
            .entry(user)
            .or_insert_with(|| {
                let mut suite = TestSuite::new(format!("egress-check as {label}"));
                if let Some(service) = service_of(report, user) {
                    suite.set_system_out(identities_text(std::slice::from_ref(service)));
                }
                if let Some(run) = &report.run {
                    suite
                        .extra
                        .insert("hostname".into(), run.host.as_str().into());
                }
                if let Some(timestamp) = timestamp {
                    suite.set_timestamp(timestamp);
                }
                suite
            })
            .add_test_case(case);
    }
    let mut junit = JunitReport::new("egress-check");
    if let Some(timestamp) = timestamp {
        junit.set_timestamp(timestamp);
    }
    junit.add_test_suites(suites.into_values());
    junit.to_string().expect("a JUnit report always serializes")
}

/// Styles of the human report.
mod style {
    use anstyle::{AnsiColor, Style};

    /// A failure, a leak, a failed summary.
    pub const BAD: Style = AnsiColor::Red.on_default().bold();
    /// Inconclusive, interrupted.
    pub const UNSURE: Style = AnsiColor::Yellow.on_default().bold();
    /// A passing probe.
    pub const PASS: Style = AnsiColor::Green.on_default();
    /// A run where everything passed.
    pub const GOOD: Style = AnsiColor::Green.on_default().bold();
}

/// The human report; `color` adds ANSI colours (the caller decides, see `--color`).
pub fn to_human(report: &Judgement, color: bool) -> String {
    human(report, color, false)
}

/// The human report for `-q`: family splits, failures, inconclusives (with what decided
/// them) and the summary; no passing probe and no note about passes.
pub fn to_human_quiet(report: &Judgement, color: bool) -> String {
    human(report, color, true)
}

fn human(report: &Judgement, color: bool, quiet: bool) -> String {
    let paint = |text: &str, style: anstyle::Style| {
        if color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    if let Some(reason) = &report.interrupted {
        let _ = writeln!(
            out,
            "{}",
            paint(
                &format!("INTERRUPTED: {reason}; partial results"),
                style::UNSURE
            )
        );
    }
    for split in &report.family_splits {
        let _ = writeln!(out, "{}", paint(&split_headline(report, split), style::BAD));
    }
    if !report.family_splits.is_empty() {
        out.push('\n');
    }
    let identities = identities_text(&report.identities);
    if !identities.is_empty() {
        let _ = writeln!(out, "{identities}");
    }

    // Groups of (user, target, expectation), those with failures first.
    let mut groups: BTreeMap<(Verdict, &str, &str, Expectation), Vec<&ProbeRecord>> =
        BTreeMap::new();
    let mut worst: BTreeMap<(&str, &str, Expectation), Verdict> = BTreeMap::new();
    for p in &report.probes {
        let w = worst
            .entry((p.spec.user.as_str(), p.spec.target.as_str(), p.spec.expect))
            .or_insert(Verdict::Pass);
        *w = (*w).min(p.verdict);
    }
    for p in report
        .probes
        .iter()
        .filter(|p| !quiet || p.verdict != Verdict::Pass)
    {
        let key = (p.spec.user.as_str(), p.spec.target.as_str(), p.spec.expect);
        groups
            .entry((worst[&key], key.0, key.1, key.2))
            .or_default()
            .push(p);
    }
    for ((_, user, target, expect), mut records) in groups {
        records.sort_by_key(|p| {
            (
                p.verdict,
                p.spec.family,
                p.spec.exchange.clone(),
                p.address,
                p.spec.port,
            )
        });
        let first = records[0];
        let what = match &first.spec.domain {
            Some(domain) => format!("{target} (MX of {domain})"),
            None => target.to_string(),
        };
        let _ = writeln!(
            out,
            "{} -> {what}: expect {expect}",
            who(report, user, first.spec.uid)
        );
        for p in records {
            let label = match p.verdict {
                Verdict::Fail => paint("FAIL", style::BAD),
                Verdict::Inconclusive => paint("INCONCLUSIVE", style::UNSURE),
                Verdict::Pass => paint("pass", style::PASS),
            };
            let pad = " ".repeat(12usize.saturating_sub(p.verdict.label().len()));
            let mut line = format!(
                "  {label}{pad} {:<4} {:<28} {:<11} {:>6} ms  {}",
                p.spec.family.to_string(),
                endpoint(p),
                p.observed.as_str(),
                p.elapsed_ms,
                host(p),
            );
            if p.witnessed == Some(false) {
                line.push_str("  [not witnessed]");
            }
            if p.local {
                line.push_str("  [local]");
            }
            if let Some(detail) = &p.detail {
                if p.verdict != Verdict::Pass || p.observed != Observed::Timeout {
                    let _ = write!(line, "  -- {detail}");
                }
            }
            let _ = writeln!(out, "{line}");
            if let Some(explanation) = &p.explanation {
                let _ = writeln!(out, "      {}", explanation.decided_by.text);
            }
        }
        out.push('\n');
    }

    if report.unwitnessed_denies > 0 && !quiet {
        let (what, them) = match report.unwitnessed_denies {
            1 => ("1 passing deny was".to_string(), "it"),
            n => (format!("{n} passing denies were"), "them"),
        };
        let _ = writeln!(
            out,
            "note: {what} not witnessed: no probe in this run connected to the same address \
             and port, so the target may simply have been down. Add a check that is expected \
             to connect (e.g. the MTA's user) to witness {them}."
        );
    }
    let summary = match &report.run {
        // Reports of a fleet end up side by side (journals, CI logs): say whose this is.
        Some(run) => format!("summary: {} on {}", summary(report), run.host),
        None => format!("summary: {}", summary(report)),
    };
    let summary_style = if report.failed > 0 {
        style::BAD
    } else if report.inconclusive > 0 {
        style::UNSURE
    } else {
        style::GOOD
    };
    if let Some(count) = report.not_enforced_by_host.filter(|&n| n > 0 && !quiet) {
        let _ = writeln!(out, "note: {}", crate::explain::not_enforced_note(count));
    }
    let _ = writeln!(out, "{}", paint(&summary, summary_style));
    for split in &report.family_splits {
        let _ = writeln!(out, "{}", paint(&split_headline(report, split), style::BAD));
    }
    out
}

/// A family split's headline; with `--explain`, followed by what decided each family
/// ("IPv4: dropped by ip filter OUTPUT `...`; IPv6: no rule").
fn split_headline(report: &Judgement, split: &FamilySplit) -> String {
    let mut line = split.headline();
    let decided = |family| {
        report
            .probes
            .iter()
            .filter(|p| {
                p.spec.user == split.user
                    && p.spec.port == split.port
                    && p.spec.family == family
                    && p.spec.exchange.as_ref().unwrap_or(&p.spec.target) == &split.exchange
            })
            .filter(|p| {
                if family == split.leaking {
                    p.observed == Observed::Connected
                } else {
                    crate::verdict::is_blocked(p.observed)
                }
            })
            .find_map(|p| p.explanation.as_ref())
            .map(crate::explain::Explanation::short)
    };
    if let (Some(blocked), Some(leaking)) = (decided(split.blocked), decided(split.leaking)) {
        let _ = write!(
            line,
            ": {}: {blocked}; {}: {leaking}",
            split.blocked, split.leaking
        );
    }
    line
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{Destination, Endpoint, PlannedProbe, ProbeSpec};
    use crate::probe::Attempt;
    use crate::verdict::judge_run;
    use crate::vocab::Family;
    use std::net::IpAddr;
    use std::time::Duration;

    /// A probe of `user` to `addr` (or, with `"-"`, one without an address) and what it
    /// observed.
    pub(crate) fn probe(
        user: &str,
        addr: &str,
        expect: Expectation,
        observed: Observed,
    ) -> (PlannedProbe, Attempt) {
        let (family, destination) = match addr.parse::<IpAddr>() {
            Ok(address) => (
                Family::of(&address),
                Destination::Address(Endpoint::new(address)),
            ),
            Err(_) => (Family::Ipv6, Destination::None("no AAAA record".into())),
        };
        (
            PlannedProbe {
                spec: ProbeSpec {
                    user: user.into(),
                    uid: 33,
                    target: "gmail".into(),
                    domain: Some("gmail.test".into()),
                    exchange: Some("mx1.gmail.test".into()),
                    preference: Some(10),
                    family,
                    port: 25,
                    expect,
                },
                timeout: Duration::from_secs(1),
                destination,
                note: None,
            },
            Attempt {
                observed,
                elapsed: Duration::from_millis(1),
                detail: None,
                local: None,
            },
        )
    }

    /// Judges a list of probes with what they observed.
    pub(crate) fn judged(list: Vec<(PlannedProbe, Attempt)>) -> Judgement {
        let (probes, attempts) = list.into_iter().unzip();
        judge_run(probes, attempts, None)
    }

    #[test]
    fn the_story_is_the_headline() {
        let report = judged(vec![
            probe(
                "www-data",
                "203.0.113.10",
                Expectation::Deny,
                Observed::Timeout,
            ),
            probe(
                "www-data",
                "2001:db8::10",
                Expectation::Deny,
                Observed::Connected,
            ),
            probe(
                "postfix",
                "203.0.113.10",
                Expectation::Allow,
                Observed::Connected,
            ),
            probe(
                "postfix",
                "2001:db8::10",
                Expectation::Allow,
                Observed::Connected,
            ),
        ]);
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (3, 1, 0)
        );
        assert_eq!(report.exit_code(), 1);
        let human = to_human(&report, false);
        assert!(
            human.starts_with(
                "LEAK: www-data reaches mx1.gmail.test port 25 over IPv6 while IPv4 is blocked"
            ),
            "{human}"
        );
        assert!(
            human.trim_end().ends_with("while IPv4 is blocked"),
            "{human}"
        );
        // Failures come before passes.
        let fail = human.find("FAIL").unwrap();
        let pass = human.find("pass").unwrap();
        assert!(fail < pass, "{human}");
    }

    #[test]
    fn quiet_keeps_failures_inconclusives_and_the_summary() {
        let report = judged(vec![
            probe(
                "www-data",
                "2001:db8::10",
                Expectation::Deny,
                Observed::Connected,
            ),
            probe("www-data", "-", Expectation::Deny, Observed::NoAddress),
            probe(
                "ec-ok",
                "203.0.113.10",
                Expectation::Deny,
                Observed::Timeout,
            ),
        ]);
        let quiet = to_human_quiet(&report, false);
        assert!(quiet.contains("FAIL"), "{quiet}");
        assert!(quiet.contains("INCONCLUSIVE"), "{quiet}");
        assert!(!quiet.contains("pass "), "{quiet}");
        assert!(!quiet.contains("ec-ok"), "{quiet}");
        assert!(!quiet.contains("note:"), "{quiet}");
        assert!(
            quiet.contains("summary: 1 failed, 1 inconclusive, 1 passed"),
            "{quiet}"
        );
        assert!(to_human(&report, false).contains("ec-ok"));
    }

    #[test]
    fn unwitnessed_denies_are_named() {
        let report = judged(vec![probe(
            "www-data",
            "203.0.113.10",
            Expectation::Deny,
            Observed::Timeout,
        )]);
        let human = to_human(&report, false);
        assert!(
            human.contains("note: 1 passing deny was not witnessed"),
            "{human}"
        );
        assert!(human.contains("to witness it."), "{human}");
        assert!(
            summary(&report).ends_with("(1 probe); 1 deny not witnessed"),
            "{}",
            summary(&report)
        );
    }

    #[test]
    fn json_has_the_contract_fields() {
        let report = judged(vec![probe(
            "www-data",
            "2001:db8::10",
            Expectation::Deny,
            Observed::Refused,
        )]);
        let value: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
        for key in [
            "passed",
            "failed",
            "inconclusive",
            "unwitnessed_denies",
            "family_splits",
            "interrupted",
            "probes",
        ] {
            assert!(value.get(key).is_some(), "{key}");
        }
        let probe = &value["probes"][0];
        for key in [
            "user",
            "uid",
            "target",
            "domain",
            "exchange",
            "preference",
            "address",
            "family",
            "port",
            "expect",
            "observed",
            "verdict",
            "witnessed",
            "elapsed_ms",
            "detail",
            "zone",
            "record",
            "local",
        ] {
            assert!(probe.get(key).is_some(), "{key}");
        }
        assert_eq!(probe.as_object().unwrap().len(), 18, "{probe}");
        assert_eq!(probe["local"], false);
        assert_eq!(probe["record"], serde_json::Value::Null);
        assert_eq!(probe["family"], "ipv6");
        assert_eq!(probe["observed"], "refused");
        assert_eq!(probe["verdict"], "pass");
        assert_eq!(probe["expect"], "deny");
    }

    #[test]
    fn junit_tells_failures_from_inconclusives() {
        let report = judged(vec![
            probe("u", "203.0.113.10", Expectation::Deny, Observed::Connected),
            probe("u", "203.0.113.11", Expectation::Deny, Observed::Timeout),
            probe("u", "-", Expectation::Deny, Observed::NoAddress),
        ]);
        let xml = to_junit(&report);
        // One case per exchange, family, port and expectation: both IPv4 addresses in one.
        assert!(xml.contains("tests=\"2\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("errors=\"1\""), "{xml}");
        assert!(xml.contains("<failure"), "{xml}");
        assert!(xml.contains("<error"), "{xml}");
        assert!(
            xml.contains("203.0.113.10:25 connected (fail), 203.0.113.11:25 timeout (pass)"),
            "{xml}"
        );
    }

    #[test]
    fn junit_names_do_not_change_with_outcomes_or_addresses() {
        let names = |report: &Judgement| -> Vec<(String, String)> {
            let xml = to_junit(report);
            let doc = roxmltree::Document::parse(&xml).unwrap();
            doc.descendants()
                .filter(|n| n.has_tag_name("testcase"))
                .map(|n| {
                    (
                        n.attribute("classname").unwrap().to_string(),
                        n.attribute("name").unwrap().to_string(),
                    )
                })
                .collect()
        };
        let leaking = judged(vec![
            probe("u", "203.0.113.10", Expectation::Deny, Observed::Timeout),
            probe("u", "2001:db8::10", Expectation::Deny, Observed::Connected),
        ]);
        let fixed = judged(vec![
            probe("u", "203.0.113.99", Expectation::Deny, Observed::Refused),
            probe("u", "2001:db8::99", Expectation::Deny, Observed::Timeout),
        ]);
        assert_eq!(names(&leaking), names(&fixed));
        assert_eq!(
            names(&fixed)[0],
            (
                "egress-check.u.gmail".to_string(),
                "mx1.gmail.test IPv4 port 25 expect deny".to_string()
            )
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let report = judged(vec![probe(
            "u",
            "203.0.113.10",
            Expectation::Allow,
            Observed::Timeout,
        )]);
        assert!(!to_human(&report, false).contains('\x1b'));
        let painted = to_human(&report, true);
        assert!(
            painted.contains(&format!("{}FAIL{:#}", style::BAD, style::BAD)),
            "{painted:?}"
        );
    }
}
