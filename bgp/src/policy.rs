//! Export policy: what one peer sees for a route (RFC 4271 §5.1, §9.1.3).
//!
//! - iBGP peers get LOCAL_PREF (the route's, 100 when unset) and an empty AS_PATH.
//! - eBGP peers never get LOCAL_PREF (RFC 4271 §5.1.5); the route's preference is expressed by
//!   [`EbgpPreference`] as MED or as extra prepends of our AS, and our AS is prepended.
//! - NEXT_HOP is resolved per session by [`crate::nexthop`] and given here in [`ExportCtx`].

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::packet::{
    AsPath, Community, EncodeCtx, LargeCommunity, MpReach, Origin, PathAttrs, HEADER_LEN,
    MAX_MESSAGE_LEN,
};

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

/// A route whose path attributes leave no room for a prefix in one UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a route with {communities} communities and {large_communities} large communities needs \
     an UPDATE of {bytes} bytes at worst; the limit is {limit}"
)]
pub struct TooLarge {
    /// The UPDATE's size at worst (one /128 NLRI).
    pub bytes: usize,
    /// The BGP message limit (4096, RFC 4271 §4.1).
    pub limit: usize,
    /// Communities after merging speaker-wide and per-route ones.
    pub communities: usize,
    /// Large communities after merging.
    pub large_communities: usize,
}

/// Whether a route with these speaker-wide and per-route communities fits one 4096-byte
/// UPDATE with at least one prefix, whatever the session: LOCAL_PREF and MED both present,
/// the longest AS_PATH (eBGP, our 4-octet AS prepended the most times, sent to a 2-octet
/// speaker with AS4_PATH too), and an MP_REACH_NLRI with a global and a link-local IPv6 next
/// hop and one /128. A pure check, for refusing such a configuration at load; the packer
/// drops (and counts) what does not fit anyway.
pub fn attrs_fit(
    communities: &[Community],
    large_communities: &[LargeCommunity],
    route: &RouteAttrs,
) -> Result<(), TooLarge> {
    let worst_route = RouteAttrs {
        local_pref: Some(0),
        med: Some(0),
        ..route.clone()
    };
    let mut worst: Option<TooLarge> = None;
    for ibgp in [true, false] {
        let ctx = ExportCtx {
            local_as: 4_200_000_000,
            ibgp,
            ebgp_preference: EbgpPreference::Prepend {
                base: u32::MAX,
                step: 1,
            },
            communities: communities.to_vec(),
            large_communities: large_communities.to_vec(),
            next_hop_v4: None,
            next_hop_v6: None,
        };
        let mut a = ctx.export(&worst_route, false);
        a.local_pref = Some(0);
        a.med = Some(0);
        a.mp_reach = Some(MpReach::Ipv6Unicast {
            next_hop: Ipv6Addr::UNSPECIFIED,
            link_local: Some(Ipv6Addr::UNSPECIFIED),
            // One /128: 17 bytes of NLRI.
            nlri: vec![Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 128).unwrap_or_default()],
        });
        for four_octet_as in [true, false] {
            let bytes = HEADER_LEN + 4 + a.encoded_len(&EncodeCtx { four_octet_as });
            if bytes > MAX_MESSAGE_LEN && worst.as_ref().is_none_or(|w| bytes > w.bytes) {
                worst = Some(TooLarge {
                    bytes,
                    limit: MAX_MESSAGE_LEN,
                    communities: a.communities.len(),
                    large_communities: a.large_communities.len(),
                });
            }
        }
    }
    worst.map_or(Ok(()), Err)
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

    #[test]
    fn attrs_fit_finds_the_limit_and_says_how_large() {
        assert_eq!(attrs_fit(&[], &[], &RouteAttrs::default()), Ok(()));
        let comms = |n: u32| -> Vec<Community> { (0..n).map(Community).collect() };
        // The largest count that fits, found by the check itself, is close to what the
        // arithmetic says: 4096 - 23 header - ~110 other attributes = ~990 communities.
        let max = (0..2000)
            .take_while(|&n| attrs_fit(&comms(n), &[], &RouteAttrs::default()).is_ok())
            .last()
            .unwrap();
        assert!((950..1000).contains(&max), "{max}");
        let e = attrs_fit(&comms(max + 1), &[], &RouteAttrs::default()).unwrap_err();
        assert!(e.bytes > 4096 && e.bytes <= 4100, "{e:?}");
        assert_eq!(e.communities as u32, max + 1);
        // Per-route and speaker-wide ones add up (duplicates count once).
        let route = RouteAttrs {
            communities: comms(max + 1)[max as usize - 10..].to_vec(),
            ..RouteAttrs::default()
        };
        assert!(attrs_fit(&comms(max - 10), &[], &route).is_err());
        let dup = RouteAttrs {
            communities: comms(10),
            ..RouteAttrs::default()
        };
        assert!(attrs_fit(&comms(max), &[], &dup).is_ok());
        // Large communities are 12 bytes each.
        let large: Vec<LargeCommunity> = (0..400)
            .map(|i| LargeCommunity {
                global: i,
                local1: 0,
                local2: 0,
            })
            .collect();
        assert!(attrs_fit(&[], &large, &RouteAttrs::default()).is_err());
        assert!(attrs_fit(&[], &large[..300], &RouteAttrs::default()).is_ok());
    }
}
