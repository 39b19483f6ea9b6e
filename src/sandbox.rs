//! `egress-check sandbox`: a [`Lab`] whose simulated internet answers every
//! name (the catch-all [`Zone`]) with one sink address per family.
//!
//! Address plan (see [`crate::lab`]): link 192.0.2.0/30 and 2001:db8:ec::/64
//! ([`Link::SANDBOX`]); sinks 198.51.100.25 and 2001:db8:25::25 on the
//! internet's `lo`, listening on every port the scenarios use. DNS answers:
//! `MX` for any name `N` → `mx.N`; `A` → 198.51.100.25; `AAAA` →
//! 2001:db8:25::25 (`--no-a` / `--no-aaaa` switch a family off: NODATA).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::lab::RuleSource;
use crate::lab::{self, Lab, LabError, LabSpec, Link, Serving, Zone};

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
}

/// The lab a sandbox with `opts` runs in.
pub fn spec(opts: &SandboxOptions) -> LabSpec {
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
    }

    #[test]
    fn sinks_use_documentation_ranges() {
        assert_eq!(&SINK4.octets()[..3], &[198, 51, 100]);
        assert_eq!(&SINK6.segments()[..2], &[0x2001, 0xdb8]);
    }
}
