//! Reports: the verdicts put together, and written for people (human), scripts (json)
//! and CI test reporters (junit).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::probe::Observed;
use crate::scenario::{Expectation, Family};
use crate::verdict::{self, Verdict};

/// One probe as reported; the JSON report's `probes[]` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRecord {
    /// Login name probed as.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The target's name in the scenario.
    pub target: String,
    /// The mail domain, for MX targets.
    pub domain: Option<String>,
    /// The exchange or host name (`"."` for a null MX; `null` for literal addresses).
    pub exchange: Option<String>,
    /// MX preference of the exchange.
    pub preference: Option<u16>,
    /// The address connected to; `null` when there was none.
    pub address: Option<IpAddr>,
    /// Address family.
    pub family: Family,
    /// TCP port.
    pub port: u16,
    /// Expected outcome.
    pub expect: Expectation,
    /// Observed outcome.
    pub observed: Observed,
    /// Judgement.
    pub verdict: Verdict,
    /// For passing denies: whether some probe of this run connected to the same address and
    /// port (so the target was up and the deny is real); `null` otherwise.
    pub witnessed: Option<bool>,
    /// Duration of the attempt.
    pub elapsed_ms: u64,
    /// OS error, DNS failure or other explanation.
    pub detail: Option<String>,
}

impl ProbeRecord {
    fn endpoint(&self) -> String {
        match self.address {
            Some(addr) => SocketAddr::new(addr, self.port).to_string(),
            None => format!("(no address):{}", self.port),
        }
    }

    fn host(&self) -> String {
        match (&self.exchange, self.preference) {
            (Some(name), Some(pref)) => format!("{name} (MX {pref})"),
            (Some(name), None) => name.clone(),
            (None, _) => self.target.clone(),
        }
    }
}

/// A user reaches an exchange and port over one family while the other is blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilySplit {
    /// The user.
    pub user: String,
    /// The exchange (or target) name.
    pub exchange: String,
    /// The port.
    pub port: u16,
    /// The family that connected.
    pub leaking: Family,
    /// The family that was blocked.
    pub blocked: Family,
}

impl FamilySplit {
    /// The one-line headline.
    pub fn headline(&self) -> String {
        format!(
            "LEAK: {} reaches {} port {} over {} while {} is blocked",
            self.user, self.exchange, self.port, self.leaking, self.blocked
        )
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Probes that passed.
    pub passed: usize,
    /// Probes that failed.
    pub failed: usize,
    /// Probes that proved nothing.
    pub inconclusive: usize,
    /// Passing denies that no probe of the run witnessed.
    pub unwitnessed_denies: usize,
    /// Family splits, the story's bug.
    pub family_splits: Vec<FamilySplit>,
    /// Set when the run was cut short (signal or deadline).
    pub interrupted: Option<String>,
    /// Every planned probe, exactly once.
    pub probes: Vec<ProbeRecord>,
}

impl Report {
    /// Judges the records, works out witnesses and family splits, and counts.
    pub fn build(mut probes: Vec<ProbeRecord>, interrupted: Option<String>) -> Report {
        let connected: HashSet<(IpAddr, u16)> = probes
            .iter()
            .filter(|p| p.observed == Observed::Connected)
            .filter_map(|p| Some((p.address?, p.port)))
            .collect();
        for p in &mut probes {
            p.verdict = verdict::judge(p.expect, p.observed);
            p.witnessed = match (p.expect, p.verdict, p.address) {
                (Expectation::Deny, Verdict::Pass, Some(addr)) => {
                    Some(connected.contains(&(addr, p.port)))
                }
                _ => None,
            };
        }
        let count = |v| probes.iter().filter(|p| p.verdict == v).count();
        Report {
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            inconclusive: count(Verdict::Inconclusive),
            unwitnessed_denies: probes.iter().filter(|p| p.witnessed == Some(false)).count(),
            family_splits: family_splits(&probes),
            interrupted,
            probes,
        }
    }

    /// 0 all passed, 1 a failure, 3 inconclusive only.
    pub fn exit_code(&self) -> i32 {
        verdict::exit_code(self.failed, self.inconclusive)
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} failed, {} inconclusive, {} passed ({} probes)",
            self.failed,
            self.inconclusive,
            self.passed,
            self.probes.len()
        );
        if self.unwitnessed_denies > 0 {
            let _ = write!(line, "; {} denies not witnessed", self.unwitnessed_denies);
        }
        line
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// JUnit XML: one test suite per user, one test case per probe. Failed probes are
    /// `<failure>`, inconclusive ones `<error>` (so CI reporters keep them apart).
    pub fn to_junit(&self) -> String {
        use quick_junit::{
            NonSuccessKind, Report as JunitReport, TestCase, TestCaseStatus, TestSuite,
        };

        let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
        for p in &self.probes {
            let status = match p.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Fail => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(format!(
                        "expected {}, observed {}",
                        p.expect,
                        p.observed.as_str()
                    ));
                    status.set_type(p.observed.as_str());
                    status
                }
                Verdict::Inconclusive => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                    status.set_message(format!(
                        "inconclusive: {}",
                        p.detail.as_deref().unwrap_or(p.observed.as_str())
                    ));
                    status.set_type(format!("inconclusive-{}", p.observed.as_str()));
                    status
                }
            };
            let name = format!(
                "{} {} {} {} expect {}",
                p.host(),
                p.family,
                p.endpoint(),
                p.observed.as_str(),
                p.expect
            );
            let mut case = TestCase::new(name, status);
            case.set_classname(format!("egress-check.{}.{}", p.user, p.target));
            case.set_time(std::time::Duration::from_millis(p.elapsed_ms));
            if let Some(detail) = &p.detail {
                case.set_system_out(detail.as_str());
            }
            suites
                .entry(p.user.as_str())
                .or_insert_with(|| TestSuite::new(format!("egress-check as {}", p.user)))
                .add_test_case(case);
        }
        let mut report = JunitReport::new("egress-check");
        report.add_test_suites(suites.into_values());
        report
            .to_string()
            .expect("a JUnit report always serializes")
    }

    /// The human report; `color` adds ANSI colours.
    pub fn to_human(&self, color: bool) -> String {
        let paint = |text: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        if let Some(reason) = &self.interrupted {
            let _ = writeln!(
                out,
                "{}",
                paint(&format!("INTERRUPTED: {reason}; partial results"), "1;33")
            );
        }
        for split in &self.family_splits {
            let _ = writeln!(out, "{}", paint(&split.headline(), "1;31"));
        }
        if !self.family_splits.is_empty() {
            out.push('\n');
        }

        // Groups of (user, target, expectation), those with failures first.
        let mut groups: BTreeMap<(Verdict, &str, &str, Expectation), Vec<&ProbeRecord>> =
            BTreeMap::new();
        let mut worst: BTreeMap<(&str, &str, Expectation), Verdict> = BTreeMap::new();
        for p in &self.probes {
            let w = worst
                .entry((p.user.as_str(), p.target.as_str(), p.expect))
                .or_insert(Verdict::Pass);
            *w = (*w).min(p.verdict);
        }
        for p in &self.probes {
            let key = (p.user.as_str(), p.target.as_str(), p.expect);
            groups
                .entry((worst[&key], key.0, key.1, key.2))
                .or_default()
                .push(p);
        }
        for ((_, user, target, expect), mut records) in groups {
            records.sort_by_key(|p| (p.verdict, p.family, p.exchange.clone(), p.address, p.port));
            let first = records[0];
            let what = match &first.domain {
                Some(domain) => format!("{target} (MX of {domain})"),
                None => target.to_string(),
            };
            let _ = writeln!(out, "{user} (uid {}) -> {what}: expect {expect}", first.uid);
            for p in records {
                let label = match p.verdict {
                    Verdict::Fail => paint("FAIL", "1;31"),
                    Verdict::Inconclusive => paint("INCONCLUSIVE", "1;33"),
                    Verdict::Pass => paint("pass", "32"),
                };
                let pad = " ".repeat(12usize.saturating_sub(p.verdict.label().len()));
                let mut line = format!(
                    "  {label}{pad} {:<4} {:<28} {:<11} {:>6} ms  {}",
                    p.family.to_string(),
                    p.endpoint(),
                    p.observed.as_str(),
                    p.elapsed_ms,
                    p.host(),
                );
                if p.witnessed == Some(false) {
                    line.push_str("  [not witnessed]");
                }
                if let Some(detail) = &p.detail {
                    if p.verdict != Verdict::Pass || p.observed != Observed::Timeout {
                        let _ = write!(line, "  -- {detail}");
                    }
                }
                let _ = writeln!(out, "{line}");
            }
            out.push('\n');
        }

        if self.unwitnessed_denies > 0 {
            let _ = writeln!(
                out,
                "note: {} passing denies were not witnessed: no probe in this run connected to \
                 the same address and port, so the target may simply have been down. Add a \
                 check that is expected to connect (e.g. the MTA's user) to witness them.",
                self.unwitnessed_denies
            );
        }
        let summary = format!("summary: {}", self.summary());
        let code = if self.failed > 0 {
            "1;31"
        } else if self.inconclusive > 0 {
            "1;33"
        } else {
            "1;32"
        };
        let _ = writeln!(out, "{}", paint(&summary, code));
        for split in &self.family_splits {
            let _ = writeln!(out, "{}", paint(&split.headline(), "1;31"));
        }
        out
    }
}

/// Finds, per user, exchange and port, families that connected while another was blocked.
fn family_splits(probes: &[ProbeRecord]) -> Vec<FamilySplit> {
    #[derive(Default)]
    struct Seen {
        connected: BTreeSet<Family>,
        blocked: BTreeSet<Family>,
    }
    let mut by_key: BTreeMap<(String, String, u16), Seen> = BTreeMap::new();
    for p in probes {
        let exchange = p.exchange.clone().unwrap_or_else(|| p.target.clone());
        let seen = by_key
            .entry((p.user.clone(), exchange, p.port))
            .or_default();
        if p.observed == Observed::Connected {
            seen.connected.insert(p.family);
        } else if verdict::is_blocked(p.observed) {
            seen.blocked.insert(p.family);
        }
    }
    let mut splits = Vec::new();
    for ((user, exchange, port), seen) in by_key {
        for &leaking in &seen.connected {
            for &blocked in seen.blocked.difference(&seen.connected) {
                splits.push(FamilySplit {
                    user: user.clone(),
                    exchange: exchange.clone(),
                    port,
                    leaking,
                    blocked,
                });
            }
        }
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, addr: &str, expect: Expectation, observed: Observed) -> ProbeRecord {
        let address: IpAddr = addr.parse().unwrap();
        ProbeRecord {
            user: user.into(),
            uid: 33,
            target: "gmail".into(),
            domain: Some("gmail.test".into()),
            exchange: Some("mx1.gmail.test".into()),
            preference: Some(10),
            address: Some(address),
            family: Family::of(&address),
            port: 25,
            expect,
            observed,
            verdict: Verdict::Inconclusive,
            witnessed: None,
            elapsed_ms: 1,
            detail: None,
        }
    }

    #[test]
    fn the_story_is_the_headline() {
        let report = Report::build(
            vec![
                record(
                    "www-data",
                    "203.0.113.10",
                    Expectation::Deny,
                    Observed::Timeout,
                ),
                record(
                    "www-data",
                    "2001:db8::10",
                    Expectation::Deny,
                    Observed::Connected,
                ),
                record(
                    "postfix",
                    "203.0.113.10",
                    Expectation::Allow,
                    Observed::Connected,
                ),
                record(
                    "postfix",
                    "2001:db8::10",
                    Expectation::Allow,
                    Observed::Connected,
                ),
            ],
            None,
        );
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (3, 1, 0)
        );
        assert_eq!(report.exit_code(), 1);
        assert_eq!(report.family_splits.len(), 1);
        let split = &report.family_splits[0];
        assert_eq!((split.leaking, split.blocked), (Family::Ipv6, Family::Ipv4));
        let human = report.to_human(false);
        assert!(
            human.starts_with(
                "LEAK: www-data reaches mx1.gmail.test port 25 over IPv6 while IPv4 is blocked"
            ),
            "{human}"
        );
        // The IPv4 deny is witnessed by postfix's connection to the same address.
        let v4 = report
            .probes
            .iter()
            .find(|p| p.user == "www-data" && p.family == Family::Ipv4)
            .unwrap();
        assert_eq!(v4.witnessed, Some(true));
        // Failures come before passes.
        let fail = human.find("FAIL").unwrap();
        let pass = human.find("pass").unwrap();
        assert!(fail < pass, "{human}");
    }

    #[test]
    fn unwitnessed_denies_are_counted_and_named() {
        let report = Report::build(
            vec![record(
                "www-data",
                "203.0.113.10",
                Expectation::Deny,
                Observed::Timeout,
            )],
            None,
        );
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.unwitnessed_denies, 1);
        assert_eq!(report.probes[0].witnessed, Some(false));
        assert!(report.to_human(false).contains("not witnessed"));
    }

    #[test]
    fn no_address_is_inconclusive_and_exit_3() {
        let mut r = record(
            "www-data",
            "203.0.113.10",
            Expectation::Deny,
            Observed::NoAddress,
        );
        r.address = None;
        let report = Report::build(vec![r], None);
        assert_eq!(report.inconclusive, 1);
        assert_eq!(report.exit_code(), 3);
        assert_eq!(report.probes[0].witnessed, None);
    }

    #[test]
    fn json_has_the_contract_fields() {
        let report = Report::build(
            vec![record(
                "www-data",
                "2001:db8::10",
                Expectation::Deny,
                Observed::Refused,
            )],
            None,
        );
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in ["passed", "failed", "inconclusive", "probes"] {
            assert!(value.get(key).is_some(), "{key}");
        }
        let probe = &value["probes"][0];
        for key in [
            "user",
            "uid",
            "target",
            "domain",
            "exchange",
            "address",
            "family",
            "port",
            "expect",
            "observed",
            "verdict",
            "witnessed",
            "elapsed_ms",
            "detail",
        ] {
            assert!(probe.get(key).is_some(), "{key}");
        }
        assert_eq!(probe["family"], "ipv6");
        assert_eq!(probe["observed"], "refused");
        assert_eq!(probe["verdict"], "pass");
        assert_eq!(probe["expect"], "deny");
    }

    #[test]
    fn junit_tells_failures_from_inconclusives() {
        let mut no_address = record("u", "2001:db8::10", Expectation::Deny, Observed::NoAddress);
        no_address.address = None;
        let report = Report::build(
            vec![
                record("u", "203.0.113.10", Expectation::Deny, Observed::Connected),
                record("u", "203.0.113.11", Expectation::Deny, Observed::Timeout),
                no_address,
            ],
            None,
        );
        let xml = report.to_junit();
        assert!(xml.contains("tests=\"3\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("errors=\"1\""), "{xml}");
        assert!(xml.contains("<failure"), "{xml}");
        assert!(xml.contains("<error"), "{xml}");
    }

    #[test]
    fn colour_only_when_asked() {
        let report = Report::build(
            vec![record(
                "u",
                "203.0.113.10",
                Expectation::Allow,
                Observed::Timeout,
            )],
            None,
        );
        assert!(!report.to_human(false).contains('\x1b'));
        assert!(report.to_human(true).contains("\x1b[1;31mFAIL"));
    }
}
