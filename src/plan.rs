//! Planning: who checks what, decided before anything is sent.
//!
//! Every check is expanded into (user, target, expectation) [`Assignment`]s and the users
//! are looked up, so a typo in a user name stops the run before a packet leaves. The plan
//! also says which names to look up with which nameservers ([`lookups`]), each once.
//!
//! The exact probes depend on DNS answers, so they are made after resolution
//! ([`crate::resolve::expand`]) but are of this stage's type, [`PlannedProbe`]: what will
//! be tried, before anything was tried.
//!
//! Literal addresses are checked twice before anything is sent: what needs no namespace
//! when the scenario is parsed, and against the interfaces of the namespace the probes run
//! in ([`check_literals`]) once it has been entered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use crate::address::{HostInterfaces, LiteralError, Scope};
use crate::identity::{self, Account, IdentityError};
use crate::scenario::{Location, Scenario, Target, TargetKind};
use crate::service::{ServiceError, ServiceIdentity, Subject};
use crate::vocab::{Expectation, Family};

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
    /// A `pid:` or `unit:` identity cannot be stood in.
    #[error("{}{error}", .location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Service {
        /// Where the scenario names it.
        location: Option<Location>,
        /// What is wrong (boxed: it is large, and rare).
        error: Box<ServiceError>,
    },
    /// A literal address that cannot be probed from this namespace (the host's own without
    /// the opt-in, a directed broadcast, a zone naming no interface).
    #[error("{}{error}", .location.as_ref().map(|l| format!("{l}: ")).unwrap_or_else(|| "--addr: ".to_string()))]
    Address {
        /// Where the scenario gives the address (`None`: `--addr`).
        location: Option<Location>,
        /// What is wrong.
        error: LiteralError,
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

impl PlanError {
    /// Adds what the user could do instead to a missing-privilege error
    /// ([`IdentityError::with_alternative`]); other errors are returned as they are.
    pub fn with_alternative(self, alternative: Option<String>) -> PlanError {
        match self {
            PlanError::User { location, error } => PlanError::User {
                location,
                error: error.with_alternative(alternative),
            },
            other => other,
        }
    }
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
    /// The scenario's `nameserver`, if it names one.
    pub nameserver: Option<SocketAddr>,
    /// For `pid:`/`unit:` identities: the process stood in ([`crate::service`]); its
    /// [`ServiceIdentity::account`] is `account`.
    pub service: Option<Arc<ServiceIdentity>>,
}

/// Looks up one `as` entry: a user, or a process or unit to stand in.
fn look_up(
    spec: &str,
    location: Option<&Location>,
) -> Result<(Account, Option<Arc<ServiceIdentity>>), PlanError> {
    let service_error = |error| PlanError::Service {
        location: location.cloned(),
        error: Box::new(error),
    };
    match Subject::parse(spec).map_err(service_error)? {
        Subject::User(name) => identity::lookup(&name)
            .map(|account| (account, None))
            .map_err(|error| PlanError::User {
                location: location.cloned(),
                error,
            }),
        subject => {
            let service = ServiceIdentity::of_subject(spec, &subject).map_err(service_error)?;
            Ok((service.account(), Some(Arc::new(service))))
        }
    }
}

/// Expands the checks of `scenarios` into assignments, looking every user up.
///
/// `only_user` keeps the checks of that user only; `timeout` overrides the scenarios'.
pub fn assignments(
    scenarios: &[Scenario],
    only_user: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Vec<Assignment>, PlanError> {
    // Every identity is read once, so all its assignments (and the report) share one
    // snapshot of a process.
    let mut known: HashMap<String, (Account, Option<Arc<ServiceIdentity>>)> = HashMap::new();
    let mut look_up_once = |spec: &str, location: Option<&Location>| {
        if let Some(found) = known.get(spec) {
            return Ok(found.clone());
        }
        let found = look_up(spec, location)?;
        known.insert(spec.to_string(), found.clone());
        Ok::<_, PlanError>(found)
    };
    let only_account = only_user.map(|u| look_up_once(u, None)).transpose()?;
    let mut out = Vec::new();
    let mut seen_users: Vec<String> = Vec::new();
    for scenario in scenarios {
        let timeout = timeout.or(scenario.timeout).unwrap_or(DEFAULT_TIMEOUT);
        for check in &scenario.checks {
            for user in &check.users {
                let (account, service) = look_up_once(&user.name, user.location.as_ref())?;
                if !seen_users.contains(&account.name) {
                    seen_users.push(account.name.clone());
                }
                // A user filter matches users by uid; a process or unit only by itself.
                if only_account.as_ref().is_some_and(|(only, only_service)| {
                    match (only_service, &service) {
                        (None, None) => only.uid != account.uid,
                        _ => only.name != account.name,
                    }
                }) {
                    continue;
                }
                for &t in &check.targets {
                    out.push(Assignment {
                        account: account.clone(),
                        target: scenario.targets[t].clone(),
                        expect: check.expect,
                        timeout,
                        nameserver: scenario.nameserver,
                        service: service.clone(),
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
pub fn ensure_privileges(assignments: &[Assignment]) -> Result<(), PlanError> {
    for a in assignments {
        match &a.service {
            Some(service) => {
                crate::service::ensure_privileged(service).map_err(|error| PlanError::Service {
                    location: None,
                    error: Box::new(error),
                })?
            }
            None => identity::ensure_can_become(&a.account).map_err(|error| PlanError::User {
                location: None,
                error,
            })?,
        }
    }
    Ok(())
}

/// The `pid:`/`unit:` identities of `assignments`, each once, in order of appearance.
pub fn services(assignments: &[Assignment]) -> Vec<ServiceIdentity> {
    let mut out: Vec<ServiceIdentity> = Vec::new();
    for service in assignments.iter().filter_map(|a| a.service.as_deref()) {
        if !out.iter().any(|s| s.key == service.key) {
            out.push(service.clone());
        }
    }
    out
}

/// Checks every literal address of `assignments` against the interfaces of the namespace
/// the probes will run in (`host`): the host's own addresses need the target's opt-in,
/// directed broadcasts are no destination, zones must name an interface there. Call it
/// after the namespace was entered and before anything is sent.
pub fn check_literals(assignments: &[Assignment], host: &HostInterfaces) -> Result<(), PlanError> {
    for a in assignments {
        if let TargetKind::Addresses(list) = &a.target.kind {
            for given in list {
                host.check_literal(&given.literal, a.target.local)
                    .map_err(|error| PlanError::Address {
                        location: given.location.clone(),
                        error,
                    })?;
            }
        }
    }
    Ok(())
}

/// Where a resolver finds its nameservers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NameserverSource {
    /// `/etc/resolv.conf`.
    System,
    /// The contents of another resolv.conf (e.g. `/etc/netns/NAME/resolv.conf`).
    ResolvConf(String),
    /// One explicit server.
    Server(SocketAddr),
}

/// How the run's environment chooses nameservers, from strongest to weakest: an explicit
/// server (`--nameserver`), the scenario's `nameserver`, the entered
/// namespace's resolv.conf, the system's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameserverChoice {
    /// `--nameserver`: overrides everything else.
    pub server: Option<SocketAddr>,
    /// resolv.conf of the entered namespace, used instead of /etc/resolv.conf.
    pub netns_resolv_conf: Option<String>,
}

impl NameserverChoice {
    /// The nameservers that resolve `assignment`'s target.
    pub fn source_for(&self, assignment: &Assignment) -> NameserverSource {
        if let Some(addr) = self.server.or(assignment.nameserver) {
            NameserverSource::Server(addr)
        } else if let Some(text) = &self.netns_resolv_conf {
            NameserverSource::ResolvConf(text.clone())
        } else {
            NameserverSource::System
        }
    }
}

/// The names to resolve, grouped by the nameservers that must answer them; every target
/// once per group, in order of first appearance.
pub fn lookups(
    assignments: &[Assignment],
    choice: &NameserverChoice,
) -> Vec<(NameserverSource, Vec<TargetKind>)> {
    let mut groups: Vec<(NameserverSource, Vec<TargetKind>)> = Vec::new();
    for a in assignments {
        let source = choice.source_for(a);
        let index = match groups.iter().position(|(s, _)| *s == source) {
            Some(index) => index,
            None => {
                groups.push((source, Vec::new()));
                groups.len() - 1
            }
        };
        let kinds = &mut groups[index].1;
        if !kinds.contains(&a.target.kind) {
            kinds.push(a.target.kind.clone());
        }
    }
    groups
}

/// Who probes what: the part of a probe that the plan decides and every report repeats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeSpec {
    /// Who probes: the login name, or a `pid:`/`unit:` identity as given
    /// ([`crate::service`]).
    pub user: std::sync::Arc<str>,
    /// Its uid.
    pub uid: u32,
    /// The target's name in the scenario.
    pub target: std::sync::Arc<str>,
    /// The mail domain, for MX targets.
    pub domain: Option<String>,
    /// The exchange or host name (`"."` for a null MX; `None` for literal addresses).
    pub exchange: Option<String>,
    /// MX preference of the exchange.
    pub preference: Option<u16>,
    /// Address family.
    pub family: Family,
    /// TCP port.
    pub port: u16,
    /// What should happen.
    pub expect: Expectation,
}

/// One connection attempt to make (or, without a destination, one that cannot be made).
/// Made after DNS by [`crate::resolve::expand`]; judged by [`crate::verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Who probes what.
    pub spec: ProbeSpec,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Where to connect, or why there is nowhere to connect.
    pub destination: Destination,
    /// Something the report should say about the probe whatever its outcome (e.g. that the
    /// domain had no MX record and its own address stands in).
    pub note: Option<String>,
}

impl PlannedProbe {
    /// The socket address to connect to (with its interface for IPv6 link-local), if there
    /// is one.
    pub fn connect_to(&self) -> Option<SocketAddr> {
        match &self.destination {
            Destination::Address(endpoint) => Some(endpoint.socket_addr(self.spec.port)),
            Destination::None(_) => None,
        }
    }

    /// The address, if there is one.
    pub fn address(&self) -> Option<IpAddr> {
        self.endpoint().map(|e| e.ip)
    }

    /// Where it connects, if anywhere.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match &self.destination {
            Destination::Address(endpoint) => Some(endpoint),
            Destination::None(_) => None,
        }
    }

    /// True when the destination is this host (loopback or its own address, opted in):
    /// the connection does not cross the egress path and proves nothing about it.
    pub fn is_local(&self) -> bool {
        self.endpoint().is_some_and(|e| e.local)
    }
}

/// Where a probe connects: an address on the wire, and what the report must know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address on the wire; its family is the probe's family (an IPv4-mapped AAAA
    /// record or literal is its IPv4 address, [`crate::address::on_the_wire`]).
    pub ip: IpAddr,
    /// The interface of an IPv6 link-local address (its RFC 4007 zone).
    pub scope: Option<Scope>,
    /// The records or the literal the address came from, when they are not simply the
    /// address (`AAAA ::ffff:203.0.113.10`, `fe80::1%eth0`).
    pub record: Option<String>,
    /// A loopback or own address a target opted in to (`local = true`): the probe is made
    /// and reported, but proves nothing about the firewall, so it never passes.
    pub local: bool,
}

impl Endpoint {
    /// An ordinary address.
    pub fn new(ip: IpAddr) -> Endpoint {
        Endpoint {
            ip,
            scope: None,
            record: None,
            local: false,
        }
    }

    /// The socket address at `port`; a link-local IPv6 address carries its interface in
    /// `sin6_scope_id`, without which Linux refuses the connect (EINVAL).
    pub fn socket_addr(&self, port: u16) -> SocketAddr {
        match (self.ip, &self.scope) {
            (IpAddr::V6(v6), Some(scope)) => {
                SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope.index))
            }
            (ip, _) => SocketAddr::new(ip, port),
        }
    }
}

/// Where a probe connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// This endpoint (at the probe's port).
    Address(Endpoint),
    /// Nothing to connect to; why (no record in this family, a DNS failure, a null MX).
    /// Such a probe is `no-address`, inconclusive: the untested family stays visible.
    None(String),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nix::unistd::{Gid, Uid};

    /// An assignment of `ec-web` (uid 1234) to a target `t`, expecting deny, timeout 1 s.
    pub(crate) fn assignment(
        kind: TargetKind,
        families: Vec<Family>,
        ports: Vec<u16>,
    ) -> Assignment {
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
                local: false,
            },
            expect: Expectation::Deny,
            timeout: Duration::from_secs(1),
            nameserver: None,
            service: None,
        }
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
    fn lookups_are_grouped_by_nameserver_once_per_target() {
        let scenario = crate::scenario::parse(
            "s.toml",
            "[[target]]\nname = \"t\"\nmx = \"d.test\"\n[[target]]\nname = \"u\"\nhost = \"h.test\"\n\
             [[check]]\nas = [\"root\"]\nexpect = \"allow\"\n[[check]]\nas = [\"root\"]\nto = [\"t\"]\nexpect = \"deny\"\n",
        )
        .unwrap();
        let assignments = assignments(&[scenario], None, None).unwrap();
        assert_eq!(assignments.len(), 3);
        let system = lookups(&assignments, &NameserverChoice::default());
        assert_eq!(
            system,
            vec![(
                NameserverSource::System,
                vec![
                    TargetKind::Mx("d.test".into()),
                    TargetKind::Host("h.test".into())
                ]
            )]
        );
        let server: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let choice = NameserverChoice {
            server: Some(server),
            netns_resolv_conf: Some("nameserver 192.0.2.1\n".into()),
        };
        assert_eq!(
            lookups(&assignments, &choice)[0].0,
            NameserverSource::Server(server)
        );
    }

    #[test]
    fn literals_are_checked_against_the_namespace_with_their_location() {
        let scenario = crate::scenario::parse(
            "s.toml",
            "[[target]]\nname = \"t\"\naddress = [\"203.0.113.10\", \"198.51.100.1\"]\n\
             [[check]]\nas = [\"root\"]\nexpect = \"allow\"\n",
        )
        .unwrap();
        let mut assignments = assignments(&[scenario], None, None).unwrap();
        let host = crate::address::tests::host();
        let err = check_literals(&assignments, &host).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "s.toml:3:28: `198.51.100.1` is an address of this host (interface eth0)"
            ),
            "{err}"
        );
        assert!(err.contains("`local = true`"), "{err}");
        assignments[0].target.local = true;
        assert!(check_literals(&assignments, &host).is_ok());
        // Outside that namespace the address is an ordinary destination.
        assignments[0].target.local = false;
        assert!(check_literals(&assignments, &HostInterfaces::new(Vec::new())).is_ok());
    }

    #[test]
    fn ad_hoc_literal_errors_name_the_option() {
        let scenario = crate::scenario::AdHocTargets {
            addresses: vec!["fe80::1%eth9".parse().unwrap()],
            ..Default::default()
        }
        .into_scenario("root", Expectation::Allow)
        .unwrap();
        let assignments = assignments(&[scenario], None, None).unwrap();
        let err = check_literals(&assignments, &crate::address::tests::host())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--addr: `fe80::1%eth9`: no interface `eth9` in this network namespace (interfaces: lo, eth0)"
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
