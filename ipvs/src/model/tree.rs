//! The whole IPVS table of one network namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{FwmarkVips, Service, ServiceKey};

/// All virtual services of a kernel (or the wanted state of one), in canonical order.
///
/// Equality ignores counters. The JSON form is `{"services": [...]}` (see the `json` module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    services: BTreeMap<ServiceKey, Service>,
}

impl Tree {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Services in canonical (`ipvsadm -Sn`) order.
    pub fn services(&self) -> impl Iterator<Item = &Service> + '_ {
        self.services.values()
    }

    /// The service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// The service with this key, mutable.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut Service> {
        self.services.get_mut(key)
    }

    /// Adds or replaces a service; returns the one replaced.
    pub fn insert(&mut self, service: Service) -> Option<Service> {
        self.services.insert(*service.key(), service)
    }

    /// Removes a service with its destinations.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<Service> {
        self.services.remove(key)
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when there is no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Number of destinations over all services.
    pub fn dest_count(&self) -> usize {
        self.services.values().map(|s| s.dests.len()).sum()
    }

    /// Drops the counters (as a wanted tree has none).
    pub fn clear_stats(&mut self) {
        for svc in self.services.values_mut() {
            svc.stats = None;
            for dest in svc.dests.values_mut() {
                dest.stats = None;
            }
        }
    }

    /// The VIPs of the address-keyed services.
    pub fn vips(&self) -> BTreeSet<IpAddr> {
        self.services.keys().filter_map(ServiceKey::vip).collect()
    }

    /// The part of the tree for these VIPs: address services whose VIP is in `vips`, and
    /// fwmark services whose mark `marks` gives one of `vips` ([`ServiceKey::owner`]).
    pub fn filter_vips(&self, vips: &BTreeSet<IpAddr>, marks: &FwmarkVips) -> Tree {
        let services = self
            .services
            .iter()
            .filter(|(key, _)| key.owner(marks).is_some_and(|v| vips.contains(&v)))
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        Tree { services }
    }
}

impl FromIterator<Service> for Tree {
    fn from_iter<I: IntoIterator<Item = Service>>(iter: I) -> Self {
        let mut tree = Tree::new();
        for svc in iter {
            tree.insert(svc);
        }
        tree
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{Dest, Family, ServiceSpec};

    fn tree() -> Tree {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        [
            Service::new(ServiceSpec::new(ServiceKey::tcp(a, 80), "wrr"))
                .with_dest(Dest::new("198.51.100.5".parse().unwrap(), 80)),
            Service::new(ServiceSpec::new(ServiceKey::udp(a, 53), "rr")),
            Service::new(ServiceSpec::new(ServiceKey::tcp(b, 443), "rr")),
            Service::new(ServiceSpec::new(ServiceKey::fwmark(Family::Inet, 7), "sh")),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn vips_and_filter() {
        let t = tree();
        let vips: Vec<String> = t.vips().iter().map(ToString::to_string).collect();
        assert_eq!(vips, ["192.0.2.1", "2001:db8::1"]);
        let only: BTreeSet<IpAddr> = ["192.0.2.1".parse().unwrap()].into();
        let none = FwmarkVips::new();
        let f = t.filter_vips(&only, &none);
        let ids: Vec<String> = f.services().map(|s| s.key().to_string()).collect();
        assert_eq!(ids, ["tcp:192.0.2.1:80", "udp:192.0.2.1:53"]);
        assert_eq!(f.dest_count(), 1);
        assert!(t.filter_vips(&BTreeSet::new(), &none).is_empty());
        // Mark 7 goes with 192.0.2.1: its service comes with that VIP's, not with another's.
        let marks = FwmarkVips::from([(7, "192.0.2.1".parse().unwrap())]);
        let ids: Vec<String> = t
            .filter_vips(&only, &marks)
            .services()
            .map(|s| s.key().to_string())
            .collect();
        assert_eq!(ids, ["tcp:192.0.2.1:80", "udp:192.0.2.1:53", "fwmark:v4:7"]);
        let v6: BTreeSet<IpAddr> = ["2001:db8::1".parse().unwrap()].into();
        assert_eq!(t.filter_vips(&v6, &marks).len(), 1);
        let other = FwmarkVips::from([(8, "192.0.2.1".parse().unwrap())]);
        assert_eq!(t.filter_vips(&only, &other).len(), 2);
    }
}
