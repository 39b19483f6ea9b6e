//! `--explain`: for every probe, the firewall rule (or policy, or absence of any) that
//! decided it, as the kernel itself reports it through nftables tracing.
//!
//! How (see each module):
//! - [`table`]: a temporary table of our own, `inet egress_check_trace_<pid>`, with chains at
//!   the lowest priority on the output and prerouting hooks that set `nftrace` on the run's
//!   packets only (the probed users' sockets, the run's addresses and ports; replies from
//!   them). Removed on every exit path; one left by a killed run is reaped by the next.
//! - [`listener`]: a `NETLINK_NETFILTER` socket on the `NFNLGRP_NFTRACE` group, read by a
//!   thread from before the first probe until after the last.
//! - [`trace`]: the parser of the kernel's `NFT_MSG_TRACE` messages.
//! - [`ruleset`]: hooks, policies and rule text by handle (`nft -j -a list ruleset` and
//!   `nft -a list ruleset`).
//! - [`decide`]: events matched to probes by the exact connection (the worker reports each
//!   probe's local address, [`crate::probe::Attempt::local`]) and turned into decisions.
//!
//! Why this listener: `nft monitor trace` prints text only (also with `-j` in nft 1.0.6), a
//! format for people that changes between versions; `rustables` is GPL-3.0 (this project is
//! MIT); `nftnl` needs the C libraries and has no trace API. The kernel's message is a
//! small, stable TLV format (`NFTA_TRACE_*`, linux/netfilter/nf_tables.h), so a parser of our
//! own with every length validated, over nix's netlink socket, is the smallest dependable
//! choice.
//!
//! Tracing never changes a verdict: it only reads. What it cannot see (iptables-legacy
//! rules, lost events, packets it never heard) it says, and never guesses.

pub mod decide;
pub mod listener;
pub mod ruleset;
pub mod table;
pub mod trace;

use std::collections::HashMap;
use std::net::SocketAddr;

pub use decide::{DecidedBy, Explanation, TraceStep};

use crate::plan::{Destination, PlannedProbe};
use crate::probe::Attempt;
use crate::vocab::Family;
use listener::{Listener, ListenerError};
use table::{nft, NftError, Scope, TraceTable};

/// Whether a run traces its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explain {
    /// No tracing.
    Off,
    /// Asked for (`--explain`): every probe is traced, however many.
    On,
    /// A default (the sandbox's): traced when the run has at most this many probes.
    UpTo(usize),
}

/// How many probes the sandbox traces by default. Every traced packet is a netlink message
/// (several per rule it passes); at sweep sizes they outrun the listener's socket buffer
/// and most probes come back "not visible" (measured: ~85,000 of a 131,070-probe sweep),
/// while tracing costs several times the run's time and memory. Above this, a sweep runs
/// untraced unless `--explain` asks for it, and says so.
pub const DEFAULT_MAX_PROBES: usize = 4096;

impl Explain {
    /// Whether a run of `probes` probes is traced.
    pub fn traces(self, probes: usize) -> bool {
        match self {
            Explain::Off => false,
            Explain::On => true,
            Explain::UpTo(max) => probes <= max,
        }
    }
}

/// Why `--explain` cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Tracing needs CAP_NET_ADMIN: root.
    #[error("--explain needs root: it adds a temporary nftables table and listens to the kernel's trace events")]
    NotRoot,
    /// No nf_tables (or no permission to listen).
    #[error("--explain needs nf_tables tracing, which is not available here: {0}")]
    NoTracing(#[source] ListenerError),
    /// `nft` is missing or cannot list the ruleset.
    #[error("--explain needs the nft command and nf_tables: {0}")]
    Nft(#[source] NftError),
}

/// Checks, before anything is probed, that tracing can work in the current network
/// namespace: root, the trace netlink group, and `nft`.
pub fn preflight() -> Result<(), ExplainError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(ExplainError::NotRoot);
    }
    Listener::start().map_err(ExplainError::NoTracing)?.stop();
    nft(&["list", "tables"], None).map_err(ExplainError::Nft)?;
    Ok(())
}

/// The tracing of one run: the listener and our table, from before the first probe until
/// [`Tracer::finish`].
pub struct Tracer {
    listener: Option<Listener>,
    table: Option<TraceTable>,
    /// Why tracing could not start, if it could not: every probe then says so.
    failed: Option<String>,
}

impl Tracer {
    /// Starts listening, then creates the table for `probes` (so no traced packet is
    /// missed). Never fails the run: a failure is kept and reported per probe.
    pub fn start(probes: &[PlannedProbe]) -> Tracer {
        let reaped = table::reap_stale();
        if !reaped.is_empty() {
            eprintln!(
                "egress-check: removed trace table(s) left by killed runs: {}",
                reaped.join(", ")
            );
        }
        let mut scope = Scope::default();
        for p in probes {
            if let Destination::Address(endpoint) = &p.destination {
                scope.uids.insert(p.spec.uid);
                scope.addresses.insert(endpoint.ip);
                scope.ports.insert(p.spec.port);
            }
        }
        let listener = match Listener::start() {
            Ok(l) => l,
            Err(err) => return Tracer::failed(err.to_string()),
        };
        match TraceTable::create(&scope) {
            Ok(table) => Tracer {
                listener: Some(listener),
                table: Some(table),
                failed: None,
            },
            Err(err) => Tracer::failed(format!("cannot create the trace table: {err}")),
        }
    }

    fn failed(why: String) -> Tracer {
        Tracer {
            listener: None,
            table: None,
            failed: Some(why),
        }
    }

    /// Stops tracing, removes the table, and explains each probe (`attempts[i]` is what
    /// `probes[i]` observed).
    pub fn finish(
        mut self,
        probes: &[PlannedProbe],
        attempts: &[Attempt],
    ) -> Vec<Option<Explanation>> {
        let capture = self.listener.take().map(Listener::stop);
        // The ruleset as it was during the run, read while our table still exists (its
        // chains are recognised by name and left out).
        let listing = nft(&["-j", "-a", "list", "ruleset"], None)
            .and_then(|json| Ok((json, nft(&["-a", "list", "ruleset"], None)?)));
        let own_table = self
            .table
            .as_ref()
            .map(|t| t.name().to_owned())
            .unwrap_or_default();
        if let Some(table) = self.table.take() {
            if let Err(err) = table.remove() {
                eprintln!("egress-check: removing the trace table: {err}");
            }
        }
        let mut failed = self.failed.take();
        let ruleset = match listing {
            Ok((json, text)) => match ruleset::Ruleset::parse(&json, &text) {
                Ok(mut ruleset) => {
                    for (family, tool) in
                        [("ip", "iptables-nft-save"), ("ip6", "ip6tables-nft-save")]
                    {
                        if let Some(save) = quiet_output(tool) {
                            ruleset.add_iptables_save(family, &save);
                        }
                    }
                    ruleset
                }
                Err(err) => {
                    eprintln!("egress-check: cannot read nft's JSON ruleset: {err}");
                    ruleset::Ruleset::default()
                }
            },
            Err(err) => {
                eprintln!("egress-check: cannot list the ruleset: {err}");
                ruleset::Ruleset::default()
            }
        };
        let capture = capture.unwrap_or_default();
        if failed.is_none() {
            failed = capture
                .failed
                .map(|e| format!("receiving trace events: {e}"));
        }
        if capture.malformed > 0 {
            eprintln!(
                "egress-check: {} trace message(s) could not be parsed and were ignored",
                capture.malformed
            );
        }
        let ctx = decide::Context {
            ruleset,
            own_table,
            legacy_rules: legacy_rules(),
            overruns: capture.overruns,
            listener_failed: failed,
        };
        let conns: Vec<decide::ProbeConn> = probes
            .iter()
            .zip(attempts)
            .map(|(p, a)| decide::ProbeConn {
                local: a.local,
                remote: match &p.destination {
                    // The trace carries addresses without an interface: compare by address.
                    Destination::Address(endpoint) => SocketAddr::new(endpoint.ip, p.spec.port),
                    // Not probed: `decide` only looks at the observed no-address.
                    Destination::None(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                },
                observed: match &p.destination {
                    Destination::None(_) => crate::probe::Observed::NoAddress,
                    Destination::Address(_) => a.observed,
                },
            })
            .collect();
        decide::explain(&ctx, &capture.events, &conns)
    }
}

/// The stdout of `tool` when it runs and succeeds (its stderr, e.g. iptables-nft's warnings,
/// is not wanted).
fn quiet_output(tool: &str) -> Option<String> {
    std::process::Command::new(tool)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// iptables-legacy rules per family, which nf_tables tracing cannot see. Read only where
/// legacy tables exist (`/proc/net/ip{,6}_tables_names`, per network namespace): running
/// `iptables-legacy-save` elsewhere would load the legacy modules and create empty tables.
/// Rules are counted by content (`-A` lines): an empty legacy table is not a rule.
fn legacy_rules() -> HashMap<Family, usize> {
    let mut found = HashMap::new();
    for (family, names, tool) in [
        (
            Family::Ipv4,
            "/proc/net/ip_tables_names",
            "iptables-legacy-save",
        ),
        (
            Family::Ipv6,
            "/proc/net/ip6_tables_names",
            "ip6tables-legacy-save",
        ),
    ] {
        let tables = std::fs::read_to_string(names).unwrap_or_default();
        if tables.trim().is_empty() {
            continue;
        }
        let rules =
            quiet_output(tool).map(|save| save.lines().filter(|l| l.starts_with("-A ")).count());
        match rules {
            Some(0) => {}
            Some(n) => {
                found.insert(family, n);
            }
            // Legacy tables exist and cannot be read: assume they may hold rules rather than
            // call their packets unfiltered.
            None => {
                found.insert(family, 1);
            }
        }
    }
    found
}

/// One line for the human report's summary, when some passing denies were not enforced by
/// this host.
pub fn not_enforced_note(count: usize) -> String {
    let denies = crate::vocab::counted(count, "deny", "denies");
    let them = if count == 1 { "it" } else { "them" };
    format!(
        "{denies} not enforced by this host: it accepted the SYN and something beyond it \
         blocked the connection; moving the host or lifting that block would open {them}"
    )
}
