//! `egress-check resolve`'s report: what would be probed for each mail domain, in the
//! same human and JSON forms as the run's report, with every answer classified as a run
//! would ([`crate::address`]): an admin sees a sinkhole's `0.0.0.0` or an IPv4-mapped AAAA
//! before running anything.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::address::{self, on_the_wire, HostInterfaces};
use crate::resolve::{Addresses, Exchange, Resolution};
use crate::vocab::Family;

/// The answers for every domain asked about, in the order asked; serialized, it is the
/// JSON document (an array).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct ResolveReport {
    /// One entry per domain.
    pub domains: Vec<DomainReport>,
    /// Who resolved, when `--resolve-as` chose it: the human report says so first (the
    /// JSON document has it in every domain's `resolved_as`).
    #[serde(skip)]
    pub chosen_resolver: Option<String>,
}

/// One domain's answers.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    /// The domain, normalized.
    pub domain: String,
    /// The user the resolver process ran as (`nobody` unless `--resolve-as`), as the run
    /// report's `resolved_as`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_as: Option<String>,
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

/// The addresses of one record type, or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct AddressesReport {
    /// The addresses found, as published (empty when none or failed).
    pub addresses: Vec<IpAddr>,
    /// The lookup's failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The addresses a run would not probe as ordinary destinations of this family (absent
    /// when there is none): not probed at all, probed over the other family, or with a note.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub special: Vec<SpecialAddress>,
}

/// How a run treats one published address that is not an ordinary destination.
#[derive(Debug, Clone, Serialize)]
pub struct SpecialAddress {
    /// The address as published.
    pub address: IpAddr,
    /// What it is on the wire ([`address::Class::name`]: `egress`, `unspecified`,
    /// `loopback`, `own`, `link-local`, `multicast`, `limited-broadcast`,
    /// `directed-broadcast`).
    pub class: &'static str,
    /// True for an IPv4-mapped AAAA record.
    pub mapped: bool,
    /// Whether a run probes it.
    pub probed: bool,
    /// The family it would be probed over (the family on the wire).
    pub family: Family,
    /// Why, in words.
    pub detail: String,
}

impl AddressesReport {
    fn new(a: &Addresses, host: &HostInterfaces) -> Self {
        match a {
            Addresses::Found(list) => AddressesReport {
                addresses: list.clone(),
                error: None,
                special: list.iter().filter_map(|ip| special(*ip, host)).collect(),
            },
            Addresses::None => AddressesReport {
                addresses: Vec::new(),
                error: None,
                special: Vec::new(),
            },
            Addresses::Failed(f) => AddressesReport {
                addresses: Vec::new(),
                error: Some(f.to_string()),
                special: Vec::new(),
            },
        }
    }

    /// True when some address would be probed over `family`.
    fn probes(&self, family: Family) -> bool {
        self.addresses.iter().any(|ip| {
            self.special
                .iter()
                .find(|s| s.address == *ip)
                .is_none_or(|s| s.probed && s.family == family)
        })
    }
}

/// How a run treats `published`, if not as an ordinary destination of its record's family.
fn special(published: IpAddr, host: &HostInterfaces) -> Option<SpecialAddress> {
    let wire = on_the_wire(published);
    let class = host.classify(wire, None);
    let mapped = address::is_mapped(published);
    let note = address::note(wire);
    if class.is_egress() && !mapped && note.is_none() {
        return None;
    }
    let mut detail = Vec::new();
    if mapped {
        detail.push(format!("{wire} on the wire; {}", address::MAPPED_NOTE));
    }
    if !class.is_egress() {
        detail.extend(class.dns_hint().map(str::to_string));
        detail.push(format!("{wire} is {}", class.describe()));
    }
    detail.extend(note.map(str::to_string));
    Some(SpecialAddress {
        address: published,
        class: class.name(),
        mapped,
        probed: class.is_egress(),
        family: Family::of(&wire),
        detail: detail.join("; "),
    })
}

impl ResolveReport {
    /// The report of `domains` and their resolutions (in the same order), classified for
    /// probes from the namespace whose interfaces are `host`.
    pub fn new<'a>(
        answers: impl IntoIterator<Item = (&'a str, &'a Resolution)>,
        host: &HostInterfaces,
    ) -> ResolveReport {
        let exchange = |ex: &Exchange| ExchangeReport {
            exchange: ex.name.clone().unwrap_or_default(),
            preference: ex.preference,
            ipv4: AddressesReport::new(&ex.ipv4, host),
            ipv6: AddressesReport::new(&ex.ipv6, host),
        };
        let domains = answers
            .into_iter()
            .map(|(domain, resolution)| DomainReport {
                domain: domain.to_string(),
                resolved_as: None,
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
                                ipv4: AddressesReport::new(&of(Family::Ipv4), host),
                                ipv6: AddressesReport::new(&of(Family::Ipv6), host),
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
        ResolveReport {
            domains,
            chosen_resolver: None,
        }
    }

    /// Records who resolved: `user`, `chosen` when `--resolve-as` named it.
    pub fn resolved_as(mut self, user: &str, chosen: bool) -> ResolveReport {
        for domain in &mut self.domains {
            domain.resolved_as = Some(user.to_string());
        }
        self.chosen_resolver = chosen.then(|| user.to_string());
        self
    }

    /// True when every lookup answered (possibly with "no such record") and every address
    /// answered can be probed (a sinkhole's `0.0.0.0` cannot).
    pub fn complete(&self) -> bool {
        self.domains.iter().all(|d| match &d.status {
            DomainStatus::Failed { .. } => false,
            DomainStatus::NullMx => true,
            DomainStatus::Ok { exchanges, .. } => exchanges.iter().all(|e| {
                [&e.ipv4, &e.ipv6]
                    .iter()
                    .all(|a| a.error.is_none() && a.special.iter().all(|s| s.probed))
            }),
        })
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a resolve report always serializes")
    }

    /// The human report.
    pub fn to_human(&self) -> String {
        let mut text = String::new();
        if let Some(user) = &self.chosen_resolver {
            let _ = writeln!(text, "resolved as `{user}`");
        }
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
                                let _ = match a.special.iter().find(|s| s.address == *addr) {
                                    Some(s) if !s.probed => writeln!(
                                        text,
                                        "    {label:<4} {addr}  -- NOT PROBED ({}): {}",
                                        s.class, s.detail
                                    ),
                                    Some(s) if s.family != family => writeln!(
                                        text,
                                        "    {label:<4} {addr}  -- probed over {}: {}",
                                        s.family, s.detail
                                    ),
                                    Some(s) => {
                                        writeln!(
                                            text,
                                            "    {label:<4} {addr}  -- note: {}",
                                            s.detail
                                        )
                                    }
                                    None => writeln!(text, "    {label:<4} {addr}"),
                                };
                            }
                            if !a.addresses.is_empty() && !a.probes(family) {
                                let _ = writeln!(
                                    text,
                                    "    {label:<4} (no {family} destination: {family} would be inconclusive)"
                                );
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
                    nameserver: Some("10.0.0.53".into()),
                }),
                answered_by: "DNS server 10.0.0.53".into(),
            }],
        };
        let failed = Resolution::Failed(DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
            nameserver: Some("10.0.0.53".into()),
        });
        let report = ResolveReport::new(
            [
                ("d.test", &ok),
                ("nx.test", &failed),
                ("null.test", &Resolution::NullMx),
            ],
            &crate::address::tests::host(),
        );
        assert!(!report.complete());
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                {"domain": "d.test", "status": "ok", "implicit_mx": false, "exchanges": [
                    {"exchange": "mx1.d.test", "preference": 10,
                     "ipv4": {"addresses": ["203.0.113.10"]},
                     "ipv6": {"addresses": [], "error": "DNS AAAA lookup of mx1.d.test: SERVFAIL from 10.0.0.53"}}
                ]},
                {"domain": "nx.test", "status": "failed", "error": "DNS MX lookup of nx.test: NXDOMAIN from 10.0.0.53 (no such domain)"},
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

#[cfg(test)]
mod edge_tests {
    use super::*;
    use crate::address::tests::host;

    fn report_of(ipv4: &[&str], ipv6: &[&str]) -> ResolveReport {
        let found = |list: &[&str]| {
            if list.is_empty() {
                Addresses::None
            } else {
                Addresses::Found(list.iter().map(|a| a.parse().unwrap()).collect())
            }
        };
        let resolution = Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![Exchange {
                name: Some("mx.d.test".into()),
                preference: Some(10),
                ipv4: found(ipv4),
                ipv6: found(ipv6),
                answered_by: "DNS server 10.0.0.53".into(),
            }],
        };
        ResolveReport::new([("d.test", &resolution)], &host())
    }

    #[test]
    fn a_sinkhole_is_shown_and_makes_the_answer_incomplete() {
        let report = report_of(&["0.0.0.0"], &["::"]);
        assert!(!report.complete());
        let human = report.to_human();
        assert!(
            human.contains(
                "    A    0.0.0.0  -- NOT PROBED (unspecified): a sinkhole or a broken zone"
            ),
            "{human}"
        );
        assert!(
            human.contains("    AAAA ::  -- NOT PROBED (unspecified)"),
            "{human}"
        );
        assert!(
            human.contains("(no IPv4 destination: IPv4 would be inconclusive)"),
            "{human}"
        );
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let ipv4 = &value[0]["exchanges"][0]["ipv4"];
        assert_eq!(ipv4["addresses"], serde_json::json!(["0.0.0.0"]));
        assert_eq!(ipv4["special"][0]["class"], "unspecified");
        assert_eq!(ipv4["special"][0]["probed"], false);
    }

    #[test]
    fn a_mapped_aaaa_is_shown_as_ipv4() {
        let report = report_of(&["203.0.113.10"], &["::ffff:203.0.113.10"]);
        assert!(report.complete(), "a mapped AAAA is probed (over IPv4)");
        let human = report.to_human();
        assert!(
            human.contains("    AAAA ::ffff:203.0.113.10  -- probed over IPv4: 203.0.113.10 on the wire; IPv4-mapped"),
            "{human}"
        );
        assert!(
            human.contains("(no IPv6 destination: IPv6 would be inconclusive)"),
            "{human}"
        );
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let special = &value[0]["exchanges"][0]["ipv6"]["special"][0];
        assert_eq!(special["mapped"], true);
        assert_eq!(special["family"], "ipv4");
        assert_eq!(special["class"], "egress");
        // Ordinary answers keep the old shape exactly.
        assert!(value[0]["exchanges"][0]["ipv4"].get("special").is_none());
    }

    #[test]
    fn own_addresses_and_notes() {
        let report = report_of(&["198.51.100.1"], &["64:ff9b::cb00:710a"]);
        assert!(!report.complete());
        let human = report.to_human();
        assert!(human.contains("NOT PROBED (own)"), "{human}");
        assert!(human.contains("-- note: NAT64"), "{human}");
    }
}
