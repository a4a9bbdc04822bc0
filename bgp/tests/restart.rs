//! Graceful restart, restarting-speaker side (RFC 4724), over loopback: the Restart State
//! and Forwarding State bits in the first OPEN after a restart only, a close without a
//! NOTIFICATION, and End-of-RIB held back until released.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bgp::packet::{Capability, Family, GracefulRestart, Message, Open};
use bgp::{PeerEvent, Speaker, SpeakerConfig};

mod common;
use common::*;

fn gr(open: &Open) -> GracefulRestart {
    open.capabilities
        .iter()
        .find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
        .expect("no graceful restart capability")
}

#[tokio::test]
async fn restart_bits_only_until_the_first_session() {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(SpeakerConfig {
        graceful_restart: Some(120),
        restarting: true,
        ..speaker_cfg()
    })
    .unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (p, open) = MiniPeer::handshake(s, 65010, 90).await;
    let g = gr(&open);
    assert!(g.restart_state, "{g:?}");
    assert_eq!(g.restart_time, 120);
    assert_eq!(
        g.families,
        vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)]
    );
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    drop(p); // the session drops: the next OPEN is an ordinary one
    let (s, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .unwrap()
        .unwrap();
    let (_p, open) = MiniPeer::handshake(s, 65010, 90).await;
    let g = gr(&open);
    assert!(!g.restart_state, "{g:?}");
    assert_eq!(
        g.families,
        vec![(Family::IPV4_UNICAST, false), (Family::IPV6_UNICAST, false)]
    );
}

#[tokio::test]
async fn shutdown_for_restart_closes_without_a_notification() {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(SpeakerConfig {
        graceful_restart: Some(120),
        ..speaker_cfg()
    })
    .unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, open) = MiniPeer::handshake(s, 65010, 90).await;
    assert!(!gr(&open).restart_state);
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    tokio::time::timeout(Duration::from_secs(2), sp.shutdown_for_restart())
        .await
        .expect("shutdown_for_restart did not return");
    loop {
        match p.recv().await {
            Some(Message::Notification(n)) => panic!("NOTIFICATION sent: {n}"),
            Some(_) => continue,
            None => break,
        }
    }
}

#[tokio::test]
async fn deferred_end_of_rib_follows_the_table_once_released() {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(SpeakerConfig {
        graceful_restart: Some(120),
        restarting: true,
        defer_end_of_rib: true,
        ..speaker_cfg()
    })
    .unwrap();
    // Loaded before the peer: part of the first dump.
    sp.announce(net("198.51.100.1/32"), lp(100));
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    let u = p.update().await;
    assert_eq!(u.nlri, vec!["198.51.100.1/32".parse().unwrap()]);
    // Announced after the session came up, before the release: still ahead of End-of-RIB.
    sp.announce(net("198.51.100.2/32"), lp(100));
    let u = p.update().await;
    assert_eq!(u.nlri, vec!["198.51.100.2/32".parse().unwrap()]);
    // No End-of-RIB until released: only KEEPALIVEs (none within this window either).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), p.update())
            .await
            .is_err(),
        "something was sent before the release"
    );
    sp.release_end_of_rib();
    let eors = [p.update().await, p.update().await].map(|u| u.end_of_rib_family());
    assert_eq!(
        eors,
        [Some(Family::IPV4_UNICAST), Some(Family::IPV6_UNICAST)]
    );
}
