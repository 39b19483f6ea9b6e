//! The fault matrix: the ways a connection, a lookup or an owner rule can go wrong, each with
//! the outcome `egress-check` must observe, the verdict that follows, whether a passing deny
//! is witnessed, and the exit code. The real binary runs in network namespace labs
//! (the test kit's `TestLab`, see `util::lab`).
//!
//! Every case is one row of a table ([`NETWORK`], [`DNS`], [`IDENTITY`], [`HOST_STACK`]):
//! the commands that set the fault up, the scenario (target, port, families, timeout,
//! nameserver, users and expectations), and per user and family the acceptable observed
//! outcomes, the verdict, the witness and, where it matters, words the detail must contain.
//! Adding a case is adding a row. Besides what a row states, every probe of every row must
//! obey the documented rules (see [`check_invariants`]): the verdict follows from expect and
//! observed, `error`/`no-address` never pass, `witnessed` is set exactly on passing denies and
//! is true exactly when some probe of the run connected to the same address and port, the
//! counters and the exit code agree with the verdicts, and in a family where nothing can
//! connect (`Case::unprovable`) no deny is a witnessed pass.
//!
//! The rows of a table share one lab and run concurrently: each row has sink addresses of its
//! own (added to the simulated internet, where the lab's listeners answer on them), and its
//! rules match only those addresses (or, in [`DNS`], users and ports no other row of the
//! table uses). Rows that change the host's whole stack ([`HOST_STACK`]) get a lab each.
//!
//! Mechanisms. Firewalls are real iptables/ip6tables/nftables rules in the host namespace.
//! This kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM is not set and modules cannot be
//! loaded), so delays and loss are made deterministic instead:
//! - a slow handshake or a slow nameserver is an NFQUEUE in the simulated internet whose
//!   listener (the test kit's NFQUEUE delayer) holds every queued packet for a fixed time;
//!   the rules use `--queue-bypass`, so if the delayer were missing the packets would pass at
//!   once and the row would fail (the "under" rows also check that the connect took at least
//!   the delay);
//! - loss is `-m statistic --mode nth` dropping exactly the first SYN of a family, so that
//!   only the kernel's SYN retransmission (after 1 s) can get through: a timeout above 1 s
//!   allows the retry, one below it does not. Random loss (netem or `--mode random`) is not
//!   tested: it cannot give a fixed expected outcome.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crate::util::fixtures::scenario;
use crate::util::lab::{Lab, LAB_DNS_V4};
use crate::util::process::{code, describe};
use crate::util::report::{judge, Probe, Report};

/// Address families of a target or an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
    Both,
}

impl Fam {
    /// The families as the JSON report names them.
    fn names(self) -> &'static [&'static str] {
        match self {
            Fam::V4 => &["ipv4"],
            Fam::V6 => &["ipv6"],
            Fam::Both => &["ipv4", "ipv6"],
        }
    }

    fn has(self, family: &str) -> bool {
        self.names().contains(&family)
    }
}

/// What a row's scenario probes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The row's own `addrs` (only the families of `Case::families`).
    Sink,
    /// An MX target (a mail domain of the lab's DNS).
    Mx(&'static str),
}

/// The expected probes of one user over one or both families.
#[derive(Debug, Clone, Copy)]
struct Exp {
    user: &'static str,
    fam: Fam,
    /// Probes per family.
    count: usize,
    /// Acceptable observed outcomes (more than one only where the row says why).
    observed: &'static [&'static str],
    verdict: &'static str,
    /// `Some` exactly for passing denies.
    witnessed: Option<bool>,
    /// Words every probe's detail must contain.
    detail: &'static [&'static str],
    /// Lower bound on each probe's `elapsed_ms` (proves a delay was really applied).
    min_ms: u64,
}

const fn probe(
    user: &'static str,
    observed: &'static [&'static str],
    verdict: &'static str,
) -> Exp {
    Exp {
        user,
        fam: Fam::Both,
        count: 1,
        observed,
        verdict,
        witnessed: None,
        detail: &[],
        min_ms: 0,
    }
}

/// An allow that connected.
const fn connects(user: &'static str) -> Exp {
    probe(user, CONNECTED, "pass")
}

/// A deny that passed, witnessed or not.
const fn blocked(user: &'static str, observed: &'static [&'static str], witnessed: bool) -> Exp {
    let mut e = probe(user, observed, "pass");
    e.witnessed = Some(witnessed);
    e
}

/// A probe that proved nothing.
const fn inconclusive(user: &'static str, detail: &'static [&'static str]) -> Exp {
    let mut e = probe(user, NO_ADDRESS, "inconclusive");
    e.detail = detail;
    e
}

impl Exp {
    const fn v4(mut self) -> Exp {
        self.fam = Fam::V4;
        self
    }
    const fn v6(mut self) -> Exp {
        self.fam = Fam::V6;
        self
    }
    const fn n(mut self, count: usize) -> Exp {
        self.count = count;
        self
    }
    const fn detail(mut self, words: &'static [&'static str]) -> Exp {
        self.detail = words;
        self
    }
    const fn min_ms(mut self, ms: u64) -> Exp {
        self.min_ms = ms;
        self
    }
}

const CONNECTED: &[&str] = &["connected"];
const REFUSED: &[&str] = &["refused"];
const UNREACHABLE: &[&str] = &["unreachable"];
const TIMEOUT: &[&str] = &["timeout"];
const NO_ADDRESS: &[&str] = &["no-address"];

/// ec-postfix is expected to connect (and so witnesses), www-data to be blocked.
const WITNESSED_DENY: &[(&str, &str)] = &[("ec-postfix", "allow"), ("www-data", "deny")];

/// One case of the matrix.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    /// The mechanism, and why the outcome is what it is.
    why: &'static str,
    /// The row's addresses: `{v4}`/`{v6}` in `setup`, `{a}` in the `*46:` lines, and the
    /// probed addresses of a [`Target::Sink`] row (added to the simulated internet then).
    addrs: (&'static str, &'static str),
    /// Setup, run in order before the table's rows run: one command a line, as
    /// [`Lab::setup`] reads it (e.g. `host46: ARGS`, `iptables ARGS` with `{a}` = v4 and
    /// `ip6tables ARGS` with `{a}` = v6).
    setup: &'static [&'static str],
    target: Target,
    families: Fam,
    port: u16,
    timeout: &'static str,
    nameserver: &'static str,
    /// (user, expect) checks of the scenario.
    checks: &'static [(&'static str, &'static str)],
    expect: &'static [Exp],
    exit: i32,
    /// The exact set of exchange names in the report (MX rows; empty: not checked).
    exchanges: &'static [&'static str],
    /// The exact set of addresses probed (MX rows; empty: not checked).
    to: &'static [&'static str],
    /// Families in which nothing can connect, so no deny there may be a witnessed pass.
    unprovable: Option<Fam>,
    /// Lower bound on the run's wall time (proves a DNS delay was really applied).
    min_wall_ms: u64,
    /// The fault happens once (the first SYN only), so a second run cannot observe the same:
    /// the row is not repeated with `--explain`.
    one_shot: bool,
}

const ROW: Case = Case {
    name: "",
    why: "",
    addrs: ("", ""),
    setup: &[],
    target: Target::Sink,
    families: Fam::Both,
    port: 25,
    timeout: "1s",
    nameserver: LAB_DNS_V4,
    checks: WITNESSED_DENY,
    expect: &[],
    exit: 0,
    exchanges: &[],
    to: &[],
    unprovable: None,
    min_wall_ms: 0,
    one_shot: false,
};

/// Network faults. Unless a row says otherwise, everyone but ec-postfix is blocked on the
/// row's addresses, so ec-postfix's connection witnesses www-data's deny.
const NETWORK: &[Case] = &[
    Case {
        name: "drop",
        why: "DROP: the SYN vanishes, connect() times out",
        addrs: ("203.0.113.20", "2001:db8:200::20"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP"],
        expect: &[connects("ec-postfix"), blocked("www-data", TIMEOUT, true)],
        ..ROW
    },
    Case {
        name: "reject-tcp-reset",
        why: "REJECT --reject-with tcp-reset: a RST, ECONNREFUSED",
        addrs: ("203.0.113.21", "2001:db8:200::21"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with tcp-reset"],
        expect: &[
            connects("ec-postfix"),
            blocked("www-data", REFUSED, true).detail(&["ECONNREFUSED"]),
        ],
        ..ROW
    },
    Case {
        name: "reject-icmp-port-unreachable",
        why: "REJECT with ICMP(v6) port unreachable: Linux reports ECONNREFUSED. Over IPv6 the \
              kernel ignores the error for the first SYN (raised while connect() owns the \
              socket) and fails at the SYN retransmit after ~1 s, hence the 3 s timeout",
        addrs: ("203.0.113.22", "2001:db8:200::22"),
        setup: &[
            "host: iptables -A OUTPUT -p tcp -d {v4} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp-port-unreachable",
            "host: ip6tables -A OUTPUT -p tcp -d {v6} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp6-port-unreachable",
        ],
        timeout: "3s",
        expect: &[
            connects("ec-postfix"),
            blocked("www-data", REFUSED, true).detail(&["ECONNREFUSED"]),
        ],
        ..ROW
    },
    Case {
        name: "reject-admin-prohibited",
        why: "REJECT icmp-admin-prohibited (v4: EHOSTUNREACH) / icmp6-adm-prohibited (v6: \
              EACCES, after the SYN retransmit as above)",
        addrs: ("203.0.113.23", "2001:db8:200::23"),
        setup: &[
            "host: iptables -A OUTPUT -p tcp -d {v4} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp-admin-prohibited",
            "host: ip6tables -A OUTPUT -p tcp -d {v6} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp6-adm-prohibited",
        ],
        timeout: "3s",
        expect: &[
            connects("ec-postfix"),
            blocked("www-data", UNREACHABLE, true).v4().detail(&["EHOSTUNREACH"]),
            blocked("www-data", UNREACHABLE, true).v6().detail(&["EACCES"]),
        ],
        ..ROW
    },
    Case {
        name: "reject-addr-unreachable",
        why: "REJECT icmp-host-unreachable (v4) / icmp6-addr-unreachable (v6): EHOSTUNREACH \
              (v6 after the SYN retransmit as above)",
        addrs: ("203.0.113.24", "2001:db8:200::24"),
        setup: &[
            "host: iptables -A OUTPUT -p tcp -d {v4} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp-host-unreachable",
            "host: ip6tables -A OUTPUT -p tcp -d {v6} --dport 25 -m owner ! --uid-owner ec-postfix -j REJECT --reject-with icmp6-addr-unreachable",
        ],
        timeout: "3s",
        expect: &[
            connects("ec-postfix"),
            blocked("www-data", UNREACHABLE, true).detail(&["EHOSTUNREACH"]),
        ],
        ..ROW
    },
    Case {
        name: "remote-port-closed",
        why: "no firewall, the remote port is closed: its RST is refused for everyone, so the \
              allow fails and the deny passes unwitnessed (nothing shows a firewall did it)",
        addrs: ("203.0.113.25", "2001:db8:200::25"),
        port: 26,
        expect: &[
            probe("ec-postfix", REFUSED, "fail"),
            blocked("www-data", REFUSED, false),
        ],
        exit: 1,
        unprovable: Some(Fam::Both),
        ..ROW
    },
    Case {
        name: "remote-accepts-then-resets",
        why: "no firewall, the remote accepts and resets at once (SO_LINGER 0): connect() \
              succeeded, the handshake got through, so it is `connected` and the deny fails",
        addrs: ("203.0.113.26", "2001:db8:200::26"),
        setup: &["lab: reset-listener 27"],
        port: 27,
        expect: &[connects("ec-postfix"), probe("www-data", CONNECTED, "fail")],
        exit: 1,
        ..ROW
    },
    Case {
        name: "remote-resets-after-handshake",
        why: "the remote's firewall answers the handshake's final ACK with a RST (REJECT \
              tcp-reset, ctstate ESTABLISHED): the same as above, but the RST reliably lands \
              before connect() reports, which then says ECONNRESET; the handshake completed all \
              the same, so it is `connected` (ECONNREFUSED is the RST to a SYN)",
        addrs: ("203.0.113.31", "2001:db8:200::31"),
        setup: &["net46: -A INPUT -p tcp -d {a} --dport 25 --tcp-flags SYN,ACK,FIN,RST ACK -m conntrack --ctstate ESTABLISHED -j REJECT --reject-with tcp-reset"],
        expect: &[connects("ec-postfix"), probe("www-data", CONNECTED, "fail")],
        exit: 1,
        ..ROW
    },
    Case {
        name: "slow-handshake-under-timeout",
        why: "the remote sees each SYN 1.5 s late (NFQUEUE delay), timeout 2 s: ec-postfix \
              connects after >= 1.5 s and witnesses the DROP of www-data",
        addrs: ("203.0.113.27", "2001:db8:200::27"),
        setup: &[
            "lab: delay 1 1500",
            "net46: -t mangle -A PREROUTING -p tcp --syn -d {a} --dport 25 -j NFQUEUE --queue-num 1 --queue-bypass",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
        ],
        timeout: "2s",
        expect: &[
            connects("ec-postfix").min_ms(1450),
            blocked("www-data", TIMEOUT, true),
        ],
        ..ROW
    },
    Case {
        name: "slow-handshake-over-timeout",
        why: "the same with a 2.5 s delay: nobody connects within 2 s, so the allow fails and \
              the DROP of www-data cannot be told from a slow remote (unwitnessed)",
        addrs: ("203.0.113.28", "2001:db8:200::28"),
        setup: &[
            "lab: delay 2 2500",
            "net46: -t mangle -A PREROUTING -p tcp --syn -d {a} --dport 25 -j NFQUEUE --queue-num 2 --queue-bypass",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
        ],
        timeout: "2s",
        expect: &[
            probe("ec-postfix", TIMEOUT, "fail"),
            blocked("www-data", TIMEOUT, false),
        ],
        exit: 1,
        unprovable: Some(Fam::Both),
        ..ROW
    },
    Case {
        name: "loss-retried-within-timeout",
        why: "the link loses the first SYN (statistic nth, per family); timeout 2 s leaves \
              room for the retransmit after 1 s: ec-postfix connects, witnessing www-data's DROP",
        addrs: ("203.0.113.29", "2001:db8:200::29"),
        setup: &[
            "net46: -A INPUT -p tcp --syn -d {a} --dport 25 -m statistic --mode nth --every 1000 --packet 0 -j DROP",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
        ],
        timeout: "2s",
        expect: &[
            connects("ec-postfix").min_ms(900),
            blocked("www-data", TIMEOUT, true),
        ],
        one_shot: true,
        ..ROW
    },
    Case {
        name: "loss-not-retried-within-timeout",
        why: "the same loss with a 500 ms timeout: no room for the retransmit, the allow fails \
              and the deny passes unwitnessed",
        addrs: ("203.0.113.30", "2001:db8:200::30"),
        setup: &[
            "net46: -A INPUT -p tcp --syn -d {a} --dport 25 -m statistic --mode nth --every 1000 --packet 0 -j DROP",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
        ],
        timeout: "500ms",
        expect: &[
            probe("ec-postfix", TIMEOUT, "fail"),
            blocked("www-data", TIMEOUT, false),
        ],
        exit: 1,
        unprovable: Some(Fam::Both),
        one_shot: true,
        ..ROW
    },
];

/// Faults of the host's own stack: each row gets a lab of its own.
const HOST_STACK: &[Case] = &[
    Case {
        name: "no-ipv6-route",
        why: "the host has no IPv6 default route: connect() fails at once with ENETUNREACH for \
              everyone, so the IPv6 allow fails and the IPv6 deny passes unwitnessed; IPv4 is \
              a witnessed DROP",
        addrs: ("203.0.113.40", "2001:db8:200::40"),
        setup: &[
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
            "host: ip -6 route del default",
        ],
        expect: &[
            connects("ec-postfix").v4(),
            probe("ec-postfix", UNREACHABLE, "fail")
                .v6()
                .detail(&["ENETUNREACH"]),
            blocked("www-data", TIMEOUT, true).v4(),
            blocked("www-data", UNREACHABLE, false)
                .v6()
                .detail(&["ENETUNREACH"]),
        ],
        exit: 1,
        unprovable: Some(Fam::V6),
        ..ROW
    },
    Case {
        name: "ipv6-disabled-by-sysctl",
        why: "net.ipv6.conf.all.disable_ipv6=1 in the host: no IPv6 source address, connect() \
              fails at once with EADDRNOTAVAIL (unreachable); as above, never a witnessed pass",
        addrs: ("203.0.113.41", "2001:db8:200::41"),
        setup: &[
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner ! --uid-owner ec-postfix -j DROP",
            "host: sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
        ],
        expect: &[
            connects("ec-postfix").v4(),
            probe("ec-postfix", UNREACHABLE, "fail")
                .v6()
                .detail(&["EADDRNOTAVAIL"]),
            blocked("www-data", TIMEOUT, true).v4(),
            blocked("www-data", UNREACHABLE, false)
                .v6()
                .detail(&["EADDRNOTAVAIL"]),
        ],
        exit: 1,
        unprovable: Some(Fam::V6),
        ..ROW
    },
];

/// ec-web is the user whose deny cannot be decided in these rows.
const WEB_DENY: &[(&str, &str)] = &[("ec-web", "deny")];
const POSTFIX_ALLOW: &[(&str, &str)] = &[("ec-postfix", "allow")];
const DUAL: &[&str] = &[
    "203.0.113.10",
    "2001:db8:200::10",
    "203.0.113.11",
    "2001:db8:200::11",
];

/// DNS faults (the lab's zone, see `testkit/src/test_lab.rs`). A failed lookup is
/// `no-address` and inconclusive (exit 3) with the name and the reason in the detail, never a
/// pass. Only the `cname` row firewalls (www-data on mx1.dual.test port 25) and only the
/// `many-exchanges` row uses port 587 (ec-web rejected there), so the rows do not interfere.
const DNS: &[Case] = &[
    Case {
        name: "nxdomain",
        why: "the mail domain does not exist",
        target: Target::Mx("nx.test"),
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["nx.test", "NXDOMAIN"])],
        exit: 3,
        ..ROW
    },
    Case {
        name: "servfail",
        why: "the nameserver answers SERVFAIL",
        target: Target::Mx("servfail.test"),
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["servfail.test", "SERVFAIL"])],
        exit: 3,
        ..ROW
    },
    Case {
        name: "nameserver-unreachable",
        why: "nobody has the nameserver's address (on the link, ARP fails): every query times out",
        target: Target::Mx("dual.test"),
        nameserver: "198.51.100.99",
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["dual.test", "timed out"])],
        exit: 3,
        ..ROW
    },
    Case {
        name: "nameserver-port-closed",
        why: "the nameserver's host answers ICMP port unreachable (the resolver ignores it and \
              times out)",
        target: Target::Mx("dual.test"),
        nameserver: "198.51.100.2:5354",
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["dual.test"])],
        exit: 3,
        ..ROW
    },
    Case {
        name: "nameserver-slower-than-timeout",
        why: "a nameserver address that sees every query 8 s late (NFQUEUE delay, then DNAT to \
              the lab's DNS): longer than all the resolver's tries (2 s each, ~6 s in all)",
        addrs: ("198.51.100.4", ""),
        setup: &[
            "lab: delay 3 8000",
            "net: ip addr add {v4}/32 dev lo",
            "net: iptables -t mangle -A PREROUTING -d {v4} -p udp --dport 53 -j NFQUEUE --queue-num 3 --queue-bypass",
            "net: iptables -t mangle -A PREROUTING -d {v4} -p tcp --dport 53 -j NFQUEUE --queue-num 3 --queue-bypass",
            "net: iptables -t nat -A PREROUTING -d {v4} -p udp --dport 53 -j DNAT --to-destination 198.51.100.2",
            "net: iptables -t nat -A PREROUTING -d {v4} -p tcp --dport 53 -j DNAT --to-destination 198.51.100.2",
        ],
        target: Target::Mx("dual.test"),
        nameserver: "198.51.100.4",
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["dual.test", "timed out"])],
        exit: 3,
        min_wall_ms: 4000,
        ..ROW
    },
    Case {
        name: "nameserver-slow-under-timeout",
        why: "the same with a 1 s delay, under the 2 s per query: the MX answer carries the \
              exchanges' A and AAAA (additional section), so resolving is one delayed round \
              trip and everything resolves",
        addrs: ("198.51.100.3", ""),
        setup: &[
            "lab: delay 4 1000",
            "net: ip addr add {v4}/32 dev lo",
            "net: iptables -t mangle -A PREROUTING -d {v4} -p udp --dport 53 -j NFQUEUE --queue-num 4 --queue-bypass",
            "net: iptables -t mangle -A PREROUTING -d {v4} -p tcp --dport 53 -j NFQUEUE --queue-num 4 --queue-bypass",
            "net: iptables -t nat -A PREROUTING -d {v4} -p udp --dport 53 -j DNAT --to-destination 198.51.100.2",
            "net: iptables -t nat -A PREROUTING -d {v4} -p tcp --dport 53 -j DNAT --to-destination 198.51.100.2",
        ],
        target: Target::Mx("dual.test"),
        nameserver: "198.51.100.3",
        checks: POSTFIX_ALLOW,
        expect: &[connects("ec-postfix").n(2)],
        exchanges: &["mx1.dual.test", "mx2.dual.test"],
        to: DUAL,
        min_wall_ms: 950,
        ..ROW
    },
    Case {
        name: "mx-without-aaaa",
        why: "the only exchange has an A but no AAAA: IPv4 is tested, IPv6 is no-address",
        target: Target::Mx("v4only.test"),
        checks: POSTFIX_ALLOW,
        expect: &[
            connects("ec-postfix").v4(),
            inconclusive("ec-postfix", &["mx.v4only.test", "AAAA"]).v6(),
        ],
        exit: 3,
        exchanges: &["mx.v4only.test"],
        to: &["203.0.113.12"],
        ..ROW
    },
    Case {
        name: "null-mx",
        why: "MX 0 \".\" (RFC 7505): the domain accepts no mail, nothing to probe",
        target: Target::Mx("nullmx.test"),
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["nullmx.test", "null MX"])],
        exit: 3,
        exchanges: &["."],
        ..ROW
    },
    Case {
        name: "mx-is-a-cname",
        why: "the exchange alias.cname.test is a CNAME of mx1.dual.test: its addresses are \
              probed, www-data is rejected there and ec-postfix witnesses it",
        addrs: ("203.0.113.10", "2001:db8:200::10"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --uid-owner www-data -j REJECT --reject-with tcp-reset"],
        target: Target::Mx("cname.test"),
        expect: &[connects("ec-postfix"), blocked("www-data", REFUSED, true)],
        exchanges: &["alias.cname.test"],
        to: &["203.0.113.10", "2001:db8:200::10"],
        ..ROW
    },
    Case {
        name: "exchange-does-not-resolve",
        why: "the MX names missing.dangling.test, which is NXDOMAIN",
        target: Target::Mx("dangling.test"),
        checks: WEB_DENY,
        expect: &[inconclusive("ec-web", &["missing.dangling.test", "NXDOMAIN"])],
        exit: 3,
        exchanges: &["missing.dangling.test"],
        ..ROW
    },
    Case {
        name: "many-exchanges",
        why: "eight exchanges over three sinks, port 587: every exchange and family is probed; \
              ec-web is rejected there, ec-postfix witnesses every address",
        setup: &["host46: -A OUTPUT -p tcp --dport 587 -m owner --uid-owner ec-web -j REJECT --reject-with tcp-reset"],
        target: Target::Mx("many.test"),
        port: 587,
        checks: &[("ec-postfix", "allow"), ("ec-web", "deny")],
        expect: &[connects("ec-postfix").n(8), blocked("ec-web", REFUSED, true).n(8)],
        exchanges: &[
            "mx1.many.test",
            "mx2.many.test",
            "mx3.many.test",
            "mx4.many.test",
            "mx5.many.test",
            "mx6.many.test",
            "mx7.many.test",
            "mx8.many.test",
        ],
        to: &[
            "203.0.113.10",
            "203.0.113.11",
            "203.0.113.12",
            "2001:db8:200::10",
            "2001:db8:200::11",
            "2001:db8:200::12",
        ],
        ..ROW
    },
];

/// Owner rules: the probes must carry the user's uid, primary gid and supplementary groups
/// exactly as a login would (ec-suppl's primary group is ec-suppl, ec-mailers is
/// supplementary; ec-web's primary group is ec-web).
const IDENTITY: &[Case] = &[
    Case {
        name: "owner-uid",
        why: "iptables -m owner --uid-owner www-data REJECT (tcp-reset)",
        addrs: ("203.0.113.50", "2001:db8:200::50"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --uid-owner www-data -j REJECT --reject-with tcp-reset"],
        expect: &[connects("ec-postfix"), blocked("www-data", REFUSED, true)],
        ..ROW
    },
    Case {
        name: "owner-primary-gid",
        why: "iptables -m owner --gid-owner ec-web DROP: ec-web's primary group; ec-suppl is not \
              in it and connects",
        addrs: ("203.0.113.51", "2001:db8:200::51"),
        setup: &["host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --gid-owner ec-web -j DROP"],
        checks: &[("ec-suppl", "allow"), ("ec-web", "deny")],
        expect: &[connects("ec-suppl"), blocked("ec-web", TIMEOUT, true)],
        ..ROW
    },
    Case {
        name: "owner-supplementary-gid",
        why: "--gid-owner ec-mailers --suppl-groups ACCEPT, then DROP: ec-suppl connects only \
              through its supplementary group, and witnesses ec-web's DROP",
        addrs: ("203.0.113.52", "2001:db8:200::52"),
        setup: &[
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --gid-owner ec-mailers --suppl-groups -j ACCEPT",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -j DROP",
        ],
        checks: &[("ec-suppl", "allow"), ("ec-web", "deny")],
        expect: &[connects("ec-suppl"), blocked("ec-web", TIMEOUT, true)],
        ..ROW
    },
    Case {
        name: "owner-gid-without-suppl-groups",
        why: "--gid-owner ec-mailers without --suppl-groups matches the primary gid only: \
              ec-suppl falls through to the DROP; ec-postfix (--uid-owner) witnesses",
        addrs: ("203.0.113.53", "2001:db8:200::53"),
        setup: &[
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --uid-owner ec-postfix -j ACCEPT",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -m owner --gid-owner ec-mailers -j ACCEPT",
            "host46: -A OUTPUT -p tcp -d {a} --dport 25 -j DROP",
        ],
        checks: &[("ec-postfix", "allow"), ("ec-suppl", "deny")],
        expect: &[connects("ec-postfix"), blocked("ec-suppl", TIMEOUT, true)],
        ..ROW
    },
    Case {
        name: "nft-meta-skuid",
        why: "nftables inet table: meta skuid www-data reject with tcp reset",
        addrs: ("203.0.113.54", "2001:db8:200::54"),
        setup: &[
            "host: nft add table inet fm_skuid",
            "host: nft add chain inet fm_skuid out { type filter hook output priority 0 ; policy accept ; }",
            "host: nft add rule inet fm_skuid out ip daddr {v4} tcp dport 25 meta skuid www-data reject with tcp reset",
            "host: nft add rule inet fm_skuid out ip6 daddr {v6} tcp dport 25 meta skuid www-data reject with tcp reset",
        ],
        expect: &[connects("ec-postfix"), blocked("www-data", REFUSED, true)],
        ..ROW
    },
    Case {
        name: "nft-meta-skgid-primary",
        why: "nftables: meta skgid ec-web drop (ec-web's primary group)",
        addrs: ("203.0.113.55", "2001:db8:200::55"),
        setup: &[
            "host: nft add table inet fm_skgid",
            "host: nft add chain inet fm_skgid out { type filter hook output priority 0 ; policy accept ; }",
            "host: nft add rule inet fm_skgid out ip daddr {v4} tcp dport 25 meta skgid ec-web drop",
            "host: nft add rule inet fm_skgid out ip6 daddr {v6} tcp dport 25 meta skgid ec-web drop",
        ],
        checks: &[("ec-postfix", "allow"), ("ec-web", "deny")],
        expect: &[connects("ec-postfix"), blocked("ec-web", TIMEOUT, true)],
        ..ROW
    },
    Case {
        name: "nft-meta-skgid-is-not-supplementary",
        why: "nftables: meta skgid ec-mailers accept, then drop: skgid is the socket's (primary) \
              gid, so ec-suppl, a supplementary member, is dropped; ec-postfix (skuid) witnesses",
        addrs: ("203.0.113.56", "2001:db8:200::56"),
        setup: &[
            "host: nft add table inet fm_skgid_suppl",
            "host: nft add chain inet fm_skgid_suppl out { type filter hook output priority 0 ; policy accept ; }",
            "host: nft add rule inet fm_skgid_suppl out ip daddr {v4} tcp dport 25 meta skuid ec-postfix accept",
            "host: nft add rule inet fm_skgid_suppl out ip6 daddr {v6} tcp dport 25 meta skuid ec-postfix accept",
            "host: nft add rule inet fm_skgid_suppl out ip daddr {v4} tcp dport 25 meta skgid ec-mailers accept",
            "host: nft add rule inet fm_skgid_suppl out ip6 daddr {v6} tcp dport 25 meta skgid ec-mailers accept",
            "host: nft add rule inet fm_skgid_suppl out ip daddr {v4} tcp dport 25 drop",
            "host: nft add rule inet fm_skgid_suppl out ip6 daddr {v6} tcp dport 25 drop",
        ],
        checks: &[("ec-postfix", "allow"), ("ec-suppl", "deny")],
        expect: &[connects("ec-postfix"), blocked("ec-suppl", TIMEOUT, true)],
        ..ROW
    },
];

#[test]
fn network_faults() {
    run_shared(NETWORK);
}

#[test]
fn dns_faults() {
    run_shared(DNS);
}

#[test]
fn identity_faults() {
    run_shared(IDENTITY);
}

#[test]
fn host_stack_faults() {
    run_isolated(HOST_STACK);
}

/// The tables themselves: names unique, a shared lab's sink addresses and queue numbers
/// unique, every expectation's user checked, every checked user expected.
#[test]
fn tables_are_well_formed() {
    let all: Vec<&Case> = [NETWORK, DNS, IDENTITY, HOST_STACK]
        .iter()
        .flat_map(|t| t.iter())
        .collect();
    let mut names = BTreeSet::new();
    let mut queues = BTreeSet::new();
    for case in &all {
        assert!(
            names.insert(case.name),
            "row name {} is used twice",
            case.name
        );
        for line in case.setup {
            assert!(
                line.split_once(':').is_some_and(|(kind, _)| {
                    ["host", "net", "host46", "net46", "lab"].contains(&kind)
                }),
                "{}: setup line {line:?} must start with host:, net:, host46:, net46: or lab:",
                case.name
            );
            if let Some(queue) = line.strip_prefix("lab: delay ") {
                let queue = queue.split_whitespace().next().unwrap();
                assert!(
                    queues.insert(queue),
                    "{}: NFQUEUE {queue} is used twice",
                    case.name
                );
            }
        }
        let checked: BTreeSet<&str> = case.checks.iter().map(|(u, _)| *u).collect();
        let expected: BTreeSet<&str> = case.expect.iter().map(|e| e.user).collect();
        assert_eq!(
            checked, expected,
            "{}: checked vs expected users",
            case.name
        );
        for e in case.expect {
            let expect = case.checks.iter().find(|(u, _)| *u == e.user).unwrap().1;
            for &observed in e.observed {
                assert_eq!(
                    judge(expect, observed),
                    e.verdict,
                    "{}: {} expects {expect}, observed {observed}",
                    case.name,
                    e.user
                );
            }
        }
        if matches!(case.target, Target::Sink) {
            for family in case.families.names() {
                let addr = sink_addr(case, family);
                assert!(
                    addr.parse::<IpAddr>().is_ok(),
                    "{}: {family} sink address {addr:?}",
                    case.name
                );
            }
        }
    }
    for table in [NETWORK, DNS, IDENTITY] {
        let mut sinks = BTreeSet::new();
        for case in table.iter().filter(|c| matches!(c.target, Target::Sink)) {
            for family in case.families.names() {
                let addr = sink_addr(case, family);
                assert!(
                    sinks.insert(addr),
                    "{}: sink {addr} is used twice",
                    case.name
                );
            }
        }
    }
}

fn sink_addr(case: &Case, family: &str) -> &'static str {
    if family == "ipv4" {
        case.addrs.0
    } else {
        case.addrs.1
    }
}

/// What a row came to: `Ok` with its summary (see [`summary`]), or why it did not hold.
type RowResult = Result<String, RowFailure>;

/// Why a row did not hold.
#[derive(Debug)]
enum RowFailure {
    /// The row ran, and these of its expectations did not hold; `context` has the scenario,
    /// the report's probes and the run's output.
    Mismatches {
        errors: Vec<String>,
        context: String,
    },
    /// The row's thread panicked (in its setup, or in an assertion of a helper): the message.
    Panicked(String),
}

impl fmt::Display for RowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowFailure::Mismatches { errors, context } => {
                write!(f, "- {}\n{context}", errors.join("\n- "))
            }
            RowFailure::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Runs every row of `table` in one lab, all at once.
fn run_shared(table: &'static [Case]) {
    let Some(lab) = Lab::up() else { return };
    for case in table {
        prepare(&lab, case);
    }
    run_rows(table, |case| run_case(&lab, case));
}

/// Runs every row of `table` in a lab of its own, all at once.
fn run_isolated(table: &'static [Case]) {
    run_rows(table, |case| {
        let Some(lab) = Lab::up() else {
            return Ok(String::new());
        };
        prepare(&lab, case);
        run_case(&lab, case)
    });
}

/// Runs `row` for every case of `table`, each in a thread of its own, all at once, and
/// concludes on their results: one row's failure or panic does not hide the others'.
fn run_rows(table: &'static [Case], row: impl Fn(&'static Case) -> RowResult + Sync) {
    let results: Vec<RowResult> = std::thread::scope(|s| {
        let row = &row;
        let handles: Vec<_> = table
            .iter()
            .map(|case| s.spawn(move || row(case)))
            .collect();
        handles.into_iter().map(join).collect()
    });
    conclude(table, results);
}

/// The result of a row's thread, its panic turned into [`RowFailure::Panicked`].
fn join(handle: ScopedJoinHandle<'_, RowResult>) -> RowResult {
    handle.join().unwrap_or_else(|panic| {
        Err(RowFailure::Panicked(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".to_string()),
        ))
    })
}

/// Prints every row's observations (visible with `--nocapture`) and fails naming every row
/// that did not hold.
fn conclude(table: &[Case], results: Vec<RowResult>) {
    let mut failures = String::new();
    for (case, result) in table.iter().zip(results) {
        match result {
            Ok(summary) => eprint!("{summary}"),
            Err(why) => {
                let _ = writeln!(
                    failures,
                    "\n=== row {} ({}) ===\n{why}",
                    case.name, case.why
                );
            }
        }
    }
    assert!(failures.is_empty(), "fault matrix rows failed:{failures}");
}

/// Adds a sink row's addresses to the simulated internet and runs the row's setup.
fn prepare(lab: &Lab, case: &Case) {
    if matches!(case.target, Target::Sink) {
        for family in case.families.names() {
            lab.add_sink(sink_addr(case, family));
        }
    }
    lab.setup(case.name, case.addrs, case.setup);
}

/// The scenario file of a row.
fn scenario_text(case: &Case) -> String {
    let mut text = format!(
        "timeout = \"{}\"\nnameserver = \"{}\"\n\n[[target]]\nname = \"{}\"\n",
        case.timeout, case.nameserver, case.name
    );
    let families = case.families.names();
    match case.target {
        Target::Sink => {
            let addrs: Vec<String> = families
                .iter()
                .map(|f| format!("\"{}\"", sink_addr(case, f)))
                .collect();
            let _ = writeln!(text, "address = [{}]", addrs.join(", "));
        }
        Target::Mx(domain) => {
            let _ = writeln!(text, "mx = \"{domain}\"");
        }
    }
    let quoted: Vec<String> = families.iter().map(|f| format!("\"{f}\"")).collect();
    let _ = writeln!(
        text,
        "ports = [{}]\nfamilies = [{}]",
        case.port,
        quoted.join(", ")
    );
    for (user, expect) in case.checks {
        let _ = write!(
            text,
            "\n[[check]]\nas = [\"{user}\"]\nexpect = \"{expect}\"\n"
        );
    }
    text
}

/// Runs one row and checks it; `Ok` carries the row's summary, `Err` every mismatch.
fn run_case(lab: &Lab, case: &Case) -> RowResult {
    let text = scenario_text(case);
    let file = scenario(&text);
    let start = Instant::now();
    let (out, report) = lab.run_json(&["run", file.path()]);
    let wall = start.elapsed();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parsed before");

    let mut errors = Vec::new();
    let exit = code(&out);
    if exit != case.exit {
        errors.push(format!("exit code {exit}, expected {}", case.exit));
    }
    check_invariants(case, &report, &doc, exit, &mut errors);
    check_expectations(case, &report, &mut errors);
    if wall < Duration::from_millis(case.min_wall_ms) {
        errors.push(format!(
            "the run took {wall:?}, less than {} ms: the delay was not applied",
            case.min_wall_ms
        ));
    }

    if !case.one_shot {
        check_explained_run(lab, file.path(), exit, &report, &mut errors);
    }

    if errors.is_empty() {
        Ok(summary(case, &report, exit, wall))
    } else {
        Err(RowFailure::Mismatches {
            errors,
            context: format!(
                "scenario:\n{text}\nreport probes: {:#?}\n{}",
                report.probes,
                describe(&out)
            ),
        })
    }
}

/// The row again with `--explain`: the same exit code and the same observations and
/// verdicts, and every probe that sent a packet says what decided it.
fn check_explained_run(lab: &Lab, path: &str, exit: i32, plain: &Report, errors: &mut Vec<String>) {
    let (out, report) = lab.run_json(&["run", path, "--explain"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parsed before");
    if code(&out) != exit {
        errors.push(format!(
            "with --explain: exit code {}, without: {exit}",
            code(&out)
        ));
    }
    let key = |p: &Probe| {
        format!(
            "{} {} {:?} {} {} {:?}",
            p.user, p.family, p.address, p.observed, p.verdict, p.witnessed
        )
    };
    let plain: BTreeSet<String> = plain.probes.iter().map(key).collect();
    let explained: BTreeSet<String> = report.probes.iter().map(key).collect();
    if plain != explained {
        errors.push(format!(
            "with --explain the probes differ: without {plain:?}, with {explained:?}"
        ));
    }
    for p in doc["probes"].as_array().into_iter().flatten() {
        let sent = p["observed"] != "no-address";
        if sent && p["decided_by"]["text"].as_str().is_none() {
            errors.push(format!("with --explain, no decided_by: {p}"));
        }
    }
}

/// What holds for every probe of every row, whatever the case.
fn check_invariants(
    case: &Case,
    report: &Report,
    doc: &serde_json::Value,
    exit: i32,
    errors: &mut Vec<String>,
) {
    if exit != report.documented_exit() {
        errors.push(format!(
            "exit {exit} disagrees with failed={} inconclusive={}",
            report.failed, report.inconclusive
        ));
    }
    // Only a connection that left the host witnesses anything.
    let connected: BTreeSet<(String, u64)> = report
        .probes
        .iter()
        .filter(|p| p.observed == "connected" && !p.local)
        .filter_map(|p| Some((p.address.clone()?, p.port)))
        .collect();
    let mut unwitnessed = 0;
    for p in &report.probes {
        let at = format!("{} {} {:?}:{}", p.user, p.family, p.address, p.port);
        if p.local && (p.verdict == "pass" || p.witnessed.is_some()) {
            errors.push(format!(
                "{at}: a local probe (it never left the host) is {} with witnessed {:?}",
                p.verdict, p.witnessed
            ));
        }
        let expect = case.checks.iter().find(|(u, _)| *u == p.user).map(|c| c.1);
        if expect != Some(p.expect.as_str()) {
            errors.push(format!("{at}: expect {} is not the row's check", p.expect));
        }
        let verdict = if p.local {
            "inconclusive"
        } else {
            judge(&p.expect, &p.observed)
        };
        if p.verdict != verdict {
            errors.push(format!(
                "{at}: expect {} observed {} must be {verdict}, is {}",
                p.expect, p.observed, p.verdict
            ));
        }
        if matches!(p.observed.as_str(), "error" | "no-address") && p.verdict == "pass" {
            errors.push(format!("{at}: {} passed", p.observed));
        }
        let witnessed = (p.expect == "deny" && p.verdict == "pass").then(|| {
            p.address
                .as_ref()
                .is_some_and(|a| connected.contains(&(a.clone(), p.port)))
        });
        if p.witnessed != witnessed {
            errors.push(format!(
                "{at}: witnessed is {:?}, the run's connections say {witnessed:?}",
                p.witnessed
            ));
        }
        if p.witnessed == Some(false) {
            unwitnessed += 1;
        }
        if case.unprovable.is_some_and(|f| f.has(&p.family))
            && p.expect == "deny"
            && p.verdict == "pass"
            && p.witnessed != Some(false)
        {
            errors.push(format!(
                "{at}: nothing can connect in {}, yet the deny is a witnessed pass",
                p.family
            ));
        }
        if !case.families.has(&p.family) {
            errors.push(format!("{at}: family not in the scenario"));
        }
        if p.port != u64::from(case.port) {
            errors.push(format!("{at}: wrong port"));
        }
        if matches!(case.target, Target::Sink)
            && p.address.as_deref() != Some(sink_addr(case, &p.family))
        {
            errors.push(format!("{at}: not the row's {} address", p.family));
        }
        if p.observed == "no-address" && p.address.is_some() {
            errors.push(format!("{at}: no-address probe with an address"));
        }
        if p.observed != "no-address" && p.address.is_none() {
            errors.push(format!("{at}: {} without an address", p.observed));
        }
    }
    if doc["unwitnessed_denies"].as_u64() != Some(unwitnessed) {
        errors.push(format!(
            "unwitnessed_denies is {}, {unwitnessed} probes are unwitnessed passing denies",
            doc["unwitnessed_denies"]
        ));
    }
    if !case.exchanges.is_empty() {
        let seen: BTreeSet<&str> = report
            .probes
            .iter()
            .map(|p| p.exchange.as_deref().unwrap_or("(none)"))
            .map(|e| if e.is_empty() { "." } else { e })
            .collect();
        let want: BTreeSet<&str> = case.exchanges.iter().copied().collect();
        if seen != want {
            errors.push(format!("exchanges {seen:?}, expected {want:?}"));
        }
    }
    if !case.to.is_empty() {
        let seen: BTreeSet<&str> = report
            .probes
            .iter()
            .filter_map(|p| p.address.as_deref())
            .collect();
        let want: BTreeSet<&str> = case.to.iter().copied().collect();
        if seen != want {
            errors.push(format!("probed addresses {seen:?}, expected {want:?}"));
        }
    }
}

/// The row's own expectations, and that they account for every probe.
fn check_expectations(case: &Case, report: &Report, errors: &mut Vec<String>) {
    let mut accounted = 0;
    for e in case.expect {
        for family in e.fam.names() {
            let probes: Vec<&Probe> = report.of(e.user, family);
            accounted += probes.len();
            if probes.len() != e.count {
                errors.push(format!(
                    "{} {family}: {} probes, expected {}",
                    e.user,
                    probes.len(),
                    e.count
                ));
            }
            for p in probes {
                let at = format!("{} {family} {:?}", e.user, p.address);
                if !e.observed.contains(&p.observed.as_str()) || p.verdict != e.verdict {
                    errors.push(format!(
                        "{at}: observed {} verdict {}, expected {:?} {} (detail {:?})",
                        p.observed, p.verdict, e.observed, e.verdict, p.detail
                    ));
                }
                if p.witnessed != e.witnessed {
                    errors.push(format!(
                        "{at}: witnessed {:?}, expected {:?}",
                        p.witnessed, e.witnessed
                    ));
                }
                let detail = p.detail.as_deref().unwrap_or("");
                for word in e.detail {
                    if !detail.contains(word) {
                        errors.push(format!("{at}: detail {detail:?} lacks {word:?}"));
                    }
                }
                if (p.elapsed_ms as u64) < e.min_ms {
                    errors.push(format!(
                        "{at}: took {} ms, less than {} ms: the delay was not applied",
                        p.elapsed_ms, e.min_ms
                    ));
                }
            }
        }
    }
    if accounted != report.probes.len() {
        errors.push(format!(
            "{} probes in the report, the row accounts for {accounted}",
            report.probes.len()
        ));
    }
}

/// One line per user and family: what was observed.
fn summary(case: &Case, report: &Report, exit: i32, wall: Duration) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for p in &report.probes {
        if !seen.insert((p.user.clone(), p.family.clone())) {
            continue;
        }
        let group: Vec<&Probe> = report.of(&p.user, &p.family);
        let set = |f: &dyn Fn(&Probe) -> String| {
            group
                .iter()
                .map(|p| f(p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("/")
        };
        let _ = writeln!(
            out,
            "| {} | {} {} {} x{} | {} | {} | {} | {} ms | {} | exit {exit} ({} ms run)",
            case.name,
            p.user,
            p.expect,
            p.family,
            group.len(),
            set(&|p| p.observed.clone()),
            set(&|p| p.verdict.clone()),
            set(&|p| match p.witnessed {
                Some(w) => w.to_string(),
                None => "-".into(),
            }),
            set(&|p| format!("{}", p.elapsed_ms as u64)),
            set(&|p| p.detail.clone().unwrap_or_default()),
            wall.as_millis()
        );
    }
    out
}
