//! Pure planning of VIP address changes: (wanted, actual, ownership) → operations.
//!
//! # Ownership rule
//!
//! ipvs-sync removes an address only when it is sure the address is its own:
//!
//! * **A dedicated dummy interface** that ipvs-sync created carries the link alias
//!   [`OWNER_ALIAS`] (`ip link show` prints `alias ipvs-sync`). On such an interface
//!   every host address (/32, /128) is ours: anything not wanted is removed. Both
//!   marks are required: the link kind `dummy` and the alias.
//!   Addresses with other prefix lengths (link-local `fe80::/64`, a /24 an operator
//!   added) are never listed and never touched.
//! * **`lo`, or a dummy that someone else created** (no alias): an address is removed
//!   only when it is in the caller's *owned* set — the VIPs the service mapping gives
//!   this balancer plus those it has announced — or, for IPv4, when it carries the
//!   label [`VIP_LABEL_SUFFIX`] appended to the interface name (`lo:vip`), which
//!   ipvs-sync puts on every IPv4 VIP it adds to such an interface. IPv6 addresses have
//!   no label, so they rely on the owned set alone.
//! * Never, whatever the sets say: loopback (`127.0.0.0/8`, `::1`), unspecified,
//!   multicast and link-local addresses. They are neither added nor removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// Link alias (IFLA_IFALIAS) that marks a dummy interface created by ipvs-sync.
pub const OWNER_ALIAS: &str = "ipvs-sync";

/// Suffix of the IPv4 address label ipvs-sync sets on interfaces it does not own
/// (`lo` → `lo:vip`). Linux limits labels to 15 bytes; see [`vip_label`].
pub const VIP_LABEL_SUFFIX: &str = ":vip";

/// The IPv4 address label for VIPs on `interface`, or `None` when the label would
/// exceed the kernel's 15-byte limit (IFNAMSIZ − 1); such VIPs go unlabelled and are
/// recognised by the owned set alone.
pub fn vip_label(interface: &str) -> Option<String> {
    let label = format!("{interface}{VIP_LABEL_SUFFIX}");
    (label.len() <= 15).then_some(label)
}

/// True for addresses that may be a VIP: not loopback, unspecified, multicast or
/// link-local (IPv4 169.254/16, IPv6 fe80::/10).
pub fn is_vip_candidate(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// One host address (/32 or /128) found on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualAddr {
    /// The address.
    pub ip: IpAddr,
    /// IPv4 label (IFA_LABEL), when the kernel reported one.
    pub label: Option<String>,
}

/// Which addresses on the interface the plan may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// A dummy interface created by ipvs-sync: every host address is ours.
    WholeInterface,
    /// A shared interface (`lo`): only these addresses, plus IPv4 addresses carrying
    /// `label`, are ours.
    Listed {
        /// VIPs this balancer is responsible for (mapping ∪ announced).
        owned: BTreeSet<IpAddr>,
        /// IPv4 label that marks our addresses (`lo:vip`), if any.
        label: Option<String>,
    },
}

impl Ownership {
    /// Whether `addr` may be removed under this rule.
    pub fn owns(&self, addr: &ActualAddr) -> bool {
        if !is_vip_candidate(addr.ip) {
            return false;
        }
        match self {
            Self::WholeInterface => true,
            Self::Listed { owned, label } => {
                owned.contains(&addr.ip)
                    || (addr.ip.is_ipv4()
                        && label.is_some()
                        && addr.label.as_deref() == label.as_deref())
            }
        }
    }
}

/// One change to make on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrOp {
    /// Add the VIP as a host address (/32 or /128), like `ip addr add VIP/32 dev IF`.
    Add(IpAddr),
    /// Remove the host address, like `ip addr del VIP/32 dev IF`.
    Remove(IpAddr),
}

impl AddrOp {
    /// The address the operation is about.
    pub fn ip(&self) -> IpAddr {
        match *self {
            Self::Add(ip) | Self::Remove(ip) => ip,
        }
    }
}

impl fmt::Display for AddrOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Add(ip) => write!(f, "add {ip}"),
            Self::Remove(ip) => write!(f, "remove {ip}"),
        }
    }
}

/// Compute the operations that make the interface's host addresses equal `wanted`
/// as far as `ownership` allows: removals first (in address order), then additions.
///
/// Wanted addresses that cannot be VIPs ([`is_vip_candidate`]) are skipped; actual
/// addresses that are not ours are left alone. Planning against the result of the
/// plan yields an empty plan.
pub fn plan(
    wanted: &BTreeSet<IpAddr>,
    actual: &[ActualAddr],
    ownership: &Ownership,
) -> Vec<AddrOp> {
    let actual_by_ip: BTreeMap<IpAddr, &ActualAddr> = actual.iter().map(|a| (a.ip, a)).collect();
    let removes = actual_by_ip
        .values()
        .filter(|a| !wanted.contains(&a.ip) && ownership.owns(a))
        .map(|a| AddrOp::Remove(a.ip));
    let adds = wanted
        .iter()
        .filter(|ip| is_vip_candidate(**ip) && !actual_by_ip.contains_key(ip))
        .map(|ip| AddrOp::Add(*ip));
    removes.chain(adds).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<IpAddr> {
        items.iter().map(|s| ip(s)).collect()
    }

    fn actual(items: &[(&str, Option<&str>)]) -> Vec<ActualAddr> {
        items
            .iter()
            .map(|(a, l)| ActualAddr {
                ip: ip(a),
                label: l.map(str::to_string),
            })
            .collect()
    }

    fn lo(owned: &[&str]) -> Ownership {
        Ownership::Listed {
            owned: set(owned),
            label: vip_label("lo"),
        }
    }

    #[test]
    fn label_for_lo_and_too_long_names() {
        assert_eq!(vip_label("lo").as_deref(), Some("lo:vip"));
        assert_eq!(vip_label("vip-dummy01").as_deref(), Some("vip-dummy01:vip"));
        assert_eq!(vip_label("vip-dummy012"), None);
    }

    #[test]
    fn adds_missing_and_removes_owned_on_lo() {
        let wanted = set(&["192.0.2.1", "2001:db8::1"]);
        let have = actual(&[
            ("::1", None),
            ("192.0.2.9", Some("lo:vip")),
            ("198.51.100.7", Some("lo")),
            ("2001:db8::9", None),
            ("2001:db8::8", None),
        ]);
        let ops = plan(&wanted, &have, &lo(&["2001:db8::9"]));
        assert_eq!(
            ops,
            vec![
                AddrOp::Remove(ip("192.0.2.9")),
                AddrOp::Remove(ip("2001:db8::9")),
                AddrOp::Add(ip("192.0.2.1")),
                AddrOp::Add(ip("2001:db8::1")),
            ]
        );
    }

    #[test]
    fn loopback_survives_even_when_listed_as_owned() {
        let have = actual(&[("::1", None), ("127.0.0.1", Some("lo:vip"))]);
        let owned = lo(&["::1", "127.0.0.1"]);
        assert!(plan(&BTreeSet::new(), &have, &owned).is_empty());
        assert!(plan(&BTreeSet::new(), &have, &Ownership::WholeInterface).is_empty());
    }

    #[test]
    fn whole_interface_removes_every_unwanted_vip() {
        let have = actual(&[
            ("192.0.2.1", None),
            ("203.0.113.5", None),
            ("2001:db8::5", None),
        ]);
        let ops = plan(&set(&["192.0.2.1"]), &have, &Ownership::WholeInterface);
        assert_eq!(
            ops,
            vec![
                AddrOp::Remove(ip("203.0.113.5")),
                AddrOp::Remove(ip("2001:db8::5"))
            ]
        );
    }

    #[test]
    fn non_vip_wanted_addresses_are_skipped() {
        let wanted = set(&[
            "127.0.0.2",
            "::",
            "ff02::1",
            "fe80::1",
            "224.0.0.1",
            "192.0.2.3",
        ]);
        let ops = plan(&wanted, &[], &lo(&[]));
        assert_eq!(ops, vec![AddrOp::Add(ip("192.0.2.3"))]);
    }

    #[test]
    fn label_of_other_interface_is_not_ours() {
        let have = actual(&[
            ("192.0.2.4", Some("lo:other")),
            ("192.0.2.5", Some("vip0:vip")),
        ]);
        assert!(plan(&BTreeSet::new(), &have, &lo(&[])).is_empty());
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..8).prop_map(|n| IpAddr::from([192, 0, 2, n])),
            (0u16..8).prop_map(|n| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n])),
            Just(ip("127.0.0.1")),
            Just(ip("::1")),
        ]
    }

    proptest! {
        /// Applying the plan and planning again yields nothing; nothing not owned
        /// is ever removed.
        #[test]
        fn plan_converges_and_respects_ownership(
            wanted in proptest::collection::btree_set(arb_ip(), 0..6),
            have in proptest::collection::btree_map(arb_ip(), any::<bool>(), 0..8),
            owned in proptest::collection::btree_set(arb_ip(), 0..6),
            whole in any::<bool>(),
        ) {
            let have: Vec<ActualAddr> = have
                .into_iter()
                .map(|(ip, labelled)| ActualAddr { ip, label: labelled.then(|| "lo:vip".to_string()) })
                .collect();
            let ownership = if whole {
                Ownership::WholeInterface
            } else {
                Ownership::Listed { owned, label: vip_label("lo") }
            };
            let ops = plan(&wanted, &have, &ownership);
            let mut after: BTreeMap<IpAddr, ActualAddr> = have.iter().map(|a| (a.ip, a.clone())).collect();
            for op in &ops {
                match *op {
                    AddrOp::Add(ip) => {
                        prop_assert!(wanted.contains(&ip));
                        let fresh = ActualAddr { ip, label: vip_label("lo") };
                        prop_assert!(after.insert(ip, fresh).is_none());
                    }
                    AddrOp::Remove(ip) => {
                        let gone = after.remove(&ip);
                        let owned_gone = gone.as_ref().is_some_and(|a| ownership.owns(a));
                        prop_assert!(owned_gone, "removed {} which was absent or not ours", ip);
                        prop_assert!(!wanted.contains(&ip));
                    }
                }
            }
            let after: Vec<ActualAddr> = after.into_values().collect();
            prop_assert!(plan(&wanted, &after, &ownership).is_empty());
            for ip in wanted.iter().filter(|ip| is_vip_candidate(**ip)) {
                prop_assert!(after.iter().any(|a| a.ip == *ip));
            }
        }
    }
}
