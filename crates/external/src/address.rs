//! Which network addresses a webhook may reach.
//!
//! Webhook URLs come from users, so without a policy an agent record could
//! make the server call its own admin port, a cloud metadata service or
//! anything else on the private network. Only public unicast addresses are
//! allowed, plus the networks an operator lists in
//! `external_agents.allowed_networks` (e.g. `10.0.0.0/8` for agents running
//! next to Chorus).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Public addresses, plus the configured networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

/// A configured network that is not CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("external_agents.allowed_networks: `{0}` is not a network in CIDR notation (e.g. 10.0.0.0/8 or fd00::/8)")]
pub struct NetworkParseError(pub String);

impl AddressPolicy {
    /// Public addresses and `allowed` (CIDR strings).
    pub fn new<S: AsRef<str>>(allowed: &[S]) -> Result<Self, NetworkParseError> {
        let allowed = allowed
            .iter()
            .map(|s| s.as_ref().trim().parse::<IpNet>().map_err(|_| NetworkParseError(s.as_ref().to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable unicast: not loopback, private, link-local, shared
/// (CGNAT), documentation, benchmarking, multicast, reserved or unspecified,
/// and no IPv6 form that embeds such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240; // reserved
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    match s[0] {
        0xfc00..=0xfdff => false,                                          // unique local
        0xfe80..=0xfebf => false,                                          // link-local
        0xfec0..=0xfeff => false,                                          // site-local (deprecated)
        0x2001 if s[1] == 0x0db8 => false,                                 // documentation
        0x2001 if s[1] < 0x0200 => false, // IETF assignments, Teredo, benchmarking, ORCHID
        0x2002 => is_public_v4(embedded_v4(s[1], s[2])), // 6to4
        0x0064 if s[1] == 0xff9b => is_public_v4(embedded_v4(s[6], s[7])), // NAT64
        0x0100 if s[1..4] == [0, 0, 0] => false, // discard-only
        0x0000 => false,                  // IPv4-compatible and other reserved forms (mapped ones are canonical above)
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_every_non_public_range() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.8.8.8",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:0a00:0001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip(s)), "{s} must be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(ip(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn configured_networks_are_allowed_too() {
        let policy = AddressPolicy::new(&["127.0.0.0/8", " fd00::/8 "]).unwrap();
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(policy.permits(ip("fd00::5")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("::1")), "IPv6 loopback is not in 127.0.0.0/8");
        assert!(policy.permits(ip("8.8.8.8")));
        assert!(!AddressPolicy::default().permits(ip("127.0.0.1")));
        assert_eq!(AddressPolicy::new(&["10.0.0.0/33"]), Err(NetworkParseError("10.0.0.0/33".into())));
        assert!(AddressPolicy::new(&["localhost"]).is_err());
    }
}
