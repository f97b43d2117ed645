//! Which hosts a fetch made for someone else may reach. The app fetches for
//! the person at its keyboard, who may link to their own network; the HTTP
//! service fetches for its clients, who must not reach through it what only
//! the server reaches (its own ports, the local network, a cloud's metadata
//! service at 169.254.169.254).

use std::net::IpAddr;

/// Which addresses a fetch may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Any address (the app: the person's own links).
    #[default]
    Any,
    /// Public internet addresses only ([`is_public`]): the HTTP service
    /// fetching for its clients (unless its operator allows private links).
    PublicOnly,
}

impl Reach {
    /// Whether `ip` may be connected to.
    pub fn allows(self, ip: IpAddr) -> bool {
        self == Reach::Any || is_public(ip)
    }
}

/// The addresses `host` (a name, or an IP address as written in a URL's
/// host, without brackets) stands for, as a connection to `port` would
/// resolve them now.
///
/// # Errors
/// The name does not resolve.
pub fn addresses_of(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![ip]),
        Err(_) => Ok(std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.map(|a| a.ip()).collect()),
    }
}

/// Whether `ip` is reachable on the public internet: not loopback,
/// private (RFC 1918, fc00::/7), shared (100.64.0.0/10, RFC 6598),
/// link-local (169.254.0.0/16, fe80::/10), unspecified, multicast,
/// broadcast, "this network" (0.0.0.0/8), IETF protocol assignments
/// (192.0.0.0/24), documentation (RFC 5737, 2001:db8::/32), benchmarking
/// (198.18.0.0/15) or reserved (240.0.0.0/4) ranges, site-local fec0::/10
/// or Teredo 2001::/32, nor an IPv6 address that carries an IPv4 address
/// that is one of those (mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64 64:ff9b::/96,
/// 6to4 2002::/16); local-use NAT64
/// 64:ff9b:1::/48 never.
/// Ranges from the IANA special-purpose address registries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let [first, second] = [s[0], s[1]];
            let low_v4 = || std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            // Forms that carry an IPv4 address, which a gateway may reach:
            // NAT64's well-known prefix (64:ff9b::/96, RFC 6052) and
            // IPv4-compatible (::/96, deprecated) hold it in the low 32
            // bits, 6to4 (2002::/16, RFC 3056) in bits 16-47: public only
            // when that address is. Teredo (2001::/32, RFC 4380) tunnels to
            // an address it hides, and NAT64's local-use prefix
            // (64:ff9b:1::/48, RFC 8215) may put it anywhere: never public.
            let nat64 = first == 0x0064 && second == 0xff9b && s[2..6].iter().all(|&x| x == 0);
            let compatible = s[..6].iter().all(|&x| x == 0) && !v6.is_loopback() && !v6.is_unspecified();
            // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765).
            let translated = s[..4].iter().all(|&x| x == 0) && s[4] == 0xffff && s[5] == 0;
            if nat64 || compatible || translated {
                return is_public(IpAddr::V4(low_v4()));
            }
            if first == 0x2002 {
                let v4 = std::net::Ipv4Addr::new((second >> 8) as u8, second as u8, (s[2] >> 8) as u8, s[2] as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Site-local (deprecated, RFC 3879), still routed locally.
                || (first & 0xffc0) == 0xfec0
                // NAT64's local-use prefix 64:ff9b:1::/48 (RFC 8215), whose
                // IPv4 address may sit anywhere.
                || (first == 0x0064 && second == 0xff9b && s[2] == 0x0001)
                || (first == 0x2001 && second == 0x0000)
                || (first == 0x2001 && second == 0x0db8))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_special_ranges_are_not_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "198.18.0.1",
            "203.0.113.5",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "::10.0.0.5",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(!is_public(ip), "{bad}");
            assert!(!Reach::PublicOnly.allows(ip) && Reach::Any.allows(ip), "{bad}");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "142.250.185.78",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }
}
