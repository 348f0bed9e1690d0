//! `ports:` and `expose:` entries: compose's short strings and long
//! mappings both become a [`Port`]. Errors are messages naming the value;
//! the caller adds the key and position.

use std::net::IpAddr;

use super::model::{Port, Pos};
use super::project::{pos, FieldError};
use super::raw;

/// `"80"`, `"8080:80"`, `"127.0.0.1:8080:80"`, `"[::1]:8080:80"`,
/// `"127.0.0.1::80"`, each with an optional `/tcp` or `/udp`.
pub(super) fn short(spec: &str) -> Result<Port, String> {
    let (addr, protocol) = split_protocol(spec)?;
    let (host_ip, ports) = match addr.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6
                .split_once("]:")
                .ok_or_else(|| format!("{spec:?} is not [IPv6]:published:target"))?;
            (Some(ip), rest)
        }
        None => match addr.matches(':').count() {
            0 | 1 => (None, addr),
            2 => addr
                .split_once(':')
                .map(|(ip, rest)| (Some(ip), rest))
                .ok_or_else(|| format!("{spec:?} is not ip:published:target"))?,
            _ => {
                return Err(format!(
                    "{spec:?} has too many ':'; write an IPv6 address in brackets, \
                     [::1]:8080:80"
                ))
            }
        },
    };
    let (published, target) = match ports.split_once(':') {
        Some((published, target)) => (Some(published), target),
        None => (None, ports),
    };
    let host_ip = host_ip.map(|ip| ip_address(ip, spec)).transpose()?;
    let published = match published {
        // `127.0.0.1::80`: the engine picks the host port.
        Some("") | None => None,
        Some(p) => Some(number(p, spec)?),
    };
    Ok(Port {
        host_ip,
        published,
        target: number(target, spec)?,
        protocol,
    })
}

/// The long form: `target` required, `published` a number or a string.
pub(super) fn long(spec: &raw::Port) -> Result<Port, FieldError> {
    let field = |name: &'static str, at: Pos| move |message| FieldError::at(name, at, message);
    let target = spec
        .target
        .as_ref()
        .ok_or_else(|| FieldError::whole("target is missing"))?;
    let target = number(&target.value, &target.value).map_err(field("target", pos(target)))?;
    let published = match &spec.published {
        Some(p) if !p.value.is_empty() => {
            Some(number(&p.value, &p.value).map_err(field("published", pos(p)))?)
        }
        _ => None,
    };
    let host_ip = match &spec.host_ip {
        Some(ip) => Some(ip_address(&ip.value, &ip.value).map_err(field("host_ip", pos(ip)))?),
        None => None,
    };
    let protocol = match &spec.protocol {
        Some(p) => protocol(&p.value).map_err(field("protocol", pos(p)))?,
        None => "tcp".to_owned(),
    };
    if let Some(mode) = &spec.mode {
        // Swarm's routing mesh vs. the host's port: on one engine both
        // mean the host's port.
        if !matches!(mode.value.as_str(), "ingress" | "host") {
            return Err(field("mode", pos(mode))(format!(
                "{:?} is not a port mode (ingress, host)",
                mode.value
            )));
        }
    }
    Ok(Port {
        host_ip,
        published,
        target,
        protocol,
    })
}

/// An `expose:` entry, `80` or `80/udp`, normalised so tcp is implied.
pub(super) fn expose(spec: &str) -> Result<String, String> {
    let (port, protocol) = split_protocol(spec)?;
    let port = number(port, spec)?;
    Ok(if protocol == "tcp" {
        port.to_string()
    } else {
        format!("{port}/{protocol}")
    })
}

fn split_protocol(spec: &str) -> Result<(&str, String), String> {
    match spec.rsplit_once('/') {
        Some((addr, p)) => Ok((addr, protocol(p)?)),
        None => Ok((spec, "tcp".to_owned())),
    }
}

fn protocol(p: &str) -> Result<String, String> {
    match p.to_ascii_lowercase().as_str() {
        p @ ("tcp" | "udp") => Ok(p.to_owned()),
        _ => Err(format!("{p:?} is not a protocol berth supports (tcp, udp)")),
    }
}

/// A port number; `within` is the whole entry, quoted when it says more.
fn number(text: &str, within: &str) -> Result<u16, String> {
    let context = if text == within {
        String::new()
    } else {
        format!(" (in {within:?})")
    };
    if text.contains('-') && text.split('-').all(|p| p.parse::<u16>().is_ok()) {
        return Err(format!(
            "port ranges like {text:?} are not supported{context}; list the ports one by one"
        ));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{text:?} is not a port number (1-65535){context}")),
    }
}

fn ip_address(text: &str, within: &str) -> Result<String, String> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(ip.to_string()),
        Err(_) if text == within => Err(format!("{text:?} is not an IP address")),
        Err(_) => Err(format!("{text:?} is not an IP address (in {within:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(host_ip: Option<&str>, published: Option<u16>, target: u16, protocol: &str) -> Port {
        Port {
            host_ip: host_ip.map(str::to_owned),
            published,
            target,
            protocol: protocol.to_owned(),
        }
    }

    #[test]
    fn short_forms() {
        for (spec, want) in [
            ("80", port(None, None, 80, "tcp")),
            ("8080:80", port(None, Some(8080), 80, "tcp")),
            (
                "127.0.0.1:8080:80",
                port(Some("127.0.0.1"), Some(8080), 80, "tcp"),
            ),
            ("127.0.0.1::80", port(Some("127.0.0.1"), None, 80, "tcp")),
            ("[::1]:8080:80", port(Some("::1"), Some(8080), 80, "tcp")),
            ("8080:80/udp", port(None, Some(8080), 80, "udp")),
            ("53/UDP", port(None, None, 53, "udp")),
        ] {
            assert_eq!(short(spec), Ok(want), "{spec}");
        }
    }

    #[test]
    fn short_errors_name_the_value() {
        for (spec, needle) in [
            (
                "80a:80",
                r#""80a" is not a port number (1-65535) (in "80a:80")"#,
            ),
            ("0", r#""0" is not a port number"#),
            ("70000", r#""70000" is not a port number"#),
            ("8000-8010:8000-8010", r#"port ranges like "8000-8010""#),
            ("80/sctp", r#""sctp" is not a protocol"#),
            ("localhost:80:80", r#""localhost" is not an IP address"#),
            ("::1:80:80", "IPv6 address in brackets"),
        ] {
            let err = short(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn expose_entries() {
        assert_eq!(expose("80"), Ok("80".to_owned()));
        assert_eq!(expose("80/tcp"), Ok("80".to_owned()));
        assert_eq!(expose("53/udp"), Ok("53/udp".to_owned()));
        assert!(expose("http").unwrap_err().contains(r#""http""#));
    }
}
