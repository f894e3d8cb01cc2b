//! The client's address, for rate limits: the TCP peer, unless the peer is a proxy named in
//! `TROUPE_TRUSTED_PROXIES`, in which case the right-most `X-Forwarded-For` entry that is not
//! itself a trusted proxy.
//!
//! Each proxy appends the address it was called from, so only the entries written by trusted
//! proxies can be believed: reading from the right, the first address not trusted is the one
//! the last trusted proxy saw calling it. Anything further left was written by the client and
//! could be anything. From a peer that is not trusted, `X-Forwarded-For` is ignored whole.
//!
//! Entries are read right to left over every `X-Forwarded-For` line (later lines are to the
//! right). An entry is an IPv4 or IPv6 address, optionally `[v6]`, `v4:port` or `[v6]:port`.
//! A malformed entry (`unknown`, a name, an empty entry, bytes that are not text) ends the
//! walk: the client is then the nearest trusted hop that reported it, that is the last address
//! read, or the peer. When every entry is trusted, the client is the left-most one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName};

use crate::config::ConfigError;

/// The variable the trusted proxies come from.
pub const TRUSTED_PROXIES_VAR: &str = "TROUPE_TRUSTED_PROXIES";

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A block of addresses: `ADDR/PREFIX`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a single address (`/32` or `/128`). The address
    /// must be the block's first (no host bits set: `10.0.0.1/8` is refused, as a likely
    /// typo). A block of IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) is its IPv4 block.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Plain digits only: no sign or leading zero (`/+8`, `/08`).
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max && n.to_string() == p)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        let cidr = Self::normalise(network, prefix);
        if cidr.network != Self::masked(cidr.network, cidr.prefix) {
            return Err(format!(
                "{text:?} has host bits set; the block is {}",
                Self {
                    network: Self::masked(cidr.network, cidr.prefix),
                    prefix: cidr.prefix
                }
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counting as its IPv4 address) is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && Self::masked(ip, self.prefix) == self.network
    }

    fn normalise(network: IpAddr, prefix: u8) -> Self {
        match network {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Self {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Self { network, prefix },
            },
            _ => Self { network, prefix },
        }
    }

    fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`TROUPE_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    /// Parses a comma list of [`Cidr`]s (blanks around each ignored). Empty or blank: no
    /// proxy is trusted, and `X-Forwarded-For` is never read.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let mut blocks = Vec::new();
        if raw.trim().is_empty() {
            return Ok(Self { blocks });
        }
        for (i, text) in raw.split(',').enumerate() {
            let cidr = Cidr::parse(text.trim()).map_err(|problem| ConfigError {
                var: TRUSTED_PROXIES_VAR,
                problem: format!("entry {}: {problem}", i + 1),
            })?;
            blocks.push(cidr);
        }
        Ok(Self { blocks })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers` (see the module doc).
    /// IPv4-mapped IPv6 addresses come back as IPv4.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for line in headers.get_all(&X_FORWARDED_FOR).rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for entry in line.rsplit(',') {
                let Some(ip) = forwarded_ip(entry.trim()) else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry's address: `ADDR`, `[V6]`, `V4:PORT` or `[V6]:PORT`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let v6 = entry.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                X_FORWARDED_FOR.clone(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        headers
    }

    fn proxies(raw: &str) -> TrustedProxies {
        TrustedProxies::parse(raw).unwrap()
    }

    #[test]
    fn blocks_parse_in_both_families_and_single_addresses_are_hosts() {
        let p = proxies(" 10.0.0.0/8 , 192.168.1.7, fd00::/8,::1 ");
        assert_eq!(p.blocks.len(), 4);
        assert_eq!(p.blocks[1].to_string(), "192.168.1.7/32");
        assert_eq!(p.blocks[3].to_string(), "::1/128");
        assert!(p.contains(ip("10.255.0.1")));
        assert!(p.contains(ip("192.168.1.7")));
        assert!(!p.contains(ip("192.168.1.8")));
        assert!(p.contains(ip("fd12:3456::1")));
        assert!(p.contains(ip("::1")));
        assert!(!p.contains(ip("fe80::1")));
        assert!(!p.contains(ip("11.0.0.1")));
    }

    #[test]
    fn mapped_addresses_count_as_ipv4_both_ways() {
        let p = proxies("10.0.0.0/8,::ffff:172.16.0.0/108");
        assert!(p.contains(ip("::ffff:10.1.2.3")));
        assert!(p.contains(ip("172.16.5.5")));
        assert!(!p.contains(ip("172.32.0.1")));
        assert_eq!(p.blocks[1].to_string(), "172.16.0.0/12");
    }

    #[test]
    fn zero_prefixes_trust_a_whole_family() {
        let p = proxies("0.0.0.0/0");
        assert!(p.contains(ip("203.0.113.9")));
        assert!(!p.contains(ip("2001:db8::1")));
        assert!(proxies("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_blocks_name_the_variable_and_the_entry() {
        for (raw, problem) in [
            (
                "10.0.0.0/33",
                "entry 1: \"10.0.0.0/33\": the prefix must be 0 to 32",
            ),
            (
                "10.0.0.0/8,fd00::/129",
                "entry 2: \"fd00::/129\": the prefix must be 0 to 128",
            ),
            (
                "10.0.0.0/08",
                "entry 1: \"10.0.0.0/08\": the prefix must be 0 to 32",
            ),
            (
                "10.0.0.0/",
                "entry 1: \"10.0.0.0/\": the prefix must be 0 to 32",
            ),
            (
                "proxy.local",
                "entry 1: \"proxy.local\" is not an address or ADDRESS/PREFIX",
            ),
            (
                "10.0.0.0/8,",
                "entry 2: \"\" is not an address or ADDRESS/PREFIX",
            ),
            (
                "10.0.0.1/8",
                "entry 1: \"10.0.0.1/8\" has host bits set; the block is 10.0.0.0/8",
            ),
        ] {
            let err = TrustedProxies::parse(raw).unwrap_err();
            assert_eq!(err.var, TRUSTED_PROXIES_VAR);
            assert_eq!(err.problem, problem, "{raw:?}");
        }
        assert!(proxies("").is_empty());
        assert!(proxies("  ").is_empty());
    }

    #[test]
    fn an_untrusted_peer_s_forwarded_for_is_ignored() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("203.0.113.5");
        let spoofed = xff(&["198.51.100.1", "10.0.0.2"]);
        assert_eq!(p.client_ip(peer, &spoofed), peer);
        assert_eq!(proxies("").client_ip(peer, &spoofed), peer);
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_untrusted_entry() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        // The client claims 1.1.1.1; the proxy appended the address it really saw.
        let headers = xff(&["1.1.1.1, 198.51.100.7"]);
        assert_eq!(p.client_ip(peer, &headers), ip("198.51.100.7"));
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_over_every_line() {
        let p = proxies("10.0.0.0/8,fd00::/8");
        let peer = ip("10.0.0.1");
        let headers = xff(&["6.6.6.6, 203.0.113.50", "fd00::3, 10.0.0.2"]);
        assert_eq!(p.client_ip(peer, &headers), ip("203.0.113.50"));
        let v6 = xff(&["2001:db8::9,10.2.0.1"]);
        assert_eq!(p.client_ip(peer, &v6), ip("2001:db8::9"));
    }

    #[test]
    fn every_entry_trusted_gives_the_left_most() {
        let p = proxies("10.0.0.0/8");
        let headers = xff(&["10.9.9.9, 10.0.0.2"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &headers), ip("10.9.9.9"));
    }

    #[test]
    fn a_malformed_entry_stops_at_the_nearest_trusted_hop() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for (lines, client) in [
            (&["1.2.3.4, unknown"][..], peer),
            (&["1.2.3.4, unknown, 10.0.0.2"], ip("10.0.0.2")),
            (&["1.2.3.4,,10.0.0.2"], ip("10.0.0.2")),
            (&["1.2.3.4, 10.0.0.2,"], peer),
            (&["1.2.3.4", ""], peer),
            (&["host.example, 10.0.0.3"], ip("10.0.0.3")),
            (&["999.1.1.1"], peer),
            (&["1.2.3.4 5.6.7.8"], peer),
        ] {
            assert_eq!(p.client_ip(peer, &xff(lines)), client, "{lines:?}");
        }
        let mut bytes = HeaderMap::new();
        bytes.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_bytes(b"1.2.3.4, \xff").unwrap(),
        );
        assert_eq!(p.client_ip(peer, &bytes), peer);
    }

    #[test]
    fn entries_may_carry_ports_and_brackets() {
        let p = proxies("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for (entry, client) in [
            ("198.51.100.7:4711", "198.51.100.7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("::ffff:198.51.100.8", "198.51.100.8"),
        ] {
            assert_eq!(p.client_ip(peer, &xff(&[entry])), ip(client), "{entry}");
        }
    }

    #[test]
    fn a_mapped_peer_is_matched_and_returned_as_ipv4() {
        let p = proxies("10.0.0.0/8");
        assert_eq!(
            p.client_ip(ip("::ffff:10.0.0.1"), &xff(&["203.0.113.1"])),
            ip("203.0.113.1")
        );
        assert_eq!(
            p.client_ip(ip("::ffff:203.0.113.2"), &xff(&["1.1.1.1"])),
            ip("203.0.113.2")
        );
    }
}
