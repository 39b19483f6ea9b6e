//! `egress-check sandbox`: a [`Lab`] whose simulated internet answers every
//! name (the catch-all [`Zone`]) with one sink address per family.
//!
//! Address plan (see [`crate::lab`]): link 192.0.2.0/30 and 2001:db8:ec::/64
//! ([`Link::SANDBOX`]), its host end named `eth0` or `--uplink`'s name, the
//! host's own `--host-addr`s on it; sinks 198.51.100.25 and 2001:db8:25::25 on
//! the internet's `lo`, answering on **every** TCP port ([`SinkMode::AnyPort`]).
//! DNS answers: `MX` for any name `N` → `mx.N`; `A` → 198.51.100.25; `AAAA` →
//! 2001:db8:25::25 (`--no-a` / `--no-aaaa` switch a family off: NODATA), on
//! whatever address the run asks (the scenario's `nameserver`, `--nameserver`,
//! the host's resolv.conf): any address through the internet, a loopback one
//! inside the host namespace.

use std::collections::BTreeSet;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::lab::RuleSource;
use crate::lab::{
    self, HostAddrError, InterfaceNameError, Lab, LabError, LabSpec, Link, Realism, Serving,
    SinkMode, Zone,
};

/// Prefix of every sandbox namespace name: `ecsb-<pid>-<n>-h` / `-i`.
pub const PREFIX: &str = "ecsb";
/// Sink address every A query is answered with.
pub const SINK4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
/// Sink address every AAAA query is answered with.
pub const SINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

/// What a sandbox must provide.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// TCP ports the sinks listen on (both sink addresses).
    pub ports: BTreeSet<u16>,
    /// Answer `A` queries (with the IPv4 sink); `false` gives NODATA (`--no-a`).
    pub answer_a: bool,
    /// Answer `AAAA` queries (with the IPv6 sink); `false` gives NODATA (`--no-aaaa`).
    pub answer_aaaa: bool,
    /// Rules to load into the host namespace, in this order.
    pub rules: Vec<RuleSource>,
    /// Name of the host end of the link (`--uplink`); `None`: `eth0`.
    pub uplink: Option<String>,
    /// The host's own addresses (`--host-addr`), in the order given.
    pub host_addrs: Vec<IpAddr>,
    /// Every nameserver the run will ask: each is answered by the
    /// simulated DNS, a loopback one inside the host namespace.
    pub nameservers: Vec<SocketAddr>,
}

/// `--host-addr`'s value cannot be one of the sandbox host's addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostAddrArgError {
    /// Not an IP address.
    #[error("`{text}` is not an IP address ({error})")]
    NotAnAddress {
        /// The value given.
        text: String,
        /// Why it does not parse.
        error: AddrParseError,
    },
    /// An address the sandbox host cannot own.
    #[error(transparent)]
    Unusable(#[from] HostAddrError),
}

/// `--host-addr IP`: an ordinary unicast address of either family that the
/// sandbox does not use itself.
pub fn parse_host_addr(text: &str) -> Result<IpAddr, HostAddrArgError> {
    let addr = text
        .trim()
        .parse::<IpAddr>()
        .map_err(|error| HostAddrArgError::NotAnAddress {
            text: text.escape_default().to_string(),
            error,
        })?;
    lab::valid_host_addr(addr, &Link::SANDBOX, &[SINK4.into(), SINK6.into()])?;
    Ok(addr)
}

/// `--uplink NAME`: a valid interface name other than `lo`.
pub fn parse_uplink(text: &str) -> Result<String, InterfaceNameError> {
    lab::valid_interface_name(text)?;
    Ok(text.to_owned())
}

/// The lab a sandbox with `opts` runs in.
pub fn spec(opts: &SandboxOptions) -> LabSpec {
    // Port 53 of any address always reaches the simulated DNS, and so does each
    // non-loopback nameserver's own port; a loopback nameserver is served in the
    // host namespace (loopback traffic never leaves it).
    let (host_dns, remote): (Vec<SocketAddr>, Vec<SocketAddr>) = opts
        .nameservers
        .iter()
        .partition(|server| server.ip().is_loopback());
    let mut dns_ports: BTreeSet<u16> = remote.iter().map(SocketAddr::port).collect();
    dns_ports.insert(53);
    let mut host_dns_unique = Vec::new();
    for server in host_dns {
        if !host_dns_unique.contains(&server) {
            host_dns_unique.push(server);
        }
    }
    LabSpec {
        prefix: PREFIX,
        link: Link::SANDBOX,
        zone: Zone::CatchAll {
            a: opts.answer_a.then_some(SINK4),
            aaaa: opts.answer_aaaa.then_some(SINK6),
        },
        sinks: vec![IpAddr::V4(SINK4), IpAddr::V6(SINK6)],
        anyip: Vec::new(),
        ports: opts.ports.clone(),
        dns_layer: None,
        resolv_conf: false,
        realism: Realism {
            uplink: opts.uplink.clone(),
            host_addrs: opts.host_addrs.clone(),
            sinks: SinkMode::AnyPort,
            dns_ports,
            host_dns: host_dns_unique,
        },
    }
}

/// Checks root and the rule files, builds the lab, then loads `opts.rules`
/// into its host namespace in order. On any error everything created so far
/// is torn down before returning. Blocking; needs root.
///
/// The internet is served by a separate process of this binary that drops to
/// `nobody` once bound ([`Serving::Process`]): only the `egress-check`
/// binary builds a sandbox, so `/proc/self/exe` is that binary.
pub fn create(opts: &SandboxOptions) -> Result<Lab, LabError> {
    lab::preflight()?;
    for rule in &opts.rules {
        rule.check()?;
    }
    let serving = Serving::Process("/proc/self/exe".into());
    let lab = Lab::create_with(spec(opts), &serving)?;
    for rule in &opts.rules {
        lab.load(rule)?;
    }
    Ok(lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_follows_options() {
        let opts = SandboxOptions {
            ports: [587, 25].into_iter().collect(),
            answer_a: true,
            answer_aaaa: false,
            rules: vec![],
            uplink: Some("ens3".into()),
            host_addrs: vec!["203.0.113.5".parse().unwrap()],
            nameservers: vec![
                "9.9.9.9:53".parse().unwrap(),
                "[2620:fe::fe]:5353".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ],
        };
        let spec = spec(&opts);
        assert_eq!(spec.prefix, "ecsb");
        assert_eq!(spec.link, Link::SANDBOX);
        assert!(matches!(
            spec.zone,
            Zone::CatchAll {
                a: Some(SINK4),
                aaaa: None
            }
        ));
        assert_eq!(spec.ports.into_iter().collect::<Vec<_>>(), [25, 587]);
        assert_eq!(spec.sinks, [IpAddr::V4(SINK4), IpAddr::V6(SINK6)]);
        assert!(spec.anyip.is_empty() && spec.dns_layer.is_none() && !spec.resolv_conf);
        assert_eq!(spec.realism.sinks, SinkMode::AnyPort);
        assert_eq!(spec.realism.uplink.as_deref(), Some("ens3"));
        assert_eq!(spec.realism.dns_ports, [53, 5353].into());
        assert_eq!(
            spec.realism.host_dns,
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn uplinks_and_host_addresses_are_checked_naming_the_value() {
        assert_eq!(parse_uplink("ens3").unwrap(), "ens3");
        for bad in ["", "lo", "a/b", "eth 0", "x:1", "..", "sixteen-chars-xx"] {
            let err = parse_uplink(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(
            parse_host_addr("203.0.113.5").unwrap(),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert!(parse_host_addr("2001:db8:5::5").is_ok());
        for bad in [
            "203.0.113",
            "127.0.0.1",
            "::",
            "fe80::1",
            "224.0.0.1",
            "::ffff:1.2.3.4",
            "192.0.2.2",
            "2001:db8:ec::77",
            "198.51.100.25",
        ] {
            let err = parse_host_addr(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn sinks_use_documentation_ranges() {
        assert_eq!(&SINK4.octets()[..3], &[198, 51, 100]);
        assert_eq!(&SINK6.segments()[..2], &[0x2001, 0xdb8]);
    }
}
