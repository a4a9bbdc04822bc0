//! SIGHUP on a balancer: what a new configuration changes, and what of it can be applied to
//! the running daemon (pure: the loop performs the plan).
//!
//! Applied at once: the core's intervals, `withdraw_grace` and drain settings; the firewall
//! check; the announce interface (addresses moved make-before-break: put on the new interface,
//! then taken off the old one, announced VIPs keep their route throughout); BGP peers added,
//! removed or changed (only changed peers' sessions restart); speaker-wide BGP attributes
//! (communities, next hops, eBGP preference, connect retry) through `Speaker::reconfigure`:
//! routes whose attributes change go out again as UPDATEs (an implicit replace at the
//! routers: no withdraw, no session reset). Everything else needs a restart and is named in
//! the log.

use std::path::PathBuf;
use std::sync::Arc;

use config::Config;
use tracing::{error, info, warn};

use super::{bgp_cfg, firewall_hook, settings, Client};

/// What a reload does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Intervals, `withdraw_grace`, drain settings or sync directories changed.
    pub settings: bool,
    /// `firewall_check` or `firewall_update_try` changed.
    pub firewall: bool,
    /// The announce interface changed: (old, new).
    pub interface: Option<(String, String)>,
    /// Peers were added, removed or changed.
    pub peers: bool,
    /// Speaker-wide attributes changed (communities, next hops, eBGP preference, connect
    /// retry).
    pub attributes: bool,
    /// Keys that changed and need a restart.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// What `new` changes from `old`.
    pub fn of(old: &Config, new: &Config) -> ReloadPlan {
        let (om, nm) = (&old.main, &new.main);
        let (oa, na) = (&old.announce, &new.announce);
        let (ob, nb) = (&old.bgp, &new.bgp);
        let mut restart = Vec::new();
        let mut need = |changed: bool, key: &'static str| {
            if changed {
                restart.push(key);
            }
        };
        need(om.hostname != nm.hostname, "[main] hostname");
        need(om.amqp_server != nm.amqp_server, "[main] amqp_server");
        need(
            om.amqp_queue_type != nm.amqp_queue_type,
            "[main] amqp_queue_type",
        );
        need(om.ipvs != nm.ipvs, "[main] ipvs");
        need(om.http_listen != nm.http_listen, "[main] http_listen");
        need(
            om.control_socket != nm.control_socket,
            "[main] control_socket",
        );
        need(om.state_dir != nm.state_dir, "[main] state_dir");
        need(
            om.client_requests_queue_limit != nm.client_requests_queue_limit,
            "[main] client_requests_queue_limit",
        );
        need(old.messages != new.messages, "[messages]");
        need(ob.local_as != nb.local_as, "[bgp] local_as");
        need(ob.router_id != nb.router_id, "[bgp] router_id");
        need(ob.hold_time != nb.hold_time, "[bgp] hold_time");
        need(
            (ob.graceful_restart, ob.graceful_restart_time)
                != (nb.graceful_restart, nb.graceful_restart_time),
            "[bgp] graceful_restart",
        );
        let bfd_of = |c: &Config| -> Vec<_> {
            c.bgp
                .peers
                .iter()
                .map(|p| (p.name.clone(), p.bfd_timers(&c.bfd)))
                .collect()
        };
        need(bfd_of(old) != bfd_of(new), "[bfd] / the peers' bfd keys");
        ReloadPlan {
            settings: om.heartbeat_interval != nm.heartbeat_interval
                || om.tree_request_interval != nm.tree_request_interval
                || om.announces_request_interval != nm.announces_request_interval
                || oa.withdraw_grace != na.withdraw_grace
                || (oa.drain_min, oa.drain_conns, oa.drain_timeout)
                    != (na.drain_min, na.drain_conns, na.drain_timeout)
                || old.client.sync_dirs != new.client.sync_dirs,
            firewall: oa.firewall_check != na.firewall_check
                || om.firewall_update_try != nm.firewall_update_try,
            interface: (oa.interface != na.interface).then(|| {
                (
                    oa.interface.as_str().to_owned(),
                    na.interface.as_str().to_owned(),
                )
            }),
            peers: ob.peers != nb.peers,
            attributes: ob.communities != nb.communities
                || (ob.next_hop_v4, ob.next_hop_v6) != (nb.next_hop_v4, nb.next_hop_v6)
                || (ob.ebgp_preference, ob.ebgp_med_base, ob.ebgp_prepend_step)
                    != (nb.ebgp_preference, nb.ebgp_med_base, nb.ebgp_prepend_step)
                || ob.connect_retry != nb.connect_retry,
            restart,
        }
    }
}

impl Client {
    /// SIGHUP: applies what can be applied (see [`ReloadPlan`]) and names in the log
    /// what needs a restart.
    pub(super) async fn reload(&mut self) {
        let path: PathBuf = self.cfg.file.clone();
        let new = match config::Config::load(&path) {
            Ok(new) => new,
            Err(e) => {
                error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        let plan = ReloadPlan::of(&self.cfg, &new);
        for key in &plan.restart {
            warn!(
                key,
                "changed in the configuration: applied at the next restart"
            );
        }
        if plan.settings {
            self.core.reconfigure(settings(&new));
        }
        if plan.firewall {
            self.edges.firewall = Arc::new(firewall_hook(&new));
        }
        if let Some((from, to)) = &plan.interface {
            self.move_interface(from, to).await;
        }
        if let Some(s) = &self.edges.speaker {
            if plan.peers {
                bgp_cfg::reload_peers(s, &self.cfg, &new);
            }
            if plan.attributes {
                let next = bgp_cfg::attributes_of(&self.running_speaker, &new.bgp);
                match s.reconfigure(next.clone()) {
                    Ok(r) => {
                        info!(result = ?r, "[bgp] attributes applied: routes whose attributes changed sent again as UPDATEs, sessions kept");
                        self.running_speaker = next;
                    }
                    Err(e) => {
                        error!(error = %e, "[bgp] attributes refused: the running ones stay")
                    }
                }
            }
        }
        info!(config = %path.display(), "configuration reloaded");
        self.cfg = new;
        self.fallback_reconfigure();
    }

    /// Moves the VIP addresses to another interface, make-before-break: every address in
    /// use is put on the new interface before any is taken off the old one, so an announced
    /// VIP never lacks its address. On failure the old interface stays in use.
    async fn move_interface(&mut self, from: &str, to: &str) {
        let Some(make) = self.edges.addrs_on.as_ref() else {
            warn!(
                from,
                to, "[announce] interface changed: applied at the next restart"
            );
            return;
        };
        let new = match make(to.to_owned()).await {
            Ok(a) => a,
            Err(e) => {
                error!(to, error = %e, "cannot use the new announce interface: the old one stays");
                return;
            }
        };
        let busy = self.core.busy();
        for vip in &busy {
            if let Err(e) = new.add(*vip).await {
                error!(%vip, to, error = %e, "cannot put the VIP on the new interface: the old one stays");
                for done in &busy {
                    let _ = new.remove(*done).await;
                }
                return;
            }
        }
        let old = std::mem::replace(&mut self.edges.addrs, new);
        for vip in &busy {
            if let Err(e) = old.remove(*vip).await {
                warn!(%vip, from, error = %e, "VIP address left on the old interface");
            }
        }
        info!(
            from,
            to,
            vips = busy.len(),
            "VIP addresses moved to the new interface"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
             router_id = 192.0.2.1\n[bgp.peer.r1]\naddress = 192.0.2.254\nremote_as = 65000\n{extra}"
        );
        Config::from_strs(&text, None).unwrap()
    }

    #[test]
    fn each_change_lands_in_its_part_of_the_plan() {
        let base = cfg("");
        assert_eq!(ReloadPlan::of(&base, &base), ReloadPlan::default());
        let p = ReloadPlan::of(&base, &cfg("[announce]\nwithdraw_grace = 1\n"));
        assert!(p.settings && p.restart.is_empty());
        let p = ReloadPlan::of(&base, &cfg("[announce]\ninterface = vip0\n"));
        assert_eq!(p.interface, Some(("lo".into(), "vip0".into())));
        let p = ReloadPlan::of(
            &base,
            &cfg("[announce]\nfirewall_check = /usr/local/sbin/fw\n"),
        );
        assert!(p.firewall);
        let new = Config::from_strs(
            "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
              router_id = 192.0.2.1\ncommunities = 65000:7\n[bgp.peer.r1]\naddress = 192.0.2.254\n\
              remote_as = 65000\n",
            None,
        )
        .unwrap();
        let p = ReloadPlan::of(&base, &new);
        assert!(p.attributes && !p.peers && p.restart.is_empty());
        let p = ReloadPlan::of(&base, &cfg("").clone());
        assert!(!p.attributes);
        let retry = Config::from_strs(
            "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
              router_id = 192.0.2.1\nconnect_retry = 2\n[bgp.peer.r1]\naddress = 192.0.2.254\n\
              remote_as = 65000\n",
            None,
        )
        .unwrap();
        let p = ReloadPlan::of(&base, &retry);
        assert!(
            p.attributes && p.restart.is_empty(),
            "connect retry applies at runtime"
        );
        let p = ReloadPlan::of(
            &base,
            &cfg("[bgp.peer.r2]\naddress = 192.0.2.253\nremote_as = 65001\n"),
        );
        assert!(p.peers);
        let other = Config::from_strs(
            "[main]\namqp_server = amqp://u@b/\nhostname = lb2\n[bgp]\nlocal_as = 65001\n\
             router_id = 192.0.2.1\n[bgp.peer.r1]\naddress = 192.0.2.254\nremote_as = 65000\n",
            None,
        )
        .unwrap();
        assert_eq!(
            ReloadPlan::of(&base, &other).restart,
            vec!["[main] hostname", "[bgp] local_as"]
        );
    }
}
