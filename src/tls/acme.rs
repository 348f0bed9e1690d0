//! The ACME manager: every routed host that wants HTTPS gets a certificate by
//! HTTP-01 (the proxy's HTTP listener answers the challenge), stored on disk
//! (atomic write + rename, keys 0600) and served at once; renewed when a third
//! of its lifetime is left (or `acme.renew_before`). Failures back off per host
//! with jitter, and a cap on orders per hour stops any storm.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::alpn::{self, AlpnChallenges};
use super::dns01;
use super::ondemand::OnDemand;
use super::store::unix;
use super::{Cert, CertStore, Challenges, Source};
use crate::config::{AcmeConfig, ChallengeKind, Config, DnsProvider, Issuer, KeyType};
use crate::private::write_private;
use crate::SharedSnapshot;

const BACKOFF_MIN: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
const RATE_LIMITED: Duration = Duration::from_secs(3600);
/// Failed orders after which a name only on-demand TLS wants is let go.
const ON_DEMAND_GIVE_UP: u32 = 5;
/// One request to a CA, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// One order at one issuer, all its steps together (a DNS-01 order may wait
/// `propagation_timeout` for its records, then the CA's validation).
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// What `berth certs` and `GET /api/certificates` show for one host.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HostStatus {
    pub host: String,
    /// Unix time the served certificate expires, if there is one.
    pub valid_until: Option<u64>,
    /// Unix time from which berth renews it (ACME certificates).
    #[serde(default)]
    pub renew_at: Option<u64>,
    pub source: Option<String>,
    pub last_error: Option<String>,
    /// Unix time of the next order attempt, while backing off.
    pub next_attempt: Option<u64>,
    pub failures: u32,
    /// Why berth will not order for this name, if so.
    pub not_eligible: Option<String>,
    /// The issuer (`acme.issuers[].name`) that signed the served certificate.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The challenge it was validated with.
    #[serde(default)]
    pub challenge: Option<String>,
    /// Its key: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096.
    #[serde(default)]
    pub key_type: Option<String>,
    /// A wildcard (`*.apps.example.com`): covers every name one label below.
    #[serde(default)]
    pub wildcard: bool,
    /// Wanted because on-demand TLS allowed it, not because a route lists it.
    #[serde(default)]
    pub on_demand: bool,
}

pub type CertStatus = Arc<Mutex<BTreeMap<String, HostStatus>>>;

/// What the admin API holds of the ACME manager: its status, and the
/// renewals a person asks for.
#[derive(Clone)]
pub struct AcmeHandle {
    pub status: CertStatus,
    pub renewals: Arc<Renewals>,
}

/// Why a name cannot get a certificate by HTTP-01 from a public CA, if so.
pub fn ineligible(host: &str) -> Option<&'static str> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        Some("an IP address: HTTP-01 certificates are for DNS names")
    } else if host == "localhost" || host.ends_with(".localhost") {
        Some("localhost never resolves to this host for a CA")
    } else if host.ends_with(".internal") || host.ends_with(".local") {
        Some("a private name (.internal/.local) no CA can reach")
    } else if !host.contains('.') {
        Some("a name without a dot is not a public DNS name")
    } else {
        None
    }
}

/// Whether a certificate should be renewed now.
pub fn due(cert: &Cert, now: SystemTime, renew_before: Option<Duration>) -> bool {
    match renew_before {
        Some(before) => cert.not_after.duration_since(now).unwrap_or_default() <= before,
        None => cert.life_left(now) <= 1.0 / 3.0,
    }
}

/// When a certificate becomes due for renewal.
pub fn renew_at(cert: &Cert, renew_before: Option<Duration>) -> SystemTime {
    match renew_before {
        Some(before) => cert
            .not_after
            .checked_sub(before)
            .unwrap_or(cert.not_before),
        None => {
            let life = cert
                .not_after
                .duration_since(cert.not_before)
                .unwrap_or_default();
            cert.not_before + life.mul_f64(2.0 / 3.0)
        }
    }
}

/// The wait after `failures` failed orders: doubling from 30 s up to 6 h,
/// with ±20% jitter so that many hosts do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    base.min(BACKOFF_MAX)
        .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs per host and attempt.
fn jitter(host: &str, failures: u32) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (host, failures, SystemTime::now()).hash(&mut h);
    (h.finish() % 1000) as f64 / 1000.0
}

/// instant-acme's HTTP client, remembering the `Retry-After` of error answers:
/// instant-acme honours it while polling, but drops it from the errors it
/// returns, and a CA that says "not before" must be listened to.
struct RetryAfterClient {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    last: Arc<Mutex<Option<SystemTime>>>,
}

impl HttpClient for RetryAfterClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let last = self.last.clone();
        Box::pin(async move {
            let rsp = tokio::time::timeout(REQUEST_TIMEOUT, fut)
                .await
                .map_err(|_| {
                    instant_acme::Error::Other(
                        format!("the CA did not answer within {REQUEST_TIMEOUT:?}").into(),
                    )
                })??;
            if rsp.parts.status.is_client_error() || rsp.parts.status.is_server_error() {
                let at = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                if let (Some(at), Ok(mut l)) = (at, last.lock()) {
                    *l = Some(at);
                }
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<SystemTime> {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(secs) => Some(now + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v).ok(),
    }
}

fn acme_client(
    ca_root: Option<&Path>,
    last: Arc<Mutex<Option<SystemTime>>>,
) -> Result<RetryAfterClient, String> {
    let builder = match ca_root {
        Some(root) => {
            let der = CertificateDer::from_pem_file(root)
                .map_err(|e| format!("acme.ca_root {}: {e}", root.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(der)
                .map_err(|e| format!("acme.ca_root {}: {e}", root.display()))?;
            HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        None => HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| format!("system certificate roots: {e}"))?,
    };
    // A CA that drops packets must not hold the manager: connect within
    // 10 s, each request answered within REQUEST_TIMEOUT.
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let connector = builder
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(RetryAfterClient {
        inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        last,
    })
}

pub struct AcmeManager {
    config: Arc<Config>,
    snapshot: SharedSnapshot,
    notify: watch::Receiver<u64>,
    store: Arc<CertStore>,
    challenges: Challenges,
    alpn: Arc<AlpnChallenges>,
    pub status: CertStatus,
    /// `berth certs renew HOST`: renewals asked for by a person.
    pub renewals: Arc<Renewals>,
    /// Names allowed by on-demand TLS, beside the routes' names.
    pub on_demand: Option<Arc<OnDemand>>,
    /// The last `Retry-After` the CA sent with an error.
    retry_after: Arc<Mutex<Option<SystemTime>>>,
    /// Issuer, challenge and key of each certificate berth ordered.
    meta: Mutex<BTreeMap<String, CertMeta>>,
}

/// Names whose renewal was asked for, and the bell that wakes the manager.
#[derive(Default)]
pub struct Renewals {
    hosts: Mutex<BTreeSet<String>>,
    bell: tokio::sync::Notify,
}

impl Renewals {
    pub fn ask(&self, host: &str) {
        if let Ok(mut h) = self.hosts.lock() {
            h.insert(host.to_string());
        }
        self.bell.notify_one();
    }

    /// Wakes the manager without asking for anything (new on-demand names).
    pub fn wake(&self) {
        self.bell.notify_one();
    }

    fn asked(&self, host: &str) -> bool {
        self.hosts.lock().is_ok_and(|h| h.contains(host))
    }

    fn done(&self, host: &str) {
        if let Ok(mut h) = self.hosts.lock() {
            h.remove(host);
        }
    }
}

/// Failed orders of one host, and when it may be tried again.
#[derive(Debug, Default)]
struct HostState {
    failures: u32,
    next_attempt: Option<Instant>,
}

/// An issuer that cannot be used for now: its account could not be made,
/// or it said to wait (a rate limit).
#[derive(Debug, Default)]
struct IssuerState {
    failures: u32,
    until: Option<Instant>,
}

/// What the manager remembers between rounds.
#[derive(Default)]
struct RunState {
    /// Accounts by issuer name, with the directory they were made at.
    accounts: BTreeMap<String, (String, Account)>,
    issuers: BTreeMap<String, IssuerState>,
    hosts: BTreeMap<String, HostState>,
    /// When the orders of the last hour were placed, oldest first.
    orders: VecDeque<Instant>,
    capped_logged: bool,
}

/// The window `acme.orders_per_hour` counts over.
const ORDER_WINDOW: Duration = Duration::from_secs(3600);

/// What is known about one host when deciding what to do for it.
#[derive(Debug)]
pub struct HostFacts<'a> {
    pub host: &'a str,
    /// The ACME certificate served for it, if any.
    pub served: Option<&'a Cert>,
    /// A certificate the user brought covers it.
    pub user_cert: bool,
    /// Backing off until then after failed orders.
    pub next_attempt: Option<Instant>,
    /// Why no challenge can work for it with this config, if so.
    pub no_challenge: Option<String>,
    /// A person asked for a renewal now.
    pub forced: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub orders_per_hour: u32,
    pub renew_before: Option<Duration>,
}

/// What the ACME manager does next for one host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostStep {
    /// No CA can validate this name: never ordered, with the reason.
    NotEligible(String),
    /// The user's certificate serves it: nothing to order.
    UserCert,
    /// Ours is good: nothing to order until its renewal is due then.
    Current { renew: Instant },
    /// Backing off after failed orders until then.
    Wait { until: Instant },
    /// `acme.orders_per_hour` is used up: no order for any host until then.
    Capped { until: Instant },
    /// Order now; `renewal`: a certificate is being replaced.
    Order { renewal: bool },
}

/// The per-host decision: eligibility, a certificate still good, one the
/// user brought, backoff, the hourly cap. `orders`: when the orders of the
/// last hour were placed, oldest first; `wall` is the wall clock at `now`.
/// A renewal a person asked for skips "still good" and the backoff, never
/// the cap.
pub fn next_step(
    facts: &HostFacts<'_>,
    orders: &VecDeque<Instant>,
    limits: &Limits,
    now: Instant,
    wall: SystemTime,
) -> HostStep {
    if let Some(why) = ineligible(facts.host) {
        return HostStep::NotEligible(why.to_string());
    }
    if let Some(why) = &facts.no_challenge {
        return HostStep::NotEligible(why.clone());
    }
    match facts.served {
        Some(c) if !facts.forced && !due(c, wall, limits.renew_before) => {
            let at = renew_at(c, limits.renew_before);
            return HostStep::Current {
                renew: now + at.duration_since(wall).unwrap_or_default(),
            };
        }
        Some(_) => {}
        None if facts.user_cert && !facts.forced => return HostStep::UserCert,
        None => {}
    }
    if let Some(t) = facts.next_attempt.filter(|t| *t > now && !facts.forced) {
        return HostStep::Wait { until: t };
    }
    if orders.len() >= limits.orders_per_hour as usize {
        return HostStep::Capped {
            until: orders.front().map_or(now, |t| *t + ORDER_WINDOW),
        };
    }
    HostStep::Order {
        renewal: facts.served.is_some(),
    }
}

/// The challenges that can work for `host` with this config, in the order
/// of `acme.challenge`, or why none can. dns-01 works only for a name in a
/// zone of `acme.dns`; a wildcard only with dns-01.
pub fn challenges_for(host: &str, acme: &AcmeConfig) -> Result<Vec<ChallengeKind>, String> {
    let wildcard = host.starts_with("*.");
    let provider = dns01::provider_for(&acme.dns, host).is_some();
    let usable: Vec<ChallengeKind> = acme
        .challenges
        .iter()
        .copied()
        .filter(|c| match c {
            ChallengeKind::Dns01 => provider,
            ChallengeKind::Http01 | ChallengeKind::TlsAlpn01 => !wildcard,
        })
        .collect();
    if !usable.is_empty() {
        return Ok(usable);
    }
    let listed = |c: ChallengeKind| acme.challenges.contains(&c);
    Err(match (wildcard, provider) {
        (true, false) => format!(
            "a wildcard needs dns-01, and no acme.dns provider covers {}",
            host.trim_start_matches("*.")
        ),
        (true, true) => "a wildcard needs dns-01, which acme.challenge does not list".into(),
        (false, _) if listed(ChallengeKind::Dns01) => {
            format!("acme.challenge lists only dns-01, and no acme.dns provider covers {host}")
        }
        (false, _) => "acme.challenge lists no challenge that works for it".into(),
    })
}

/// The file stem a certificate is kept under: `*.` becomes `_wildcard.`.
pub fn file_stem(host: &str) -> String {
    match host.strip_prefix("*.") {
        Some(base) => format!("_wildcard.{base}"),
        None => host.to_string(),
    }
}

fn host_of_stem(stem: &str) -> String {
    match stem.strip_prefix("_wildcard.") {
        Some(base) => format!("*.{base}"),
        None => stem.to_string(),
    }
}

/// What berth notes beside a certificate it ordered (`HOST.json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
struct CertMeta {
    issuer: Option<String>,
    challenge: Option<String>,
    key_type: Option<String>,
}

/// A key and its certificate signing request for `names`.
fn key_and_csr(names: &[String], key_type: KeyType) -> Result<(String, Vec<u8>), String> {
    let key = match key_type {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            let bits = if key_type == KeyType::Rsa2048 {
                2048
            } else {
                4096
            };
            let der = super::rsa::generate(bits)?;
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &rustls::pki_types::PrivatePkcs8KeyDer::from(der),
                &rcgen::PKCS_RSA_SHA256,
            )
        }
    }
    .map_err(|e| format!("{}: {e}", key_type.as_str()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A TXT record berth put in a zone and has not removed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    zone: String,
    fqdn: String,
    value: String,
}

/// Undoes what an order put in place for its challenges, whatever happened.
#[derive(Default)]
struct Cleanup {
    tokens: Vec<String>,
    alpn: Vec<String>,
    records: Vec<(DnsProvider, String, String)>,
}

impl AcmeManager {
    pub fn new(
        config: Arc<Config>,
        snapshot: SharedSnapshot,
        notify: watch::Receiver<u64>,
        store: Arc<CertStore>,
        challenges: Challenges,
        alpn: Arc<AlpnChallenges>,
    ) -> AcmeManager {
        AcmeManager {
            config,
            snapshot,
            notify,
            store,
            challenges,
            alpn,
            status: Arc::default(),
            renewals: Arc::default(),
            on_demand: None,
            retry_after: Arc::default(),
            meta: Mutex::default(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.config.tls.certs_dir.join("acme")
    }

    /// Certificates from earlier runs, served before anything is ordered.
    fn load_stored(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for crt in entries.filter_map(Result::ok).map(|e| e.path()) {
            if crt.extension().is_none_or(|x| x != "crt") {
                continue;
            }
            let Some(stem) = crt.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let host = host_of_stem(&stem);
            let key = crt.with_extension("key");
            let loaded = std::fs::read(&crt)
                .and_then(|c| std::fs::read(&key).map(|k| (c, k)))
                .map_err(|e| e.to_string())
                .and_then(|(c, k)| Cert::from_pem(&c, &k, Source::Acme));
            match loaded {
                Ok(cert) => {
                    info!(host = %host, valid_until = unix(cert.not_after), "certificate loaded from disk");
                    let meta: CertMeta = std::fs::read(crt.with_extension("json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    if let Ok(mut m) = self.meta.lock() {
                        m.insert(host.clone(), meta);
                    }
                    self.store.set(&host, Some(cert));
                }
                Err(e) => {
                    warn!(file = %crt.display(), error = %e, "stored certificate unusable: a new one will be ordered")
                }
            }
        }
    }

    /// The account at `issuer`: from its file, or made now (with external
    /// account binding when the issuer has it).
    async fn account(&self, issuer: &Issuer) -> Result<Account, String> {
        let builder = || {
            acme_client(issuer.ca_root.as_deref(), self.retry_after.clone())
                .map(|c| Account::builder_with_http(Box::new(c)))
        };
        let path = self.dir().join(format!("account-{}.json", issuer.name));
        // Before several issuers, the one account was `account.json`.
        let legacy = self.dir().join("account.json");
        let stored = std::fs::read_to_string(&path).ok().or_else(|| {
            std::fs::read_to_string(&legacy).ok().filter(|t| {
                serde_json::from_str::<serde_json::Value>(t).is_ok_and(|v| {
                    v.get("directory").and_then(|d| d.as_str()) == Some(issuer.directory.as_str())
                })
            })
        });
        if let Some(text) = stored {
            match serde_json::from_str::<AccountCredentials>(&text) {
                Ok(creds) => {
                    return builder()?
                        .from_credentials(creds)
                        .await
                        .map_err(|e| format!("ACME account at {}: {e}", issuer.directory))
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "ACME account file unreadable: creating a new account")
                }
            }
        }
        let email = self.config.acme.email.clone().unwrap_or_default();
        let contact = format!("mailto:{email}");
        let eab = issuer
            .eab
            .as_ref()
            .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &[contact.as_str()],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                issuer.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| format!("creating an ACME account at {}: {e}", issuer.directory))?;
        let json = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
        write_private(&path, json.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        info!(issuer = %issuer.name, directory = %issuer.directory, "ACME account created");
        Ok(account)
    }

    /// One order for `host` with challenge `kind`; whatever it put in
    /// place for the challenges is removed before it returns.
    async fn order(
        &self,
        account: &Account,
        host: &str,
        kind: ChallengeKind,
        acme: &AcmeConfig,
    ) -> Result<(String, String), String> {
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut undo = Cleanup::default();
        let steps = async {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| format!("authorization: {e}"))?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("authorization is {other:?}")),
                }
                let wanted = match kind {
                    ChallengeKind::Http01 => ChallengeType::Http01,
                    ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                    ChallengeKind::Dns01 => ChallengeType::Dns01,
                };
                let mut ch = a
                    .challenge(wanted)
                    .ok_or_else(|| format!("the CA offers no {} challenge", kind.as_str()))?;
                let name = ch.identifier().to_string();
                let key_auth = ch.key_authorization();
                match kind {
                    ChallengeKind::Http01 => {
                        let token = ch.token.clone();
                        if let Ok(mut c) = self.challenges.lock() {
                            c.insert(token.clone(), key_auth.as_str().to_string());
                        }
                        undo.tokens.push(token);
                    }
                    ChallengeKind::TlsAlpn01 => {
                        let cert = alpn::challenge_cert(&name, key_auth.digest().as_ref())?;
                        self.alpn.insert(&name, cert);
                        undo.alpn.push(name.clone());
                    }
                    ChallengeKind::Dns01 => {
                        let provider = dns01::provider_for(&acme.dns, &name)
                            .ok_or_else(|| format!("no acme.dns provider covers {name}"))?
                            .clone();
                        let fqdn = dns01::challenge_fqdn(&name);
                        let value = key_auth.dns_value();
                        undo.records
                            .push((provider.clone(), fqdn.clone(), value.clone()));
                        // Noted on disk first: a record berth put in place
                        // is removed even if berth stops mid-order.
                        self.journal(|j| {
                            j.push(Pending {
                                zone: provider.zone.clone(),
                                fqdn: fqdn.clone(),
                                value: value.clone(),
                            })
                        });
                        dns01::present(&provider, &fqdn, &value).await?;
                        let started = Instant::now();
                        dns01::wait_visible(&provider, &fqdn, &value).await?;
                        info!(host = %host, record = %fqdn, waited = ?started.elapsed(), "DNS-01 record visible on the zone's servers");
                    }
                }
                ch.set_ready()
                    .await
                    .map_err(|e| format!("challenge: {e}"))?;
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(Duration::from_secs(90));
            match order.poll_ready(&retry).await {
                Ok(OrderStatus::Ready) => {}
                Ok(status) => return Err(format!("validation failed: order is {status:?}")),
                Err(e) => return Err(format!("validation failed: {e}")),
            }
            let names = vec![host.to_string()];
            let key_type = acme.key_type;
            let (key_pem, csr) = tokio::task::spawn_blocking(move || key_and_csr(&names, key_type))
                .await
                .map_err(|e| e.to_string())??;
            order
                .finalize_csr(&csr)
                .await
                .map_err(|e| format!("finalize: {e}"))?;
            let chain = order
                .poll_certificate(&retry)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            Ok((chain, key_pem))
        };
        let result = tokio::time::timeout(ORDER_TIMEOUT, steps)
            .await
            .unwrap_or_else(|_| Err(format!("the order took longer than {ORDER_TIMEOUT:?}")));
        self.undo(undo).await;
        result
    }

    /// Removes what an order put in place: tokens, challenge certificates,
    /// TXT records (each record is tried even if another fails).
    async fn undo(&self, undo: Cleanup) {
        if let Ok(mut c) = self.challenges.lock() {
            for t in &undo.tokens {
                c.remove(t);
            }
        }
        for name in &undo.alpn {
            self.alpn.remove(name);
        }
        for (provider, fqdn, value) in &undo.records {
            self.clean(provider, fqdn, value).await;
        }
    }

    /// Removes one TXT record; done, it leaves the journal; failed, it stays
    /// there and is tried again each round.
    async fn clean(&self, provider: &DnsProvider, fqdn: &str, value: &str) -> bool {
        match dns01::cleanup(provider, fqdn, value).await {
            Ok(()) => {
                info!(record = %fqdn, "DNS-01 record removed");
                self.journal(|j| j.retain(|p| !(p.fqdn == fqdn && p.value == value)));
                true
            }
            Err(e) => {
                warn!(record = %fqdn, error = %e, "DNS-01 record could not be removed: tried again later");
                false
            }
        }
    }

    /// Records left by an earlier run, or whose removal failed: removed
    /// now, through the zone's provider of the current config.
    async fn clean_leftovers(&self, acme: &AcmeConfig) {
        let pending: Vec<Pending> = self.journal(|j| j.clone());
        for p in pending {
            match acme.dns.iter().find(|d| d.zone == p.zone) {
                Some(provider) => {
                    self.clean(provider, &p.fqdn, &p.value).await;
                }
                None => {
                    warn!(record = %p.fqdn, zone = %p.zone, "a DNS-01 record is left in a zone no acme.dns provider covers any more: remove it by hand");
                    self.journal(|j| j.retain(|x| x != &p));
                }
            }
        }
    }

    /// Reads and changes the journal of TXT records to remove, kept in
    /// `dns-cleanup.json` beside the certificates.
    fn journal<T>(&self, f: impl FnOnce(&mut Vec<Pending>) -> T) -> T {
        let path = self.dir().join("dns-cleanup.json");
        let mut list: Vec<Pending> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let before = list.clone();
        let out = f(&mut list);
        if list != before {
            let json = serde_json::to_vec(&list).unwrap_or_default();
            if let Err(e) = write_private(&path, &json) {
                warn!(file = %path.display(), error = %e, "the DNS-01 cleanup journal was not written");
            }
        }
        out
    }

    /// Writes the certificate, its key and what berth notes about it.
    fn save(&self, host: &str, chain: &str, key_pem: &str, meta: &CertMeta) -> Result<(), String> {
        let dir = self.dir();
        let stem = file_stem(host);
        write_private(&dir.join(format!("{stem}.key")), key_pem.as_bytes())
            .map_err(|e| e.to_string())?;
        write_private(&dir.join(format!("{stem}.crt")), chain.as_bytes())
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        write_private(&dir.join(format!("{stem}.json")), &json).map_err(|e| e.to_string())
    }

    async fn run(&self) {
        if let Err(e) = std::fs::create_dir_all(self.dir()) {
            warn!(dir = %self.dir().display(), error = %e, "tls.certs_dir: cannot create; ACME is off");
            return;
        }
        let _ = std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o700));
        self.load_stored();
        let mut notify = self.notify.clone();
        let mut st = RunState::default();
        loop {
            let wake = self.round(&mut st).await;
            let sleep = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200));
            tokio::select! {
                r = notify.changed() => if r.is_err() { return },
                _ = self.renewals.bell.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One pass over the hosts that want certificates: each gets what
    /// [`next_step`] says. Returns when to look again at the latest.
    async fn round(&self, st: &mut RunState) -> Instant {
        let mut wanted = self.snapshot.load().tls_hosts.clone();
        let on_demand = self
            .on_demand
            .as_ref()
            .map(|od| od.names())
            .unwrap_or_default();
        for name in &on_demand {
            // A name a route lists too is the route's.
            let only_on_demand = wanted.insert(name.clone());
            self.report(name, |s| s.on_demand = only_on_demand);
        }
        let now = Instant::now();
        st.hosts.retain(|h, _| wanted.contains(h));
        // Only what is wanted now is shown (and may be renewed by hand).
        if let Ok(mut s) = self.status.lock() {
            s.retain(|h, _| wanted.contains(h));
        }
        while st
            .orders
            .front()
            .is_some_and(|t| now.duration_since(*t) > ORDER_WINDOW)
        {
            st.orders.pop_front();
        }
        // Live settings: a reload reaches them through the snapshot.
        let acme = self.snapshot.load().config.acme.clone();
        self.clean_leftovers(&acme).await;
        let limits = Limits {
            orders_per_hour: acme.orders_per_hour,
            renew_before: acme.renew_before,
        };
        let mut wake = now + Duration::from_secs(60);
        for host in &wanted {
            let served = self.store.get(host);
            // An ACME wildcard certificate of a wildcard route covers this
            // name: it needs none of its own.
            // (Not when it is due: a wildcard that cannot be renewed must
            // not keep the name from a certificate of its own.)
            let by_wildcard = served.is_none()
                && self.store.lookup(host).is_some_and(|c| {
                    c.source == Source::Acme
                        && !due(&c, SystemTime::now(), acme.renew_before)
                        && c.names
                            .iter()
                            .any(|n| n.starts_with("*.") && wanted.contains(n.as_str()))
                });
            if by_wildcard {
                self.report(host, |s| s.source = Some("acme (wildcard)".into()));
                continue;
            }
            let user_cert = self.store.covered_by_file(host);
            let next_attempt = st.hosts.get(host).and_then(|h| h.next_attempt);
            let usable = challenges_for(host, &acme);
            let facts = HostFacts {
                host,
                served: served.as_deref(),
                user_cert,
                next_attempt,
                no_challenge: usable.as_ref().err().cloned(),
                forced: self.renewals.asked(host),
            };
            let step = next_step(&facts, &st.orders, &limits, now, SystemTime::now());
            if let (Some(c), false) = (&served, matches!(step, HostStep::NotEligible(_))) {
                let renew = unix(renew_at(c, acme.renew_before));
                let meta = self
                    .meta
                    .lock()
                    .ok()
                    .and_then(|m| m.get(host).cloned())
                    .unwrap_or_default();
                self.report(host, |s| {
                    s.valid_until = Some(unix(c.not_after));
                    s.renew_at = Some(renew);
                    s.source = Some("acme".into());
                    s.issuer = meta.issuer;
                    s.challenge = meta.challenge;
                    s.key_type = meta.key_type;
                });
            }
            self.report(host, |s| s.wildcard = host.starts_with("*."));
            match step {
                HostStep::NotEligible(why) => {
                    self.renewals.done(host);
                    self.report(host, |s| s.not_eligible = Some(why))
                }
                HostStep::UserCert => self.report(host, |s| s.source = Some("file".into())),
                HostStep::Current { renew } => {
                    debug!(host = %host, renew_in = ?renew.saturating_duration_since(now), "certificate current: nothing to order");
                    wake = wake.min(renew);
                }
                HostStep::Wait { until } => wake = wake.min(until),
                HostStep::Capped { until } => {
                    if !st.capped_logged {
                        warn!(
                            cap = limits.orders_per_hour,
                            "acme.orders_per_hour reached: waiting"
                        );
                        st.capped_logged = true;
                    }
                    wake = wake.min(until);
                    break;
                }
                HostStep::Order { renewal } => {
                    st.capped_logged = false;
                    self.renewals.done(host);
                    self.report(host, |s| s.not_eligible = None);
                    // A name only on-demand TLS wants: the ask URL is asked
                    // again before a renewal or a retry, and a name that
                    // keeps failing is let go (a handshake may ask anew).
                    let on_demand_only =
                        on_demand.contains(host) && !self.snapshot.load().tls_hosts.contains(host);
                    let failures = st.hosts.get(host).map_or(0, |h| h.failures);
                    if let (true, Some(od)) = (on_demand_only, &self.on_demand) {
                        if (renewal || failures > 0) && !od.still_allowed(host).await {
                            st.hosts.remove(host);
                            continue;
                        }
                    }
                    let kinds = usable.unwrap_or_default();
                    let next = self
                        .order_and_report(st, host, renewal, &kinds, &acme)
                        .await;
                    wake = wake.min(next);
                    let failures = st.hosts.get(host).map_or(0, |h| h.failures);
                    if let (true, Some(od)) = (on_demand_only, &self.on_demand) {
                        if failures >= ON_DEMAND_GIVE_UP {
                            warn!(host = %host, failures, "on-demand TLS: no certificate after {ON_DEMAND_GIVE_UP} orders: the name is let go");
                            od.forget(host);
                            st.hosts.remove(host);
                        }
                    }
                }
            }
        }
        wake
    }

    /// Orders a certificate for `host` and installs it, or backs off; returns
    /// when this host needs attention next. The issuers are tried in their
    /// order: one that cannot be reached, whose account cannot be made, or
    /// that refuses the order hands over to the next at once; one that says
    /// to wait (a rate limit) is skipped until then. The challenge is the
    /// first usable one, then the next after each failed attempt.
    async fn order_and_report(
        &self,
        st: &mut RunState,
        host: &str,
        renewal: bool,
        kinds: &[ChallengeKind],
        acme: &AcmeConfig,
    ) -> Instant {
        let failures = st.hosts.get(host).map_or(0, |h| h.failures);
        let Some(&kind) = kinds.get(failures as usize % kinds.len().max(1)) else {
            return Instant::now() + Duration::from_secs(60);
        };
        let mut errors = Vec::new();
        let mut waits: Vec<Instant> = Vec::new();
        for issuer in &acme.issuers {
            let now = Instant::now();
            if let Some(until) = st
                .issuers
                .get(&issuer.name)
                .and_then(|s| s.until)
                .filter(|u| *u > now)
            {
                errors.push(format!(
                    "{}: waiting {}s (it asked to, or could not be reached)",
                    issuer.name,
                    until.duration_since(now).as_secs()
                ));
                waits.push(until);
                continue;
            }
            let account = match st.accounts.get(&issuer.name) {
                Some((dir, a)) if *dir == issuer.directory => a.clone(),
                _ => match tokio::time::timeout(REQUEST_TIMEOUT * 4, self.account(issuer))
                    .await
                    .unwrap_or_else(|_| Err(format!("{} did not answer", issuer.directory)))
                {
                    Ok(a) => {
                        st.accounts
                            .insert(issuer.name.clone(), (issuer.directory.clone(), a.clone()));
                        st.issuers.remove(&issuer.name);
                        a
                    }
                    Err(e) => {
                        let s = st.issuers.entry(issuer.name.clone()).or_default();
                        s.failures += 1;
                        let wait = backoff(s.failures, jitter(&issuer.name, s.failures));
                        s.until = Some(Instant::now() + wait);
                        warn!(issuer = %issuer.name, error = %e, retry_in = ?wait, "no ACME account");
                        errors.push(format!("{}: {e}", issuer.name));
                        waits.push(Instant::now() + wait);
                        continue;
                    }
                },
            };
            // The hourly cap counts each issuer's order.
            if st.orders.len() >= acme.orders_per_hour as usize {
                errors.push("acme.orders_per_hour reached before the next issuer".into());
                break;
            }
            if let Ok(mut r) = self.retry_after.lock() {
                *r = None;
            }
            st.orders.push_back(Instant::now());
            info!(host = %host, issuer = %issuer.name, challenge = kind.as_str(), renewal, "ordering a certificate");
            let result =
                self.order(&account, host, kind, acme)
                    .await
                    .and_then(|(chain, key_pem)| {
                        let cert =
                            Cert::from_pem(chain.as_bytes(), key_pem.as_bytes(), Source::Acme)?;
                        let meta = CertMeta {
                            issuer: Some(issuer.name.clone()),
                            challenge: Some(kind.as_str().into()),
                            key_type: Some(acme.key_type.as_str().into()),
                        };
                        self.save(host, &chain, &key_pem, &meta)?;
                        Ok((cert, meta))
                    });
            match result {
                Ok((cert, meta)) => {
                    info!(host = %host, issuer = %issuer.name, challenge = kind.as_str(), valid_until = unix(cert.not_after), "certificate issued");
                    let until = unix(cert.not_after);
                    // Wake up for its renewal, not only when routes change.
                    let renew = renew_at(&cert, acme.renew_before);
                    let wake = Instant::now()
                        + renew.duration_since(SystemTime::now()).unwrap_or_default();
                    self.store.set(host, Some(cert));
                    if let Ok(mut m) = self.meta.lock() {
                        m.insert(host.to_string(), meta.clone());
                    }
                    st.hosts.remove(host);
                    self.report(host, |s| {
                        s.valid_until = Some(until);
                        s.renew_at = Some(unix(renew));
                        s.source = Some("acme".into());
                        s.last_error = None;
                        s.next_attempt = None;
                        s.failures = 0;
                        s.issuer = meta.issuer;
                        s.challenge = meta.challenge;
                        s.key_type = meta.key_type;
                    });
                    return wake;
                }
                Err(e) => {
                    // instant-acme does not hand us the Retry-After of an
                    // error answer; a rate limit waits an hour at least.
                    let told = self.retry_after.lock().ok().and_then(|mut r| r.take());
                    let limited = match told {
                        Some(at) => Some(at.duration_since(SystemTime::now()).unwrap_or_default()),
                        None if e.contains("rateLimited") => Some(RATE_LIMITED),
                        None => None,
                    };
                    if let Some(wait) = limited {
                        st.issuers.entry(issuer.name.clone()).or_default().until =
                            Some(Instant::now() + wait);
                        waits.push(Instant::now() + wait);
                    }
                    warn!(host = %host, issuer = %issuer.name, challenge = kind.as_str(), error = %e, "certificate order failed");
                    errors.push(format!("{} ({}): {e}", issuer.name, kind.as_str()));
                }
            }
        }
        let state = st.hosts.entry(host.to_string()).or_default();
        state.failures += 1;
        let mut wait = backoff(state.failures, jitter(host, state.failures));
        // Every issuer said to wait: not before the first of them is back.
        if waits.len() == acme.issuers.len() {
            if let Some(first) = waits.iter().min() {
                wait = wait.max(first.saturating_duration_since(Instant::now()));
            }
        }
        let next = Instant::now() + wait;
        state.next_attempt = Some(next);
        let e = errors.join("; ");
        warn!(host = %host, error = %e, failures = state.failures, retry_in = ?wait, "no certificate from any issuer");
        let (failures, next_unix) = (state.failures, unix(SystemTime::now() + wait));
        self.report(host, |s| {
            s.last_error = Some(e.clone());
            s.failures = failures;
            s.next_attempt = Some(next_unix);
        });
        next
    }

    fn report(&self, host: &str, f: impl FnOnce(&mut HostStatus)) {
        if let Ok(mut s) = self.status.lock() {
            let e = s.entry(host.to_string()).or_insert_with(|| HostStatus {
                host: host.to_string(),
                ..Default::default()
            });
            f(e);
        }
    }
}

crate::background_until_shutdown!(AcmeManager);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_validate() {
        for h in [
            "10.0.0.1",
            "::1",
            "localhost",
            "a.localhost",
            "web.internal",
            "printer.local",
            "intranet",
        ] {
            assert!(ineligible(h).is_some(), "{h}");
        }
        assert_eq!(ineligible("blog.example.com"), None);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(96), "-20%");
        assert_eq!(backoff(3, 1.0), Duration::from_secs(144), "+20%");
        assert_eq!(backoff(40, 0.5), BACKOFF_MAX);
    }

    #[test]
    fn renewal_is_due_at_a_third_of_the_lifetime_or_as_configured() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let c = Cert::from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
            Source::Acme,
        )
        .unwrap();
        let total = c.not_after.duration_since(c.not_before).unwrap();
        assert!(!due(&c, c.not_before, None));
        assert!(due(&c, c.not_before + total.mul_f64(0.7), None));
        assert!(!due(&c, c.not_before, Some(Duration::from_secs(3600))));
        assert!(due(
            &c,
            c.not_after - Duration::from_secs(60),
            Some(Duration::from_secs(3600))
        ));
        assert!(!due(&c, renew_at(&c, None) - Duration::from_secs(1), None));
        assert!(due(&c, renew_at(&c, None) + Duration::from_secs(1), None));
    }

    #[test]
    fn what_to_do_for_a_host_by_table() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let cert = Cert::from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
            Source::Acme,
        )
        .unwrap();
        let life = cert.not_after.duration_since(cert.not_before).unwrap();
        let fresh = cert.not_before + Duration::from_secs(60);
        let old = cert.not_before + life.mul_f64(0.8);
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let limits = Limits {
            orders_per_hour: 2,
            renew_before: None,
        };
        let facts = |host, served, user_cert, next_attempt| HostFacts {
            host,
            served,
            user_cert,
            next_attempt,
            no_challenge: None,
            forced: false,
        };
        let none = VecDeque::new();
        let full: VecDeque<Instant> = [now - hour / 2, now - hour / 4].into();
        let renew_in = renew_at(&cert, None).duration_since(fresh).unwrap();
        #[rustfmt::skip]
        let cases = [
            (facts("web.internal", None, false, None), &none, fresh, HostStep::NotEligible("a private name (.internal/.local) no CA can reach".into())),
            (facts("a.test", None, false, None), &none, fresh, HostStep::Order { renewal: false }),
            (facts("a.test", Some(&cert), false, None), &none, fresh, HostStep::Current { renew: now + renew_in }),
            (facts("a.test", Some(&cert), false, None), &none, old, HostStep::Order { renewal: true }),
            (facts("a.test", None, true, None), &none, fresh, HostStep::UserCert),
            (facts("a.test", Some(&cert), true, None), &none, old, HostStep::Order { renewal: true }),
            (facts("a.test", None, false, Some(now + hour)), &none, fresh, HostStep::Wait { until: now + hour }),
            (facts("a.test", None, false, Some(now - hour)), &none, fresh, HostStep::Order { renewal: false }),
            (facts("a.test", None, false, None), &full, fresh, HostStep::Capped { until: now + hour / 2 }),
        ];
        for (f, orders, wall, want) in cases {
            assert_eq!(next_step(&f, orders, &limits, now, wall), want, "{f:?}");
        }
        // A renewal a person asked for: past "still good" and the backoff,
        // never past the cap; a name no challenge works for is never ordered.
        let forced = |served, next_attempt| HostFacts {
            forced: true,
            ..facts("a.test", served, false, next_attempt)
        };
        #[rustfmt::skip]
        let cases = [
            (forced(Some(&cert), None), &none, HostStep::Order { renewal: true }),
            (forced(None, Some(now + hour)), &none, HostStep::Order { renewal: false }),
            (forced(Some(&cert), None), &full, HostStep::Capped { until: now + hour / 2 }),
        ];
        for (f, orders, want) in cases {
            assert_eq!(next_step(&f, orders, &limits, now, fresh), want, "{f:?}");
        }
        let refused = HostFacts {
            no_challenge: Some("why".into()),
            ..facts("*.a.test", None, false, None)
        };
        assert_eq!(
            next_step(&refused, &none, &limits, now, fresh),
            HostStep::NotEligible("why".into())
        );
    }

    #[test]
    fn challenges_by_name_and_config() {
        let mut acme = Config::default().acme;
        let http = Ok(vec![ChallengeKind::Http01]);
        assert_eq!(challenges_for("a.test", &acme), http);
        let e = challenges_for("*.apps.test", &acme).unwrap_err();
        assert!(e.contains("no acme.dns provider covers apps.test"), "{e}");
        acme.dns.push(crate::tls::dns01::tests::provider("test"));
        assert_eq!(
            challenges_for("a.test", &acme),
            Ok(vec![ChallengeKind::Dns01, ChallengeKind::Http01])
        );
        assert_eq!(
            challenges_for("*.apps.test", &acme),
            Ok(vec![ChallengeKind::Dns01])
        );
        assert_eq!(challenges_for("a.other", &acme), http);
        acme.challenges = vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01];
        let e = challenges_for("*.apps.test", &acme).unwrap_err();
        assert!(e.contains("acme.challenge does not list"), "{e}");
        assert_eq!(
            challenges_for("a.test", &acme),
            Ok(vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01])
        );
        acme.challenges = vec![ChallengeKind::Dns01];
        let e = challenges_for("a.other", &acme).unwrap_err();
        assert!(e.contains("lists only dns-01"), "{e}");
    }

    #[test]
    fn wildcards_are_kept_under_a_file_name_without_a_star() {
        assert_eq!(file_stem("*.apps.test"), "_wildcard.apps.test");
        assert_eq!(host_of_stem("_wildcard.apps.test"), "*.apps.test");
        assert_eq!(file_stem("a.test"), "a.test");
        assert_eq!(host_of_stem("a.test"), "a.test");
    }

    #[test]
    fn keys_of_each_type_make_a_csr() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let (pem, csr) = key_and_csr(&["a.test".into()], kt).unwrap();
            assert!(pem.contains("PRIVATE KEY"), "{kt:?}");
            assert!(!csr.is_empty());
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
            let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
            let want = match kt {
                KeyType::EcdsaP256 | KeyType::EcdsaP384 => rustls::SignatureAlgorithm::ECDSA,
                _ => rustls::SignatureAlgorithm::RSA,
            };
            assert_eq!(signing.algorithm(), want, "{kt:?}");
        }
    }
}
