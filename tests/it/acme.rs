//! HTTPS with certificates from a real ACME server: pebble and
//! pebble-challtestsrv (every name resolves to 127.0.0.1), with pebble's
//! HTTP-01 validation pointed at berth's HTTP listener. Clients are curl.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::harness::{cli, eventually, free_port, never, Berth, Env, HttpClient, TempDir};

/// pebble + challtestsrv on free loopback ports, killed on drop.
pub struct Pebble {
    children: Vec<Child>,
    /// The CA that signed pebble's own HTTPS certificate (for the directory).
    ca: PathBuf,
    dir_url: String,
    mgmt: u16,
    /// challtestsrv's management API (fake DNS answers).
    chall_mgmt: u16,
    _dir: TempDir,
}

/// Where pebble validates: HTTP-01 on `http`, TLS-ALPN-01 on `tls`, and
/// the DNS server it asks (challtestsrv's when `None`).
#[derive(Default)]
pub struct PebbleOpts {
    pub http: u16,
    pub tls: Option<u16>,
    pub dns: Option<u16>,
    pub validity_secs: Option<u64>,
}

impl Pebble {
    pub fn start(http_port: u16, validity_secs: Option<u64>) -> Pebble {
        Pebble::start_with(PebbleOpts {
            http: http_port,
            validity_secs,
            ..PebbleOpts::default()
        })
    }

    pub fn start_with(opts: PebbleOpts) -> Pebble {
        let (http_port, validity_secs) = (opts.http, opts.validity_secs);
        let dir = TempDir::new();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.key"), leaf_key.serialize_pem()).unwrap();

        let (listen, mgmt, chall_dns, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let tls_port = opts.tls.unwrap_or_else(free_port);
        let dns = opts.dns.unwrap_or(chall_dns);
        let validity = validity_secs
            .map(|v| format!(",\n\"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{mgmt}",
"certificate": "{d}/leaf.pem", "privateKey": "{d}/leaf.key", "httpPort": {http_port}, "tlsPort": {tls_port},
"ocspResponderURL": "", "externalAccountBindingRequired": false{validity}}}}}"#,
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pebble.json"), config).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let chall = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{chall_dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &format!("127.0.0.1:{chall_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                &dir.path().join("pebble.json").display().to_string(),
            ])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict=false"])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let p = Pebble {
            children: vec![chall, pebble],
            ca,
            dir_url: format!("https://127.0.0.1:{listen}/dir"),
            mgmt,
            chall_mgmt,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Makes `host` resolve to `ip` for pebble's validation.
    async fn resolve(&self, host: &str, ip: &str) {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-f", "-X", "POST", "-d"])
            .arg(format!(r#"{{"host":"{host}","addresses":["{ip}"]}}"#))
            .arg(format!("http://127.0.0.1:{}/add-a", self.chall_mgmt))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "challtestsrv add-a failed");
    }

    /// pebble's issuing root, to verify what berth serves.
    pub fn root(&self, into: &Path) -> PathBuf {
        let out = Command::new("curl")
            .args(["-s", "--cacert", &self.ca.display().to_string()])
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .unwrap();
        let path = into.join("pebble-root.pem");
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    /// The directory URL and the CA of its HTTPS certificate.
    pub fn directory(&self) -> (&str, &Path) {
        (&self.dir_url, &self.ca)
    }

    /// berth's `acme:` and `tls:` config for this pebble.
    pub fn config(&self, tls_port: u16, certs: &Path) -> String {
        format!(
            "tls:\n  listen: 127.0.0.1:{tls_port}\n  certs_dir: {}\nacme:\n  email: test@example.com\n  directory: {}\n  ca_root: {}\n",
            certs.display(),
            self.dir_url,
            self.ca.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// curl over HTTPS with SNI `host`, resolved to loopback: (status, http version, body).
pub async fn https_get(
    host: &str,
    port: u16,
    root: Option<&Path>,
    path: &str,
) -> Result<(String, String, String), String> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-s",
        "-m",
        "5",
        "--http2",
        "-w",
        "\n%{http_code} %{http_version}",
    ])
    .args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
    match root {
        Some(r) => cmd.args(["--cacert", &r.display().to_string()]),
        None => cmd.arg("-k"),
    };
    let out = cmd
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Ok((code.to_string(), version.to_string(), body.to_string()))
}

/// The test config with TLS and ACME on, admin API on.
fn tls_config(env: &Env, http: u16, admin: u16, tls: u16, pebble: &Pebble, certs: &Path) -> String {
    env.config_admin(http, admin, "")
        .replace("tls:\n  listen: \"off\"\n", &pebble.config(tls, certs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_issued_served_by_sni_and_reused_after_restart() {
    let env = Env::new("acme").await;
    let (app, api) = (env.host("app"), env.host("api"));
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let api_id = env
        .run("api", &["--label", &format!("berth.host={api}")])
        .await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, None);
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let cfg = tls_config(&env, http, admin, tls, &pebble, &certs);
    let root = pebble.root(dir.path());

    let berth = Berth::start(&cfg, http).await;
    // 1. Issued, verifies against pebble's root, HTTP/2 negotiated.
    let (code, version, body) = eventually(
        Duration::from_secs(30),
        "a certificate for the app host",
        || async { https_get(&app, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!((code.as_str(), version.as_str()), ("200", "2"), "{body}");
    // 2. Each host its own certificate; SNI picks it.
    let (code, _, body) = eventually(
        Duration::from_secs(30),
        "a certificate for the api host",
        || async { https_get(&api, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!(code, "200");
    assert!(body.starts_with(&api_id[..12]), "{body}");
    // An unknown name gets the default certificate (not pebble's) and a 404.
    assert!(
        https_get(&env.host("nobody"), tls, Some(&root), "/")
            .await
            .is_err(),
        "default cert must not verify"
    );
    let (code, _, _) = https_get(&env.host("nobody"), tls, None, "/")
        .await
        .unwrap();
    assert_eq!(code, "404");
    // 7. Plain HTTP to a TLS host: 308 to https; the challenge path is not redirected.
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            &format!("Host: {app}"),
        ])
        .arg(format!("http://127.0.0.1:{http}/some/path?q=1"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out, format!("308 https://{app}:{tls}/some/path?q=1"));
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Host: {app}"),
        ])
        .arg(format!(
            "http://127.0.0.1:{http}/.well-known/acme-challenge/unknown-token"
        ))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // The state is visible through the API.
    let certs_out = cli(&format!("127.0.0.1:{admin}"), &["certs"]).await;
    assert_eq!(certs_out.0, 0, "{}", certs_out.2);
    assert!(
        certs_out.1.contains(&app) && certs_out.1.contains("acme"),
        "{}",
        certs_out.1
    );
    let issued = berth.log().matches("certificate issued").count();
    assert_eq!(issued, 2, "one order per host");
    drop(berth);

    // 3. Restarted: certificates come from disk, no new order.
    let key_mode = std::fs::metadata(certs.join("acme").join(format!("{app}.key"))).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    let berth = Berth::start(&cfg, http).await;
    let (code, _, _) = eventually(Duration::from_secs(10), "HTTPS after restart", || async {
        https_get(&app, tls, Some(&root), "/").await.ok()
    })
    .await;
    assert_eq!(code, "200");
    berth
        .wait_log("certificate loaded from disk", Duration::from_secs(5))
        .await;
    // The ACME manager has decided for both hosts once it said so for each.
    for host in [&app, &api] {
        eventually(
            Duration::from_secs(10),
            &format!("the ACME manager's decision for {host}"),
            || async {
                let n =
                    berth.count_lines(&["certificate current: nothing to order", host.as_str()]);
                (n > 0).then_some(())
            },
        )
        .await;
    }
    assert!(
        !berth.log().contains("ordering a certificate"),
        "nothing is ordered again:\n{}",
        berth.log()
    );

    // 6. A corrupt certificate on disk: a clear error, a new order.
    drop(berth);
    std::fs::write(
        certs.join("acme").join(format!("{app}.crt")),
        "not a certificate",
    )
    .unwrap();
    let berth = Berth::start(&cfg, http).await;
    berth
        .wait_log("stored certificate unusable", Duration::from_secs(5))
        .await;
    eventually(
        Duration::from_secs(30),
        "a new certificate for the corrupt one",
        || async {
            let (code, _, _) = https_get(&app, tls, Some(&root), "/").await.ok()?;
            (code == "200").then_some(())
        },
    )
    .await;
    assert_eq!(
        https_get(&api, tls, Some(&root), "/").await.unwrap().0,
        "200",
        "the other host was unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_validation_backs_off_and_harms_no_other_host() {
    let env = Env::new("acmefail").await;
    let (good, bad) = (env.host("good"), env.host("bad"));
    env.run("good", &["--label", &format!("berth.host={good}")])
        .await;
    env.run("bad", &["--label", &format!("berth.host={bad}")])
        .await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, None);
    // The bad host resolves, for the CA, to an address where berth does not listen.
    pebble.resolve(&bad, "127.0.0.2").await;
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let root = pebble.root(dir.path());
    let berth = Berth::start(&tls_config(&env, http, admin, tls, &pebble, &certs), http).await;
    berth
        .wait_log("certificate order failed", Duration::from_secs(30))
        .await;
    // The other host gets its certificate all the same.
    let (code, _, _) = eventually(
        Duration::from_secs(30),
        "the good host's certificate",
        || async { https_get(&good, tls, Some(&root), "/").await.ok() },
    )
    .await;
    assert_eq!(code, "200");
    // The error and the next attempt are visible.
    let (code, out, err) = cli(&format!("127.0.0.1:{admin}"), &["certs"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&bad))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("validation failed") && line.contains(" 1 "),
        "{line}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(&good))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("acme") && !line.contains("validation failed"),
        "{line}"
    );
    // Backing off: watched for 5 s, no second order for the bad host (the
    // first wait is 24-36 s); plain HTTP keeps serving it.
    let orders = || berth.count_lines(&["ordering a certificate", &bad]);
    assert_eq!(orders(), 1, "{}", berth.log());
    never(
        Duration::from_secs(5),
        "a second order for the bad host while backing off",
        || async { (orders() > 1).then(|| berth.log()) },
    )
    .await;
    let r = HttpClient::new().get(http, &bad, "/").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificate_is_renewed_without_a_failed_request() {
    let env = Env::new("renew").await;
    let app = env.host("app");
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let (http, admin, tls) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, Some(30));
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let root = pebble.root(dir.path());
    let berth = Berth::start(&tls_config(&env, http, admin, tls, &pebble, &certs), http).await;
    eventually(Duration::from_secs(30), "the first certificate", || async {
        let (code, _, _) = https_get(&app, tls, Some(&root), "/").await.ok()?;
        (code == "200").then_some(())
    })
    .await;
    // New connections (new handshakes) back to back past the first
    // certificate's expiry: renewal (due after 20 s) must swap it in first.
    let until = std::time::Instant::now() + Duration::from_secs(33);
    let (mut ok, mut failed) = (0, Vec::new());
    while std::time::Instant::now() < until {
        match https_get(&app, tls, Some(&root), "/").await {
            Ok((code, _, _)) if code == "200" => ok += 1,
            other => failed.push(format!("{other:?}")),
        }
    }
    println!(
        "{ok} HTTPS requests across the renewal, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    let log = berth.log();
    assert!(
        log.matches("certificate issued").count() >= 2,
        "renewed:\n{log}"
    );
    assert!(log.contains("renewal=true"), "{log}");
}

/// A self-signed certificate for `name`, written as `<dir>/<stem>.crt|.key`.
fn write_pair(dir: &Path, stem: &str, name: &str) -> String {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{stem}.crt")), ck.cert.pem()).unwrap();
    ck.cert.pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_picked_up_when_they_change() {
    let env = Env::new("files").await;
    let app = env.host("app");
    env.run("app", &["--label", &format!("berth.host={app}")])
        .await;
    let (http, tls) = (free_port(), free_port());
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let cfg = env.config(http, "").replace(
        "tls:\n  listen: \"off\"\n",
        &format!(
            "tls:\n  listen: 127.0.0.1:{tls}\n  certs_dir: {}\n",
            certs.display()
        ),
    );
    let berth = Berth::start(&cfg, http).await;
    for round in ["first", "second"] {
        let pem = write_pair(&certs, "app", &app);
        let trust = dir.path().join(format!("{round}.pem"));
        std::fs::write(&trust, pem).unwrap();
        // Only the certificate just written verifies: the swap happened.
        eventually(
            Duration::from_secs(10),
            &format!("the {round} certificate served"),
            || async {
                let (code, _, _) = https_get(&app, tls, Some(&trust), "/").await.ok()?;
                (code == "200").then_some(())
            },
        )
        .await;
    }
    // A broken pair is skipped; what was served stays.
    let skipped = || berth.count_lines(&["certificate files not usable; skipped", "app.crt"]);
    let before = skipped();
    std::fs::write(certs.join("app.crt"), "garbage").unwrap();
    eventually(
        Duration::from_secs(10),
        "the broken pair to be skipped",
        || async { (skipped() > before).then_some(()) },
    )
    .await;
    let trust = dir.path().join("second.pem");
    assert_eq!(
        https_get(&app, tls, Some(&trust), "/").await.unwrap().0,
        "200"
    );
}
