//! The lab and the test kit against the real kernel: the test lab's zone
//! through egress-check's own resolver, its sinks, closed port, added
//! sinks, reset listener, counting internet MTA and NFQUEUE delayer from
//! the host namespace, an AnyIP lab with a slow nameserver, the test users,
//! and that nothing is left behind.
//!
//! Needs root and network namespaces; fails when they are missing (see
//! [`egress_check_testkit::prerequisites`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_check::lab::{self, Lab, LabSpec, BANNER};
use egress_check::plan::NameserverSource;
use egress_check::resolve::{Addresses, Resolution, Resolver};
use egress_check::scenario::TargetKind;
use egress_check_testkit::dns::Delay;
use egress_check_testkit::mta;
use egress_check_testkit::test_lab::{self, LINK, SINKS_V4, SINKS_V6};
use egress_check_testkit::{prerequisites, users, TestLab};
use nix::sched::{setns, CloneFlags};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A test lab, or `None` when the user opted out (announced on stderr).
fn up() -> Option<TestLab> {
    if let Err(skip) = prerequisites() {
        eprintln!("SKIPPED network namespace test: {skip}");
        return None;
    }
    Some(TestLab::up().unwrap_or_else(|e| panic!("cannot bring the test lab up: {e}")))
}

/// Runs `f` on a thread inside the network namespace at `path`.
fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into the namespace");
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

/// Connects and reads until the peer closes.
fn fetch(addr: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got)?;
    Ok(got)
}

/// Resolves `kinds` with egress-check's resolver from inside `netns`.
fn resolve(
    netns: &Path,
    source: NameserverSource,
    kinds: Vec<TargetKind>,
) -> BTreeMap<String, Resolution> {
    in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let resolver = Resolver::new(&source).expect("resolver");
            resolver
                .resolve_all(kinds.iter())
                .await
                .into_iter()
                .map(|(kind, resolution)| {
                    let key = match kind {
                        TargetKind::Mx(d) => format!("mx {d}"),
                        TargetKind::Host(h) => format!("host {h}"),
                        TargetKind::Addresses(_) => "addresses".into(),
                    };
                    (key, resolution)
                })
                .collect()
        })
    })
}

/// `(exchange, preference, ipv4, ipv6)` of a resolution that found exchanges.
type Found = Vec<(Option<String>, Option<u16>, Addresses, Addresses)>;

fn exchanges(resolution: &Resolution) -> Found {
    match resolution {
        Resolution::Exchanges { exchanges, .. } => exchanges
            .iter()
            .map(|e| (e.name.clone(), e.preference, e.ipv4.clone(), e.ipv6.clone()))
            .collect(),
        other => panic!("expected exchanges, got {other:?}"),
    }
}

fn found(addrs: &[IpAddr]) -> Addresses {
    Addresses::Found(addrs.to_vec())
}

#[test]
fn the_test_zone_answers_as_documented() {
    let Some(lab) = up() else { return };
    let host = lab.lab().host_netns_path().to_owned();
    let names = [
        "dual.test",
        "v4only.test",
        "nomx.test",
        "nullmx.test",
        "cname.test",
        "dangling.test",
        "many.test",
        "servfail.test",
        "nx.test",
        "gmail.com",
    ];
    let mut kinds: Vec<TargetKind> = names
        .iter()
        .map(|n| TargetKind::Mx(n.to_string()))
        .collect();
    kinds.push(TargetKind::Host("host.test".into()));
    // Through the resolv.conf that `ip netns exec` would show the host.
    let conf = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", lab.host_ns()))
        .expect("the lab writes the host's resolv.conf");
    assert_eq!(conf, "nameserver 198.51.100.2\n");
    let got = resolve(&host, NameserverSource::ResolvConf(conf), kinds.clone());
    let [s4a, s4b, s4c] = SINKS_V4.map(IpAddr::V4);
    let [s6a, s6b, s6c] = SINKS_V6.map(IpAddr::V6);

    assert_eq!(
        exchanges(&got["mx dual.test"]),
        vec![
            (
                Some("mx1.dual.test".into()),
                Some(10),
                found(&[s4a]),
                found(&[s6a])
            ),
            (
                Some("mx2.dual.test".into()),
                Some(20),
                found(&[s4b]),
                found(&[s6b])
            ),
        ]
    );
    assert_eq!(
        exchanges(&got["mx v4only.test"]),
        vec![(
            Some("mx.v4only.test".into()),
            Some(10),
            found(&[s4c]),
            Addresses::None
        )]
    );
    assert!(matches!(
        &got["mx nomx.test"],
        Resolution::Exchanges {
            implicit_mx: true,
            ..
        }
    ));
    assert_eq!(
        exchanges(&got["mx nomx.test"]),
        vec![(Some("nomx.test".into()), None, found(&[s4c]), found(&[s6c]))]
    );
    assert_eq!(got["mx nullmx.test"], Resolution::NullMx);
    assert_eq!(
        exchanges(&got["mx cname.test"]),
        vec![(
            Some("alias.cname.test".into()),
            Some(10),
            found(&[s4a]),
            found(&[s6a])
        )]
    );
    let dangling = exchanges(&got["mx dangling.test"]);
    assert_eq!(dangling.len(), 1);
    for addrs in [&dangling[0].2, &dangling[0].3] {
        let Addresses::Failed(failure) = addrs else {
            panic!("missing.dangling.test must fail: {dangling:?}")
        };
        assert_eq!(failure.name, "missing.dangling.test");
        assert!(failure.to_string().contains("NXDOMAIN"), "{failure}");
    }
    let many = exchanges(&got["mx many.test"]);
    assert_eq!(many.len(), 8);
    for (i, (name, pref, v4, v6)) in many.iter().enumerate() {
        assert_eq!(
            name.as_deref(),
            Some(format!("mx{}.many.test", i + 1).as_str())
        );
        assert_eq!(*pref, Some(u16::try_from(i + 1).unwrap() * 10));
        assert_eq!(*v4, found(&[SINKS_V4[i % 3].into()]));
        assert_eq!(*v6, found(&[SINKS_V6[(i + 1) % 3].into()]));
    }
    let failure = |key: &str, words: &str| match &got[key] {
        Resolution::Failed(f) => assert!(f.to_string().contains(words), "{key}: {f}"),
        other => panic!("{key}: expected a failure, got {other:?}"),
    };
    failure("mx servfail.test", "SERVFAIL");
    failure("mx nx.test", "NXDOMAIN");
    failure("mx gmail.com", "REFUSED");
    assert_eq!(
        exchanges(&got["host host.test"]),
        vec![(Some("host.test".into()), None, found(&[s4a]), found(&[s6a]))]
    );

    // The IPv6 end of the link answers the same.
    let v6 = SocketAddr::new(LINK.internet6.into(), 53);
    let got = resolve(
        &host,
        NameserverSource::Server(v6),
        vec![TargetKind::Mx("dual.test".into())],
    );
    assert_eq!(exchanges(&got["mx dual.test"]).len(), 2);
}

#[test]
fn sinks_closed_ports_added_sinks_and_resets() {
    let Some(lab) = up() else { return };
    let extra4: IpAddr = "203.0.113.40".parse().unwrap();
    let extra6: IpAddr = "2001:db8:200::40".parse().unwrap();
    lab.add_sink(extra4).unwrap();
    lab.add_sink(extra6).unwrap();
    lab.reset_listener(27).unwrap();
    assert!(
        lab.reset_listener(27).is_err(),
        "a second reset listener on the same port"
    );
    let sinks: Vec<IpAddr> = SINKS_V4
        .map(IpAddr::V4)
        .into_iter()
        .chain(SINKS_V6.map(IpAddr::V6))
        .chain([extra4, extra6])
        .collect();
    let host = lab.lab().host_netns_path().to_owned();
    in_netns(&host, move || {
        for &ip in &sinks {
            for port in test_lab::PORTS {
                let got = fetch(SocketAddr::new(ip, port))
                    .unwrap_or_else(|e| panic!("{ip} port {port}: {e}"));
                assert_eq!(got, BANNER, "{ip} port {port}");
            }
            let closed = fetch(SocketAddr::new(ip, test_lab::CLOSED_PORT)).unwrap_err();
            assert_eq!(
                closed.kind(),
                io::ErrorKind::ConnectionRefused,
                "{ip}: {closed}"
            );
            // The handshake completes, then the peer resets: no banner, a reset.
            let reset = fetch(SocketAddr::new(ip, 27));
            assert!(
                matches!(&reset, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
                "{ip} port 27: {reset:?}"
            );
        }
        // The link's own addresses are no sinks.
        let link = fetch(SocketAddr::new(LINK.internet4.into(), 25)).unwrap_err();
        assert_eq!(link.kind(), io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn an_internet_mta_answers_on_every_sink_and_counts_what_it_accepted() {
    let Some(lab) = up() else { return };
    let port = 2526;
    let mta = lab.internet_mta(port).unwrap();
    assert_eq!(mta.accepted(), 0);
    let host = lab.lab().host_netns_path().to_owned();
    let sinks = [IpAddr::V4(SINKS_V4[0]), IpAddr::V6(SINKS_V6[2])];
    in_netns(&host, move || {
        for ip in sinks {
            let got = fetch(SocketAddr::new(ip, port))
                .unwrap_or_else(|e| panic!("{ip} port {port}: {e}"));
            assert_eq!(got, mta::BANNER, "{ip} port {port}");
        }
    });
    // Each fetch read the banner, so each connection was accepted (and counted) already.
    assert_eq!(mta.accepted(), 2);
}

#[test]
fn delay_holds_every_queued_packet_for_the_given_time() {
    let Some(lab) = up() else { return };
    lab.delay(5, 400).unwrap();
    assert!(lab.delay(5, 400).is_err(), "a second delayer on queue 5");
    // The delayer thread keeps CAP_NET_ADMIN (bit 12) and nothing else; the test process
    // (this thread) keeps root's.
    let delayer = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "nfq-delay-5")
        })
        .expect("the delayer thread");
    let caps = |status: &str, set: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(set))
            .map(|v| v.trim().to_string())
    };
    let theirs = std::fs::read_to_string(delayer.path().join("status")).unwrap();
    for set in ["CapEff:", "CapPrm:"] {
        assert_eq!(
            caps(&theirs, set).as_deref(),
            Some("0000000000001000"),
            "{set}"
        );
    }
    let ours = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_ne!(caps(&ours, "CapEff:").as_deref(), Some("0000000000001000"));
    let rule = |tool: &str, addr: String| {
        lab.exec_net(
            tool,
            &[
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--syn",
                "-d",
                &addr,
                "--dport",
                "25",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "5",
                "--queue-bypass",
            ],
        )
        .unwrap();
    };
    rule("iptables", SINKS_V4[0].to_string());
    rule("ip6tables", SINKS_V6[0].to_string());
    let host = lab.lab().host_netns_path().to_owned();
    in_netns(&host, || {
        for ip in [IpAddr::V4(SINKS_V4[0]), IpAddr::V6(SINKS_V6[0])] {
            let start = Instant::now();
            let got = fetch(SocketAddr::new(ip, 25)).unwrap_or_else(|e| panic!("{ip}: {e}"));
            let took = start.elapsed();
            assert_eq!(got, BANNER);
            // Held 400 ms, released well before the SYN would be retransmitted (1 s).
            assert!(
                took >= Duration::from_millis(400) && took < Duration::from_millis(900),
                "{ip}: connect took {took:?}"
            );
            // Unqueued traffic is not delayed.
            let start = Instant::now();
            fetch(SocketAddr::new(ip, 587)).unwrap();
            assert!(
                start.elapsed() < Duration::from_millis(300),
                "{ip} port 587"
            );
        }
    });
}

#[test]
fn the_test_users_exist() {
    if prerequisites().is_err() {
        eprintln!("SKIPPED test needing the test users");
        return;
    }
    users::ensure().unwrap();
    users::ensure().unwrap(); // idempotent
    for name in users::SHELL_USERS
        .into_iter()
        .chain([users::NOLOGIN_USER, users::WWW_DATA])
    {
        let user = nix::unistd::User::from_name(name).unwrap();
        assert!(user.is_some(), "{name}");
    }
    let nologin = nix::unistd::User::from_name(users::NOLOGIN_USER)
        .unwrap()
        .unwrap();
    assert!(nologin.shell.to_string_lossy().ends_with("nologin"));
    let mailers = nix::unistd::Group::from_name(users::MAILERS)
        .unwrap()
        .unwrap();
    assert!(mailers.mem.iter().any(|m| m == users::SUPPL_USER));
}

#[test]
fn teardown_and_drop_leave_nothing_behind() {
    let Some(lab) = up() else { return };
    lab.delay(6, 10).unwrap();
    lab.reset_listener(28).unwrap();
    let (host, net) = (lab.host_ns().to_owned(), lab.net_ns().to_owned());
    let gone = |what: &str| {
        for name in [&host, &net] {
            assert!(!lab::netns_path(name).exists(), "{what}: {name} is left");
        }
        assert!(
            !Path::new("/etc/netns").join(&host).exists(),
            "{what}: /etc/netns/{host} is left"
        );
    };
    assert!(lab::netns_path(&host).exists() && lab::netns_path(&net).exists());
    lab.teardown().unwrap();
    gone("teardown");

    let Some(lab) = up() else { return };
    let (host, net) = (lab.host_ns().to_owned(), lab.net_ns().to_owned());
    // A panicking test drops its lab while unwinding.
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        panic!("a failing test");
    }));
    assert!(unwound.is_err());
    for name in [&host, &net] {
        assert!(!lab::netns_path(name).exists(), "drop: {name} is left");
    }
}

#[test]
fn an_anyip_lab_answers_on_every_address_with_a_slow_nameserver() {
    if let Err(skip) = prerequisites() {
        eprintln!("SKIPPED network namespace test: {skip}");
        return;
    }
    let answer = Ipv4Addr::new(203, 0, 113, 77);
    let lab = Lab::create(LabSpec {
        prefix: test_lab::PREFIX,
        link: LINK,
        zone: lab::Zone::CatchAll {
            a: Some(answer),
            aaaa: None,
        },
        sinks: Vec::new(),
        anyip: vec![
            ("203.0.113.0".parse().unwrap(), 24),
            ("2001:db8:200::".parse().unwrap(), 64),
        ],
        ports: [25, 2525].into(),
        dns_layer: Some(Arc::new(Delay(Duration::from_millis(300)))),
        resolv_conf: false,
        realism: Default::default(),
    })
    .unwrap_or_else(|e| panic!("cannot create the AnyIP lab: {e}"));
    // Inside a range: nothing to add, the wildcard listeners answer already.
    lab.add_sink("203.0.113.5".parse().unwrap()).unwrap();
    let nameserver = lab.nameserver();
    let host = lab.host_netns_path().to_owned();
    in_netns(&host, || {
        for ip in [
            "203.0.113.1",
            "203.0.113.5",
            "203.0.113.254",
            "2001:db8:200::abcd",
        ] {
            for port in [25, 2525] {
                let addr = SocketAddr::new(ip.parse().unwrap(), port);
                assert_eq!(
                    fetch(addr).unwrap_or_else(|e| panic!("{addr}: {e}")),
                    BANNER
                );
            }
        }
    });
    let start = Instant::now();
    let got = resolve(
        &host,
        NameserverSource::Server(nameserver),
        vec![TargetKind::Host("x.bench.test".into())],
    );
    let took = start.elapsed();
    assert_eq!(
        exchanges(&got["host x.bench.test"]),
        vec![(
            Some("x.bench.test".into()),
            None,
            found(&[answer.into()]),
            Addresses::None
        )]
    );
    // A and AAAA are asked at once: one delayed round trip, not two.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(550),
        "resolving took {took:?}"
    );
    lab.teardown().unwrap();
}
