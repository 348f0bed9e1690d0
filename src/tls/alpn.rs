//! TLS-ALPN-01 (RFC 8737) on the HTTPS listener: while a challenge is
//! pending, a connection whose ClientHello offers only `acme-tls/1` for a
//! name being validated gets the challenge certificate, in a handshake berth
//! does itself before Pingora sees the connection; then it is closed. Every
//! other connection goes on to the normal handshake untouched, and while no
//! challenge is pending (and on-demand TLS is off) nothing is even looked at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS: &[u8] = b"acme-tls/1";

/// Pending TLS-ALPN-01 challenges: name → the challenge certificate.
#[derive(Default)]
pub struct AlpnChallenges {
    map: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl AlpnChallenges {
    pub fn insert(&self, name: &str, key: Arc<CertifiedKey>) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_ascii_lowercase(), key.clone());
            m
        });
    }

    pub fn remove(&self, name: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&name.to_ascii_lowercase());
            m
        });
    }

    fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.map.load().get(&name.to_ascii_lowercase()).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }
}

/// The self-signed certificate RFC 8737 §3 asks for: the name as its only
/// SAN and the critical acmeIdentifier extension holding the SHA-256 of the
/// key authorization.
pub fn challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    // Not through `Cert::from_pem`: its key check parses the certificate
    // with webpki, which refuses the unknown critical extension.
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| e.to_string())?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// What a ClientHello asks for, if the bytes hold a whole one.
fn hello(record: &[u8]) -> Option<(String, Vec<Vec<u8>>)> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = record;
    // rustls takes at most 4 KiB a call; a ClientHello may be longer (big
    // post-quantum key shares).
    while !rd.is_empty() {
        if acceptor.read_tls(&mut rd).ok()? == 0 {
            break;
        }
    }
    let accepted = acceptor.accept().ok()??;
    let ch = accepted.client_hello();
    let name = ch.server_name()?.to_string();
    let alpn = ch
        .alpn()
        .map(|a| a.map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    Some((name, alpn))
}

/// The pre-TLS step of the HTTPS listener: TLS-ALPN-01 challenges, and
/// on-demand TLS (which needs the name before the handshake picks a
/// certificate). With neither, a connection is not even looked at.
pub struct PreHandshake {
    pub challenges: Arc<AlpnChallenges>,
    pub on_demand: Option<Arc<super::ondemand::OnDemand>>,
}

#[async_trait]
impl PreTlsProcess for PreHandshake {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if self.challenges.is_empty() && self.on_demand.is_none() {
            return Ok(());
        }
        // Read the first TLS record (the ClientHello), then put it back
        // for whichever handshake follows.
        let read = async {
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).await?;
            let len = u16::from_be_bytes([head[3], head[4]]) as usize;
            let mut record = head.to_vec();
            if head[0] == 22 && len <= 18 * 1024 {
                record.resize(5 + len, 0);
                stream.read_exact(&mut record[5..]).await?;
            }
            Ok::<_, std::io::Error>(record)
        };
        let record = match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(r)) => r,
            _ => {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::ReadError,
                    "no ClientHello",
                ))
            }
        };
        stream.rewind(&record);
        let Some((name, alpn)) = hello(&record) else {
            return Ok(());
        };
        let only_acme = alpn.len() == 1 && alpn[0] == ACME_TLS;
        let Some(key) = only_acme.then(|| self.challenges.get(&name)).flatten() else {
            if let Some(od) = &self.on_demand {
                od.handshake(&name).await;
            }
            return Ok(());
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let Ok(builder) = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        else {
            return Ok(());
        };
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        config.alpn_protocols = vec![ACME_TLS.to_vec()];
        let done = async {
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await?;
            let mut tls = start.into_stream(Arc::new(config)).await?;
            tls.shutdown().await
        };
        match tokio::time::timeout(Duration::from_secs(10), done).await {
            Ok(Ok(())) => info!(host = %name, "TLS-ALPN-01 challenge answered"),
            Ok(Err(e)) => debug!(host = %name, error = %e, "TLS-ALPN-01 handshake failed"),
            Err(_) => debug!(host = %name, "TLS-ALPN-01 handshake timed out"),
        }
        // The connection carried the challenge and nothing else.
        Err(pingora::Error::explain(
            pingora::ErrorType::ConnectionClosed,
            "acme-tls/1 challenge answered",
        ))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let key = challenge_cert("app.test", &digest).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        let ext = x509
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }

    #[test]
    fn a_client_hello_names_its_host_and_protocols() {
        // A real ClientHello, from rustls's client.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![ACME_TLS.to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), "App.Test".try_into().unwrap())
                .unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        let (name, alpn) = hello(&bytes).unwrap();
        assert_eq!(name, "app.test");
        assert_eq!(alpn, vec![ACME_TLS.to_vec()]);
        assert!(hello(b"GET / HTTP/1.1\r\n\r\n").is_none());
    }
}
