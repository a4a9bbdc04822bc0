//! From `[bgp]` / `[bgp.peer.NAME]` to the speaker, and the speaker's peers to `/status`.

use std::time::Duration;

use tracing::{info, warn};

/// The speaker's settings from the config.
pub fn speaker_config(b: &config::BgpConfig) -> bgp::SpeakerConfig {
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    for c in &b.communities {
        match *c {
            config::Community::Standard(v) => communities.push(bgp::Community(v)),
            config::Community::Large {
                global,
                local1,
                local2,
            } => large_communities.push(bgp::LargeCommunity {
                global,
                local1,
                local2,
            }),
        }
    }
    bgp::SpeakerConfig {
        local_as: b.local_as.unwrap_or(0),
        router_id: b.router_id.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        hold_time: b.hold_time,
        connect_retry: b.connect_retry,
        graceful_restart: b.graceful_restart.then_some(b.graceful_restart_time),
        restarting: false,
        defer_end_of_rib: false,
        ebgp_preference: match b.ebgp_preference {
            config::EbgpPreference::Med => bgp::EbgpPreference::Med {
                base: b.ebgp_med_base,
            },
            config::EbgpPreference::Prepend => bgp::EbgpPreference::Prepend {
                base: b.ebgp_med_base,
                step: b.ebgp_prepend_step,
            },
            config::EbgpPreference::None => bgp::EbgpPreference::None,
        },
        communities,
        large_communities,
        next_hop_v4: b.next_hop_v4,
        next_hop_v6: b.next_hop_v6,
        listen: None,
    }
}

/// One peer's settings from the config.
pub fn peer_config(p: &config::PeerConfig) -> bgp::PeerConfig {
    bgp::PeerConfig {
        name: p.name.clone(),
        address: p.address,
        remote_as: p.remote_as,
        port: p.port,
        passive: p.passive,
        password: p.password.as_ref().map(|s| s.expose().as_bytes().to_vec()),
        local_address: p.local_address,
        ttl_security: p.ttl_security,
        hold_time: p.hold_time,
        next_hop_v4: p.next_hop_v4,
        next_hop_v6: p.next_hop_v6,
    }
}

/// Starts the speaker with every configured peer.
pub fn start_speaker(
    cfg: &config::Config,
) -> Result<
    (
        bgp::Speaker,
        tokio::sync::mpsc::UnboundedReceiver<bgp::PeerEvent>,
    ),
    bgp::BgpError,
> {
    let (speaker, events) = bgp::Speaker::start(speaker_config(&cfg.bgp))?;
    for p in &cfg.bgp.peers {
        speaker.add_peer(peer_config(p))?;
        info!(peer = %p.name, address = %p.address, remote_as = p.remote_as, "BGP peer configured");
    }
    Ok((speaker, events))
}

/// SIGHUP: adds new peers, restarts changed ones, removes dropped ones; untouched sessions
/// stay up. Speaker-wide changes (AS, router id) need a restart and are reported.
pub fn reload_peers(speaker: &bgp::Speaker, old: &config::Config, new: &config::Config) {
    if (old.bgp.local_as, old.bgp.router_id) != (new.bgp.local_as, new.bgp.router_id) {
        warn!("local_as/router_id changed: restart the daemon to apply them");
    }
    for p in &old.bgp.peers {
        if !new.bgp.peers.iter().any(|n| n.name == p.name) {
            info!(peer = %p.name, "BGP peer removed");
            if let Err(e) = speaker.remove_peer(&p.name) {
                warn!(peer = %p.name, error = %e, "removing peer failed");
            }
        }
    }
    for p in &new.bgp.peers {
        if old.bgp.peers.iter().any(|o| o == p) {
            continue;
        }
        info!(peer = %p.name, "BGP peer added or changed");
        if let Err(e) = speaker.add_peer(peer_config(p)) {
            warn!(peer = %p.name, error = %e, "adding peer failed");
        }
    }
}

/// A peer row of `/status`.
pub fn peer_json(p: &bgp::PeerStatus) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "address": p.address.to_string(),
        "remote_as": p.remote_as,
        "state": p.state,
        "uptime_s": p.uptime_secs.map(|s| Duration::from_secs(s).as_secs_f64()),
        "routes_sent": p.routes_sent,
        "updates_sent": p.updates_sent,
        "msgs_in": p.msgs_in,
        "msgs_out": p.msgs_out,
        "malformed_in": p.malformed_in,
        "last_error": p.last_error,
    })
}
