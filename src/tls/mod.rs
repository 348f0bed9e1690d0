//! HTTPS: the SNI certificate store, certificates users bring as PEM files,
//! and the ACME manager that orders and renews the rest.

pub mod acme;
pub mod alpn;
pub mod dns01;
pub mod files;
pub mod ondemand;
pub mod rsa;
pub mod store;

pub use store::{Cert, CertStore, Source};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// HTTP-01 tokens → key authorizations, answered by the proxy's HTTP listener.
pub type Challenges = Arc<Mutex<HashMap<String, String>>>;

pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the proxy needs to know about HTTPS.
pub struct Https {
    pub store: Arc<CertStore>,
    pub challenges: Challenges,
    /// The HTTPS port to redirect to (omitted from the URL when 443).
    /// (Whether to redirect, and HSTS, are live settings: `ProxySettings`.)
    pub port: u16,
}

impl Https {
    /// The key authorization for an HTTP-01 request path, if it is one.
    pub fn challenge(&self, path: &str) -> Option<Option<String>> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        Some(
            self.challenges
                .lock()
                .ok()
                .and_then(|c| c.get(token).cloned()),
        )
    }

    /// Where to send a plain-HTTP request for `host` + `path_and_query`.
    pub fn redirect_to(&self, host: &str, path_and_query: &str) -> String {
        let host = crate::names::normalize_host(host);
        // `OPTIONS *` (asterisk form): `https://host*` would name another
        // host; only a path goes after the authority.
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        if self.port == 443 {
            format!("https://{host}{path_and_query}")
        } else {
            format!("https://{host}:{}{path_and_query}", self.port)
        }
    }
}
