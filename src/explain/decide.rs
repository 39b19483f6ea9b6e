//! From trace events to what decided each probe. Pure: events, the ruleset and what each
//! probe observed in; one [`Explanation`] per probe out.
//!
//! How events become decisions:
//! - The kernel copies a packet's headers into the first event of each base chain the
//!   packet walks (then `packet_dumped` is set for the rest of that chain walk); later events
//!   of that walk carry only the packet's trace id. So a *segment* starts at an event with
//!   headers and collects the following events with the same id.
//! - A segment is attributed to a probe only when its packet's addresses and ports are the
//!   probe's connection exactly (the worker reports each connection's local address). Every
//!   other segment (other processes' packets that matched the narrow trace rule) is dropped.
//! - The probe's SYN walks the output path (our own table's segments are left out); the first
//!   final verdict of a drop decides; if every chain accepted and the probe still did not
//!   connect, the replies (SYN-ACK, RST) are looked at, and failing a host rule that dropped
//!   them, the block happened beyond this host.
//! - What cannot be seen is said: lost events, iptables-legacy rules, no event at all.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::ruleset::{family_name, Ruleset};
use super::trace::{Packet, TraceEvent, TraceKind, Verdict};
use crate::probe::Observed;
use crate::vocab::Family;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What decided a probe: the JSON report's `decided_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidedBy {
    /// `rule`, `policy`, `no-filtering`, `beyond-host`, `not-visible` or `not-sent`.
    pub kind: &'static str,
    /// The deciding verdict (`accept`, `drop`, ...) for `rule` and `policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// `out` (the probe's SYN) or `reply` (a packet coming back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// Where: family, table, chain, hook, rule handle and text.
    #[serde(flatten)]
    pub at: Option<Place>,
    /// Chains jumped through to reach the deciding rule (`jump smtp`, `goto x`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// For `beyond-host` and `not-visible`: what this host's nf_tables did with the packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<Box<DecidedBy>>,
    /// The sentence the human report prints.
    pub text: String,
}

/// A place in the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// nft family (`ip`, `ip6`, `inet`).
    pub family: String,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// Hook of the base chain the packet walked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// Rule handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule as `nft -a list ruleset` prints it (counters elided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For rules iptables-nft made: the rule as `iptables-save` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables: Option<String>,
}

impl Place {
    /// The rule as the admin will recognise it: nft's text, except where nft can only say
    /// `xt match ...` (an iptables extension it cannot translate, e.g. `--suppl-groups`);
    /// then the `iptables-save` line.
    pub fn readable_rule(&self) -> Option<&str> {
        match (&self.rule, &self.iptables) {
            (Some(nft), Some(ipt)) if nft.contains("xt match") || nft.contains("xt target") => {
                Some(ipt)
            }
            (Some(nft), _) => Some(nft),
            (None, ipt) => ipt.as_deref(),
        }
    }
}

/// One step of the trace: a rule verdict, a return, or a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceStep {
    /// `out` or `reply`.
    pub direction: &'static str,
    /// The packet's TCP flags in words (`syn`, `syn,ack`, `rst,ack`).
    pub packet: String,
    /// `rule`, `return` or `policy`.
    pub kind: &'static str,
    /// Where.
    #[serde(flatten)]
    pub at: Place,
    /// The verdict.
    pub verdict: String,
}

/// A probe's explanation: `decided_by` and `trace` in the JSON report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// What decided it.
    pub decided_by: DecidedBy,
    /// Every rule, return and policy its packets met, in order (our own table left out).
    pub trace: Vec<TraceStep>,
}

impl Explanation {
    /// The short form for headlines: "dropped by ip filter OUTPUT `...`", "no rule".
    pub fn short(&self) -> String {
        let d = &self.decided_by;
        match (d.kind, &d.at) {
            ("rule", Some(at)) => format!(
                "{} by {} {} {} `{}`",
                past(d.verdict.as_deref().unwrap_or("decided")),
                at.family,
                at.table,
                at.chain,
                at.readable_rule().unwrap_or("(rule text not listed)")
            ),
            ("policy", Some(at)) => format!(
                "policy {} of {} {} {}",
                d.verdict.as_deref().unwrap_or("?"),
                at.family,
                at.table,
                at.chain
            ),
            ("no-filtering", _) => "no rule".into(),
            ("beyond-host", _) => "accepted by this host, blocked beyond it".into(),
            ("not-sent", _) => "no packet sent".into(),
            _ => "not visible to tracing".into(),
        }
    }

    /// Whether this says the host let the packet through and something beyond it blocked.
    pub fn blocked_beyond_host(&self) -> bool {
        self.decided_by.kind == "beyond-host"
    }
}

fn past(verdict: &str) -> String {
    match verdict {
        "accept" => "accepted".into(),
        "drop" => "dropped".into(),
        "queue" => "queued".into(),
        other => other.into(),
    }
}

/// What is known about the host beyond the trace.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The ruleset (for hooks, policies and rule text).
    pub ruleset: Ruleset,
    /// Our own table's name (its events are the tracing itself, not the host's policy).
    pub own_table: String,
    /// iptables-legacy rules, per family: rules nf_tables tracing cannot see.
    pub legacy_rules: HashMap<Family, usize>,
    /// Times the kernel dropped trace events (ENOBUFS).
    pub overruns: u64,
    /// Why the listener stopped early, if it did.
    pub listener_failed: Option<String>,
}

/// One probe to explain.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConn {
    /// Local end of the connection (from the worker), if known.
    pub local: Option<SocketAddr>,
    /// The destination.
    pub remote: SocketAddr,
    /// What the probe observed.
    pub observed: Observed,
}

/// The events of one packet in one base chain.
#[derive(Debug, Clone)]
struct Segment {
    packet: Packet,
    events: Vec<TraceEvent>,
}

impl Segment {
    fn family(&self) -> String {
        family_name(self.events[0].family)
    }
    fn table(&self) -> &str {
        &self.events[0].table
    }
    fn base_chain(&self) -> &str {
        &self.events[0].chain
    }
    fn id(&self) -> u32 {
        self.events[0].id
    }
}

/// Groups events into segments (see the module doc). Events whose segment start was not
/// heard are dropped.
fn segments(events: &[TraceEvent]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut open: HashMap<u32, usize> = HashMap::new();
    for event in events {
        if let Some(packet) = event.packet {
            open.insert(event.id, out.len());
            out.push(Segment {
                packet,
                events: vec![event.clone()],
            });
        } else if let Some(&index) = open.get(&event.id) {
            out[index].events.push(event.clone());
        }
    }
    out
}

/// How a walk through one base chain ended.
#[derive(Debug, Clone)]
struct ChainOutcome {
    verdict: Verdict,
    /// The deciding event: a rule (with handle) or the policy.
    kind: TraceKind,
    place: Place,
    path: Vec<String>,
}

fn place(ctx: &Context, seg: &Segment, event: &TraceEvent) -> Place {
    let family = family_name(event.family);
    Place {
        hook: ctx
            .ruleset
            .chain(&family, seg.table(), seg.base_chain())
            .and_then(|c| c.hook.clone()),
        rule: event
            .rule_handle
            .and_then(|h| ctx.ruleset.rule(&family, &event.table, &event.chain, h))
            .map(str::to_owned),
        iptables: event
            .rule_handle
            .and_then(|h| {
                ctx.ruleset
                    .iptables_form(&family, &event.table, &event.chain, h)
            })
            .map(str::to_owned),
        handle: event.rule_handle,
        family,
        table: event.table.clone(),
        chain: event.chain.clone(),
    }
}

fn outcome(ctx: &Context, seg: &Segment) -> Option<ChainOutcome> {
    let mut path = Vec::new();
    for event in &seg.events {
        match (event.kind, &event.verdict, &event.policy) {
            (TraceKind::Rule, Some(v @ (Verdict::Jump(_) | Verdict::Goto(_))), _) => {
                path.push(v.word())
            }
            (TraceKind::Rule, Some(v), _) if v.is_final() => {
                return Some(ChainOutcome {
                    verdict: v.clone(),
                    kind: TraceKind::Rule,
                    place: place(ctx, seg, event),
                    path,
                })
            }
            (TraceKind::Policy, _, Some(p)) => {
                return Some(ChainOutcome {
                    verdict: p.clone(),
                    kind: TraceKind::Policy,
                    place: place(ctx, seg, event),
                    path,
                })
            }
            _ => {}
        }
    }
    None
}

fn steps(ctx: &Context, seg: &Segment, direction: &'static str) -> Vec<TraceStep> {
    seg.events
        .iter()
        .filter_map(|event| {
            let (kind, verdict) = match (event.kind, &event.verdict, &event.policy) {
                // A `continue` without a rule is the end of a chain's rules, not a step.
                (TraceKind::Rule, Some(Verdict::Continue), _) if event.rule_handle.is_none() => {
                    return None
                }
                (TraceKind::Rule, Some(v), _) => ("rule", v.word()),
                (TraceKind::Return, v, _) => (
                    "return",
                    v.as_ref().map_or_else(|| "return".into(), Verdict::word),
                ),
                (TraceKind::Policy, _, Some(p)) => ("policy", p.word()),
                _ => return None,
            };
            Some(TraceStep {
                direction,
                packet: flags(seg.packet.flags),
                kind,
                at: place(ctx, seg, event),
                verdict,
            })
        })
        .collect()
}

fn flags(f: u8) -> String {
    let names = [
        (0x02, "syn"),
        (0x10, "ack"),
        (0x04, "rst"),
        (0x01, "fin"),
        (0x08, "psh"),
    ];
    let words: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if words.is_empty() {
        "none".into()
    } else {
        words.join(",")
    }
}

fn decided(kind: &'static str, text: String) -> DecidedBy {
    DecidedBy {
        kind,
        verdict: None,
        direction: None,
        at: None,
        path: Vec::new(),
        accepted_by: None,
        text,
    }
}

fn from_outcome(o: &ChainOutcome, direction: &'static str) -> DecidedBy {
    let verdict = o.verdict.word();
    let at = &o.place;
    let via = if o.path.is_empty() {
        String::new()
    } else {
        format!(" (via {})", o.path.join(", "))
    };
    let hook = at
        .hook
        .as_deref()
        .map(|h| format!(" (hook {h})"))
        .unwrap_or_default();
    let subject = if direction == "reply" { "reply " } else { "" };
    let (kind, text) = match o.kind {
        TraceKind::Policy => (
            "policy",
            format!(
                "{subject}policy {verdict} of {} {} {}{hook}, no rule matched{via}",
                at.family, at.table, at.chain
            ),
        ),
        _ => (
            "rule",
            format!(
                "{subject}{} by {} {} {}{hook} rule {}{via}: `{}`",
                past(&verdict),
                at.family,
                at.table,
                at.chain,
                at.handle.map_or_else(|| "?".into(), |h| h.to_string()),
                at.readable_rule().unwrap_or("(rule text not listed)")
            ),
        ),
    };
    DecidedBy {
        kind,
        verdict: Some(verdict),
        direction: Some(direction),
        at: Some(at.clone()),
        path: o.path.clone(),
        accepted_by: None,
        text,
    }
}

fn family_word(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// Explains each probe; `None` for probes that sent nothing (no address).
pub fn explain(
    ctx: &Context,
    events: &[TraceEvent],
    probes: &[ProbeConn],
) -> Vec<Option<Explanation>> {
    let segments = segments(events);
    // Index segments by connection: (local, remote) for the way out, reversed for replies.
    let mut by_conn: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, seg) in segments.iter().enumerate() {
        let p = seg.packet;
        by_conn
            .entry((
                SocketAddr::new(p.src, p.sport),
                SocketAddr::new(p.dst, p.dport),
            ))
            .or_default()
            .push(i);
    }
    probes
        .iter()
        .map(|probe| explain_one(ctx, &segments, &by_conn, probe))
        .collect()
}

fn explain_one(
    ctx: &Context,
    segments: &[Segment],
    by_conn: &HashMap<(SocketAddr, SocketAddr), Vec<usize>>,
    probe: &ProbeConn,
) -> Option<Explanation> {
    if probe.observed == Observed::NoAddress {
        return None;
    }
    let family = Family::of(&probe.remote.ip());
    let fam = family_word(family);
    let not_visible = |why: String| {
        Some(Explanation {
            decided_by: decided("not-visible", why),
            trace: Vec::new(),
        })
    };
    let Some(local) = probe.local else {
        return not_visible(
            "not visible: the connection's local port is unknown, so no trace event can be \
             matched to it"
                .into(),
        );
    };
    let own = |seg: &&Segment| seg.table() == ctx.own_table && seg.family() == "inet";
    let lookup = |from: SocketAddr, to: SocketAddr| -> Vec<&Segment> {
        by_conn
            .get(&(from, to))
            .map(|v| v.iter().map(|&i| &segments[i]).collect())
            .unwrap_or_default()
    };
    let out_all: Vec<&Segment> = lookup(local, probe.remote)
        .into_iter()
        .filter(|s| s.packet.flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
        .collect();
    let replies: Vec<&Segment> = lookup(probe.remote, local)
        .into_iter()
        .filter(|s| !own(s))
        .collect();
    let lost = ctx.overruns > 0 || ctx.listener_failed.is_some();
    let lost_words = || match &ctx.listener_failed {
        Some(why) => format!("the trace listener stopped early ({why})"),
        None => format!(
            "{} trace event overruns (the netlink buffer was full, ENOBUFS)",
            ctx.overruns
        ),
    };
    if out_all.is_empty() {
        if lost {
            return not_visible(format!(
                "not visible: no trace event of this connection was heard; {}",
                lost_words()
            ));
        }
        if probe.observed == Observed::Unreachable || probe.observed == Observed::Error {
            return Some(Explanation {
                decided_by: decided(
                    "not-sent",
                    "no packet of this connection reached nf_tables: the connect failed in \
                     the local stack (see the detail)"
                        .into(),
                ),
                trace: Vec::new(),
            });
        }
        return not_visible(
            "not visible: no trace event matched this connection (traced by none of the \
             hooks)"
                .into(),
        );
    }
    // The first SYN's walk: its segments in order, up to the first one of another packet
    // (a retransmitted SYN restarts at the first hook, our own table).
    let first_id = out_all[0].id();
    let mut walk: Vec<&Segment> = Vec::new();
    for seg in &out_all {
        if seg.id() != first_id || (own(seg) && walk.iter().any(own)) {
            break;
        }
        walk.push(seg);
    }
    let host_walk: Vec<&Segment> = walk.iter().copied().filter(|s| !own(s)).collect();
    let mut trace: Vec<TraceStep> = host_walk
        .iter()
        .flat_map(|s| steps(ctx, s, "out"))
        .collect();
    trace.extend(replies.iter().flat_map(|s| steps(ctx, s, "reply")));
    let outcomes: Vec<ChainOutcome> = host_walk.iter().filter_map(|s| outcome(ctx, s)).collect();

    let legacy = ctx.legacy_rules.get(&family).copied().unwrap_or(0);
    let legacy_words = || {
        format!("iptables-legacy has {legacy} {fam} rule(s), which nf_tables tracing cannot see")
    };
    // A drop on the way out decides.
    if let Some(o) = outcomes.iter().find(|o| o.verdict == Verdict::Drop) {
        return Some(Explanation {
            decided_by: from_outcome(o, "out"),
            trace,
        });
    }
    if let Some(o) = outcomes
        .iter()
        .find(|o| !matches!(o.verdict, Verdict::Accept))
    {
        return Some(Explanation {
            decided_by: from_outcome(o, "out"),
            trace,
        });
    }
    // Everything visible accepted the SYN (or nothing but our table saw it).
    let accepted = outcomes
        .iter()
        .find(|o| o.kind == TraceKind::Rule)
        .or_else(|| outcomes.first())
        .map(|o| from_outcome(o, "out"));
    let host_says = match &accepted {
        Some(a) => a.clone(),
        None => decided(
            "no-filtering",
            format!(
                "no {fam} filtering at all: nothing in nf_tables saw this packet except the trace"
            ),
        ),
    };
    if probe.observed == Observed::Connected {
        if host_walk.is_empty() && legacy > 0 {
            return Some(Explanation {
                decided_by: DecidedBy {
                    accepted_by: Some(Box::new(host_says)),
                    ..decided(
                        "not-visible",
                        format!(
                            "no nf_tables chain saw this packet and {}; they let it through",
                            legacy_words()
                        ),
                    )
                },
                trace,
            });
        }
        return Some(Explanation {
            decided_by: host_says,
            trace,
        });
    }
    // Not connected although the host let the SYN out: a reply dropped here, or something
    // the trace cannot see, or the world beyond this host.
    for seg in &replies {
        if let Some(o) = outcome(ctx, seg) {
            if o.verdict == Verdict::Drop {
                return Some(Explanation {
                    decided_by: from_outcome(&o, "reply"),
                    trace,
                });
            }
        }
    }
    let summary = match &accepted {
        Some(a) if a.kind == "policy" => {
            let at = a.at.as_ref().expect("a policy has a place");
            format!(
                "policy {} of {} {} {}",
                a.verdict.as_deref().unwrap_or("accept"),
                at.family,
                at.table,
                at.chain
            )
        }
        Some(a) => {
            let at = a.at.as_ref().expect("a rule has a place");
            format!(
                "{} {} {} rule {}",
                at.family,
                at.table,
                at.chain,
                at.handle.map_or_else(|| "?".into(), |h| h.to_string())
            )
        }
        None => format!("no {fam} filtering at all"),
    };
    if legacy > 0 {
        return Some(Explanation {
            decided_by: DecidedBy {
                accepted_by: Some(Box::new(host_says)),
                ..decided(
                    "not-visible",
                    format!(
                        "not visible to tracing: nf_tables accepted the SYN ({summary}), but {}; \
                         one of them may have blocked it",
                        legacy_words()
                    ),
                )
            },
            trace,
        });
    }
    if lost {
        return not_visible(format!(
            "not visible: nf_tables accepted the SYN ({summary}), but {}",
            lost_words()
        ));
    }
    let came_back = if replies.is_empty() {
        "no reply reached this host's firewall"
    } else if replies.iter().any(|s| s.packet.flags & 0x04 != 0) {
        "a reset came back and was accepted"
    } else {
        "replies came back and were accepted"
    };
    Some(Explanation {
        decided_by: DecidedBy {
            accepted_by: Some(Box::new(host_says)),
            ..decided(
                "beyond-host",
                // A BPF cgroup egress program runs after the last netfilter hook and is not
                // traced: say that it is the one thing on this host that could still have done it.
                format!(
                    "accepted by this host ({summary}); blocked beyond it ({came_back}): not \
                     this host's policy at work (unless a BPF cgroup filter, which tracing \
                     cannot see, dropped it)"
                ),
            )
        },
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::super::trace::build::{rule, Event};
    use super::super::trace::parse_datagram;
    use super::*;
    use std::net::IpAddr;

    const OWN: &str = "egress_check_trace_1";
    const TEXT: &str = "table ip filter { # handle 1
	chain OUTPUT { # handle 1
		type filter hook output priority filter; policy accept;
		ip daddr 203.0.113.10 tcp dport 25 skuid != 979 counter packets 0 bytes 0 drop # handle 2
		jump smtp # handle 3
	}
	chain smtp { # handle 4
		reject with tcp reset # handle 5
	}
}
";
    const JSON: &str = r#"{"nftables":[{"chain":{"family":"ip","table":"filter","name":"OUTPUT","hook":"output","prio":0,"policy":"accept"}},
      {"chain":{"family":"ip","table":"filter","name":"smtp"}},
      {"chain":{"family":"inet","table":"egress_check_trace_1","name":"out","hook":"output","prio":-2147483648,"policy":"accept"}}]}"#;

    fn ctx() -> Context {
        Context {
            ruleset: Ruleset::parse(JSON, TEXT).unwrap(),
            own_table: OWN.into(),
            ..Context::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LOCAL4: &str = "198.51.100.1";
    const REMOTE4: &str = "203.0.113.10";

    /// The events of one packet walking our table, then `then`.
    fn walk(
        id: u32,
        src: (&str, u16),
        dst: (&str, u16),
        flags: u8,
        then: Vec<Event>,
    ) -> Vec<TraceEvent> {
        let packet = Some((ip(src.0), ip(dst.0), src.1, dst.1, flags));
        let mut all = vec![
            Event {
                packet,
                verdict: Some((-1, None)),
                ..rule(id, 1, OWN, "out", 2, 0)
            },
            Event {
                kind: 1,
                handle: None,
                verdict: None,
                policy: Some(1),
                ..rule(id, 1, OWN, "out", 0, 0)
            },
        ];
        let mut first = true;
        for mut e in then {
            if first {
                e.packet = packet;
                first = false;
            }
            all.push(e);
        }
        let bytes: Vec<u8> = all.iter().flat_map(Event::bytes).collect();
        let (events, errors) = parse_datagram(&bytes);
        assert!(errors.is_empty());
        events
    }

    fn conn(local_port: u16, observed: Observed) -> ProbeConn {
        ProbeConn {
            local: Some(SocketAddr::new(ip(LOCAL4), local_port)),
            remote: SocketAddr::new(ip(REMOTE4), 25),
            observed,
        }
    }

    /// Our probe's SYN from `local_port` to the remote's port 25, walking our table (trace
    /// `id`), then `then`.
    fn syn(id: u32, local_port: u16, then: Vec<Event>) -> Vec<TraceEvent> {
        walk(id, (LOCAL4, local_port), (REMOTE4, 25), TCP_SYN, then)
    }

    /// Our probe's SYN from `local_port`, dropped by the OUTPUT chain's rule (handle 2).
    fn dropped_syn(local_port: u16) -> Vec<TraceEvent> {
        syn(7, local_port, vec![rule(7, 2, "filter", "OUTPUT", 2, 0)])
    }

    /// The explanation of the one probe from `local_port` that `observed` what it did.
    fn explain_conn(
        c: &Context,
        events: &[TraceEvent],
        local_port: u16,
        observed: Observed,
    ) -> Explanation {
        explain(c, events, &[conn(local_port, observed)])[0]
            .clone()
            .unwrap()
    }

    #[test]
    fn a_drop_rule_decides_by_handle_and_text() {
        let events = dropped_syn(40000);
        let e = explain_conn(&ctx(), &events, 40000, Observed::Timeout);
        let d = &e.decided_by;
        assert_eq!((d.kind, d.verdict.as_deref()), ("rule", Some("drop")));
        let at = d.at.as_ref().unwrap();
        assert_eq!(at.handle, Some(2));
        assert_eq!(at.hook.as_deref(), Some("output"));
        assert_eq!(
            at.rule.as_deref(),
            Some("ip daddr 203.0.113.10 tcp dport 25 skuid != 979 counter drop")
        );
        assert!(
            d.text
                .starts_with("dropped by ip filter OUTPUT (hook output) rule 2"),
            "{}",
            d.text
        );
        // Our own table is not part of the trace.
        assert_eq!(e.trace.len(), 1);
        assert_eq!(e.trace[0].packet, "syn");
        assert_eq!(e.short(), "dropped by ip filter OUTPUT `ip daddr 203.0.113.10 tcp dport 25 skuid != 979 counter drop`");
    }

    #[test]
    fn a_jump_into_a_user_chain_is_the_path() {
        let events = syn(
            7,
            40000,
            vec![
                Event {
                    verdict: Some((-3, Some("smtp"))),
                    ..rule(7, 2, "filter", "OUTPUT", 3, 0)
                },
                rule(7, 2, "filter", "smtp", 5, 0),
            ],
        );
        let d = explain_conn(&ctx(), &events, 40000, Observed::Refused).decided_by;
        assert_eq!(d.path, vec!["jump smtp".to_string()]);
        let at = d.at.unwrap();
        assert_eq!((at.chain.as_str(), at.handle), ("smtp", Some(5)));
        assert_eq!(at.rule.as_deref(), Some("reject with tcp reset"));
        // The hook is the base chain's.
        assert_eq!(at.hook.as_deref(), Some("output"));
    }

    #[test]
    fn nothing_but_our_table_is_no_filtering_at_all() {
        let l6 = "2001:db8:100::1";
        let r6 = "2001:db8:200::10";
        let events = walk(9, (l6, 40001), (r6, 25), TCP_SYN, vec![]);
        let probe = ProbeConn {
            local: Some(SocketAddr::new(ip(l6), 40001)),
            remote: SocketAddr::new(ip(r6), 25),
            observed: Observed::Connected,
        };
        let e = explain(&ctx(), &events, &[probe])[0].clone().unwrap();
        assert_eq!(e.decided_by.kind, "no-filtering");
        assert_eq!(
            e.decided_by.text,
            "no IPv6 filtering at all: nothing in nf_tables saw this packet except the trace"
        );
        assert_eq!(e.short(), "no rule");
        assert!(e.trace.is_empty());
    }

    #[test]
    fn legacy_rules_are_not_visible_never_no_rule() {
        let events = syn(9, 40001, vec![]);
        let mut c = ctx();
        c.legacy_rules.insert(Family::Ipv4, 1);
        let e = explain_conn(&c, &events, 40001, Observed::Timeout);
        assert_eq!(e.decided_by.kind, "not-visible");
        assert!(
            e.decided_by.text.contains("iptables-legacy"),
            "{}",
            e.decided_by.text
        );
        assert_ne!(e.short(), "no rule");
    }

    #[test]
    fn host_accepts_and_the_probe_times_out_is_beyond_host() {
        let events = syn(
            5,
            40002,
            vec![Event {
                kind: 1,
                handle: None,
                verdict: None,
                policy: Some(1),
                ..rule(5, 2, "filter", "OUTPUT", 0, 0)
            }],
        );
        let e = explain_conn(&ctx(), &events, 40002, Observed::Timeout);
        assert!(e.blocked_beyond_host());
        assert_eq!(
            e.decided_by.text,
            "accepted by this host (policy accept of ip filter OUTPUT); blocked beyond it (no \
             reply reached this host's firewall): not this host's policy at work (unless a BPF \
             cgroup filter, which tracing cannot see, dropped it)"
        );
        let by = e.decided_by.accepted_by.unwrap();
        assert_eq!(by.kind, "policy");
    }

    #[test]
    fn a_dropped_reply_is_the_decision() {
        let mut events = syn(
            5,
            40003,
            vec![Event {
                kind: 1,
                handle: None,
                verdict: None,
                policy: Some(1),
                ..rule(5, 2, "filter", "OUTPUT", 0, 0)
            }],
        );
        events.extend(walk(
            6,
            (REMOTE4, 25),
            (LOCAL4, 40003),
            TCP_SYN | TCP_ACK,
            vec![rule(6, 2, "filter", "OUTPUT", 2, 0)],
        ));
        let d = explain_conn(&ctx(), &events, 40003, Observed::Timeout).decided_by;
        assert_eq!((d.kind, d.direction), ("rule", Some("reply")));
        assert!(d.text.starts_with("reply dropped by"), "{}", d.text);
    }

    #[test]
    fn other_connections_are_never_attributed() {
        // Another process's SYN to the same destination, from another port.
        let events = dropped_syn(50000);
        let e = explain_conn(&ctx(), &events, 40000, Observed::Timeout);
        assert_eq!(e.decided_by.kind, "not-visible");
    }

    #[test]
    fn lost_events_are_said() {
        let mut c = ctx();
        c.overruns = 3;
        let e = explain_conn(&c, &[], 40000, Observed::Timeout);
        assert_eq!(e.decided_by.kind, "not-visible");
        assert!(
            e.decided_by.text.contains("ENOBUFS"),
            "{}",
            e.decided_by.text
        );
    }

    #[test]
    fn no_address_has_no_explanation_and_unknown_port_is_not_visible() {
        let mut p = conn(1, Observed::NoAddress);
        assert_eq!(explain(&ctx(), &[], &[p])[0], None);
        p.observed = Observed::Timeout;
        p.local = None;
        let e = explain(&ctx(), &[], &[p])[0].clone().unwrap();
        assert_eq!(e.decided_by.kind, "not-visible");
    }

    #[test]
    fn a_retransmitted_syn_is_not_mixed_into_the_first() {
        let mut events = dropped_syn(40000);
        events.extend(dropped_syn(40000));
        let e = explain_conn(&ctx(), &events, 40000, Observed::Timeout);
        assert_eq!(e.trace.len(), 1);
    }
}
