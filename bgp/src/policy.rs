//! Export policy: what one peer sees for a route (RFC 4271 §5.1, §9.1.3).
//!
//! - iBGP peers get LOCAL_PREF (the route's, 100 when unset) and an empty AS_PATH.
//! - eBGP peers never get LOCAL_PREF (RFC 4271 §5.1.5); the route's preference is expressed by
//!   [`EbgpPreference`] as MED or as extra prepends of our AS, and our AS is prepended.
//! - NEXT_HOP is resolved per session by [`crate::nexthop`] and given here in [`ExportCtx`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::packet::{AsPath, Community, LargeCommunity, Origin, PathAttrs};

/// LOCAL_PREF sent to iBGP peers when the route has none (the RFC 4271 customary default).
pub const DEFAULT_LOCAL_PREF: u32 = 100;
/// Most prepends [`EbgpPreference::Prepend`] adds.
pub const MAX_PREPENDS: u32 = 8;

/// Attributes the daemon attaches to one announced prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RouteAttrs {
    /// LOCAL_PREF for iBGP peers (and input of the eBGP mapping).
    pub local_pref: Option<u32>,
    /// Explicit MED (wins over a MED derived by [`EbgpPreference::Med`]).
    pub med: Option<u32>,
    /// Communities added to the speaker-wide ones.
    pub communities: Vec<Community>,
    /// Large communities added to the speaker-wide ones.
    pub large_communities: Vec<LargeCommunity>,
}

/// How a route's local preference is expressed to eBGP peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EbgpPreference {
    /// Not at all.
    #[default]
    None,
    /// MED = base − local_pref, saturating at 0 (higher preference → lower MED → preferred).
    Med {
        /// MED of a route with local_pref 0.
        base: u32,
    },
    /// One extra prepend of our AS per `step` the local_pref is below `base`, at most 8.
    Prepend {
        /// Preference that gets no extra prepend.
        base: u32,
        /// Preference distance per prepend (0 is treated as 1).
        step: u32,
    },
}

/// Per-session inputs of the export policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportCtx {
    /// Our AS.
    pub local_as: u32,
    /// Peer is in our AS.
    pub ibgp: bool,
    /// eBGP preference mapping.
    pub ebgp_preference: EbgpPreference,
    /// Communities added to every route.
    pub communities: Vec<Community>,
    /// Large communities added to every route.
    pub large_communities: Vec<LargeCommunity>,
    /// Resolved IPv4 next hop (None: IPv4 routes cannot be sent on this session).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Resolved IPv6 next hop.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl ExportCtx {
    /// The path attributes this peer gets for a route (without NLRI / MP_REACH, which the
    /// packer adds; NEXT_HOP is set for IPv4 when `v4`).
    pub fn export(&self, route: &RouteAttrs, v4: bool) -> PathAttrs {
        let mut communities: Vec<Community> = self
            .communities
            .iter()
            .chain(&route.communities)
            .copied()
            .collect();
        communities.sort_unstable();
        communities.dedup();
        let mut large: Vec<LargeCommunity> = self
            .large_communities
            .iter()
            .chain(&route.large_communities)
            .copied()
            .collect();
        large.sort_unstable();
        large.dedup();
        let mut attrs = PathAttrs {
            origin: Some(Origin::Igp),
            next_hop: if v4 { self.next_hop_v4 } else { None },
            communities,
            large_communities: large,
            med: route.med,
            ..PathAttrs::default()
        };
        if self.ibgp {
            attrs.as_path = Some(AsPath::default());
            attrs.local_pref = Some(route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        } else {
            let mut prepends = 1;
            match (self.ebgp_preference, route.local_pref) {
                (EbgpPreference::Med { base }, Some(lp)) if route.med.is_none() => {
                    attrs.med = Some(base.saturating_sub(lp));
                }
                (EbgpPreference::Prepend { base, step }, Some(lp)) => {
                    prepends += (base.saturating_sub(lp) / step.max(1)).min(MAX_PREPENDS);
                }
                _ => {}
            }
            attrs.as_path = Some(AsPath::sequence(vec![self.local_as; prepends as usize]));
        }
        attrs
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn ctx(ibgp: bool, pref: EbgpPreference) -> ExportCtx {
        ExportCtx {
            local_as: 65010,
            ibgp,
            ebgp_preference: pref,
            communities: vec![Community::new(65010, 1)],
            large_communities: vec![],
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            next_hop_v6: None,
        }
    }

    fn route(lp: Option<u32>) -> RouteAttrs {
        RouteAttrs {
            local_pref: lp,
            communities: vec![Community::new(65010, 7), Community::new(65010, 1)],
            ..RouteAttrs::default()
        }
    }

    #[test]
    fn ibgp_gets_local_pref_and_empty_path() {
        let a = ctx(true, EbgpPreference::Med { base: 1000 }).export(&route(Some(150)), true);
        assert_eq!(a.local_pref, Some(150));
        assert_eq!(a.med, None);
        assert_eq!(a.as_path, Some(AsPath::default()));
        assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 10)));
        // Speaker-wide and route communities merged, sorted, deduplicated.
        assert_eq!(
            a.communities,
            vec![Community::new(65010, 1), Community::new(65010, 7)]
        );
        let a = ctx(true, EbgpPreference::None).export(&route(None), false);
        assert_eq!(a.local_pref, Some(DEFAULT_LOCAL_PREF));
        assert_eq!(a.next_hop, None);
    }

    #[test]
    fn ebgp_never_gets_local_pref_and_gets_med_from_preference() {
        let a = ctx(false, EbgpPreference::Med { base: 1000 }).export(&route(Some(150)), true);
        assert_eq!(a.local_pref, None);
        assert_eq!(a.med, Some(850));
        assert_eq!(a.as_path, Some(AsPath::sequence(vec![65010])));
        let a = ctx(false, EbgpPreference::Med { base: 100 }).export(&route(Some(150)), true);
        assert_eq!(a.med, Some(0));
        // An explicit MED wins.
        let mut r = route(Some(150));
        r.med = Some(5);
        let a = ctx(false, EbgpPreference::Med { base: 1000 }).export(&r, true);
        assert_eq!(a.med, Some(5));
    }

    #[test]
    fn ebgp_prepends_per_step_capped_at_eight() {
        let c = ctx(
            false,
            EbgpPreference::Prepend {
                base: 200,
                step: 50,
            },
        );
        let len = |lp| {
            c.export(&route(Some(lp)), true)
                .as_path
                .unwrap()
                .asns()
                .count()
        };
        assert_eq!(len(200), 1);
        assert_eq!(len(250), 1);
        assert_eq!(len(150), 2);
        assert_eq!(len(100), 3);
        assert_eq!(len(0), 5);
        let c = ctx(
            false,
            EbgpPreference::Prepend {
                base: 1000,
                step: 0,
            },
        );
        assert_eq!(
            c.export(&route(Some(0)), true)
                .as_path
                .unwrap()
                .asns()
                .count(),
            1 + MAX_PREPENDS as usize
        );
        assert_eq!(c.export(&route(Some(0)), true).med, None);
    }
}
