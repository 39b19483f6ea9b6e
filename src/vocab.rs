//! Shared vocabulary: the words every stage uses (address [`Family`], [`Expectation`]) and
//! the parsers of values that both scenario files and the command line accept, so that a
//! value means the same thing wherever it is written.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest connect timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// An address family a probe runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (A records, `iptables`).
    Ipv4,
    /// IPv6 (AAAA records, `ip6tables`).
    Ipv6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The lower-case name, as JSON and metric labels spell it (`ipv4`, `ipv6`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// The DNS record type that holds this family's addresses.
    pub fn record_type(self) -> &'static str {
        match self {
            Family::Ipv4 => "A",
            Family::Ipv6 => "AAAA",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// What the admin believes the firewall does for a user and target.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    /// Connections must get through.
    Allow,
    /// Connections must be blocked.
    Deny,
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expectation::Allow => "allow",
            Expectation::Deny => "deny",
        })
    }
}

/// A value that does not parse; the message is meant for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a duration at all.
    #[error("`{text}` is not a duration (try `500ms` or `2s`)")]
    NotADuration {
        /// The text given.
        text: String,
    },
    /// A zero timeout.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
    /// A timeout above [`MAX_TIMEOUT`].
    #[error(
        "timeout `{text}` is longer than the limit of {}",
        humantime::format_duration(MAX_TIMEOUT)
    )]
    TimeoutTooLong {
        /// The text given.
        text: String,
    },
    /// Not `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[error("`{text}` is not a nameserver address (IP, IP:PORT or [IPv6]:PORT)")]
    NotANameserver {
        /// The text given.
        text: String,
    },
    /// An empty domain name.
    #[error("domain name is empty")]
    EmptyDomain,
    /// A domain name over 253 characters.
    #[error("domain name `{text}` is longer than 253 characters")]
    DomainTooLong {
        /// The text given.
        text: String,
    },
    /// A label that is empty, too long, starts or ends with a hyphen, or has characters
    /// names cannot have.
    #[error("`{text}` is not a valid domain name")]
    NotADomain {
        /// The text given.
        text: String,
    },
}

/// An inclusive range of TCP ports, `25` or `8000-8100` as written, never containing 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// The ports of the range, in order.
    pub fn ports(self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a port or port range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A number outside 1-65535 (0 included: it cannot be connected to).
    #[error("port {value} is out of range (1-65535)")]
    OutOfRange {
        /// The number given.
        value: i64,
    },
    /// Neither a number nor `A-B`.
    #[error("`{text}` is not a port or a port range (try `25` or `8000-8100`)")]
    NotAPort {
        /// The text given.
        text: String,
    },
    /// `B-A` with B > A: written backwards, and probably not what was meant.
    #[error("port range `{text}` is reversed (empty): write it `{last}-{first}`")]
    Reversed {
        /// The text given.
        text: String,
        /// Its first port as written (the larger).
        first: u16,
        /// Its last port as written (the smaller).
        last: u16,
    },
}

impl PortRange {
    /// A single port given as a number (scenario files write `25` as a TOML integer).
    pub fn single(value: i64) -> Result<PortRange, PortError> {
        let port = u16::try_from(value)
            .ok()
            .filter(|&p| p != 0)
            .ok_or(PortError::OutOfRange { value })?;
        Ok(PortRange {
            first: port,
            last: port,
        })
    }
}

impl std::str::FromStr for PortRange {
    type Err = PortError;

    /// Parses `N` or `A-B` (inclusive); spaces around the numbers are allowed.
    fn from_str(text: &str) -> Result<PortRange, PortError> {
        let not_a_port = || PortError::NotAPort {
            text: text.to_string(),
        };
        // Digits only (no sign): "-5" and "+5" are typos, not ports.
        let number = |part: &str| -> Result<i64, PortError> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_a_port());
            }
            // More digits than any port has: out of range, said with the text's own value.
            Ok(part.parse::<i64>().unwrap_or(i64::MAX))
        };
        match text.split_once('-') {
            None => PortRange::single(number(text)?),
            Some((a, b)) => {
                let first = PortRange::single(number(a)?)?.first;
                let last = PortRange::single(number(b)?)?.first;
                if first > last {
                    return Err(PortError::Reversed {
                        text: text.to_string(),
                        first,
                        last,
                    });
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

/// The ports of `ranges`, each once, in the order first given: overlaps merge, and a
/// list without ranges or repeats keeps its order exactly.
pub fn merge_ports(ranges: impl IntoIterator<Item = PortRange>) -> Vec<u16> {
    let mut seen = vec![false; usize::from(u16::MAX) + 1];
    let mut out = Vec::new();
    for range in ranges {
        for port in range.ports() {
            if !std::mem::replace(&mut seen[usize::from(port)], true) {
                out.push(port);
            }
        }
    }
    out
}

/// Contiguous runs of `ports` (sorted and deduplicated first), as ranges.
pub fn port_ranges(ports: impl IntoIterator<Item = u16>) -> Vec<PortRange> {
    let mut sorted: Vec<u16> = ports.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<PortRange> = Vec::new();
    for port in sorted {
        match out.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(port) => r.last = port,
            _ => out.push(PortRange {
                first: port,
                last: port,
            }),
        }
    }
    out
}

/// `ranges` written `A-B` and joined by commas: `1-24,26-65535`.
pub fn format_port_ranges(ranges: &[PortRange]) -> String {
    let mut out = String::new();
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.to_string());
    }
    out
}

/// Parses a human duration such as `500ms` or `2s` for a connect timeout.
pub fn parse_timeout(text: &str) -> Result<Duration, ValueError> {
    let duration =
        humantime::parse_duration(text.trim()).map_err(|_| ValueError::NotADuration {
            text: text.to_string(),
        })?;
    if duration.is_zero() {
        return Err(ValueError::ZeroTimeout);
    }
    if duration > MAX_TIMEOUT {
        return Err(ValueError::TimeoutTooLong {
            text: text.to_string(),
        });
    }
    Ok(duration)
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`; the port defaults to 53.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, ValueError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| ValueError::NotANameserver {
            text: text.to_string(),
        })
}

/// Lower-cases a domain name, drops one trailing dot and checks it is plausible.
pub fn normalize_domain(text: &str) -> Result<String, ValueError> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(ValueError::EmptyDomain);
    }
    if name.len() > 253 {
        return Err(ValueError::DomainTooLong {
            text: text.to_string(),
        });
    }
    // Host-name labels (RFC 952/1123) never start or end with a hyphen; checking it here,
    // the one place names are validated, makes `resolve -- -x` the usage error that
    // `resolve 'bad domain'` is, instead of a DNS failure later. `_` stays allowed for
    // service-style names.
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(valid_label) {
        return Err(ValueError::NotADomain {
            text: text.to_string(),
        });
    }
    Ok(name)
}

/// `count` and the noun in the number it calls for: "1 probe", "2 probes".
pub fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What is wrong with a list that must be non-empty and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError<T> {
    /// The list has no element.
    Empty,
    /// This element appears a second time (the first repeat found, with its position).
    Duplicate(usize, T),
}

/// Checks that `items` is non-empty and has no duplicates; returns them in their order.
///
/// The one implementation of the rule that scenario lists (ports, families, users,
/// targets) and the command line share.
pub fn unique_non_empty<T: PartialEq + Clone>(
    items: impl IntoIterator<Item = T>,
) -> Result<Vec<T>, ListError<T>> {
    let mut out: Vec<T> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        if out.contains(&item) {
            return Err(ListError::Duplicate(index, item));
        }
        out.push(item);
    }
    if out.is_empty() {
        return Err(ListError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("0s"), Err(ValueError::ZeroTimeout));
        assert!(matches!(
            parse_timeout("1h"),
            Err(ValueError::TimeoutTooLong { .. })
        ));
        assert!(matches!(
            parse_timeout("soon"),
            Err(ValueError::NotADuration { .. })
        ));
    }

    #[test]
    fn nameservers_default_to_port_53() {
        assert_eq!(
            parse_nameserver("192.0.2.53").unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("[2001:db8::53]:5353").unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        );
        assert!(parse_nameserver("ns.example").is_err());
    }

    #[test]
    fn domains_are_normalized() {
        assert_eq!(normalize_domain("Gmail.COM.").unwrap(), "gmail.com");
        assert_eq!(normalize_domain(""), Err(ValueError::EmptyDomain));
        assert!(normalize_domain("a b").is_err());
        for bad in ["-x", "x-", "mx.-a.test", "a-.test", "a b"] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_domain("x-1.a_b.test").unwrap(), "x-1.a_b.test");
        assert!(normalize_domain(&"a.".repeat(200)).is_err());
    }

    #[test]
    fn lists_must_be_non_empty_and_unique() {
        assert_eq!(unique_non_empty([25, 587]), Ok(vec![25, 587]));
        assert_eq!(unique_non_empty(Vec::<u16>::new()), Err(ListError::Empty));
        assert_eq!(
            unique_non_empty([25, 587, 25]),
            Err(ListError::Duplicate(2, 25))
        );
    }

    #[test]
    fn port_ranges_parse() {
        let r = |a, b| PortRange { first: a, last: b };
        assert_eq!("25".parse(), Ok(r(25, 25)));
        assert_eq!("8000-8100".parse(), Ok(r(8000, 8100)));
        assert_eq!(" 1 - 65535 ".parse(), Ok(r(1, 65535)));
        assert_eq!("7-7".parse(), Ok(r(7, 7)));
        assert!(matches!(
            "0".parse::<PortRange>(),
            Err(PortError::OutOfRange { value: 0 })
        ));
        assert!(matches!(
            "1-65536".parse::<PortRange>(),
            Err(PortError::OutOfRange { value: 65536 })
        ));
        assert!(matches!(
            "99999999999999999999999".parse::<PortRange>(),
            Err(PortError::OutOfRange { .. })
        ));
        assert!(matches!(
            "8100-8000".parse::<PortRange>(),
            Err(PortError::Reversed { .. })
        ));
        for text in ["", "-", "8000-", "-5", "a-b", "1-2-3", "+5", "1..5"] {
            assert!(
                matches!(text.parse::<PortRange>(), Err(PortError::NotAPort { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ports_merge_in_first_given_order() {
        let r = |a, b| PortRange { first: a, last: b };
        assert_eq!(merge_ports([r(587, 587), r(25, 25)]), vec![587, 25]);
        assert_eq!(merge_ports([r(25, 25), r(20, 30), r(25, 25)]).len(), 11);
        assert_eq!(merge_ports([r(1, 65535), r(80, 80)]).len(), 65535);
        assert_eq!(
            port_ranges([5, 1, 2, 3, 65535, 7, 6]),
            vec![r(1, 3), r(5, 7), r(65535, 65535)]
        );
        assert_eq!(format_port_ranges(&port_ranges([1, 2, 4])), "1-2,4");
    }

    proptest::proptest! {
        #[test]
        fn merging_keeps_every_port_once(
            items in proptest::collection::vec((1u16..=65535, 0u16..300), 1..20)
        ) {
            let ranges: Vec<PortRange> = items
                .iter()
                .map(|&(a, len)| PortRange { first: a, last: a.saturating_add(len) })
                .collect();
            let merged = merge_ports(ranges.iter().copied());
            let expected: std::collections::BTreeSet<u16> =
                ranges.iter().flat_map(|r| r.ports()).collect();
            let got: std::collections::BTreeSet<u16> = merged.iter().copied().collect();
            proptest::prop_assert_eq!(got.len(), merged.len());
            proptest::prop_assert_eq!(&got, &expected);
            // The ranges printed parse back to the same ports.
            let text = format_port_ranges(&port_ranges(merged.iter().copied()));
            let back = merge_ports(text.split(',').map(|t| t.parse::<PortRange>().unwrap()));
            proptest::prop_assert_eq!(back.into_iter().collect::<std::collections::BTreeSet<_>>(), expected);
        }
    }
}
