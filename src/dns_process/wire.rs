//! What the parent and the resolver process say to each other, and the parent's checks of
//! the answer: it comes from a process that parsed the network's bytes, so it is decoded
//! strictly (unknown fields refused), every list and string is bounded, and the answer must
//! have exactly one resolution per name asked, in order.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::plan::NameserverSource;
use crate::resolve::{Addresses, DnsFailure, Exchange, FailureKind, Resolution, Resolutions};
use crate::scenario::TargetKind;

/// Most exchanges one name may have in an answer.
pub const MAX_EXCHANGES: usize = 256;
/// Most addresses of one family one exchange may have.
pub const MAX_ADDRESSES: usize = 1024;
/// Longest string (a name, a reason, a server's description) in an answer.
pub const MAX_TEXT: usize = 1024;

/// Why an answer is refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape.
    #[error("does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// Not one answer per question.
    #[error("{got} {what} where {expected} were asked for")]
    Count {
        /// What was counted.
        what: &'static str,
        /// How many were asked.
        expected: usize,
        /// How many came.
        got: usize,
    },
    /// A list or string over its bound.
    #[error("{what} has {len} entries or bytes, more than {max}")]
    TooLong {
        /// Which.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A string with control characters.
    #[error("{what} contains control characters")]
    BadText {
        /// Which.
        what: &'static str,
    },
    /// A record type the resolver never reports.
    #[error("unknown record type `{0}`")]
    UnknownRecord(String),
    /// `found` with nothing found.
    #[error("an empty address list marked as found")]
    EmptyFound,
}

/// Where names are resolved, as sent to the resolver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum Source {
    System,
    ResolvConf(String),
    Server(SocketAddr),
}

/// A name to resolve.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    /// MX (a mail domain) or a host's A/AAAA.
    mx: bool,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    source: Source,
    names: Vec<Name>,
}

/// What the parent asks: names by nameserver source (never literal addresses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    groups: Vec<Group>,
}

impl Request {
    /// The request for `groups`, whose kinds are all names.
    pub fn new(groups: &[(NameserverSource, Vec<TargetKind>)]) -> Request {
        Request {
            groups: groups
                .iter()
                .map(|(source, kinds)| Group {
                    source: match source {
                        NameserverSource::System => Source::System,
                        NameserverSource::ResolvConf(text) => Source::ResolvConf(text.clone()),
                        NameserverSource::Server(addr) => Source::Server(*addr),
                    },
                    names: kinds
                        .iter()
                        .filter_map(|k| match k {
                            TargetKind::Mx(n) => Some(Name {
                                mx: true,
                                name: n.clone(),
                            }),
                            TargetKind::Host(n) => Some(Name {
                                mx: false,
                                name: n.clone(),
                            }),
                            TargetKind::Addresses(_) => None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The groups as the resolver stage takes them.
    pub fn groups(&self) -> Vec<(NameserverSource, Vec<TargetKind>)> {
        self.groups
            .iter()
            .map(|g| {
                let source = match &g.source {
                    Source::System => NameserverSource::System,
                    Source::ResolvConf(text) => NameserverSource::ResolvConf(text.clone()),
                    Source::Server(addr) => NameserverSource::Server(*addr),
                };
                let kinds = g
                    .names
                    .iter()
                    .map(|n| {
                        if n.mx {
                            TargetKind::Mx(n.name.clone())
                        } else {
                            TargetKind::Host(n.name.clone())
                        }
                    })
                    .collect();
                (source, kinds)
            })
            .collect()
    }

    /// Decodes and checks `bytes`, the resolver's answer to this request.
    pub fn accept(&self, bytes: &[u8]) -> Result<Resolutions, WireError> {
        let answer: Answer = serde_json::from_slice(bytes)?;
        count("groups", self.groups.len(), answer.groups.len())?;
        let mut out = Resolutions::new();
        for ((source, kinds), answers) in self.groups().into_iter().zip(answer.groups) {
            count("resolutions", kinds.len(), answers.len())?;
            for (kind, resolution) in kinds.into_iter().zip(answers) {
                out.insert((source.clone(), kind), resolution.check()?);
            }
        }
        Ok(out)
    }
}

fn count(what: &'static str, expected: usize, got: usize) -> Result<(), WireError> {
    if expected == got {
        Ok(())
    } else {
        Err(WireError::Count {
            what,
            expected,
            got,
        })
    }
}

fn text(what: &'static str, value: String) -> Result<String, WireError> {
    if value.len() > MAX_TEXT {
        return Err(WireError::TooLong {
            what,
            len: value.len(),
            max: MAX_TEXT,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(WireError::BadText { what });
    }
    Ok(value)
}

fn bounded<T>(what: &'static str, list: Vec<T>, max: usize) -> Result<Vec<T>, WireError> {
    if list.len() > max {
        return Err(WireError::TooLong {
            what,
            len: list.len(),
            max,
        });
    }
    Ok(list)
}

/// The resolver's answer: `groups[i][j]` resolves the request's `groups[i].names[j]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    groups: Vec<Vec<WireResolution>>,
}

impl Answer {
    /// The answer to `request` from `resolutions` (the resolver's side).
    pub fn new(request: &Request, resolutions: &Resolutions) -> Answer {
        Answer {
            groups: request
                .groups()
                .into_iter()
                .map(|(source, kinds)| {
                    kinds
                        .into_iter()
                        .map(|kind| match resolutions.get(&(source.clone(), kind)) {
                            Some(r) => WireResolution::from(r),
                            None => WireResolution::Failed(WireFailure {
                                name: String::new(),
                                record: "-".into(),
                                kind: WireKind::Other("not resolved".into()),
                                nameserver: None,
                            }),
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum WireResolution {
    Exchanges {
        implicit_mx: bool,
        exchanges: Vec<WireExchange>,
    },
    NullMx,
    Failed(WireFailure),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireExchange {
    name: Option<String>,
    preference: Option<u16>,
    ipv4: WireAddresses,
    ipv6: WireAddresses,
    answered_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum WireAddresses {
    Found(Vec<IpAddr>),
    None,
    Failed(WireFailure),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFailure {
    name: String,
    record: String,
    kind: WireKind,
    nameserver: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum WireKind {
    Nxdomain,
    Servfail,
    Refused,
    Timeout,
    BlockedByHost { server: String, error: String },
    NoAnswer { servers: String },
    Other(String),
}

impl From<&Resolution> for WireResolution {
    fn from(r: &Resolution) -> Self {
        match r {
            Resolution::Exchanges {
                implicit_mx,
                exchanges,
            } => WireResolution::Exchanges {
                implicit_mx: *implicit_mx,
                exchanges: exchanges.iter().map(WireExchange::from).collect(),
            },
            Resolution::NullMx => WireResolution::NullMx,
            Resolution::Failed(f) => WireResolution::Failed(WireFailure::from(f)),
            // Never asked of the resolver: literals are answered by the parent.
            Resolution::Literals(_) => WireResolution::Failed(WireFailure {
                name: String::new(),
                record: "-".into(),
                kind: WireKind::Other("literal addresses are not resolved".into()),
                nameserver: None,
            }),
        }
    }
}

impl From<&Exchange> for WireExchange {
    fn from(e: &Exchange) -> Self {
        WireExchange {
            name: e.name.clone(),
            preference: e.preference,
            ipv4: WireAddresses::from(&e.ipv4),
            ipv6: WireAddresses::from(&e.ipv6),
            answered_by: e.answered_by.clone(),
        }
    }
}

impl From<&Addresses> for WireAddresses {
    fn from(a: &Addresses) -> Self {
        match a {
            Addresses::Found(list) => WireAddresses::Found(list.clone()),
            Addresses::None => WireAddresses::None,
            Addresses::Failed(f) => WireAddresses::Failed(WireFailure::from(f)),
        }
    }
}

impl From<&DnsFailure> for WireFailure {
    fn from(f: &DnsFailure) -> Self {
        WireFailure {
            name: f.name.clone(),
            record: f.record.to_string(),
            kind: match &f.kind {
                FailureKind::Nxdomain => WireKind::Nxdomain,
                FailureKind::Servfail => WireKind::Servfail,
                FailureKind::Refused => WireKind::Refused,
                FailureKind::Timeout => WireKind::Timeout,
                FailureKind::BlockedByHost { server, error } => WireKind::BlockedByHost {
                    server: server.clone(),
                    error: error.clone(),
                },
                FailureKind::NoAnswer { servers } => WireKind::NoAnswer {
                    servers: servers.clone(),
                },
                FailureKind::Other(text) => WireKind::Other(text.clone()),
            },
            nameserver: f.nameserver.clone(),
        }
    }
}

impl WireResolution {
    fn check(self) -> Result<Resolution, WireError> {
        Ok(match self {
            WireResolution::Exchanges {
                implicit_mx,
                exchanges,
            } => Resolution::Exchanges {
                implicit_mx,
                exchanges: bounded("exchanges", exchanges, MAX_EXCHANGES)?
                    .into_iter()
                    .map(WireExchange::check)
                    .collect::<Result<_, _>>()?,
            },
            WireResolution::NullMx => Resolution::NullMx,
            WireResolution::Failed(f) => Resolution::Failed(f.check()?),
        })
    }
}

impl WireExchange {
    fn check(self) -> Result<Exchange, WireError> {
        Ok(Exchange {
            name: self.name.map(|n| text("exchange name", n)).transpose()?,
            preference: self.preference,
            ipv4: self.ipv4.check()?,
            ipv6: self.ipv6.check()?,
            answered_by: text("answered_by", self.answered_by)?,
        })
    }
}

impl WireAddresses {
    fn check(self) -> Result<Addresses, WireError> {
        Ok(match self {
            WireAddresses::Found(list) if list.is_empty() => return Err(WireError::EmptyFound),
            WireAddresses::Found(list) => {
                Addresses::Found(bounded("addresses", list, MAX_ADDRESSES)?)
            }
            WireAddresses::None => Addresses::None,
            WireAddresses::Failed(f) => Addresses::Failed(f.check()?),
        })
    }
}

impl WireFailure {
    fn check(self) -> Result<DnsFailure, WireError> {
        let record = match self.record.as_str() {
            "MX" => "MX",
            "A" => "A",
            "AAAA" => "AAAA",
            "A/AAAA" => "A/AAAA",
            "-" => "-",
            _ => return Err(WireError::UnknownRecord(text("record", self.record)?)),
        };
        Ok(DnsFailure {
            name: text("failed name", self.name)?,
            record,
            kind: match self.kind {
                WireKind::Nxdomain => FailureKind::Nxdomain,
                WireKind::Servfail => FailureKind::Servfail,
                WireKind::Refused => FailureKind::Refused,
                WireKind::Timeout => FailureKind::Timeout,
                WireKind::BlockedByHost { server, error } => FailureKind::BlockedByHost {
                    server: text("nameserver", server)?,
                    error: text("failure reason", error)?,
                },
                WireKind::NoAnswer { servers } => FailureKind::NoAnswer {
                    servers: text("nameserver", servers)?,
                },
                WireKind::Other(t) => FailureKind::Other(text("failure reason", t)?),
            },
            nameserver: self.nameserver.map(|n| text("nameserver", n)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request::new(&[(
            NameserverSource::System,
            vec![
                TargetKind::Mx("example.test".into()),
                TargetKind::Host("mx.example.test".into()),
            ],
        )])
    }

    #[test]
    fn an_honest_answer_round_trips() {
        let exchange = Exchange {
            name: Some("mx.example.test".into()),
            preference: Some(10),
            ipv4: Addresses::Found(vec!["192.0.2.25".parse().unwrap()]),
            ipv6: Addresses::None,
            answered_by: "DNS server 192.0.2.53".into(),
        };
        let mut resolutions = Resolutions::new();
        resolutions.insert(
            (
                NameserverSource::System,
                TargetKind::Mx("example.test".into()),
            ),
            Resolution::Exchanges {
                implicit_mx: false,
                exchanges: vec![exchange],
            },
        );
        resolutions.insert(
            (
                NameserverSource::System,
                TargetKind::Host("mx.example.test".into()),
            ),
            Resolution::Failed(DnsFailure {
                name: "mx.example.test".into(),
                record: "A/AAAA",
                kind: FailureKind::Nxdomain,
                nameserver: Some("192.0.2.53".into()),
            }),
        );
        let req = request();
        let bytes = serde_json::to_vec(&Answer::new(&req, &resolutions)).unwrap();
        assert_eq!(req.accept(&bytes).unwrap(), resolutions);
    }

    #[test]
    fn malformed_answers_are_refused_with_the_reason() {
        let req = request();
        let cases: [(&str, &str); 6] = [
            ("garbage", "does not decode"),
            (r#"{"groups":[]}"#, "0 groups where 1"),
            (r#"{"groups":[["null-mx"]]}"#, "1 resolutions where 2"),
            (
                r#"{"groups":[["null-mx","null-mx"]],"extra":1}"#,
                "does not decode",
            ),
            (
                r#"{"groups":[["null-mx",{"failed":{"name":"x","record":"TXT","kind":"nxdomain","nameserver":null}}]]}"#,
                "unknown record type",
            ),
            (
                r#"{"groups":[["null-mx",{"exchanges":{"implicit_mx":false,"exchanges":[{"name":"a\u0007","preference":null,"ipv4":"none","ipv6":{"found":[]},"answered_by":"x"}]}}]]}"#,
                "control characters",
            ),
        ];
        for (bytes, why) in cases {
            let err = req.accept(bytes.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{bytes}: {err}");
        }
        let many = format!(
            r#"{{"groups":[["null-mx",{{"failed":{{"name":"{}","record":"A","kind":"nxdomain","nameserver":null}}}}]]}}"#,
            "a".repeat(MAX_TEXT + 1)
        );
        let err = req.accept(many.as_bytes()).unwrap_err();
        assert!(matches!(err, WireError::TooLong { .. }), "{err}");
    }
}
