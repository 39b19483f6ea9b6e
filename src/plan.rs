//! Planning: from scenarios to the exact list of probes, before and after DNS.
//!
//! First every check is expanded into (user, target, expectation) assignments and the
//! users are looked up, so a typo in a user name stops the run before anything is sent.
//! After resolution each assignment becomes one probe per address, port and family, plus
//! one `no-address` probe for every family that has nothing to connect to: an untested
//! family must show up in the report.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::{self, Account, IdentityError};
use crate::probe::Observed;
use crate::report::ProbeRecord;
use crate::resolve::{Addresses, Exchange, Resolution};
use crate::scenario::{Expectation, Family, Location, Scenario, Target, TargetKind};
use crate::verdict::Verdict;

/// Default per-connect timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A user in a scenario does not exist (or cannot be switched to).
    #[error("{}{error}", .location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    User {
        /// Where the scenario names the user.
        location: Option<Location>,
        /// What is wrong.
        error: IdentityError,
    },
    /// `--as USER` matched no check.
    #[error("no check in {scenarios} runs as `{user}`; the users checked are: {known}")]
    NoChecksFor {
        /// The filter.
        user: String,
        /// The scenarios, named.
        scenarios: String,
        /// Users that do appear.
        known: String,
    },
}

/// One user, one target, one expectation, with the settings that apply.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The account probed as.
    pub account: Account,
    /// The target.
    pub target: Target,
    /// What should happen.
    pub expect: Expectation,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Index of the scenario in the run (selects its resolver).
    pub scenario: usize,
}

/// Expands the checks of `scenarios` into assignments, looking every user up.
///
/// `only_user` keeps the checks of that user only; `timeout` overrides the scenarios'.
pub fn assignments(
    scenarios: &[Scenario],
    only_user: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Vec<Assignment>, PlanError> {
    let only_account = only_user
        .map(|u| {
            identity::lookup(u).map_err(|error| PlanError::User {
                location: None,
                error,
            })
        })
        .transpose()?;
    let mut out = Vec::new();
    let mut seen_users: Vec<String> = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let timeout = timeout.or(scenario.timeout).unwrap_or(DEFAULT_TIMEOUT);
        for check in &scenario.checks {
            for user in &check.users {
                let account = identity::lookup(&user.name).map_err(|error| PlanError::User {
                    location: user.location.clone(),
                    error,
                })?;
                if !seen_users.contains(&account.name) {
                    seen_users.push(account.name.clone());
                }
                if only_account
                    .as_ref()
                    .is_some_and(|only| only.uid != account.uid)
                {
                    continue;
                }
                for &t in &check.targets {
                    out.push(Assignment {
                        account: account.clone(),
                        target: scenario.targets[t].clone(),
                        expect: check.expect,
                        timeout,
                        scenario: index,
                    });
                }
            }
        }
    }
    if let (Some(user), true) = (only_user, out.is_empty()) {
        return Err(PlanError::NoChecksFor {
            user: user.to_string(),
            scenarios: scenarios
                .iter()
                .map(|s| s.source.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known: seen_users.join(", "),
        });
    }
    Ok(out)
}

/// Checks that this process may take every identity the assignments need.
pub fn ensure_privileges(assignments: &[Assignment]) -> Result<(), IdentityError> {
    for a in assignments {
        identity::ensure_can_become(&a.account)?;
    }
    Ok(())
}

/// A probe of the final plan: its report record, and where to connect if anywhere.
#[derive(Debug, Clone)]
pub struct PlannedProbe {
    /// The record, complete except for the outcome of the attempt.
    pub record: ProbeRecord,
    /// The address and port to connect to; `None` for probes decided without connecting.
    pub connect_to: Option<SocketAddr>,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Turns assignments and their targets' resolutions into the probes of the run.
pub fn expand(
    assignments: &[Assignment],
    resolution_of: impl Fn(&Assignment) -> Resolution,
) -> Vec<PlannedProbe> {
    let mut probes = Vec::new();
    for a in assignments {
        let domain = match &a.target.kind {
            TargetKind::Mx(d) => Some(d.clone()),
            _ => None,
        };
        let base = |exchange: Option<String>, family: Family, port: u16| ProbeRecord {
            user: a.account.name.clone(),
            uid: a.account.uid.as_raw(),
            target: a.target.name.clone(),
            domain: domain.clone(),
            exchange,
            preference: None,
            address: None,
            family,
            port,
            expect: a.expect,
            observed: Observed::NoAddress,
            verdict: Verdict::Inconclusive,
            witnessed: None,
            elapsed_ms: 0,
            detail: None,
        };
        let undecided = |record: ProbeRecord, detail: String| PlannedProbe {
            record: ProbeRecord {
                detail: Some(detail),
                ..record
            },
            connect_to: None,
            timeout: a.timeout,
        };
        match resolution_of(a) {
            Resolution::Failed(failure) => {
                for family in &a.target.families {
                    for &port in &a.target.ports {
                        probes.push(undecided(base(None, *family, port), failure.to_string()));
                    }
                }
            }
            Resolution::NullMx => {
                let detail = format!(
                    "{} publishes a null MX (RFC 7505): it accepts no mail, so there is nothing to probe",
                    domain.as_deref().unwrap_or("the domain")
                );
                for family in &a.target.families {
                    for &port in &a.target.ports {
                        probes.push(undecided(
                            base(Some(".".into()), *family, port),
                            detail.clone(),
                        ));
                    }
                }
            }
            Resolution::Exchanges {
                implicit_mx,
                exchanges,
            } => {
                for exchange in &exchanges {
                    for &family in &a.target.families {
                        for &port in &a.target.ports {
                            let record = ProbeRecord {
                                preference: exchange.preference,
                                ..base(exchange.name.clone(), family, port)
                            };
                            expand_family(
                                &mut probes,
                                record,
                                exchange,
                                implicit_mx,
                                a.timeout,
                                &undecided,
                            );
                        }
                    }
                }
            }
        }
    }
    probes
}

fn expand_family(
    probes: &mut Vec<PlannedProbe>,
    record: ProbeRecord,
    exchange: &Exchange,
    implicit_mx: bool,
    timeout: Duration,
    undecided: &impl Fn(ProbeRecord, String) -> PlannedProbe,
) {
    let family = record.family;
    let implicit = if implicit_mx {
        " (no MX record: the domain's own address is used, RFC 5321 5.1)"
    } else {
        ""
    };
    match exchange.addresses(family) {
        Addresses::Found(list) => {
            for &address in list {
                probes.push(PlannedProbe {
                    record: ProbeRecord {
                        address: Some(address),
                        detail: (!implicit.is_empty()).then(|| implicit.trim().to_string()),
                        ..record.clone()
                    },
                    connect_to: Some(SocketAddr::new(address, record.port)),
                    timeout,
                });
            }
        }
        Addresses::None => {
            let name = exchange.name.as_deref().unwrap_or("the target");
            let detail = format!(
                "{name} has no {} record, so {family} was not tested{implicit}",
                family.record_type()
            );
            probes.push(undecided(record, detail));
        }
        Addresses::Failed(failure) => {
            probes.push(undecided(
                record,
                format!("{failure}; {family} was not tested"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{DnsFailure, FailureKind};
    use nix::unistd::{Gid, Uid};
    use std::net::IpAddr;

    fn assignment(kind: TargetKind, families: Vec<Family>, ports: Vec<u16>) -> Assignment {
        Assignment {
            account: Account {
                name: "ec-web".into(),
                uid: Uid::from_raw(1234),
                gid: Gid::from_raw(1234),
            },
            target: Target {
                name: "t".into(),
                kind,
                ports,
                families,
            },
            expect: Expectation::Deny,
            timeout: Duration::from_secs(1),
            scenario: 0,
        }
    }

    fn exchange(name: &str, ipv4: Addresses, ipv6: Addresses) -> Exchange {
        Exchange {
            name: Some(name.into()),
            preference: Some(10),
            ipv4,
            ipv6,
        }
    }

    #[test]
    fn every_address_port_and_family_is_probed() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25, 587],
        );
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![
                exchange(
                    "mx1.d.test",
                    Addresses::Found(vec![v4]),
                    Addresses::Found(vec![v6]),
                ),
                exchange(
                    "mx2.d.test",
                    Addresses::Found(vec![v4]),
                    Addresses::Found(vec![v6]),
                ),
            ],
        };
        let probes = expand(&[a], |_| resolution.clone());
        assert_eq!(probes.len(), 2 * 2 * 2);
        assert!(probes.iter().all(|p| p.connect_to.is_some()));
        assert!(probes
            .iter()
            .any(|p| p.connect_to == Some(SocketAddr::new(v6, 587))));
    }

    #[test]
    fn a_family_without_addresses_is_one_inconclusive_probe() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25],
        );
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange(
                "mx.d.test",
                Addresses::Found(vec![v4]),
                Addresses::None,
            )],
        };
        let probes = expand(&[a], |_| resolution.clone());
        assert_eq!(probes.len(), 2);
        let v6 = probes
            .iter()
            .find(|p| p.record.family == Family::Ipv6)
            .unwrap();
        assert_eq!(v6.connect_to, None);
        assert_eq!(v6.record.observed, Observed::NoAddress);
        assert_eq!(v6.record.verdict, Verdict::Inconclusive);
        assert!(v6
            .record
            .detail
            .as_ref()
            .unwrap()
            .contains("no AAAA record"));
    }

    #[test]
    fn families_not_asked_for_are_not_probed() {
        let a = assignment(
            TargetKind::Mx("d.test".into()),
            vec![Family::Ipv4],
            vec![25],
        );
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![exchange("mx.d.test", Addresses::None, Addresses::None)],
        };
        let probes = expand(&[a], |_| resolution.clone());
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].record.family, Family::Ipv4);
    }

    #[test]
    fn dns_failures_and_null_mx_are_inconclusive_per_family_and_port() {
        let a = assignment(
            TargetKind::Mx("nx.test".into()),
            Family::ALL.to_vec(),
            vec![25, 26],
        );
        let failure = Resolution::Failed(DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
        });
        let probes = expand(std::slice::from_ref(&a), |_| failure.clone());
        assert_eq!(probes.len(), 4);
        assert!(probes
            .iter()
            .all(|p| p.record.verdict == Verdict::Inconclusive
                && p.record.detail.as_ref().unwrap().contains("NXDOMAIN")));

        let probes = expand(&[a], |_| Resolution::NullMx);
        assert_eq!(probes.len(), 4);
        assert!(probes[0]
            .record
            .detail
            .as_ref()
            .unwrap()
            .contains("null MX"));
    }

    #[test]
    fn unknown_users_are_located() {
        let scenario = crate::scenario::parse(
            "s.toml",
            "[[target]]\nname = \"t\"\nmx = \"d.test\"\n[[check]]\nas = [\"no-such-user-ec\"]\nexpect = \"deny\"\n",
        )
        .unwrap();
        let err = assignments(&[scenario], None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.toml:5:7: no such user `no-such-user-ec`"),
            "{err}"
        );
    }

    #[test]
    fn user_filter_keeps_only_that_user() {
        let scenario = crate::scenario::parse(
            "s.toml",
            "[[target]]\nname = \"t\"\nmx = \"d.test\"\n[[check]]\nas = [\"root\"]\nexpect = \"allow\"\n",
        )
        .unwrap();
        assert_eq!(
            assignments(std::slice::from_ref(&scenario), Some("root"), None)
                .unwrap()
                .len(),
            1
        );
        let err = assignments(&[scenario], Some("nobody"), None).unwrap_err();
        assert!(err.to_string().contains("runs as `nobody`"));
    }
}
