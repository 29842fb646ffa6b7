//! The special-purpose address table: every IPv4 and IPv6 block that IANA's special-purpose
//! registries (RFC 6890 and its updates) set aside, plus what lies outside IPv6 global
//! unicast. Tenant traffic may reach none of them unless the operator allows it.
//!
//! Forms that embed an IPv4 address are handled so that none is a way around the table:
//! an IPv4-mapped address (`::ffff:a.b.c.d`) is judged as the IPv4 address it is (the
//! kernel connects to that address); NAT64, 6to4, Teredo and IPv4-compatible addresses are
//! refused outright, since the IPv4 address they lead to is chosen by whoever wrote them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One block of the table: its network and what it is for, in plain words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialBlock {
    pub net: IpNet,
    /// What the block is, as a customer reads it in an error: "loopback", "private (RFC 1918)".
    pub purpose: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, purpose: &'static str) -> SpecialBlock {
    SpecialBlock {
        net: IpNet::V4(match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
            Ok(n) => n,
            Err(_) => panic!("bad prefix length"),
        }),
        purpose,
    }
}

#[allow(clippy::too_many_arguments)]
const fn v6(segments: [u16; 8], len: u8, purpose: &'static str) -> SpecialBlock {
    let [a, b, c, d, e, f, g, h] = segments;
    SpecialBlock {
        net: IpNet::V6(
            match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
                Ok(n) => n,
                Err(_) => panic!("bad prefix length"),
            },
        ),
        purpose,
    }
}

/// IANA IPv4 Special-Purpose Address Registry, every entry, and the blocks that are not in
/// it but are not ordinary unicast either (multicast, class E).
pub const IPV4_SPECIAL: &[SpecialBlock] = &[
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791)"),
    v4(10, 0, 0, 0, 8, "private (RFC 1918)"),
    v4(100, 64, 0, 0, 10, "shared address space / CGNAT (RFC 6598)"),
    v4(127, 0, 0, 0, 8, "loopback"),
    v4(169, 254, 0, 0, 16, "link-local"),
    v4(172, 16, 0, 0, 12, "private (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(192, 0, 2, 0, 24, "documentation (TEST-NET-1)"),
    v4(192, 31, 196, 0, 24, "AS112-v4 (RFC 7535)"),
    v4(192, 52, 193, 0, 24, "AMT (RFC 7450)"),
    v4(192, 88, 99, 0, 24, "6to4 relay anycast (RFC 7526)"),
    v4(192, 168, 0, 0, 16, "private (RFC 1918)"),
    v4(192, 175, 48, 0, 24, "AS112 direct delegation (RFC 7534)"),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation (TEST-NET-2)"),
    v4(203, 0, 113, 0, 24, "documentation (TEST-NET-3)"),
    v4(224, 0, 0, 0, 4, "multicast"),
    v4(240, 0, 0, 0, 4, "reserved (RFC 1112)"),
    v4(255, 255, 255, 255, 32, "limited broadcast"),
];

/// IANA IPv6 Special-Purpose Address Registry, every entry, and the blocks outside it that
/// are not global unicast (unique local, link-local, site-local, multicast). Addresses
/// outside `2000::/3` that none of these name are refused as "not global unicast".
pub const IPV6_SPECIAL: &[SpecialBlock] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 (RFC 6052)"),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64 (RFC 8215)",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (RFC 6666)"),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "dummy prefix (RFC 9780)"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo (RFC 4380)"),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments (RFC 2928)",
    ),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking (RFC 5180)"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (RFC 3056)"),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation (RFC 9637)",
    ),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "SRv6 SIDs (RFC 9602)"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

/// IPv6 global unicast, the only IPv6 space tenant traffic may reach by default.
const IPV6_GLOBAL_UNICAST: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        Ok(n) => n,
        Err(_) => panic!("bad prefix length"),
    };

/// The IPv4 address an IPv4-mapped IPv6 address stands for; every other address as it is.
/// Sockets connect to the IPv4 address, so that is the one to judge (and to match against
/// an allow-list).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What makes `ip` special, or `None` for an ordinary public unicast address. The most
/// specific block wins, so `2001:2::1` reads as benchmarking, not IETF assignments.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    let ip = canonical(ip);
    let table = match ip {
        IpAddr::V4(_) => IPV4_SPECIAL,
        IpAddr::V6(_) => IPV6_SPECIAL,
    };
    let most_specific = table
        .iter()
        .filter(|b| b.net.contains(&ip))
        .max_by_key(|b| b.net.prefix_len());
    match (most_specific, ip) {
        (Some(b), _) => Some(b.purpose),
        (None, IpAddr::V6(v6)) if !IPV6_GLOBAL_UNICAST.contains(&v6) => {
            Some("not global unicast (reserved)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purpose(s: &str) -> Option<&'static str> {
        special_purpose(s.parse().unwrap())
    }

    #[test]
    fn every_ipv4_block_is_refused_at_both_ends() {
        for block in IPV4_SPECIAL {
            let IpNet::V4(net) = block.net else {
                unreachable!()
            };
            for ip in [net.network(), net.broadcast()] {
                assert!(
                    special_purpose(IpAddr::V4(ip)).is_some(),
                    "{ip} in {} ({})",
                    block.net,
                    block.purpose
                );
            }
        }
    }

    #[test]
    fn every_ipv6_block_is_refused_at_both_ends() {
        for block in IPV6_SPECIAL {
            let IpNet::V6(net) = block.net else {
                unreachable!()
            };
            for ip in [net.network(), net.broadcast()] {
                assert!(
                    special_purpose(IpAddr::V6(ip)).is_some(),
                    "{ip} in {} ({})",
                    block.net,
                    block.purpose
                );
            }
        }
    }

    #[test]
    fn well_known_addresses_name_their_purpose() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.20.30.40", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space / CGNAT (RFC 6598)"),
            ("100.127.255.255", "shared address space / CGNAT (RFC 6598)"),
            ("0.0.0.0", "\"this network\" (RFC 791)"),
            ("192.0.0.170", "IETF protocol assignments (RFC 6890)"),
            ("192.0.2.7", "documentation (TEST-NET-1)"),
            ("198.51.100.7", "documentation (TEST-NET-2)"),
            ("203.0.113.7", "documentation (TEST-NET-3)"),
            ("198.19.255.255", "benchmarking (RFC 2544)"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved (RFC 1112)"),
            ("255.255.255.255", "limited broadcast"),
            ("192.88.99.1", "6to4 relay anycast (RFC 7526)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local"),
            ("fc00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation (RFC 9637)"),
            ("2001:2::1", "benchmarking (RFC 5180)"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (RFC 4380)"),
            ("2001:10::1", "IETF protocol assignments (RFC 2928)"),
            ("100::1", "discard-only (RFC 6666)"),
            ("5f00::1", "SRv6 SIDs (RFC 9602)"),
            ("4000::1", "not global unicast (reserved)"),
            ("8000::1", "not global unicast (reserved)"),
        ];
        for (ip, want) in cases {
            assert_eq!(purpose(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn forms_that_embed_an_ipv4_address_are_no_way_around() {
        // IPv4-mapped: judged as the IPv4 address it stands for.
        assert_eq!(purpose("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(purpose("::ffff:10.0.0.1"), Some("private (RFC 1918)"));
        assert_eq!(purpose("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(purpose("::ffff:8.8.8.8"), None);
        // The rest are refused whatever they embed, public addresses included.
        assert_eq!(purpose("64:ff9b::7f00:1"), Some("NAT64 (RFC 6052)"));
        assert_eq!(purpose("64:ff9b::808:808"), Some("NAT64 (RFC 6052)"));
        assert_eq!(
            purpose("64:ff9b:1::a00:1"),
            Some("local-use NAT64 (RFC 8215)")
        );
        assert_eq!(purpose("2002:7f00:1::1"), Some("6to4 (RFC 3056)"));
        assert_eq!(purpose("2002:808:808::1"), Some("6to4 (RFC 3056)"));
        assert_eq!(purpose("::127.0.0.1"), Some("IPv4-compatible (deprecated)"));
        assert_eq!(purpose("::8.8.8.8"), Some("IPv4-compatible (deprecated)"));
    }

    #[test]
    fn ordinary_public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "52.216.0.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.0",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2600:1f18::1",
            "2a05:d018::1",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(purpose(ip), None, "{ip}");
        }
    }
}
