//! DNS: from the plan's targets to the exchanges and addresses that will be probed, and
//! from those to the exact probes ([`expand`]).
//!
//! Every distinct name is looked up once per run, and all lookups of a phase run
//! concurrently: first the MX records of all mail domains, then the A and AAAA records of
//! every exchange and host name at once.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use futures::future::join_all;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use serde::Serialize;

use crate::plan::{Assignment, Destination, NameserverSource, PlannedProbe, ProbeSpec};
use crate::scenario::TargetKind;
use crate::vocab::Family;

/// How long one DNS query may take before it is retried or given up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries per query after the first try.
const QUERY_ATTEMPTS: usize = 1;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The name does not exist.
    Nxdomain,
    /// The server failed (SERVFAIL).
    Servfail,
    /// The server refused to answer.
    Refused,
    /// No answer in time (server unreachable or too slow).
    Timeout,
    /// Anything else.
    Other(String),
}

/// A failed lookup: which name, which record type, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsFailure {
    /// The name looked up.
    pub name: String,
    /// The record type asked for (`MX`, `A`, `AAAA`).
    pub record: &'static str,
    /// Why it failed.
    pub kind: FailureKind,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match &self.kind {
            FailureKind::Nxdomain => "NXDOMAIN (no such domain)".to_string(),
            FailureKind::Servfail => "SERVFAIL".to_string(),
            FailureKind::Refused => "REFUSED".to_string(),
            FailureKind::Timeout => "timed out (nameserver unreachable or too slow)".to_string(),
            FailureKind::Other(text) => text.clone(),
        };
        write!(f, "DNS {} lookup of {}: {}", self.record, self.name, reason)
    }
}

/// The addresses of one name in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// The records found (possibly after following CNAMEs); never empty.
    Found(Vec<IpAddr>),
    /// The name exists but has no record of this type.
    None,
    /// The lookup failed.
    Failed(DnsFailure),
}

/// A host that will be connected to: an MX exchange, a host target, or literal addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Its name (`None` for literal addresses).
    pub name: Option<String>,
    /// MX preference, for MX exchanges.
    pub preference: Option<u16>,
    /// IPv4 addresses.
    pub ipv4: Addresses,
    /// IPv6 addresses.
    pub ipv6: Addresses,
}

impl Exchange {
    /// The addresses of one family.
    pub fn addresses(&self, family: Family) -> &Addresses {
        match family {
            Family::Ipv4 => &self.ipv4,
            Family::Ipv6 => &self.ipv6,
        }
    }
}

/// Everything known about where a target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Hosts to probe, MX exchanges by preference.
    Exchanges {
        /// True when a mail domain had no MX and its own addresses stand in (RFC 5321 5.1).
        implicit_mx: bool,
        /// The hosts.
        exchanges: Vec<Exchange>,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// The target's own lookup failed (e.g. the MX query of its domain).
    Failed(DnsFailure),
}

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// `/etc/resolv.conf` is missing or unusable.
    #[error("cannot read /etc/resolv.conf: {0}")]
    SystemConfig(#[source] NetError),
    /// The entered namespace's resolv.conf does not parse.
    #[error("cannot parse the namespace's resolv.conf: {0}")]
    NetnsConfig(#[source] NetError),
    /// The resolver could not be built from a valid configuration.
    #[error("cannot set up the resolver: {0}")]
    Build(#[source] NetError),
}

/// A resolver with the settings egress-check needs.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver that asks the servers of `source`.
    pub fn new(source: &NameserverSource) -> Result<Resolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match source {
            NameserverSource::Server(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    provider,
                )
            }
            NameserverSource::System => {
                TokioResolver::builder(provider).map_err(ResolverError::SystemConfig)?
            }
            NameserverSource::ResolvConf(text) => {
                let (config, _) = hickory_resolver::system_conf::parse_resolv_conf(text)
                    .map_err(ResolverError::NetnsConfig)?;
                TokioResolver::builder_with_config(config, provider)
            }
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = QUERY_ATTEMPTS;
        // Names are looked up fully qualified, as an MTA does; /etc/hosts is not DNS.
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let inner = builder.build().map_err(ResolverError::Build)?;
        Ok(Resolver { inner })
    }

    async fn mx(&self, domain: &str) -> MxAnswer {
        match self.inner.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let mut records: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    return MxAnswer::NoRecords;
                }
                if records.len() == 1 && records[0].1.trim_end_matches('.').is_empty() {
                    return MxAnswer::NullMx;
                }
                records.sort();
                records.dedup();
                let exchanges = records
                    .into_iter()
                    .filter(|(_, name)| !name.trim_end_matches('.').is_empty())
                    .map(|(pref, name)| (pref, name.trim_end_matches('.').to_lowercase()))
                    .collect();
                MxAnswer::Exchanges(exchanges, glue(lookup.additionals()))
            }
            Err(err) => match classify(&err) {
                Classified::NoRecords => MxAnswer::NoRecords,
                Classified::Failure(kind) => MxAnswer::Failed(DnsFailure {
                    name: domain.to_string(),
                    record: "MX",
                    kind,
                }),
            },
        }
    }

    async fn addresses(&self, name: &str, family: Family) -> Addresses {
        let result = match family {
            Family::Ipv4 => self.inner.lookup(fqdn(name), RecordType::A).await,
            Family::Ipv6 => self.inner.lookup(fqdn(name), RecordType::AAAA).await,
        };
        match result {
            Ok(lookup) => {
                let mut found: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match (&r.data, family) {
                        (RData::A(a), Family::Ipv4) => Some(IpAddr::V4(a.0)),
                        (RData::AAAA(a), Family::Ipv6) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                found.sort();
                found.dedup();
                if found.is_empty() {
                    Addresses::None
                } else {
                    Addresses::Found(found)
                }
            }
            Err(err) => match classify(&err) {
                Classified::NoRecords => Addresses::None,
                Classified::Failure(kind) => Addresses::Failed(DnsFailure {
                    name: name.to_string(),
                    record: family.record_type(),
                    kind,
                }),
            },
        }
    }

    /// Resolves a set of targets: each distinct name once, concurrently.
    pub async fn resolve_all<'a>(
        &self,
        kinds: impl IntoIterator<Item = &'a TargetKind>,
    ) -> HashMap<TargetKind, Resolution> {
        let kinds: Vec<&TargetKind> = kinds.into_iter().collect();
        let domains: BTreeSet<&str> = kinds
            .iter()
            .filter_map(|k| match k {
                TargetKind::Mx(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        let mx_answers: HashMap<&str, MxAnswer> = domains
            .iter()
            .copied()
            .zip(join_all(domains.iter().map(|d| self.mx(d))).await)
            .collect();

        let mut hosts: BTreeSet<String> = BTreeSet::new();
        for kind in &kinds {
            match kind {
                TargetKind::Host(host) => {
                    hosts.insert(host.clone());
                }
                TargetKind::Mx(domain) => match &mx_answers[domain.as_str()] {
                    MxAnswer::Exchanges(list, _) => {
                        hosts.extend(list.iter().map(|(_, n)| n.clone()))
                    }
                    MxAnswer::NoRecords => {
                        hosts.insert(domain.clone());
                    }
                    MxAnswer::NullMx | MxAnswer::Failed(_) => {}
                },
                TargetKind::Addresses(_) => {}
            }
        }
        // Addresses that came along with an MX answer need no second round trip. Only a
        // family that is present counts: a missing AAAA in the additional section proves
        // nothing, so that family is still asked for.
        let mut addresses: HashMap<(String, Family), Addresses> = HashMap::new();
        for answer in mx_answers.values() {
            if let MxAnswer::Exchanges(_, glue) = answer {
                for (key, list) in glue {
                    if hosts.contains(&key.0) {
                        addresses.insert(key.clone(), Addresses::Found(list.clone()));
                    }
                }
            }
        }
        let lookups = hosts
            .iter()
            .flat_map(|h| Family::ALL.into_iter().map(move |f| (h, f)))
            .filter(|(h, f)| !addresses.contains_key(&((*h).clone(), *f)))
            .map(|(h, f)| async move { ((h.clone(), f), self.addresses(h, f).await) })
            .collect::<Vec<_>>();
        addresses.extend(join_all(lookups).await);
        let exchange = |name: &str, preference: Option<u16>| Exchange {
            name: Some(name.to_string()),
            preference,
            ipv4: addresses[&(name.to_string(), Family::Ipv4)].clone(),
            ipv6: addresses[&(name.to_string(), Family::Ipv6)].clone(),
        };

        kinds
            .into_iter()
            .map(|kind| {
                let resolution = match kind {
                    TargetKind::Mx(domain) => match &mx_answers[domain.as_str()] {
                        MxAnswer::Exchanges(list, _) => Resolution::Exchanges {
                            implicit_mx: false,
                            exchanges: list.iter().map(|(p, n)| exchange(n, Some(*p))).collect(),
                        },
                        MxAnswer::NoRecords => Resolution::Exchanges {
                            implicit_mx: true,
                            exchanges: vec![exchange(domain, None)],
                        },
                        MxAnswer::NullMx => Resolution::NullMx,
                        MxAnswer::Failed(failure) => Resolution::Failed(failure.clone()),
                    },
                    TargetKind::Host(host) => Resolution::Exchanges {
                        implicit_mx: false,
                        exchanges: vec![exchange(host, None)],
                    },
                    TargetKind::Addresses(list) => Resolution::Exchanges {
                        implicit_mx: false,
                        exchanges: vec![literal_exchange(list)],
                    },
                };
                (kind.clone(), resolution)
            })
            .collect()
    }
}

/// The resolutions of a run: per nameserver source and target.
pub type Resolutions = HashMap<(NameserverSource, TargetKind), Resolution>;

/// Resolves every group of [`crate::plan::lookups`], all groups concurrently.
///
/// Literal addresses need no resolver, so a host without resolv.conf can still probe them;
/// a resolver that cannot be set up fails the names of its group, not the run.
pub async fn resolve_groups(groups: Vec<(NameserverSource, Vec<TargetKind>)>) -> Resolutions {
    let lookups = groups.into_iter().map(|(source, kinds)| async move {
        let needs_dns = kinds.iter().any(|k| !matches!(k, TargetKind::Addresses(_)));
        let resolutions: HashMap<TargetKind, Resolution> =
            match needs_dns.then(|| Resolver::new(&source)) {
                Some(Ok(resolver)) => resolver.resolve_all(&kinds).await,
                Some(Err(error)) => kinds
                    .iter()
                    .map(|k| (k.clone(), without_resolver(k, &error.to_string())))
                    .collect(),
                None => kinds
                    .iter()
                    .map(|k| (k.clone(), without_resolver(k, "no resolver")))
                    .collect(),
            };
        resolutions
            .into_iter()
            .map(|(k, r)| ((source.clone(), k), r))
            .collect::<Vec<_>>()
    });
    join_all(lookups).await.into_iter().flatten().collect()
}

/// The resolution of a target when no resolver is used: literal addresses as they are, names
/// failed with `message`.
pub fn without_resolver(kind: &TargetKind, message: &str) -> Resolution {
    match kind {
        TargetKind::Addresses(list) => Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![literal_exchange(list)],
        },
        TargetKind::Mx(name) | TargetKind::Host(name) => Resolution::Failed(DnsFailure {
            name: name.clone(),
            record: if matches!(kind, TargetKind::Mx(_)) {
                "MX"
            } else {
                "A/AAAA"
            },
            kind: FailureKind::Other(message.to_string()),
        }),
    }
}

/// The pseudo-exchange of a target given as literal addresses.
pub fn literal_exchange(addrs: &[IpAddr]) -> Exchange {
    let of = |family| {
        let found: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| Family::of(a) == family)
            .collect();
        if found.is_empty() {
            Addresses::None
        } else {
            Addresses::Found(found)
        }
    };
    Exchange {
        name: None,
        preference: None,
        ipv4: of(Family::Ipv4),
        ipv6: of(Family::Ipv6),
    }
}

/// Turns assignments and their targets' resolutions into the exact probes of the run: one
/// per address, port and family, plus one without a destination for every family that has
/// nothing to connect to (an untested family must show up in the report).
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
        let probe = |exchange: Option<String>,
                     preference: Option<u16>,
                     family: Family,
                     port: u16,
                     destination: Destination| PlannedProbe {
            spec: ProbeSpec {
                user: a.account.name.clone(),
                uid: a.account.uid.as_raw(),
                target: a.target.name.clone(),
                domain: domain.clone(),
                exchange,
                preference,
                family,
                port,
                expect: a.expect,
            },
            timeout: a.timeout,
            destination,
            note: None,
        };
        let every_family_and_port =
            |probes: &mut Vec<PlannedProbe>, exchange: Option<String>, why: String| {
                for &family in &a.target.families {
                    for &port in &a.target.ports {
                        probes.push(probe(
                            exchange.clone(),
                            None,
                            family,
                            port,
                            Destination::None(why.clone()),
                        ));
                    }
                }
            };
        match resolution_of(a) {
            Resolution::Failed(failure) => {
                every_family_and_port(&mut probes, None, failure.to_string());
            }
            Resolution::NullMx => {
                let why = format!(
                    "{} publishes a null MX (RFC 7505): it accepts no mail, so there is nothing to probe",
                    domain.as_deref().unwrap_or("the domain")
                );
                every_family_and_port(&mut probes, Some(".".into()), why);
            }
            Resolution::Exchanges {
                implicit_mx,
                exchanges,
            } => {
                let implicit = implicit_mx
                    .then_some("no MX record: the domain's own address is used, RFC 5321 5.1");
                for exchange in &exchanges {
                    for &family in &a.target.families {
                        for &port in &a.target.ports {
                            let probe = |destination| PlannedProbe {
                                note: implicit.map(|i| format!("({i})")),
                                ..probe(
                                    exchange.name.clone(),
                                    exchange.preference,
                                    family,
                                    port,
                                    destination,
                                )
                            };
                            let suffix = implicit.map(|i| format!(" ({i})")).unwrap_or_default();
                            match exchange.addresses(family) {
                                Addresses::Found(list) => probes.extend(
                                    list.iter().map(|&addr| probe(Destination::Address(addr))),
                                ),
                                Addresses::None => {
                                    let name = exchange.name.as_deref().unwrap_or("the target");
                                    probes.push(PlannedProbe {
                                        note: None,
                                        ..probe(Destination::None(format!(
                                            "{name} has no {} record, so {family} was not tested{suffix}",
                                            family.record_type()
                                        )))
                                    });
                                }
                                Addresses::Failed(failure) => probes.push(PlannedProbe {
                                    note: None,
                                    ..probe(Destination::None(format!(
                                        "{failure}; {family} was not tested"
                                    )))
                                }),
                            }
                        }
                    }
                }
            }
        }
    }
    probes
}

/// Addresses of exchanges that came in an MX answer's additional section, by name and family.
type Glue = HashMap<(String, Family), Vec<IpAddr>>;

fn glue(additionals: &[hickory_resolver::proto::rr::Record]) -> Glue {
    let mut glue = Glue::new();
    for record in additionals {
        let name = record.name.to_ascii().trim_end_matches('.').to_lowercase();
        let (family, addr) = match &record.data {
            RData::A(a) => (Family::Ipv4, IpAddr::V4(a.0)),
            RData::AAAA(a) => (Family::Ipv6, IpAddr::V6(a.0)),
            _ => continue,
        };
        let list = glue.entry((name, family)).or_default();
        if !list.contains(&addr) {
            list.push(addr);
        }
    }
    for list in glue.values_mut() {
        list.sort();
    }
    glue
}

enum MxAnswer {
    /// The exchanges by preference, and any of their addresses the answer carried along.
    Exchanges(Vec<(u16, String)>, Glue),
    NoRecords,
    NullMx,
    Failed(DnsFailure),
}

enum Classified {
    NoRecords,
    Failure(FailureKind),
}

fn classify(err: &NetError) -> Classified {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => match no_records.response_code {
            ResponseCode::NXDomain => Classified::Failure(FailureKind::Nxdomain),
            ResponseCode::NoError => Classified::NoRecords,
            code => Classified::Failure(rcode_failure(code)),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => Classified::Failure(rcode_failure(*code)),
        NetError::Timeout => Classified::Failure(FailureKind::Timeout),
        // hickory's TCP connect gives up with an io::Error of kind TimedOut.
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Classified::Failure(FailureKind::Timeout)
        }
        other => Classified::Failure(FailureKind::Other(other.to_string())),
    }
}

fn rcode_failure(code: ResponseCode) -> FailureKind {
    match code {
        ResponseCode::NXDomain => FailureKind::Nxdomain,
        ResponseCode::ServFail => FailureKind::Servfail,
        ResponseCode::Refused => FailureKind::Refused,
        other => FailureKind::Other(format!("response code {other}")),
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::assignment;
    use std::net::SocketAddr;

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
        assert!(probes.iter().all(|p| p.connect_to().is_some()));
        assert!(probes
            .iter()
            .any(|p| p.connect_to() == Some(SocketAddr::new(v6, 587))));
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
            .find(|p| p.spec.family == Family::Ipv6)
            .unwrap();
        assert_eq!(v6.connect_to(), None);
        assert!(
            matches!(&v6.destination, Destination::None(why) if why.contains("no AAAA record")),
            "{v6:?}"
        );
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
        assert_eq!(probes[0].spec.family, Family::Ipv4);
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
            .all(|p| matches!(&p.destination, Destination::None(why) if why.contains("NXDOMAIN"))));

        let probes = expand(&[a], |_| Resolution::NullMx);
        assert_eq!(probes.len(), 4);
        assert!(
            matches!(&probes[0].destination, Destination::None(why) if why.contains("null MX"))
        );
    }

    #[test]
    fn literal_addresses_split_by_family() {
        let ex = literal_exchange(&["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
        assert_eq!(
            ex.ipv4,
            Addresses::Found(vec!["192.0.2.1".parse().unwrap()])
        );
        assert_eq!(
            ex.ipv6,
            Addresses::Found(vec!["2001:db8::1".parse().unwrap()])
        );
        let v4only = literal_exchange(&["192.0.2.1".parse().unwrap()]);
        assert_eq!(v4only.ipv6, Addresses::None);
    }

    #[test]
    fn failures_read_well() {
        let f = DnsFailure {
            name: "nx.test".into(),
            record: "MX",
            kind: FailureKind::Nxdomain,
        };
        assert_eq!(
            f.to_string(),
            "DNS MX lookup of nx.test: NXDOMAIN (no such domain)"
        );
    }

    #[test]
    fn glue_collects_additional_addresses_by_name_and_family() {
        use hickory_resolver::proto::rr::rdata::{A, AAAA};
        use hickory_resolver::proto::rr::{Name, Record};
        let name = Name::from_ascii("MX1.Example.TEST.").unwrap();
        let records = [
            Record::from_rdata(
                name.clone(),
                60,
                RData::A(A("203.0.113.10".parse().unwrap())),
            ),
            Record::from_rdata(
                name.clone(),
                60,
                RData::A(A("203.0.113.10".parse().unwrap())),
            ),
            Record::from_rdata(name, 60, RData::AAAA(AAAA("2001:db8::10".parse().unwrap()))),
        ];
        let glue = glue(&records);
        assert_eq!(
            glue[&("mx1.example.test".to_string(), Family::Ipv4)],
            vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(glue.len(), 2);
    }

    #[test]
    fn rcodes_map_to_failures() {
        assert_eq!(rcode_failure(ResponseCode::ServFail), FailureKind::Servfail);
        assert_eq!(rcode_failure(ResponseCode::Refused), FailureKind::Refused);
        assert!(matches!(
            classify(&NetError::Timeout),
            Classified::Failure(FailureKind::Timeout)
        ));
    }
}
