//! The CLI's client of the admin API: requests with the bearer token, answers
//! deserialised into the types the server serialises, and NDJSON progress
//! streams read line by line as they arrive. Every failure is a
//! [`CallError`], whose status decides the CLI's exit code.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::token::client_token;
use crate::api::ErrorBody;
use crate::config::Config;
use crate::deploy::Progress;
use crate::error::CallError;

/// The CLI's `User-Agent`.
pub const CLI_AGENT: &str = concat!("berth-cli/", env!("CARGO_PKG_VERSION"));

pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// `admin`: `host:port` or a URL; default from the config's
    /// `admin.listen`. `token`: default `$BERTH_TOKEN`, `admin.token`, or the
    /// token file.
    pub fn new(
        config: &Config,
        admin: Option<String>,
        token: Option<String>,
    ) -> Result<Client, CallError> {
        let base = match admin {
            Some(a) if a.starts_with("http://") => a.trim_end_matches('/').to_string(),
            Some(a) => format!("http://{a}"),
            None => match config.admin.listen {
                Some(l) => format!("http://{l}"),
                None => {
                    return Err(CallError::unreached(
                        "admin.listen is off in the config: pass --admin HOST:PORT",
                    ))
                }
            },
        };
        Ok(Client {
            base,
            token: token.or_else(|| client_token(&config.admin)),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// GETs `path` and reads the answer as a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call("GET", path).await
    }

    /// POSTs to `path` without a body and reads the answer as a `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call("POST", path).await
    }

    /// Sends `body` as JSON with `method` and reads the answer as a `T`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CallError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| CallError::unreached(format!("{method} {path}: request body: {e}")))?;
        self.call_with(method, path, Some(Bytes::from(json))).await
    }

    /// Sends `method` to `path` and leaves the answer's body unread (204).
    pub async fn send_only(&self, method: &str, path: &str) -> Result<(), CallError> {
        self.send(self.request(method, path, None)?)
            .await
            .map(|_| ())
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<T, CallError> {
        self.call_with(method, path, None).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<T, CallError> {
        let resp = self.send(self.request(method, path, json)?).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broke(path, e))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            CallError::unreached(format!(
                "{method} {path}: unexpected answer from the berth API: {e}"
            ))
        })
    }

    /// GETs `path` and hands each chunk of the answer to `chunk` as it arrives.
    pub async fn get_stream(
        &self,
        path: &str,
        mut chunk: impl FnMut(&[u8]),
    ) -> Result<(), CallError> {
        let mut resp = self.send(self.request("GET", path, None)?).await?;
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| self.broke(path, e))?;
            if let Some(data) = frame.data_ref() {
                chunk(data);
            }
        }
        Ok(())
    }

    /// POSTs `body` (none: an empty one) and calls `line` for each progress
    /// line of the NDJSON answer as it arrives; returns the last one.
    pub async fn post_progress(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
        mut line: impl FnMut(&Progress),
    ) -> Result<Option<Progress>, CallError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CallError::unreached(format!("POST {path}: request body: {e}")))?;
        let mut resp = self
            .send(self.request("POST", path, body.map(Bytes::from))?)
            .await?;
        let mut buf = Vec::new();
        let mut last = None;
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| self.broke(path, e))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
            }
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=pos).collect();
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let p: Progress = serde_json::from_slice(&raw).map_err(|e| {
                    CallError::unreached(format!(
                        "POST {path}: a progress line does not read as progress: {e}: {}",
                        String::from_utf8_lossy(&raw).trim_end()
                    ))
                })?;
                line(&p);
                last = Some(p);
            }
        }
        Ok(last)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<http::Request<Full<Bytes>>, CallError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        // Tells the API a request came from the CLI (a deploy's trigger).
        b = b.header("user-agent", CLI_AGENT);
        if json.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(json.unwrap_or_default()))
            .map_err(|e| CallError::unreached(format!("{method} {}{path}: {e}", self.base)))
    }

    /// Sends the request; an answer other than 2xx is an error carrying its
    /// status and the API's message.
    async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CallError> {
        let resp = self.http.request(req).await.map_err(|e| {
            CallError::unreached(format!(
                "cannot reach the berth admin API at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(CallError {
            status: Some(status.as_u16()),
            message: format!("berth API answered {status}: {message}"),
        })
    }

    fn broke(&self, path: &str, e: impl std::fmt::Display) -> CallError {
        CallError::unreached(format!("{}{path}: the answer broke off: {e}", self.base))
    }
}

/// `s` as one segment of a URL path or a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?k=v&...` of the pairs that have a value; empty when none has.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_encoded() {
        assert_eq!(encode("blog-web_1.x~"), "blog-web_1.x~");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("service", Some("web".into())),
                ("tail", None),
                ("c", Some("x&y".into()))
            ]),
            "?service=web&c=x%26y"
        );
    }
}
