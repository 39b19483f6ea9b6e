//! nftables trace events as the kernel sends them on the `NFNLGRP_NFTRACE` netlink group:
//! one `NFT_MSG_TRACE` message per rule verdict, chain return or chain policy that a packet
//! with `nftrace` set meets (what `nft monitor trace` prints).
//!
//! A pure parser: bytes in, [`TraceEvent`]s out. The messages come from the kernel, not from
//! the network, but every length is validated anyway: a malformed message is an error for
//! that message, never a panic or an out-of-bounds read.
//!
//! Layout (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h):
//! `nlmsghdr` (16 bytes, host byte order), `nfgenmsg` (4 bytes: family, version, res_id),
//! then `NFTA_TRACE_*` attributes (`nlattr`: u16 length, u16 type, payload, padded to 4).
//! Attribute payloads are big endian (`NLA_F_NET_BYTEORDER` or not).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE`.
pub const NFT_MSG_TRACE_TYPE: u16 = (10 << 8) | 17;
/// The netlink multicast group of trace events (`NFNLGRP_NFTRACE`).
pub const NFNLGRP_NFTRACE: u32 = 9;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
/// Flags in `nla_type` that are not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

// enum nft_trace_attributes
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
// enum nft_verdict_attributes
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// A trace message that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than a header or a declared length needs.
    #[error("truncated {what}: needs {needed} bytes, has {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        available: usize,
    },
    /// An attribute whose payload has the wrong size for its type.
    #[error("attribute {attr} has {len} bytes, expected {expected}")]
    BadLength {
        /// The attribute type.
        attr: u16,
        /// Its payload length.
        len: usize,
        /// The length its type requires.
        expected: usize,
    },
    /// A string attribute that is not NUL-terminated UTF-8.
    #[error("attribute {0} is not a valid string")]
    BadString(u16),
    /// An attribute every trace event has is missing.
    #[error("trace event without {0}")]
    Missing(&'static str),
    /// The kernel reported an error on the socket (`NLMSG_ERROR` with a non-zero code).
    #[error("netlink error {0}")]
    Netlink(i32),
}

/// What kind of step a trace event reports (`enum nft_trace_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A chain's policy applied: no rule gave a final verdict.
    Policy,
    /// A non-base chain returned to its caller.
    Return,
    /// A rule gave a verdict (including `continue`).
    Rule,
    /// A type this parser does not know.
    Other(u32),
}

/// A verdict as the kernel encodes it (`NF_*` and `NFT_*` verdict codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP` (also what `reject` gives: the reject expression drops and sends its answer).
    Drop,
    /// `NF_QUEUE` (to userspace).
    Queue,
    /// `NF_STOLEN`.
    Stolen,
    /// `NFT_CONTINUE`: the rule matched without a final verdict (counter, log, nftrace...).
    Continue,
    /// `NFT_BREAK`.
    Break,
    /// `NFT_RETURN`.
    Return,
    /// `NFT_JUMP` to a chain.
    Jump(String),
    /// `NFT_GOTO` to a chain.
    Goto(String),
    /// Any other code.
    Other(i32),
}

impl Verdict {
    /// Decodes `code` (and the target chain of a jump or goto).
    pub fn from_code(code: i32, chain: Option<String>) -> Verdict {
        match code {
            -1 => Verdict::Continue,
            -2 => Verdict::Break,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            // NF_* verdicts keep extra data (the queue number) above the low byte.
            c if c >= 0 => match c & 0xff {
                0 => Verdict::Drop,
                1 => Verdict::Accept,
                2 => Verdict::Stolen,
                3 => Verdict::Queue,
                _ => Verdict::Other(c),
            },
            c => Verdict::Other(c),
        }
    }

    /// Whether the packet's walk through this base chain ends here.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::Accept | Verdict::Drop | Verdict::Queue | Verdict::Stolen
        )
    }

    /// The word nft uses.
    pub fn word(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Queue => "queue".into(),
            Verdict::Stolen => "stolen".into(),
            Verdict::Continue => "continue".into(),
            Verdict::Break => "break".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
            Verdict::Other(c) => format!("verdict {c}"),
        }
    }
}

/// The addresses and ports of a traced TCP packet, from the headers the kernel copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (byte 13 of the TCP header).
    pub flags: u8,
}

/// One trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The packet's trace id: the same for every event of one packet (not unique over time).
    pub id: u32,
    /// The table's family (`nfgenmsg.nfgen_family`: 1 inet, 2 ip, 10 ip6, ...).
    pub family: u8,
    /// The packet's protocol family (`NFTA_TRACE_NFPROTO`: 2 or 10), when sent.
    pub nfproto: Option<u32>,
    /// Table name.
    pub table: String,
    /// Chain name (the chain the rule is in, not necessarily a base chain).
    pub chain: String,
    /// Rule handle, for rule events.
    pub rule_handle: Option<u64>,
    /// Kind of step.
    pub kind: TraceKind,
    /// The verdict, for rule and return events.
    pub verdict: Option<Verdict>,
    /// The chain's policy (`NF_ACCEPT`/`NF_DROP`), for policy events.
    pub policy: Option<Verdict>,
    /// The packet, when this event carries its headers (the first event of each base chain
    /// the packet walks) and they are IPv4/IPv6 with TCP.
    pub packet: Option<Packet>,
}

/// One netlink datagram may carry several messages; returns each trace event, and an error
/// for each message that could not be read (the others are still returned). Messages of
/// other types are skipped.
pub fn parse_datagram(buf: &[u8]) -> (Vec<TraceEvent>, Vec<ParseError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            errors.push(ParseError::Truncated {
                what: "netlink header",
                needed: NLMSG_HDRLEN,
                available: rest.len(),
            });
            break;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || len > rest.len() {
            errors.push(ParseError::Truncated {
                what: "netlink message",
                needed: len.max(NLMSG_HDRLEN),
                available: rest.len(),
            });
            break;
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        match kind {
            NFT_MSG_TRACE_TYPE => match parse_trace(payload) {
                Ok(event) => events.push(event),
                Err(err) => errors.push(err),
            },
            NLMSG_ERROR if payload.len() >= 4 => {
                let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
                if code != 0 {
                    errors.push(ParseError::Netlink(code));
                }
            }
            // NOOP, DONE, OVERRUN, a short ERROR, other nf_tables messages: nothing to read.
            _ => {}
        }
        // Messages are aligned to 4 bytes (NLMSG_ALIGN).
        let advance = align4(len).min(rest.len());
        rest = &rest[advance..];
    }
    (events, errors)
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Iterates over the attributes of `buf`, validating each length.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ParseError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < 4 {
            let available = buf.len();
            buf = &[];
            return Some(Err(ParseError::Truncated {
                what: "attribute header",
                needed: 4,
                available,
            }));
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            let available = buf.len();
            buf = &[];
            return Some(Err(ParseError::Truncated {
                what: "attribute",
                needed: len.max(4),
                available,
            }));
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((kind, payload)))
    })
}

fn be32(attr: u16, payload: &[u8]) -> Result<u32, ParseError> {
    let bytes: [u8; 4] = payload.try_into().map_err(|_| ParseError::BadLength {
        attr,
        len: payload.len(),
        expected: 4,
    })?;
    Ok(u32::from_be_bytes(bytes))
}

fn be64(attr: u16, payload: &[u8]) -> Result<u64, ParseError> {
    let bytes: [u8; 8] = payload.try_into().map_err(|_| ParseError::BadLength {
        attr,
        len: payload.len(),
        expected: 8,
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A NUL-terminated string attribute (`NLA_STRING` as nf_tables sends it).
fn string(attr: u16, payload: &[u8]) -> Result<String, ParseError> {
    let text = match payload.iter().position(|&b| b == 0) {
        Some(end) => &payload[..end],
        None => payload,
    };
    std::str::from_utf8(text)
        .map(str::to_owned)
        .map_err(|_| ParseError::BadString(attr))
}

fn parse_verdict(payload: &[u8]) -> Result<Verdict, ParseError> {
    let mut code = None;
    let mut chain = None;
    for attr in attributes(payload) {
        let (kind, value) = attr?;
        match kind {
            NFTA_VERDICT_CODE => code = Some(be32(kind, value)? as i32),
            NFTA_VERDICT_CHAIN => chain = Some(string(kind, value)?),
            _ => {}
        }
    }
    let code = code.ok_or(ParseError::Missing("a verdict code"))?;
    Ok(Verdict::from_code(code, chain))
}

/// Parses the payload of one `NFT_MSG_TRACE` message (after the netlink header).
pub fn parse_trace(payload: &[u8]) -> Result<TraceEvent, ParseError> {
    if payload.len() < NFGENMSG_LEN {
        return Err(ParseError::Truncated {
            what: "nfgenmsg",
            needed: NFGENMSG_LEN,
            available: payload.len(),
        });
    }
    let family = payload[0];
    let mut id = None;
    let mut nfproto = None;
    let mut table = None;
    let mut chain = None;
    let mut rule_handle = None;
    let mut kind = None;
    let mut verdict = None;
    let mut policy = None;
    let mut network = None;
    let mut transport = None;
    for attr in attributes(&payload[NFGENMSG_LEN..]) {
        let (attr, value) = attr?;
        match attr {
            NFTA_TRACE_TABLE => table = Some(string(attr, value)?),
            NFTA_TRACE_CHAIN => chain = Some(string(attr, value)?),
            NFTA_TRACE_RULE_HANDLE => rule_handle = Some(be64(attr, value)?),
            NFTA_TRACE_TYPE => {
                kind = Some(match be32(attr, value)? {
                    1 => TraceKind::Policy,
                    2 => TraceKind::Return,
                    3 => TraceKind::Rule,
                    other => TraceKind::Other(other),
                })
            }
            NFTA_TRACE_VERDICT => verdict = Some(parse_verdict(value)?),
            NFTA_TRACE_ID => id = Some(be32(attr, value)?),
            NFTA_TRACE_NETWORK_HEADER => network = Some(value),
            NFTA_TRACE_TRANSPORT_HEADER => transport = Some(value),
            NFTA_TRACE_NFPROTO => nfproto = Some(be32(attr, value)?),
            NFTA_TRACE_POLICY => policy = Some(Verdict::from_code(be32(attr, value)? as i32, None)),
            _ => {}
        }
    }
    let packet = match (network, transport) {
        (Some(n), Some(t)) => packet_of(n, t),
        _ => None,
    };
    Ok(TraceEvent {
        id: id.ok_or(ParseError::Missing("NFTA_TRACE_ID"))?,
        family,
        nfproto,
        table: table.ok_or(ParseError::Missing("NFTA_TRACE_TABLE"))?,
        chain: chain.ok_or(ParseError::Missing("NFTA_TRACE_CHAIN"))?,
        rule_handle,
        kind: kind.ok_or(ParseError::Missing("NFTA_TRACE_TYPE"))?,
        verdict,
        policy,
        packet,
    })
}

/// Reads addresses from an IPv4/IPv6 header and ports and flags from a TCP header; `None`
/// for anything else (not TCP, or headers too short to hold the fields).
pub fn packet_of(network: &[u8], transport: &[u8]) -> Option<Packet> {
    let (src, dst, protocol) = match network.first()? >> 4 {
        4 if network.len() >= 20 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&network[12..16]).ok()?)),
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&network[16..20]).ok()?)),
            network[9],
        ),
        6 if network.len() >= 40 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?)),
            // With extension headers this is not TCP's number, but the kernel's transport
            // header is still TCP's: trust the ports only when the next header says TCP.
            network[6],
        ),
        _ => return None,
    };
    const IPPROTO_TCP: u8 = 6;
    if protocol != IPPROTO_TCP || transport.len() < 14 {
        return None;
    }
    Some(Packet {
        src,
        dst,
        sport: u16::from_be_bytes([transport[0], transport[1]]),
        dport: u16::from_be_bytes([transport[2], transport[3]]),
        flags: transport[13],
    })
}

/// Builds trace messages as the kernel does; for tests here and in the modules that consume
/// events.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// One attribute: header, payload, padding.
    pub fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(len), 0);
        out
    }

    /// A NUL-terminated string attribute.
    pub fn str_attr(kind: u16, text: &str) -> Vec<u8> {
        let mut payload = text.as_bytes().to_vec();
        payload.push(0);
        attr(kind, &payload)
    }

    /// A full netlink message of type `NFT_MSG_TRACE` with `attrs`.
    pub fn message(family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let len = NLMSG_HDRLEN + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&NFT_MSG_TRACE_TYPE.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&body);
        out.resize(align4(out.len()), 0);
        out
    }

    /// An IPv4 or IPv6 header (only the fields the parser reads) and a TCP header.
    pub fn headers(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> [Vec<u8>; 2] {
        let network = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = vec![0u8; 20];
                h[0] = 0x45;
                h[9] = 6;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[6] = 6;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h
            }
            _ => panic!("mixed families"),
        };
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[13] = flags;
        [network, tcp]
    }

    /// What one trace event says, to build its message.
    pub struct Event<'a> {
        pub id: u32,
        pub family: u8,
        pub table: &'a str,
        pub chain: &'a str,
        pub handle: Option<u64>,
        pub kind: u32,
        pub verdict: Option<(i32, Option<&'a str>)>,
        pub policy: Option<u32>,
        pub packet: Option<(IpAddr, IpAddr, u16, u16, u8)>,
    }

    impl Event<'_> {
        /// The netlink message the kernel would send.
        pub fn bytes(&self) -> Vec<u8> {
            let mut attrs = vec![
                str_attr(NFTA_TRACE_TABLE, self.table),
                str_attr(NFTA_TRACE_CHAIN, self.chain),
                attr(NFTA_TRACE_TYPE, &self.kind.to_be_bytes()),
                attr(NFTA_TRACE_ID, &self.id.to_be_bytes()),
            ];
            if let Some(h) = self.handle {
                attrs.push(attr(NFTA_TRACE_RULE_HANDLE, &h.to_be_bytes()));
            }
            if let Some((code, chain)) = self.verdict {
                let mut nested = attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(c) = chain {
                    nested.extend(str_attr(NFTA_VERDICT_CHAIN, c));
                }
                attrs.push(attr(NFTA_TRACE_VERDICT | 0x8000, &nested));
            }
            if let Some(p) = self.policy {
                attrs.push(attr(NFTA_TRACE_POLICY, &p.to_be_bytes()));
            }
            if let Some((s, d, sp, dp, f)) = self.packet {
                let [n, t] = headers(s, d, sp, dp, f);
                attrs.push(attr(NFTA_TRACE_NETWORK_HEADER, &n));
                attrs.push(attr(NFTA_TRACE_TRANSPORT_HEADER, &t));
                let proto: u32 = if s.is_ipv4() { 2 } else { 10 };
                attrs.push(attr(NFTA_TRACE_NFPROTO, &proto.to_be_bytes()));
            }
            message(self.family, &attrs)
        }
    }

    /// A rule event with `verdict`.
    pub fn rule<'a>(
        id: u32,
        family: u8,
        table: &'a str,
        chain: &'a str,
        handle: u64,
        verdict: i32,
    ) -> Event<'a> {
        Event {
            id,
            family,
            table,
            chain,
            handle: Some(handle),
            kind: 3,
            verdict: Some((verdict, None)),
            policy: None,
            packet: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A message captured from this kernel (6.18) with a raw NETLINK_NETFILTER socket bound
    /// to NFNLGRP_NFTRACE: the first event of an IPv4 SYN in `ip filter OUTPUT`, dropped by
    /// rule handle 2 (`nft monitor trace` printed "ip filter OUTPUT rule ... (verdict drop)").
    const CAPTURED: &str = include_str!("testdata/ipv4-drop.hex");

    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn captured_kernel_message() {
        let (events, errors) = parse_datagram(&unhex(CAPTURED));
        assert!(errors.is_empty(), "{errors:?}");
        let drop = events
            .iter()
            .find(|e| e.table == "filter" && e.kind == TraceKind::Rule)
            .expect("a rule event of ip filter");
        assert_eq!(drop.family, 2);
        assert_eq!(drop.chain, "OUTPUT");
        assert_eq!(drop.rule_handle, Some(2));
        assert_eq!(drop.verdict, Some(Verdict::Drop));
        let first = events.iter().find(|e| e.packet.is_some()).unwrap();
        let p = first.packet.unwrap();
        assert_eq!(p.dst, v4("203.0.113.10"));
        assert_eq!(p.dport, 25);
        assert_eq!(p.flags & 0x02, 0x02, "a SYN");
    }

    #[test]
    fn constructed_events_round_trip() {
        let mut datagram = Event {
            packet: Some((v4("198.51.100.1"), v4("203.0.113.10"), 40000, 25, 0x02)),
            ..rule(7, 2, "filter", "OUTPUT", 4, 0)
        }
        .bytes();
        datagram.extend(
            Event {
                verdict: Some((-3, Some("smtp"))),
                ..rule(7, 1, "fw", "out", 9, 0)
            }
            .bytes(),
        );
        datagram.extend(
            Event {
                kind: 1,
                handle: None,
                verdict: None,
                policy: Some(1),
                ..rule(8, 10, "filter", "OUTPUT", 0, 0)
            }
            .bytes(),
        );
        let (events, errors) = parse_datagram(&datagram);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].verdict, Some(Verdict::Drop));
        assert_eq!(events[0].packet.unwrap().sport, 40000);
        assert_eq!(events[0].nfproto, Some(2));
        assert_eq!(events[1].verdict, Some(Verdict::Jump("smtp".into())));
        assert_eq!(events[1].packet, None);
        assert_eq!(events[2].kind, TraceKind::Policy);
        assert_eq!(events[2].policy, Some(Verdict::Accept));
        assert_eq!(events[2].rule_handle, None);
    }

    #[test]
    fn ipv6_headers() {
        let s: IpAddr = "2001:db8:100::1".parse().unwrap();
        let d: IpAddr = "2001:db8:200::10".parse().unwrap();
        let [n, t] = headers(s, d, 1234, 587, 0x12);
        let p = packet_of(&n, &t).unwrap();
        assert_eq!(
            (p.src, p.dst, p.sport, p.dport, p.flags),
            (s, d, 1234, 587, 0x12)
        );
        // Not TCP: no packet.
        let mut udp = n.clone();
        udp[6] = 17;
        assert_eq!(packet_of(&udp, &t), None);
        // Too short to hold the fields.
        assert_eq!(packet_of(&n[..39], &t), None);
        assert_eq!(packet_of(&n, &t[..13]), None);
    }

    #[test]
    fn verdict_codes() {
        assert_eq!(Verdict::from_code(0, None), Verdict::Drop);
        assert_eq!(Verdict::from_code(1, None), Verdict::Accept);
        // NF_QUEUE with a queue number in the high bits.
        assert_eq!(Verdict::from_code(3 | (5 << 16), None), Verdict::Queue);
        assert_eq!(Verdict::from_code(-1, None), Verdict::Continue);
        assert_eq!(
            Verdict::from_code(-4, Some("x".into())),
            Verdict::Goto("x".into())
        );
        assert_eq!(Verdict::from_code(-5, None), Verdict::Return);
        assert_eq!(Verdict::from_code(-9, None), Verdict::Other(-9));
        assert!(Verdict::Drop.is_final() && !Verdict::Jump("x".into()).is_final());
    }

    #[test]
    fn lengths_are_validated() {
        let good = rule(1, 2, "filter", "OUTPUT", 2, 0).bytes();
        // Every truncation of a valid message is an error or nothing, never a panic.
        for cut in 0..good.len() {
            let (events, _errors) = parse_datagram(&good[..cut]);
            assert!(events.is_empty(), "cut at {cut}");
        }
        // A message whose length field exceeds the datagram.
        let mut long = good.clone();
        long[0..4].copy_from_slice(&((good.len() + 8) as u32).to_ne_bytes());
        assert!(matches!(
            parse_datagram(&long).1[..],
            [ParseError::Truncated { .. }]
        ));
        // An attribute of the wrong size for its type.
        let bad = message(
            2,
            &[
                str_attr(NFTA_TRACE_TABLE, "t"),
                str_attr(NFTA_TRACE_CHAIN, "c"),
                attr(NFTA_TRACE_TYPE, &[0, 3]),
                attr(NFTA_TRACE_ID, &1u32.to_be_bytes()),
            ],
        );
        assert_eq!(
            parse_datagram(&bad).1,
            vec![ParseError::BadLength {
                attr: NFTA_TRACE_TYPE,
                len: 2,
                expected: 4
            }]
        );
        // An attribute length below its own header.
        let mut tiny = message(2, &[attr(NFTA_TRACE_ID, &1u32.to_be_bytes())]);
        tiny[NLMSG_HDRLEN + NFGENMSG_LEN] = 2;
        assert!(matches!(
            parse_datagram(&tiny).1[..],
            [ParseError::Truncated { .. }]
        ));
        // Missing mandatory attributes.
        let bare = message(2, &[attr(NFTA_TRACE_ID, &1u32.to_be_bytes())]);
        assert_eq!(
            parse_datagram(&bare).1,
            vec![ParseError::Missing("NFTA_TRACE_TABLE")]
        );
    }

    #[test]
    fn other_messages_are_skipped_and_errors_reported() {
        let mut datagram = message(2, &[]);
        datagram[4..6].copy_from_slice(&((10u16 << 8) | 6).to_ne_bytes());
        let mut error = vec![0u8; NLMSG_HDRLEN + 4];
        error[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[NLMSG_HDRLEN..].copy_from_slice(&(-105i32).to_ne_bytes());
        datagram.extend(error);
        let (events, errors) = parse_datagram(&datagram);
        assert!(events.is_empty());
        assert_eq!(errors, vec![ParseError::Netlink(-105)]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_datagram(&bytes);
        }
    }
}
