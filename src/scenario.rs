//! Scenario files: the TOML format in which an admin writes down who may reach what.
//!
//! Parsing is strict (unknown keys are errors) and every error carries the file, line and
//! column of the offending value, so that a broken scenario is fixed in one look.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::address::{on_the_wire, Literal, LiteralError};
use crate::vocab::{
    merge_ports, normalize_domain, parse_nameserver, parse_timeout, unique_non_empty, Expectation,
    Family, ListError, PortRange, ValueError,
};

/// Largest scenario file accepted; anything bigger is a mistake, not a policy.
pub const MAX_SCENARIO_BYTES: usize = 4 * 1024 * 1024;
/// Port probed when a target names none.
pub const DEFAULT_PORT: u16 = 25;

/// The built-in scenario used by `egress-check --as USER` without targets.
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/default.toml");
/// The name under which the built-in scenario is reported.
pub const DEFAULT_SCENARIO_NAME: &str = "<built-in default scenario>";

/// A place in a scenario file, printed as `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Location {
    fn at(file: &str, text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            file: file.to_string(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read scenario: {error}")]
    Read {
        /// The file as named.
        file: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_SCENARIO_BYTES`].
    #[error("{file}: scenario is {size} bytes; the limit is {MAX_SCENARIO_BYTES} bytes")]
    TooLarge {
        /// The file as named.
        file: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not valid UTF-8 (TOML must be).
    #[error("{location}: scenario is not valid UTF-8 (TOML files must be UTF-8)")]
    NotUtf8 {
        /// Where the first invalid byte is.
        location: Location,
    },
    /// A syntax or semantic error at a known place.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the problem is.
        location: Location,
        /// What is wrong, in one line.
        message: String,
    },
}

/// A user a check runs as, with where the scenario named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// Login name (or numeric uid as text).
    pub name: String,
    /// Where the name was written, if it came from a file.
    pub location: Option<Location>,
}

/// How a target's addresses are found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// The mail exchanges of a domain (MX, or the domain itself when it has none).
    Mx(String),
    /// A host name's A and AAAA records.
    Host(String),
    /// Literal addresses.
    Addresses(Vec<GivenAddress>),
}

/// An address given literally, with where the scenario wrote it: checks that need the
/// probing namespace (the host's own addresses, zones) run later and still name the place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GivenAddress {
    /// The address (and zone) as written.
    pub literal: Literal,
    /// Where it was written, if it came from a file.
    pub location: Option<Location>,
}

/// Something to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name that checks refer to.
    pub name: String,
    /// How its addresses are found.
    pub kind: TargetKind,
    /// Ports to probe, in the order given.
    pub ports: Vec<u16>,
    /// Families to probe.
    pub families: Vec<Family>,
    /// `local = true` (`--local`): literal loopback and own addresses may be probed; such
    /// probes do not cross the egress path and are never a pass.
    pub local: bool,
}

/// One expectation: these users, these targets, allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Users to probe as.
    pub users: Vec<UserRef>,
    /// Indices into [`Scenario::targets`].
    pub targets: Vec<usize>,
    /// The expected outcome.
    pub expect: Expectation,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The file it came from, as named (or a descriptive placeholder).
    pub source: String,
    /// Per connect attempt, if set.
    pub timeout: Option<Duration>,
    /// DNS server to use instead of the system resolver, if set.
    pub nameserver: Option<SocketAddr>,
    /// Targets, in file order.
    pub targets: Vec<Target>,
    /// Checks, in file order.
    pub checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    timeout: Option<Spanned<String>>,
    nameserver: Option<Spanned<String>>,
    #[serde(default, rename = "target")]
    targets: Vec<Spanned<RawTarget>>,
    #[serde(default, rename = "check")]
    checks: Vec<Spanned<RawCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Spanned<String>,
    mx: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    address: Option<Spanned<Vec<Spanned<String>>>>,
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    families: Option<Spanned<Vec<Spanned<Family>>>>,
    local: Option<Spanned<bool>>,
}

/// One element of `ports`: a TOML integer (`25`) or a string (`"25"`, `"8000-8100"`).
#[derive(Debug)]
enum RawPort {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPort {
    // By hand rather than `#[serde(untagged)]`: an untagged enum buffers its input and
    // would lose the element's span, which every error must point at.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPort, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPort;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port (25) or a port range (\"8000-8100\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "as")]
    users: Spanned<Vec<Spanned<String>>>,
    to: Option<Spanned<Vec<Spanned<String>>>>,
    expect: Spanned<Expectation>,
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let read_error = |error| ScenarioError::Read {
        file: file.clone(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if meta.len() > MAX_SCENARIO_BYTES as u64 {
        return Err(ScenarioError::TooLarge {
            file,
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    parse_bytes(&file, bytes)
}

/// Validates raw scenario bytes read from somewhere other than a named file (standard
/// input); `file` is the name used in error locations.
pub fn parse_bytes(file: &str, bytes: Vec<u8>) -> Result<Scenario, ScenarioError> {
    if bytes.len() > MAX_SCENARIO_BYTES {
        return Err(ScenarioError::TooLarge {
            file: file.to_string(),
            size: bytes.len() as u64,
        });
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&err.as_bytes()[..valid]).into_owned();
            return Err(ScenarioError::NotUtf8 {
                location: Location::at(file, &prefix, valid),
            });
        }
    };
    parse(file, &text)
}

/// Parses and validates scenario text; `file` is used in error locations.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario = toml::from_str(text).map_err(|err| ScenarioError::Invalid {
        location: Location::at(file, text, err.span().map_or(0, |s| s.start)),
        message: err.message().trim().to_string(),
    })?;
    Validator { file, text }.scenario(raw)
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Validator<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            location: Location::at(self.file, self.text, span.start),
            message: message.into(),
        }
    }

    /// Applies [`unique_non_empty`] to values parsed from `items` (a list written at
    /// `span` under `key`), locating the error at the list or at the repeated element.
    fn unique<T: PartialEq + Clone, R>(
        &self,
        values: Vec<T>,
        span: Range<usize>,
        items: &[Spanned<R>],
        key: &str,
        describe: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ScenarioError> {
        unique_non_empty(values).map_err(|err| match err {
            ListError::Empty => self.error(span, format!("`{key}` list is empty")),
            ListError::Duplicate(index, value) => self.error(
                items[index].span(),
                format!("{} is listed twice", describe(&value)),
            ),
        })
    }

    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let timeout = raw
            .timeout
            .map(|t| parse_timeout(t.get_ref()).map_err(|m| self.error(t.span(), m.to_string())))
            .transpose()?;
        let nameserver = raw
            .nameserver
            .map(|n| parse_nameserver(n.get_ref()).map_err(|m| self.error(n.span(), m.to_string())))
            .transpose()?;
        if raw.targets.is_empty() {
            return Err(self.error(0..0, "scenario has no [[target]]"));
        }
        if raw.checks.is_empty() {
            return Err(self.error(0..0, "scenario has no [[check]]"));
        }

        let mut targets = Vec::with_capacity(raw.targets.len());
        let mut index_by_name: HashMap<String, usize> = HashMap::new();
        for raw_target in raw.targets {
            let span = raw_target.span();
            let target = self.target(raw_target.into_inner(), span.clone())?;
            if index_by_name.contains_key(&target.name) {
                return Err(
                    self.error(span, format!("target name `{}` is used twice", target.name))
                );
            }
            index_by_name.insert(target.name.clone(), targets.len());
            targets.push(target);
        }

        let checks = raw
            .checks
            .into_iter()
            .map(|c| self.check(c.into_inner(), &index_by_name, targets.len()))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Scenario {
            source: self.file.to_string(),
            timeout,
            nameserver,
            targets,
            checks,
        })
    }

    fn target(&self, raw: RawTarget, span: Range<usize>) -> Result<Target, ScenarioError> {
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.error(raw.name.span(), "target name is empty"));
        }
        let local = match &raw.local {
            Some(flag) if *flag.get_ref() && raw.address.is_none() => {
                return Err(self.error(
                    flag.span(),
                    "`local` applies to `address` targets only: a DNS answer that stays on \
                     this host is never probed",
                ))
            }
            Some(flag) => *flag.get_ref(),
            None => false,
        };
        let kind = match (raw.mx, raw.host, raw.address) {
            (Some(mx), None, None) => TargetKind::Mx(
                normalize_domain(mx.get_ref()).map_err(|m| self.error(mx.span(), m.to_string()))?,
            ),
            (None, Some(host), None) => TargetKind::Host(
                normalize_domain(host.get_ref())
                    .map_err(|m| self.error(host.span(), m.to_string()))?,
            ),
            (None, None, Some(list)) => {
                if list.get_ref().is_empty() {
                    return Err(self.error(list.span(), "`address` list is empty"));
                }
                let mut addrs: Vec<GivenAddress> = Vec::new();
                for a in list.into_inner() {
                    let literal = a
                        .get_ref()
                        .parse::<Literal>()
                        .and_then(|l| l.check_syntax(local).map(|()| l))
                        .map_err(|e| self.error(a.span(), e.to_string()))?;
                    if !addrs.iter().any(|g| g.literal == literal) {
                        addrs.push(GivenAddress {
                            literal,
                            location: Some(Location::at(self.file, self.text, a.span().start)),
                        });
                    }
                }
                TargetKind::Addresses(addrs)
            }
            _ => {
                return Err(self.error(
                    span,
                    format!("target `{name}` needs exactly one of `mx`, `host` or `address`"),
                ))
            }
        };
        let ports = match raw.ports {
            None => vec![DEFAULT_PORT],
            Some(list) => {
                let span = list.span();
                let items = list.into_inner();
                if items.is_empty() {
                    return Err(self.error(span, "`ports` list is empty"));
                }
                let mut ranges = Vec::with_capacity(items.len());
                for p in &items {
                    let range = match p.get_ref() {
                        RawPort::Number(n) => PortRange::single(*n),
                        RawPort::Text(t) => t.parse::<PortRange>(),
                    }
                    .map_err(|e| self.error(p.span(), e.to_string()))?;
                    ranges.push(range);
                }
                // Overlaps merge: `[25, "1-1024"]` is 1,024 probes, each once.
                merge_ports(ranges)
            }
        };
        let families = match raw.families {
            None => default_families(&kind),
            Some(list) => {
                let span = list.span();
                let items = list.into_inner();
                let families = items.iter().map(|f| *f.get_ref()).collect::<Vec<_>>();
                self.unique(families, span, &items, "families", |f| {
                    format!("family {f}")
                })?
            }
        };
        Ok(Target {
            name,
            kind,
            ports,
            families,
            local,
        })
    }

    fn check(
        &self,
        raw: RawCheck,
        index_by_name: &HashMap<String, usize>,
        target_count: usize,
    ) -> Result<Check, ScenarioError> {
        let span = raw.users.span();
        let items = raw.users.into_inner();
        let mut names = Vec::with_capacity(items.len());
        for u in &items {
            let name = u.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(self.error(u.span(), "user name is empty"));
            }
            names.push(name);
        }
        let users = self
            .unique(names, span, &items, "as", |n| format!("user `{n}`"))?
            .into_iter()
            .zip(&items)
            .map(|(name, u)| UserRef {
                name,
                location: Some(Location::at(self.file, self.text, u.span().start)),
            })
            .collect();
        let targets = match raw.to {
            None => (0..target_count).collect(),
            Some(list) => {
                let span = list.span();
                let items = list.into_inner();
                let mut names = Vec::with_capacity(items.len());
                for t in &items {
                    let name = t.get_ref().trim().to_string();
                    if !index_by_name.contains_key(&name) {
                        return Err(
                            self.error(t.span(), format!("no target is named `{}`", t.get_ref()))
                        );
                    }
                    names.push(name);
                }
                self.unique(names, span, &items, "to", |n| format!("target `{n}`"))?
                    .iter()
                    .map(|n| index_by_name[n])
                    .collect()
            }
        };
        Ok(Check {
            users,
            targets,
            expect: *raw.expect.get_ref(),
        })
    }
}

/// Families probed when a target does not list them: both for names (an untested family
/// must show up), only those present for literal addresses (nothing to resolve there), by
/// the family on the wire (an IPv4-mapped address is IPv4).
fn default_families(kind: &TargetKind) -> Vec<Family> {
    match kind {
        TargetKind::Addresses(addrs) => Family::ALL
            .into_iter()
            .filter(|f| {
                addrs
                    .iter()
                    .any(|a| Family::of(&on_the_wire(a.literal.ip)) == *f)
            })
            .collect(),
        _ => Family::ALL.to_vec(),
    }
}

/// Why the ad hoc command line does not make a scenario.
#[derive(Debug, thiserror::Error)]
pub enum AdHocError {
    /// A value of an option that does not parse.
    #[error("{option}: {error}")]
    Value {
        /// The option, e.g. `--mx`.
        option: &'static str,
        /// What is wrong with its value.
        error: ValueError,
    },
    /// An `--addr` that is not a destination (or local without `--local`).
    #[error("--addr: {0}")]
    Address(LiteralError),
    /// `--local` without any `--addr`.
    #[error("--local applies to --addr targets only: a DNS answer that stays on this host is never probed")]
    LocalWithoutAddress,
}

/// What the ad hoc command line (`egress-check --as USER --mx ...`) asks for.
#[derive(Debug, Clone, Default)]
pub struct AdHocTargets {
    /// `--mx` domains.
    pub mx: Vec<String>,
    /// `--host` names.
    pub hosts: Vec<String>,
    /// `--addr` addresses.
    pub addresses: Vec<Literal>,
    /// `--port` values and ranges (empty means the default).
    pub ports: Vec<PortRange>,
    /// `--local`: the `--addr` targets may be loopback or this host's own addresses.
    pub local: bool,
}

impl AdHocTargets {
    /// True when no target option was given (the built-in scenario applies).
    pub fn is_empty(&self) -> bool {
        self.mx.is_empty() && self.hosts.is_empty() && self.addresses.is_empty()
    }

    /// Builds a one-check scenario for `user` from the command line targets.
    pub fn into_scenario(self, user: &str, expect: Expectation) -> Result<Scenario, AdHocError> {
        let ports: Vec<u16> = if self.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            // Ascending, as the command line always reported them; overlaps merge.
            let mut ports = merge_ports(self.ports.iter().copied());
            ports.sort_unstable();
            ports
        };
        if self.local && self.addresses.is_empty() {
            return Err(AdHocError::LocalWithoutAddress);
        }
        let local = self.local;
        let mut targets = Vec::new();
        let mut push = |name: String, kind: TargetKind| {
            if !targets.iter().any(|t: &Target| t.name == name) {
                let local = local && matches!(kind, TargetKind::Addresses(_));
                targets.push(Target {
                    name,
                    kind,
                    ports: ports.clone(),
                    families: Family::ALL.to_vec(),
                    local,
                });
            }
        };
        for mx in self.mx {
            let domain = normalize_domain(&mx).map_err(|error| AdHocError::Value {
                option: "--mx",
                error,
            })?;
            push(domain.clone(), TargetKind::Mx(domain));
        }
        for host in self.hosts {
            let host = normalize_domain(&host).map_err(|error| AdHocError::Value {
                option: "--host",
                error,
            })?;
            push(host.clone(), TargetKind::Host(host));
        }
        for literal in self.addresses {
            literal.check_syntax(local).map_err(AdHocError::Address)?;
            push(
                literal.to_string(),
                TargetKind::Addresses(vec![GivenAddress {
                    literal,
                    location: None,
                }]),
            );
        }
        for target in &mut targets {
            target.families = default_families(&target.kind);
        }
        let check = Check {
            users: vec![UserRef {
                name: user.to_string(),
                location: None,
            }],
            targets: (0..targets.len()).collect(),
            expect,
        };
        Ok(Scenario {
            source: "<command line>".to_string(),
            timeout: None,
            nameserver: None,
            targets,
            checks: vec![check],
        })
    }
}

/// The built-in default scenario with its checks re-pointed at `user`.
pub fn default_scenario_for(user: &str) -> Result<Scenario, ScenarioError> {
    let mut scenario = parse(DEFAULT_SCENARIO_NAME, DEFAULT_SCENARIO)?;
    for check in &mut scenario.checks {
        check.users = vec![UserRef {
            name: user.to_string(),
            location: None,
        }];
    }
    Ok(scenario)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse("s.toml", text).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"
[[target]]
name = "gmail"
mx = "Gmail.COM."

[[check]]
as = ["www-data"]
expect = "deny"
"#;

    #[test]
    fn minimal_scenario_gets_defaults() {
        let s = parse("s.toml", MINIMAL).unwrap();
        assert_eq!(s.targets[0].kind, TargetKind::Mx("gmail.com".into()));
        assert_eq!(s.targets[0].ports, vec![25]);
        assert_eq!(s.targets[0].families, vec![Family::Ipv4, Family::Ipv6]);
        assert_eq!(s.checks[0].targets, vec![0]);
        assert_eq!(s.checks[0].expect, Expectation::Deny);
        let user = &s.checks[0].users[0];
        assert_eq!(user.name, "www-data");
        assert_eq!(user.location.as_ref().unwrap().to_string(), "s.toml:7:7");
        assert_eq!(s.timeout, None);
    }

    #[test]
    fn full_scenario_parses() {
        let s = parse(
            "s.toml",
            r#"
timeout = "500ms"
nameserver = "[2001:db8::53]:5353"
[[target]]
name = "a"
address = ["192.0.2.1", "2001:db8::1"]
ports = [25, 587]
families = ["ipv6"]
[[target]]
name = "h"
host = "smtp.example.test"
[[check]]
as = ["postfix", "root"]
to = ["h", "a"]
expect = "allow"
"#,
        )
        .unwrap();
        assert_eq!(s.timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.nameserver, Some("[2001:db8::53]:5353".parse().unwrap()));
        assert_eq!(s.targets[0].ports, vec![25, 587]);
        assert_eq!(s.targets[0].families, vec![Family::Ipv6]);
        assert_eq!(s.checks[0].targets, vec![1, 0]);
        assert_eq!(s.checks[0].users.len(), 2);
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = error_of("[[target]]\nname = \"x\"\nmx = gmail.com\n");
        assert!(err.starts_with("s.toml:3:6:"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_with_location() {
        let err = error_of(&MINIMAL.replace("expect =", "expekt = \"deny\"\nexpect ="));
        assert!(err.starts_with("s.toml:8:1:"), "{err}");
        assert!(err.contains("expekt"), "{err}");
    }

    #[test]
    fn dangling_target_reference_is_located() {
        let err = error_of(&MINIMAL.replace("expect =", "to = [\"gmial\"]\nexpect ="));
        assert!(err.starts_with("s.toml:8:7:"), "{err}");
        assert!(err.contains("no target is named `gmial`"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (needle, replacement, expected) in [
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a..b\"",
                "not a valid domain name",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nhost = \"c\"",
                "exactly one of",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "address = []",
                "`address` list is empty",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "address = [\"1.2.3\"]",
                "not an IP address",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [0]",
                "port 0 is out of range",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [65536]",
                "port 65536 is out",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [25, \"8100-8000\"]",
                "port range `8100-8000` is reversed",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [\"0-10\"]",
                "port 0 is out of range",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [\"1-65536\"]",
                "port 65536 is out of range",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [\"\"]",
                "is not a port or a port range",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = [true]",
                "a port (25) or a port range",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nports = []",
                "`ports` list is empty",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nfamilies = [\"ipv5\"]",
                "ipv5",
            ),
            (
                "mx = \"Gmail.COM.\"",
                "mx = \"a.b\"\nfamilies = []",
                "list is empty",
            ),
            ("as = [\"www-data\"]", "as = []", "`as` list is empty"),
            ("as = [\"www-data\"]", "as = [\"a\", \"a\"]", "listed twice"),
            ("expect = \"deny\"", "expect = \"maybe\"", "maybe"),
            (
                "expect = \"deny\"",
                "expect = \"deny\"\nto = []",
                "`to` list is empty",
            ),
        ] {
            let text = MINIMAL.replace(needle, replacement);
            assert_ne!(text, MINIMAL, "{needle}");
            let err = error_of(&text);
            assert!(err.contains(expected), "{replacement}: {err}");
            assert!(err.starts_with("s.toml:"), "{err}");
        }
    }

    #[test]
    fn duplicate_target_names_are_rejected() {
        let text = format!("{MINIMAL}\n[[target]]\nname = \"gmail\"\nmx = \"x.y\"\n");
        assert!(error_of(&text).contains("target name `gmail` is used twice"));
    }

    #[test]
    fn empty_scenario_is_rejected() {
        assert!(error_of("").contains("no [[target]]"));
    }

    #[test]
    fn timeout_and_nameserver_validation() {
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("2 parsecs").is_err());
        assert!(parse_timeout("2h").is_err());
        assert_eq!(
            parse_nameserver("192.0.2.53"),
            Ok("192.0.2.53:53".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("192.0.2.53:5353"),
            Ok("192.0.2.53:5353".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("2001:db8::1"),
            Ok("[2001:db8::1]:53".parse().unwrap())
        );
        assert!(parse_nameserver("dns.example").is_err());
    }

    #[test]
    fn location_counts_characters_not_bytes() {
        let err = error_of("# é\n[[target]]\nname = \"é\"\nmx = 1\n");
        assert!(err.starts_with("s.toml:4:6:"), "{err}");
    }

    #[test]
    fn default_scenario_is_valid_and_retargetable() {
        let s = default_scenario_for("www-data").unwrap();
        assert!(s.targets.len() >= 3);
        assert!(s
            .checks
            .iter()
            .all(|c| c.users.len() == 1 && c.users[0].name == "www-data"));
        assert!(s.checks.iter().all(|c| c.expect == Expectation::Deny));
    }

    #[test]
    fn shipped_story_scenario_is_valid() {
        let s = parse("story.toml", include_str!("../scenarios/story.toml")).unwrap();
        assert_eq!(s.checks.len(), 2);
        assert_eq!(s.checks[0].users[0].name, "postfix");
    }

    fn target_of(address_line: &str) -> Result<Target, ScenarioError> {
        let text = MINIMAL.replace("mx = \"Gmail.COM.\"", address_line);
        parse("s.toml", &text).map(|s| s.targets[0].clone())
    }

    #[test]
    fn literal_addresses_that_are_not_destinations_are_located() {
        for (line, error) in [
            (
                "address = [\"0.0.0.0\"]",
                "s.toml:4:12: `0.0.0.0` is an unspecified address",
            ),
            (
                "address = [\"::\"]",
                "s.toml:4:12: `::` is an unspecified address",
            ),
            (
                "address = [\"192.0.2.1\", \"224.0.0.1\"]",
                "s.toml:4:25: `224.0.0.1` is a multicast",
            ),
            (
                "address = [\"255.255.255.255\"]",
                "is the limited broadcast address",
            ),
            (
                "address = [\"127.0.0.1\"]",
                "s.toml:4:12: `127.0.0.1` is a loopback address",
            ),
            ("address = [\"::ffff:127.0.0.1\"]", "is a loopback address"),
            ("address = [\"fe80::1\"]", "e.g. `fe80::1%eth0`"),
            (
                "address = [\"192.0.2.1%eth0\"]",
                "only an IPv6 link-local address",
            ),
            (
                "mx = \"a.test\"\nlocal = true",
                "s.toml:5:9: `local` applies to `address` targets",
            ),
        ] {
            let err = target_of(line).unwrap_err().to_string();
            assert!(err.contains(error), "{line}: {err}");
        }
    }

    #[test]
    fn local_targets_opt_in_and_zones_are_kept() {
        let t = target_of("address = [\"127.0.0.1\", \"::1\"]\nlocal = true").unwrap();
        assert!(t.local);
        assert_eq!(t.families, Family::ALL.to_vec());
        let t = target_of("address = [\"fe80::1%eth0\"]").unwrap();
        assert!(!t.local);
        let TargetKind::Addresses(list) = &t.kind else {
            panic!("{t:?}")
        };
        assert_eq!(list[0].literal.zone.as_deref(), Some("eth0"));
        assert_eq!(
            list[0].location.as_ref().unwrap().to_string(),
            "s.toml:4:12"
        );
        // A mapped address is IPv4 on the wire.
        let t = target_of("address = [\"::ffff:203.0.113.10\"]").unwrap();
        assert_eq!(t.families, vec![Family::Ipv4]);
        // `local = false` is allowed anywhere.
        assert!(!target_of("mx = \"a.test\"\nlocal = false").unwrap().local);
    }

    #[test]
    fn ad_hoc_local_needs_addresses_and_the_opt_in() {
        let ad_hoc = |addr: &str, local: bool| {
            AdHocTargets {
                mx: if addr.is_empty() {
                    vec!["a.test".into()]
                } else {
                    vec![]
                },
                addresses: if addr.is_empty() {
                    vec![]
                } else {
                    vec![addr.parse().unwrap()]
                },
                local,
                ..AdHocTargets::default()
            }
            .into_scenario("ec-web", Expectation::Allow)
        };
        assert!(matches!(
            ad_hoc("", true),
            Err(AdHocError::LocalWithoutAddress)
        ));
        let err = ad_hoc("127.0.0.1", false).unwrap_err().to_string();
        assert!(
            err.starts_with("--addr: `127.0.0.1` is a loopback"),
            "{err}"
        );
        assert!(ad_hoc("127.0.0.1", true).unwrap().targets[0].local);
        assert!(matches!(
            ad_hoc("0.0.0.0", true),
            Err(AdHocError::Address(_))
        ));
        assert!(!ad_hoc("", false).unwrap().targets[0].local);
    }

    #[test]
    fn ad_hoc_targets_become_a_scenario() {
        let targets = AdHocTargets {
            mx: vec!["Example.TEST".into()],
            hosts: vec![],
            addresses: vec!["192.0.2.1".parse().unwrap()],
            ports: ["587", "25", "587"]
                .iter()
                .map(|p| p.parse().unwrap())
                .collect(),
            local: false,
        };
        let s = targets.into_scenario("ec-web", Expectation::Allow).unwrap();
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.targets[0].ports, vec![25, 587]);
        assert_eq!(s.checks[0].targets, vec![0, 1]);
    }

    #[test]
    fn port_ranges_merge_and_errors_name_the_element() {
        let text = MINIMAL.replace(
            "mx = \"Gmail.COM.\"",
            "mx = \"a.b\"\nports = [25, \"8000-8100\", \"24-26\", \"1-65535\"]",
        );
        let s = parse("s.toml", &text).unwrap();
        let ports = &s.targets[0].ports;
        assert_eq!(ports.len(), 65535);
        assert_eq!(&ports[..3], &[25, 8000, 8001], "in the order first given");
        let small = MINIMAL.replace(
            "mx = \"Gmail.COM.\"",
            "mx = \"a.b\"\nports = [587, \"20-30\", 25]",
        );
        let s = parse("s.toml", &small).unwrap();
        assert_eq!(s.targets[0].ports.len(), 12);
        assert_eq!(s.targets[0].ports[0], 587);

        let bad = MINIMAL.replace("mx = \"Gmail.COM.\"", "mx = \"a.b\"\nports = [25, \"9-1\"]");
        let err = error_of(&bad);
        // The element itself: line 5 of the text, column of its opening quote.
        assert!(err.starts_with("s.toml:5:14:"), "{err}");
        assert!(err.contains("port range `9-1` is reversed"), "{err}");
    }
}
