//! Verdicts: what the observed outcomes mean for the expectations. The one judging step of
//! a run ([`judge_run`]): each probe's verdict, whether a passing deny was witnessed, the
//! family splits, and the counts. [`crate::report`] only renders the [`Judgement`].
//!
//! The rule that shapes this module: a deny is only a pass when the connection was
//! actively stopped. Anything that could not prove a deny is inconclusive, never a pass.
//! A probe whose destination is this host (an opted-in loopback or own address) did not
//! cross the egress path: it never passes, never witnesses a deny and is never part of a
//! family split.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::exit_codes;
use crate::explain::Explanation;
use crate::plan::{PlannedProbe, ProbeSpec};
use crate::probe::{Attempt, Observed};
use crate::run_info::{RunInfo, SCHEMA_VERSION};
use crate::vocab::{format_port_ranges, port_ranges, Expectation, Family, PortRange};

/// The judgement of one probe against its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The expectation did not hold. Ordered first so failures sort to the top.
    Fail,
    /// Nothing could be proven either way.
    Inconclusive,
    /// The expectation held.
    Pass,
}

impl Verdict {
    /// Upper-case label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Pass => "pass",
        }
    }
}

/// Judges one observed outcome against an expectation.
pub fn judge(expect: Expectation, observed: Observed) -> Verdict {
    use Observed::*;
    match (expect, observed) {
        (_, Error | NoAddress) => Verdict::Inconclusive,
        (Expectation::Allow, Connected) => Verdict::Pass,
        (Expectation::Allow, Refused | Unreachable | Timeout) => Verdict::Fail,
        (Expectation::Deny, Connected) => Verdict::Fail,
        (Expectation::Deny, Refused | Unreachable | Timeout) => Verdict::Pass,
    }
}

/// Judges one probe: [`judge`], except that a probe to a `local` destination proves nothing
/// about the egress firewall whatever it observed, so it is inconclusive.
pub fn judge_probe(expect: Expectation, observed: Observed, local: bool) -> Verdict {
    if local {
        Verdict::Inconclusive
    } else {
        judge(expect, observed)
    }
}

/// True when the outcome means the connection was blocked (or could not be made) on the way.
pub fn is_blocked(observed: Observed) -> bool {
    matches!(
        observed,
        Observed::Refused | Observed::Unreachable | Observed::Timeout
    )
}

/// One probe as reported; the JSON report's `probes[]` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRecord {
    /// Who probed what.
    #[serde(flatten)]
    pub spec: ProbeSpec,
    /// The address connected to, on the wire (its family is `family`); `null` when there
    /// was none.
    pub address: Option<IpAddr>,
    /// The interface of an IPv6 link-local address (RFC 4007 zone); `null` otherwise.
    pub zone: Option<String>,
    /// The records or literal the address came from when they are not simply the address,
    /// e.g. `AAAA ::ffff:203.0.113.10` (IPv4-mapped: probed as IPv4); `null` otherwise.
    pub record: Option<String>,
    /// True when the destination is this host (opted-in loopback or own address): the
    /// connection did not cross the egress path, so the verdict is never a pass.
    pub local: bool,
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
    /// With `--explain`: `decided_by` and `trace` ([`crate::explain`]); absent otherwise.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    ///
    /// Boxed: an explanation is larger than the rest of the record, and a sweep without
    /// `--explain` holds 131,070 records with none (296 bytes each inline, 8 boxed).
    pub explanation: Option<Box<Explanation>>,
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

/// Family splits of one user, exchange and pair of families over a set of ports: what a
/// sweep's headline says once instead of once per port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitRange {
    /// The user.
    pub user: String,
    /// The exchange (or target) name.
    pub exchange: String,
    /// The ports, as contiguous ranges, ascending.
    #[serde(serialize_with = "serialize_ranges")]
    pub ports: Vec<PortRange>,
    /// How many ports.
    pub port_count: usize,
    /// The family that connected.
    pub leaking: Family,
    /// The family that was blocked.
    pub blocked: Family,
}

/// Port ranges as one string, `1-24,26-65535`: what people and `jq` read alike.
pub(crate) fn serialize_ranges<S: serde::Serializer>(
    ranges: &[PortRange],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_port_ranges(ranges))
}

impl SplitRange {
    /// The one-line headline; a single port reads exactly as [`FamilySplit::headline`].
    pub fn headline(&self) -> String {
        match self.ports.as_slice() {
            [one] if one.first == one.last => format!(
                "LEAK: {} reaches {} port {} over {} while {} is blocked",
                self.user, self.exchange, one.first, self.leaking, self.blocked
            ),
            ranges => format!(
                "LEAK: {} reaches {} ports of {} over {} that {} blocks: {}",
                self.user,
                thousands(self.port_count),
                self.exchange,
                self.leaking,
                self.blocked,
                format_port_ranges_capped(ranges, HEADLINE_RANGES)
            ),
        }
    }
}

/// At most this many ranges are written in one human line; the rest are counted (the JSON
/// reports list every one).
pub const HEADLINE_RANGES: usize = 64;

/// `ranges` written `A-B,C-D`, at most `cap` of them, then how many more there are.
pub fn format_port_ranges_capped(ranges: &[PortRange], cap: usize) -> String {
    if ranges.len() <= cap {
        return format_port_ranges(ranges);
    }
    format!(
        "{} and {} more ranges",
        format_port_ranges(&ranges[..cap]),
        ranges.len() - cap
    )
}

/// `65534` as `65,534`: counts people read at a glance.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Merges per-port family splits into one [`SplitRange`] per user, exchange and pair of
/// families, in the order of `splits` (sorted by user and exchange).
pub fn split_ranges(splits: &[FamilySplit]) -> Vec<SplitRange> {
    let mut by_key: BTreeMap<(&str, &str, Family, Family), Vec<u16>> = BTreeMap::new();
    for s in splits {
        by_key
            .entry((&s.user, &s.exchange, s.leaking, s.blocked))
            .or_default()
            .push(s.port);
    }
    by_key
        .into_iter()
        .map(|((user, exchange, leaking, blocked), ports)| {
            let port_count = ports.len();
            SplitRange {
                user: user.to_string(),
                exchange: exchange.to_string(),
                ports: port_ranges(ports),
                port_count,
                leaking,
                blocked,
            }
        })
        .collect()
}

/// The judgement of a run; serialized, it is the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    /// Version of this document's shape ([`crate::run_info::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Where, when and with what the run happened (`host`, `started`, `duration_ms`,
    /// `version`, `nameservers` at the top level of the JSON report); set by the caller
    /// that ran the probes, absent in a judgement made without a run.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
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
    /// With `--explain`: passing denies that this host did not enforce (it accepted the SYN;
    /// something beyond it blocked the connection). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_enforced_by_host: Option<usize>,
    /// The `pid:`/`unit:` identities probed as (their `key` is the probes' `user`): the
    /// process stood in, its cgroup and namespace, and what could not be reproduced.
    pub identities: Vec<crate::service::ServiceIdentity>,
    /// Every planned probe, exactly once.
    pub probes: Vec<ProbeRecord>,
}

impl Judgement {
    /// Adds `--explain`'s explanations (`explanations[i]` for `probes[i]`); verdicts and
    /// counts are left exactly as judged.
    pub fn attach_explanations(&mut self, explanations: Vec<Option<Explanation>>) {
        for (record, explanation) in self.probes.iter_mut().zip(explanations) {
            record.explanation = explanation.map(Box::new);
        }
        self.not_enforced_by_host = Some(
            self.probes
                .iter()
                .filter(|p| p.verdict == Verdict::Pass && p.spec.expect == Expectation::Deny)
                .filter(|p| {
                    p.explanation
                        .as_ref()
                        .is_some_and(|e| e.blocked_beyond_host())
                })
                .count(),
        );
    }

    /// A kernel limit may have dropped SYNs during the run (`reason`, from
    /// [`crate::runner::kernel`]): every timeout becomes inconclusive with the reason, since
    /// a dropped SYN reads as one; counts follow.
    pub fn mark_kernel_limited(&mut self, reason: &str) {
        for p in &mut self.probes {
            if p.observed == Observed::Timeout && p.verdict != Verdict::Inconclusive {
                p.verdict = Verdict::Inconclusive;
                p.witnessed = None;
                p.detail = Some(match p.detail.take() {
                    Some(d) => format!("{d}; {reason}"),
                    None => reason.to_string(),
                });
            }
        }
        let count = |v| self.probes.iter().filter(|p| p.verdict == v).count();
        self.passed = count(Verdict::Pass);
        self.failed = count(Verdict::Fail);
        self.inconclusive = count(Verdict::Inconclusive);
        self.unwitnessed_denies = self
            .probes
            .iter()
            .filter(|p| p.witnessed == Some(false))
            .count();
    }

    /// 0 all passed, 1 a failure, 3 inconclusive only.
    pub fn exit_code(&self) -> u8 {
        exit_codes::of_counts(self.failed, self.inconclusive)
    }
}

/// Judges a run: `attempts[i]` is what `probes[i]` observed; `interrupted` says why the run
/// was cut short, if it was.
pub fn judge_run(
    probes: Vec<PlannedProbe>,
    attempts: Vec<Attempt>,
    interrupted: Option<String>,
) -> Judgement {
    let mut records = to_records(probes, attempts);
    // Only a connection that crossed the egress path shows the destination was up; the set
    // is built only when a passing deny needs a witness (a sweep that is let through would
    // otherwise hold one entry per port for nothing).
    let needs_witness = records.iter().any(|p| {
        p.spec.expect == Expectation::Deny && p.verdict == Verdict::Pass && p.address.is_some()
    });
    let connected: HashSet<(IpAddr, Option<&str>, u16)> = if needs_witness {
        records
            .iter()
            .filter(|p| p.observed == Observed::Connected && !p.local)
            .filter_map(|p| Some((p.address?, p.zone.as_deref(), p.spec.port)))
            .collect()
    } else {
        HashSet::new()
    };
    let witnessed: Vec<Option<bool>> = records
        .iter()
        .map(|p| match (p.spec.expect, p.verdict, p.address) {
            (Expectation::Deny, Verdict::Pass, Some(addr)) => {
                Some(connected.contains(&(addr, p.zone.as_deref(), p.spec.port)))
            }
            _ => None,
        })
        .collect();
    drop(connected);
    for (p, witnessed) in records.iter_mut().zip(witnessed) {
        p.witnessed = witnessed;
    }
    let count = |v| records.iter().filter(|p| p.verdict == v).count();
    Judgement {
        schema_version: SCHEMA_VERSION,
        run: None,
        passed: count(Verdict::Pass),
        failed: count(Verdict::Fail),
        inconclusive: count(Verdict::Inconclusive),
        unwitnessed_denies: records
            .iter()
            .filter(|p| p.witnessed == Some(false))
            .count(),
        family_splits: family_splits(&records),
        interrupted,
        not_enforced_by_host: None,
        identities: Vec::new(),
        probes: records,
    }
}

/// The report's records: `attempts[i]` is what `probes[i]` observed.
///
/// Built from the back, giving back the probes' and attempts' memory as it goes: a sweep's
/// 131,070 planned probes (30 MB) and their records (as much again) are never all held at
/// once.
fn to_records(mut probes: Vec<PlannedProbe>, mut attempts: Vec<Attempt>) -> Vec<ProbeRecord> {
    /// Records made between two shrinks of the inputs.
    const STEP: usize = 8192;
    // Zipped: a probe without an attempt (or an attempt without a probe) is left out, as
    // `zip` did.
    let n = probes.len().min(attempts.len());
    probes.truncate(n);
    attempts.truncate(n);
    let mut records = Vec::new();
    while let (Some(p), Some(attempt)) = (probes.pop(), attempts.pop()) {
        records.push(to_record(p, attempt));
        if records.len() % STEP == 0 {
            probes.shrink_to_fit();
            attempts.shrink_to_fit();
        }
    }
    records.reverse();
    records
}

/// One probe's record (`witnessed` still unknown).
fn to_record(p: PlannedProbe, attempt: Attempt) -> ProbeRecord {
    let endpoint = p.endpoint();
    let local = p.is_local();
    ProbeRecord {
        address: p.address(),
        zone: endpoint.and_then(|e| e.scope.as_ref().map(|s| s.interface.clone())),
        record: endpoint.and_then(|e| e.record.clone()),
        local,
        detail: match (attempt.detail, p.note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        },
        verdict: judge_probe(p.spec.expect, attempt.observed, local),
        spec: p.spec,
        observed: attempt.observed,
        witnessed: None,
        elapsed_ms: u64::try_from(attempt.elapsed.as_millis()).unwrap_or(u64::MAX),
        explanation: None,
    }
}

/// Finds, per user, exchange and port, families that connected while another was blocked.
fn family_splits(probes: &[ProbeRecord]) -> Vec<FamilySplit> {
    /// Families seen, as bits of [`Family::ALL`]: a sweep has an entry per port, and a set
    /// that allocates would cost more than the records it is made from.
    #[derive(Default, Clone, Copy)]
    struct Seen {
        connected: u8,
        blocked: u8,
    }
    let bit = |family: Family| 1u8 << Family::ALL.iter().position(|&f| f == family).unwrap_or(0);
    let mut by_key: BTreeMap<(&str, &str, u16), Seen> = BTreeMap::new();
    // A local probe did not use the egress path of its family: it says nothing of a split.
    for p in probes.iter().filter(|p| !p.local) {
        let exchange = p.spec.exchange.as_deref().unwrap_or(&p.spec.target);
        let seen = by_key
            .entry((&p.spec.user, exchange, p.spec.port))
            .or_default();
        if p.observed == Observed::Connected {
            seen.connected |= bit(p.spec.family);
        } else if is_blocked(p.observed) {
            seen.blocked |= bit(p.spec.family);
        }
    }
    let families = |bits: u8| Family::ALL.into_iter().filter(move |&f| bits & bit(f) != 0);
    let mut splits = Vec::new();
    for ((user, exchange, port), seen) in by_key {
        for leaking in families(seen.connected) {
            for blocked in families(seen.blocked & !seen.connected) {
                splits.push(FamilySplit {
                    user: user.to_owned(),
                    exchange: exchange.to_owned(),
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
    use Observed::*;

    #[test]
    fn verdict_table() {
        let table = [
            (Connected, Verdict::Pass, Verdict::Fail),
            (Refused, Verdict::Fail, Verdict::Pass),
            (Unreachable, Verdict::Fail, Verdict::Pass),
            (Timeout, Verdict::Fail, Verdict::Pass),
            (Error, Verdict::Inconclusive, Verdict::Inconclusive),
            (NoAddress, Verdict::Inconclusive, Verdict::Inconclusive),
        ];
        for (observed, allow, deny) in table {
            assert_eq!(judge(Expectation::Allow, observed), allow, "{observed:?}");
            assert_eq!(judge(Expectation::Deny, observed), deny, "{observed:?}");
        }
    }

    #[test]
    fn nothing_unproven_passes() {
        for expect in [Expectation::Allow, Expectation::Deny] {
            for observed in [Error, NoAddress] {
                assert_ne!(judge(expect, observed), Verdict::Pass);
            }
        }
    }

    #[test]
    fn failures_sort_first() {
        let mut v = vec![Verdict::Pass, Verdict::Inconclusive, Verdict::Fail];
        v.sort();
        assert_eq!(v, vec![Verdict::Fail, Verdict::Inconclusive, Verdict::Pass]);
    }

    fn judged(list: Vec<(PlannedProbe, Attempt)>) -> Judgement {
        let (probes, attempts) = list.into_iter().unzip();
        judge_run(probes, attempts, None)
    }

    fn probe(
        user: &str,
        addr: &str,
        expect: Expectation,
        observed: Observed,
    ) -> (PlannedProbe, Attempt) {
        crate::report::tests::probe(user, addr, expect, observed)
    }

    #[test]
    fn the_story_is_a_family_split_and_the_ipv4_deny_is_witnessed() {
        let report = judged(vec![
            probe("www-data", "203.0.113.10", Expectation::Deny, Timeout),
            probe("www-data", "2001:db8::10", Expectation::Deny, Connected),
            probe("postfix", "203.0.113.10", Expectation::Allow, Connected),
            probe("postfix", "2001:db8::10", Expectation::Allow, Connected),
        ]);
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (3, 1, 0)
        );
        assert_eq!(report.exit_code(), exit_codes::FAILED);
        assert_eq!(report.family_splits.len(), 1);
        let split = &report.family_splits[0];
        assert_eq!((split.leaking, split.blocked), (Family::Ipv6, Family::Ipv4));
        let v4 = report
            .probes
            .iter()
            .find(|p| &*p.spec.user == "www-data" && p.spec.family == Family::Ipv4)
            .unwrap();
        assert_eq!(v4.witnessed, Some(true));
    }

    #[test]
    fn unwitnessed_denies_are_counted() {
        let report = judged(vec![probe(
            "www-data",
            "203.0.113.10",
            Expectation::Deny,
            Timeout,
        )]);
        assert_eq!(report.exit_code(), exit_codes::PASSED);
        assert_eq!(report.unwitnessed_denies, 1);
        assert_eq!(report.probes[0].witnessed, Some(false));
    }

    #[test]
    fn no_address_is_inconclusive_and_exit_3() {
        let report = judged(vec![probe("www-data", "-", Expectation::Deny, NoAddress)]);
        assert_eq!(report.inconclusive, 1);
        assert_eq!(report.exit_code(), exit_codes::INCONCLUSIVE);
        assert_eq!(report.probes[0].witnessed, None);
        assert_eq!(report.probes[0].address, None);
    }

    /// A probe to `addr` that a target opted in to as local.
    fn local(
        user: &str,
        addr: &str,
        expect: Expectation,
        observed: Observed,
    ) -> (PlannedProbe, Attempt) {
        let (mut planned, attempt) = probe(user, addr, expect, observed);
        if let crate::plan::Destination::Address(endpoint) = &mut planned.destination {
            endpoint.local = true;
        }
        (planned, attempt)
    }

    #[test]
    fn local_probes_never_pass_whatever_they_observe() {
        for expect in [Expectation::Allow, Expectation::Deny] {
            for observed in [Connected, Refused, Unreachable, Timeout, Error, NoAddress] {
                assert_eq!(judge_probe(expect, observed, true), Verdict::Inconclusive);
                assert_eq!(
                    judge_probe(expect, observed, false),
                    judge(expect, observed)
                );
            }
        }
        let report = judged(vec![
            local("postfix", "127.0.0.1", Expectation::Allow, Connected),
            local("www-data", "127.0.0.1", Expectation::Deny, Refused),
        ]);
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (0, 0, 2)
        );
        assert!(report
            .probes
            .iter()
            .all(|p| p.local && p.witnessed.is_none()));
        assert_eq!(report.exit_code(), exit_codes::INCONCLUSIVE);
    }

    #[test]
    fn local_connections_witness_nothing_and_split_nothing() {
        // The MTA's own listener answers on the host's address: that connection proves
        // nothing about the path out, so the deny stays unwitnessed and there is no split.
        let report = judged(vec![
            local("postfix", "198.51.100.1", Expectation::Allow, Connected),
            probe("www-data", "198.51.100.1", Expectation::Deny, Timeout),
            local("www-data", "2001:db8:100::1", Expectation::Deny, Connected),
        ]);
        let deny = report.probes.iter().find(|p| !p.local).unwrap();
        assert_eq!(deny.verdict, Verdict::Pass);
        assert_eq!(deny.witnessed, Some(false));
        assert_eq!(report.unwitnessed_denies, 1);
        assert!(
            report.family_splits.is_empty(),
            "{:?}",
            report.family_splits
        );
    }

    #[test]
    fn details_of_attempt_and_plan_are_joined() {
        let (mut planned, mut attempt) = probe("u", "203.0.113.10", Expectation::Allow, Connected);
        planned.note = Some("(implicit MX)".into());
        attempt.detail = Some("ECONNRESET".into());
        let report = judged(vec![(planned, attempt)]);
        assert_eq!(
            report.probes[0].detail.as_deref(),
            Some("ECONNRESET; (implicit MX)")
        );
    }

    #[test]
    fn splits_merge_into_ranges() {
        let split = |port, leaking, blocked| FamilySplit {
            user: "www-data".into(),
            exchange: "mx".into(),
            port,
            leaking,
            blocked,
        };
        let mut splits: Vec<FamilySplit> = (1..=65535u16)
            .filter(|&p| p != 25)
            .map(|p| split(p, Family::Ipv6, Family::Ipv4))
            .collect();
        splits.push(split(25, Family::Ipv4, Family::Ipv6));
        let ranges = split_ranges(&splits);
        assert_eq!(ranges.len(), 2);
        assert_eq!(
            ranges[0].headline(),
            "LEAK: www-data reaches mx port 25 over IPv4 while IPv6 is blocked"
        );
        assert_eq!(
            ranges[1].headline(),
            "LEAK: www-data reaches 65,534 ports of mx over IPv6 that IPv4 blocks: 1-24,26-65535"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn a_kernel_limit_makes_timeouts_inconclusive() {
        use crate::report::tests::{judged, probe};
        let mut j = judged(vec![
            probe("u", "203.0.113.10", Expectation::Deny, Timeout),
            probe("u", "203.0.113.11", Expectation::Allow, Timeout),
            probe("u", "203.0.113.12", Expectation::Deny, Refused),
            probe("u", "203.0.113.13", Expectation::Allow, Connected),
        ]);
        assert_eq!((j.passed, j.failed, j.inconclusive), (3, 1, 0));
        j.mark_kernel_limited("conntrack drop +3");
        assert_eq!((j.passed, j.failed, j.inconclusive), (2, 0, 2));
        assert_eq!(j.unwitnessed_denies, 1, "only the refused deny is left");
        assert_eq!(j.probes[0].detail.as_deref(), Some("conntrack drop +3"));
        assert_eq!(j.exit_code(), 3);
    }
}
