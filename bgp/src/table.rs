//! The speaker's route table: what every session gets (its initial dump, and each change).

use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::fasthash::{Pk, PrefixMap};
use crate::policy::RouteAttrs;

/// Prefix → attributes, one map per family (an IPv4 key is 5 bytes, not an `IpNet`'s 18).
#[derive(Debug, Default)]
pub struct RouteTable {
    v4: PrefixMap<Ipv4Net, Arc<RouteAttrs>>,
    v6: PrefixMap<Ipv6Net, Arc<RouteAttrs>>,
}

impl RouteTable {
    /// Sets the attributes of `p`; returns the old ones.
    pub fn insert(&mut self, p: IpNet, a: Arc<RouteAttrs>) -> Option<Arc<RouteAttrs>> {
        match p {
            IpNet::V4(p) => self.v4.insert(Pk(p), a),
            IpNet::V6(p) => self.v6.insert(Pk(p), a),
        }
    }

    /// Removes `p`; returns its attributes.
    pub fn remove(&mut self, p: &IpNet) -> Option<Arc<RouteAttrs>> {
        match p {
            IpNet::V4(p) => self.v4.remove(&Pk(*p)),
            IpNet::V6(p) => self.v6.remove(&Pk(*p)),
        }
    }

    /// Makes room for `v4` and `v6` more routes at once (one resize instead of many).
    pub fn reserve(&mut self, v4: usize, v6: usize) {
        self.v4.reserve(v4);
        self.v6.reserve(v6);
    }

    /// Every route, IPv4 first, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Arc<RouteAttrs>)> {
        self.v4
            .iter()
            .map(|(p, a)| (IpNet::V4(p.0), a))
            .chain(self.v6.iter().map(|(p, a)| (IpNet::V6(p.0), a)))
    }
}
