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
}
