//! The `--format json` report, parsed and checked against the documented schema, and the
//! documented rules that follow from it: each probe's verdict, the run's exit code.

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::Value;

use super::process::describe;

/// The `--format json` report, checked against the documented schema while parsing.
#[derive(Debug)]
pub struct Report {
    /// Probes that passed.
    pub passed: u64,
    /// Probes that failed.
    pub failed: u64,
    /// Probes that were inconclusive.
    pub inconclusive: u64,
    /// Every probe.
    pub probes: Vec<Probe>,
}

/// One probe of the JSON report.
#[derive(Debug, Clone)]
pub struct Probe {
    pub user: String,
    pub uid: u64,
    pub target: String,
    pub domain: Option<String>,
    /// The exchange's name without a trailing dot.
    pub exchange: Option<String>,
    pub address: Option<String>,
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub port: u64,
    /// `allow` or `deny`.
    pub expect: String,
    /// `connected`, `refused`, `unreachable`, `timeout`, `error` or `no-address`.
    pub observed: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub witnessed: Option<bool>,
    pub elapsed_ms: f64,
    pub detail: Option<String>,
    /// An opted-in loopback or own address: the probe never left the host, so it can never
    /// pass, witness a deny or take part in a family split.
    pub local: bool,
}

fn field<'a>(obj: &'a Value, key: &str, ctx: &str) -> &'a Value {
    obj.get(key)
        .unwrap_or_else(|| panic!("JSON report: {ctx} has no `{key}`: {obj}"))
}

fn string(obj: &Value, key: &str, ctx: &str) -> String {
    field(obj, key, ctx)
        .as_str()
        .unwrap_or_else(|| panic!("JSON report: {ctx}.{key} is not a string: {obj}"))
        .to_string()
}

fn opt_string(obj: &Value, key: &str, ctx: &str) -> Option<String> {
    match field(obj, key, ctx) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("JSON report: {ctx}.{key} is neither a string nor null: {other}"),
    }
}

fn uint(obj: &Value, key: &str, ctx: &str) -> u64 {
    field(obj, key, ctx)
        .as_u64()
        .unwrap_or_else(|| panic!("JSON report: {ctx}.{key} is not an unsigned integer: {obj}"))
}

fn one_of(value: String, allowed: &[&str], what: &str) -> String {
    assert!(
        allowed.contains(&value.as_str()),
        "JSON report: {what} is {value:?}, not one of {allowed:?}"
    );
    value
}

impl Report {
    /// Parses stdout of `--format json`, panicking (with the whole output) on anything that
    /// does not follow the documented schema.
    pub fn parse(out: &Output) -> Report {
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{}", describe(out)));
        let probes = field(&doc, "probes", "report")
            .as_array()
            .unwrap_or_else(|| panic!("JSON report: `probes` is not an array\n{}", describe(out)))
            .iter()
            .enumerate()
            .map(|(i, p)| Probe::from_json(p, &format!("probes[{i}]")))
            .collect::<Vec<_>>();
        let report = Report {
            passed: uint(&doc, "passed", "report"),
            failed: uint(&doc, "failed", "report"),
            inconclusive: uint(&doc, "inconclusive", "report"),
            probes,
        };
        let count = |v: &str| report.probes.iter().filter(|p| p.verdict == v).count() as u64;
        assert_eq!(
            (report.passed, report.failed, report.inconclusive),
            (count("pass"), count("fail"), count("inconclusive")),
            "JSON report: totals (passed, failed, inconclusive) disagree with the probes' \
             verdicts\n{}",
            describe(out)
        );
        report
    }

    /// The exit code the README documents for a run with these totals: 1 when a probe
    /// failed, else 3 when one was inconclusive, else 0.
    pub fn documented_exit(&self) -> i32 {
        if self.failed > 0 {
            1
        } else if self.inconclusive > 0 {
            3
        } else {
            0
        }
    }

    /// The probes run as `user`.
    pub fn of_user(&self, user: &str) -> Vec<&Probe> {
        self.probes.iter().filter(|p| p.user == user).collect()
    }

    /// The probes run as `user` over `family` (`ipv4` or `ipv6`).
    pub fn of(&self, user: &str, family: &str) -> Vec<&Probe> {
        self.probes
            .iter()
            .filter(|p| p.user == user && p.family == family)
            .collect()
    }

    /// Asserts that `user` has exactly `count` probes over `family`, each with the given
    /// observation and verdict.
    #[track_caller]
    pub fn expect_probes(
        &self,
        user: &str,
        family: &str,
        count: usize,
        observed: &[&str],
        verdict: &str,
    ) {
        let probes = self.of(user, family);
        assert_eq!(
            probes.len(),
            count,
            "expected {count} {family} probe(s) as {user}, got {}: {probes:#?}",
            probes.len()
        );
        for p in probes {
            assert!(
                observed.contains(&p.observed.as_str()) && p.verdict == verdict,
                "probe as {user} over {family} to {:?} port {}: expected observed {observed:?} \
                 and verdict {verdict:?}, got observed {:?} verdict {:?} (detail: {:?})",
                p.address,
                p.port,
                p.observed,
                p.verdict,
                p.detail
            );
        }
    }
}

impl Probe {
    fn from_json(p: &Value, ctx: &str) -> Probe {
        assert!(p.is_object(), "JSON report: {ctx} is not an object: {p}");
        let witnessed = match field(p, "witnessed", ctx) {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => panic!("JSON report: {ctx}.witnessed is neither a bool nor null: {other}"),
        };
        let elapsed_ms = field(p, "elapsed_ms", ctx)
            .as_f64()
            .unwrap_or_else(|| panic!("JSON report: {ctx}.elapsed_ms is not a number: {p}"));
        let address = opt_string(p, "address", ctx);
        if let Some(a) = &address {
            a.parse::<std::net::IpAddr>().unwrap_or_else(|_| {
                panic!("JSON report: {ctx}.address {a:?} is not an IP address")
            });
        }
        let local = field(p, "local", ctx)
            .as_bool()
            .unwrap_or_else(|| panic!("JSON report: {ctx}.local is not a bool: {p}"));
        Probe {
            local,
            user: string(p, "user", ctx),
            uid: uint(p, "uid", ctx),
            target: string(p, "target", ctx),
            domain: opt_string(p, "domain", ctx),
            exchange: opt_string(p, "exchange", ctx).map(|e| e.trim_end_matches('.').to_string()),
            address,
            family: one_of(
                string(p, "family", ctx),
                &["ipv4", "ipv6"],
                &format!("{ctx}.family"),
            ),
            port: uint(p, "port", ctx),
            expect: one_of(
                string(p, "expect", ctx),
                &["allow", "deny"],
                &format!("{ctx}.expect"),
            ),
            observed: one_of(
                string(p, "observed", ctx),
                &[
                    "connected",
                    "refused",
                    "unreachable",
                    "timeout",
                    "error",
                    "no-address",
                ],
                &format!("{ctx}.observed"),
            ),
            verdict: one_of(
                string(p, "verdict", ctx),
                &["pass", "fail", "inconclusive"],
                &format!("{ctx}.verdict"),
            ),
            witnessed,
            elapsed_ms,
            detail: opt_string(p, "detail", ctx),
        }
    }
}

/// The documented verdict of an observed outcome under an expectation (`allow` or `deny`).
pub fn judge(expect: &str, observed: &str) -> &'static str {
    match (expect, observed) {
        (_, "error" | "no-address") => "inconclusive",
        ("allow", "connected") | ("deny", "refused" | "unreachable" | "timeout") => "pass",
        ("allow", "refused" | "unreachable" | "timeout") | ("deny", "connected") => "fail",
        other => panic!("unknown expect/observed {other:?}"),
    }
}

/// The set of `(exchange, family)` pairs among `probes`, for asserting coverage.
pub fn exchanges_and_families(probes: &[&Probe]) -> BTreeSet<(String, String)> {
    probes
        .iter()
        .map(|p| (p.exchange.clone().unwrap_or_default(), p.family.clone()))
        .collect()
}
