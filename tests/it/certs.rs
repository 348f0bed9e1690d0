//! Certificates beyond HTTP-01, against real pebble: DNS-01 through a real
//! authoritative server (BIND 9, started here on a loopback port with a
//! zone for the test run and a TSIG key; pebble's `-dnsserver` is BIND),
//! by RFC 2136 updates and by an exec hook that calls `nsupdate`;
//! wildcards; TLS-ALPN-01 on berth's HTTPS listener; several issuers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::acme::{https_get, Pebble, PebbleOpts};
use crate::harness::{cli, eventually, free_port, Berth, Env, TempDir};

/// A program of /usr/sbin, found also where that is not on the PATH.
fn sbin(name: &str) -> String {
    let full = format!("/usr/sbin/{name}");
    if Path::new(&full).is_file() {
        full
    } else {
        name.to_string()
    }
}

/// BIND 9 serving `zone` on 127.0.0.1:`port`, updatable with the TSIG key
/// in `key_file` (TXT records only), killed on drop.
struct Bind {
    child: Child,
    port: u16,
    key_file: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Bind {
    fn start(zone: &str) -> Bind {
        let dir = TempDir::new();
        let d = dir.path();
        let key = Command::new(sbin("tsig-keygen"))
            .args(["-a", "hmac-sha256", "berth-test"])
            .output()
            .expect("tsig-keygen (apt-get install bind9-utils)");
        assert!(key.status.success());
        let key_file = d.join("tsig.key");
        std::fs::write(&key_file, &key.stdout).unwrap();
        std::fs::write(
            d.join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let port = free_port();
        std::fs::write(
            d.join("named.conf"),
            format!(
                r#"options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
  querylog yes;
}};
include "{d}/tsig.key";
zone "{zone}" {{
  type primary;
  file "{d}/zone.db";
  update-policy {{ grant berth-test zonesub TXT; }};
}};
"#,
                d = d.display()
            ),
        )
        .unwrap();
        let log = d.join("named.log");
        let child = Command::new(sbin("named"))
            .args(["-g", "-c", &d.join("named.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("named (apt-get install bind9)");
        let b = Bind {
            child,
            port,
            key_file,
            log,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !std::fs::read_to_string(&b.log)
            .unwrap_or_default()
            .contains("running")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "named did not start: {}",
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The TXT values BIND answers for `name` now.
    async fn txt(&self, name: &str) -> String {
        let out = tokio::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                name,
                "TXT",
                "+short",
            ])
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zone of the test's own in BIND, pebble asking BIND for it (and
/// validating HTTP-01 on a port nobody listens on), berth's ports and
/// certificate directory.
struct DnsRig {
    bind: Bind,
    pebble: Pebble,
    ports: (u16, u16, u16),
    dir: TempDir,
    certs: PathBuf,
}

impl DnsRig {
    /// berth's config for this rig, `acme_extra` added to `acme:`.
    fn config(&self, env: &Env, acme_extra: &str) -> String {
        config(env, self.ports, &self.pebble, &self.certs, acme_extra)
    }

    fn start(zone: &str) -> DnsRig {
        let bind = Bind::start(zone);
        let pebble = Pebble::start_with(PebbleOpts {
            http: free_port(),
            dns: Some(bind.port),
            ..PebbleOpts::default()
        });
        let dir = TempDir::new();
        let certs = dir.path().join("certs");
        DnsRig {
            bind,
            pebble,
            ports: (free_port(), free_port(), free_port()),
            dir,
            certs,
        }
    }
}

/// The test config with TLS, ACME against `pebble` and `acme_extra` added
/// to the `acme:` section.
fn config(
    env: &Env,
    ports: (u16, u16, u16),
    pebble: &Pebble,
    certs: &Path,
    acme_extra: &str,
) -> String {
    let (http, admin, tls) = ports;
    env.config_admin(http, admin, "").replace(
        "tls:\n  listen: \"off\"\n",
        &format!("{}{acme_extra}", pebble.config(tls, certs)),
    )
}

/// `berth certs` as text.
async fn certs_table(admin: u16) -> String {
    let (code, out, err) = cli(&format!("127.0.0.1:{admin}"), &["certs"]).await;
    assert_eq!(code, 0, "{err}");
    out
}

/// The row of `berth certs` for `host`.
async fn cert_row(admin: u16, host: &str) -> Option<String> {
    certs_table(admin)
        .await
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .map(str::to_string)
}

/// The rfc2136 provider of `zone` at `bind` (also the one server to look
/// for the record on: the test zone has no NS anyone could resolve).
fn rfc2136(zone: &str, bind: &Bind) -> String {
    format!(
        "  dns:\n    - zone: {zone}\n      provider: rfc2136\n      server: 127.0.0.1:{port}\n      tsig_secret_file: {}\n      nameservers: [127.0.0.1:{port}]\n      propagation_timeout: 20s\n",
        bind.key_file.display(),
        port = bind.port,
    )
}

/// The subject's names of the certificate served for `host` (openssl).
async fn served_names(host: &str, tls: u16) -> String {
    let mut s_client = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{tls}"),
            "-servername",
            host,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .unwrap();
    let pem = std::mem::take(&mut s_client.stdout);
    let mut x509 = tokio::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = x509.stdin.take().unwrap();
    stdin.write_all(&pem).await.unwrap();
    drop(stdin);
    let out = x509.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_by_rfc2136_issues_cleans_up_and_renews_on_request() {
    let env = Env::new("dns01").await;
    let zone = format!("{}.test", env.id);
    let app = env.host("app");
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let rig = DnsRig::start(&zone);
    let (bind, pebble, dir) = (&rig.bind, &rig.pebble, &rig.dir);
    let (http, admin, tls) = rig.ports;
    let cfg = rig.config(&env, &rfc2136(&zone, bind));
    let root = pebble.root(dir.path());
    let berth = Berth::start(&cfg, http).await;

    let (code, _, _) = eventually(Duration::from_secs(60), "a DNS-01 certificate", || async {
        https_get(&app, tls, Some(&root), "/").await.ok()
    })
    .await;
    assert_eq!(code, "200");
    // The record was added (signed with the key), validated, then removed.
    let record = format!("_acme-challenge.{app}");
    let log = bind.log();
    let added = log
        .find(&format!("adding an RR at '{record}' TXT"))
        .unwrap_or_else(|| panic!("no update adding {record}: {log}"));
    let deleted = log
        .find(&format!("deleting an RR at {record} TXT"))
        .unwrap_or_else(|| panic!("no update deleting {record}: {log}"));
    assert!(added < deleted);
    assert!(
        log[added..deleted].contains(&format!("query: {record} IN TXT")),
        "the record was asked for while it existed: {log}"
    );
    assert!(log.contains("/key berth-test"), "updates are signed: {log}");
    assert_eq!(bind.txt(&record).await, "", "the record is gone");
    let row = cert_row(admin, &app).await.unwrap();
    assert!(
        row.contains("dns-01") && row.contains("ecdsa-p256"),
        "{row}"
    );

    // A renewal on request: a new certificate, a new record, cleaned up.
    let before = served_names(&app, tls).await;
    let (code, out, err) = cli(&format!("127.0.0.1:{admin}"), &["certs", "renew", &app]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("renewal queued"), "{out}");
    eventually(Duration::from_secs(60), "a second certificate", || async {
        (berth.log().matches("certificate issued").count() == 2).then_some(())
    })
    .await;
    let after = eventually(
        Duration::from_secs(10),
        "the new certificate served",
        || async {
            let now = served_names(&app, tls).await;
            (now.contains("serial=") && now != before).then_some(now)
        },
    )
    .await;
    assert!(after.contains(&format!("DNS:{app}")), "{after}");
    eventually(
        Duration::from_secs(10),
        "the second record removed",
        || async {
            (bind
                .log()
                .matches(&format!("deleting an RR at {record} TXT"))
                .count()
                == 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(bind.txt(&record).await, "");
    // A name berth does not manage: 404, exit 3, nothing ordered.
    let (code, _, err) = cli(
        &format!("127.0.0.1:{admin}"),
        &["certs", "renew", "nobody.example"],
    )
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no route wants a certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_route_gets_one_wildcard_certificate_for_every_name_below_it() {
    let env = Env::new("wildcard").await;
    let zone = format!("{}.test", env.id);
    let wildcard = format!("*.apps.{zone}");
    env.run("apps", &["--label", &format!("berth.host={wildcard}")])
        .await;
    // A wildcard outside every provider's zone: reported, never ordered.
    let elsewhere = format!("*.x.{}.elsewhere", env.id);
    env.run("other", &["--label", &format!("berth.host={elsewhere}")])
        .await;
    let rig = DnsRig::start(&zone);
    let (bind, pebble, dir) = (&rig.bind, &rig.pebble, &rig.dir);
    let (http, admin, tls) = rig.ports;
    let cfg = rig.config(&env, &rfc2136(&zone, bind));
    let root = pebble.root(dir.path());
    let berth = Berth::start(&cfg, http).await;

    let (a, b) = (format!("a.apps.{zone}"), format!("b.apps.{zone}"));
    for name in [&a, &b] {
        let (code, _, _) = eventually(
            Duration::from_secs(60),
            "the wildcard certificate",
            || async { https_get(name, tls, Some(&root), "/").await.ok() },
        )
        .await;
        assert_eq!(code, "200", "{name}");
    }
    let (sa, sb) = (served_names(&a, tls).await, served_names(&b, tls).await);
    assert_eq!(sa, sb, "one certificate serves both names");
    assert!(sa.contains(&format!("DNS:{wildcard}")), "{sa}");
    assert_eq!(berth.log().matches("certificate issued").count(), 1);
    assert!(rig
        .certs
        .join("acme")
        .join(format!("_wildcard.apps.{zone}.crt"))
        .is_file());
    let row = cert_row(admin, &wildcard).await.unwrap();
    assert!(row.contains("dns-01"), "{row}");
    let row = eventually(
        Duration::from_secs(10),
        "the other wildcard reported",
        || async { cert_row(admin, &elsewhere).await },
    )
    .await;
    assert!(
        row.contains("not ordered: a wildcard needs dns-01, and no acme.dns provider covers"),
        "{row}"
    );
    // The wildcard's record is gone from the zone.
    assert_eq!(bind.txt(&format!("_acme-challenge.apps.{zone}")).await, "");
}

/// An exec hook in lego's convention, calling nsupdate against `bind`; it
/// writes each call to `calls`, and for a name with `fail` in it adds the
/// record and then fails.
fn hook(dir: &Path, bind: &Bind) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls.log");
    let script = dir.join("dns-hook.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# dns-hook.sh present|cleanup FQDN. VALUE
echo "$1 $2 $3" >> {calls}
case "$1" in
  present) op="add $2 60 TXT \"$3\"" ;;
  cleanup) op="delete $2 TXT \"$3\"" ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
printf 'server 127.0.0.1 {port}\nupdate %s\nsend\n' "$op" | nsupdate -k {key} || exit 1
[ "$1" = present ] && [ -e {slow} ] && sleep 30
case "$2" in
  *fail*) [ "$1" = present ] && {{ echo "provider said no for $2" >&2; exit 1; }} ;;
esac
exit 0
"#,
            calls = calls.display(),
            port = bind.port,
            key = bind.key_file.display(),
            slow = dir.join("slow").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_by_an_exec_hook_and_a_failing_hook_backs_off_and_cleans_up() {
    let env = Env::new("dnsexec").await;
    let zone = format!("{}.test", env.id);
    let (app, bad) = (env.host("app"), env.host("fail"));
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    env.run("fail", &["--label", &format!("berth.host={bad}")])
        .await;
    let rig = DnsRig::start(&zone);
    let (bind, pebble, dir) = (&rig.bind, &rig.pebble, &rig.dir);
    let (http, admin, tls) = rig.ports;
    let (script, calls) = hook(dir.path(), bind);
    let acme = format!(
        "  challenge: dns-01\n  dns:\n    - zone: {zone}\n      provider: exec\n      command: {}\n      nameservers: [127.0.0.1:{}]\n      propagation_timeout: 20s\n",
        script.display(),
        bind.port
    );
    let cfg = rig.config(&env, &acme);
    let root = pebble.root(dir.path());
    let _berth = Berth::start(&cfg, http).await;

    let (code, _, _) = eventually(
        Duration::from_secs(60),
        "a certificate through the hook",
        || async { https_get(&app, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!(code, "200");
    let row = eventually(
        Duration::from_secs(30),
        "the failing hook's error",
        || async {
            cert_row(admin, &bad)
                .await
                .filter(|r| r.contains("provider said no"))
        },
    )
    .await;
    assert!(row.contains("exited with status 1"), "{row}");
    assert!(
        row.contains(" 1 ") || row.contains("\t1\t"),
        "one failure counted: {row}"
    );
    assert!(row.contains("in 0h0"), "a next try is set: {row}");
    let log = std::fs::read_to_string(&calls).unwrap();
    for name in [&app, &bad] {
        let fqdn = format!("_acme-challenge.{name}.");
        assert!(log.contains(&format!("present {fqdn} ")), "{log}");
        assert!(
            log.contains(&format!("cleanup {fqdn} ")),
            "cleaned up, also after the failure: {log}"
        );
        assert_eq!(bind.txt(&fqdn).await, "", "{fqdn}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_on_the_https_listener_leaves_other_handshakes_alone() {
    let env = Env::new("alpn").await;
    let (app, other) = (env.host("app"), env.host("other"));
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    env.run(
        "other",
        &[
            "--label",
            &format!("berth.host={other}"),
            "--label",
            "berth.tls=off",
        ],
    )
    .await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    // HTTP-01 unavailable: pebble validates it on a closed port; TLS-ALPN-01
    // goes to berth's HTTPS listener.
    let pebble = Pebble::start_with(PebbleOpts {
        http: free_port(),
        tls: Some(tls),
        ..PebbleOpts::default()
    });
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let cfg = config(
        &env,
        (http, admin, tls),
        &pebble,
        &certs,
        "  challenge: tls-alpn-01\n  key_type: ecdsa-p384\n",
    );
    let root = pebble.root(dir.path());
    // HTTPS requests to another host all along, challenge or not.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let berth = Berth::start(&cfg, http).await;
    let log = berth.log_path();
    let load = {
        let (stop, other) = (stop.clone(), other.clone());
        tokio::spawn(async move {
            let (mut ok, mut during, mut failed) = (0, 0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = https_get(&other, tls, None, "/").await;
                // Ended while the order was pending.
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let pending =
                    text.contains("ordering a certificate") && !text.contains("certificate issued");
                match result {
                    Ok((code, _, _)) if code == "200" => {
                        ok += 1;
                        during += usize::from(pending);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, during, failed)
        })
    };
    let (code, version, _) = eventually(
        Duration::from_secs(60),
        "a TLS-ALPN-01 certificate",
        || async { https_get(&app, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!((code.as_str(), version.as_str()), ("200", "2"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, during, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    println!(
        "TLS-ALPN-01: {ok} HTTPS requests to another host, {during} while the order was pending"
    );
    assert!(
        during > 0,
        "{ok} requests, none while the order was pending"
    );
    assert!(berth.log().contains("TLS-ALPN-01 challenge answered"));
    let row = cert_row(admin, &app).await.unwrap();
    assert!(
        row.contains("tls-alpn-01") && row.contains("ecdsa-p384"),
        "{row}"
    );
    let key = std::fs::read_to_string(certs.join("acme").join(format!("{app}.key"))).unwrap();
    let text = tokio::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(certs.join("acme").join(format!("{app}.key")))
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("secp384r1"),
        "a P-384 key: {key:.30}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_issuer_cannot_be_reached_the_second_issues() {
    let env = Env::new("issuers").await;
    let app = env.host("app");
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, None);
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let (directory, ca) = pebble.directory();
    // One that refuses connections, one that takes them and never answers
    // (berth gives up on it after 30 s), then pebble.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in hang.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let issuers = format!(
        "  issuers:\n    - name: down\n      directory: https://127.0.0.1:{}/dir\n    - name: hangs\n      directory: https://127.0.0.1:{hang_port}/dir\n    - name: pebble\n      directory: {directory}\n      ca_root: {}\n",
        free_port(),
        ca.display()
    );
    // The single-issuer keys of pebble.config() make way for the list.
    let cfg = config(&env, (http, admin, tls), &pebble, &certs, &issuers).replace(
        &format!("\n  directory: {directory}\n  ca_root: {}\n", ca.display()),
        "\n",
    );
    let root = pebble.root(dir.path());
    let berth = Berth::start(&cfg, http).await;
    let started = std::time::Instant::now();
    let (code, _, _) = eventually(
        Duration::from_secs(90),
        "a certificate from the third issuer",
        || async { https_get(&app, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!(code, "200");
    let row = cert_row(admin, &app).await.unwrap();
    assert!(row.contains(" pebble ") && row.contains("http-01"), "{row}");
    println!("issued by the third issuer after {:?}", started.elapsed());
    let log = berth.log();
    assert!(
        log.contains("no ACME account") && log.contains("issuer=down"),
        "the first was tried"
    );
    assert!(
        log.contains("did not answer"),
        "the second timed out: {log}"
    );
    assert!(!held.lock().unwrap().is_empty(), "the second was reached");
    assert!(certs.join("acme").join("account-pebble.json").is_file());
}

/// The ask endpoint of on-demand TLS: 200 for names starting `ok-`, 403
/// for the rest; every asked name is recorded.
async fn ask_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let name = head
                    .split_once("domain=")
                    .map(|(_, rest)| rest.split([' ', '&']).next().unwrap_or("").to_string())
                    .unwrap_or_default();
                let status = if name.starts_with("ok-") {
                    "200 OK"
                } else {
                    "403 Forbidden"
                };
                log.lock().unwrap().push(name);
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_tls_asks_orders_and_stays_within_its_rate() {
    let env = Env::new("ondemand").await;
    // Every name of the run is routed (plain HTTP): the route itself wants
    // no certificate of its own.
    env.run(
        "app",
        &[
            "--label",
            &format!("berth.host=*.{}.test", env.id),
            "--label",
            "berth.tls=off",
        ],
    )
    .await;
    let (ask, asked) = ask_server().await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, None);
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let cfg = config(&env, (http, admin, tls), &pebble, &certs, "").replace(
        "tls:\n",
        &format!("tls:\n  on_demand:\n    ask: http://127.0.0.1:{ask}/check\n    rate: 10/m\n    wait: 5s\n"),
    );
    let root = pebble.root(dir.path());
    let berth = Berth::start(&cfg, http).await;

    // An allowed name: a valid certificate on first contact, or on the next.
    let good = env.host("ok-first");
    let started = std::time::Instant::now();
    let first = https_get(&good, tls, Some(&root), "/").await;
    let (code, _, body) = match first {
        Ok(r) => r,
        Err(_) => {
            eventually(
                Duration::from_secs(30),
                "the on-demand certificate",
                || async { https_get(&good, tls, Some(&root), "/").await.ok() },
            )
            .await
        }
    };
    assert_eq!(code, "200", "{body}");
    println!(
        "on-demand: first valid answer after {:?}",
        started.elapsed()
    );
    let row = cert_row(admin, &good).await.unwrap();
    assert!(row.contains("(on demand)"), "{row}");

    // A refused name: the default certificate, asked once, never ordered.
    let refused = env.host("nope");
    for _ in 0..3 {
        let (code, _, _) = https_get(&refused, tls, None, "/").await.unwrap();
        assert_eq!(code, "200");
        assert!(https_get(&refused, tls, Some(&root), "/").await.is_err());
    }
    let asks_for = |n: &str| asked.lock().unwrap().iter().filter(|a| *a == n).count();
    assert_eq!(asks_for(&refused), 1, "the refusal is remembered");
    assert!(
        !berth
            .log()
            .lines()
            .any(|l| l.contains("ordering a certificate") && l.contains(&refused)),
        "never ordered"
    );
    assert!(berth
        .log()
        .lines()
        .any(|l| l.contains("ordering a certificate") && l.contains(&good)));

    // 100 handshakes for new names: at most the rate's worth of asks, and
    // orders only for what was allowed.
    let before = asked.lock().unwrap().len();
    let flood_start = std::time::Instant::now();
    for i in 0..100 {
        let name = env.host(&format!("ok-r{i}"));
        let _ = https_get(&name, tls, None, "/").await;
    }
    let elapsed = flood_start.elapsed();
    let flood_asks = asked.lock().unwrap().len() - before;
    // 10/m: the burst of 10 less the two asks above, plus one per 6 s
    // since the first ask.
    let bound = 8 + (started.elapsed().as_secs() / 6) as usize;
    println!("on-demand: {flood_asks} asks for 100 new names in {elapsed:?} (bound {bound})");
    assert!(flood_asks <= bound, "{flood_asks} asks > {bound}");
    assert!(flood_asks >= 1, "some names were asked for");
    let orders = eventually(
        Duration::from_secs(60),
        "the allowed names' orders done",
        || async {
            let log = berth.log();
            let ordered = log.matches("ordering a certificate").count();
            let done = log.matches("certificate issued").count();
            (ordered == done).then_some(ordered)
        },
    )
    .await;
    assert!(
        orders <= 1 + flood_asks,
        "{orders} orders for {flood_asks} asks"
    );
    // The names stay: kept in on-demand.json for renewal after a restart.
    let saved = std::fs::read_to_string(certs.join("acme").join("on-demand.json")).unwrap();
    assert!(
        saved.contains(&good) && !saved.contains(&refused),
        "{saved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_left_by_a_stopped_berth_is_removed_by_the_next() {
    let env = Env::new("dnsleft").await;
    let zone = format!("{}.test", env.id);
    let app = env.host("app");
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let rig = DnsRig::start(&zone);
    let (bind, pebble, dir) = (&rig.bind, &rig.pebble, &rig.dir);
    let (http, _, tls) = rig.ports;
    let (script, calls) = hook(dir.path(), bind);
    // The hook puts the record in place, then hangs: berth is stopped then.
    std::fs::write(dir.path().join("slow"), "").unwrap();
    let acme = format!(
        "  challenge: dns-01\n  dns:\n    - zone: {zone}\n      provider: exec\n      command: {}\n      nameservers: [127.0.0.1:{}]\n      propagation_timeout: 20s\n",
        script.display(),
        bind.port
    );
    let cfg = rig.config(&env, &acme);
    let record = format!("_acme-challenge.{app}");
    let berth = Berth::start(&cfg, http).await;
    eventually(
        Duration::from_secs(30),
        "the record in the zone",
        || async { (!bind.txt(&record).await.is_empty()).then_some(()) },
    )
    .await;
    let journal = rig.certs.join("acme").join("dns-cleanup.json");
    assert!(
        std::fs::read_to_string(&journal).unwrap().contains(&record),
        "noted before it was put in place"
    );
    drop(berth);
    assert!(
        !bind.txt(&record).await.is_empty(),
        "left behind by the stop"
    );

    // The next berth removes it first thing, then orders as usual.
    std::fs::remove_file(dir.path().join("slow")).unwrap();
    let root = pebble.root(dir.path());
    let _berth = Berth::start(&cfg, http).await;
    let (code, _, _) = eventually(
        Duration::from_secs(60),
        "a certificate after all",
        || async { https_get(&app, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!(code, "200");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(log.matches("cleanup ").count() >= 2, "{log}");
    assert_eq!(bind.txt(&record).await, "");
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "[]");
}
