//! What the balancer daemon touches outside itself, each behind a small trait: the BGP speaker
//! ([`Routes`]), the VIP addresses ([`Addresses`]), the kernel's IPVS table ([`Services`]) and
//! the firewall hook ([`Firewall`]). The real ones wrap `bgp::Speaker`, `announce::VipAddrs`,
//! [`super::kernel::Kernel`] and `announce::FirewallHook`; tests pass fakes that record what
//! was done and when.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use announce::{FirewallHook, VipAddrs};
use ipnet::IpNet;
use ipvs::Tree;

use super::kernel::{Applied, Kernel};
use crate::daemon::bus::BoxFuture;

/// The BGP speaker, as the daemon uses it.
pub trait Routes: Send + Sync {
    /// Announces `vip` (a /32 or /128) with `attrs` (see [`route_attrs`]), replacing an
    /// earlier announce: an implicit replace at the routers, no withdraw.
    fn announce(&self, vip: IpAddr, attrs: bgp::RouteAttrs);
    /// Withdraws `vip`; the future resolves once the UPDATE is written to every Established
    /// peer (at once when none is).
    fn withdraw(&self, vip: IpAddr) -> BoxFuture<'static, ()>;
    /// Announces many VIPs at once, in order (a VIP given twice takes its last attributes).
    /// The speaker does it with one lock and one wake-up per peer; the default announces one
    /// by one.
    fn announce_many(&self, routes: Vec<(IpAddr, bgp::RouteAttrs)>) {
        for (vip, attrs) in routes {
            self.announce(vip, attrs);
        }
    }
    /// Withdraws many VIPs at once; the future resolves once all of them are on the wire, as
    /// [`Routes::withdraw`] does for one. The default withdraws one by one.
    fn withdraw_many(&self, vips: Vec<IpAddr>) -> BoxFuture<'static, ()> {
        let each = futures_util::future::join_all(vips.into_iter().map(|v| self.withdraw(v)));
        Box::pin(async move {
            each.await;
        })
    }
    /// Status of every peer.
    fn peers(&self) -> BoxFuture<'_, Vec<bgp::PeerStatus>>;
    /// Cease to every peer (routers withdraw everything at once), bounded.
    fn shutdown(&self, reason: &str) -> BoxFuture<'static, ()>;
}

/// VIP host addresses on the announce interface.
pub trait Addresses: Send + Sync {
    /// Puts `vip` on the interface (present already: fine).
    fn add(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>>;
    /// Takes `vip` off the interface (absent already: fine).
    fn remove(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>>;
    /// Removes addresses of `mine` that are not in `keep` (left from an earlier run); returns
    /// what failed.
    fn clean(
        &self,
        keep: BTreeSet<IpAddr>,
        mine: BTreeSet<IpAddr>,
    ) -> BoxFuture<'static, Vec<String>>;
}

/// The kernel's IPVS table.
pub trait Services: Send + Sync {
    /// Makes the services of the `owned` VIPs (and the fwmark services `marks` gives them)
    /// equal `wanted`.
    fn reconcile(
        &self,
        wanted: Tree,
        owned: BTreeSet<IpAddr>,
        marks: ipvs::FwmarkVips,
    ) -> BoxFuture<'static, Result<Applied, String>>;
    /// Applies `plan` as is, without a dump.
    fn apply(&self, plan: ipvs::Plan) -> BoxFuture<'static, Result<Applied, String>>;
    /// Active + inactive connections of `vip`'s services on this balancer (its fwmark
    /// services by `marks` included).
    fn conns(
        &self,
        vip: IpAddr,
        marks: ipvs::FwmarkVips,
    ) -> BoxFuture<'static, Result<u64, String>>;
}

/// The firewall check run before a VIP is prepared.
pub trait Firewall: Send + Sync {
    /// Ok when the firewall is ready for `vip` (or there is no check).
    fn check(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>>;
}

/// `/32` or `/128` for a VIP.
pub fn host_net(vip: IpAddr) -> IpNet {
    IpNet::from(vip)
}

/// GRACEFUL_SHUTDOWN (RFC 8326).
pub const GRACEFUL_SHUTDOWN: bgp::Community = bgp::Community(0xffff_0000);

/// The attributes of a VIP's route: its LOCAL_PREF and its own communities; drained, also
/// GRACEFUL_SHUTDOWN and LOCAL_PREF 0 (which the export policy turns into the highest MED or
/// the most prepends on eBGP sessions). Communities that do not parse were refused on
/// receipt; one here would be skipped.
pub fn route_attrs(local_pref: u32, drain: bool, communities: &[String]) -> bgp::RouteAttrs {
    let mut attrs = bgp::RouteAttrs {
        local_pref: Some(if drain { 0 } else { local_pref }),
        ..Default::default()
    };
    for c in communities
        .iter()
        .filter_map(|c| config::Community::parse(c))
    {
        match c {
            config::Community::Standard(v) => attrs.communities.push(bgp::Community(v)),
            config::Community::Large {
                global,
                local1,
                local2,
            } => attrs.large_communities.push(bgp::LargeCommunity {
                global,
                local1,
                local2,
            }),
        }
    }
    if drain {
        attrs.communities.push(GRACEFUL_SHUTDOWN);
    }
    attrs
}

/// [`route_attrs`], unless the VIP's own communities leave no room for its prefix in an
/// UPDATE beside the speaker-wide ones `s` adds (RFC 4271 §4.1): then `Err` with the route's
/// attributes without them, and why.
pub fn fitting_route_attrs(
    s: &bgp::SpeakerConfig,
    local_pref: u32,
    drain: bool,
    communities: &[String],
) -> Result<bgp::RouteAttrs, (bgp::RouteAttrs, bgp::TooLarge)> {
    let attrs = route_attrs(local_pref, drain, communities);
    match bgp::attrs_fit(&s.communities, &s.large_communities, &attrs) {
        Ok(()) => Ok(attrs),
        Err(too) => Err((route_attrs(local_pref, drain, &[]), too)),
    }
}

impl Routes for bgp::Speaker {
    fn announce(&self, vip: IpAddr, attrs: bgp::RouteAttrs) {
        bgp::Speaker::announce(self, host_net(vip), attrs);
    }

    fn announce_many(&self, routes: Vec<(IpAddr, bgp::RouteAttrs)>) {
        bgp::Speaker::announce_many(self, routes.into_iter().map(|(vip, a)| (host_net(vip), a)));
    }

    fn withdraw_many(&self, vips: Vec<IpAddr>) -> BoxFuture<'static, ()> {
        let n = vips.len();
        let on_wire = bgp::Speaker::withdraw_many(self, vips.into_iter().map(host_net));
        Box::pin(async move {
            let report = on_wire.await;
            tracing::debug!(vips = n, ?report, "withdrawals written");
        })
    }

    /// Resolves once every Established peer has the UPDATE on its socket, or its session
    /// ended (the router then drops the route itself).
    fn withdraw(&self, vip: IpAddr) -> BoxFuture<'static, ()> {
        let on_wire = bgp::Speaker::withdraw(self, host_net(vip));
        Box::pin(async move {
            let report = on_wire.await;
            tracing::debug!(%vip, ?report, "withdrawal written");
        })
    }

    fn peers(&self) -> BoxFuture<'_, Vec<bgp::PeerStatus>> {
        Box::pin(bgp::Speaker::peers(self))
    }

    fn shutdown(&self, reason: &str) -> BoxFuture<'static, ()> {
        let s = self.clone();
        let reason = reason.to_owned();
        Box::pin(async move { s.shutdown(&reason).await })
    }
}

impl Addresses for Arc<VipAddrs> {
    fn add(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        let a = self.clone();
        Box::pin(async move { VipAddrs::add(&a, vip).await.map_err(|e| e.to_string()) })
    }

    fn remove(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        let a = self.clone();
        Box::pin(async move { VipAddrs::remove(&a, vip).await.map_err(|e| e.to_string()) })
    }

    fn clean(
        &self,
        keep: BTreeSet<IpAddr>,
        mine: BTreeSet<IpAddr>,
    ) -> BoxFuture<'static, Vec<String>> {
        let a = self.clone();
        Box::pin(async move {
            match a.plan(&keep, &mine).await {
                Ok(plan) => a
                    .execute(plan)
                    .await
                    .into_iter()
                    .map(|(op, e)| format!("{op}: {e}"))
                    .collect(),
                Err(e) => vec![format!("cannot list VIP addresses: {e}")],
            }
        })
    }
}

impl Services for Kernel {
    fn apply(&self, plan: ipvs::Plan) -> BoxFuture<'static, Result<Applied, String>> {
        let k = self.clone();
        Box::pin(async move { Kernel::apply(&k, plan).await.map_err(|e| e.to_string()) })
    }

    fn conns(
        &self,
        vip: IpAddr,
        marks: ipvs::FwmarkVips,
    ) -> BoxFuture<'static, Result<u64, String>> {
        let k = self.clone();
        Box::pin(async move {
            Kernel::conns(&k, vip, marks)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn reconcile(
        &self,
        wanted: Tree,
        owned: BTreeSet<IpAddr>,
        marks: ipvs::FwmarkVips,
    ) -> BoxFuture<'static, Result<Applied, String>> {
        let k = self.clone();
        Box::pin(async move {
            Kernel::reconcile(&k, wanted, owned, marks)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl Firewall for FirewallHook {
    fn check(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        let f = self.clone();
        Box::pin(async move {
            if f.command.is_empty() {
                return Ok(());
            }
            FirewallHook::check(&f, vip)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_attrs_carry_the_vips_communities_and_the_drain() {
        let a = route_attrs(150, false, &["65000:100".into(), "65000:1:2".into()]);
        assert_eq!(a.local_pref, Some(150));
        assert_eq!(a.communities, vec![bgp::Community(65000 << 16 | 100)]);
        assert_eq!(a.large_communities.len(), 1);
        let d = route_attrs(150, true, &["65000:100".into()]);
        assert_eq!(d.local_pref, Some(0));
        assert!(d.communities.contains(&GRACEFUL_SHUTDOWN));
        assert!(d.communities.contains(&bgp::Community(65000 << 16 | 100)));
    }

    #[test]
    fn a_vips_communities_that_do_not_fit_beside_the_speakers_are_left_out() {
        let mut s = bgp::SpeakerConfig::new(65000, "192.0.2.1".parse().unwrap());
        s.communities = (0..900).map(|i| bgp::Community(65000 << 16 | i)).collect();
        let own: Vec<String> = (0..64).map(|i| format!("65000:{i}:{i}")).collect();
        let few = &own[..4];
        let a = fitting_route_attrs(&s, 150, false, few).unwrap();
        assert_eq!(a.large_communities.len(), 4);
        let (a, too) = fitting_route_attrs(&s, 150, true, &own).unwrap_err();
        assert!(too.bytes > too.limit);
        assert!(a.large_communities.is_empty());
        assert_eq!(
            (a.local_pref, a.communities),
            (Some(0), vec![GRACEFUL_SHUTDOWN])
        );
        s.communities.clear();
        assert!(fitting_route_attrs(&s, 150, true, &own).is_ok());
    }
}
