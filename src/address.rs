//! Where an address leads: whether a connection to it can cross this host's egress path at
//! all, and which family it uses on the wire.
//!
//! Every address is classified before anything is sent to it ([`HostInterfaces::classify`]):
//! by the IANA special-purpose address registries of both families (RFC 6890) and by the
//! addresses of the interfaces of the network namespace the probes run in. An address that
//! stays on this host (unspecified, loopback, the host's own) proves nothing about the
//! firewall; one TCP cannot connect to (multicast, broadcast) fails in a way that looks like
//! a block; an IPv6 link-local address without its interface cannot be connected to at all.
//! Ordinary destinations are *not* flagged, however special their range: private and
//! documentation ranges (internal relays, test labs), IPv4 link-local 169.254.0.0/16 (the
//! cloud metadata address is a valuable deny check), NAT64 and 6to4 (IPv6 on the wire).
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2) given to an IPv6 socket
//! is sent as IPv4 by Linux: [`on_the_wire`] says which address, and so which family and
//! which of `iptables`/`ip6tables`, a probe really uses.
//!
//! Addresses given literally ([`Literal`]) may carry an RFC 4007 zone (`fe80::1%eth0`); it
//! is resolved to an interface index of the probing namespace ([`HostInterfaces::check_literal`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What an address is as the destination of an egress probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Class {
    /// An ordinary destination: a connection to it leaves the host (if routes allow).
    Egress,
    /// 0.0.0.0/8 ("this network", RFC 1122 3.2.1.3; source only in the IANA registry) or
    /// `::` (RFC 4291 2.5.2). Linux connects `0.0.0.0` and `::` to this host itself.
    Unspecified,
    /// 127.0.0.0/8 (RFC 1122 3.2.1.3) or `::1` (RFC 4291 2.5.3).
    Loopback,
    /// An address of an interface of the namespace the probes run in.
    Own {
        /// The interface that has it.
        interface: String,
    },
    /// IPv6 link-local (fe80::/10, RFC 4291 2.5.6) without a zone: it names no interface,
    /// so the kernel cannot connect to it (EINVAL).
    LinkLocal,
    /// 224.0.0.0/4 (RFC 5771) or ff00::/8 (RFC 4291 2.7): TCP cannot connect to it.
    Multicast,
    /// 255.255.255.255 (RFC 919, RFC 1122 3.2.1.3 "limited broadcast").
    LimitedBroadcast,
    /// The broadcast address of one of the namespace's IPv4 subnets (RFC 919, RFC 922).
    DirectedBroadcast {
        /// The interface whose subnet it is.
        interface: String,
    },
}

impl Class {
    /// True for an ordinary destination.
    pub fn is_egress(&self) -> bool {
        matches!(self, Class::Egress)
    }

    /// True when a connection to the address stays on this host (loopback or the host's
    /// own): what `local = true` / `--local` may opt in to probing anyway.
    pub fn is_local(&self) -> bool {
        matches!(self, Class::Loopback | Class::Own { .. })
    }

    /// Short kebab-case name, used in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Class::Egress => "egress",
            Class::Unspecified => "unspecified",
            Class::Loopback => "loopback",
            Class::Own { .. } => "own",
            Class::LinkLocal => "link-local",
            Class::Multicast => "multicast",
            Class::LimitedBroadcast => "limited-broadcast",
            Class::DirectedBroadcast { .. } => "directed-broadcast",
        }
    }

    /// What it is and why that matters, for reports and error messages.
    pub fn describe(&self) -> String {
        match self {
            Class::Egress => "an ordinary destination".to_string(),
            Class::Unspecified => "an unspecified address (0.0.0.0/8 \"this network\", RFC 1122 \
                3.2.1.3; :: RFC 4291 2.5.2): a connection to it stays on this host"
                .to_string(),
            Class::Loopback => "a loopback address (127.0.0.0/8, RFC 1122 3.2.1.3; ::1, RFC 4291 \
                2.5.3): a connection to it stays on this host"
                .to_string(),
            Class::Own { interface } => format!(
                "an address of this host (interface {interface}): a connection to it stays on \
                 this host"
            ),
            Class::LinkLocal => "an IPv6 link-local address (fe80::/10, RFC 4291 2.5.6) without \
                an interface (RFC 4007 zone): it cannot be connected to, and never leaves its link"
                .to_string(),
            Class::Multicast => "a multicast address (224.0.0.0/4, RFC 5771; ff00::/8, RFC 4291 \
                2.7): TCP cannot connect to it, so a refusal would look like a block"
                .to_string(),
            Class::LimitedBroadcast => "the limited broadcast address (RFC 919, RFC 1122 \
                3.2.1.3): TCP cannot connect to it, so a refusal would look like a block"
                .to_string(),
            Class::DirectedBroadcast { interface } => format!(
                "the broadcast address of the subnet of interface {interface} (RFC 919, RFC \
                 922): TCP cannot connect to it, so a refusal would look like a block"
            ),
        }
    }

    /// What such a DNS answer usually means, when it has a usual meaning.
    pub fn dns_hint(&self) -> Option<&'static str> {
        match self {
            // Filtering resolvers (RPZ, Pi-hole, DNS filters) answer blocked names this way.
            Class::Unspecified | Class::Loopback => Some("a sinkhole or a broken zone"),
            Class::Own { .. } => Some("the name points at this host itself"),
            Class::Multicast | Class::LimitedBroadcast | Class::DirectedBroadcast { .. } => {
                Some("a broken zone")
            }
            Class::Egress | Class::LinkLocal => None,
        }
    }
}

/// The address a connection to `ip` really uses: the IPv4 address of an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2), which Linux sends as IPv4 (so `iptables`,
/// not `ip6tables`, sees it); any other address unchanged. The deprecated IPv4-compatible
/// form (`::a.b.c.d`, RFC 4291 2.5.5.1) is IPv6 on the wire and stays as it is.
pub fn on_the_wire(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True for an IPv4-mapped IPv6 address (`::ffff:0:0/96`, RFC 4291 2.5.5.2).
pub fn is_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// What a mapped address means, for details.
pub const MAPPED_NOTE: &str =
    "IPv4-mapped (::ffff:0:0/96, RFC 4291 2.5.5.2): the connection goes out over IPv4";

/// A remark about an ordinary IPv6 destination whose prefix carries IPv4 meaning; the
/// connection is IPv6 on the wire all the same (`ip6tables` sees it).
pub fn note(ip: IpAddr) -> Option<&'static str> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some("NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): IPv6 on this host, translated to IPv4 further on")
    } else if s[..3] == [0x64, 0xff9b, 1] {
        Some("local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215): IPv6 on this host, translated to IPv4 further on")
    } else if s[0] == 0x2002 {
        Some("6to4 2002::/16 (RFC 3056): IPv6 on this host; a 6to4 router may carry it over IPv4 further on")
    } else if s[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        Some("deprecated IPv4-compatible address ::/96 (RFC 4291 2.5.5.1): IPv6 on the wire")
    } else {
        None
    }
}

/// True for IPv6 link-local unicast (fe80::/10, RFC 4291 2.5.6).
fn is_v6_link_local(v6: &Ipv6Addr) -> bool {
    v6.segments()[0] & 0xffc0 == 0xfe80
}

/// The classes that do not depend on the namespace; `None` when only the namespace's
/// interfaces can tell. `zoned`: an IPv6 link-local address comes with its interface.
fn fixed_class(wire: IpAddr, zoned: bool) -> Option<Class> {
    match wire {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                Some(Class::Unspecified)
            } else if v4.is_loopback() {
                Some(Class::Loopback)
            } else if v4.is_broadcast() {
                Some(Class::LimitedBroadcast)
            } else if v4.is_multicast() {
                Some(Class::Multicast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some(Class::Unspecified)
            } else if v6.is_loopback() {
                Some(Class::Loopback)
            } else if v6.is_multicast() {
                Some(Class::Multicast)
            } else if is_v6_link_local(&v6) && !zoned {
                Some(Class::LinkLocal)
            } else {
                None
            }
        }
    }
}

/// An interface as the classification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its index (what a `sin6_scope_id` holds).
    pub index: u32,
    /// Its addresses, each with its prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Its configured IPv4 broadcast addresses (`brd`).
    pub broadcasts: Vec<Ipv4Addr>,
}

/// An interface a link-local destination is reached through (its RFC 4007 zone).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The interface's name.
    pub interface: String,
    /// Its index, the `sin6_scope_id` the worker connects with.
    pub index: u32,
}

/// Why the interfaces of the namespace could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum InterfacesError {
    /// `getifaddrs(3)` failed.
    #[error("cannot list this network namespace's interfaces (getifaddrs)")]
    List(#[source] nix::Error),
}

/// The interfaces of the network namespace the probes run in: what "this host" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterfaces {
    interfaces: Vec<Interface>,
}

impl HostInterfaces {
    /// The interfaces of the calling thread's network namespace. Call it after `--netns`
    /// (or the sandbox's namespace) has been entered, before anything is sent.
    pub fn current() -> Result<HostInterfaces, InterfacesError> {
        let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
        for entry in nix::ifaddrs::getifaddrs().map_err(InterfacesError::List)? {
            let name = entry.interface_name.clone();
            let interface = by_name.entry(name.clone()).or_insert_with(|| Interface {
                // An interface that vanished meanwhile keeps index 0: no zone can name it.
                index: nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0),
                name,
                addresses: Vec::new(),
                broadcasts: Vec::new(),
            });
            let prefix = |mask: Option<IpAddr>| match mask {
                Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
                Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
                None => 0,
            };
            if let Some(ip) = entry.address.as_ref().and_then(ip_of) {
                let len = prefix(entry.netmask.as_ref().and_then(ip_of));
                interface.addresses.push((ip, len));
                // getifaddrs puts the broadcast address in the same union as a
                // point-to-point peer; only IFF_BROADCAST makes it a broadcast address.
                if entry
                    .flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_BROADCAST)
                {
                    if let Some(IpAddr::V4(b)) = entry.broadcast.as_ref().and_then(ip_of) {
                        interface.broadcasts.push(b);
                    }
                }
            }
        }
        Ok(HostInterfaces::new(by_name.into_values().collect()))
    }

    /// Interfaces given explicitly (tests; a namespace described elsewhere).
    pub fn new(interfaces: Vec<Interface>) -> HostInterfaces {
        HostInterfaces { interfaces }
    }

    /// The interface names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.interfaces.iter().map(|i| i.name.as_str()).collect()
    }

    /// Classifies `ip` (as it goes on the wire: an IPv4-mapped address is classified as its
    /// IPv4 address) for a probe through `scope` (IPv6 link-local only).
    pub fn classify(&self, ip: IpAddr, scope: Option<u32>) -> Class {
        let wire = on_the_wire(ip);
        if let Some(class) = fixed_class(wire, scope.is_some()) {
            return class;
        }
        for interface in &self.interfaces {
            for &(own, len) in &interface.addresses {
                let same = match (own, wire) {
                    // A link-local address is only this host's on its own interface.
                    (IpAddr::V6(o), IpAddr::V6(w)) if is_v6_link_local(&w) => {
                        o == w && scope == Some(interface.index)
                    }
                    (o, w) => o == w,
                };
                if same {
                    return Class::Own {
                        interface: interface.name.clone(),
                    };
                }
                if let (IpAddr::V4(o), IpAddr::V4(w)) = (own, wire) {
                    // Linux adds a broadcast route for the all-ones host part of every
                    // subnet up to /30 (fib_add_ifaddr), configured `brd` or not.
                    if len <= 30 {
                        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                        if u32::from(w) == u32::from(o) | !mask {
                            return Class::DirectedBroadcast {
                                interface: interface.name.clone(),
                            };
                        }
                    }
                }
            }
            if let IpAddr::V4(w) = wire {
                if interface.broadcasts.contains(&w) {
                    return Class::DirectedBroadcast {
                        interface: interface.name.clone(),
                    };
                }
            }
        }
        Class::Egress
    }

    /// The interface a zone names: an interface name, or an index in decimal (RFC 4007 11.2).
    pub fn scope(&self, zone: &str) -> Option<Scope> {
        let index: Option<u32> = zone.parse().ok();
        self.interfaces
            .iter()
            .find(|i| Some(i.index) == index || i.name == zone)
            .filter(|i| i.index != 0)
            .map(|i| Scope {
                interface: i.name.clone(),
                index: i.index,
            })
    }

    /// Checks an address given literally, for a target that opted in to local destinations
    /// (`local`) or not; returns where to connect.
    pub fn check_literal(&self, literal: &Literal, local: bool) -> Result<Checked, LiteralError> {
        literal.check_syntax(local)?;
        let scope = match &literal.zone {
            Some(zone) => Some(
                self.scope(zone)
                    .ok_or_else(|| LiteralError::NoSuchInterface {
                        literal: literal.to_string(),
                        zone: zone.clone(),
                        known: self.names().join(", "),
                    })?,
            ),
            None => None,
        };
        let class = self.classify(literal.ip, scope.as_ref().map(|s| s.index));
        literal.admit(class.clone(), local)?;
        Ok(Checked {
            wire: on_the_wire(literal.ip),
            scope,
            class,
        })
    }
}

fn ip_of(storage: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        storage.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

/// A literal address that passed [`HostInterfaces::check_literal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The address on the wire ([`on_the_wire`]).
    pub wire: IpAddr,
    /// The interface of an IPv6 link-local address.
    pub scope: Option<Scope>,
    /// [`Class::Egress`], or (opted in) [`Class::Loopback`] / [`Class::Own`].
    pub class: Class,
}

/// An address as written in a scenario (`address = [...]`) or on the command line
/// (`--addr`): an IP address, with a zone (`%eth0`, RFC 4007 11) for IPv6 link-local.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Literal {
    /// The address as written (an IPv4-mapped address stays mapped here).
    pub ip: IpAddr,
    /// The zone: an interface name or index.
    pub zone: Option<String>,
}

impl Literal {
    /// A literal without a zone.
    pub fn new(ip: IpAddr) -> Literal {
        Literal { ip, zone: None }
    }

    /// The checks that need no namespace: not a destination at all (unspecified,
    /// multicast, limited broadcast), loopback without the opt-in, and zones (a link-local
    /// IPv6 address needs one, nothing else may have one).
    pub fn check_syntax(&self, local: bool) -> Result<(), LiteralError> {
        let wire = on_the_wire(self.ip);
        if self.zone.is_some() && !matches!(wire, IpAddr::V6(v6) if is_v6_link_local(&v6)) {
            return Err(LiteralError::ZoneNotLinkLocal {
                literal: self.to_string(),
            });
        }
        match fixed_class(wire, self.zone.is_some()) {
            Some(class) => self.admit(class, local),
            None => Ok(()),
        }
    }

    /// Whether a destination of `class` may be probed (`local`: the target opted in).
    fn admit(&self, class: Class, local: bool) -> Result<(), LiteralError> {
        match class {
            Class::Egress => Ok(()),
            Class::Loopback | Class::Own { .. } if local => Ok(()),
            Class::Loopback | Class::Own { .. } => Err(LiteralError::Local {
                literal: self.to_string(),
                class,
            }),
            Class::LinkLocal => Err(LiteralError::NeedsZone {
                literal: self.to_string(),
            }),
            class => Err(LiteralError::NotADestination {
                literal: self.to_string(),
                class,
            }),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.zone {
            Some(zone) => write!(f, "{}%{zone}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_ZONE_LEN: usize = 15;

impl FromStr for Literal {
    type Err = LiteralError;

    fn from_str(text: &str) -> Result<Literal, LiteralError> {
        let text = text.trim();
        let not_an_address = || LiteralError::NotAnAddress {
            text: text.to_string(),
        };
        let (ip, zone) = match text.split_once('%') {
            Some((ip, zone)) => (ip, Some(zone)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| not_an_address())?;
        let zone = match zone {
            None => None,
            Some(zone)
                if !zone.is_empty()
                    && zone.len() <= MAX_ZONE_LEN
                    && zone
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'%') =>
            {
                Some(zone.to_string())
            }
            Some(_) => return Err(not_an_address()),
        };
        Ok(Literal { ip, zone })
    }
}

/// Why a literal address cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    /// Not `IP` or `IPv6%ZONE`.
    #[error("`{text}` is not an IP address (an IPv6 link-local address takes its interface: fe80::1%eth0)")]
    NotAnAddress {
        /// The text given.
        text: String,
    },
    /// Unspecified, multicast or broadcast: never a destination.
    #[error("`{literal}` is {}; not a destination to probe", .class.describe())]
    NotADestination {
        /// The literal.
        literal: String,
        /// What it is.
        class: Class,
    },
    /// Loopback or the host's own, without the opt-in.
    #[error(
        "`{literal}` is {}, so it proves nothing about the egress firewall; to probe it \
         anyway (it is never a pass), opt in with `local = true` on the target, or `--local`",
        .class.describe()
    )]
    Local {
        /// The literal.
        literal: String,
        /// Loopback or own.
        class: Class,
    },
    /// IPv6 link-local without a zone.
    #[error(
        "`{literal}` is an IPv6 link-local address (fe80::/10, RFC 4291 2.5.6): name the \
         interface it is on, e.g. `{literal}%eth0` (RFC 4007)"
    )]
    NeedsZone {
        /// The literal.
        literal: String,
    },
    /// A zone on anything but IPv6 link-local.
    #[error(
        "`{literal}`: only an IPv6 link-local address (fe80::/10) takes an interface (`%IFACE`)"
    )]
    ZoneNotLinkLocal {
        /// The literal.
        literal: String,
    },
    /// The zone names no interface of the namespace.
    #[error("`{literal}`: no interface `{zone}` in this network namespace (interfaces: {known})")]
    NoSuchInterface {
        /// The literal.
        literal: String,
        /// The zone given.
        zone: String,
        /// The interfaces there are.
        known: String,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A namespace like the lab's host: `lo`, and `eth0` with 198.51.100.1/24 (broadcast
    /// 198.51.100.255), 2001:db8:100::1/64 and fe80::1/64.
    pub(crate) fn host() -> HostInterfaces {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        HostInterfaces::new(vec![
            Interface {
                name: "lo".into(),
                index: 1,
                addresses: vec![(ip("127.0.0.1"), 8), (ip("::1"), 128)],
                broadcasts: vec![],
            },
            Interface {
                name: "eth0".into(),
                index: 2,
                addresses: vec![
                    (ip("198.51.100.1"), 24),
                    (ip("2001:db8:100::1"), 64),
                    (ip("fe80::1"), 64),
                    (ip("192.0.2.77"), 32),
                ],
                broadcasts: vec![
                    "198.51.100.255".parse().unwrap(),
                    "10.9.9.9".parse().unwrap(),
                ],
            },
        ])
    }

    fn own(interface: &str) -> Class {
        Class::Own {
            interface: interface.into(),
        }
    }

    #[test]
    fn classification_table() {
        let host = host();
        let directed = Class::DirectedBroadcast {
            interface: "eth0".into(),
        };
        let table: &[(&str, Option<u32>, Class)] = &[
            ("0.0.0.0", None, Class::Unspecified),
            ("0.1.2.3", None, Class::Unspecified),
            ("::", None, Class::Unspecified),
            ("127.0.0.1", None, Class::Loopback),
            ("127.255.0.9", None, Class::Loopback),
            ("::1", None, Class::Loopback),
            ("198.51.100.1", None, own("eth0")),
            ("2001:db8:100::1", None, own("eth0")),
            ("192.0.2.77", None, own("eth0")),
            ("fe80::1", None, Class::LinkLocal),
            ("fe80::1", Some(2), own("eth0")),
            ("fe80::1", Some(1), Class::Egress),
            ("fe80::2", Some(2), Class::Egress),
            ("febf::1", None, Class::LinkLocal),
            ("fec0::1", None, Class::Egress),
            ("224.0.0.1", None, Class::Multicast),
            ("239.255.255.250", None, Class::Multicast),
            ("ff02::1", None, Class::Multicast),
            ("ff02::1", Some(2), Class::Multicast),
            ("255.255.255.255", None, Class::LimitedBroadcast),
            ("198.51.100.255", None, directed.clone()),
            ("10.9.9.9", None, directed),
            // Mapped addresses are what they carry.
            ("::ffff:0.0.0.0", None, Class::Unspecified),
            ("::ffff:127.0.0.1", None, Class::Loopback),
            ("::ffff:198.51.100.1", None, own("eth0")),
            ("::ffff:224.0.0.1", None, Class::Multicast),
            ("::ffff:203.0.113.10", None, Class::Egress),
            // Ordinary destinations, however special their range.
            ("10.0.0.1", None, Class::Egress),
            ("192.168.1.1", None, Class::Egress),
            ("198.51.100.2", None, Class::Egress),
            ("198.51.100.0", None, Class::Egress),
            ("192.0.2.1", None, Class::Egress),
            ("169.254.169.254", None, Class::Egress),
            ("100.64.0.1", None, Class::Egress),
            ("2001:db8::1", None, Class::Egress),
            ("fd00::1", None, Class::Egress),
            ("64:ff9b::cb00:710a", None, Class::Egress),
            ("2002:cb00:710a::1", None, Class::Egress),
            ("::203.0.113.10", None, Class::Egress),
        ];
        for (text, scope, class) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(&host.classify(ip, *scope), class, "{text} scope {scope:?}");
        }
    }

    #[test]
    fn mapped_addresses_go_out_as_ipv4() {
        let mapped: IpAddr = "::ffff:203.0.113.10".parse().unwrap();
        assert!(is_mapped(mapped));
        assert_eq!(
            on_the_wire(mapped),
            "203.0.113.10".parse::<IpAddr>().unwrap()
        );
        for same in [
            "203.0.113.10",
            "::203.0.113.10",
            "2001:db8::1",
            "64:ff9b::1",
        ] {
            let ip: IpAddr = same.parse().unwrap();
            assert!(!is_mapped(ip), "{same}");
            assert_eq!(on_the_wire(ip), ip, "{same}");
        }
    }

    #[test]
    fn notes_for_ipv6_that_carries_ipv4() {
        let n = |s: &str| note(s.parse().unwrap());
        assert!(n("64:ff9b::cb00:710a").unwrap().contains("RFC 6052"));
        assert!(n("64:ff9b:1::1").unwrap().contains("RFC 8215"));
        assert!(n("2002:cb00:710a::1").unwrap().contains("RFC 3056"));
        assert!(n("::203.0.113.10").unwrap().contains("RFC 4291 2.5.5.1"));
        for none in ["::", "::1", "2001:db8::1", "203.0.113.10", "::ffff:1.2.3.4"] {
            assert_eq!(n(none), None, "{none}");
        }
    }

    #[test]
    fn literals_parse_with_zones() {
        let l: Literal = "fe80::1%eth0".parse().unwrap();
        assert_eq!(l.zone.as_deref(), Some("eth0"));
        assert_eq!(l.to_string(), "fe80::1%eth0");
        assert_eq!(
            " 192.0.2.1 ".parse::<Literal>().unwrap(),
            Literal::new("192.0.2.1".parse().unwrap())
        );
        for bad in [
            "fe80::1%",
            "1.2.3",
            "fe80::1%a/b",
            "fe80::1%averyverylongname0",
            "",
        ] {
            assert!(
                matches!(
                    bad.parse::<Literal>(),
                    Err(LiteralError::NotAnAddress { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn literal_checks_table() {
        let host = host();
        // (literal, local opted in, Ok(class) or the error's variant name)
        let table: &[(&str, bool, Result<&str, &str>)] = &[
            ("203.0.113.10", false, Ok("egress")),
            ("::ffff:203.0.113.10", false, Ok("egress")),
            ("169.254.169.254", false, Ok("egress")),
            ("0.0.0.0", false, Err("NotADestination")),
            ("0.0.0.0", true, Err("NotADestination")),
            ("::", true, Err("NotADestination")),
            ("224.0.0.1", true, Err("NotADestination")),
            ("ff02::1%eth0", true, Err("ZoneNotLinkLocal")),
            ("255.255.255.255", false, Err("NotADestination")),
            ("198.51.100.255", true, Err("NotADestination")),
            ("127.0.0.1", false, Err("Local")),
            ("127.0.0.1", true, Ok("loopback")),
            ("::ffff:127.0.0.1", false, Err("Local")),
            ("::1", true, Ok("loopback")),
            ("198.51.100.1", false, Err("Local")),
            ("198.51.100.1", true, Ok("own")),
            ("fe80::1", false, Err("NeedsZone")),
            ("fe80::1", true, Err("NeedsZone")),
            ("fe80::1%eth0", false, Err("Local")),
            ("fe80::1%eth0", true, Ok("own")),
            ("fe80::2%eth0", false, Ok("egress")),
            ("fe80::2%2", false, Ok("egress")),
            ("fe80::2%eth9", false, Err("NoSuchInterface")),
            ("fe80::2%7", false, Err("NoSuchInterface")),
            ("2001:db8::1%eth0", false, Err("ZoneNotLinkLocal")),
        ];
        for (text, local, want) in table {
            let literal: Literal = text.parse().unwrap();
            let got = host.check_literal(&literal, *local);
            let got = match &got {
                Ok(checked) => Ok(checked.class.name()),
                Err(e) => Err(match e {
                    LiteralError::NotAnAddress { .. } => "NotAnAddress",
                    LiteralError::NotADestination { .. } => "NotADestination",
                    LiteralError::Local { .. } => "Local",
                    LiteralError::NeedsZone { .. } => "NeedsZone",
                    LiteralError::ZoneNotLinkLocal { .. } => "ZoneNotLinkLocal",
                    LiteralError::NoSuchInterface { .. } => "NoSuchInterface",
                }),
            };
            assert_eq!(&got, want, "{text} local={local}");
        }
        let checked = host
            .check_literal(&"fe80::2%eth0".parse().unwrap(), false)
            .unwrap();
        assert_eq!(
            checked.scope,
            Some(Scope {
                interface: "eth0".into(),
                index: 2
            })
        );
        let mapped = host
            .check_literal(&"::ffff:203.0.113.10".parse().unwrap(), false)
            .unwrap();
        assert_eq!(mapped.wire, "203.0.113.10".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn syntax_checks_need_no_namespace() {
        let check = |s: &str, local| s.parse::<Literal>().unwrap().check_syntax(local);
        assert!(check("127.0.0.1", true).is_ok());
        assert!(
            check("198.51.100.1", false).is_ok(),
            "own needs the namespace"
        );
        assert!(
            check("fe80::1%eth9", false).is_ok(),
            "zones need the namespace"
        );
        let err = check("fe80::1", false).unwrap_err().to_string();
        assert!(err.contains("fe80::1%eth0"), "{err}");
        let err = check("127.0.0.1", false).unwrap_err().to_string();
        assert!(
            err.contains("local = true") && err.contains("--local"),
            "{err}"
        );
    }

    #[test]
    fn the_current_namespace_has_loopback() {
        let host = HostInterfaces::current().unwrap();
        assert!(host.names().contains(&"lo"), "{:?}", host.names());
        assert!(host.scope("lo").is_some());
    }
}
