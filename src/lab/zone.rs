//! What the lab's DNS server knows: a [`Zone`], and the pure function from a
//! question to an answer ([`Zone::answer`]; no I/O, no wire format).
//!
//! Two kinds of zone:
//! - [`Zone::CatchAll`] (the sandbox's): authority for every name. `MX` for
//!   any name `N` → `N. MX 10 mx.N.`; `A` / `AAAA` for any name → one fixed
//!   address each, or NODATA when that family is switched off; any other type
//!   → NODATA.
//! - [`Zone::Records`] (the test lab's, the benchmark's): explicit records
//!   under the origins the server is authoritative for. A name under an origin
//!   without records is NXDOMAIN (unless it is an empty non-terminal: NODATA);
//!   a name under no origin is REFUSED, as a server without recursion answers.
//!   CNAMEs are followed inside the zone; an `MX` answer carries the in-zone
//!   `A`/`AAAA` records of its exchanges in the additional section, as most
//!   authoritative servers do, so that a resolver needs one round trip.
//!
//! Every class but IN is REFUSED. Negative answers carry an SOA with negative
//! TTL 0, so that nothing is cached from one lab to the next.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::{
    op::{LowerQuery, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME, MX, SOA},
        DNSClass, LowerName, Name, RData, Record, RecordType,
    },
    ProtoError,
};

/// TTL of positive answers, in seconds. Short: a lab lives for seconds.
const ANSWER_TTL: u32 = 60;
/// Preference of the catch-all's synthesized MX record.
const CATCH_ALL_PREFERENCE: u16 = 10;
/// Label prepended to a queried name to form its catch-all mail exchange.
const MX_LABEL: &str = "mx";
/// Exchange used when `mx.<name>` would exceed the DNS name length limit.
const FALLBACK_EXCHANGE: &str = "mx.sandbox.invalid.";
/// How many CNAMEs an answer follows before giving up (a loop, say).
const CNAME_LIMIT: usize = 8;

/// Why a record cannot be added to a [`Records`] zone.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// Not a valid domain name.
    #[error("`{name}` is not a valid domain name: {error}")]
    Name {
        /// The text given.
        name: String,
        /// The parser's complaint.
        error: ProtoError,
    },
    /// The owner name is under none of the zone's origins.
    #[error("`{name}` is outside the zone's origins ({origins})")]
    OutsideZone {
        /// The owner name.
        name: String,
        /// The origins, comma separated.
        origins: String,
    },
    /// A CNAME owner may have no other data (RFC 1034 3.6.2), and a name
    /// with data may not become a CNAME.
    #[error("`{name}` cannot have a CNAME and other records")]
    CnameConflict {
        /// The owner name.
        name: String,
    },
}

/// The data the lab's DNS server answers from.
#[derive(Debug, Clone)]
pub enum Zone {
    /// Authority for every name: `MX N` → `mx.N`, `A` → `a`, `AAAA` → `aaaa`
    /// (`None`: NODATA for that family, as `--no-a` / `--no-aaaa`).
    CatchAll {
        /// The address every `A` query is answered with.
        a: Option<Ipv4Addr>,
        /// The address every `AAAA` query is answered with.
        aaaa: Option<Ipv6Addr>,
    },
    /// Explicit records under some origins.
    Records(Records),
}

impl From<Records> for Zone {
    fn from(records: Records) -> Zone {
        Zone::Records(records)
    }
}

/// Explicit records under the origins a server is authoritative for; built
/// with [`Records::new`] and the adders ([`Records::mx`], [`Records::a`] ...).
#[derive(Debug, Clone)]
pub struct Records {
    origins: Vec<Name>,
    by_owner: BTreeMap<LowerName, Vec<RData>>,
}

/// What the server answers to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code.
    pub code: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Additional section (addresses of MX exchanges).
    pub additionals: Vec<Record>,
    /// SOA record for the authority section (negative answers only).
    pub soa: Option<Record>,
}

impl Answer {
    fn refused() -> Answer {
        Answer {
            code: ResponseCode::Refused,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: None,
        }
    }
}

/// Parses `text` as a fully qualified name.
fn parse_name(text: &str) -> Result<Name, ZoneError> {
    let mut name = Name::from_ascii(text).map_err(|error| ZoneError::Name {
        name: text.to_owned(),
        error,
    })?;
    name.set_fqdn(true);
    Ok(name)
}

impl Records {
    /// An empty zone authoritative for `origins` (e.g. `["test"]`).
    pub fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Result<Records, ZoneError> {
        Ok(Records {
            origins: origins
                .into_iter()
                .map(parse_name)
                .collect::<Result<_, _>>()?,
            by_owner: BTreeMap::new(),
        })
    }

    /// Adds `rdata` at `owner`, enforcing the CNAME rule.
    fn add(&mut self, owner: &str, rdata: RData) -> Result<&mut Records, ZoneError> {
        let name = parse_name(owner)?;
        if !self.origins.iter().any(|o| o.zone_of(&name)) {
            return Err(ZoneError::OutsideZone {
                name: owner.to_owned(),
                origins: self
                    .origins
                    .iter()
                    .map(|o| o.to_ascii())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let existing = self.by_owner.entry(LowerName::from(&name)).or_default();
        let is_cname = matches!(rdata, RData::CNAME(_));
        if !existing.is_empty()
            && (is_cname || existing.iter().any(|r| matches!(r, RData::CNAME(_))))
        {
            return Err(ZoneError::CnameConflict {
                name: owner.to_owned(),
            });
        }
        if !existing.contains(&rdata) {
            existing.push(rdata);
        }
        Ok(self)
    }

    /// `owner MX preference exchange`.
    pub fn mx(
        &mut self,
        owner: &str,
        preference: u16,
        exchange: &str,
    ) -> Result<&mut Records, ZoneError> {
        let exchange = parse_name(exchange)?;
        self.add(owner, RData::MX(MX::new(preference, exchange)))
    }

    /// `owner MX 0 .`: the RFC 7505 null MX (the domain accepts no mail).
    pub fn null_mx(&mut self, owner: &str) -> Result<&mut Records, ZoneError> {
        self.add(owner, RData::MX(MX::new(0, Name::root())))
    }

    /// `owner A addr`.
    pub fn a(&mut self, owner: &str, addr: Ipv4Addr) -> Result<&mut Records, ZoneError> {
        self.add(owner, RData::A(A(addr)))
    }

    /// `owner AAAA addr`.
    pub fn aaaa(&mut self, owner: &str, addr: Ipv6Addr) -> Result<&mut Records, ZoneError> {
        self.add(owner, RData::AAAA(AAAA(addr)))
    }

    /// An `A` or `AAAA` record for each address.
    pub fn host(&mut self, owner: &str, addrs: &[IpAddr]) -> Result<&mut Records, ZoneError> {
        for addr in addrs {
            match *addr {
                IpAddr::V4(v4) => self.a(owner, v4)?,
                IpAddr::V6(v6) => self.aaaa(owner, v6)?,
            };
        }
        Ok(self)
    }

    /// `owner CNAME target`.
    pub fn cname(&mut self, owner: &str, target: &str) -> Result<&mut Records, ZoneError> {
        let target = parse_name(target)?;
        self.add(owner, RData::CNAME(CNAME(target)))
    }

    /// The origins, as text [`Records::new`] accepts again.
    pub(crate) fn origin_names(&self) -> impl Iterator<Item = String> + '_ {
        self.origins.iter().map(Name::to_ascii)
    }

    /// Every record as (owner, data), owners as text the adders accept again: what
    /// [`super::internet_process`] sends to the internet process, which rebuilds the zone
    /// with the adders (and so checks it again).
    pub(crate) fn records(&self) -> impl Iterator<Item = (String, &RData)> + '_ {
        self.by_owner
            .iter()
            .flat_map(|(owner, data)| data.iter().map(move |d| (owner.to_string(), d)))
    }

    /// The most specific origin `name` is under.
    fn origin_of(&self, name: &Name) -> Option<&Name> {
        self.origins
            .iter()
            .filter(|o| o.zone_of(name))
            .max_by_key(|o| o.num_labels())
    }

    /// Whether `name` exists: it owns records, is an origin, or is an empty
    /// non-terminal (some owner lies below it).
    fn exists(&self, name: &LowerName) -> bool {
        self.by_owner.contains_key(name)
            || self.origins.iter().any(|o| LowerName::from(o) == *name)
            || self.by_owner.keys().any(|owner| name.zone_of(owner))
    }

    fn answer(&self, query: &LowerQuery) -> Answer {
        // Owner names echo the question as asked (case preserved).
        let asked = query.original().name().clone();
        let Some(origin) = self.origin_of(&asked) else {
            return Answer::refused();
        };
        let qtype = query.query_type();
        let mut answers = Vec::new();
        let mut owner = asked;
        for _ in 0..=CNAME_LIMIT {
            let key = LowerName::from(&owner);
            let Some(rdatas) = self.by_owner.get(&key) else {
                let code = if self.exists(&key) {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                };
                return negative(code, answers, origin);
            };
            if qtype != RecordType::CNAME {
                if let Some(RData::CNAME(CNAME(target))) =
                    rdatas.iter().find(|r| matches!(r, RData::CNAME(_)))
                {
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        ANSWER_TTL,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if self.origin_of(target).is_none() {
                        // Out of the zone: the resolver asks elsewhere.
                        return positive(answers, Vec::new());
                    }
                    owner = target.clone();
                    continue;
                }
            }
            let found: Vec<&RData> = rdatas.iter().filter(|r| r.record_type() == qtype).collect();
            if found.is_empty() {
                return negative(ResponseCode::NoError, answers, origin);
            }
            let mut additionals = Vec::new();
            for rdata in &found {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    ANSWER_TTL,
                    (*rdata).clone(),
                ));
                if let RData::MX(mx) = rdata {
                    additionals.extend(self.addresses_of(&mx.exchange));
                }
            }
            return positive(answers, additionals);
        }
        // A CNAME chain longer than the limit (a loop): the server gives up.
        Answer {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: None,
        }
    }

    /// The `A` and `AAAA` records of `name` (no CNAME following).
    fn addresses_of(&self, name: &Name) -> Vec<Record> {
        self.by_owner
            .get(&LowerName::from(name))
            .into_iter()
            .flatten()
            .filter(|r| matches!(r, RData::A(_) | RData::AAAA(_)))
            .map(|r| Record::from_rdata(name.clone(), ANSWER_TTL, r.clone()))
            .collect()
    }
}

fn positive(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
    Answer {
        code: ResponseCode::NoError,
        answers,
        additionals,
        soa: None,
    }
}

fn negative(code: ResponseCode, answers: Vec<Record>, origin: &Name) -> Answer {
    Answer {
        code,
        answers,
        additionals: Vec::new(),
        soa: Some(soa(origin)),
    }
}

impl Zone {
    /// The answer to one question (pure: no I/O).
    pub fn answer(&self, query: &LowerQuery) -> Answer {
        if query.query_class() != DNSClass::IN {
            return Answer::refused();
        }
        match self {
            Zone::CatchAll { a, aaaa } => catch_all(*a, *aaaa, query),
            Zone::Records(records) => records.answer(query),
        }
    }
}

fn catch_all(a: Option<Ipv4Addr>, aaaa: Option<Ipv6Addr>, query: &LowerQuery) -> Answer {
    // Owner names echo the question as asked (case preserved).
    let name = query.original().name().clone();
    let rdata = match query.query_type() {
        RecordType::MX => Some(RData::MX(MX::new(
            CATCH_ALL_PREFERENCE,
            exchange_for(&name),
        ))),
        RecordType::A => a.map(|ip| RData::A(A(ip))),
        RecordType::AAAA => aaaa.map(|ip| RData::AAAA(AAAA(ip))),
        _ => None,
    };
    match rdata {
        Some(rdata) => positive(
            vec![Record::from_rdata(name, ANSWER_TTL, rdata)],
            Vec::new(),
        ),
        None => negative(ResponseCode::NoError, Vec::new(), &Name::root()),
    }
}

/// `mx.<name>`, or a fixed fallback if that name would be too long.
fn exchange_for(name: &Name) -> Name {
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    fqdn.prepend_label(MX_LABEL).unwrap_or_else(|_| {
        Name::from_ascii(FALLBACK_EXCHANGE).expect("FALLBACK_EXCHANGE is a valid name")
    })
}

/// The SOA returned with negative answers for `origin`: negative TTL 0 so
/// that nothing is cached between labs.
fn soa(origin: &Name) -> Record {
    let under = |label: &str| {
        origin
            .prepend_label(label)
            .unwrap_or_else(|_| Name::from_ascii("invalid.").expect("valid name"))
    };
    let (mname, rname) = if origin.is_root() {
        (
            Name::from_ascii("ns.sandbox.invalid.").expect("valid name"),
            Name::from_ascii("hostmaster.sandbox.invalid.").expect("valid name"),
        )
    } else {
        (under("ns"), under("hostmaster"))
    };
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, 0);
    Record::from_rdata(origin.clone(), 0, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::op::Query;

    use super::*;

    const SINK4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
    const SINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

    fn both() -> Zone {
        Zone::CatchAll {
            a: Some(SINK4),
            aaaa: Some(SINK6),
        }
    }

    fn lq(name: &str, rtype: RecordType) -> LowerQuery {
        LowerQuery::query(Query::query(Name::from_ascii(name).unwrap(), rtype))
    }

    fn mx_of(record: &Record) -> (u16, String) {
        match &record.data {
            RData::MX(mx) => (mx.preference, mx.exchange.to_ascii()),
            other => panic!("expected MX, got {other:?}"),
        }
    }

    #[test]
    fn catch_all_mx_points_to_mx_dot_name() {
        let ans = both().answer(&lq("gmail.com.", RecordType::MX));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert!(ans.soa.is_none());
        assert!(ans.additionals.is_empty());
        assert_eq!(ans.answers.len(), 1);
        assert_eq!(ans.answers[0].name, Name::from_ascii("gmail.com.").unwrap());
        assert_eq!(
            mx_of(&ans.answers[0]),
            (CATCH_ALL_PREFERENCE, "mx.gmail.com.".into())
        );
    }

    #[test]
    fn catch_all_mx_of_relative_name_is_fqdn() {
        let ans = both().answer(&lq("example.org", RecordType::MX));
        assert_eq!(mx_of(&ans.answers[0]).1, "mx.example.org.");
    }

    #[test]
    fn catch_all_mx_of_overlong_name_falls_back() {
        let label = "a".repeat(63);
        let long = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
        let ans = both().answer(&lq(&long, RecordType::MX));
        assert_eq!(mx_of(&ans.answers[0]).1, FALLBACK_EXCHANGE);
    }

    #[test]
    fn catch_all_a_and_aaaa_point_to_sinks_and_keep_case() {
        let ans = both().answer(&lq("MX.Gmail.com.", RecordType::A));
        assert_eq!(ans.answers.len(), 1);
        assert_eq!(ans.answers[0].name.to_ascii(), "MX.Gmail.com.");
        assert_eq!(ans.answers[0].data, RData::A(A(SINK4)));
        assert_eq!(ans.answers[0].ttl, ANSWER_TTL);

        let ans = both().answer(&lq("mx.gmail.com.", RecordType::AAAA));
        assert_eq!(ans.answers.len(), 1);
        assert_eq!(ans.answers[0].data, RData::AAAA(AAAA(SINK6)));
    }

    #[test]
    fn catch_all_disabled_families_get_nodata_with_soa() {
        let zone = Zone::CatchAll {
            a: None,
            aaaa: Some(SINK6),
        };
        let ans = zone.answer(&lq("mx.gmail.com.", RecordType::A));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert!(ans.answers.is_empty());
        assert_eq!(ans.soa.as_ref().unwrap().record_type(), RecordType::SOA);

        let zone = Zone::CatchAll {
            a: Some(SINK4),
            aaaa: None,
        };
        let ans = zone.answer(&lq("mx.gmail.com.", RecordType::AAAA));
        assert!(ans.answers.is_empty());
        assert!(ans.soa.is_some());
        // MX is still answered with both families disabled.
        let zone = Zone::CatchAll {
            a: None,
            aaaa: None,
        };
        assert_eq!(zone.answer(&lq("x.test.", RecordType::MX)).answers.len(), 1);
    }

    #[test]
    fn catch_all_other_types_get_nodata() {
        for rtype in [
            RecordType::TXT,
            RecordType::NS,
            RecordType::PTR,
            RecordType::SRV,
        ] {
            let ans = both().answer(&lq("gmail.com.", rtype));
            assert_eq!(ans.code, ResponseCode::NoError, "{rtype}");
            assert!(ans.answers.is_empty(), "{rtype}");
            assert!(ans.soa.is_some(), "{rtype}");
        }
    }

    #[test]
    fn non_in_class_is_refused() {
        let mut q = Query::query(Name::from_ascii("gmail.com.").unwrap(), RecordType::A);
        q.set_query_class(DNSClass::CH);
        let ans = both().answer(&LowerQuery::query(q));
        assert_eq!(ans.code, ResponseCode::Refused);
        assert!(ans.answers.is_empty());
    }

    /// A zone like the test lab's.
    fn test_zone() -> Zone {
        let mut r = Records::new(["test"]).unwrap();
        r.mx("dual.test", 10, "mx1.dual.test")
            .unwrap()
            .mx("dual.test", 20, "mx2.dual.test")
            .unwrap()
            .host(
                "mx1.dual.test",
                &[
                    "203.0.113.10".parse().unwrap(),
                    "2001:db8:200::10".parse().unwrap(),
                ],
            )
            .unwrap()
            .a("mx2.dual.test", Ipv4Addr::new(203, 0, 113, 11))
            .unwrap()
            .null_mx("nullmx.test")
            .unwrap()
            .mx("cname.test", 10, "alias.cname.test")
            .unwrap()
            .cname("alias.cname.test", "mx1.dual.test")
            .unwrap()
            .mx("outside.test", 10, "mx.example.org")
            .unwrap()
            .cname("away.test", "mx.example.org")
            .unwrap()
            .cname("loop1.test", "loop2.test")
            .unwrap()
            .cname("loop2.test", "loop1.test")
            .unwrap()
            .a("deep.below.ent.test", Ipv4Addr::new(203, 0, 113, 12))
            .unwrap();
        r.into()
    }

    #[test]
    fn records_mx_carries_in_zone_addresses_as_additionals() {
        let ans = test_zone().answer(&lq("Dual.Test.", RecordType::MX));
        assert_eq!(ans.code, ResponseCode::NoError);
        let mut mx: Vec<_> = ans.answers.iter().map(mx_of).collect();
        mx.sort();
        assert_eq!(
            mx,
            [(10, "mx1.dual.test.".into()), (20, "mx2.dual.test.".into())]
        );
        assert_eq!(ans.answers[0].name.to_ascii(), "Dual.Test.");
        let extra: Vec<(String, RData)> = ans
            .additionals
            .iter()
            .map(|r| (r.name.to_ascii(), r.data.clone()))
            .collect();
        assert_eq!(extra.len(), 3, "{extra:?}");
        assert!(extra.contains(&(
            "mx2.dual.test.".into(),
            RData::A(A(Ipv4Addr::new(203, 0, 113, 11)))
        )));
        // An exchange outside the zone brings nothing along.
        let ans = test_zone().answer(&lq("outside.test.", RecordType::MX));
        assert_eq!(ans.answers.len(), 1);
        assert!(ans.additionals.is_empty());
    }

    #[test]
    fn records_null_mx_is_preference_0_root() {
        let ans = test_zone().answer(&lq("nullmx.test.", RecordType::MX));
        assert_eq!(mx_of(&ans.answers[0]), (0, ".".into()));
    }

    #[test]
    fn records_unknown_names_are_nxdomain_and_missing_types_nodata() {
        let zone = test_zone();
        let ans = zone.answer(&lq("nx.test.", RecordType::MX));
        assert_eq!(ans.code, ResponseCode::NXDomain);
        assert!(ans.answers.is_empty());
        assert_eq!(ans.soa.as_ref().unwrap().name.to_ascii(), "test.");

        let ans = zone.answer(&lq("mx2.dual.test.", RecordType::AAAA));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert!(ans.answers.is_empty());
        assert!(ans.soa.is_some());

        // The origin and empty non-terminals exist.
        for name in ["test.", "below.ent.test.", "ent.test."] {
            let ans = zone.answer(&lq(name, RecordType::A));
            assert_eq!(ans.code, ResponseCode::NoError, "{name}");
            assert!(ans.answers.is_empty(), "{name}");
        }
    }

    #[test]
    fn records_outside_the_origins_are_refused() {
        let ans = test_zone().answer(&lq("gmail.com.", RecordType::MX));
        assert_eq!(ans.code, ResponseCode::Refused);
        assert!(ans.answers.is_empty() && ans.soa.is_none());
    }

    #[test]
    fn records_cname_is_followed_inside_the_zone() {
        let zone = test_zone();
        let ans = zone.answer(&lq("alias.cname.test.", RecordType::AAAA));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert_eq!(ans.answers.len(), 2);
        assert_eq!(
            ans.answers[0].data,
            RData::CNAME(CNAME(Name::from_ascii("mx1.dual.test.").unwrap()))
        );
        assert_eq!(ans.answers[1].name.to_ascii(), "mx1.dual.test.");
        assert_eq!(
            ans.answers[1].data,
            RData::AAAA(AAAA("2001:db8:200::10".parse().unwrap()))
        );
        // Asked for the CNAME itself: just the CNAME.
        let ans = zone.answer(&lq("alias.cname.test.", RecordType::CNAME));
        assert_eq!(ans.answers.len(), 1);
        // Leaving the zone: the CNAME alone, NOERROR.
        let ans = zone.answer(&lq("away.test.", RecordType::A));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert_eq!(ans.answers.len(), 1);
        // A loop ends in SERVFAIL, not in a hang.
        let ans = zone.answer(&lq("loop1.test.", RecordType::A));
        assert_eq!(ans.code, ResponseCode::ServFail);
    }

    #[test]
    fn records_reject_bad_input() {
        let mut r = Records::new(["test"]).unwrap();
        assert!(matches!(
            r.a("mx.example.org", Ipv4Addr::LOCALHOST),
            Err(ZoneError::OutsideZone { .. })
        ));
        assert!(matches!(
            r.a("bad..name.test", Ipv4Addr::LOCALHOST),
            Err(ZoneError::Name { .. })
        ));
        r.a("x.test", Ipv4Addr::LOCALHOST).unwrap();
        assert!(matches!(
            r.cname("x.test", "y.test"),
            Err(ZoneError::CnameConflict { .. })
        ));
        r.cname("c.test", "y.test").unwrap();
        assert!(matches!(
            r.a("c.test", Ipv4Addr::LOCALHOST),
            Err(ZoneError::CnameConflict { .. })
        ));
        // The same record twice is one record.
        r.a("x.test", Ipv4Addr::LOCALHOST).unwrap();
        let ans = Zone::from(r).answer(&lq("x.test.", RecordType::A));
        assert_eq!(ans.answers.len(), 1);
    }
}
