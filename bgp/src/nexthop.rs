//! Next hops per session (RFC 4271 §5.1.3, RFC 4760 §3, RFC 2545 §3).
//!
//! A configured next hop wins: the peer's own override, then the speaker-wide one. Without
//! one, a family gets the session's local address when the session runs over that family.
//! The other family — IPv6 routes over an IPv4 session, or IPv4 routes over an IPv6 one —
//! gets an address of that family from the interface that carries the session's local
//! address, as BIRD does (a global IPv6 address, never link-local or loopback). When the
//! interface has none, routes of that family are not sent to the peer at all, and
//! [`NextHops::missing`] says why: an IPv4-mapped IPv6 next hop (`::ffff:a.b.c.d`) is
//! refused by BIRD 2 ("Invalid NEXT_HOP attribute - mismatched address family") and not
//! installed by FRR's zebra.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of an interface of this host (network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface name.
    pub name: String,
    /// The address.
    pub addr: IpAddr,
}

/// The next hops a session uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NextHops {
    /// For IPv4 routes (`None`: IPv4 routes are not sent).
    pub v4: Option<Ipv4Addr>,
    /// For IPv6 routes (`None`: IPv6 routes are not sent).
    pub v6: Option<Ipv6Addr>,
    /// Why a family has none, for logs and `status`.
    pub missing: Option<String>,
}

/// An IPv6 address that can serve as a global next hop: not loopback, unspecified,
/// multicast, link-local (fe80::/10) or IPv4-mapped.
fn global_v6(a: &Ipv6Addr) -> bool {
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || a.is_unicast_link_local()
        || a.to_ipv4_mapped().is_some())
}

/// An IPv4 address that can serve as a next hop: not loopback, unspecified, link-local
/// (169.254/16), multicast or broadcast.
fn usable_v4(a: &Ipv4Addr) -> bool {
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast())
}

/// Resolves the next hops of a session whose local address is `local`, with the peer's and
/// the speaker's overrides `(v4, v6)`, reading `ifaddrs` (the host's interface addresses)
/// for the family the session does not run over.
pub fn resolve(
    local: IpAddr,
    peer: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    speaker: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ifaddrs: &[IfAddr],
) -> NextHops {
    let local = local.to_canonical();
    let iface = ifaddrs
        .iter()
        .find(|i| i.addr == local)
        .map(|i| i.name.as_str());
    // The addresses of the interface that carries the session (none if none does).
    let on_iface = || {
        ifaddrs
            .iter()
            .filter(move |i| Some(i.name.as_str()) == iface)
            .map(|i| i.addr)
    };
    let v4 = peer.0.or(speaker.0).or_else(|| match local {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => on_iface().find_map(|a| match a {
            IpAddr::V4(v) if usable_v4(&v) => Some(v),
            _ => None,
        }),
    });
    let v6 = peer.1.or(speaker.1).or_else(|| match local {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => on_iface().find_map(|a| match a {
            IpAddr::V6(v) if global_v6(&v) => Some(v),
            _ => None,
        }),
    });
    let why = |family: &str, conf: &str| match iface {
        Some(name) => format!(
            "{family} routes not sent: no {conf} configured and interface {name} \
             (which carries {local}) has no usable {family} address"
        ),
        None => format!(
            "{family} routes not sent: no {conf} configured and no interface carries \
             the session's address {local}"
        ),
    };
    // Only the family the session does not run over can be missing.
    let missing = match (v4, v6) {
        (None, _) => Some(why("IPv4", "next_hop_v4")),
        (_, None) => Some(why("IPv6", "next_hop_v6")),
        _ => None,
    };
    NextHops { v4, v6, missing }
}

/// The host's interface addresses (`getifaddrs(3)`, in the calling thread's network
/// namespace).
pub fn interface_addresses() -> io::Result<Vec<IfAddr>> {
    let list = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(list
        .filter_map(|i| {
            let a = i.address?;
            let addr = if let Some(v4) = a.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(a.as_sockaddr_in6()?.ip())
            };
            Some(IfAddr {
                name: i.interface_name,
                addr,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ifs(list: &[(&str, &str)]) -> Vec<IfAddr> {
        list.iter()
            .map(|(n, a)| IfAddr {
                name: (*n).into(),
                addr: a.parse().unwrap(),
            })
            .collect()
    }

    fn host() -> Vec<IfAddr> {
        ifs(&[
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.11"),
            ("eth0", "fe80::11"),
            ("eth0", "2001:db8::11"),
            ("eth1", "198.51.100.11"),
            ("eth1", "2001:db8:1::11"),
        ])
    }

    #[test]
    fn ipv6_over_ipv4_takes_a_global_address_of_the_session_interface() {
        let nh = resolve(
            "192.0.2.11".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert_eq!(nh.v4, Some("192.0.2.11".parse().unwrap()));
        // Not the link-local one, not eth1's.
        assert_eq!(nh.v6, Some("2001:db8::11".parse().unwrap()));
        assert_eq!(nh.missing, None);
        let nh = resolve(
            "198.51.100.11".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert_eq!(nh.v6, Some("2001:db8:1::11".parse().unwrap()));
    }

    #[test]
    fn ipv4_over_ipv6_takes_an_ipv4_address_of_the_session_interface() {
        let nh = resolve(
            "2001:db8::11".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert_eq!(nh.v4, Some("192.0.2.11".parse().unwrap()));
        assert_eq!(nh.v6, Some("2001:db8::11".parse().unwrap()));
        // An IPv4-mapped local address is an IPv4 session.
        let nh = resolve(
            "::ffff:192.0.2.11".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert_eq!(nh.v4, Some("192.0.2.11".parse().unwrap()));
        assert_eq!(nh.v6, Some("2001:db8::11".parse().unwrap()));
    }

    #[test]
    fn without_a_usable_address_the_family_is_not_sent_and_the_reason_given() {
        let only_ll = ifs(&[("eth0", "192.0.2.11"), ("eth0", "fe80::11"), ("lo", "::1")]);
        let nh = resolve(
            "192.0.2.11".parse().unwrap(),
            (None, None),
            (None, None),
            &only_ll,
        );
        assert_eq!(nh.v6, None);
        let why = nh.missing.unwrap();
        assert!(
            why.contains("IPv6 routes not sent") && why.contains("eth0"),
            "{why}"
        );
        // Loopback sessions: lo has only ::1.
        let nh = resolve(
            "127.0.0.1".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert_eq!(nh.v6, None);
        assert!(nh.missing.unwrap().contains("interface lo"));
        // An address no interface carries.
        let nh = resolve(
            "203.0.113.9".parse().unwrap(),
            (None, None),
            (None, None),
            &host(),
        );
        assert!(nh.missing.unwrap().contains("no interface carries"));
    }

    #[test]
    fn configured_next_hops_win_peer_first() {
        let p4: Ipv4Addr = "198.51.100.1".parse().unwrap();
        let s4: Ipv4Addr = "198.51.100.2".parse().unwrap();
        let s6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let p6: Ipv6Addr = "2001:db8::3".parse().unwrap();
        let l4: IpAddr = "192.0.2.11".parse().unwrap();
        let nh = resolve(l4, (Some(p4), None), (Some(s4), Some(s6)), &[]);
        assert_eq!((nh.v4, nh.v6, nh.missing), (Some(p4), Some(s6), None));
        let nh = resolve(l4, (None, Some(p6)), (None, Some(s6)), &[]);
        assert_eq!(
            (nh.v4, nh.v6),
            (Some("192.0.2.11".parse().unwrap()), Some(p6))
        );
        let l6: IpAddr = "2001:db8::11".parse().unwrap();
        let nh = resolve(l6, (None, None), (Some(s4), None), &[]);
        assert_eq!(
            (nh.v4, nh.v6),
            (Some(s4), Some("2001:db8::11".parse().unwrap()))
        );
    }

    #[test]
    fn this_host_lists_its_loopback() {
        let list = interface_addresses().unwrap();
        assert!(
            list.iter()
                .any(|i| i.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{list:?}"
        );
    }
}
