//! A DNS message's bytes → berth's hickory handler (`dns::Handler`, as the
//! server calls it) → the response as sent, decoded again; and the question
//! → `plan::dns::answer` on its own.
//!
//! Input: one byte saying who asks (low 3 bits: loopback, a container of
//! project `a`, one of project `c`, an unknown address in a Docker subnet,
//! an address outside `dns.allow`; bit 3: TCP instead of UDP), then the
//! message as it would arrive. Forwarding is off, so nothing leaves.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use berth::config::Config;
use berth::dns::{DnsCounters, Handler};
use berth::plan::dns::{answer, Answer, DnsTable, Query, QueryType, Target};
use berth::plan::Snapshot;
use berth::world::NetAddress;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{
    Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;

const ZONE: &str = "internal";

/// Who asks, by the input's first byte.
const ASKERS: [[u8; 4]; 5] = [
    [127, 0, 0, 1],
    [172, 21, 0, 9],  // a container of project a
    [172, 23, 0, 9],  // a container of project c (which has no db)
    [172, 21, 0, 99], // unknown, inside a Docker subnet
    [192, 0, 2, 1],   // outside dns.allow (TEST-NET-1: never sent to)
];

fn addr(network: &str, ip: &str, prefix: u8) -> NetAddress {
    NetAddress {
        network: network.into(),
        ip: ip.parse().expect("a literal address"),
        prefix,
    }
}

fn target(name: &str, project: &str, ready: bool, addrs: Vec<NetAddress>) -> Target {
    Target {
        container: name.into(),
        project: Some(project.into()),
        ready,
        addrs,
    }
}

/// The zone of the unit tests: names of one project, a name two projects
/// share, a name with nothing ready, an empty non-terminal.
fn table() -> DnsTable {
    let mut t = DnsTable::default();
    let web1 = vec![
        addr("blog_default", "172.20.0.2", 16),
        addr("blog_default", "fd00::2", 64),
    ];
    t.insert("web", target("blog-web-1", "blog", true, web1.clone()));
    let web2 = vec![addr("blog_default", "172.20.0.3", 16)];
    t.insert("web", target("blog-web-2", "blog", true, web2));
    t.insert("web.blog", target("blog-web-1", "blog", true, web1));
    t.insert("cache", target("blog-cache-1", "blog", false, vec![]));
    let a_db = vec![addr("a_default", "172.21.0.5", 16)];
    t.insert("db", target("a-db-1", "a", true, a_db));
    let b_db = vec![addr("b_default", "172.22.0.5", 16)];
    t.insert("db", target("b-db-1", "b", true, b_db));
    t.add_asker(Some("a"), &[addr("a_default", "172.21.0.9", 16)]);
    t.add_asker(Some("c"), &[addr("c_default", "172.23.0.9", 16)]);
    t
}

struct Rig {
    runtime: tokio::runtime::Runtime,
    handler: Handler,
    table: DnsTable,
}

thread_local! {
    static RIG: RefCell<Rig> = RefCell::new(rig());
}

fn rig() -> Rig {
    let mut config = Config::default().dns;
    config.forward = false;
    let snapshot = Snapshot {
        dns: table(),
        ..Snapshot::default()
    };
    // No watcher: a query that waits for the snapshot to learn its source
    // finds the channel closed at once.
    let (_, notified) = tokio::sync::watch::channel(0u64);
    let handler = Handler::new(
        &config,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        notified,
        Arc::new(DnsCounters::default()),
    )
    .expect("the default zone makes a handler");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    Rig {
        runtime,
        handler,
        table: table(),
    }
}

/// What the server's UDP or TCP handle would send, captured.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    /// The request asks one question: its answer must fit. (The answer to a
    /// request of many questions echoes them all and may not fit: hickory
    /// then sends a SERVFAIL header, as here.)
    one_question: bool,
    sent: Arc<Mutex<Option<Vec<u8>>>>,
}

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
        // As hickory's ResponseHandle encodes: 512 bytes over UDP without
        // EDNS, what EDNS allows with it.
        let max = match self.protocol {
            Protocol::Udp => response.edns().map_or(512, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(e) if self.one_question => panic!("the answer does not encode (max {max}): {e}"),
            Err(_) => {
                bytes.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header
                    .emit(&mut BinEncoder::new(&mut bytes))
                    .expect("a header encodes");
                ResponseInfo::from(header)
            }
        };
        *self.sent.lock().expect("not poisoned") = Some(bytes);
        Ok(info)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, message)) = data.split_first() else {
        return;
    };
    let from = IpAddr::from(ASKERS[usize::from(who & 7) % ASKERS.len()]);
    let protocol = if who & 8 == 0 {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    // What the server does with bytes that are no DNS message: drops them.
    let Ok(request) = Request::from_bytes(message.to_vec(), SocketAddr::new(from, 53000), protocol)
    else {
        return;
    };
    RIG.with_borrow(|rig| {
        check_pure(&rig.table, &request, from);
        let sent = Arc::new(Mutex::new(None));
        let capture = Capture {
            protocol,
            one_question: request.request_info().is_ok(),
            sent: sent.clone(),
        };
        rig.runtime.block_on(
            rig.handler
                .handle_request::<_, TokioTime>(&request, capture),
        );
        let bytes = sent.lock().expect("not poisoned").take();
        let bytes = bytes.expect("the handler sent no response");
        check_response(&request, message, &bytes);
    });
});

/// `answer` for the question as the handler reads it.
fn check_pure(table: &DnsTable, request: &Request, from: IpAddr) {
    let Ok(info) = request.request_info() else {
        return;
    };
    let name = hickory_server::proto::rr::Name::from(info.query.name());
    let text = name
        .iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".");
    let qtype = match info.query.query_type() {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::ANY => QueryType::Any,
        RecordType::SOA => QueryType::Soa,
        _ => QueryType::Other,
    };
    let q = Query {
        name: &text,
        qtype,
        class_in: info.query.query_class() == hickory_server::proto::rr::DNSClass::IN,
        from,
    };
    let mut turned = false;
    let got = answer(table, ZONE, &q, || {
        turned = true;
        usize::MAX
    });
    assert_eq!(
        turned,
        matches!(got, Answer::Addrs(_)),
        "turns only for addresses"
    );
    if let Answer::Addrs(addrs) = &got {
        assert!(!addrs.is_empty(), "addresses, none of them");
        assert!(q.class_in);
        match qtype {
            QueryType::A => assert!(addrs.iter().all(IpAddr::is_ipv4), "{addrs:?} for A"),
            QueryType::Aaaa => assert!(addrs.iter().all(IpAddr::is_ipv6), "{addrs:?} for AAAA"),
            QueryType::Any => {}
            QueryType::Soa | QueryType::Other => panic!("addresses for {qtype:?}"),
        }
    }
    let inside = berth::names::canonical_name(&text) == ZONE
        || berth::names::canonical_name(&text).ends_with(".internal");
    assert_eq!(matches!(got, Answer::Forward), !inside, "{text:?}: {got:?}");
}

/// The bytes sent decode, answer the request's id and question, and hold
/// only records for the name asked.
fn check_response(request: &Request, raw: &[u8], bytes: &[u8]) {
    let response = match Message::from_vec(bytes) {
        Ok(r) => r,
        // hickory-server echoes the question as it arrived, compression
        // pointer and all, which then points elsewhere in the response.
        Err(_) if question_has_pointer(raw) => return,
        Err(e) => panic!("berth sent a response that does not decode: {e}"),
    };
    assert_eq!(response.metadata.id, request.metadata.id);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    let code = response.metadata.response_code;
    let Ok(info) = request.request_info() else {
        assert!(response.answers.is_empty(), "answers to no single question");
        return;
    };
    if code != ResponseCode::NoError {
        assert!(response.answers.is_empty(), "answers with {code}");
    }
    for r in &response.answers {
        assert_eq!(
            hickory_server::proto::rr::LowerName::from(r.name.clone()),
            *info.query.name(),
            "an answer for another name"
        );
        assert!(
            matches!(
                r.record_type(),
                RecordType::A | RecordType::AAAA | RecordType::SOA
            ),
            "{r:?}"
        );
    }
}

/// Whether a question's name, as it arrived, uses a compression pointer
/// (or a label type other than a plain label).
fn question_has_pointer(raw: &[u8]) -> bool {
    let questions = raw
        .get(4..6)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let mut at = 12;
    for _ in 0..questions {
        loop {
            let Some(&len) = raw.get(at) else {
                return false;
            };
            if len & 0xC0 != 0 {
                return true;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        at += 4; // type and class
    }
    false
}
