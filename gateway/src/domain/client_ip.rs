//! Who the client is, for per-IP limits: which `X-Forwarded-For` entry to believe, and the key under
//! which an address spends its budget. Pure: the HTTP layer reads the headers and hands the entries
//! here, in order.
//!
//! The rule is the one proxies themselves follow (nginx's `real_ip_recursive`): start at the TCP peer
//! and walk the chain from the right while the hop is a trusted proxy. Every entry right of an
//! untrusted one was appended by a trusted proxy and is true; everything left of it may be written by
//! the client. An entry that cannot be read ends the walk *at the hop that wrote it*: skipping it
//! would step over it into the part the client controls, letting `X-Forwarded-For: <victim>, junk`
//! spend the victim's budget. Clients that arrive with unreadable entries so share their proxy's
//! budget: a few honest clients are limited too much instead of an attacker choosing its key.
//!
//! Only `X-Forwarded-For` is read, never RFC 7239 `Forwarded`: ingresses and load balancers write the
//! former, and reading two headers that may disagree would let a client pick whichever suits it.

use std::net::{IpAddr, Ipv6Addr};

use super::ip_range::IpRange;

/// The client's address: the TCP `peer` unless it is a trusted proxy, then the first address, walking
/// `forwarded` (every `X-Forwarded-For` entry of every such header, in order) from the right, that is
/// not a trusted proxy. When the chain holds only trusted proxies, its left-most entry; when it holds
/// an unreadable entry, the trusted hop that appended it.
pub fn client_ip<'a>(peer: IpAddr, forwarded: impl DoubleEndedIterator<Item = &'a str>, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    let mut client = peer.to_canonical();
    for entry in forwarded.rev() {
        if !is_trusted(client) {
            break;
        }
        match parse_entry(entry) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`, with surrounding whitespace. Anything else (`unknown`,
/// obfuscated names, an empty entry, zone ids) is `None`. IPv4-mapped IPv6 addresses are IPv4.
pub fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let address = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else {
        // Only IPv4 takes a port without brackets: in `2001:db8::1:443` the port cannot be told apart.
        let (host, port) = entry.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(address.to_canonical())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// The key under which `ip` spends a per-IP budget. An IPv4 address is its own key. IPv6 addresses
/// are counted per /64: that is the smallest block ISPs assign to one subscriber, and a host picks
/// any of its 2^64 addresses at will (privacy addresses), so one client per address would mean no
/// limit at all. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64));
            format!("{network}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().expect("range")).collect()
    }

    fn from(peer: &str, xff: &str, trusted: &[IpRange]) -> IpAddr {
        client_ip(ip(peer), xff.split(','), trusted)
    }

    #[test]
    fn entries_are_read_with_ports_brackets_and_whitespace() {
        for (entry, expected) in [
            ("1.2.3.4", "1.2.3.4"),
            (" 1.2.3.4 ", "1.2.3.4"),
            ("1.2.3.4:5678", "1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("\t[2001:db8::1]:443 ", "2001:db8::1"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("[::ffff:192.0.2.7]:80", "192.0.2.7"),
        ] {
            assert_eq!(parse_entry(entry), Some(ip(expected)), "{entry}");
        }
        for junk in [
            "",
            "unknown",
            "_hidden",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "1.2.3.4:+80",
            "[2001:db8::1",
            "[2001:db8::1]443",
            "[1.2.3.4]",
            "fe80::1%eth0",
            "1.2.3.4 5.6.7.8",
            "example.com:80",
        ] {
            assert_eq!(parse_entry(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = ranges(&["10.0.0.0/8"]);
        let spoofed = "1.1.1.1, 203.0.113.7, 10.0.0.9";
        assert_eq!(from("10.0.0.5", spoofed, &trusted), ip("203.0.113.7"));
        assert_eq!(
            from("198.51.100.1", spoofed, &trusted),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        assert_eq!(client_ip(ip("10.0.0.5"), std::iter::empty(), &trusted), ip("10.0.0.5"));
        assert_eq!(
            from("10.0.0.5", spoofed, &[]),
            ip("10.0.0.5"),
            "nothing trusted by default"
        );
    }

    #[test]
    fn entries_with_ports_are_the_client_not_skipped() {
        let trusted = ranges(&["127.0.0.1"]);
        assert_eq!(
            from("127.0.0.1", "198.51.100.9, 203.0.113.7:51234", &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(from("127.0.0.1", "[2001:db8::7]:443", &trusted), ip("2001:db8::7"));
    }

    #[test]
    fn an_unreadable_entry_stops_at_the_proxy_that_wrote_it() {
        let trusted = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        // The client wrote `victim, garbage`; the proxy passed it on: the proxy's budget, never the victim's.
        assert_eq!(from("127.0.0.1", "198.51.100.1, garbage", &trusted), ip("127.0.0.1"));
        assert_eq!(
            from("127.0.0.1", "198.51.100.1, ", &trusted),
            ip("127.0.0.1"),
            "empty entry"
        );
        // Behind two proxies, the inner one wrote the junk: the inner proxy is the client.
        assert_eq!(
            from("127.0.0.1", "198.51.100.1, unknown, 10.0.0.3", &trusted),
            ip("10.0.0.3")
        );
        // Junk left of the real client is the client's own writing and does not matter.
        assert_eq!(from("127.0.0.1", "junk, 203.0.113.7", &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_names_its_leftmost_entry() {
        let trusted = ranges(&["10.0.0.0/8"]);
        assert_eq!(from("10.0.0.1", "10.1.1.1, 10.0.0.2", &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn mapped_peers_and_ranges_are_ipv4() {
        let trusted = ranges(&["127.0.0.1"]);
        assert_eq!(from("::ffff:127.0.0.1", "203.0.113.7", &trusted), ip("203.0.113.7"));
        assert_eq!(from("::ffff:198.51.100.1", "203.0.113.7", &trusted), ip("198.51.100.1"));
    }

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_clients_their_address() {
        assert_eq!(limit_key(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), "2001:db8:1:2::/64");
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), limit_key(ip("2001:db8:1:2::1")));
    }
}
