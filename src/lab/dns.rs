//! The lab's DNS server: a hickory-server [`RequestHandler`] answering from a
//! [`Zone`], with an optional [`DnsLayer`] in front that may delay, fail or
//! drop a question before the zone answers it.
//!
//! The layer is an extension point only: the shipped binary never installs
//! one (the sandbox answers everything at once); the test kit's fault layers
//! (SERVFAIL for chosen names, a slow nameserver) implement it.
//!
//! No wire format is handled here: requests arrive decoded by hickory-server
//! and responses are encoded by it.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::{
    net::runtime::Time,
    proto::{
        op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
        rr::RecordType,
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};

use super::zone::Zone;

/// What a [`DnsLayer`] decides for one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsAction {
    /// Answer from the zone at once.
    Answer,
    /// Answer from the zone after this long (a slow nameserver or path).
    Delay(Duration),
    /// Answer SERVFAIL (the server could not answer).
    ServFail,
    /// Send nothing (the question is lost; the client times out).
    Drop,
}

/// Decides, per question, whether and when the zone answers it.
pub trait DnsLayer: Send + Sync {
    /// `name` is the question's name in lower case without the trailing dot
    /// (`servfail.test`); `qtype` its type.
    fn decide(&self, name: &str, qtype: RecordType) -> DnsAction;
}

/// Authoritative handler answering from a [`Zone`], behind an optional layer.
#[derive(Clone)]
pub(crate) struct ZoneHandler {
    zone: Arc<Zone>,
    layer: Option<Arc<dyn DnsLayer>>,
}

impl ZoneHandler {
    pub(crate) fn new(zone: Arc<Zone>, layer: Option<Arc<dyn DnsLayer>>) -> Self {
        Self { zone, layer }
    }

    /// The layer's decision for the request's only question.
    fn decide(&self, request: &Request) -> DnsAction {
        let Some(layer) = &self.layer else {
            return DnsAction::Answer;
        };
        let query = &request.queries.queries()[0];
        let name = query.name().to_string();
        let name = name.strip_suffix('.').unwrap_or(&name);
        layer.decide(&name.to_ascii_lowercase(), query.query_type())
    }
}

/// The `ResponseInfo` of a response that was not (or could not be) sent.
fn unsent(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
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

        let malformed = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        let code = match malformed {
            Some(code) => Some(code),
            None => match self.decide(request) {
                DnsAction::Answer => None,
                DnsAction::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    None
                }
                DnsAction::ServFail => Some(ResponseCode::ServFail),
                DnsAction::Drop => return unsent(request, ResponseCode::NoError),
            },
        };
        let result = match code {
            Some(code) => {
                let response = builder.error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
            None => {
                let answer = self.zone.answer(&request.queries.queries()[0]);
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.response_code = answer.code;
                let response = builder.build(
                    metadata,
                    answer.answers.iter(),
                    [],
                    answer.soa.iter(),
                    answer.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
        };
        result.unwrap_or_else(|_| unsent(request, ResponseCode::ServFail))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::sync::Mutex;

    use hickory_server::{
        net::{runtime::TokioTime, xfer::Protocol, NetError},
        proto::{
            op::{Message, Query},
            rr::{Name, RData, Record},
            serialize::binary::BinEncoder,
        },
        zone_handler::MessageResponse,
    };

    use super::*;
    use crate::lab::zone::Records;

    const SINK4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
    const SINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

    fn handler(a: Option<Ipv4Addr>, aaaa: Option<Ipv6Addr>) -> ZoneHandler {
        ZoneHandler::new(Arc::new(Zone::CatchAll { a, aaaa }), None)
    }

    /// A `ResponseHandler` that encodes the response with hickory and keeps
    /// the bytes, so the full request → response path runs without sockets.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

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
            *self.0.lock().unwrap() = Some(bytes);
            Ok(info)
        }
    }

    /// The reply, or `None` if nothing was sent.
    async fn roundtrip(handler: &ZoneHandler, query: Message) -> Option<Message> {
        let src: SocketAddr = "192.0.2.2:40000".parse().unwrap();
        let request = Request::from_bytes(query.to_vec().unwrap(), src, Protocol::Udp).unwrap();
        let capture = Capture::default();
        handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let bytes = capture.0.lock().unwrap().clone()?;
        Some(Message::from_vec(&bytes).unwrap())
    }

    fn query_message(id: u16, name: &str, rtype: RecordType) -> Message {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        msg
    }

    #[tokio::test]
    async fn full_request_mx() {
        let reply = roundtrip(
            &handler(Some(SINK4), Some(SINK6)),
            query_message(4242, "gmail.com.", RecordType::MX),
        )
        .await
        .unwrap();
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
        let mut query = query_message(7, "mx.gmail.com.", RecordType::AAAA);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        query.set_edns(edns);
        let reply = roundtrip(&handler(Some(SINK4), None), query).await.unwrap();
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
        let reply = roundtrip(&handler(Some(SINK4), Some(SINK6)), query)
            .await
            .unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        assert!(reply.answers.is_empty());
    }

    #[tokio::test]
    async fn full_request_carries_additionals() {
        let mut records = Records::new(["test"]).unwrap();
        records
            .mx("dual.test", 10, "mx1.dual.test")
            .unwrap()
            .a("mx1.dual.test", Ipv4Addr::new(203, 0, 113, 10))
            .unwrap();
        let handler = ZoneHandler::new(Arc::new(records.into()), None);
        let reply = roundtrip(&handler, query_message(1, "dual.test.", RecordType::MX))
            .await
            .unwrap();
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.additionals.len(), 1);
        assert_eq!(reply.additionals[0].name.to_ascii(), "mx1.dual.test.");
    }

    /// Fails `fail.test`, drops `lost.test`, delays everything else by 50 ms.
    struct Layer;

    impl DnsLayer for Layer {
        fn decide(&self, name: &str, _qtype: RecordType) -> DnsAction {
            match name {
                "fail.test" => DnsAction::ServFail,
                "lost.test" => DnsAction::Drop,
                _ => DnsAction::Delay(Duration::from_millis(50)),
            }
        }
    }

    #[tokio::test]
    async fn layer_fails_drops_and_delays() {
        let handler = ZoneHandler::new(
            Arc::new(Zone::CatchAll {
                a: Some(SINK4),
                aaaa: None,
            }),
            Some(Arc::new(Layer)),
        );
        // The layer sees the name in lower case without the trailing dot.
        let reply = roundtrip(&handler, query_message(1, "Fail.Test.", RecordType::MX))
            .await
            .unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries.len(), 1);

        assert!(
            roundtrip(&handler, query_message(2, "lost.test.", RecordType::A))
                .await
                .is_none()
        );

        let start = std::time::Instant::now();
        let reply = roundtrip(&handler, query_message(3, "slow.test.", RecordType::A))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(reply.answers.len(), 1);
    }
}
