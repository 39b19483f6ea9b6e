//! Reports: a run's [`Judgement`] written for people (human), scripts (json) and CI test
//! reporters (junit), and `resolve`'s answers ([`ResolveReport`]). Rendering only: every
//! verdict was decided in [`crate::verdict`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::probe::Observed;
use crate::service::ServiceIdentity;
use crate::verdict::{
    format_port_ranges_capped, split_ranges, thousands, Judgement, ProbeRecord, SplitRange,
    Verdict, HEADLINE_RANGES,
};
use crate::vocab::{counted, port_ranges, Expectation, Family, PortRange};

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

/// `endpoint` of probes that differ only in their port: `203.0.113.10:25` for one,
/// `203.0.113.10:1-24,26-65535` (`[2001:db8::1]:...`) for several.
fn endpoint_ports(probes: &[&ProbeRecord]) -> String {
    let p = probes[0];
    if probes.len() == 1 {
        return endpoint(p);
    }
    let ranges = port_ranges(probes.iter().map(|p| p.spec.port));
    let ports = format_port_ranges_capped(&ranges, HEADLINE_RANGES);
    match (p.address, &p.zone) {
        (Some(std::net::IpAddr::V6(a)), Some(zone)) => format!("[{a}%{zone}]:{ports}"),
        (Some(std::net::IpAddr::V6(a)), None) => format!("[{a}]:{ports}"),
        (Some(a), _) => format!("{a}:{ports}"),
        (None, _) => format!("(no address):{ports}"),
    }
}

/// `probes` grouped by `key` (all else is their port), groups in the order first met.
fn alike_but_port<'a, K: std::hash::Hash + Eq>(
    probes: &[&'a ProbeRecord],
    key: impl Fn(&ProbeRecord) -> K,
) -> Vec<Vec<&'a ProbeRecord>> {
    let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<&'a ProbeRecord>> = Vec::new();
    for &p in probes {
        let i = *index.entry(key(p)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(p);
    }
    groups
}

/// The exchange (with its MX preference) or the target's name.
fn host(p: &ProbeRecord) -> String {
    match (&p.spec.exchange, p.spec.preference) {
        (Some(name), Some(pref)) => format!("{name} (MX {pref})"),
        (Some(name), None) => name.clone(),
        (None, _) => p.spec.target.to_string(),
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

/// One line of the compact JSON report: probes alike but for their port.
#[derive(serde::Serialize)]
struct ProbeRange<'a> {
    user: &'a str,
    uid: u32,
    target: &'a str,
    domain: Option<&'a str>,
    exchange: Option<&'a str>,
    preference: Option<u16>,
    address: Option<std::net::IpAddr>,
    family: Family,
    zone: Option<&'a str>,
    record: Option<&'a str>,
    local: bool,
    expect: Expectation,
    observed: Observed,
    verdict: Verdict,
    witnessed: Option<bool>,
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_by: Option<&'a str>,
    /// `1-24,26-65535`.
    ports: String,
    /// How many probes the line stands for.
    probes: usize,
    /// The slowest of them.
    elapsed_ms_max: u64,
}

/// The compact JSON document (`--format json-compact`, or `--format json --compact`).
#[derive(serde::Serialize)]
struct CompactReport<'a> {
    schema_version: u32,
    /// Tells this document from the default one, whose `probes` are one object per probe.
    compact: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    run: Option<&'a crate::run_info::RunInfo>,
    passed: usize,
    failed: usize,
    inconclusive: usize,
    unwitnessed_denies: usize,
    family_splits: Vec<SplitRange>,
    interrupted: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_enforced_by_host: Option<usize>,
    identities: &'a [ServiceIdentity],
    probe_ranges: Vec<ProbeRange<'a>>,
}

/// The JSON report for big runs: probes that differ only in their port are one entry of
/// `probe_ranges` (ports written `1-24,26-65535`), failures first, then in the order
/// probed; `family_splits` has one entry per user, exchange and pair of families with its
/// ports as ranges. Counts are those of the default document, probe for probe.
pub fn to_json_compact(report: &Judgement) -> String {
    // Nested: tuples longer than 12 are not hashable.
    type Key<'a> = (
        (
            Verdict,
            &'a str,
            &'a str,
            Option<&'a str>,
            Expectation,
            Family,
        ),
        Option<std::net::IpAddr>,
        Option<&'a str>,
        Observed,
        Option<bool>,
        bool,
        Option<&'a str>,
        Option<&'a str>,
    );
    let mut groups = group_by(&report.probes, |p| -> Key<'_> {
        (
            (
                p.verdict,
                &p.spec.user,
                &p.spec.target,
                p.spec.exchange.as_deref(),
                p.spec.expect,
                p.spec.family,
            ),
            p.address,
            p.zone.as_deref(),
            p.observed,
            p.witnessed,
            p.local,
            p.detail.as_deref(),
            p.explanation.as_ref().map(|e| e.decided_by.text.as_str()),
        )
    });
    // Stable: equal verdicts keep the order they were first probed in.
    groups.sort_by_key(|g| g[0].verdict);
    let probe_ranges = groups
        .iter()
        .map(|g| {
            let p = g[0];
            ProbeRange {
                user: &p.spec.user,
                uid: p.spec.uid,
                target: &p.spec.target,
                domain: p.spec.domain.as_deref(),
                exchange: p.spec.exchange.as_deref(),
                preference: p.spec.preference,
                address: p.address,
                family: p.spec.family,
                zone: p.zone.as_deref(),
                record: p.record.as_deref(),
                local: p.local,
                expect: p.spec.expect,
                observed: p.observed,
                verdict: p.verdict,
                witnessed: p.witnessed,
                detail: p.detail.as_deref(),
                decided_by: p.explanation.as_ref().map(|e| e.decided_by.text.as_str()),
                ports: crate::vocab::format_port_ranges(&port_ranges(
                    g.iter().map(|p| p.spec.port),
                )),
                probes: g.len(),
                elapsed_ms_max: g.iter().map(|p| p.elapsed_ms).max().unwrap_or(0),
            }
        })
        .collect();
    let doc = CompactReport {
        schema_version: report.schema_version,
        compact: true,
        run: report.run.as_ref(),
        passed: report.passed,
        failed: report.failed,
        inconclusive: report.inconclusive,
        unwitnessed_denies: report.unwitnessed_denies,
        family_splits: split_ranges(&report.family_splits),
        interrupted: report.interrupted.as_deref(),
        not_enforced_by_host: report.not_enforced_by_host,
        identities: &report.identities,
        probe_ranges,
    };
    serde_json::to_string_pretty(&doc).expect("a report always serializes")
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

    // One case per contiguous range of the ports checked (a sweep's 65,535 ports are one
    // case, `ports 1-65535`; ports 25 and 587 stay two cases): what was checked, so names
    // stay stable whatever the outcomes.
    type CaseKey<'a> = (&'a str, &'a str, String, Family, Expectation);
    let mut by_check: BTreeMap<CaseKey<'_>, Vec<&ProbeRecord>> = BTreeMap::new();
    for p in &report.probes {
        let exchange = p
            .spec
            .exchange
            .clone()
            .unwrap_or_else(|| p.spec.target.to_string());
        by_check
            .entry((
                p.spec.user.as_ref(),
                p.spec.target.as_ref(),
                exchange,
                p.spec.family,
                p.spec.expect,
            ))
            .or_default()
            .push(p);
    }
    let mut cases: Vec<(CaseKey<'_>, PortRange, Vec<&ProbeRecord>)> = Vec::new();
    for (key, probes) in by_check {
        let ranges = port_ranges(probes.iter().map(|p| p.spec.port));
        let mut split: Vec<Vec<&ProbeRecord>> = vec![Vec::new(); ranges.len()];
        for p in probes {
            let i = ranges.partition_point(|r| r.last < p.spec.port);
            split[i].push(p);
        }
        for (range, probes) in ranges.into_iter().zip(split) {
            cases.push((key.clone(), range, probes));
        }
    }
    let timestamp = report
        .run
        .as_ref()
        .map(|run| chrono::DateTime::<chrono::Utc>::from(run.started).fixed_offset());
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for ((user, target, exchange, family, expect), range, mut probes) in cases {
        probes.sort_by_key(|p| (p.verdict, p.address, p.spec.port));
        let worst = probes
            .iter()
            .map(|p| p.verdict)
            .min()
            .unwrap_or(Verdict::Pass);
        let outcomes = alike_but_port(&probes, |p| (p.address, p.observed, p.verdict))
            .iter()
            .map(|group| {
                let p = group[0];
                format!(
                    "{} {} ({})",
                    endpoint_ports(group),
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
        let ports = if range.first == range.last {
            format!("port {range}")
        } else {
            format!("ports {range}")
        };
        let mut case = TestCase::new(
            format!("{exchange} {family} {ports} expect {expect}"),
            status,
        );
        // Names that stay stable across runs: the unit or user, never a pid.
        let label = stable_label(report, user);
        case.set_classname(format!("egress-check.{label}.{target}"));
        case.set_time(std::time::Duration::from_millis(
            probes.iter().map(|p| p.elapsed_ms).max().unwrap_or(0),
        ));
        let system_out = alike_but_port(&probes, |p| {
            (
                host(p),
                p.address,
                p.observed,
                p.verdict,
                p.detail.clone(),
                p.explanation.as_ref().map(|e| e.decided_by.text.clone()),
            )
        })
        .iter()
        .map(|group| {
            let p = group[0];
            let mut line = format!(
                "{} {} {} {}",
                host(p),
                endpoint_ports(group),
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
    // One headline per user, exchange and pair of families, its ports as ranges: a sweep
    // finds a split on thousands of ports and must still read as one story.
    let splits = split_ranges(&report.family_splits);
    let headlines: Vec<String> = splits.iter().map(|s| split_headline(report, s)).collect();
    for headline in &headlines {
        let _ = writeln!(out, "{}", paint(headline, style::BAD));
    }
    if !headlines.is_empty() {
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
            .entry((p.spec.user.as_ref(), p.spec.target.as_ref(), p.spec.expect))
            .or_insert(Verdict::Pass);
        *w = (*w).min(p.verdict);
    }
    for p in report
        .probes
        .iter()
        .filter(|p| !quiet || p.verdict != Verdict::Pass)
    {
        let key = (p.spec.user.as_ref(), p.spec.target.as_ref(), p.spec.expect);
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
        for line_probes in lines(&records) {
            let p = line_probes[0];
            let label = match p.verdict {
                Verdict::Fail => paint("FAIL", style::BAD),
                Verdict::Inconclusive => paint("INCONCLUSIVE", style::UNSURE),
                Verdict::Pass => paint("pass", style::PASS),
            };
            let pad = " ".repeat(12usize.saturating_sub(p.verdict.label().len()));
            let mut line = if let [p] = line_probes.as_slice() {
                format!(
                    "  {label}{pad} {:<4} {:<28} {:<11} {:>6} ms  {}",
                    p.spec.family.to_string(),
                    endpoint(p),
                    p.observed.as_str(),
                    p.elapsed_ms,
                    host(p),
                )
            } else {
                // `[2001:db8::25] 1-24,26-65535 connected`: the slowest time of the line.
                let ranges = port_ranges(line_probes.iter().map(|p| p.spec.port));
                let address = match (p.address, &p.zone) {
                    (Some(std::net::IpAddr::V6(a)), Some(zone)) => format!("[{a}%{zone}]"),
                    (Some(std::net::IpAddr::V6(a)), None) => format!("[{a}]"),
                    (Some(a), _) => a.to_string(),
                    (None, _) => "(no address)".to_string(),
                };
                format!(
                    "  {label}{pad} {:<4} {address} {} {:<11} {:>6} ms max  {} ({} probes)",
                    p.spec.family.to_string(),
                    format_port_ranges_capped(&ranges, HEADLINE_RANGES),
                    p.observed.as_str(),
                    line_probes.iter().map(|p| p.elapsed_ms).max().unwrap_or(0),
                    host(p),
                    thousands(line_probes.len()),
                )
            };
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
    for headline in &headlines {
        let _ = writeln!(out, "{}", paint(headline, style::BAD));
    }
    out
}

/// A family split's headline; with `--explain`, followed by what decided each family
/// ("IPv4: dropped by ip filter OUTPUT `...`; IPv6: no rule"), as seen on its first port.
fn split_headline(report: &Judgement, split: &SplitRange) -> String {
    let mut line = split.headline();
    let Some(port) = split.ports.first().map(|r| r.first) else {
        return line;
    };
    // Only with --explain; without it the scan below would cost a pass over every probe
    // per split, which a sweep cannot afford.
    if report.probes.iter().all(|p| p.explanation.is_none()) {
        return line;
    }
    let decided = |family| {
        report
            .probes
            .iter()
            .filter(|p| {
                *p.spec.user == *split.user
                    && p.spec.port == port
                    && p.spec.family == family
                    && p.spec.exchange.as_deref().unwrap_or(&p.spec.target) == split.exchange
            })
            .filter(|p| {
                if family == split.leaking {
                    p.observed == Observed::Connected
                } else {
                    crate::verdict::is_blocked(p.observed)
                }
            })
            .find_map(|p| p.explanation.as_deref())
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

/// `records` in groups of equal `key`, the groups in the order their first record came, and
/// each group's records in the order they came.
fn group_by<'a, K: std::hash::Hash + Eq>(
    records: impl IntoIterator<Item = &'a ProbeRecord>,
    key: impl Fn(&'a ProbeRecord) -> K,
) -> Vec<Vec<&'a ProbeRecord>> {
    let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<&'a ProbeRecord>> = Vec::new();
    for p in records {
        let i = *index.entry(key(p)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(p);
    }
    groups
}

/// What makes probes of one group one line: everything a line shows but the port and the
/// time it took.
type LineKey<'a> = (
    Verdict,
    Family,
    String,
    Option<std::net::IpAddr>,
    Option<&'a str>,
    Observed,
    Option<bool>,
    bool,
    Option<&'a str>,
    Option<&'a str>,
);

/// The probes of one group as lines: probes alike but for their port share a line, unless
/// none of their ports are contiguous (then each keeps its own line, as a short report
/// always had).
fn lines<'a>(records: &[&'a ProbeRecord]) -> Vec<Vec<&'a ProbeRecord>> {
    let groups = group_by(records.iter().copied(), |p| -> LineKey<'a> {
        (
            p.verdict,
            p.spec.family,
            host(p),
            p.address,
            p.zone.as_deref(),
            p.observed,
            p.witnessed,
            p.local,
            p.detail.as_deref(),
            p.explanation.as_ref().map(|e| e.decided_by.text.as_str()),
        )
    });
    let mut out = Vec::new();
    for group in groups {
        let ranges = port_ranges(group.iter().map(|p| p.spec.port));
        if ranges.iter().all(|r| r.first == r.last) {
            out.extend(group.into_iter().map(|p| vec![p]));
        } else {
            out.push(group);
        }
    }
    out
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

    /// www-data, which should be denied: blocked over IPv4, yet reaching the same host over
    /// IPv6 (the leak most of the tests' stories tell).
    pub(crate) fn www_data_leak() -> [(PlannedProbe, Attempt); 2] {
        [
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
        ]
    }

    #[test]
    fn the_story_is_the_headline() {
        let report = judged(
            www_data_leak()
                .into_iter()
                .chain([
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
                ])
                .collect(),
        );
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

    /// www-data sweeping every port of one address per family, expecting deny: IPv4 lets
    /// 80 and 443 through and drops the rest, IPv6 lets everything through.
    pub(crate) fn sweep() -> Judgement {
        let mut list = Vec::new();
        for (addr, family) in [
            ("203.0.113.10", Family::Ipv4),
            ("2001:db8::10", Family::Ipv6),
        ] {
            for port in 1..=65535u16 {
                let observed = match (family, port) {
                    (Family::Ipv4, 80 | 443) | (Family::Ipv6, _) => Observed::Connected,
                    _ => Observed::Timeout,
                };
                let mut p = probe("www-data", addr, Expectation::Deny, observed);
                p.0.spec.port = port;
                list.push(p);
            }
        }
        judged(list)
    }

    #[test]
    fn a_sweep_reads_as_ranges() {
        let report = sweep();
        assert_eq!(report.probes.len(), 131_070);
        let human = to_human(&report, false);
        assert!(human.lines().count() < 20, "{human}");
        assert!(
            human.starts_with(
                "LEAK: www-data reaches 65,533 ports of mx1.gmail.test over IPv6 that IPv4 \
                 blocks: 1-79,81-442,444-65535\n"
            ),
            "{human}"
        );
        let fail_v4 = human
            .lines()
            .find(|l| l.contains("FAIL") && l.contains("IPv4"))
            .unwrap();
        assert!(fail_v4.contains("203.0.113.10:80"), "{human}");
        let fail_v6 = human
            .lines()
            .find(|l| l.contains("FAIL") && l.contains("IPv6"))
            .unwrap();
        assert!(
            fail_v6.contains("[2001:db8::10] 1-65535 connected"),
            "{human}"
        );
        assert!(fail_v6.contains("(65,535 probes)"), "{human}");
        let pass = human.lines().find(|l| l.contains("pass")).unwrap();
        assert!(
            pass.contains("203.0.113.10 1-79,81-442,444-65535 timeout"),
            "{human}"
        );
        assert!(human.find("FAIL").unwrap() < human.find("pass").unwrap());
    }

    #[test]
    fn compact_json_groups_by_ranges() {
        let report = sweep();
        let value: serde_json::Value = serde_json::from_str(&to_json_compact(&report)).unwrap();
        assert_eq!(value["compact"], true);
        assert_eq!(value["failed"], 65_537);
        let splits = value["family_splits"].as_array().unwrap();
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0]["ports"], "1-79,81-442,444-65535");
        assert_eq!(splits[0]["port_count"], 65_533);
        assert_eq!(splits[0]["leaking"], "ipv6");
        let ranges = value["probe_ranges"].as_array().unwrap();
        let got: Vec<(&str, &str, &str, u64)> = ranges
            .iter()
            .map(|r| {
                (
                    r["verdict"].as_str().unwrap(),
                    r["address"].as_str().unwrap(),
                    r["ports"].as_str().unwrap(),
                    r["probes"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("fail", "203.0.113.10", "80,443", 2),
                ("fail", "2001:db8::10", "1-65535", 65_535),
                ("pass", "203.0.113.10", "1-79,81-442,444-65535", 65_533),
            ]
        );
        // Every probe once.
        let total: u64 = ranges.iter().map(|r| r["probes"].as_u64().unwrap()).sum();
        assert_eq!(total, 131_070);
    }

    #[test]
    fn junit_has_one_case_per_range_checked() {
        let xml = to_junit(&sweep());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let names: Vec<&str> = cases.iter().map(|n| n.attribute("name").unwrap()).collect();
        assert_eq!(
            names,
            [
                "mx1.gmail.test IPv4 ports 1-65535 expect deny",
                "mx1.gmail.test IPv6 ports 1-65535 expect deny"
            ]
        );
        assert!(
            xml.contains(
                "expected deny: 203.0.113.10:80,443 connected (fail), \
                 203.0.113.10:1-79,81-442,444-65535 timeout (pass)"
            ),
            "{xml}"
        );
        assert!(xml.len() < 10_000, "{}", xml.len());
    }
}
