//! `egress-check resolve`'s report: what would be probed for each mail domain, in the
//! same human and JSON forms as the run's report.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::resolve::{Addresses, Exchange, Resolution};
use crate::vocab::Family;

/// The answers for every domain asked about, in the order asked; serialized, it is the
/// JSON document (an array).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct ResolveReport {
    /// One entry per domain.
    pub domains: Vec<DomainReport>,
}

/// One domain's answers.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    /// The domain, normalized.
    pub domain: String,
    /// What DNS said.
    #[serde(flatten)]
    pub status: DomainStatus,
}

/// What DNS said about a domain.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum DomainStatus {
    /// The MX lookup failed.
    Failed {
        /// Why.
        error: String,
    },
    /// A null MX (RFC 7505): the domain accepts no mail.
    NullMx,
    /// Exchanges to probe.
    Ok {
        /// True when the domain has no MX and its own address stands in (RFC 5321 5.1).
        implicit_mx: bool,
        /// The exchanges by preference.
        exchanges: Vec<ExchangeReport>,
    },
}

/// One exchange and its addresses.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeReport {
    /// Its name.
    pub exchange: String,
    /// Its MX preference.
    pub preference: Option<u16>,
    /// A records.
    pub ipv4: AddressesReport,
    /// AAAA records.
    pub ipv6: AddressesReport,
}

/// The addresses of one family, or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct AddressesReport {
    /// The addresses found (empty when none or failed).
    pub addresses: Vec<IpAddr>,
    /// The lookup's failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&Addresses> for AddressesReport {
    fn from(a: &Addresses) -> Self {
        match a {
            Addresses::Found(list) => AddressesReport {
                addresses: list.clone(),
                error: None,
            },
            Addresses::None => AddressesReport {
                addresses: Vec::new(),
                error: None,
            },
            Addresses::Failed(f) => AddressesReport {
                addresses: Vec::new(),
                error: Some(f.to_string()),
            },
        }
    }
}

impl ResolveReport {
    /// The report of `domains` and their resolutions (in the same order).
    pub fn new<'a>(answers: impl IntoIterator<Item = (&'a str, &'a Resolution)>) -> ResolveReport {
        let exchange = |ex: &Exchange| ExchangeReport {
            exchange: ex.name.clone().unwrap_or_default(),
            preference: ex.preference,
            ipv4: (&ex.ipv4).into(),
            ipv6: (&ex.ipv6).into(),
        };
        let domains = answers
            .into_iter()
            .map(|(domain, resolution)| DomainReport {
                domain: domain.to_string(),
                status: match resolution {
                    Resolution::Failed(failure) => DomainStatus::Failed {
                        error: failure.to_string(),
                    },
                    Resolution::NullMx => DomainStatus::NullMx,
                    // Literal addresses are not looked up; shown as the addresses they are.
                    Resolution::Literals(list) => {
                        let of = |family| {
                            let found: Vec<IpAddr> = list
                                .iter()
                                .map(|l| l.ip)
                                .filter(|ip| Family::of(ip) == family)
                                .collect();
                            if found.is_empty() {
                                Addresses::None
                            } else {
                                Addresses::Found(found)
                            }
                        };
                        DomainStatus::Ok {
                            implicit_mx: false,
                            exchanges: vec![ExchangeReport {
                                exchange: String::new(),
                                preference: None,
                                ipv4: (&of(Family::Ipv4)).into(),
                                ipv6: (&of(Family::Ipv6)).into(),
                            }],
                        }
                    }
                    Resolution::Exchanges {
                        implicit_mx,
                        exchanges,
                    } => DomainStatus::Ok {
                        implicit_mx: *implicit_mx,
                        exchanges: exchanges.iter().map(exchange).collect(),
                    },
                },
            })
            .collect();
        ResolveReport { domains }
    }

    /// True when every lookup answered (possibly with "no such record").
    pub fn complete(&self) -> bool {
        self.domains.iter().all(|d| match &d.status {
            DomainStatus::Failed { .. } => false,
            DomainStatus::NullMx => true,
            DomainStatus::Ok { exchanges, .. } => exchanges
                .iter()
                .all(|e| e.ipv4.error.is_none() && e.ipv6.error.is_none()),
        })
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a resolve report always serializes")
    }

    /// The human report.
    pub fn to_human(&self) -> String {
        let mut text = String::new();
        for d in &self.domains {
            let _ = writeln!(text, "{}", d.domain);
            match &d.status {
                DomainStatus::Failed { error } => {
                    let _ = writeln!(text, "  error: {error}");
                }
                DomainStatus::NullMx => {
                    let _ = writeln!(text, "  null MX (RFC 7505): accepts no mail");
                }
                DomainStatus::Ok {
                    implicit_mx,
                    exchanges,
                } => {
                    for ex in exchanges {
                        let name = &ex.exchange;
                        let _ = match (implicit_mx, ex.preference) {
                            (true, _) => {
                                writeln!(text, "  no MX; implicit MX (RFC 5321 5.1): {name}")
                            }
                            (false, Some(pref)) => writeln!(text, "  MX {pref} {name}"),
                            (false, None) => writeln!(text, "  {name}"),
                        };
                        for (family, a) in [(Family::Ipv4, &ex.ipv4), (Family::Ipv6, &ex.ipv6)] {
                            let label = family.record_type();
                            if let Some(error) = &a.error {
                                let _ = writeln!(text, "    {label:<4} error: {error}");
                            } else if a.addresses.is_empty() {
                                let _ = writeln!(
                                    text,
                                    "    {label:<4} (none: {family} would be inconclusive)"
                                );
                            }
                            for addr in &a.addresses {
                                let _ = writeln!(text, "    {label:<4} {addr}");
                            }
                        }
                    }
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{DnsFailure, FailureKind};

    #[test]
    fn json_keeps_its_shape() {
        let ok = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![Exchange {
                name: Some("mx1.d.test".into()),
                preference: Some(10),
                ipv4: Addresses::Found(vec!["203.0.113.10".parse().unwrap()]),
                ipv6: Addresses::Failed(DnsFailure {
                    name: "mx1.d.test".into(),
                    record: "AAAA",
                    kind: FailureKind::Servfail,
                }),
                answered_by: "DNS server 10.0.0.53".into(),
            }],
        };
        let failed = Resolution::Failed(DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
        });
        let report = ResolveReport::new([
            ("d.test", &ok),
            ("nx.test", &failed),
            ("null.test", &Resolution::NullMx),
        ]);
        assert!(!report.complete());
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                {"domain": "d.test", "status": "ok", "implicit_mx": false, "exchanges": [
                    {"exchange": "mx1.d.test", "preference": 10,
                     "ipv4": {"addresses": ["203.0.113.10"]},
                     "ipv6": {"addresses": [], "error": "DNS AAAA lookup of mx1.d.test: SERVFAIL"}}
                ]},
                {"domain": "nx.test", "status": "failed", "error": "DNS MX lookup of nx.test: NXDOMAIN (no such domain)"},
                {"domain": "null.test", "status": "null-mx"}
            ])
        );
        let human = report.to_human();
        assert!(
            human.contains("  MX 10 mx1.d.test\n    A    203.0.113.10\n    AAAA error:"),
            "{human}"
        );
        assert!(human.contains("null MX (RFC 7505)"), "{human}");
    }
}
