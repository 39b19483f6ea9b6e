//! The bench's lab: one [`egress_check::lab::Lab`] with the old script's
//! address plan, its firewall and its DNS zone.
//!
//! | what                         | IPv4               | IPv6                |
//! |------------------------------|--------------------|---------------------|
//! | link, host end               | 198.51.100.1/24    | 2001:db8:100::1/64  |
//! | link, internet end (DNS)     | 198.51.100.2/24    | 2001:db8:100::2/64  |
//! | sinks (AnyIP, TCP 25 + 587)  | 203.0.113.0/24     | 2001:db8:200::/64   |
//! | sweep sinks (every TCP port) | 203.0.113.1        | 2001:db8:200::1     |
//!
//! The sizes' lab ([`Sinks::AnyIp`]) answers on ports 25 and 587 of every
//! address of the ranges, as the old script's did, so that their figures
//! stay comparable. The sweeps get a lab of their own ([`Sinks::AnyPort`]):
//! the first address of each family answers on **every** TCP port, through
//! the TPROXY sink the sandbox uses, so that a sweep the firewall lets
//! through is 131,070 connects, not 4 connects and 131,066 resets. (One lab
//! cannot do both: the any-port mode has no AnyIP ranges.)
//!
//! Namespaces `ecb-PID-N-h` (host) and `ecb-PID-N-i` (internet); labs of
//! benches that died are reaped at start. In the host namespace, iptables
//! and ip6tables DROP the TCP packets of the odd users `ecb-u01`,
//! `ecb-u03`... to the sink ranges, so their probes time out; the even
//! users' connect.
//!
//! DNS (port 53 of the internet end of the link), authoritative for
//! `bench.test`: `dN.bench.test MX 10 mx.dN.bench.test`, and
//! `mx.dN.bench.test` A 203.0.113.N, AAAA 2001:db8:200::N (hex), N =
//! 1..200. The test kit's [`Delay`] layer adds the DNS round-trip time to
//! every answer, switched on only while that is measured (so that the same
//! server also shows what resolving costs without the network).

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use egress_check::lab::{
    self, DnsAction, DnsLayer, Lab, LabSpec, Link, Realism, RecordType, Records, RuleSource,
    SinkMode,
};
use egress_check_testkit::dns::Delay;
use nix::sched::{setns, CloneFlags};

use crate::error::BenchError;
use crate::plan::{dropped, sink_v4, sink_v6, user_name, MAX_USERS, PORTS};

/// Namespace name prefix.
pub const PREFIX: &str = "ecb";
/// The link: the test lab's (the old script's addresses were the same).
pub const LINK: Link = egress_check_testkit::test_lab::LINK;
/// The IPv4 sink range.
pub const SINKS_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 0), 24);
/// The IPv6 sink range.
pub const SINKS_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0), 64);
/// MX domains in the zone: d1.bench.test .. d200.bench.test.
pub const DNS_DOMAINS: u32 = 200;
/// The zone's origin.
const ORIGIN: &str = "bench.test";
/// How long the smoke test keeps trying to reach the sinks.
const SMOKE_ATTEMPTS: u32 = 50;
const SMOKE_PAUSE: Duration = Duration::from_millis(100);
const SMOKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Listen-queue counters of `/proc/net/netstat` (`TcpExt`) that mean a
/// handshake was dropped or answered with a cookie: a full accept or SYN
/// queue would turn "connected" into a timeout.
const QUEUE_COUNTERS: [&str; 5] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDoCookies",
    "TCPReqQFullDrop",
    "SyncookiesSent",
];

/// How a lab's sinks answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sinks {
    /// Ports 25 and 587 of every address of the AnyIP ranges (the sizes).
    AnyIp,
    /// Every TCP port of the first address of each family (the sweeps):
    /// the lab's [`lab::SinkMode::AnyPort`].
    AnyPort,
}

/// `dN.bench.test`, N = 1..=[`DNS_DOMAINS`].
pub fn domains() -> Vec<String> {
    (1..=DNS_DOMAINS)
        .map(|i| format!("d{i}.{ORIGIN}"))
        .collect()
}

/// The bench's zone (see the module documentation).
fn zone() -> Result<Records, BenchError> {
    let mut zone = Records::new([ORIGIN])?;
    for (i, domain) in (1..=DNS_DOMAINS).zip(domains()) {
        let exchange = format!("mx.{domain}");
        zone.mx(&domain, 10, &exchange)?
            .host(&exchange, &[sink_v4(i).into(), sink_v6(i).into()])?;
    }
    Ok(zone)
}

/// The test kit's [`Delay`] in front of every answer while switched on.
#[derive(Debug)]
struct DnsRtt {
    delay: Delay,
    on: AtomicBool,
}

impl DnsLayer for DnsRtt {
    fn decide(&self, name: &str, qtype: RecordType) -> DnsAction {
        if self.on.load(Ordering::SeqCst) {
            self.delay.decide(name, qtype)
        } else {
            DnsAction::Answer
        }
    }
}

/// `iptables-restore` input dropping the odd users' TCP to `range`.
fn firewall(range: &str) -> String {
    let mut rules =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in (1..=MAX_USERS).filter(|&i| dropped(i)) {
        rules += &format!(
            "-A OUTPUT -p tcp -d {range} -m owner --uid-owner {} -j DROP\n",
            user_name(i)
        );
    }
    rules + "COMMIT\n"
}

/// Runs `f` on a thread inside the network namespace `ns` (namespaces are
/// per thread; processes it starts inherit the namespace, and so do the
/// `/proc/sys/net` and `/proc/thread-self/net` files it opens).
pub fn in_netns<T: Send>(
    ns: &File,
    f: impl FnOnce() -> Result<T, BenchError> + Send,
) -> Result<T, BenchError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(|error| BenchError::Sys {
                    context: "cannot enter the lab's network namespace".into(),
                    error,
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Writes `value` to `/proc/sys/KEY` (per network namespace: the caller's
/// thread's).
fn sysctl(key: &str, value: &str) -> Result<(), BenchError> {
    let path = Path::new("/proc/sys").join(key);
    fs::write(&path, value).map_err(|error| BenchError::Io {
        context: format!("cannot write {value:?} to {}", path.display()),
        error,
    })
}

/// The running lab. Dropping it tears it down (best effort, warning on
/// stderr); [`BenchLab::teardown`] reports what could not be removed.
pub struct BenchLab {
    // Fields drop in order: the namespace handles before the lab deletes
    // the namespaces.
    host_ns: File,
    internet_ns: File,
    dns_rtt: Arc<DnsRtt>,
    lab: Lab,
}

impl BenchLab {
    /// Reaps labs of dead benches, builds the lab with `sinks`, loads the
    /// firewall (rules files written to `work`) and checks that the sinks
    /// answer.
    pub fn up(work: &Path, dns_rtt: Duration, sinks: Sinks) -> Result<BenchLab, BenchError> {
        for name in lab::reap_stale(PREFIX)? {
            crate::log(&format!("removed stale namespace {name}"));
        }
        let dns_layer = Arc::new(DnsRtt {
            delay: Delay(dns_rtt),
            on: AtomicBool::new(false),
        });
        let (sink_addresses, anyip, mode) = match sinks {
            Sinks::AnyIp => (
                Vec::new(),
                vec![
                    (SINKS_V4.0.into(), SINKS_V4.1),
                    (SINKS_V6.0.into(), SINKS_V6.1),
                ],
                SinkMode::Listed,
            ),
            Sinks::AnyPort => (
                vec![IpAddr::V4(sink_v4(1)), IpAddr::V6(sink_v6(1))],
                Vec::new(),
                SinkMode::AnyPort,
            ),
        };
        let lab = Lab::create(LabSpec {
            prefix: PREFIX,
            link: LINK,
            zone: zone()?.into(),
            sinks: sink_addresses,
            anyip,
            ports: PORTS.into(),
            dns_layer: Some(Arc::clone(&dns_layer) as Arc<dyn DnsLayer>),
            resolv_conf: false,
            realism: Realism {
                sinks: mode,
                ..Realism::default()
            },
        })?;
        let open = |path: &Path| {
            File::open(path).map_err(|error| BenchError::Io {
                context: format!("cannot open {}", path.display()),
                error,
            })
        };
        let bench = BenchLab {
            host_ns: open(lab.host_netns_path())?,
            internet_ns: open(lab.internet_netns_path())?,
            dns_rtt: dns_layer,
            lab,
        };
        crate::log(&format!(
            "lab: namespaces {} and {}",
            bench.lab.host_netns_name(),
            bench.lab.internet_netns_name()
        ));
        // Thousands of handshakes in half a second: a deep SYN queue in the
        // internet (its sinks' accept queues are as deep as the lab's
        // net.core.somaxconn allows when they listen: 4096 each), and more
        // local ports for the host's connects.
        in_netns(&bench.internet_ns, || {
            sysctl("net/ipv4/tcp_max_syn_backlog", "65535")
        })?;
        in_netns(&bench.host_ns, || {
            sysctl("net/ipv4/ip_local_port_range", "10000 65000")
        })?;
        bench.load_firewall(work)?;
        bench.smoke_test()?;
        Ok(bench)
    }

    fn load_firewall(&self, work: &Path) -> Result<(), BenchError> {
        let v4 = format!("{}/{}", SINKS_V4.0, SINKS_V4.1);
        let v6 = format!("{}/{}", SINKS_V6.0, SINKS_V6.1);
        for (file, rules, source) in [
            (
                "rules.v4",
                firewall(&v4),
                RuleSource::Iptables as fn(PathBuf) -> RuleSource,
            ),
            ("rules.v6", firewall(&v6), RuleSource::Ip6tables),
        ] {
            let path = work.join(file);
            fs::write(&path, rules).map_err(|error| BenchError::Io {
                context: format!("cannot write {}", path.display()),
                error,
            })?;
            self.lab.load(&source(path))?;
        }
        Ok(())
    }

    /// The sinks answer from the host namespace on both families.
    fn smoke_test(&self) -> Result<(), BenchError> {
        let targets = [
            SocketAddr::new(IpAddr::V4(sink_v4(1)), PORTS[0]),
            SocketAddr::new(IpAddr::V6(sink_v6(1)), PORTS[0]),
        ];
        in_netns(&self.host_ns, || {
            for addr in targets {
                let mut attempt = 1;
                while let Err(error) = TcpStream::connect_timeout(&addr, SMOKE_TIMEOUT) {
                    if attempt == SMOKE_ATTEMPTS {
                        return Err(BenchError::SmokeTest { addr, error });
                    }
                    attempt += 1;
                    std::thread::sleep(SMOKE_PAUSE);
                }
            }
            Ok(())
        })
    }

    /// The host namespace, to start processes in with [`in_netns`].
    pub fn host_ns(&self) -> &File {
        &self.host_ns
    }

    /// Its name, for `egress-check --netns`.
    pub fn host_name(&self) -> &str {
        self.lab.host_netns_name()
    }

    /// The DNS server, `IP:53`.
    pub fn nameserver(&self) -> SocketAddr {
        self.lab.nameserver()
    }

    /// Switches the added DNS round-trip time on or off.
    pub fn set_dns_rtt(&self, on: bool) {
        self.dns_rtt.on.store(on, Ordering::SeqCst);
    }

    /// The internet's listen-queue counters that are not zero (since the
    /// lab was created): handshakes dropped or answered with cookies.
    pub fn queue_trouble(&self) -> Result<Vec<(String, u64)>, BenchError> {
        let text = in_netns(&self.internet_ns, || {
            fs::read_to_string("/proc/thread-self/net/netstat").map_err(|error| BenchError::Io {
                context: "cannot read the internet's /proc/net/netstat".into(),
                error,
            })
        })?;
        Ok(nonzero_counters(&text, "TcpExt:", &QUEUE_COUNTERS))
    }

    /// Tears the lab down, reporting what could not be removed.
    pub fn teardown(self) -> Result<(), BenchError> {
        let BenchLab {
            host_ns,
            internet_ns,
            lab,
            ..
        } = self;
        drop((host_ns, internet_ns));
        Ok(lab.teardown()?)
    }
}

/// From `/proc/net/netstat` (pairs of lines `PREFIX names...` and
/// `PREFIX values...`), the `wanted` counters of `prefix` that are not zero.
fn nonzero_counters(text: &str, prefix: &str, wanted: &[&str]) -> Vec<(String, u64)> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix(prefix));
    let mut found = Vec::new();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let (true, Ok(value)) = (wanted.contains(&name), value.parse::<u64>()) {
                if value != 0 {
                    found.push((name.to_owned(), value));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_and_firewall_build() {
        zone().unwrap();
        assert_eq!(domains()[199], "d200.bench.test");
        let rules = firewall("203.0.113.0/24");
        assert_eq!(rules.matches("-j DROP").count(), 8);
        assert!(rules.contains("--uid-owner ecb-u15 -j DROP"));
        assert!(!rules.contains("ecb-u02"));
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn netstat_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows Other\n\
                    TcpExt: 0 7 9\n\
                    IpExt: ListenDrops\n\
                    IpExt: 5\n";
        assert_eq!(
            nonzero_counters(text, "TcpExt:", &QUEUE_COUNTERS),
            vec![("ListenOverflows".to_owned(), 7)]
        );
    }
}
