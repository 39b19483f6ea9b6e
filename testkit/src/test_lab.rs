//! [`TestLab`]: the lab the integration tests run the real binary in.
//!
//! Address plan (documentation ranges only; nothing leaves the namespaces):
//!
//! | what                          | IPv4                  | IPv6                       |
//! |-------------------------------|-----------------------|----------------------------|
//! | link, host end                | 198.51.100.1/24       | 2001:db8:100::1/64         |
//! | link, internet end (DNS)      | 198.51.100.2/24       | 2001:db8:100::2/64         |
//! | sinks (internet's `lo`)       | 203.0.113.10 .11 .12  | 2001:db8:200::10 ::11 ::12 |
//!
//! Every sink listens on TCP 25 and 587 (greeting `220 ... ESMTP`, then
//! close); TCP 26 is closed (nobody listens: connection refused). Tests add
//! sinks of their own with [`TestLab::add_sink`].
//!
//! DNS (port 53 of both internet link addresses; `/etc/netns/HOST/resolv.conf`
//! names it, so `ip netns exec HOST` resolves with it), authoritative for
//! `test` (unknown names under it: NXDOMAIN; names elsewhere: REFUSED):
//!
//! | name            | data                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `dual.test`     | MX 10 mx1.dual.test, MX 20 mx2.dual.test                    |
//! |                 | mx1 → 203.0.113.10 + 2001:db8:200::10; mx2 → .11 + ::11     |
//! | `v4only.test`   | MX 10 mx.v4only.test → 203.0.113.12 only (no AAAA)          |
//! | `nomx.test`     | no MX; A 203.0.113.12, AAAA 2001:db8:200::12                |
//! | `nullmx.test`   | MX 0 "." (RFC 7505 null MX)                                 |
//! | `cname.test`    | MX 10 alias.cname.test, a CNAME of mx1.dual.test            |
//! | `dangling.test` | MX 10 missing.dangling.test (NXDOMAIN)                      |
//! | `many.test`     | MX 10..80 mx1..mx8.many.test over all sinks                 |
//! | `servfail.test` | SERVFAIL (a [`ServFail`] layer), also for names below it    |
//! | `host.test`     | A 203.0.113.10, AAAA 2001:db8:200::10                       |
//!
//! The edges (answers real-world zones and filtering resolvers give; all MX 10 `mx.NAME`):
//!
//! | name              | A                      | AAAA                                    |
//! |-------------------|------------------------|-----------------------------------------|
//! | `sinkhole.test`   | 0.0.0.0                | ::                                      |
//! | `loopback.test`   | 127.0.0.1              | ::1                                     |
//! | `self.test`       | the lab host's own     | the lab host's own                      |
//! | `mapped.test`     | 203.0.113.10           | ::ffff:203.0.113.10                     |
//! | `maponly.test`    | -                      | ::ffff:203.0.113.11                     |
//! | `mixed.test`      | 203.0.113.12, 0.0.0.0  | 2001:db8:200::12, ::ffff:203.0.113.12   |
//! | `www.blocked.test` (no MX; RPZ style) | 0.0.0.0 | ::                              |
//!
//! The test users ([`crate::users`]) are created by [`TestLab::up`].

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_check::lab::{self, Lab, LabSpec, Link, NetnsThread, Records};

use crate::dns::ServFail;
use crate::{mta, nfqueue, reset, users, TestkitError};

/// Namespace name prefix of test labs: `ect-PID-N-h` / `-i`.
pub const PREFIX: &str = "ect";
/// The link: 198.51.100.0/24 and 2001:db8:100::/64; the internet end is
/// also the DNS server.
pub const LINK: Link = Link {
    host4: Ipv4Addr::new(198, 51, 100, 1),
    internet4: Ipv4Addr::new(198, 51, 100, 2),
    prefix4: 24,
    host6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1),
    internet6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2),
    prefix6: 64,
};
/// The IPv4 sinks.
pub const SINKS_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 11),
    Ipv4Addr::new(203, 0, 113, 12),
];
/// The IPv6 sinks.
pub const SINKS_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x12),
];
/// Ports every sink listens on.
pub const PORTS: [u16; 2] = [25, 587];
/// A port nobody listens on.
pub const CLOSED_PORT: u16 = 26;
/// The name whose lookups fail with SERVFAIL.
pub const SERVFAIL_NAME: &str = "servfail.test";

/// The test zone (see the module documentation).
pub fn zone() -> Result<Records, TestkitError> {
    let [s4a, s4b, s4c] = SINKS_V4;
    let [s6a, s6b, s6c] = SINKS_V6;
    let mut z = Records::new(["test"])?;
    z.mx("dual.test", 10, "mx1.dual.test")?
        .mx("dual.test", 20, "mx2.dual.test")?
        .host("mx1.dual.test", &[s4a.into(), s6a.into()])?
        .host("mx2.dual.test", &[s4b.into(), s6b.into()])?
        .mx("v4only.test", 10, "mx.v4only.test")?
        .a("mx.v4only.test", s4c)?
        .host("nomx.test", &[s4c.into(), s6c.into()])?
        .null_mx("nullmx.test")?
        .mx("cname.test", 10, "alias.cname.test")?
        .cname("alias.cname.test", "mx1.dual.test")?
        .mx("dangling.test", 10, "missing.dangling.test")?
        .host("host.test", &[s4a.into(), s6a.into()])?;
    // The edges: answers that never leave the host, and IPv4 dressed as IPv6.
    let mapped = |v4: Ipv4Addr| IpAddr::V6(v4.to_ipv6_mapped());
    let unspecified4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let unspecified6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    for (domain, addrs) in [
        ("sinkhole", vec![unspecified4, unspecified6]),
        (
            "loopback",
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
        ),
        ("self", vec![LINK.host4.into(), LINK.host6.into()]),
        ("mapped", vec![s4a.into(), mapped(s4a)]),
        ("maponly", vec![mapped(s4b)]),
        (
            "mixed",
            vec![s4c.into(), unspecified4, s6c.into(), mapped(s4c)],
        ),
    ] {
        let exchange = format!("mx.{domain}.test");
        z.mx(&format!("{domain}.test"), 10, &exchange)?
            .host(&exchange, &addrs)?;
    }
    z.host("www.blocked.test", &[unspecified4, unspecified6])?;
    // Eight exchanges spread over the sinks (IPv6 shifted by one).
    for i in 1..=8usize {
        let exchange = format!("mx{i}.many.test");
        let preference = u16::try_from(i * 10).expect("at most 80");
        z.mx("many.test", preference, &exchange)?.host(
            &exchange,
            &[SINKS_V4[(i - 1) % 3].into(), SINKS_V6[i % 3].into()],
        )?;
    }
    Ok(z)
}

/// The lab's specification.
pub fn spec() -> Result<LabSpec, TestkitError> {
    Ok(LabSpec {
        prefix: PREFIX,
        link: LINK,
        zone: zone()?.into(),
        sinks: SINKS_V4
            .iter()
            .map(|&a| IpAddr::V4(a))
            .chain(SINKS_V6.iter().map(|&a| IpAddr::V6(a)))
            .collect(),
        anyip: Vec::new(),
        ports: PORTS.into(),
        dns_layer: Some(Arc::new(ServFail::new([SERVFAIL_NAME]))),
        resolv_conf: true,
        realism: Default::default(),
    })
}

/// Removes test labs left behind by test processes that were killed.
pub fn reap_stale() -> Result<Vec<String>, TestkitError> {
    Ok(lab::reap_stale(PREFIX)?)
}

/// A running test lab. Dropping it (also while a test panics) stops the
/// delayers and reset listeners, then tears the lab down.
pub struct TestLab {
    // Fields drop in order: the helpers' threads before the lab's namespaces.
    delayers: Mutex<BTreeMap<u16, NetnsThread>>,
    resets: Mutex<BTreeMap<u16, NetnsThread>>,
    lab: Lab,
}

impl TestLab {
    /// Makes sure the test users exist, then brings up a lab with fresh
    /// names unique to this process.
    pub fn up() -> Result<TestLab, TestkitError> {
        users::ensure()?;
        Ok(TestLab {
            delayers: Mutex::default(),
            resets: Mutex::default(),
            lab: Lab::create(spec()?)?,
        })
    }

    /// The underlying lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The lab's name: the namespaces' common part, `ect-PID-N`.
    pub fn name(&self) -> &str {
        let host = self.host_ns();
        host.strip_suffix("-h").unwrap_or(host)
    }

    /// Name of the namespace of the host under test.
    pub fn host_ns(&self) -> &str {
        self.lab.host_netns_name()
    }

    /// Name of the simulated internet's namespace.
    pub fn net_ns(&self) -> &str {
        self.lab.internet_netns_name()
    }

    /// A command that runs `program` in the host under test's namespace.
    pub fn command(&self, program: &str) -> Command {
        in_netns(self.host_ns(), program)
    }

    /// A command that runs `program` in the simulated internet's namespace.
    pub fn net_command(&self, program: &str) -> Command {
        in_netns(self.net_ns(), program)
    }

    /// Runs `program args` in the host namespace; an error unless it succeeds.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, TestkitError> {
        run_ok(
            self.command(program).args(args),
            self.host_ns(),
            program,
            args,
        )
    }

    /// Runs `program args` in the internet namespace; an error unless it succeeds.
    pub fn exec_net(&self, program: &str, args: &[&str]) -> Result<Output, TestkitError> {
        run_ok(
            self.net_command(program).args(args),
            self.net_ns(),
            program,
            args,
        )
    }

    /// `iptables ARGS` in the host namespace.
    pub fn iptables(&self, args: &[&str]) -> Result<(), TestkitError> {
        self.exec("iptables", args).map(drop)
    }

    /// `ip6tables ARGS` in the host namespace.
    pub fn ip6tables(&self, args: &[&str]) -> Result<(), TestkitError> {
        self.exec("ip6tables", args).map(drop)
    }

    /// The same rule with both `iptables` and `ip6tables`.
    pub fn ip46tables(&self, args: &[&str]) -> Result<(), TestkitError> {
        self.iptables(args)?;
        self.ip6tables(args)
    }

    /// Loads an nftables ruleset (`nft -f -`) in the host namespace.
    pub fn nft_file(&self, ruleset: &str) -> Result<(), TestkitError> {
        let spawn_err = |error| TestkitError::Spawn {
            program: "nft".into(),
            error,
        };
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(ruleset.as_bytes()));
        let output = child.wait_with_output().map_err(spawn_err)?;
        if let Some(Err(error)) = written {
            return Err(TestkitError::Io {
                context: format!("[{}] nft -f -: cannot write the ruleset", self.host_ns()),
                error,
            });
        }
        if output.status.success() {
            return Ok(());
        }
        Err(TestkitError::Command {
            command: format!("[{}] nft -f - <<EOF\n{ruleset}EOF", self.host_ns()),
            output,
        })
    }

    /// Makes `addr` one more sink: it answers on TCP 25 and 587 (26 closed)
    /// and nothing else uses it, so rules scoped to it affect no other test
    /// sharing the lab.
    pub fn add_sink(&self, addr: IpAddr) -> Result<(), TestkitError> {
        Ok(self.lab.add_sink(addr)?)
    }

    /// Delays every packet sent to NFQUEUE `queue` in the simulated internet
    /// by `millis` ([`nfqueue`]). Steer packets to it afterwards, e.g. with
    /// `iptables -t mangle -A PREROUTING ... -j NFQUEUE --queue-num QUEUE
    /// --queue-bypass` in the internet namespace.
    pub fn delay(&self, queue: u16, millis: u64) -> Result<(), TestkitError> {
        let mut delayers = self
            .delayers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if delayers.contains_key(&queue) {
            return Err(TestkitError::QueueTaken { queue });
        }
        let thread = nfqueue::start(
            self.lab.internet_netns_path(),
            queue,
            Duration::from_millis(millis),
        )?;
        delayers.insert(queue, thread);
        Ok(())
    }

    /// Starts the host's own MTA on TCP `port` on every address of the host
    /// namespace ([`mta`]); it stops when the returned value is dropped.
    pub fn host_mta(&self, port: u16) -> Result<mta::Mta, TestkitError> {
        Ok(mta::start(self.lab.host_netns_path(), port)?)
    }

    /// Starts a mail server on TCP `port` on every address of the simulated internet (the
    /// sinks and the link's internet end; [`mta`]): a destination that counts the
    /// connections it accepted, so a test can tell whether a run probed at all. `port` must
    /// be one the sinks do not use (not [`PORTS`], [`CLOSED_PORT`] or a reset listener's).
    /// It stops when the returned value is dropped.
    pub fn internet_mta(&self, port: u16) -> Result<mta::Mta, TestkitError> {
        Ok(mta::start(self.lab.internet_netns_path(), port)?)
    }

    /// Starts a mail server on TCP `port` of the simulated internet's link-local address
    /// `addr` (the peer of the host's link; the lab's sinks do not listen there).
    pub fn peer_link_local_mta(&self, addr: Ipv6Addr, port: u16) -> Result<mta::Mta, TestkitError> {
        Ok(mta::start_link_local(
            self.lab.internet_netns_path(),
            lab::IFACE,
            addr,
            port,
        )?)
    }

    /// Listens on TCP `port` on every address of the simulated internet and resets each
    /// connection right after accepting it.
    pub fn reset_listener(&self, port: u16) -> Result<(), TestkitError> {
        let mut resets = self
            .resets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if resets.contains_key(&port) {
            return Err(TestkitError::PortTaken { port });
        }
        let thread = reset::start(self.lab.internet_netns_path(), port)?;
        resets.insert(port, thread);
        Ok(())
    }

    /// Stops the helpers and tears the lab down, reporting what could not be
    /// removed (dropping does the same, warning on stderr).
    pub fn teardown(self) -> Result<(), TestkitError> {
        let TestLab {
            delayers,
            resets,
            lab,
        } = self;
        let stopped = {
            let mut threads = [delayers, resets].into_iter().flat_map(|m| {
                m.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .into_values()
            });
            // Threads not reached after an error stop as they are dropped, here.
            threads.try_for_each(NetnsThread::stop)
        };
        let torn = lab.teardown();
        stopped?;
        Ok(torn?)
    }
}

/// `ip netns exec NS program`.
fn in_netns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

fn run_ok(
    cmd: &mut Command,
    ns: &str,
    program: &str,
    args: &[&str],
) -> Result<Output, TestkitError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|error| TestkitError::Spawn {
            program: program.into(),
            error,
        })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(TestkitError::Command {
        command: format!("[{ns}] {program} {}", args.join(" ")),
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_and_spec_build() {
        let spec = spec().unwrap();
        assert_eq!(spec.prefix, PREFIX);
        assert_eq!(spec.sinks.len(), 6);
        assert_eq!(spec.ports.iter().copied().collect::<Vec<_>>(), PORTS);
        assert!(!spec.ports.contains(&CLOSED_PORT));
        assert!(spec.dns_layer.is_some() && spec.resolv_conf && spec.anyip.is_empty());
    }

    #[test]
    fn sinks_are_in_the_documentation_ranges() {
        for a in SINKS_V4 {
            assert_eq!(&a.octets()[..3], &[203, 0, 113]);
        }
        for a in SINKS_V6 {
            assert_eq!(&a.segments()[..3], &[0x2001, 0xdb8, 0x200]);
        }
        assert_eq!(&LINK.host4.octets()[..3], &[198, 51, 100]);
    }
}
