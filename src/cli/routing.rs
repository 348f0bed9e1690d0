//! What berth serves and why: `routes`, `backends`, `problems`, `certs`
//! and the internal `dns` zone, each read from the admin API.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{or_dash, print_json, table, Exit, Outcome};
use crate::api::host::RouteView;
use crate::api::mode::ModeView;
use crate::api::{BackendView, DnsView};
use crate::client::Client;
use crate::plan::dns::NameView;
use crate::plan::Problem;
use crate::tls::acme::HostStatus;

/// Every routed container: its backend state, Docker health, last check
/// result, addresses, requests in flight and autoheal restarts.
pub async fn backends(client: Client, json: bool) -> Outcome {
    let list: Vec<BackendView> = client.get("/api/backends").await?;
    if json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.service.clone(),
                b.state.to_string(),
                or_dash(b.health.as_deref()),
                or_dash(b.addrs.first().map(String::as_str)),
                b.inflight.to_string(),
                b.restarts.to_string(),
                or_dash(b.check.as_deref()),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "SERVICE",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "INFLIGHT",
        "RESTARTS",
        "LAST CHECK",
    ];
    print!("{}", table(&headers, &rows));
    Ok(Exit::Done)
}

/// The routing table: host, path, TLS and the backends ready for it.
pub async fn routes(client: Client, json: bool) -> Outcome {
    let list: Vec<RouteView> = client.get("/api/routes").await?;
    if json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let backends: Vec<String> = r
                .backends
                .iter()
                .map(|b| format!("{} ({})", b.name, b.addr))
                .collect();
            vec![
                r.host.clone(),
                r.path.clone(),
                if r.tls { "auto" } else { "off" }.into(),
                if backends.is_empty() {
                    "(none ready: 503)".into()
                } else {
                    backends.join(", ")
                },
                if r.policies.is_empty() {
                    "-".into()
                } else {
                    r.policies.join("; ")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["HOST", "PATH", "TLS", "READY BACKENDS", "POLICIES"],
            &rows
        )
    );
    Ok(Exit::Done)
}

/// Label problems; exit 1 when there is any.
pub async fn problems(client: Client, json: bool) -> Outcome {
    let list: Vec<Problem> = client.get("/api/problems").await?;
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        println!("no problems");
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                let hint = p
                    .hint
                    .as_ref()
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                vec![
                    p.container.clone(),
                    format!("{}={:?}", p.key, p.value),
                    format!("{}{hint}", p.message),
                ]
            })
            .collect();
        print!("{}", table(&["CONTAINER", "LABEL", "PROBLEM"], &rows));
    }
    Ok(if list.is_empty() {
        Exit::Done
    } else {
        Exit::Failed
    })
}

/// Certificates by host: where each comes from, when it expires, when the
/// next order is tried and why the last one failed.
pub async fn certs(client: Client) -> Outcome {
    let list: Vec<HostStatus> = client.get("/api/certificates").await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows: Vec<Vec<String>> = list.iter().map(|c| cert_row(c, now)).collect();
    let headers = [
        "HOST",
        "SOURCE",
        "ISSUER",
        "CHALLENGE",
        "KEY",
        "EXPIRES",
        "NEXT TRY",
        "FAILURES",
        "ERROR",
    ];
    print!("{}", table(&headers, &rows));
    Ok(Exit::Done)
}

/// `berth certs renew HOST`: asks for a new certificate now.
pub async fn renew(client: Client, host: String) -> Outcome {
    let path = format!("/api/certificates/{}/renew", host.trim());
    let s: HostStatus = client.post(&path).await?;
    println!(
        "{}: renewal queued (berth certs shows the result; the served certificate stays until the new one is issued)",
        s.host
    );
    Ok(Exit::Done)
}

fn cert_row(c: &HostStatus, now: u64) -> Vec<String> {
    let error = match &c.not_eligible {
        Some(why) => format!("not ordered: {why}"),
        None => or_dash(c.last_error.as_deref()),
    };
    vec![
        c.host.clone(),
        match (c.source.as_deref(), c.on_demand) {
            (Some(s), true) => format!("{s} (on demand)"),
            (s, _) => or_dash(s),
        },
        or_dash(c.issuer.as_deref()),
        or_dash(c.challenge.as_deref()),
        or_dash(c.key_type.as_deref()),
        until(c.valid_until, now),
        until(c.next_attempt, now),
        c.failures.to_string(),
        error,
    ]
}

/// A unix time as seen from `now`: `in 2h05m`, `expired`, or `-`.
fn until(t: Option<u64>, now: u64) -> String {
    match t {
        Some(t) if t >= now => {
            let left = t - now;
            format!("in {}h{:02}m", left / 3600, left % 3600 / 60)
        }
        Some(_) => "expired".into(),
        None => "-".into(),
    }
}

/// The internal zone: each name, the addresses it answers (Ready
/// containers only), and its containers.
pub async fn dns(client: Client) -> Outcome {
    let zone: DnsView = client.get("/api/dns").await?;
    let rows: Vec<Vec<String>> = zone.names.iter().map(dns_row).collect();
    print!("{}", table(&["NAME", "ANSWERS", "CONTAINERS"], &rows));
    Ok(Exit::Done)
}

fn dns_row(n: &NameView) -> Vec<String> {
    let answers = if n.ready.is_empty() {
        "(nothing ready: NODATA)".to_string()
    } else {
        let ips: Vec<String> = n.ready.iter().map(ToString::to_string).collect();
        ips.join(" ")
    };
    let containers: Vec<String> = n
        .containers
        .iter()
        .map(|c| match c.ready {
            true => c.container.clone(),
            false => format!("{} (not ready)", c.container),
        })
        .collect();
    vec![n.name.clone(), answers, containers.join(", ")]
}

/// `berth maintenance on|off SERVICE`, `berth pause SERVICE`, `berth resume SERVICE`.
pub enum ModeChange {
    Maintenance { on: bool, message: Option<String> },
    Pause { max: Option<String> },
    Resume,
}

pub async fn mode(
    client: Client,
    service: &str,
    project: Option<String>,
    change: ModeChange,
) -> Outcome {
    use crate::api::mode::{MaintenanceBody, PauseBody, ResumeBody};
    let path = |what: &str| format!("/api/services/{}/{what}", crate::client::encode(service));
    let view: ModeView = match change {
        ModeChange::Maintenance { on, message } => {
            let body = MaintenanceBody {
                project,
                on,
                message,
            };
            client
                .send_json("POST", &path("maintenance"), &body)
                .await?
        }
        ModeChange::Pause { max } => {
            let body = PauseBody { project, max };
            client.send_json("POST", &path("pause"), &body).await?
        }
        ModeChange::Resume => {
            let body = ResumeBody { project };
            client.send_json("POST", &path("resume"), &body).await?
        }
    };
    println!("{}", describe_mode(&view));
    Ok(Exit::Done)
}

/// Every service in maintenance or paused.
pub async fn modes(client: Client, json: bool) -> Outcome {
    let list: Vec<ModeView> = client.get("/api/modes").await?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no service is in maintenance or paused");
    }
    for v in &list {
        println!("{}", describe_mode(v));
    }
    Ok(Exit::Done)
}

fn describe_mode(v: &ModeView) -> String {
    match v.mode.as_str() {
        "maintenance" => format!(
            "{}: in maintenance (503{})",
            v.service,
            v.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        "paused" => format!(
            "{}: paused, requests held up to {} ({} held now)",
            v.service,
            crate::names::format_duration(std::time::Duration::from_millis(
                v.max_ms.unwrap_or_default()
            )),
            v.held
        ),
        _ => format!("{}: serving", v.service),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::dns::TargetView;

    #[test]
    fn times_left() {
        for (t, want) in [
            (None, "-"),
            (Some(99), "expired"),
            (Some(100), "in 0h00m"),
            (Some(100 + 2 * 3600 + 5 * 60 + 59), "in 2h05m"),
            (Some(100 + 90 * 86400), "in 2160h00m"),
        ] {
            assert_eq!(until(t, 100), want, "{t:?}");
        }
    }

    #[test]
    fn cert_rows_say_why_not_ordered_before_the_last_error() {
        let c = HostStatus {
            host: "a.example".into(),
            source: Some("acme".into()),
            last_error: Some("validation failed".into()),
            failures: 1,
            ..HostStatus::default()
        };
        let row = cert_row(&c, 0);
        assert_eq!(
            row,
            [
                "a.example",
                "acme",
                "-",
                "-",
                "-",
                "-",
                "-",
                "1",
                "validation failed"
            ]
        );
        let issued = HostStatus {
            issuer: Some("zerossl".into()),
            challenge: Some("dns-01".into()),
            key_type: Some("ecdsa-p256".into()),
            on_demand: true,
            ..c.clone()
        };
        assert_eq!(
            cert_row(&issued, 0)[..5],
            [
                "a.example",
                "acme (on demand)",
                "zerossl",
                "dns-01",
                "ecdsa-p256"
            ]
        );
        let local = HostStatus {
            not_eligible: Some("localhost".into()),
            ..c
        };
        assert_eq!(cert_row(&local, 0)[8], "not ordered: localhost");
    }

    #[test]
    fn dns_rows_show_nodata_and_unready_containers() {
        let target = |name: &str, ready| TargetView {
            container: name.into(),
            project: None,
            ready,
            addrs: vec![],
        };
        let n = NameView {
            name: "web.internal".into(),
            ready: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
            containers: vec![target("w1", true), target("w2", false)],
        };
        assert_eq!(
            dns_row(&n),
            ["web.internal", "10.0.0.2 10.0.0.3", "w1, w2 (not ready)"]
        );
        let none = NameView {
            ready: vec![],
            containers: vec![],
            ..n
        };
        assert_eq!(dns_row(&none)[1], "(nothing ready: NODATA)");
    }
}
