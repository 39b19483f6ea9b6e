//! Throwaway network labs: the one simulated internet behind
//! `egress-check sandbox`, the integration tests (through the test kit,
//! `testkit/`) and the benchmark.
//!
//! A [`Lab`] is a fresh pair of network namespaces, the *host* under test and
//! a simulated *internet*, joined by a veth pair (`eth0` at both ends, unless
//! [`Realism::uplink`] names the host's end) with
//! IPv4 and IPv6 addresses and default routes from the host to the internet.
//! Firewall rules are loaded into the host namespace only ([`Lab::load`]).
//! The internet's services run where [`Serving`] says, both backends running
//! the same code with a current-thread tokio runtime inside the internet
//! namespace ([`internet_process`] has the why):
//! - [`Serving::Thread`] ([`Lab::create`]): a thread of the calling process
//!   that has entered the internet namespace ([`NetnsThread`]; namespaces are
//!   per thread and sockets keep theirs). It keeps the caller's privileges,
//!   and it is what the test kit and the benchmark use: they need
//!   [`DnsLayer`]s (code) and [`Lab::add_sink`] at run time.
//! - [`Serving::Process`] ([`Lab::create_with`]): a separate process of this
//!   binary (`__serve-internet`, [`INTERNET_SUBCOMMAND`]) that binds its
//!   sockets, drops to `nobody`, fences itself and serves until the lab is
//!   torn down; its configuration crosses as a bounded message ([`Config`]).
//!   `egress-check sandbox` uses it, so that nothing of root parses what the
//!   host namespace sends.
//!
//! The services:
//! - a DNS server (hickory-server) on UDP and TCP port 53 of both internet
//!   link addresses, answering from a [`Zone`] (explicit records, or the
//!   sandbox's catch-all), optionally behind a [`DnsLayer`] (test faults);
//! - TCP sinks that greet with `220 sandbox.invalid ESMTP egress-check
//!   sandbox` and close, in one of three modes ([`SinkMode`]): on every port
//!   of [`LabSpec::ports`] of each sink address (the tests' lab: the other
//!   ports reset); on those ports of the wildcard addresses of both families
//!   when the lab has AnyIP ranges (the benchmark), so that every local
//!   address answers; or on **every** TCP port of every sink address
//!   (the sandbox), through one transparent listener per family that
//!   nftables' TPROXY hands every connection to (`netfilter.rs`).
//!
//! Sinks are host addresses (/32, /128) on the internet's `lo`; an AnyIP
//! range is a local route (`ip route add local 203.0.113.0/24 dev lo`), which
//! makes the kernel accept every address of the range as its own.
//!
//! What makes the sandbox behave like the real network for a real ruleset
//! ([`Realism`]): the host end of the link can carry the host's real
//! interface name and its own addresses (so `-o ens3` and `-s 203.0.113.5`
//! match), and DNS to *any* address (the nameserver the scenario or the
//! host's resolv.conf names, `9.9.9.9`, say) is answered by the lab's server
//! through a DNAT in the internet, so address-based DNS rules decide as on
//! the host. A loopback resolver (`127.0.0.53`) cannot be reached across
//! namespaces; the lab's DNS then also answers on it inside the host
//! namespace, served the same way as the internet (for the sandbox: a second
//! internet process, in the host namespace, that drops to `nobody` once bound).
//!
//! Address plans (documentation ranges only; nothing leaves the namespaces):
//!
//! | lab                     | link, internet end (gateway, DNS)    | link, host end                       | sinks                                              |
//! |-------------------------|--------------------------------------|--------------------------------------|----------------------------------------------------|
//! | sandbox (`ecsb`), [`Link::SANDBOX`] | 192.0.2.1/30, 2001:db8:ec::1/64 | 192.0.2.2/30, 2001:db8:ec::2/64 (+ `--host-addr`s) | 198.51.100.25, 2001:db8:25::25, every TCP port |
//! | tests (`ect`), test kit | 198.51.100.2/24, 2001:db8:100::2/64  | 198.51.100.1/24, 2001:db8:100::1/64  | 203.0.113.10-12, 2001:db8:200::10-12 (+ per test)  |
//! | benchmark (`ecb`), `bench/` | 198.51.100.2/24, 2001:db8:100::2/64 | 198.51.100.1/24, 2001:db8:100::1/64 | AnyIP 203.0.113.0/24, 2001:db8:200::/64        |
//!
//! Namespace names are `PREFIX-PID-N-h` (host) and `PREFIX-PID-N-i`
//! (internet); [`reap_stale`] removes those of processes that died without
//! tearing down. With [`LabSpec::resolv_conf`], `/etc/netns/HOST/resolv.conf`
//! names the lab's DNS server, so `ip netns exec HOST ...` resolves with it.
//!
//! Teardown (explicit [`Lab::teardown`], or best effort on drop, which also
//! covers errors half-way through [`Lab::create`] and panics): stop the
//! internet thread (or close the internet process's stdin, then kill and
//! reap it if it does not end), kill anything left in either namespace,
//! `ip netns del` both (which destroys the veth pair), remove
//! `/etc/netns/HOST`. If the process is killed instead, its internet thread
//! dies with it, and an internet process gets SIGKILL from the kernel
//! (`PR_SET_PDEATHSIG`); only the namespaces remain, for [`reap_stale`].

mod dns;
mod internet;
pub mod internet_process;
mod netfilter;
mod pair;
mod rules;
mod sink;
mod thread;
mod zone;

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

pub use crate::netns::path_of as netns_path;
pub use dns::{DnsAction, DnsLayer};
pub use hickory_server::proto::rr::RecordType;
pub use internet_process::{
    internet_main, Config, InternetArgs, InternetProcessError, Serving, INTERNET_SUBCOMMAND,
};
pub use pair::{reap_stale, IFACE};
pub use rules::RuleSource;
pub use sink::{bind_tcp, BANNER};
pub use thread::{NetnsThread, ThreadError};
pub use zone::{Answer, Records, Zone, ZoneError};

/// How long [`Lab::add_sink`] waits for the internet to listen.
const ADD_SINK_TIMEOUT: Duration = Duration::from_secs(15);

/// The veth link's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Host end, IPv4.
    pub host4: Ipv4Addr,
    /// Internet end, IPv4: the host's gateway and the DNS server.
    pub internet4: Ipv4Addr,
    /// IPv4 prefix length of the link.
    pub prefix4: u8,
    /// Host end, IPv6.
    pub host6: Ipv6Addr,
    /// Internet end, IPv6: the host's gateway and the DNS server.
    pub internet6: Ipv6Addr,
    /// IPv6 prefix length of the link.
    pub prefix6: u8,
}

impl Link {
    /// The sandbox's link: 192.0.2.0/30 (TEST-NET-1) and 2001:db8:ec::/64.
    pub const SANDBOX: Link = Link {
        host4: Ipv4Addr::new(192, 0, 2, 2),
        internet4: Ipv4Addr::new(192, 0, 2, 1),
        prefix4: 30,
        host6: Ipv6Addr::new(0x2001, 0xdb8, 0xec, 0, 0, 0, 0, 2),
        internet6: Ipv6Addr::new(0x2001, 0xdb8, 0xec, 0, 0, 0, 0, 1),
        prefix6: 64,
    };
}

/// What a lab provides.
#[derive(Clone)]
pub struct LabSpec {
    /// Namespace name prefix, 1-8 characters of `[a-z0-9]`: `ecsb` (sandbox),
    /// `ect` (tests), `ecb` (benchmark).
    pub prefix: &'static str,
    /// The link's addresses.
    pub link: Link,
    /// What the DNS server answers.
    pub zone: Zone,
    /// Sink addresses put on the internet's `lo` (unless an AnyIP range
    /// covers them).
    pub sinks: Vec<IpAddr>,
    /// AnyIP ranges `(network, prefix length)` routed locally in the
    /// internet; when there is any, the sinks listen on the wildcard
    /// addresses, so every local address answers on [`LabSpec::ports`].
    pub anyip: Vec<(IpAddr, u8)>,
    /// TCP ports the sinks listen on.
    pub ports: BTreeSet<u16>,
    /// Decides per question whether and when the zone answers (tests only).
    pub dns_layer: Option<Arc<dyn DnsLayer>>,
    /// Write `/etc/netns/HOST/resolv.conf` naming the lab's DNS server.
    pub resolv_conf: bool,
    /// What makes the host side and the internet look like a real host's
    /// (the sandbox's); the default changes nothing.
    pub realism: Realism,
}

/// How the internet's sinks listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkMode {
    /// One listener per sink address and port of [`LabSpec::ports`]; the
    /// other ports of a sink reset (the kernel answers a SYN to a closed port
    /// with RST). The wildcard addresses instead when the lab has AnyIP
    /// ranges.
    #[default]
    Listed,
    /// Every TCP port of every sink address answers, without a socket per
    /// port: one `IP_TRANSPARENT` listener per family, and an nftables
    /// `tproxy` rule in the internet that hands it every TCP connection to a
    /// sink address ([`LabSpec::ports`] is then irrelevant).
    AnyPort,
}

/// The sandbox's realism: options that make a lab look like the host a
/// ruleset was written for. [`Realism::default`] is the plain lab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Realism {
    /// Name of the host end of the link; `None`: [`IFACE`] (`eth0`).
    pub uplink: Option<String>,
    /// The host's own addresses besides the link's: put on the uplink, the
    /// first of each family the preferred source (`src`) of that family's
    /// default route, and routed back to the host by the internet.
    pub host_addrs: Vec<IpAddr>,
    /// How the sinks listen.
    pub sinks: SinkMode,
    /// Destination ports on which DNS (UDP and TCP) to **any** address that
    /// is not the internet's own is answered by the lab's DNS server (a DNAT
    /// in the internet); empty: only the link addresses answer DNS.
    pub dns_ports: BTreeSet<u16>,
    /// Loopback addresses (with port) the lab's DNS also answers on inside
    /// the *host* namespace: a resolver like systemd-resolved's stub
    /// `127.0.0.53`, which no packet to the internet could reach.
    pub host_dns: Vec<SocketAddr>,
}

/// Everything that can go wrong creating, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces and firewall rules need root.
    #[error(
        "sandbox needs root (effective uid is {euid}): it creates network namespaces and \
         loads firewall rules; run it with sudo"
    )]
    NotRoot {
        /// The effective uid we run with.
        euid: u32,
    },
    /// The kernel or the environment (a container without CAP_SYS_ADMIN,
    /// say) does not allow creating network namespaces.
    #[error("network namespaces are not available here: {detail}")]
    NetnsUnsupported {
        /// What failed, with the tool's own message.
        detail: String,
    },
    /// The [`LabSpec`] cannot be built.
    #[error("invalid lab: {detail}")]
    InvalidSpec {
        /// What is wrong.
        detail: String,
    },
    /// A program could not be started at all (not installed?).
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not be started.
        error: io::Error,
    },
    /// A plumbing command (`ip ...`) failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr (and stdout).
        output: String,
    },
    /// A rules file or setup script given by the user cannot be read.
    #[error("cannot read {}: {error}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// `iptables-restore`, `ip6tables-restore` or `nft` rejected a file; the
    /// output is the loader's own, which names the offending line.
    #[error("{loader} rejected {} ({status}):\n{}", .path.display(), or_none(.output))]
    RulesLoad {
        /// `iptables-restore`, `ip6tables-restore` or `nft`.
        loader: &'static str,
        /// The rules file.
        path: PathBuf,
        /// The loader's exit status.
        status: ExitStatus,
        /// The loader's stderr and stdout.
        output: String,
    },
    /// The setup script exited unsuccessfully.
    #[error("setup script {} failed ({status}); its output:\n{}", .path.display(), or_none(.output))]
    SetupScript {
        /// The script.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// Its stdout and stderr, interleaved.
        output: String,
    },
    /// A rules loader or setup script did not finish in time (it was killed).
    #[error("{what} did not finish within {}s and was killed; its output:\n{}", .timeout.as_secs(), or_none(.output))]
    Timeout {
        /// What was running.
        what: String,
        /// The limit.
        timeout: Duration,
        /// Output up to the kill.
        output: String,
    },
    /// The simulated internet failed to start.
    #[error("the simulated internet did not start: {0}")]
    Internet(InternetProcessError),
    /// The internet could not listen on a new sink address.
    #[error("cannot add sink {addr}: {error}")]
    AddSink {
        /// The address.
        addr: IpAddr,
        /// Why.
        error: ThreadError,
    },
    /// Local I/O failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        error: io::Error,
    },
    /// Teardown left something behind; each entry says what.
    #[error("sandbox teardown incomplete: {}", .problems.join("; "))]
    Teardown {
        /// What could not be removed, and why.
        problems: Vec<String>,
    },
}

fn or_none(output: &str) -> &str {
    if output.trim().is_empty() {
        "(no output)"
    } else {
        output
    }
}

/// Root and kernel support, checked before touching anything.
pub fn preflight() -> Result<(), LabError> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(LabError::NotRoot {
            euid: euid.as_raw(),
        });
    }
    if let Err(e) = std::fs::metadata("/proc/self/ns/net") {
        return Err(LabError::NetnsUnsupported {
            detail: format!("/proc/self/ns/net: {e} (kernel without CONFIG_NET_NS?)"),
        });
    }
    Ok(())
}

/// Whether `addr` lies in `net/len`.
fn in_range(addr: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn validate(spec: &LabSpec) -> Result<(), LabError> {
    let invalid = |detail: String| Err(LabError::InvalidSpec { detail });
    if !pair::valid_prefix(spec.prefix) {
        return invalid(format!(
            "namespace prefix {:?} must be 1-8 characters of [a-z0-9]",
            spec.prefix
        ));
    }
    for &(net, len) in &spec.anyip {
        let max = if net.is_ipv4() { 32 } else { 128 };
        if len > max {
            return invalid(format!("AnyIP range {net}/{len}: prefix longer than {max}"));
        }
    }
    if !spec.anyip.is_empty() && spec.ports.contains(&53) {
        // The wildcard sink on port 53 would take the DNS server's port.
        return invalid("with AnyIP ranges, port 53 (the lab's DNS) cannot be a sink port".into());
    }
    let realism = &spec.realism;
    if realism.sinks == SinkMode::AnyPort && !spec.anyip.is_empty() {
        return invalid("any-port sinks answer on the sink addresses, not on AnyIP ranges".into());
    }
    if let Some(name) = &realism.uplink {
        if let Err(e) = valid_interface_name(name) {
            return invalid(e.to_string());
        }
    }
    for &addr in &realism.host_addrs {
        if let Err(e) = valid_host_addr(addr, &spec.link, &spec.sinks) {
            return invalid(e.to_string());
        }
    }
    if realism.dns_ports.contains(&0) {
        return invalid("DNS port 0".into());
    }
    for server in &realism.host_dns {
        if !server.ip().is_loopback() {
            return invalid(format!(
                "{server}: the host namespace answers DNS on loopback addresses only \
                 (the internet answers every other address)"
            ));
        }
    }
    Ok(())
}

/// Why a name cannot be a network interface's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    /// Empty, or longer than the kernel's 15 bytes (IFNAMSIZ - 1).
    #[error("interface name `{0}` must be 1 to 15 bytes long (the kernel's IFNAMSIZ)")]
    Length(String),
    /// A character the kernel refuses (`/`, `:`, whitespace), one outside
    /// printable ASCII (rules and messages show the name as is), or `.`/`..`.
    #[error(
        "interface name `{0}` is not allowed: it must be printable ASCII without `/`, `:` or \
         whitespace (which the kernel refuses), and not `.` or `..`"
    )]
    Character(String),
    /// `lo` is the loopback interface, present in every namespace.
    #[error("interface name `{0}` is the loopback interface; the uplink needs another name")]
    Loopback(String),
}

/// Checks a name for the host end of the link as the kernel's
/// `dev_valid_name` does (1-15 bytes; not `.` or `..`; no `/`, `:` or
/// whitespace); printable ASCII only, so that it can be written in rules and
/// messages as is.
pub fn valid_interface_name(name: &str) -> Result<(), InterfaceNameError> {
    if name.is_empty() || name.len() > 15 {
        return Err(InterfaceNameError::Length(
            name.escape_default().to_string(),
        ));
    }
    if name == "."
        || name == ".."
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
    {
        return Err(InterfaceNameError::Character(
            name.escape_default().to_string(),
        ));
    }
    if name == "lo" {
        return Err(InterfaceNameError::Loopback(name.into()));
    }
    Ok(())
}

/// Why an address cannot be one of the host's own in a lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostAddrError {
    /// Not a unicast address a host could send from.
    #[error(
        "host address {0} is not a unicast address a host sends from (unspecified, loopback, \
         multicast, broadcast, link-local or IPv4-mapped)"
    )]
    NotUnicast(IpAddr),
    /// Taken by the lab itself.
    #[error("host address {addr} is taken by the lab itself ({what})")]
    Taken {
        /// The address.
        addr: IpAddr,
        /// What uses it.
        what: &'static str,
    },
}

/// Checks an address the host namespace is to own: ordinary unicast, and
/// not one the lab already uses (the link's, a sink's).
pub fn valid_host_addr(addr: IpAddr, link: &Link, sinks: &[IpAddr]) -> Result<(), HostAddrError> {
    let unusable = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local()
                || a.octets()[0] == 0
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some()
        }
    };
    if unusable {
        return Err(HostAddrError::NotUnicast(addr));
    }
    let link_net4 = (IpAddr::V4(link.host4), link.prefix4);
    let link_net6 = (IpAddr::V6(link.host6), link.prefix6);
    if in_range(addr, link_net4) || in_range(addr, link_net6) {
        return Err(HostAddrError::Taken {
            addr,
            what: "the link between host and internet",
        });
    }
    if sinks.contains(&addr) {
        return Err(HostAddrError::Taken {
            addr,
            what: "a sink of the simulated internet",
        });
    }
    Ok(())
}

/// A live lab: two namespaces, the veth link between them and the internet
/// thread. Torn down by [`Lab::teardown`] or, best effort, on drop.
pub struct Lab {
    host: String,
    host_path: PathBuf,
    internet: String,
    internet_path: PathBuf,
    link: Link,
    sinks: Vec<IpAddr>,
    anyip: Vec<(IpAddr, u8)>,
    /// Namespaces created so far, deleted on teardown (host first).
    namespaces: Vec<String>,
    /// The host namespace whose `/etc/netns` directory we wrote.
    etc_dir: Option<String>,
    service: Option<internet_process::Running>,
    /// Runtime requests; only a [`Serving::Thread`] internet takes them.
    control: Option<UnboundedSender<internet::Control>>,
    /// The lab's DNS on loopback addresses of the host namespace
    /// ([`Realism::host_dns`]).
    host_dns: Option<internet_process::Running>,
    /// Name of the host end of the link.
    uplink: String,
}

impl Lab {
    /// Creates namespaces + veth + addresses + routes and starts the
    /// internet's services in a thread of this process ([`Serving::Thread`]);
    /// returns once they listen. On any error everything created so far is
    /// torn down before returning. Blocking; needs root.
    pub fn create(spec: LabSpec) -> Result<Lab, LabError> {
        Lab::create_with(spec, &Serving::Thread)
    }

    /// [`Lab::create`], with the internet served as `serving` says.
    pub fn create_with(spec: LabSpec, serving: &Serving) -> Result<Lab, LabError> {
        preflight()?;
        validate(&spec)?;

        // From here on, dropping `lab` undoes whatever was done.
        let mut lab = Lab {
            host: String::new(),
            host_path: PathBuf::new(),
            internet: String::new(),
            internet_path: PathBuf::new(),
            link: spec.link,
            sinks: spec.sinks.clone(),
            anyip: spec.anyip.clone(),
            namespaces: Vec::new(),
            etc_dir: None,
            service: None,
            control: None,
            host_dns: None,
            uplink: spec
                .realism
                .uplink
                .clone()
                .unwrap_or_else(|| IFACE.to_owned()),
        };
        let (host, internet) = pair::add_pair(spec.prefix, &mut lab.namespaces)?;
        lab.host_path = crate::netns::path_of(&host);
        lab.internet_path = crate::netns::path_of(&internet);
        lab.host = host;
        lab.internet = internet;
        pair::configure_link(
            &lab.host,
            &lab.internet,
            &spec.link,
            &lab.uplink,
            &spec.realism.host_addrs,
        )?;
        for &(net, len) in &spec.anyip {
            pair::add_anyip_route(&lab.internet, net, len)?;
        }
        for &sink in &spec.sinks {
            if !lab.covered(sink) {
                pair::add_local_address(&lab.internet, sink)?;
            }
        }
        if spec.resolv_conf {
            lab.write_resolv_conf()?;
        }
        let realism = &spec.realism;
        if realism.sinks == SinkMode::AnyPort || !realism.dns_ports.is_empty() {
            netfilter::install(
                &lab.internet,
                &netfilter::Plan {
                    any_port: (realism.sinks == SinkMode::AnyPort).then_some(&spec.sinks[..]),
                    dns_ports: &realism.dns_ports,
                    dns4: spec.link.internet4,
                    dns6: spec.link.internet6,
                },
            )?;
        }

        let zone = Arc::new(spec.zone);
        let dns_port = |ip: Ipv4Addr| SocketAddr::new(ip.into(), 53);
        let (service, control) = internet_process::start(
            serving,
            &lab.internet_path,
            internet::Services {
                dns_listen: vec![
                    dns_port(spec.link.internet4),
                    SocketAddr::new(spec.link.internet6.into(), 53),
                ],
                zone: Arc::clone(&zone),
                layer: spec.dns_layer.clone(),
                sinks: spec.sinks,
                mode: match realism.sinks {
                    SinkMode::AnyPort => internet::Mode::AnyPort,
                    SinkMode::Listed if spec.anyip.is_empty() => internet::Mode::Listed,
                    SinkMode::Listed => internet::Mode::Wildcard,
                },
                ports: spec.ports,
                internet_namespace: true,
            },
        )
        .map_err(LabError::Internet)?;
        lab.service = Some(service);
        lab.control = control;
        if !realism.host_dns.is_empty() {
            // The same server, served the same way (for the sandbox: a process that drops
            // to nobody once bound, so that root parses nothing from the network), on the
            // loopback resolvers' addresses of the host namespace.
            let (dns, _) = internet_process::start(
                serving,
                &lab.host_path,
                internet::Services {
                    dns_listen: realism.host_dns.clone(),
                    zone,
                    layer: spec.dns_layer,
                    sinks: Vec::new(),
                    mode: internet::Mode::Listed,
                    ports: BTreeSet::new(),
                    internet_namespace: false,
                },
            )
            .map_err(LabError::Internet)?;
            lab.host_dns = Some(dns);
        }
        Ok(lab)
    }

    /// Whether an AnyIP range covers `addr`.
    fn covered(&self, addr: IpAddr) -> bool {
        self.anyip.iter().any(|&range| in_range(addr, range))
    }

    fn write_resolv_conf(&mut self) -> Result<(), LabError> {
        let dir = Path::new(crate::netns::NETNS_ETC).join(&self.host);
        let io_err = |context: String| move |error| LabError::Io { context, error };
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        self.etc_dir = Some(self.host.clone());
        let file = dir.join("resolv.conf");
        std::fs::write(&file, format!("nameserver {}\n", self.link.internet4))
            .map_err(io_err(format!("cannot write {}", file.display())))
    }

    /// Path of the host namespace to `setns` into: `/run/netns/<name>`.
    pub fn host_netns_path(&self) -> &Path {
        &self.host_path
    }

    /// Name of the host namespace (for `ip netns exec NAME ...`).
    pub fn host_netns_name(&self) -> &str {
        &self.host
    }

    /// Path of the internet namespace: `/run/netns/<name>`.
    pub fn internet_netns_path(&self) -> &Path {
        &self.internet_path
    }

    /// Name of the internet namespace.
    pub fn internet_netns_name(&self) -> &str {
        &self.internet
    }

    /// The link's addresses.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Name of the host end of the link ([`Realism::uplink`], else `eth0`).
    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// The DNS server the host namespace should use: port 53 of the internet
    /// end of the link, IPv4 (it also listens on the IPv6 end).
    pub fn nameserver(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.link.internet4), 53)
    }

    /// Loads `rule` into the host namespace.
    pub fn load(&self, rule: &RuleSource) -> Result<(), LabError> {
        let first = |v4: bool| {
            self.sinks
                .iter()
                .find(|a| a.is_ipv4() == v4)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        rules::load(
            &self.host,
            rule,
            &rules::SetupEnv {
                netns: &self.host,
                iface: &self.uplink,
                gateway4: self.link.internet4.to_string(),
                gateway6: self.link.internet6.to_string(),
                sink4: first(true),
                sink6: first(false),
            },
        )
    }

    /// Makes `addr` one more sink, at once: puts it on the internet's `lo`
    /// (unless an AnyIP range covers it) and has the sinks listen on it (the
    /// wildcard listeners of an AnyIP lab already do).
    pub fn add_sink(&self, addr: IpAddr) -> Result<(), LabError> {
        if !self.covered(addr) {
            pair::add_local_address(&self.internet, addr)?;
        }
        let gone = || LabError::AddSink {
            addr,
            error: ThreadError::new(
                "the internet thread",
                io::Error::other(
                    "it is not running (a Serving::Process internet takes no sinks later)",
                ),
            ),
        };
        let control = self.control.as_ref().ok_or_else(gone)?;
        let (done, result) = mpsc::channel();
        control
            .send(internet::Control::AddSink { addr, done })
            .map_err(|_| gone())?;
        match result.recv_timeout(ADD_SINK_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(LabError::AddSink { addr, error }),
            Err(_) => Err(gone()),
        }
    }

    /// Tears everything down and reports what could not be removed.
    /// Dropping a `Lab` does the same, best effort, warning on stderr.
    pub fn teardown(mut self) -> Result<(), LabError> {
        self.teardown_inner()
    }

    /// Idempotent: every resource is taken out of `self` as it is released.
    fn teardown_inner(&mut self) -> Result<(), LabError> {
        let mut problems = Vec::new();
        drop(self.control.take());
        if let Some(service) = self.service.take() {
            if let Err(e) = service.stop() {
                problems.push(format!("internet: {e}"));
            }
        }
        if let Some(dns) = self.host_dns.take() {
            if let Err(e) = dns.stop() {
                problems.push(format!("the host namespace's DNS: {e}"));
            }
        }
        for name in std::mem::take(&mut self.namespaces) {
            if let Err(e) = pair::delete(&name) {
                problems.push(format!("namespace {name}: {e}"));
            }
        }
        if let Some(name) = self.etc_dir.take() {
            if let Err(e) = pair::remove_etc_dir(&name) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown { problems })
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            // Not eprintln!: a panic here, during unwinding, would abort.
            let _ = writeln!(io::stderr(), "warning: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_link_uses_documentation_ranges() {
        let l = Link::SANDBOX;
        for ip in [l.internet4, l.host4] {
            assert_eq!(&ip.octets()[..3], &[192, 0, 2], "{ip}");
        }
        for ip in [l.internet6, l.host6] {
            assert_eq!(&ip.segments()[..2], &[0x2001, 0xdb8], "{ip}");
        }
        // Both link ends in the same /30, neither the network nor broadcast.
        let net = |ip: Ipv4Addr| u32::from(ip) >> (32 - l.prefix4);
        assert_eq!(net(l.internet4), net(l.host4));
        for ip in [l.internet4, l.host4] {
            let host_bits = u32::from(ip) & ((1 << (32 - l.prefix4)) - 1);
            assert!(host_bits != 0 && host_bits != 3, "{ip}");
        }
    }

    #[test]
    fn ranges_match_by_prefix() {
        let r4 = ("203.0.113.0".parse().unwrap(), 24);
        assert!(in_range("203.0.113.77".parse().unwrap(), r4));
        assert!(!in_range("203.0.114.1".parse().unwrap(), r4));
        assert!(!in_range("2001:db8::1".parse().unwrap(), r4));
        let r6 = ("2001:db8:200::".parse().unwrap(), 64);
        assert!(in_range("2001:db8:200::ffff".parse().unwrap(), r6));
        assert!(!in_range("2001:db8:201::1".parse().unwrap(), r6));
        assert!(in_range(
            "192.0.2.1".parse().unwrap(),
            ("0.0.0.0".parse().unwrap(), 0)
        ));
        assert!(!in_range(
            "192.0.2.1".parse().unwrap(),
            ("192.0.2.1".parse().unwrap(), 33)
        ));
    }

    fn spec() -> LabSpec {
        LabSpec {
            prefix: "ect",
            link: Link::SANDBOX,
            zone: Zone::CatchAll {
                a: None,
                aaaa: None,
            },
            sinks: vec![],
            anyip: vec![],
            ports: [25].into(),
            dns_layer: None,
            resolv_conf: false,
            realism: Realism::default(),
        }
    }

    #[test]
    fn specs_are_validated() {
        assert!(validate(&spec()).is_ok());
        let bad_prefix = LabSpec {
            prefix: "EC-T",
            ..spec()
        };
        assert!(matches!(
            validate(&bad_prefix),
            Err(LabError::InvalidSpec { .. })
        ));
        let bad_range = LabSpec {
            anyip: vec![("203.0.113.0".parse().unwrap(), 33)],
            ..spec()
        };
        assert!(matches!(
            validate(&bad_range),
            Err(LabError::InvalidSpec { .. })
        ));
        let dns_port = LabSpec {
            ports: [25, 53].into(),
            anyip: vec![("203.0.113.0".parse().unwrap(), 24)],
            ..spec()
        };
        assert!(matches!(
            validate(&dns_port),
            Err(LabError::InvalidSpec { .. })
        ));
    }

    #[test]
    fn rule_errors_quote_the_loader_output() {
        let status = std::process::Command::new("false").status().unwrap();
        let err = LabError::RulesLoad {
            loader: "iptables-restore",
            path: "rules.v4".into(),
            status,
            output: "Error occurred at line: 2".into(),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("iptables-restore rejected rules.v4 (exit status: 1)"),
            "{msg}"
        );
        assert!(msg.contains("line: 2"), "{msg}");
        let err = LabError::SetupScript {
            path: "setup.sh".into(),
            status,
            output: String::new(),
        };
        assert!(err.to_string().ends_with("(no output)"), "{err}");
    }
}
