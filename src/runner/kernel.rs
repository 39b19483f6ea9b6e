//! Kernel limits that can turn into outcomes. A dropped SYN reads as `timeout`, which is a
//! pass of a deny, and the kernel drops SYNs when:
//!
//! - the conntrack table is full, or an entry cannot be inserted (`insert_failed`, `drop`,
//!   `early_drop` of `/proc/net/stat/nf_conntrack`);
//! - a listener's accept queue is full (`ListenOverflows` of `TcpExt` in `/proc/net/netstat`):
//!   the sandbox's sinks, or a local destination's listener;
//! - the TIME_WAIT table is full (`TCPTimeWaitOverflow`): a closing socket is destroyed
//!   without its TIME_WAIT, so its port may be reused while the peer still holds the old
//!   connection, and the next SYN on it can go unanswered.
//!
//! The runner snapshots these counters in **every namespace involved** before and after the
//! workers ([`Snapshot::take`]): the namespace the probes run in, each `pid:`/`unit:`
//! identity's, and whatever the caller adds (the sandbox's internet, where the sinks' accept
//! queues are). A namespace other than the calling thread's is read from a short-lived
//! thread that entered it (`setns` moves only the calling thread, and `/proc/thread-self/net`
//! shows the thread's namespace). When a counter moved, every timeout of the run is
//! inconclusive, with the counter and the namespace named ([`Snapshot::moved_since`]).
//!
//! Which probe lost its SYN cannot be known, so all timeouts are marked: a sweep retried
//! under the limit proves them, a pass that may be the kernel's never does.
//!
//! Before the workers start, [`conntrack_budget`] reads how many conntrack entries are still
//! free, so that the runner can cap the connects in flight and the table cannot fill.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Why a namespace's counters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// `setns` into the namespace failed.
    #[error("cannot enter the {label}: {errno}")]
    Enter {
        /// Which namespace.
        label: String,
        /// The OS error.
        errno: nix::errno::Errno,
    },
    /// The thread that reads the namespace's counters could not start or died.
    #[error("cannot read the kernel counters of the {label}: the reading thread failed")]
    Thread {
        /// Which namespace.
        label: String,
    },
}

/// A network namespace whose counters are watched during a run.
#[derive(Debug, Clone)]
pub struct Watched {
    /// How the reason names it: "probes' network namespace", "sandbox's internet namespace".
    pub label: String,
    /// Its namespace file; `None`: the calling thread's own namespace.
    pub netns: Option<Arc<File>>,
    /// Whether a full accept queue in this namespace can fail a probe: the sandbox's
    /// internet (its sinks listen there), or the probes' namespace when a probe goes to a
    /// local destination. A host's own busy services overflowing their queues say nothing
    /// about probes that leave the host, and must not make every run inconclusive.
    pub listeners: bool,
}

impl Watched {
    /// The calling thread's namespace.
    pub fn current(label: impl Into<String>, listeners: bool) -> Watched {
        Watched {
            label: label.into(),
            netns: None,
            listeners,
        }
    }

    /// The namespace at `path` (e.g. `/run/netns/NAME`), opened now.
    pub fn at(label: impl Into<String>, path: &Path, listeners: bool) -> std::io::Result<Watched> {
        Ok(Watched {
            label: label.into(),
            netns: Some(Arc::new(File::open(path)?)),
            listeners,
        })
    }
}

/// The counters of one namespace, summed over CPUs; `None` where the file or the field is
/// absent (no conntrack loaded: nothing of it can drop a SYN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `/proc/net/stat/nf_conntrack` `insert_failed`.
    pub insert_failed: Option<u64>,
    /// `/proc/net/stat/nf_conntrack` `drop`.
    pub drop: Option<u64>,
    /// `/proc/net/stat/nf_conntrack` `early_drop`.
    pub early_drop: Option<u64>,
    /// `/proc/net/netstat` `TcpExt: ListenOverflows`.
    pub listen_overflows: Option<u64>,
    /// `/proc/net/netstat` `TcpExt: TCPTimeWaitOverflow`.
    pub time_wait_overflow: Option<u64>,
}

impl Counters {
    /// The counters of the calling thread's network namespace.
    pub fn read() -> Counters {
        let read = |name: &str| {
            std::fs::read_to_string(Path::new("/proc/thread-self/net").join(name))
                .unwrap_or_default()
        };
        let mut counters = Counters::parse_conntrack(&read("stat/nf_conntrack"));
        counters.add_netstat(&read("netstat"));
        counters
    }

    /// The counters of `watched`'s namespace: read here when it is the calling thread's,
    /// else from a thread that enters it and ends.
    pub fn read_in(watched: &Watched) -> Result<Counters, KernelError> {
        let Some(netns) = &watched.netns else {
            return Ok(Counters::read());
        };
        let netns = Arc::clone(netns);
        let label = watched.label.clone();
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("kernel-counters".into())
                .spawn_scoped(scope, || {
                    nix::sched::setns(&*netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |errno| KernelError::Enter {
                            label: label.clone(),
                            errno,
                        },
                    )?;
                    Ok(Counters::read())
                })
                .map_err(|_| KernelError::Thread {
                    label: label.clone(),
                })?;
            reader.join().unwrap_or_else(|_| {
                Err(KernelError::Thread {
                    label: label.clone(),
                })
            })
        })
    }

    /// Parses `/proc/net/stat/nf_conntrack`: a header of field names, then one line of hex
    /// values per CPU, summed. The netstat counters stay `None`.
    pub fn parse_conntrack(text: &str) -> Counters {
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Counters::default();
        };
        let names: Vec<&str> = header.split_whitespace().collect();
        let column = |name: &str| names.iter().position(|n| *n == name);
        let rows: Vec<Vec<u64>> = lines
            .map(|l| {
                l.split_whitespace()
                    .map(|v| u64::from_str_radix(v, 16).unwrap_or(0))
                    .collect()
            })
            .collect();
        let sum = |name: &str| {
            let i = column(name)?;
            Some(
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .fold(0u64, |a, &v| a.saturating_add(v)),
            )
        };
        Counters {
            insert_failed: sum("insert_failed"),
            drop: sum("drop"),
            early_drop: sum("early_drop"),
            listen_overflows: None,
            time_wait_overflow: None,
        }
    }

    /// Takes `ListenOverflows` and `TCPTimeWaitOverflow` from `/proc/net/netstat`: pairs of
    /// lines, `TcpExt: NAMES...` then `TcpExt: VALUES...` (decimal).
    pub fn add_netstat(&mut self, text: &str) {
        let mut lines = text.lines().filter_map(|l| l.strip_prefix("TcpExt:"));
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                let Ok(value) = value.parse::<u64>() else {
                    continue;
                };
                match name {
                    "ListenOverflows" => self.listen_overflows = Some(value),
                    "TCPTimeWaitOverflow" => self.time_wait_overflow = Some(value),
                    _ => {}
                }
            }
        }
    }

    /// The counters that grew since `before`, as `(name, increase)`; the accept-queue
    /// counter only when `listeners` (see [`Watched::listeners`]).
    fn grown(&self, before: &Counters, listeners: bool) -> Vec<(&'static str, u64)> {
        [
            (
                "conntrack insert_failed",
                before.insert_failed,
                self.insert_failed,
            ),
            ("conntrack drop", before.drop, self.drop),
            ("conntrack early_drop", before.early_drop, self.early_drop),
            (
                "TcpExt ListenOverflows",
                before.listen_overflows.filter(|_| listeners),
                self.listen_overflows,
            ),
            (
                "TcpExt TCPTimeWaitOverflow",
                before.time_wait_overflow,
                self.time_wait_overflow,
            ),
        ]
        .into_iter()
        .filter_map(|(name, b, a)| match (b, a) {
            (Some(b), Some(a)) if a > b => Some((name, a - b)),
            _ => None,
        })
        .collect()
    }
}

/// The counters of every watched namespace at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    entries: Vec<(Watched, Result<Counters, KernelError>)>,
}

impl Snapshot {
    /// Reads every namespace of `watched`, in order.
    pub fn take(watched: &[Watched]) -> Snapshot {
        Snapshot {
            entries: watched
                .iter()
                .map(|w| (w.clone(), Counters::read_in(w)))
                .collect(),
        }
    }

    /// Says which counters grew since `before`, naming each counter and namespace, or
    /// `None`. A namespace that could not be read at either end is named too: the run
    /// cannot vouch for its timeouts.
    pub fn moved_since(&self, before: &Snapshot) -> Option<String> {
        let mut moved: Vec<String> = Vec::new();
        for ((watched, after), (_, earlier)) in self.entries.iter().zip(&before.entries) {
            match (earlier, after) {
                (Ok(b), Ok(a)) => {
                    for (name, delta) in a.grown(b, watched.listeners) {
                        moved.push(format!("{name} +{delta} in the {}", watched.label));
                    }
                }
                (Err(error), _) | (_, Err(error)) => moved.push(error.to_string()),
            }
        }
        (!moved.is_empty()).then(|| {
            format!(
                "a kernel limit may have dropped SYNs during the run ({}; /proc/net/stat/nf_conntrack, \
                 /proc/net/netstat): a timeout proves nothing; run again with fewer probes, or raise \
                 the limit (net.netfilter.nf_conntrack_max, net.core.somaxconn, \
                 net.ipv4.tcp_max_tw_buckets)",
                moved.join(", ")
            )
        })
    }
}

/// How many conntrack entries the run may use at once, read in the calling thread's
/// namespace, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackBudget {
    /// `net.netfilter.nf_conntrack_max` (one limit for every namespace).
    pub max: u64,
    /// `net.netfilter.nf_conntrack_count` of this namespace (the kernel compares each
    /// namespace's own count with the one maximum).
    pub count: u64,
}

impl ConntrackBudget {
    /// Connects the run may keep in flight: the free entries less an eighth of the table,
    /// which stays for the host's own connections. Not half the free entries: one user's
    /// sweep (131,070 probes) must fit a default table of 262,144 on a host that already
    /// tracks a few hundred connections, or it would run in two waves, two timeouts. At
    /// least 1.
    pub fn in_flight(&self) -> usize {
        let free = self.max.saturating_sub(self.count);
        let headroom = self.max / 8;
        usize::try_from(free.saturating_sub(headroom))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// For the run's diagnostics: which limit, how full, and the cap it sets.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "the conntrack table (net.netfilter.nf_conntrack_max {}, {} entries in use in the \
             probes' namespace): at most {} connects in flight, the free entries less an eighth \
             of the table",
            self.max,
            self.count,
            self.in_flight()
        );
        text
    }
}

/// The conntrack budget of the calling thread's namespace; `None` when conntrack is not
/// loaded there (no table to fill) or a limit of 0 (unlimited) is set.
pub fn conntrack_budget() -> Option<ConntrackBudget> {
    if !Path::new("/proc/thread-self/net/stat/nf_conntrack").exists() {
        return None;
    }
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new("/proc/sys/net/netfilter").join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let max = read("nf_conntrack_max").filter(|&m| m > 0)?;
    let count = read("nf_conntrack_count").unwrap_or(0);
    Some(ConntrackBudget { max, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000  00000000 00000000 00000000 00000000
";

    const NETSTAT: &str =
        "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeWaitOverflow
TcpExt: 0 0 7 7 3
IpExt: InNoRoutes ListenOverflows
IpExt: 0 99
";

    fn snapshot(label: &str, counters: Counters, listeners: bool) -> Snapshot {
        Snapshot {
            entries: vec![(Watched::current(label, listeners), Ok(counters))],
        }
    }

    #[test]
    fn conntrack_counters_are_summed_over_cpus() {
        let before = Counters::parse_conntrack(BEFORE);
        assert_eq!(before.insert_failed, Some(1));
        assert_eq!(before.drop, Some(2));
        assert_eq!(before.early_drop, Some(0));
        // No conntrack module: nothing to compare, nothing moved.
        assert_eq!(Counters::parse_conntrack(""), Counters::default());
        // A garbled file gives zeros, never a panic.
        let garbled = Counters::parse_conntrack("insert_failed drop\nzz\n\n");
        assert_eq!(garbled.insert_failed, Some(0));
    }

    #[test]
    fn netstat_counters_are_read_by_name_from_tcpext_only() {
        let mut c = Counters::default();
        c.add_netstat(NETSTAT);
        assert_eq!(c.listen_overflows, Some(7));
        assert_eq!(c.time_wait_overflow, Some(3));
        let mut missing = Counters::default();
        missing.add_netstat("TcpExt: Other\nTcpExt: x\n");
        assert_eq!(missing, Counters::default());
        // Names without values (a truncated file) are not counters.
        let mut truncated = Counters::default();
        truncated.add_netstat("TcpExt: ListenOverflows\n");
        assert_eq!(truncated.listen_overflows, None);
    }

    #[test]
    fn a_moved_counter_is_named_with_its_namespace() {
        let mut before = Counters::parse_conntrack(BEFORE);
        before.add_netstat(NETSTAT);
        let b = snapshot("probes' network namespace", before, false);
        assert_eq!(b.moved_since(&b), None);

        let mut after = Counters::parse_conntrack(
            &BEFORE.replace("00000000 00000002 00000000", "0000001a 00000002 00000000"),
        );
        after.add_netstat(&NETSTAT.replace("0 0 7 7 3", "0 0 9 9 4"));
        let note = snapshot("probes' network namespace", after, false)
            .moved_since(&b)
            .unwrap();
        assert!(
            note.contains("conntrack insert_failed +26 in the probes' network namespace"),
            "{note}"
        );
        assert!(note.contains("TcpExt TCPTimeWaitOverflow +1"), "{note}");
        // Listen queues of the probes' own namespace do not count without local probes...
        assert!(!note.contains("ListenOverflows"), "{note}");
        // ...and do in a namespace with the sinks.
        let sinks = |c| snapshot("sandbox's internet namespace", c, true);
        let note = sinks(after).moved_since(&sinks(before)).unwrap();
        assert!(
            note.contains("TcpExt ListenOverflows +2 in the sandbox's internet namespace"),
            "{note}"
        );
        // A counter that is gone afterwards is not a movement.
        assert_eq!(Counters::default().grown(&before, true), vec![]);
    }

    #[test]
    fn an_unreadable_namespace_is_named() {
        let ok = snapshot("x", Counters::default(), true);
        let failed = Snapshot {
            entries: vec![(
                Watched::current("sandbox's internet namespace", true),
                Err(KernelError::Enter {
                    label: "sandbox's internet namespace".into(),
                    errno: nix::errno::Errno::EPERM,
                }),
            )],
        };
        let note = failed.moved_since(&ok).unwrap();
        assert!(
            note.contains("cannot enter the sandbox's internet namespace"),
            "{note}"
        );
    }

    #[test]
    fn the_budget_keeps_an_eighth_of_the_table() {
        let b = ConntrackBudget {
            max: 262_144,
            count: 2_144,
        };
        assert_eq!(b.in_flight(), 262_144 - 2_144 - 32_768);
        assert!(b.describe().contains("at most 227232 connects"));
        let full = ConntrackBudget { max: 10, count: 12 };
        assert_eq!(full.in_flight(), 1);
    }

    #[test]
    fn this_threads_counters_and_another_namespace_read_alike() {
        // Reading "another" namespace that is in fact this thread's must agree on which
        // counters exist (the values may move in between).
        let here = Counters::read();
        let Ok(watched) = Watched::at("self", Path::new("/proc/thread-self/ns/net"), true) else {
            return;
        };
        match Counters::read_in(&watched) {
            Ok(there) => {
                assert_eq!(here.drop.is_some(), there.drop.is_some());
                assert_eq!(
                    here.listen_overflows.is_some(),
                    there.listen_overflows.is_some()
                );
            }
            // Without CAP_SYS_ADMIN setns fails, and says so.
            Err(error) => assert!(error.to_string().contains("cannot enter the self")),
        }
    }
}
