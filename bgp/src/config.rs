//! The speaker's and its peers' settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::packet::{Community, LargeCommunity};
use crate::policy::EbgpPreference;

/// Speaker-wide configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS (4-octet capable).
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose: 0, or 3 and more.
    pub hold_time: u16,
    /// Base delay between connection attempts (doubles per failure up to 120 s, jittered).
    pub connect_retry: Duration,
    /// Advertise graceful restart (RFC 4724) with this restart time (seconds), or not at all.
    pub graceful_restart: Option<u16>,
    /// This process is a graceful restart of one that kept the data plane (addresses, IPVS):
    /// until a peer's first session is Established, our OPENs to it set the Restart State
    /// bit and the Forwarding State bit of each family (RFC 4724 §3). Needs
    /// `graceful_restart`; read at start only.
    pub restarting: bool,
    /// Hold End-of-RIB back until [`crate::Speaker::release_end_of_rib`], so a restarted
    /// caller can finish announcing before helpers drop the stale routes it did not
    /// announce again. Read at start only.
    pub defer_end_of_rib: bool,
    /// How route preference is expressed to eBGP peers.
    pub ebgp_preference: EbgpPreference,
    /// Communities added to every route.
    pub communities: Vec<Community>,
    /// Large communities added to every route.
    pub large_communities: Vec<LargeCommunity>,
    /// IPv4 next hop for every peer (default: the session's local address; over an IPv6
    /// session, an IPv4 address of the interface that carries it).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop for every peer (default: the session's local address; over an IPv4
    /// session, a global IPv6 address of the interface that carries it, and without one no
    /// IPv6 routes go to that peer).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Listen address for incoming sessions; when `None`, `[::]:179` is opened once a passive
    /// peer is added.
    pub listen: Option<SocketAddr>,
}

/// One BGP neighbor. Its `Debug` shows whether a TCP-MD5 key is set, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Unique name (the `[bgp.peer.NAME]` of the config).
    pub name: String,
    /// Neighbor address.
    pub address: IpAddr,
    /// Neighbor AS; equal to ours means iBGP.
    pub remote_as: u32,
    /// Neighbor TCP port (179).
    pub port: u16,
    /// Only accept connections from the neighbor, never connect.
    pub passive: bool,
    /// TCP-MD5 key (RFC 2385), at most 80 bytes.
    pub password: Option<Vec<u8>>,
    /// Source address of our connections.
    pub local_address: Option<IpAddr>,
    /// GTSM (RFC 5082): send TTL 255, require ≥ 254.
    pub ttl_security: bool,
    /// Hold time for this peer (default: the speaker's).
    pub hold_time: Option<u16>,
    /// IPv4 next hop override for this peer.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop override for this peer.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl SpeakerConfig {
    /// Settings for AS `local_as` with router id `router_id`, the rest at their defaults:
    /// hold time 90 s, connect retry 5 s, no graceful restart, no eBGP preference, no
    /// communities, next hops from the sessions, and no listener until a passive peer needs
    /// one. Set other fields with struct update syntax.
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            local_as,
            router_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            graceful_restart: None,
            restarting: false,
            defer_end_of_rib: false,
            ebgp_preference: EbgpPreference::None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            next_hop_v4: None,
            next_hop_v6: None,
            listen: None,
        }
    }
}

impl PeerConfig {
    /// A neighbor named `name` at `address` in AS `remote_as`: port 179, we connect, no
    /// TCP-MD5, no GTSM, the speaker's hold time and next hops.
    pub fn new(name: impl Into<String>, address: IpAddr, remote_as: u32) -> Self {
        PeerConfig {
            name: name.into(),
            address,
            remote_as,
            port: 179,
            passive: false,
            password: None,
            local_address: None,
            ttl_security: false,
            hold_time: None,
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("remote_as", &self.remote_as)
            .field("port", &self.port)
            .field("passive", &self.passive)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("local_address", &self.local_address)
            .field("ttl_security", &self.ttl_security)
            .field("hold_time", &self.hold_time)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("next_hop_v6", &self.next_hop_v6)
            .finish()
    }
}

/// RFC 4271 §4.2: a hold time is 0 or at least 3 seconds.
pub(crate) fn valid_hold(h: u16) -> bool {
    h == 0 || h >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_that_a_key_is_set_but_never_the_key() {
        let mut p = PeerConfig::new("r1", IpAddr::from([192, 0, 2, 1]), 65000);
        assert!(format!("{p:?}").contains("password: None"));
        p.password = Some(b"s3cr3t-md5".to_vec());
        let text = format!("{p:?}");
        assert!(text.contains("password: Some(\"<hidden>\")"), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("115, 51"),
            "{text}"
        );
    }
}
