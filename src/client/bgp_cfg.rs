//! From `[bgp]` / `[bgp.peer.NAME]` to the speaker, and the speaker's peers to `/status`.

use std::time::Duration;

use tracing::{info, warn};

/// The speaker's settings from the config. `restarting`: this process follows a graceful
/// restart (RFC 4724) of one that left the data plane in place; its OPENs say so and
/// End-of-RIB waits for [`bgp::Speaker::release_end_of_rib`].
pub fn speaker_config(b: &config::BgpConfig, restarting: bool) -> bgp::SpeakerConfig {
    let (communities, large_communities) = config::split_communities(&b.communities);
    bgp::SpeakerConfig {
        local_as: b.local_as.unwrap_or(0),
        router_id: b.router_id.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        hold_time: b.hold_time,
        connect_retry: b.connect_retry,
        graceful_restart: b.graceful_restart.then_some(b.graceful_restart_time),
        restarting: restarting && b.graceful_restart,
        defer_end_of_rib: restarting && b.graceful_restart,
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

/// The settings a reload gives the running speaker: `new`'s attributes (communities, next
/// hops, eBGP preference, connect retry) with the settings its sessions opened with (AS,
/// router id, hold time, graceful restart: a change of those needs a restart) and its
/// start-only ones kept, so that `Speaker::reconfigure` never resets a session.
pub fn attributes_of(running: &bgp::SpeakerConfig, new: &config::BgpConfig) -> bgp::SpeakerConfig {
    bgp::SpeakerConfig {
        local_as: running.local_as,
        router_id: running.router_id,
        hold_time: running.hold_time,
        graceful_restart: running.graceful_restart,
        restarting: running.restarting,
        defer_end_of_rib: running.defer_end_of_rib,
        listen: running.listen,
        ..speaker_config(new, false)
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

/// Starts the speaker with every configured peer (`restarting`: see [`speaker_config`]).
pub fn start_speaker(
    cfg: &config::Config,
    restarting: bool,
) -> Result<
    (
        bgp::Speaker,
        tokio::sync::mpsc::UnboundedReceiver<bgp::PeerEvent>,
    ),
    bgp::BgpError,
> {
    let (speaker, events) = bgp::Speaker::start(speaker_config(&cfg.bgp, restarting))?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    fn bgp(extra: &str) -> config::BgpConfig {
        config::Config::from_strs(
            &format!(
                "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
                 router_id = 192.0.2.1\n{extra}"
            ),
            None,
        )
        .unwrap()
        .bgp
    }

    #[test]
    fn a_reload_takes_the_attributes_and_keeps_what_the_sessions_opened_with() {
        let running = super::speaker_config(&bgp("graceful_restart = true\n"), true);
        assert!(running.restarting && running.defer_end_of_rib);
        let new = bgp("communities = 65000:7 65000:1:2\nhold_time = 30\nnext_hop_v4 = 192.0.2.9\n");
        let next = super::attributes_of(&running, &new);
        assert_eq!(next.communities, vec![bgp::Community(65000 << 16 | 7)]);
        assert_eq!(next.large_communities.len(), 1);
        assert_eq!(next.next_hop_v4, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(next.hold_time, 90, "a new hold time needs a restart");
        assert!(next.restarting && next.defer_end_of_rib);
        assert_eq!(next.graceful_restart, Some(120));
        // Without graceful_restart, no restarting flag whatever the caller says.
        let off = super::speaker_config(&bgp(""), true);
        assert!(!off.restarting && !off.defer_end_of_rib);
    }
}
