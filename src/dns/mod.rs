//! Internal DNS: the hickory server and its sockets. What a query gets is
//! decided by [`crate::plan::dns::answer`] from the same snapshot the proxy
//! reads; this module encodes it, forwards other names to upstream resolvers
//! through a caching hickory resolver, or refuses them. Only loopback, the
//! Docker networks berth sees and `dns.allow` may ask: berth is never an open
//! resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::TokioResolver;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::SOA;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, DnsConfig};
use crate::plan::dns::{answer, must_learn, Answer, Query, QueryType};
use crate::plan::Snapshot;
use crate::SharedSnapshot;
use arc_swap::ArcSwap;

/// How queries ended, for the admin API and metrics.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub answered: AtomicU64,
    pub nodata: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CountersView {
    pub answered: u64,
    pub nodata: u64,
    pub nxdomain: u64,
    pub forwarded: u64,
    pub refused: u64,
    pub failed: u64,
}

impl DnsCounters {
    pub fn view(&self) -> CountersView {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersView {
            answered: get(&self.answered),
            nodata: get(&self.nodata),
            nxdomain: get(&self.nxdomain),
            forwarded: get(&self.forwarded),
            refused: get(&self.refused),
            failed: get(&self.failed),
        }
    }
}

/// How long a query from an unknown container may wait for the snapshot
/// that knows it.
const LEARN_WAIT: Duration = Duration::from_secs(1);
/// How long a source that stayed unknown is answered without that wait.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);

/// Answers one query at a time; hickory's `Server` owns the sockets.
pub struct Handler {
    snapshot: SharedSnapshot,
    notified: watch::Receiver<u64>,
    /// The zone as configured (`internal`).
    zone: String,
    /// What a reload may change: TTL, who may ask, forwarding.
    live: Arc<ArcSwap<Live>>,
    /// Rotates the answers, one step per query.
    next: AtomicUsize,
    /// Sources that stayed unknown after [`LEARN_WAIT`], and when.
    unknown: Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
    counters: Arc<DnsCounters>,
}

/// The parts of a response, before they are written.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    /// SOA for negative answers (authority section).
    soa: Option<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            soa: None,
        }
    }
}

/// The settings of the DNS server that a reload may change.
pub struct Live {
    dns: DnsConfig,
    soa: Record,
    ttl: u32,
    /// `None`: forwarding is off, other names are REFUSED.
    resolver: Option<TokioResolver>,
}

impl Live {
    /// From `dns.*`; builds the forwarding resolver (on the DNS runtime).
    pub fn new(config: &DnsConfig) -> Result<Live, String> {
        let resolver = resolver(config)?;
        let zone = Name::from_ascii(format!("{}.", config.zone))
            .map_err(|e| format!("dns.zone {:?}: {e}", config.zone))?;
        let mname = Name::from_ascii(format!("berth.{}.", config.zone))
            .map_err(|e| format!("dns.zone {:?}: {e}", config.zone))?;
        let rname = Name::from_ascii(format!("hostmaster.{}.", config.zone))
            .map_err(|e| format!("dns.zone {:?}: {e}", config.zone))?;
        let ttl = config.ttl.as_secs().min(u32::MAX as u64) as u32;
        let soa = SOA::new(mname, rname, 1, 60, 30, 3600, ttl);
        Ok(Live {
            dns: config.clone(),
            soa: Record::from_rdata(zone, ttl, RData::SOA(soa)),
            ttl,
            resolver,
        })
    }

    /// Whether `new` changes what this answers with.
    fn differs(&self, new: &DnsConfig) -> bool {
        let d = &self.dns;
        (d.ttl, d.forward, &d.upstreams, &d.allow)
            != (new.ttl, new.forward, &new.upstreams, &new.allow)
    }
}

impl Handler {
    pub fn new(
        config: &DnsConfig,
        snapshot: SharedSnapshot,
        notified: watch::Receiver<u64>,
        counters: Arc<DnsCounters>,
    ) -> Result<Handler, String> {
        Ok(Handler {
            snapshot,
            notified,
            zone: config.zone.clone(),
            live: Arc::new(ArcSwap::from_pointee(Live::new(config)?)),
            next: AtomicUsize::new(0),
            unknown: Mutex::default(),
            counters,
        })
    }

    fn count(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    async fn reply(&self, request: &Request) -> Reply {
        // An IPv4 client of a dual-stack `[::]` socket arrives as ::ffff:a.b.c.d.
        let src = request.src().ip().to_canonical();
        let mut snapshot = self.snapshot.load_full();
        let live = self.live.load_full();
        if !live.dns.allow.allows(src, &snapshot.dns.subnets) {
            debug!(%src, "DNS query from a source outside dns.allow: refused");
            self.count(&self.counters.refused);
            return Reply::code(ResponseCode::Refused);
        }
        if request.metadata.op_code != OpCode::Query {
            self.count(&self.counters.failed);
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            // Zero or several questions.
            self.count(&self.counters.failed);
            return Reply::code(ResponseCode::FormErr);
        };
        let name = Name::from(info.query.name());
        let text = name
            .iter()
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(".");
        let query = Query {
            name: &text,
            qtype: match info.query.query_type() {
                RecordType::A => QueryType::A,
                RecordType::AAAA => QueryType::Aaaa,
                RecordType::ANY => QueryType::Any,
                RecordType::SOA => QueryType::Soa,
                _ => QueryType::Other,
            },
            class_in: info.query.query_class() == DNSClass::IN,
            from: src,
        };
        if must_learn(&snapshot.dns, &self.zone, &query) {
            snapshot = self.learn(src).await;
        }
        let turn = || self.next.fetch_add(1, Ordering::Relaxed);
        let negative = |code| Reply {
            code,
            authoritative: true,
            answers: Vec::new(),
            soa: Some(live.soa.clone()),
        };
        match answer(&snapshot.dns, &self.zone, &query, turn) {
            Answer::Forward => {
                self.forward(
                    &live,
                    name,
                    info.query.query_type(),
                    info.query.query_class(),
                )
                .await
            }
            Answer::Refused => {
                self.count(&self.counters.refused);
                Reply::code(ResponseCode::Refused)
            }
            Answer::NxDomain => {
                self.count(&self.counters.nxdomain);
                negative(ResponseCode::NXDomain)
            }
            Answer::NoData => {
                self.count(&self.counters.nodata);
                negative(ResponseCode::NoError)
            }
            Answer::Soa => {
                self.count(&self.counters.answered);
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers: vec![live.soa.clone()],
                    soa: None,
                }
            }
            Answer::Addrs(addrs) => {
                self.count(&self.counters.answered);
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers: addrs
                        .into_iter()
                        .map(|ip| Record::from_rdata(name.clone(), live.ttl, RData::from(ip)))
                        .collect(),
                    soa: None,
                }
            }
        }
    }

    /// A container that asks right after it started may not be in the
    /// snapshot yet; when the answer depends on its project, wait a little
    /// for the watcher to publish it rather than answer another project's.
    async fn learn(&self, src: IpAddr) -> Arc<Snapshot> {
        // The host itself (a bridge gateway), or a source that stayed unknown
        // a moment ago (a container berth does not see): no wait.
        let recently = self
            .unknown
            .lock()
            .ok()
            .and_then(|u| u.get(&src).copied())
            .is_some_and(|t| t.elapsed() < UNKNOWN_FOR);
        if recently || std::net::UdpSocket::bind((src, 0)).is_ok() {
            return self.snapshot.load_full();
        }
        let mut rx = self.notified.clone();
        let wait = async {
            loop {
                let s = self.snapshot.load_full();
                if s.dns.knows(src) || !s.dns.subnets.iter().any(|n| n.contains(&src)) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    return s;
                }
            }
        };
        match tokio::time::timeout(LEARN_WAIT, wait).await {
            Ok(s) => s,
            Err(_) => {
                debug!(%src, "DNS query from an address berth does not know: answering for every project");
                if let Ok(mut u) = self.unknown.lock() {
                    u.retain(|_, t| t.elapsed() < UNKNOWN_FOR);
                    u.insert(src, std::time::Instant::now());
                }
                self.snapshot.load_full()
            }
        }
    }

    async fn forward(&self, live: &Live, name: Name, qtype: RecordType, class: DNSClass) -> Reply {
        let Some(resolver) = &live.resolver else {
            self.count(&self.counters.refused);
            return Reply::code(ResponseCode::Refused);
        };
        if class != DNSClass::IN {
            self.count(&self.counters.refused);
            return Reply::code(ResponseCode::Refused);
        }
        self.count(&self.counters.forwarded);
        match resolver.lookup(name.clone(), qtype).await {
            Ok(lookup) => Reply {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: lookup.answers().to_vec(),
                soa: None,
            },
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => Reply {
                code: none.response_code,
                authoritative: false,
                answers: Vec::new(),
                soa: none.soa.map(|s| (*s).into_record_of_rdata()),
            },
            Err(NetError::Dns(DnsError::ResponseCode(code))) => Reply::code(code),
            Err(e) => {
                warn!(%name, %qtype, error = %e, "DNS forwarding failed");
                self.count(&self.counters.failed);
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let bad_version = request.edns.as_ref().is_some_and(|e| e.version() > 0);
        let reply = if bad_version {
            Reply::code(ResponseCode::BADVERS)
        } else {
            self.reply(request).await
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = self.live.load().resolver.is_some();
        let edns = request.edns.as_ref().map(|asked| {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let message = builder.build(
            metadata,
            reply.answers.iter(),
            None.iter(),
            reply.soa.iter(),
            None.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                debug!(src = %request.src(), error = %e, "DNS answer not sent");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The upstreams forwarding would use (`dns.upstreams`, else resolv.conf),
/// refused when one of them is berth itself: every forwarded query would come
/// back, from an allowed source, until timeouts end it.
pub fn check_upstreams(config: &DnsConfig) -> Result<(), String> {
    let (upstreams, origin): (Vec<SocketAddr>, &str) = if config.upstreams.is_empty() {
        let (conf, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            format!("dns.upstreams is not set and the host's resolv.conf cannot be read ({e}): set dns.upstreams, or dns.forward: false")
        })?;
        let list = conf
            .name_servers()
            .iter()
            .flat_map(|ns| {
                ns.connections
                    .iter()
                    .map(move |c| SocketAddr::new(ns.ip, c.port))
            })
            .collect();
        (list, "the host's resolv.conf")
    } else {
        (config.upstreams.clone(), "dns.upstreams")
    };
    for up in upstreams {
        let up_ip = up.ip().to_canonical();
        // An address of this host: binding it works.
        let is_local = up_ip.is_loopback() || std::net::UdpSocket::bind((up_ip, 0)).is_ok();
        if config.is_own_address(up, is_local) {
            return Err(format!(
                "dns.listen {}: {origin} sends queries to {up}, which is berth itself: forwarded queries would loop; set dns.upstreams to the real resolvers, or dns.forward: false",
                config
                    .listen
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Builds the forwarding resolver: `dns.upstreams`, or the host's resolv.conf.
pub fn resolver(config: &DnsConfig) -> Result<Option<TokioResolver>, String> {
    if !config.forward {
        return Ok(None);
    }
    let mut builder = if config.upstreams.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| {
            format!("dns.upstreams is not set and the host's resolv.conf cannot be read ({e}): set dns.upstreams or dns.forward: false")
        })?
    } else {
        let servers = config
            .upstreams
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Queries arrive fully qualified: no search list, no hosts file.
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("DNS forwarding: {e}"))
}

/// The DNS server as a service: sockets bound at start-up (so a busy port is
/// reported before anything runs), served until shutdown.
pub struct DnsService {
    config: Arc<Config>,
    snapshot: SharedSnapshot,
    notified: watch::Receiver<u64>,
    counters: Arc<DnsCounters>,
    sockets: Mutex<Vec<Sockets>>,
    reloads: Mutex<Option<watch::Receiver<Arc<Config>>>>,
}

pub struct Sockets {
    pub addr: SocketAddr,
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

/// Binds UDP and TCP on every `dns.listen` address.
/// Binds the DNS sockets so that the next berth can bind them too in an
/// upgrade (`SO_REUSEPORT`); `upgrade`: this is that next berth. Otherwise a
/// plain bind first makes sure no other program has the port.
pub fn bind(config: &DnsConfig, upgrade: bool) -> Result<Vec<Sockets>, String> {
    config
        .listen
        .iter()
        .map(|&addr| {
            let busy_udp = |e: std::io::Error| {
                format!("dns.listen {addr}: cannot listen (UDP): {e} (another DNS or mDNS server on that port?): set dns.listen to a free address, or off")
            };
            let busy_tcp = |e: std::io::Error| format!("dns.listen {addr}: cannot listen (TCP): {e}");
            if !upgrade {
                drop(std::net::UdpSocket::bind(addr).map_err(busy_udp)?);
                drop(std::net::TcpListener::bind(addr).map_err(busy_tcp)?);
            }
            let udp = crate::upgrade::shared_udp(addr).map_err(busy_udp)?;
            let tcp = crate::upgrade::shared_tcp(addr).map_err(busy_tcp)?;
            Ok(Sockets { addr, udp, tcp })
        })
        .collect()
}

impl DnsService {
    pub fn new(
        config: Arc<Config>,
        snapshot: SharedSnapshot,
        notified: watch::Receiver<u64>,
        counters: Arc<DnsCounters>,
        sockets: Vec<Sockets>,
    ) -> DnsService {
        DnsService {
            config,
            snapshot,
            notified,
            counters,
            sockets: Mutex::new(sockets),
            reloads: Mutex::new(None),
        }
    }

    /// Applies the `dns.*` settings of each reloaded configuration.
    pub fn with_reloads(self, reloads: watch::Receiver<Arc<Config>>) -> DnsService {
        if let Ok(mut r) = self.reloads.lock() {
            *r = Some(reloads);
        }
        self
    }

    pub async fn run(&self) {
        let sockets = self
            .sockets
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if sockets.is_empty() {
            return;
        }
        // The resolver lives on this service's runtime.
        let handler = Handler::new(
            &self.config.dns,
            self.snapshot.clone(),
            self.notified.clone(),
            self.counters.clone(),
        );
        let handler = match handler {
            Ok(h) => h,
            Err(e) => {
                error!("DNS server not started: {e}");
                return;
            }
        };
        if let Some(mut reloads) = self.reloads.lock().ok().and_then(|mut r| r.take()) {
            let live = handler.live.clone();
            tokio::spawn(async move {
                while reloads.changed().await.is_ok() {
                    let dns = reloads.borrow_and_update().dns.clone();
                    if !live.load().differs(&dns) {
                        continue;
                    }
                    match Live::new(&dns) {
                        Ok(l) => {
                            live.store(Arc::new(l));
                            info!("DNS settings reloaded");
                        }
                        Err(e) => warn!(error = %e, "DNS settings not reloaded"),
                    }
                }
            });
        }
        let mut server = hickory_server::Server::new(handler);
        for s in sockets {
            let (udp, tcp) = match (
                tokio::net::UdpSocket::from_std(s.udp),
                tokio::net::TcpListener::from_std(s.tcp),
            ) {
                (Ok(u), Ok(t)) => (u, t),
                (Err(e), _) | (_, Err(e)) => {
                    error!(addr = %s.addr, error = %e, "DNS socket unusable");
                    continue;
                }
            };
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 32);
            info!(addr = %s.addr, zone = %self.config.dns.zone, "DNS serving (UDP and TCP)");
        }
        if let Err(e) = server.block_until_done().await {
            error!(error = %e, "DNS server stopped");
        }
    }
}

crate::background_until_shutdown!(DnsService);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_that_is_berth_itself_is_refused() {
        let mut c = Config::default().dns;
        c.listen = vec!["0.0.0.0:5399".parse().unwrap()];
        c.upstreams = vec!["127.0.0.1:5399".parse().unwrap()];
        let e = check_upstreams(&c).unwrap_err();
        assert!(e.contains("127.0.0.1:5399") && e.contains("loop"), "{e}");
        c.upstreams = vec![
            "127.0.0.1:53".parse().unwrap(),
            "10.1.2.3:5399".parse().unwrap(),
        ];
        assert_eq!(check_upstreams(&c), Ok(()));
    }
}
