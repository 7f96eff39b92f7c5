//! `SourceBlock`: the throttle key of a client IP (IPv4 /24, IPv6 /48 by default).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The network an IP address is counted under: its address masked to a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceBlock {
    network: IpAddr,
    prefix: u8,
}

impl SourceBlock {
    /// Default prefix lengths of the design: IPv4 /24, IPv6 /48.
    pub const DEFAULT_IPV4_PREFIX: u8 = 24;
    pub const DEFAULT_IPV6_PREFIX: u8 = 48;

    /// The block `ip` belongs to. Prefixes are clamped to the address width;
    /// an IPv4-mapped IPv6 address is treated as the IPv4 address it carries.
    pub fn of(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4, ipv4_prefix),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_v4(v4, ipv4_prefix),
                None => {
                    let prefix = ipv6_prefix.min(128);
                    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                    let network = Ipv6Addr::from(u128::from(v6) & mask);
                    SourceBlock { network: IpAddr::V6(network), prefix }
                }
            },
        }
    }

    fn of_v4(v4: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = Ipv4Addr::from(u32::from(v4) & mask);
        SourceBlock { network: IpAddr::V4(network), prefix }
    }

    /// The block with the design's default prefixes.
    pub fn of_default(ip: IpAddr) -> Self {
        Self::of(ip, Self::DEFAULT_IPV4_PREFIX, Self::DEFAULT_IPV6_PREFIX)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for SourceBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_in_one_slash_24_share_a_block() {
        let a = SourceBlock::of_default("192.0.2.7".parse().unwrap());
        let b = SourceBlock::of_default("192.0.2.250".parse().unwrap());
        let c = SourceBlock::of_default("192.0.3.7".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "192.0.2.0/24");
    }

    #[test]
    fn ipv6_addresses_in_one_slash_48_share_a_block() {
        let a = SourceBlock::of_default("2001:db8:1:ffff::1".parse().unwrap());
        let b = SourceBlock::of_default("2001:db8:1::2".parse().unwrap());
        let c = SourceBlock::of_default("2001:db8:2::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1::/48");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let mapped = SourceBlock::of_default("::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(mapped.to_string(), "192.0.2.0/24");
    }

    #[test]
    fn prefixes_are_configurable_and_clamped() {
        let ip = "198.51.100.77".parse().unwrap();
        assert_eq!(SourceBlock::of(ip, 16, 48).to_string(), "198.51.0.0/16");
        assert_eq!(SourceBlock::of(ip, 0, 48).to_string(), "0.0.0.0/0");
        assert_eq!(SourceBlock::of(ip, 99, 48).to_string(), "198.51.100.77/32");
    }
}
