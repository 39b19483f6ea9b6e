//! The internet namespace's own netfilter rules, for the sandbox's realism
//! ([`super::Realism`]): every TCP port of every sink answers, and DNS to any
//! address is answered by the lab's server. Loaded with `nft -f -` into the
//! internet namespace (never the host's: the ruleset under test is alone
//! there), and gone with the namespace.
//!
//! - **Any-port sinks (TPROXY).** A rule at the `mangle` priority of
//!   `prerouting` hands every TCP segment to a sink address to the
//!   transparent listener on port [`ANY_PORT`] of its family
//!   (`tproxy ip to :9`): the kernel looks up an established socket first, else
//!   that listener, which must have `IP_TRANSPARENT`/`IPV6_TRANSPARENT`
//!   set, and the accepted socket keeps the original destination address and
//!   port. The rule also marks the segment, and policy routing
//!   (`fwmark 1 lookup 100`, `local 0.0.0.0/0 dev lo table 100`, both
//!   families) delivers marked segments locally whatever their destination,
//!   as TPROXY needs for addresses that are not the namespace's own.
//! - **DNS on any address (DNAT).** UDP and TCP to the DNS ports of any
//!   address that is not the internet's own (`fib daddr type local`) are
//!   rewritten to port 53 of the lab's DNS server on the link, per family.
//!   Conntrack undoes the rewrite in the replies, so they come from the
//!   address the host asked (`9.9.9.9`) as on the real network. TPROXY would
//!   not do for UDP: the server's reply would leave from its own address.
//! - **No conntrack for the rest.** A `nat` chain turns connection tracking on
//!   in the namespace for every packet; the sinks' traffic does not need it,
//!   and a sweep's 131,070 connections would take that many more entries of the
//!   conntrack table, whose size (`nf_conntrack_max`) all namespaces share.
//!   So everything but DNS is `notrack` at the `raw` priority.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use super::pair;
use super::LabError;

/// The port of the transparent sink listeners (`discard`: nothing else
/// listens on it in the internet).
pub(crate) const ANY_PORT: u16 = 9;
/// The mark of segments handed to the transparent listeners.
const MARK: u32 = 1;
/// The routing table that delivers marked segments locally.
const TABLE: &str = "100";
/// The nftables table in the internet namespace.
const NFT_TABLE: &str = "egress_check_lab";

/// What the internet's rules do.
pub(crate) struct Plan<'a> {
    /// Any-port sinks on these addresses; `None`: no TPROXY.
    pub(crate) any_port: Option<&'a [IpAddr]>,
    /// Ports on which DNS to any address goes to the lab's server.
    pub(crate) dns_ports: &'a BTreeSet<u16>,
    /// The lab's DNS server, IPv4 (port 53).
    pub(crate) dns4: Ipv4Addr,
    /// The lab's DNS server, IPv6 (port 53).
    pub(crate) dns6: Ipv6Addr,
}

/// The nftables ruleset for `plan`.
pub(crate) fn ruleset(plan: &Plan<'_>) -> String {
    let mut nft = format!("table inet {NFT_TABLE} {{\n");
    let ports = |set: &BTreeSet<u16>| {
        set.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Conntrack only for DNS that is rewritten: queries to the DNS ports, and
    // the server's replies (from port 53).
    let dns = ports(plan.dns_ports);
    nft.push_str(
        "  chain raw_prerouting {\n    type filter hook prerouting priority raw; policy accept;\n",
    );
    if !dns.is_empty() {
        let _ = writeln!(
            nft,
            "    meta l4proto {{ tcp, udp }} th dport {{ {dns} }} return"
        );
    }
    nft.push_str("    notrack\n  }\n");
    nft.push_str(
        "  chain raw_output {\n    type filter hook output priority raw; policy accept;\n",
    );
    if !dns.is_empty() {
        nft.push_str("    meta l4proto { tcp, udp } th sport 53 return\n");
    }
    nft.push_str("    notrack\n  }\n");
    if let Some(sinks) = plan.any_port {
        nft.push_str(
            "  chain sinks {\n    type filter hook prerouting priority mangle; policy accept;\n",
        );
        let list = |v4: bool| {
            sinks
                .iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (v4, family) in [(true, "ip"), (false, "ip6")] {
            let addrs = list(v4);
            if !addrs.is_empty() {
                let _ = writeln!(
                    nft,
                    "    meta l4proto tcp {family} daddr {{ {addrs} }} \
                     tproxy {family} to :{ANY_PORT} meta mark set {MARK} accept"
                );
            }
        }
        nft.push_str("  }\n");
    }
    if !dns.is_empty() {
        nft.push_str(
            "  chain dns {\n    type nat hook prerouting priority dstnat; policy accept;\n",
        );
        // The internet's own addresses (the link's, the sinks') are served
        // as they are.
        nft.push_str("    fib daddr type local return\n");
        let _ = writeln!(
            nft,
            "    meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport {{ {dns} }} \
             dnat ip to {}:53",
            plan.dns4
        );
        let _ = writeln!(
            nft,
            "    meta nfproto ipv6 meta l4proto {{ tcp, udp }} th dport {{ {dns} }} \
             dnat ip6 to [{}]:53",
            plan.dns6
        );
        nft.push_str("  }\n");
    }
    nft.push_str("}\n");
    nft
}

/// Loads the rules of `plan` into namespace `internet`, with the policy
/// routing TPROXY needs.
pub(crate) fn install(internet: &str, plan: &Plan<'_>) -> Result<(), LabError> {
    if plan.any_port.is_some() {
        let mark = MARK.to_string();
        for family in ["-4", "-6"] {
            pair::run(
                "ip",
                &[
                    "-n", internet, family, "rule", "add", "fwmark", &mark, "lookup", TABLE,
                ],
            )?;
            let everything = if family == "-4" { "0.0.0.0/0" } else { "::/0" };
            pair::run(
                "ip",
                &[
                    "-n", internet, family, "route", "add", "local", everything, "dev", "lo",
                    "table", TABLE,
                ],
            )?;
        }
    }
    nft_in(internet, &ruleset(plan))
}

/// `ip netns exec NAME nft -f -` with `rules` on stdin.
fn nft_in(name: &str, rules: &str) -> Result<(), LabError> {
    let args = ["netns", "exec", name, "nft", "-f", "-"];
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| LabError::Spawn {
            program: "ip".into(),
            error,
        })?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(rules.as_bytes()));
    let out = child.wait_with_output().map_err(|error| LabError::Io {
        context: "waiting for nft in the internet namespace".into(),
        error,
    })?;
    if out.status.success() {
        if let Some(Err(error)) = written {
            return Err(LabError::Io {
                context: "writing the internet's rules to nft".into(),
                error,
            });
        }
        return Ok(());
    }
    Err(LabError::Command {
        command: format!("ip {} <<'EOF'\n{rules}EOF", args.join(" ")),
        status: out.status,
        output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_tracks_only_dns_and_hands_sinks_to_the_transparent_listeners() {
        let sinks: Vec<IpAddr> = vec![
            "198.51.100.25".parse().unwrap(),
            "2001:db8:25::25".parse().unwrap(),
        ];
        let ports: BTreeSet<u16> = [53, 5353].into();
        let text = ruleset(&Plan {
            any_port: Some(&sinks),
            dns_ports: &ports,
            dns4: "192.0.2.1".parse().unwrap(),
            dns6: "2001:db8:ec::1".parse().unwrap(),
        });
        for line in [
            "meta l4proto { tcp, udp } th dport { 53, 5353 } return",
            "meta l4proto tcp ip daddr { 198.51.100.25 } tproxy ip to :9 meta mark set 1 accept",
            "meta l4proto tcp ip6 daddr { 2001:db8:25::25 } tproxy ip6 to :9 meta mark set 1 accept",
            "th dport { 53, 5353 } dnat ip to 192.0.2.1:53",
            "th dport { 53, 5353 } dnat ip6 to [2001:db8:ec::1]:53",
            "fib daddr type local return",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // Without DNS ports: everything untracked, no nat chain at all.
        let none = BTreeSet::new();
        let text = ruleset(&Plan {
            any_port: Some(&sinks),
            dns_ports: &none,
            dns4: "192.0.2.1".parse().unwrap(),
            dns6: "2001:db8:ec::1".parse().unwrap(),
        });
        assert!(!text.contains("nat") && !text.contains("return"), "{text}");
    }
}
