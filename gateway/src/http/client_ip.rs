//! The client's IP address for per-IP limits. Behind a load balancer or ingress every connection
//! comes from the proxy, so the address in `X-Forwarded-For` is used, but only when the peer is a
//! configured trusted proxy: anyone else could write any address there.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::domain::ip_range::IpRange;

/// The right-most address of `X-Forwarded-For` that is not a trusted proxy, when `peer` is one;
/// otherwise `peer` itself.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded.into_iter().rev().find(|ip| !is_trusted(*ip)).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", xff.parse().expect("header"));
        headers
    }

    #[test]
    fn forwarded_for_is_used_only_from_trusted_proxies() {
        let trusted = ["10.0.0.0/8".parse().expect("range")];
        let spoofed = headers("1.1.1.1, 203.0.113.7, 10.0.0.9");
        assert_eq!(client_ip(ip("10.0.0.5"), &spoofed, &trusted), ip("203.0.113.7"));
        assert_eq!(
            client_ip(ip("198.51.100.1"), &spoofed, &trusted),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        assert_eq!(client_ip(ip("10.0.0.5"), &HeaderMap::new(), &trusted), ip("10.0.0.5"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), &spoofed, &[]),
            ip("10.0.0.5"),
            "nothing trusted by default"
        );
    }
}
