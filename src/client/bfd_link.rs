//! BFD beside BGP (RFC 5880/5881, RFC 5882 §4.3): for every `[bgp.peer.NAME]` with
//! `bfd = true`, a BFD session to the peer's address; when it goes Down, the BGP session is
//! held down at once ([`bgp::Speaker::set_peer_down`]), so the router — which runs BFD too —
//! and this balancer drop each other's routes within the BFD detection time instead of the
//! BGP hold time. When BFD is Up again (after the `bfd` crate's dampening of flaps), the hold
//! is lifted and BGP connects again.
//!
//! A Down the neighbor signals as AdminDown is its operator taking BFD out, not a path
//! failure (RFC 5882 §3.2): BGP is left alone. BGP never waits for BFD to come Up first: a
//! router without BFD configured still gets its session.

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use crate::daemon::status::BfdRow;
use tracing::{info, warn};

/// The running BFD sessions of the balancer; dropping it leaves them running, call
/// [`BfdLink::shutdown`] to send AdminDown and stop.
#[derive(Clone)]
pub struct BfdLink {
    bfd: bfd::Bfd,
    task: std::sync::Arc<tokio::task::JoinHandle<()>>,
}

/// What a BFD event does to BGP: `Some((peer, Some(reason)))` holds the peer down,
/// `Some((peer, None))` lifts the hold, `None` leaves BGP alone.
pub fn decide(ev: &bfd::BfdEvent) -> Option<(String, Option<String>)> {
    match ev {
        bfd::BfdEvent::Up { name } => Some((name.clone(), None)),
        bfd::BfdEvent::Down {
            remote_admin_down: true,
            ..
        } => None,
        bfd::BfdEvent::Down { name, diag, .. } => {
            Some((name.clone(), Some(format!("BFD down: {diag}"))))
        }
    }
}

/// The `/status` name of a session state.
fn state_name(s: bfd::packet::State) -> &'static str {
    match s {
        bfd::packet::State::AdminDown => "admin_down",
        bfd::packet::State::Down => "down",
        bfd::packet::State::Init => "init",
        bfd::packet::State::Up => "up",
    }
}

/// The BFD session of one peer, if it has `bfd = true`.
fn spec(p: &config::PeerConfig, section: &config::BfdConfig) -> Option<bfd::PeerSpec> {
    let t = p.bfd_timers(section)?;
    let mut s = bfd::PeerSpec::new(p.name.clone(), p.address);
    s.local = p.local_address;
    s.min_tx = t.min_tx;
    s.min_rx = t.min_rx;
    s.multiplier = t.multiplier;
    Some(s)
}

impl BfdLink {
    /// Starts BFD for the peers that ask for it; `Ok(None)` when none does.
    pub async fn start(
        cfg: &config::Config,
        speaker: bgp::Speaker,
    ) -> Result<Option<BfdLink>, bfd::BfdError> {
        let specs: Vec<bfd::PeerSpec> = cfg
            .bgp
            .peers
            .iter()
            .filter_map(|p| spec(p, &cfg.bfd))
            .collect();
        if specs.is_empty() {
            return Ok(None);
        }
        let (bfd, events) = bfd::Bfd::start(bfd::BfdConfig::default())?;
        for s in specs {
            info!(peer = %s.name, remote = %s.remote, min_tx = ?s.min_tx, min_rx = ?s.min_rx,
                  multiplier = s.multiplier, "BFD session configured");
            bfd.add_peer(s).await?;
        }
        let task = tokio::spawn(follow(events, speaker));
        Ok(Some(BfdLink {
            bfd,
            task: std::sync::Arc::new(task),
        }))
    }

    /// Every session's state, by peer name (empty if the driver is gone).
    pub async fn rows(&self) -> std::collections::BTreeMap<String, BfdRow> {
        let Ok(st) = self.bfd.status().await else {
            return Default::default();
        };
        st.peers
            .into_iter()
            .map(|p| {
                let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
                let row = BfdRow {
                    state: state_name(p.state).to_owned(),
                    tx_interval_ms: ms(p.tx_interval),
                    detection_ms: ms(p.detection_time),
                    diag: p.local_diag.to_string(),
                    flaps: p.flaps,
                };
                (p.name, row)
            })
            .collect()
    }

    /// AdminDown to every neighbor (RFC 5880 §6.8.16), then stop.
    pub async fn shutdown(self) {
        // Our own AdminDown must not read as a path failure to the speaker.
        self.task.abort();
        if let Err(e) = self.bfd.shutdown().await {
            warn!(error = %e, "BFD shutdown");
        }
    }
}

/// Applies BFD events to the speaker until the BFD driver ends.
async fn follow(mut events: mpsc::UnboundedReceiver<bfd::BfdEvent>, speaker: bgp::Speaker) {
    let mut held: BTreeSet<String> = BTreeSet::new();
    while let Some(ev) = events.recv().await {
        match decide(&ev) {
            Some((name, Some(reason))) => {
                warn!(peer = %name, %reason, "BFD down: holding the BGP session down");
                if let Err(e) = speaker.set_peer_down(&name, &reason) {
                    warn!(peer = %name, error = %e, "holding the BGP session down failed");
                }
                held.insert(name);
            }
            Some((name, None)) => {
                if held.remove(&name) {
                    info!(peer = %name, "BFD up: the BGP session may connect again");
                    if let Err(e) = speaker.set_peer_up(&name) {
                        warn!(peer = %name, error = %e, "ending the BGP hold-down failed");
                    }
                } else {
                    info!(peer = %name, "BFD up");
                }
            }
            None => info!(?ev, "BFD AdminDown from the neighbor: BGP left alone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bfd::packet::Diag;

    #[test]
    fn a_path_failure_holds_bgp_down_an_up_lifts_it_an_admin_down_does_nothing() {
        let down = bfd::BfdEvent::Down {
            name: "r1".into(),
            diag: Diag::DetectionTimeExpired,
            remote_admin_down: false,
        };
        let (peer, reason) = decide(&down).unwrap();
        assert_eq!(peer, "r1");
        assert!(reason.unwrap().starts_with("BFD down: "));
        let up = bfd::BfdEvent::Up { name: "r1".into() };
        assert_eq!(decide(&up), Some(("r1".into(), None)));
        let admin = bfd::BfdEvent::Down {
            name: "r1".into(),
            diag: Diag::AdminDown,
            remote_admin_down: true,
        };
        assert_eq!(decide(&admin), None);
    }
}
