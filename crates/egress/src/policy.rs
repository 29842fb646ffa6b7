//! The operator's egress policy: the special-purpose table, minus what the operator allows.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::special::{canonical, special_purpose};

/// One entry of `COURIER_EGRESS_ALLOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every address of a network, on every port: `10.20.0.0/16`, `fd00:1::/64`.
    Net(IpNet),
    /// One address on one port: `127.0.0.1:3900`, `[::1]:3900`.
    Socket(SocketAddr),
}

impl FromStr for Allowed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allowed::Net(net.trunc()));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Allowed::Socket(SocketAddr::new(
                canonical(addr.ip()),
                addr.port(),
            )));
        }
        Err(format!(
            "`{s}` is neither a CIDR (10.20.0.0/16, fd00::/8) nor an address with a port \
             (127.0.0.1:3900, [::1]:3900)"
        ))
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Net(n) => write!(f, "{n}"),
            Allowed::Socket(s) => write!(f, "{s}"),
        }
    }
}

impl Allowed {
    fn admits(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        match self {
            Allowed::Net(net) => net.contains(&ip),
            Allowed::Socket(s) => s.ip() == ip && s.port() == addr.port(),
        }
    }
}

/// Where connections made on a tenant's behalf may go. Cheap to clone (share it in an
/// `Arc` where many clients hold it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `COURIER_ALLOW_PRIVATE_ENDPOINTS=true`: every address, for local development.
    allow_everything: bool,
    /// `COURIER_EGRESS_ALLOW`.
    allowed: Vec<Allowed>,
}

/// A connection the policy refused. Its text names the host the tenant gave and the kind
/// of address it led to, never the address itself (a tenant must not learn what names
/// resolve to inside the operator's network) and never anything the host answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{host}` leads to a special-purpose address ({purpose}), which deliveries may not reach \
     (an operator can allow it with COURIER_EGRESS_ALLOW)"
)]
pub struct EgressRefused {
    pub host: String,
    pub purpose: &'static str,
    /// The refused address, for the operator's logs only.
    pub addr: SocketAddr,
}

impl EgressPolicy {
    /// The default: public unicast only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Everything allowed (`COURIER_ALLOW_PRIVATE_ENDPOINTS=true`).
    pub fn allow_everything() -> Self {
        Self {
            allow_everything: true,
            allowed: Vec::new(),
        }
    }

    /// From the two settings: `allow` is `COURIER_EGRESS_ALLOW` (comma-separated entries,
    /// empty for none); `allow_private` is `COURIER_ALLOW_PRIVATE_ENDPOINTS`.
    pub fn from_settings(allow: &str, allow_private: bool) -> Result<Self, String> {
        let allowed = allow
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Allowed>, String>>()
            .map_err(|e| format!("COURIER_EGRESS_ALLOW: {e}"))?;
        Ok(Self {
            allow_everything: allow_private,
            allowed,
        })
    }

    pub fn allows_everything(&self) -> bool {
        self.allow_everything
    }

    pub fn allowed(&self) -> &[Allowed] {
        &self.allowed
    }

    /// Whether a connection to `addr`, reached through the name `host`, may be made.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), EgressRefused> {
        if self.allow_everything {
            return Ok(());
        }
        let Some(purpose) = special_purpose(addr.ip()) else {
            return Ok(());
        };
        if self.allowed.iter().any(|a| a.admits(addr)) {
            return Ok(());
        }
        Err(EgressRefused {
            host: host.to_owned(),
            purpose,
            addr,
        })
    }

    /// Checks a URL whose host is an address literal (those are connected to without a DNS
    /// look-up, so the resolvers of this crate never see them). Names pass here: they are
    /// checked when they are resolved, at connect time.
    pub fn check_literal(&self, url: &url::Url) -> Result<(), EgressRefused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        let port = url.port_or_known_default().unwrap_or(0);
        self.check(
            url.host_str().unwrap_or_default(),
            SocketAddr::new(ip, port),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_refuses_special_addresses_and_passes_public_ones() {
        let p = EgressPolicy::public_only();
        let err = p.check("evil.example", sock("127.0.0.1:6379")).unwrap_err();
        assert_eq!(err.purpose, "loopback");
        assert_eq!(
            err.to_string(),
            "`evil.example` leads to a special-purpose address (loopback), which deliveries may \
             not reach (an operator can allow it with COURIER_EGRESS_ALLOW)"
        );
        assert!(!err.to_string().contains("127.0.0.1"));
        let err = p.check("x", sock("[::ffff:10.0.0.1]:80")).unwrap_err();
        assert_eq!(err.purpose, "private (RFC 1918)");
        p.check("s3.amazonaws.com", sock("52.216.0.1:443")).unwrap();
    }

    #[test]
    fn entries_allow_a_network_or_one_address_and_port() {
        let p = EgressPolicy::from_settings(" 10.20.0.0/16, 127.0.0.1:3900 ,[::1]:3901", false)
            .unwrap();
        p.check("a", sock("10.20.5.6:443")).unwrap();
        p.check("a", sock("10.20.5.6:1")).unwrap();
        p.check("a", sock("[::ffff:10.20.0.1]:9")).unwrap();
        p.check("a", sock("10.21.0.1:443")).unwrap_err();
        p.check("a", sock("127.0.0.1:3900")).unwrap();
        p.check("a", sock("[::ffff:127.0.0.1]:3900")).unwrap();
        p.check("a", sock("127.0.0.1:3901")).unwrap_err();
        p.check("a", sock("127.0.0.2:3900")).unwrap_err();
        p.check("a", sock("[::1]:3901")).unwrap();
        p.check("a", sock("[::1]:3900")).unwrap_err();
    }

    #[test]
    fn a_cidr_with_host_bits_means_its_network() {
        let p = EgressPolicy::from_settings("10.20.1.2/16", false).unwrap();
        assert_eq!(
            p.allowed(),
            &[Allowed::Net("10.20.0.0/16".parse().unwrap())]
        );
        p.check("a", sock("10.20.200.1:1")).unwrap();
    }

    #[test]
    fn bad_entries_name_the_variable_and_the_entry() {
        let err = EgressPolicy::from_settings("10.0.0.0/8,localhost:80", false).unwrap_err();
        assert!(
            err.starts_with("COURIER_EGRESS_ALLOW: `localhost:80`"),
            "{err}"
        );
        assert!(EgressPolicy::from_settings("127.0.0.1", false).is_err());
        assert!(EgressPolicy::from_settings("10.0.0.0/33", false).is_err());
        assert_eq!(
            EgressPolicy::from_settings(" , ", false).unwrap(),
            EgressPolicy::public_only()
        );
    }

    #[test]
    fn the_blanket_switch_allows_everything() {
        let p = EgressPolicy::from_settings("", true).unwrap();
        p.check("a", sock("127.0.0.1:1")).unwrap();
        p.check("a", sock("[fe80::1]:1")).unwrap();
    }

    #[test]
    fn literal_hosts_are_checked_with_their_port_and_names_left_to_the_resolver() {
        let p = EgressPolicy::from_settings("127.0.0.1:3900", false).unwrap();
        let url = |s: &str| url::Url::parse(s).unwrap();
        p.check_literal(&url("http://127.0.0.1:3900/b")).unwrap();
        p.check_literal(&url("http://127.0.0.1:3901/b"))
            .unwrap_err();
        // The WHATWG parser reads odd IPv4 spellings as the address they are.
        p.check_literal(&url("http://2130706433/")).unwrap_err();
        p.check_literal(&url("http://0x7f.1/")).unwrap_err();
        p.check_literal(&url("http://[::ffff:7f00:1]:80/"))
            .unwrap_err();
        p.check_literal(&url("http://[::1]/")).unwrap_err();
        p.check_literal(&url("https://localhost/")).unwrap();
        p.check_literal(&url("https://s3.amazonaws.com/")).unwrap();
    }
}
