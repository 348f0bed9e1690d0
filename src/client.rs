//! The CLI's client of the admin API: JSON requests with the bearer token, and
//! NDJSON progress streams read line by line as they arrive.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::api::token::client_token;
use crate::config::Config;

/// Why a call to the admin API did not succeed.
#[derive(Debug)]
pub struct ClientError {
    /// The API's HTTP status; `None`: it was not reached.
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ClientError {
    fn from(message: String) -> ClientError {
        ClientError {
            status: None,
            message,
        }
    }
}

impl ClientError {
    /// The CLI's exit code: 3 the target does not exist, 2 berth could not
    /// be asked (unreachable, bad token, bad request), 1 it was asked and the
    /// operation failed.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Some(404) => 3,
            None | Some(400) | Some(401) => 2,
            Some(_) => 1,
        }
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// `admin`: `host:port` or a URL; default from the config's `admin.listen`.
    pub fn new(
        config: &Config,
        admin: Option<String>,
        token: Option<String>,
    ) -> Result<Client, String> {
        let base = match admin {
            Some(a) if a.starts_with("http://") => a.trim_end_matches('/').to_string(),
            Some(a) => format!("http://{a}"),
            None => match config.admin.listen {
                Some(l) => format!("http://{l}"),
                None => {
                    return Err("admin.listen is off in the config: pass --admin HOST:PORT".into())
                }
            },
        };
        Ok(Client {
            base,
            token: token.or_else(|| client_token(&config.admin)),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        b.body(body).map_err(|e| e.to_string())
    }

    async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| format!("cannot reach the berth admin API at {}: {e}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError {
            status: Some(status.as_u16()),
            message: format!("berth API answered {status}: {msg}"),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path).await
    }

    /// A call without a body that answers JSON.
    pub async fn call(&self, method: &str, path: &str) -> Result<Value, ClientError> {
        let resp = self.send(self.request(method, path, None)?).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(serde_json::from_slice(&body)
            .map_err(|e| format!("berth API sent invalid JSON: {e}"))?)
    }

    /// GETs `path` and hands each chunk of the answer to `chunk` as it arrives.
    pub async fn get_stream(
        &self,
        path: &str,
        mut chunk: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let mut resp = self.send(self.request("GET", path, None)?).await?;
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
            if let Some(data) = frame.data_ref() {
                chunk(data);
            }
        }
        Ok(())
    }

    /// POSTs `body` and calls `line` for each JSON line of the answer as it
    /// arrives; returns the last one.
    pub async fn post_stream(
        &self,
        path: &str,
        body: &Value,
        mut line: impl FnMut(&Value),
    ) -> Result<Value, ClientError> {
        let mut resp = self.send(self.request("POST", path, Some(body))?).await?;
        let mut buf = Vec::new();
        let mut last = Value::Null;
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| format!("the progress stream broke: {e}"))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
            }
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&raw) {
                    line(&v);
                    last = v;
                }
            }
        }
        Ok(last)
    }
}
