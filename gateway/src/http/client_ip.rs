//! The client's IP address for per-IP limits: the `X-Forwarded-For` entries of every such header, in
//! order, handed to the rule in `domain::client_ip` (which entries are believed, and why).

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::domain::client_ip;
use crate::domain::ip_range::IpRange;

/// The client of a request from `peer`; see [`client_ip::client_ip`].
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        // A value that is not visible ASCII is one unreadable entry: skipping it would step past it.
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .collect();
    client_ip::client_ip(peer, entries.into_iter(), trusted)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn several_headers_are_one_list_in_order() {
        let trusted = ["127.0.0.1".parse().expect("range")];
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7:4000"));
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn an_unreadable_header_value_is_not_skipped() {
        let trusted = ["127.0.0.1".parse().expect("range")];
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes"),
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &trusted), ip("127.0.0.1"));
    }
}
