//! The certificates berth serves, chosen by SNI during the handshake: exact
//! name, then wildcard, then a self-signed default. The map is an immutable
//! value behind an `ArcSwap`: installing a certificate takes effect on the next
//! handshake, and `resolve` (synchronous, on the handshake path) takes no lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::names::{canonical_name, HostMap, HostPattern};

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Acme,
    /// A PEM pair the user put in the certs directory.
    File,
}

/// One certificate: the key rustls serves, and what users and renewal need.
#[derive(Clone)]
pub struct Cert {
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf (SANs), lowercase; `*.x` for wildcards.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub source: Source,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cert")
            .field("names", &self.names)
            .field("not_after", &unix(self.not_after))
            .field("source", &self.source)
            .finish()
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cert {
    /// Parses a PEM chain (leaf first) and its private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], source: Source) -> Result<Cert, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate PEM: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the PEM")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key PEM: {e}"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("private key: {e}"))?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        let validity = x509.validity();
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let certified = CertifiedKey::new(chain.clone(), signing);
        // The key must belong to the leaf: rustls checks it here.
        certified
            .keys_match()
            .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
        Ok(Cert {
            key: Arc::new(certified),
            names,
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
            source,
        })
    }

    /// The fraction of the lifetime left at `now` (0 when expired).
    pub fn life_left(&self, now: SystemTime) -> f64 {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let left = self.not_after.duration_since(now).unwrap_or_default();
        if total.is_zero() {
            0.0
        } else {
            left.as_secs_f64() / total.as_secs_f64()
        }
    }
}

/// A self-signed certificate for names berth has no certificate for, so that
/// the handshake completes and the client gets an answer (a 404 for an unknown
/// host) instead of a TLS alert.
pub fn self_signed(name: &str) -> Result<Cert, String> {
    let ck =
        rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(|e| e.to_string())?;
    Cert::from_pem(
        ck.cert.pem().as_bytes(),
        ck.signing_key.serialize_pem().as_bytes(),
        Source::File,
    )
}

/// Certificates by the names they cover.
type Map = HostMap<Arc<Cert>>;

/// The SNI → certificate map, shared by the TLS listener, the ACME manager
/// and the proxy (which redirects to HTTPS only where a certificate exists).
pub struct CertStore {
    map: ArcSwap<Map>,
    default: Arc<CertifiedKey>,
    /// Every installed certificate by the file stem / host it was installed under.
    by_key: std::sync::Mutex<HashMap<String, Arc<Cert>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new(default: Cert) -> CertStore {
        CertStore {
            map: ArcSwap::from_pointee(Map::default()),
            default: default.key,
            by_key: Default::default(),
        }
    }

    /// Installs (or replaces) the certificate known as `key` (an ACME host or
    /// a file stem); `None` removes it.
    pub fn set(&self, key: &str, cert: Option<Cert>) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        match cert {
            Some(c) => by_key.insert(key.to_string(), Arc::new(c)),
            None => by_key.remove(key),
        };
        let mut map = Map::default();
        // ACME certificates win over files for the same name; then the one
        // valid longest.
        let mut certs: Vec<&Arc<Cert>> = by_key.values().collect();
        certs.sort_by_key(|c| (c.source == Source::Acme, c.not_after));
        for c in certs {
            // A name no hostname can match (an IP SAN written as DNS, say)
            // is left out.
            for pattern in c.names.iter().filter_map(|n| HostPattern::parse(n).ok()) {
                map.insert(pattern, c.clone());
            }
        }
        self.map.store(Arc::new(map));
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cert>> {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// A certificate the user brought serves `name` (for `*.x`: one whose
    /// names include `*.x` itself).
    pub fn covered_by_file(&self, name: &str) -> bool {
        if name.starts_with("*.") {
            let by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
            by_key
                .values()
                .any(|c| c.source == Source::File && c.names.iter().any(|n| n == name))
        } else {
            self.lookup(name).is_some_and(|c| c.source == Source::File)
        }
    }

    /// The certificate a handshake for `name` would get, if not the default.
    pub fn lookup(&self, name: &str) -> Option<Arc<Cert>> {
        self.map.load().get(&canonical_name(name)).cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|n| self.lookup(n));
        Some(found.map_or_else(|| self.default.clone(), |c| c.key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Cert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        Cert::from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
            Source::File,
        )
        .unwrap()
    }

    #[test]
    fn parses_names_and_validity() {
        let c = cert(&["App.Test", "*.wild.test"]);
        assert_eq!(c.names, vec!["app.test", "*.wild.test"]);
        assert!(c.not_after > SystemTime::now());
        let left = c.life_left(SystemTime::now());
        assert!(left > 0.9 && left <= 1.0, "{left}");
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(Cert::from_pem(b"garbage", b"garbage", Source::File).is_err());
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        let e = Cert::from_pem(
            a.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
            Source::File,
        )
        .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn lookup_exact_then_wildcard() {
        let store = CertStore::new(self_signed("berth.invalid").unwrap());
        store.set("a", Some(cert(&["a.test"])));
        store.set("w", Some(cert(&["*.test"])));
        assert_eq!(store.lookup("a.test").unwrap().names, vec!["a.test"]);
        assert_eq!(store.lookup("B.TEST.").unwrap().names, vec!["*.test"]);
        assert!(
            store.lookup("x.y.test").is_none(),
            "a wildcard covers one label"
        );
        store.set("a", None);
        assert_eq!(store.lookup("a.test").unwrap().names, vec!["*.test"]);
        assert!(store.covered_by_file("*.test"), "the user's wildcard");
        assert!(store.covered_by_file("b.test"));
        assert!(!store.covered_by_file("*.other.test"));
    }
}
