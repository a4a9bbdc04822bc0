//! SIGHUP on a balancer: what a new configuration changes, and what of it can be applied to
//! the running daemon (pure: the loop performs the plan).
//!
//! Applied at once: the core's intervals, `withdraw_grace` and drain settings; the firewall
//! check; the announce interface (addresses moved make-before-break: put on the new interface,
//! then taken off the old one, announced VIPs keep their route throughout); BGP peers added,
//! removed or changed (only changed peers' sessions restart); speaker-wide BGP attributes
//! (communities, next hops, eBGP preference) as UPDATEs without a session reset. Everything
//! else needs a restart and is named in the log.

use config::Config;

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
    /// Speaker-wide attributes changed (communities, next hops, eBGP preference).
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
        need(ob.connect_retry != nb.connect_retry, "[bgp] connect_retry");
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
                    != (nb.ebgp_preference, nb.ebgp_med_base, nb.ebgp_prepend_step),
            restart,
        }
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
