//! DNS-01: the TXT record `_acme-challenge.NAME` put in the name's zone
//! through the zone's provider (an RFC 2136 update signed with TSIG, or a
//! program of the user's), waited for on the zone's authoritative servers,
//! and always removed afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{update_message, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, message_tbs, TsigAlgorithm, TSIG};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::config::{DnsProvider, DnsProviderKind, TsigKey};

/// The TSIG algorithms berth signs with.
pub const TSIG_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1"];

/// A TSIG key as read from a file: BIND's `key "name" { algorithm ...;
/// secret "..."; };` (what `tsig-keygen` writes), or a bare base64 secret.
#[derive(Debug, PartialEq)]
pub struct TsigFile {
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub secret: Vec<u8>,
}

/// Reads a TSIG key file. Errors never repeat the secret.
pub fn parse_tsig_file(text: &str) -> Result<TsigFile, String> {
    use base64::Engine;
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| "the secret is not base64".to_string())
    };
    let tokens = tokens(text);
    if !tokens.iter().any(|t| t == "{") {
        return Ok(TsigFile {
            name: None,
            algorithm: None,
            secret: decode(text)?,
        });
    }
    // key NAME { algorithm ALG; secret "SECRET"; };
    let mut it = tokens.iter().map(String::as_str);
    let (Some("key"), Some(name), Some("{")) = (it.next(), it.next(), it.next()) else {
        return Err(
            "a BIND key file reads: key \"NAME\" { algorithm ...; secret \"...\"; };".into(),
        );
    };
    let (mut algorithm, mut secret) = (None, None);
    while let Some(word) = it.next() {
        match word {
            "}" => break,
            "algorithm" => algorithm = it.next().map(str::to_ascii_lowercase),
            "secret" => secret = it.next().map(str::to_string),
            _ => {}
        }
    }
    let secret = secret.ok_or("no secret \"...\"; statement in the key")?;
    Ok(TsigFile {
        name: Some(name.trim_end_matches('.').to_ascii_lowercase()),
        algorithm,
        secret: decode(&secret)?,
    })
}

/// The words of a BIND configuration snippet: comments (`#`, `//`,
/// `/* */`) dropped, quoted strings as one word without their quotes, and
/// `{` and `}` words of their own (`;` only ends a word).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                flush(&mut cur, &mut out);
                chars.by_ref().take_while(|c| *c != '\n').for_each(drop);
            }
            '/' if chars.peek() == Some(&'/') => {
                flush(&mut cur, &mut out);
                chars.by_ref().take_while(|c| *c != '\n').for_each(drop);
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut cur, &mut out);
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                flush(&mut cur, &mut out);
                out.push(chars.by_ref().take_while(|c| *c != '"').collect());
            }
            '{' | '}' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            ';' => flush(&mut cur, &mut out),
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The name of the TXT record for `name` (a wildcard's is its base's).
pub fn challenge_fqdn(name: &str) -> String {
    format!(
        "_acme-challenge.{}",
        name.strip_prefix("*.")
            .unwrap_or(name)
            .trim_end_matches('.')
    )
}

/// The provider of the longest zone that holds `name`.
pub fn provider_for<'a>(providers: &'a [DnsProvider], name: &str) -> Option<&'a DnsProvider> {
    let base = name.strip_prefix("*.").unwrap_or(name);
    providers
        .iter()
        .filter(|p| base == p.zone || base.ends_with(&format!(".{}", p.zone)))
        .max_by_key(|p| p.zone.len())
}

/// Puts the TXT record in place.
pub async fn present(p: &DnsProvider, fqdn: &str, value: &str) -> Result<(), String> {
    change(p, fqdn, value, true).await
}

/// Removes the TXT record (only this value: others of parallel orders stay).
pub async fn cleanup(p: &DnsProvider, fqdn: &str, value: &str) -> Result<(), String> {
    change(p, fqdn, value, false).await
}

/// Adds or removes the record through the zone's provider.
async fn change(p: &DnsProvider, fqdn: &str, value: &str, add: bool) -> Result<(), String> {
    match &p.kind {
        DnsProviderKind::Rfc2136 { server, key } => {
            update(*server, key, &p.zone, fqdn, value, p.ttl, add).await
        }
        DnsProviderKind::Exec { command, timeout } => {
            let action = if add { "present" } else { "cleanup" };
            exec(command, *timeout, action, fqdn, value).await
        }
    }
}

/// Waits until every authoritative server answers the TXT record with
/// `value`, or the provider's `propagation_timeout` passes.
pub async fn wait_visible(p: &DnsProvider, fqdn: &str, value: &str) -> Result<(), String> {
    let servers = match (&p.kind, p.nameservers.is_empty()) {
        (_, false) => p.nameservers.clone(),
        // The primary answered the update already: what counts is every
        // server the CA may ask, the zone's NS (secondaries included).
        (DnsProviderKind::Rfc2136 { server, .. }, true) => {
            let mut all = match authoritative(&p.zone).await {
                Ok(ns) => ns,
                Err(e) => {
                    tracing::warn!(zone = %p.zone, error = %e, "the zone's name servers are not known: waiting on the primary only (set nameservers)");
                    Vec::new()
                }
            };
            if !all.contains(server) {
                all.push(*server);
            }
            all
        }
        (DnsProviderKind::Exec { .. }, true) => authoritative(&p.zone).await?,
    };
    let deadline = Instant::now() + p.propagation_timeout;
    let mut waiting: Vec<SocketAddr> = servers;
    let mut last = String::new();
    loop {
        let mut still = Vec::new();
        for s in waiting {
            match txt_values(s, fqdn).await {
                Ok(values) if values.iter().any(|v| v == value) => {}
                Ok(_) => {
                    last = format!("{s} does not answer it yet");
                    still.push(s);
                }
                Err(e) => {
                    last = format!("{s}: {e}");
                    still.push(s);
                }
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the TXT record {fqdn} was not visible within {:?} ({last})",
                p.propagation_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The zone's name servers (NS records, then their addresses), port 53.
async fn authoritative(zone: &str) -> Result<Vec<SocketAddr>, String> {
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| format!("cannot read resolv.conf to find {zone}'s name servers: {e}"))?
        .build()
        .map_err(|e| format!("resolver: {e}"))?;
    let ns = resolver
        .lookup(format!("{zone}."), RecordType::NS)
        .await
        .map_err(|e| format!("the NS records of {zone}: {e} (set nameservers)"))?;
    let mut out = Vec::new();
    for r in ns.answers() {
        if let RData::NS(n) = &r.data {
            if let Ok(ips) = resolver.lookup_ip(n.0.to_ascii()).await {
                out.extend(ips.iter().map(|ip| SocketAddr::new(ip, 53)));
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no address for the name servers of {zone} (set nameservers)"
        ));
    }
    Ok(out)
}

fn name(fqdn: &str) -> Result<Name, String> {
    Name::from_ascii(format!("{}.", fqdn.trim_end_matches('.'))).map_err(|e| format!("{fqdn}: {e}"))
}

/// The TXT values `server` answers for `fqdn` (no recursion: the server
/// must be authoritative).
async fn txt_values(server: SocketAddr, fqdn: &str) -> Result<Vec<String>, String> {
    let mut q = Message::query();
    q.metadata.recursion_desired = false;
    q.add_query(Query::query(name(fqdn)?, RecordType::TXT));
    q.edns
        .get_or_insert_with(hickory_proto::op::Edns::new)
        .set_max_payload(1232);
    let bytes = q.to_vec().map_err(|e| e.to_string())?;
    let mut answer = exchange(server, &bytes, q.metadata.id).await?;
    if answer.metadata.truncation {
        answer = exchange_tcp(server, &bytes, q.metadata.id).await?;
    }
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rc => return Err(format!("answered {rc}")),
    }
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Sends one UDP message and reads the answer with the same id: three
/// tries of two seconds.
async fn exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(server)
    } else {
        "[::]:0".parse().unwrap_or(server)
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send(bytes)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(format!("{server}: {e}")),
                Ok(Ok(n)) => {
                    let Ok(m) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if m.metadata.id == id && m.metadata.message_type == MessageType::Response {
                        return Ok(m);
                    }
                }
            }
        }
    }
    Err(format!("{server} did not answer"))
}

/// The same over TCP (an answer too long for UDP).
async fn exchange_tcp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut conn = tokio::net::TcpStream::connect(server).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        conn.write_all(&framed).await?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        conn.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .map_err(|_| format!("{server} (TCP) did not answer"))?
        .map_err(|e| format!("{server} (TCP): {e}"))?;
    let m = Message::from_vec(&buf).map_err(|e| format!("{server} (TCP): {e}"))?;
    if m.metadata.id != id {
        return Err(format!("{server} (TCP) answered another query"));
    }
    Ok(m)
}

fn algorithm(key: &TsigKey) -> Result<(TsigAlgorithm, ring::hmac::Algorithm), String> {
    Ok(match key.algorithm.as_str() {
        "hmac-sha256" => (TsigAlgorithm::HmacSha256, ring::hmac::HMAC_SHA256),
        "hmac-sha384" => (TsigAlgorithm::HmacSha384, ring::hmac::HMAC_SHA384),
        "hmac-sha512" => (TsigAlgorithm::HmacSha512, ring::hmac::HMAC_SHA512),
        "hmac-sha1" => (
            TsigAlgorithm::HmacSha1,
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        other => return Err(format!("TSIG algorithm {other} is not supported")),
    })
}

/// Signs `message` with TSIG (RFC 8945 §4.3: the message, then the TSIG
/// variables) at `time` (Unix seconds) and returns the wire bytes.
pub fn sign(mut message: Message, key: &TsigKey, time: u64) -> Result<Vec<u8>, String> {
    let (alg, hmac_alg) = algorithm(key)?;
    let key_name = name(&key.name)?;
    let stub = TSIG::new(
        alg,
        time,
        300,
        Vec::new(),
        message.metadata.id,
        None,
        Vec::new(),
    );
    let tbs = message_tbs(&message, &stub, &key_name).map_err(|e| e.to_string())?;
    let mac = ring::hmac::sign(&ring::hmac::Key::new(hmac_alg, &key.secret), &tbs);
    message.signature = Some(Box::new(make_tsig_record(
        key_name,
        stub.set_mac(mac.as_ref().to_vec()),
    )));
    message.to_vec().map_err(|e| e.to_string())
}

/// An RFC 2136 update adding (or deleting) one TXT record, signed.
#[allow(clippy::too_many_arguments)]
async fn update(
    server: SocketAddr,
    key: &TsigKey,
    zone: &str,
    fqdn: &str,
    value: &str,
    ttl: u32,
    add: bool,
) -> Result<(), String> {
    let record = Record::from_rdata(name(fqdn)?, ttl, RData::TXT(TXT::new(vec![value.into()])));
    let rrset = RecordSet::from(record);
    let zone_name = name(zone)?;
    let message = if add {
        update_message::append(rrset, zone_name, false, false)
    } else {
        update_message::delete_by_rdata(rrset, zone_name, false)
    };
    let id = message.metadata.id;
    debug_assert_eq!(message.metadata.op_code, OpCode::Update);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let bytes = sign(message, key, now)?;
    let what = if add { "adding" } else { "removing" };
    let answer = exchange(server, &bytes, id)
        .await
        .map_err(|e| format!("rfc2136 {what} {fqdn}: {e}"))?;
    match answer.metadata.response_code {
        ResponseCode::NoError => {
            debug!(server = %server, fqdn, add, "rfc2136 update done");
            Ok(())
        }
        ResponseCode::NotAuth => Err(format!(
            "rfc2136 {what} {fqdn}: {server} answered NOTAUTH: the TSIG key {} is not accepted (its name, algorithm or secret; or this host's clock is more than 5 minutes off), or the server is not authoritative for {zone}",
            key.name
        )),
        ResponseCode::Refused => Err(format!(
            "rfc2136 {what} {fqdn}: {server} answered REFUSED: its update-policy does not let the key {} change {fqdn}",
            key.name
        )),
        rc => Err(format!("rfc2136 {what} {fqdn}: {server} answered {rc}")),
    }
}

/// Runs `command ACTION FQDN. VALUE` (lego's exec convention: the FQDN ends
/// with a dot), with a timeout; an error carries the exit and the last line
/// the program wrote to stderr.
async fn exec(
    command: &[String],
    timeout: Duration,
    action: &str,
    fqdn: &str,
    value: &str,
) -> Result<(), String> {
    let (prog, args) = command.split_first().ok_or("empty command")?;
    let fq = format!("{}.", fqdn.trim_end_matches('.'));
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .args([action, &fq, value])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let run = cmd.output();
    let out = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(format!(
                "{prog} {action} {fq}: still running after {timeout:?}: killed"
            ))
        }
        Ok(Err(e)) => return Err(format!("{prog} {action} {fq}: cannot run: {e}")),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        info!(program = %prog, action, fqdn = %fq, "DNS-01 exec done");
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect::<String>();
    let code = out
        .status
        .code()
        .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
    Err(format!("{prog} {action} {fq}: exited with {code}: {last}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::DnsProviderKind;

    #[test]
    fn reads_bind_key_files_and_bare_secrets() {
        let f = parse_tsig_file(
            "key \"berth-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n",
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("berth-key"));
        assert_eq!(f.algorithm.as_deref(), Some("hmac-sha256"));
        assert_eq!(f.secret, b"secret-secret-secret");
        let bare = parse_tsig_file("c2VjcmV0\n").unwrap();
        assert_eq!((bare.name, bare.secret), (None, b"secret".to_vec()));
        let e = parse_tsig_file("key \"k\" { secret \"%%%notbase64\"; };").unwrap_err();
        assert!(!e.contains("notbase64"), "the secret is not repeated: {e}");
        assert!(parse_tsig_file("").is_err());
        // A key named with the word "secret", comments, no quotes.
        let f = parse_tsig_file(
            "# made by tsig-keygen\n// for berth\nkey acme-secret. { /* sha-512 */ algorithm HMAC-SHA512; secret \"c2VjcmV0\"; };",
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("acme-secret"));
        assert_eq!(f.algorithm.as_deref(), Some("hmac-sha512"));
        assert_eq!(f.secret, b"secret");
        assert!(parse_tsig_file("zone \"x\" { };").is_err());
    }

    /// An exec provider for `zone` (for the tests of other modules too).
    pub(crate) fn provider(zone: &str) -> DnsProvider {
        DnsProvider {
            zone: zone.into(),
            kind: DnsProviderKind::Exec {
                command: vec!["true".into()],
                timeout: Duration::from_secs(1),
            },
            nameservers: vec![],
            propagation_timeout: Duration::from_secs(1),
            ttl: 60,
        }
    }

    #[test]
    fn the_longest_zone_wins_and_wildcards_use_their_base() {
        let ps = [provider("example.com"), provider("apps.example.com")];
        assert_eq!(
            provider_for(&ps, "a.example.com").unwrap().zone,
            "example.com"
        );
        assert_eq!(
            provider_for(&ps, "example.com").unwrap().zone,
            "example.com"
        );
        assert_eq!(
            provider_for(&ps, "x.apps.example.com").unwrap().zone,
            "apps.example.com"
        );
        assert_eq!(
            provider_for(&ps, "*.apps.example.com").unwrap().zone,
            "apps.example.com"
        );
        assert!(provider_for(&ps, "badexample.com").is_none());
        assert_eq!(
            challenge_fqdn("*.apps.example.com"),
            "_acme-challenge.apps.example.com"
        );
        assert_eq!(
            challenge_fqdn("a.example.com"),
            "_acme-challenge.a.example.com"
        );
    }

    /// RFC 8945's MAC over a known message, checked against the MAC that a
    /// second, independent computation of the same bytes gives: the TSIG
    /// record is last, counted in ARCOUNT, and its MAC covers the message
    /// as it was before the record (with the original id) plus the TSIG
    /// variables.
    #[test]
    fn tsig_signature_covers_the_message_and_variables() {
        let key = TsigKey {
            name: "berth-key".into(),
            algorithm: "hmac-sha256".into(),
            secret: b"0123456789abcdef".to_vec(),
        };
        let record = Record::from_rdata(
            name("_acme-challenge.app.test-zone").unwrap(),
            60,
            RData::TXT(TXT::new(vec!["value".into()])),
        );
        let mut m = update_message::append(
            RecordSet::from(record),
            name("test-zone").unwrap(),
            false,
            false,
        );
        m.metadata.id = 0x1234;
        let unsigned = m.to_vec().unwrap();
        let signed = sign(m, &key, 1_700_000_000).unwrap();
        // ARCOUNT (bytes 10..12) went up by one; the rest of the header and
        // the sections are unchanged.
        let ar = |b: &[u8]| u16::from_be_bytes([b[10], b[11]]);
        assert_eq!(ar(&signed), ar(&unsigned) + 1);
        assert_eq!(&signed[..10], &unsigned[..10]);
        assert_eq!(&signed[12..unsigned.len()], &unsigned[12..]);
        // The MAC, recomputed by hand from the wire: key name, class ANY,
        // TTL 0, algorithm, time (48 bits), fudge, error 0, other length 0.
        let mut tbs = unsigned.clone();
        tbs.push(9);
        tbs.extend_from_slice(b"berth-key");
        tbs.push(0);
        tbs.extend_from_slice(&255u16.to_be_bytes());
        tbs.extend_from_slice(&0u32.to_be_bytes());
        tbs.push(11);
        tbs.extend_from_slice(b"hmac-sha256");
        tbs.push(0);
        tbs.extend_from_slice(&[0, 0]);
        tbs.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        tbs.extend_from_slice(&300u16.to_be_bytes());
        tbs.extend_from_slice(&[0, 0, 0, 0]);
        let want = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret),
            &tbs,
        );
        // The record ends with MAC size, MAC, original id, error 0, other
        // length 0.
        let mac = want.as_ref();
        let mut tail = (mac.len() as u16).to_be_bytes().to_vec();
        tail.extend_from_slice(mac);
        tail.extend_from_slice(&[0x12, 0x34, 0, 0, 0, 0]);
        assert!(signed.ends_with(&tail), "the MAC is RFC 8945's");
    }
}
