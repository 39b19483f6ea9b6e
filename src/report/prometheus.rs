//! `--format prometheus`: the run as node_exporter's textfile collector reads it (text
//! exposition format 0.0.4), for `--output prometheus=/var/lib/prometheus/node-exporter/egress-check.prom`
//! from the systemd timer. The alert rules in `contrib/prometheus/` are written against
//! these names; change one and change both (their `promtool test rules` files say so).
//!
//! Labels identify what was checked, never what was observed: a series keeps its identity
//! when the firewall changes, so an alert on it fires and resolves instead of one series
//! vanishing and another appearing. Outcomes are values. Series:
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `egress_check_probe_success` | user, target, exchange, address, family, port, expect | 1 passed, 0 failed or inconclusive |
//! | `egress_check_probe_inconclusive` | same | 1 inconclusive |
//! | `egress_check_probe_observed` | same | observed outcome, a code ([`observed_code`]) |
//! | `egress_check_probe_duration_seconds` | same | how long the connect took |
//! | `egress_check_probes_passed`, `_failed`, `_inconclusive` | user, target, family, port, expect | counts (no address: survives MX rotation); `port` is the contiguous range checked (`25`, `1-65535`) |
//! | `egress_check_family_split` | user, exchange, port, leaking | 1 while the split exists; `port` a contiguous range of split ports (`1-79`) |
//! | `egress_check_last_run_timestamp_seconds`, `_duration_seconds`, `_exit_code`, `_interrupted` | | the run |
//! | `egress_check_last_run_probes_passed`, `_failed`, `_inconclusive`, `_unwitnessed_denies`, `_family_splits` | | the run's counts |
//! | `egress_check_probe_series_omitted` | | 1 when per-probe series were left out (more than [`PROBE_SERIES_LIMIT`] probes) |
//! | `egress_check_build_info` | version | 1 |
//!
//! A family split is written only while it exists (alerts resolve when the series goes);
//! every count is written even when zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::probe::Observed;
use crate::verdict::{Judgement, ProbeRecord, Verdict};
use crate::vocab::{port_ranges, PortRange};

/// Above this many probes (a sweep), the per-probe series are left out and only the
/// aggregates are written: each probe is 4 series per scrape of every host, and Prometheus
/// pays for each one. `egress_check_probe_series_omitted` says when this happened.
pub const PROBE_SERIES_LIMIT: usize = 1000;

/// The number `egress_check_probe_observed` reports for an outcome. Stable: dashboards and
/// rules may compare with it.
pub fn observed_code(observed: Observed) -> u8 {
    match observed {
        Observed::Connected => 0,
        Observed::Refused => 1,
        Observed::Unreachable => 2,
        Observed::Timeout => 3,
        Observed::Error => 4,
        Observed::NoAddress => 5,
    }
}

/// What one probe series identifies (what was checked), in label order.
type ProbeKey = [String; 7];
/// What one aggregate series identifies.
type TargetKey = [String; 5];

const PROBE_LABELS: [&str; 7] = [
    "user", "target", "exchange", "address", "family", "port", "expect",
];
const TARGET_LABELS: [&str; 5] = ["user", "target", "family", "port", "expect"];
const SPLIT_LABELS: [&str; 4] = ["user", "exchange", "port", "leaking"];

/// One probe series' values; probes with the same key (a check listed twice) are merged,
/// the worst verdict winning, since a textfile with a duplicate series is rejected whole
/// by node_exporter.
struct ProbeValues {
    verdict: Verdict,
    observed: Observed,
    seconds: f64,
}

#[derive(Default)]
struct Counts {
    passed: usize,
    failed: usize,
    inconclusive: usize,
}

fn exchange(p: &ProbeRecord) -> String {
    p.spec
        .exchange
        .clone()
        .unwrap_or_else(|| p.spec.target.to_string())
}

/// What one check is, but for its ports: user, target, family, expectation.
fn check_key(report: &Judgement, p: &ProbeRecord) -> [String; 4] {
    [
        super::stable_label(report, &p.spec.user),
        p.spec.target.to_string(),
        p.spec.family.as_str().to_string(),
        p.spec.expect.to_string(),
    ]
}

fn probe_key(report: &Judgement, p: &ProbeRecord) -> ProbeKey {
    let address = match (p.address, &p.zone) {
        (Some(a), Some(zone)) => format!("{a}%{zone}"),
        (Some(a), None) => a.to_string(),
        // An empty label is an absent one in Prometheus: "no address".
        (None, _) => String::new(),
    };
    [
        super::stable_label(report, &p.spec.user),
        p.spec.target.to_string(),
        exchange(p),
        address,
        p.spec.family.as_str().to_string(),
        p.spec.port.to_string(),
        p.spec.expect.to_string(),
    ]
}

/// The textfile.
pub fn to_prometheus(report: &Judgement) -> String {
    let mut out = String::new();
    let mut probes: BTreeMap<ProbeKey, ProbeValues> = BTreeMap::new();
    let mut targets: BTreeMap<TargetKey, Counts> = BTreeMap::new();
    // The aggregates' `port` is the contiguous range of ports checked that holds the probe's
    // port (`25`, or `1-65535` for a sweep): one series per range checked, not per port,
    // and a label that does not change with outcomes.
    let mut checked: BTreeMap<[String; 4], Vec<u16>> = BTreeMap::new();
    for p in &report.probes {
        checked
            .entry(check_key(report, p))
            .or_default()
            .push(p.spec.port);
    }
    let checked: BTreeMap<[String; 4], Vec<PortRange>> = checked
        .into_iter()
        .map(|(k, ports)| (k, port_ranges(ports)))
        .collect();
    let range_of = |p: &ProbeRecord| -> String {
        let ranges = &checked[&check_key(report, p)];
        let i = ranges.partition_point(|r| r.last < p.spec.port);
        ranges[i].to_string()
    };
    for p in &report.probes {
        let values = ProbeValues {
            verdict: p.verdict,
            observed: p.observed,
            seconds: p.elapsed_ms as f64 / 1000.0,
        };
        probes
            .entry(probe_key(report, p))
            .and_modify(|v| {
                if values.verdict < v.verdict {
                    *v = ProbeValues { ..values };
                }
            })
            .or_insert(values);
        let counts = targets
            .entry([
                super::stable_label(report, &p.spec.user),
                p.spec.target.to_string(),
                p.spec.family.as_str().to_string(),
                range_of(p),
                p.spec.expect.to_string(),
            ])
            .or_default();
        match p.verdict {
            Verdict::Pass => counts.passed += 1,
            Verdict::Fail => counts.failed += 1,
            Verdict::Inconclusive => counts.inconclusive += 1,
        }
    }
    let omitted = report.probes.len() > PROBE_SERIES_LIMIT;

    if !omitted {
        let mut series = |name: &str, help: &str, value: &dyn Fn(&ProbeValues) -> String| {
            header(&mut out, name, help);
            for (key, v) in &probes {
                sample(&mut out, name, &PROBE_LABELS, key, &value(v));
            }
        };
        series(
            "egress_check_probe_success",
            "1 when the probe's expectation held, 0 when it failed or was inconclusive.",
            &|v| u8::from(v.verdict == Verdict::Pass).to_string(),
        );
        series(
            "egress_check_probe_inconclusive",
            "1 when the probe proved nothing either way (no address, an error, the deadline, a local destination).",
            &|v| u8::from(v.verdict == Verdict::Inconclusive).to_string(),
        );
        series(
            "egress_check_probe_observed",
            "What the probe observed: 0 connected, 1 refused, 2 unreachable, 3 timeout, 4 error, 5 no-address.",
            &|v| observed_code(v.observed).to_string(),
        );
        series(
            "egress_check_probe_duration_seconds",
            "How long the probe's connect attempt took.",
            &|v| v.seconds.to_string(),
        );
    }

    for (name, help, pick) in [
        (
            "egress_check_probes_passed",
            "Probes of the last run whose expectation held, per user, target, family and port.",
            (|c: &Counts| c.passed) as fn(&Counts) -> usize,
        ),
        (
            "egress_check_probes_failed",
            "Probes of the last run whose expectation did not hold, per user, target, family and port.",
            |c: &Counts| c.failed,
        ),
        (
            "egress_check_probes_inconclusive",
            "Probes of the last run that proved nothing, per user, target, family and port.",
            |c: &Counts| c.inconclusive,
        ),
    ] {
        header(&mut out, name, help);
        for (key, counts) in &targets {
            sample(&mut out, name, &TARGET_LABELS, key, &pick(counts).to_string());
        }
    }

    header(
        &mut out,
        "egress_check_family_split",
        "1 while a user reaches an exchange and port over one family (leaking) while the other is blocked.",
    );
    // One series per user, exchange, leaking family and contiguous range of split ports.
    let mut splits: Vec<[String; 4]> = crate::verdict::split_ranges(&report.family_splits)
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(move |range| {
                [
                    super::stable_label(report, &s.user),
                    s.exchange.clone(),
                    range.to_string(),
                    s.leaking.as_str().to_string(),
                ]
            })
        })
        .collect();
    splits.sort();
    splits.dedup();
    for key in &splits {
        sample(
            &mut out,
            "egress_check_family_split",
            &SPLIT_LABELS,
            key,
            "1",
        );
    }

    let mut run = |name: &str, help: &str, value: String| {
        header(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    };
    if let Some(info) = &report.run {
        run(
            "egress_check_last_run_timestamp_seconds",
            "When the last run started, in seconds since the Unix epoch.",
            info.started_unix_seconds().to_string(),
        );
        run(
            "egress_check_last_run_duration_seconds",
            "How long the last run took.",
            (info.duration_ms as f64 / 1000.0).to_string(),
        );
    }
    run(
        "egress_check_last_run_exit_code",
        "Exit code of the last run: 0 all passed, 1 a failure, 3 inconclusive only.",
        report.exit_code().to_string(),
    );
    run(
        "egress_check_last_run_interrupted",
        "1 when the last run was cut short (signal or deadline) and its results are partial.",
        u8::from(report.interrupted.is_some()).to_string(),
    );
    run(
        "egress_check_last_run_probes_passed",
        "Probes of the last run whose expectation held.",
        report.passed.to_string(),
    );
    run(
        "egress_check_last_run_probes_failed",
        "Probes of the last run whose expectation did not hold.",
        report.failed.to_string(),
    );
    run(
        "egress_check_last_run_probes_inconclusive",
        "Probes of the last run that proved nothing either way.",
        report.inconclusive.to_string(),
    );
    run(
        "egress_check_last_run_unwitnessed_denies",
        "Passing denies of the last run that no probe witnessed (the target may have been down).",
        report.unwitnessed_denies.to_string(),
    );
    run(
        "egress_check_last_run_family_splits",
        "Family splits found by the last run.",
        splits.len().to_string(),
    );
    run(
        "egress_check_probe_series_omitted",
        &format!(
            "1 when the run had more than {PROBE_SERIES_LIMIT} probes and the per-probe series were left out (aggregates only)."
        ),
        u8::from(omitted).to_string(),
    );
    let version = env!("CARGO_PKG_VERSION");
    header(
        &mut out,
        "egress_check_build_info",
        "The version of egress-check that wrote this file.",
    );
    sample(
        &mut out,
        "egress_check_build_info",
        &["version"],
        &[version.to_string()],
        "1",
    );
    out
}

/// `# HELP` and `# TYPE` lines; every series here is a gauge (the values of the last run,
/// not counters that only grow).
fn header(out: &mut String, name: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn sample(out: &mut String, name: &str, labels: &[&str], values: &[String], value: &str) {
    let labels = labels
        .iter()
        .zip(values)
        .map(|(label, v)| format!("{label}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",");
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{judged, probe, www_data_leak};
    use crate::vocab::Expectation;

    fn story() -> Judgement {
        judged(
            www_data_leak()
                .into_iter()
                .chain([
                    probe("www-data", "-", Expectation::Deny, Observed::NoAddress),
                    probe(
                        "post\"fix\\",
                        "203.0.113.10",
                        Expectation::Allow,
                        Observed::Connected,
                    ),
                ])
                .collect(),
        )
    }

    /// `promtool check metrics` on `text`, when promtool is installed; under `CI=true` it
    /// must be.
    fn promtool_check(text: &str) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("promtool not run ({err}); install the prometheus package");
                return;
            }
            Err(err) => panic!("CI=true and promtool cannot run: {err}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // promtool's linter: any problem is printed, and the status is non-zero.
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{said}\n{text}"
        );
    }

    #[test]
    fn the_story_as_metrics() {
        let mut report = story();
        report.run = Some(crate::run_info::RunInfo::begin([]).finish());
        let text = to_prometheus(&report);
        promtool_check(&text);
        assert!(text.contains(
            "egress_check_family_split{user=\"www-data\",exchange=\"mx1.gmail.test\",port=\"25\",leaking=\"ipv6\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "egress_check_probe_success{user=\"www-data\",target=\"gmail\",exchange=\"mx1.gmail.test\",address=\"2001:db8::10\",family=\"ipv6\",port=\"25\",expect=\"deny\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "egress_check_probe_inconclusive{user=\"www-data\",target=\"gmail\",exchange=\"mx1.gmail.test\",address=\"\",family=\"ipv6\",port=\"25\",expect=\"deny\"} 1\n"
        ), "{text}");
        // Two IPv6 probes of www-data: one failed, one inconclusive; neither hides the other.
        assert!(text.contains(
            "egress_check_probes_failed{user=\"www-data\",target=\"gmail\",family=\"ipv6\",port=\"25\",expect=\"deny\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "egress_check_probes_inconclusive{user=\"www-data\",target=\"gmail\",family=\"ipv6\",port=\"25\",expect=\"deny\"} 1\n"
        ), "{text}");
        assert!(text.contains("user=\"post\\\"fix\\\\\""), "{text}");
        assert!(
            text.contains("egress_check_last_run_exit_code 1\n"),
            "{text}"
        );
        assert!(text.contains("egress_check_last_run_probes_inconclusive 1\n"));
        assert!(text.contains("egress_check_probe_series_omitted 0\n"));
        assert!(text.contains("egress_check_last_run_timestamp_seconds 1"));
        assert!(text.contains(&format!(
            "egress_check_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        // No outcome in any label.
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| Some(&l[l.find('{')?..l.find('}')?]))
            .collect();
        for word in ["connected", "timeout", "fail", "pass", "inconclusive"] {
            assert!(!labels.iter().any(|l| l.contains(word)), "{word}: {text}");
        }
    }

    #[test]
    fn duplicate_checks_make_one_series_with_the_worst_verdict() {
        let report = judged(vec![
            probe("u", "203.0.113.10", Expectation::Deny, Observed::Timeout),
            probe("u", "203.0.113.10", Expectation::Deny, Observed::Connected),
        ]);
        let text = to_prometheus(&report);
        promtool_check(&text);
        let success: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("egress_check_probe_success{"))
            .collect();
        assert_eq!(success.len(), 1, "{text}");
        assert!(success[0].ends_with(" 0"), "{text}");
    }

    #[test]
    fn sweeps_write_aggregates_only_and_say_so() {
        let many = (0..=PROBE_SERIES_LIMIT)
            .map(|i| {
                probe(
                    "u",
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    Expectation::Deny,
                    Observed::Timeout,
                )
            })
            .collect();
        let text = to_prometheus(&judged(many));
        promtool_check(&text);
        assert!(!text.contains("egress_check_probe_success{"), "{text}");
        assert!(text.contains("egress_check_probe_series_omitted 1\n"));
        assert!(text.contains(&format!(
            "egress_check_probes_passed{{user=\"u\",target=\"gmail\",family=\"ipv4\",port=\"25\",expect=\"deny\"}} {}\n",
            PROBE_SERIES_LIMIT + 1
        )));
    }

    #[test]
    fn no_split_no_series_but_every_count() {
        let report = judged(vec![probe(
            "u",
            "203.0.113.10",
            Expectation::Deny,
            Observed::Refused,
        )]);
        let text = to_prometheus(&report);
        promtool_check(&text);
        assert!(!text.contains("egress_check_family_split{"));
        assert!(text.contains("egress_check_last_run_family_splits 0\n"));
        assert!(text.contains("egress_check_probes_failed{"));
    }

    #[test]
    fn a_sweep_is_aggregated_per_range() {
        let text = to_prometheus(&crate::report::tests::sweep());
        assert!(text.lines().count() < 80, "{text}");
        assert!(text.contains(
            "egress_check_probes_failed{user=\"www-data\",target=\"gmail\",family=\"ipv4\",port=\"1-65535\",expect=\"deny\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "egress_check_family_split{user=\"www-data\",exchange=\"mx1.gmail.test\",port=\"444-65535\",leaking=\"ipv6\"} 1\n"
        ), "{text}");
        assert!(
            text.contains("egress_check_probe_series_omitted 1\n"),
            "{text}"
        );
    }
}
