//! Who the client is: the peer address, or, when the peer is one of
//! `proxy.trusted_proxies` (a load balancer or CDN in front of berth), the
//! address it says it forwarded for. X-Forwarded-For is read right to left,
//! skipping trusted hops: the first untrusted address is the client, since
//! anything further left the client could have written itself.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client's address for policies and `X-Real-IP`.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let Some(list) = forwarded_for.and_then(|v| std::str::from_utf8(v).ok()) else {
        return peer;
    };
    let mut client = peer;
    for hop in list.rsplit(',') {
        let Some(ip) = parse_hop(hop.trim()) else {
            // A hop berth cannot read: the last one it could is as far as
            // the chain can be followed.
            break;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4 address seen on an IPv6 socket (`::ffff:1.2.3.4`) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443` or `1.2.3.4:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

/// Whether `ip` is allowed by the route's lists: a deny entry wins, then
/// with an allow-list the address must be on it.
pub fn allowed(ip: IpAddr, allow: &[IpNet], deny: &[IpNet]) -> bool {
    let ip = canonical(ip);
    if deny.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = Some(&b"203.0.113.7, 10.0.0.5"[..]);
        type Case<'a> = (&'a str, Option<&'a [u8]>, &'a [IpNet], &'a str);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // No trusted proxies: the peer, whatever the header says.
            ("198.51.100.1", xff, &[], "198.51.100.1"),
            // An untrusted peer: its header is ignored.
            ("198.51.100.1", xff, &trusted, "198.51.100.1"),
            // A trusted peer: right to left, past trusted hops.
            ("10.0.0.1", xff, &trusted, "203.0.113.7"),
            ("10.0.0.1", Some(b"1.1.1.1, 203.0.113.7"), &trusted, "203.0.113.7"),
            ("10.0.0.1", None, &trusted, "10.0.0.1"),
            ("10.0.0.1", Some(b"10.0.0.9, 10.0.0.8"), &trusted, "10.0.0.9"),
            ("10.0.0.1", Some(b"garbage, 203.0.113.7"), &trusted, "203.0.113.7"),
            ("10.0.0.1", Some(b"203.0.113.7, garbage"), &trusted, "10.0.0.1"),
            ("10.0.0.1", Some(b"[2001:db8::1]:443"), &trusted, "2001:db8::1"),
            ("::ffff:10.0.0.1", Some(b"203.0.113.9"), &trusted, "203.0.113.9"),
        ];
        for (peer, header, trusted, want) in cases {
            assert_eq!(
                client_ip(ip(peer), *header, trusted),
                ip(want),
                "{peer} {header:?}"
            );
        }
    }

    #[test]
    fn deny_wins_then_allow_list() {
        let allow = nets(&["127.0.0.1/32", "192.168.0.0/16"]);
        let deny = nets(&["192.168.66.0/24"]);
        assert!(allowed(ip("127.0.0.1"), &allow, &deny));
        assert!(allowed(ip("::ffff:127.0.0.1"), &allow, &deny));
        assert!(!allowed(ip("127.0.0.2"), &allow, &deny));
        assert!(allowed(ip("192.168.1.1"), &allow, &deny));
        assert!(!allowed(ip("192.168.66.1"), &allow, &deny));
        assert!(allowed(ip("8.8.8.8"), &[], &[]));
        assert!(!allowed(ip("192.168.66.1"), &[], &deny));
    }
}
