//! The simulated internet's DNS server: a catch-all hickory-server
//! [`RequestHandler`] that claims authority for every name.
//!
//! Answers (class IN only):
//! - `MX` for any name `N` → `N. MX 10 mx.N.`
//! - `A` for any name → the sink IPv4 address (unless A answers are disabled)
//! - `AAAA` for any name → the sink IPv6 address (unless AAAA answers are disabled)
//! - any other type, or a disabled family → NOERROR without answers (NODATA),
//!   with a negative-caching SOA in the authority section.
//!
//! No wire format is handled here: requests arrive decoded by hickory-server
//! and responses are encoded by it.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_server::{
    net::runtime::Time,
    proto::{
        op::{Edns, Header, HeaderCounts, LowerQuery, MessageType, Metadata, OpCode, ResponseCode},
        rr::{
            rdata::{A, AAAA, MX, SOA},
            DNSClass, Name, RData, Record, RecordType,
        },
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};

/// TTL of positive answers, in seconds. Short: a sandbox lives for seconds.
const ANSWER_TTL: u32 = 60;
/// Preference of the synthesized MX record.
const MX_PREFERENCE: u16 = 10;
/// Label prepended to a queried name to form its mail exchange.
const MX_LABEL: &str = "mx";
/// Exchange used when `mx.<name>` would exceed the DNS name length limit.
const FALLBACK_EXCHANGE: &str = "mx.sandbox.invalid.";

/// What the handler decided to answer for one question.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Response code of the reply.
    pub(crate) code: ResponseCode,
    /// Answer section.
    pub(crate) answers: Vec<Record>,
    /// SOA record for the authority section (negative answers only).
    pub(crate) soa: Option<Record>,
}

/// Catch-all authoritative DNS handler of the simulated internet.
#[derive(Debug, Clone)]
pub(crate) struct CatchAllHandler {
    a: Option<Ipv4Addr>,
    aaaa: Option<Ipv6Addr>,
}

impl CatchAllHandler {
    /// `a` / `aaaa`: the address every `A` / `AAAA` query is answered with,
    /// or `None` to answer that type with NODATA.
    pub(crate) fn new(a: Option<Ipv4Addr>, aaaa: Option<Ipv6Addr>) -> Self {
        Self { a, aaaa }
    }

    /// Computes the answer to one question (pure: no I/O).
    pub(crate) fn answer(&self, query: &LowerQuery) -> Answer {
        if query.query_class() != DNSClass::IN {
            return Answer {
                code: ResponseCode::Refused,
                answers: Vec::new(),
                soa: None,
            };
        }
        // Owner names echo the question as asked (case preserved).
        let name = query.original().name().clone();
        let rdata = match query.query_type() {
            RecordType::MX => Some(RData::MX(MX::new(MX_PREFERENCE, exchange_for(&name)))),
            RecordType::A => self.a.map(|ip| RData::A(A(ip))),
            RecordType::AAAA => self.aaaa.map(|ip| RData::AAAA(AAAA(ip))),
            _ => None,
        };
        match rdata {
            Some(rdata) => Answer {
                code: ResponseCode::NoError,
                answers: vec![Record::from_rdata(name, ANSWER_TTL, rdata)],
                soa: None,
            },
            None => Answer {
                code: ResponseCode::NoError,
                answers: Vec::new(),
                soa: Some(negative_soa()),
            },
        }
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

/// The SOA returned with negative answers: root zone, negative TTL 0 so that
/// nothing is cached between sandboxes.
fn negative_soa() -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.sandbox.invalid.").expect("valid name"),
        Name::from_ascii("hostmaster.sandbox.invalid.").expect("valid name"),
        1,
        3600,
        600,
        86400,
        0,
    );
    Record::from_rdata(Name::root(), 0, RData::SOA(soa))
}

#[async_trait::async_trait]
impl RequestHandler for CatchAllHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // Echo EDNS if the client used it (RFC 6891: a compliant responder must).
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });

        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &resp_edns {
            builder.edns(edns);
        }

        let code = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        let result = match code {
            Some(code) => {
                let response = builder.error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
            None => {
                let answer = self.answer(&request.queries.queries()[0]);
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.response_code = answer.code;
                let response =
                    builder.build(metadata, answer.answers.iter(), [], answer.soa.iter(), []);
                response_handle.send_response(response).await
            }
        };

        result.unwrap_or_else(|_| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use hickory_server::{
        net::{runtime::TokioTime, xfer::Protocol, NetError},
        proto::{
            op::{Message, Query},
            serialize::binary::BinEncoder,
        },
        zone_handler::MessageResponse,
    };

    use super::*;

    const SINK4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
    const SINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

    fn both() -> CatchAllHandler {
        CatchAllHandler::new(Some(SINK4), Some(SINK6))
    }

    fn lq(name: &str, rtype: RecordType) -> LowerQuery {
        LowerQuery::query(Query::query(Name::from_ascii(name).unwrap(), rtype))
    }

    #[test]
    fn mx_points_to_mx_dot_name() {
        let ans = both().answer(&lq("gmail.com.", RecordType::MX));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert!(ans.soa.is_none());
        assert_eq!(ans.answers.len(), 1);
        let rec = &ans.answers[0];
        assert_eq!(rec.name, Name::from_ascii("gmail.com.").unwrap());
        match &rec.data {
            RData::MX(mx) => {
                assert_eq!(mx.preference, MX_PREFERENCE);
                assert_eq!(mx.exchange, Name::from_ascii("mx.gmail.com.").unwrap());
            }
            other => panic!("expected MX, got {other:?}"),
        }
    }

    #[test]
    fn mx_of_relative_name_is_fqdn() {
        let ans = both().answer(&lq("example.org", RecordType::MX));
        let RData::MX(mx) = &ans.answers[0].data else {
            panic!("expected MX")
        };
        assert!(mx.exchange.is_fqdn());
        assert_eq!(mx.exchange.to_ascii(), "mx.example.org.");
    }

    #[test]
    fn mx_of_overlong_name_falls_back() {
        let label = "a".repeat(63);
        let long = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
        let ans = both().answer(&lq(&long, RecordType::MX));
        let RData::MX(mx) = &ans.answers[0].data else {
            panic!("expected MX")
        };
        assert_eq!(mx.exchange.to_ascii(), FALLBACK_EXCHANGE);
    }

    #[test]
    fn a_and_aaaa_point_to_sinks_and_keep_case() {
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
    fn disabled_families_get_nodata_with_soa() {
        let h = CatchAllHandler::new(None, Some(SINK6));
        let ans = h.answer(&lq("mx.gmail.com.", RecordType::A));
        assert_eq!(ans.code, ResponseCode::NoError);
        assert!(ans.answers.is_empty());
        assert_eq!(ans.soa.as_ref().unwrap().record_type(), RecordType::SOA);

        let h = CatchAllHandler::new(Some(SINK4), None);
        let ans = h.answer(&lq("mx.gmail.com.", RecordType::AAAA));
        assert!(ans.answers.is_empty());
        assert!(ans.soa.is_some());
        // MX is still answered with both families disabled.
        let h = CatchAllHandler::new(None, None);
        assert_eq!(h.answer(&lq("x.test.", RecordType::MX)).answers.len(), 1);
    }

    #[test]
    fn other_types_get_nodata() {
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

    /// A `ResponseHandler` that encodes the response with hickory and keeps
    /// the bytes, so the full request → response path runs without sockets.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            let info = response.destructive_emit(&mut encoder)?;
            *self.0.lock().unwrap() = bytes;
            Ok(info)
        }
    }

    async fn roundtrip(handler: &CatchAllHandler, query: Message) -> Message {
        let src: SocketAddr = "192.0.2.2:40000".parse().unwrap();
        let request = Request::from_bytes(query.to_vec().unwrap(), src, Protocol::Udp).unwrap();
        let capture = Capture::default();
        handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let bytes = capture.0.lock().unwrap().clone();
        Message::from_vec(&bytes).unwrap()
    }

    fn query_message(id: u16, name: &str, rtype: RecordType) -> Message {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        msg
    }

    #[tokio::test]
    async fn full_request_mx() {
        let reply = roundtrip(&both(), query_message(4242, "gmail.com.", RecordType::MX)).await;
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.authoritative);
        assert!(reply.metadata.recursion_desired);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.answers.len(), 1);
        let RData::MX(mx) = &reply.answers[0].data else {
            panic!("expected MX")
        };
        assert_eq!(mx.exchange.to_ascii(), "mx.gmail.com.");
    }

    #[tokio::test]
    async fn full_request_nodata_and_edns() {
        let handler = CatchAllHandler::new(Some(SINK4), None);
        let mut query = query_message(7, "mx.gmail.com.", RecordType::AAAA);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        query.set_edns(edns);
        let reply = roundtrip(&handler, query).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.authorities.len(), 1);
        assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(reply.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    }

    #[tokio::test]
    async fn full_request_other_opcode_not_implemented() {
        let mut query = query_message(9, "gmail.com.", RecordType::A);
        query.metadata.op_code = OpCode::Status;
        let reply = roundtrip(&both(), query).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        assert!(reply.answers.is_empty());
    }
}
