//! BFD (RFC 5880/5881) beside the BGP sessions of the peers with `bfd = true`: a BFD Down
//! holds the BGP peer down at once (`Speaker::set_peer_down`: the session is torn down and
//! the routers drop the balancer's routes within the detection time, not the hold time), an
//! Up (dampened by the bfd crate) lets it connect again (`Speaker::set_peer_up`).
//!
//! ```text
//!  bfd::Bfd ─ BfdEvent ─▶ forwarding task ─ action() ─▶ Speaker::set_peer_down / set_peer_up
//! ```
//!
//! A Down the neighbor signalled with AdminDown is its operator taking BFD away, not a path
//! failure (RFC 5882 §3.2): the BGP session is left alone. Peers are read at start; a reload
//! that changes `bfd` settings needs a restart.

use tracing::{error, info, warn};

/// The BFD sessions of the config: one per peer with `bfd = true`, with its timers.
pub fn peer_specs(cfg: &config::Config) -> Vec<bfd::PeerSpec> {
    cfg.bgp
        .peers
        .iter()
        .filter_map(|p| {
            let t = p.bfd_timers(&cfg.bfd)?;
            Some(bfd::PeerSpec {
                local: p.local_address,
                min_tx: t.min_tx,
                min_rx: t.min_rx,
                multiplier: t.multiplier,
                ..bfd::PeerSpec::new(p.name.clone(), p.address)
            })
        })
        .collect()
}

/// What a BFD event does to the BGP peer of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hold the peer down, with this reason.
    HoldDown(String, String),
    /// End the hold-down.
    Release(String),
    /// Nothing (the neighbor took BFD down administratively).
    Ignore(String),
}

/// The action for one event.
pub fn action(ev: bfd::BfdEvent) -> Action {
    match ev {
        bfd::BfdEvent::Up { name } => Action::Release(name),
        bfd::BfdEvent::Down {
            name,
            remote_admin_down: true,
            ..
        } => Action::Ignore(name),
        bfd::BfdEvent::Down { name, diag, .. } => {
            let reason = format!("BFD down: {diag}");
            Action::HoldDown(name, reason)
        }
    }
}

/// Starts BFD for the peers that ask for it (none: nothing runs) and ties its events to
/// `speaker` in a task that lives as long as the process.
pub async fn start(cfg: &config::Config, speaker: bgp::Speaker) -> Result<(), bfd::BfdError> {
    let specs = peer_specs(cfg);
    if specs.is_empty() {
        return Ok(());
    }
    let (bfd, mut events) = bfd::Bfd::start(bfd::BfdConfig::default())?;
    for s in specs {
        info!(peer = %s.name, address = %s.remote, "BFD session configured");
        bfd.add_peer(s).await?;
    }
    tokio::spawn(async move {
        // The handle keeps the driver running.
        let _bfd = bfd;
        while let Some(ev) = events.recv().await {
            let r = match action(ev) {
                Action::HoldDown(name, reason) => {
                    warn!(peer = %name, %reason, "BFD down: BGP session held down");
                    speaker.set_peer_down(&name, &reason)
                }
                Action::Release(name) => {
                    info!(peer = %name, "BFD up: BGP session may connect");
                    speaker.set_peer_up(&name)
                }
                Action::Ignore(name) => {
                    info!(peer = %name, "BFD taken down by the neighbor (AdminDown): BGP session left alone");
                    Ok(())
                }
            };
            if let Err(e) = r {
                error!(error = %e, "BFD event not applied to the BGP peer");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn peers_with_bfd_get_a_session_with_their_timers() {
        let cfg = config::Config::from_strs(
            "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
             router_id = 192.0.2.1\n[bfd]\nmin_rx = 0.1\n[bgp.peer.r1]\naddress = 192.0.2.254\n\
             remote_as = 65000\nbfd = true\nbfd_multiplier = 5\nlocal_address = 192.0.2.1\n\
             [bgp.peer.r2]\naddress = 192.0.2.253\nremote_as = 65000\n",
            None,
        )
        .unwrap();
        let specs = peer_specs(&cfg);
        assert_eq!(specs.len(), 1, "r2 has no bfd");
        let s = &specs[0];
        assert_eq!((s.name.as_str(), s.multiplier), ("r1", 5));
        assert_eq!(s.min_rx, Duration::from_millis(100));
        assert_eq!(s.min_tx, Duration::from_millis(300));
        assert_eq!(s.local, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(s.remote_port, bfd::CONTROL_PORT);
    }

    #[test]
    fn down_holds_the_peer_down_up_releases_it_admin_down_is_left_alone() {
        let down = |admin| bfd::BfdEvent::Down {
            name: "r1".into(),
            diag: bfd::packet::Diag::DetectionTimeExpired,
            remote_admin_down: admin,
        };
        match action(down(false)) {
            Action::HoldDown(n, why) => {
                assert_eq!(n, "r1");
                assert!(why.starts_with("BFD down: "), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(action(down(true)), Action::Ignore("r1".into()));
        assert_eq!(
            action(bfd::BfdEvent::Up { name: "r1".into() }),
            Action::Release("r1".into())
        );
    }
}
