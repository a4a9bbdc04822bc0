//! Runtime changes over loopback: speaker-wide communities, the eBGP preference and a
//! peer's next hops reach the running session as UPDATEs (no reset); a new hold time
//! restarts the session; attributes too large for an UPDATE are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::Ipv4Addr;

use bgp::packet::{Message, Update, CEASE, CEASE_ADMIN_RESET};
use bgp::{BgpError, Community, PeerConfig, PeerEvent, Reconfigured, Speaker, SpeakerConfig};
use ipnet::Ipv4Net;
use tokio::sync::mpsc::UnboundedReceiver;

mod common;
use common::*;

const PREFIXES: [&str; 3] = ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"];

/// A session with the three routes out and the End-of-RIBs read.
async fn up_with_routes(
    cfg: SpeakerConfig,
    remote_as: u32,
) -> (Speaker, UnboundedReceiver<PeerEvent>, MiniPeer, u16) {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(cfg).unwrap();
    sp.announce_many(PREFIXES.map(|p| (net(p), lp(150))));
    sp.add_peer(peer_cfg(port, remote_as)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, remote_as, 90).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    let mut eors = 0;
    while eors < 2 {
        if p.update().await.end_of_rib_family().is_some() {
            eors += 1;
        }
    }
    (sp, ev, p, port)
}

/// Reads UPDATEs until all three prefixes came again; none may be a withdraw.
async fn all_again(p: &mut MiniPeer) -> Vec<Update> {
    let mut seen: HashSet<Ipv4Net> = HashSet::new();
    let mut us = vec![];
    while seen.len() < PREFIXES.len() {
        let u = p.update().await;
        assert!(u.withdrawn.is_empty(), "a withdraw in between: {u:?}");
        seen.extend(u.nlri.iter().copied());
        us.push(u);
    }
    us
}

#[tokio::test]
async fn new_communities_and_ebgp_preference_are_sent_without_a_reset() {
    let (sp, mut ev, mut p, _) = up_with_routes(speaker_cfg(), 65001).await;
    let mut cfg = speaker_cfg();
    cfg.communities = vec![Community::new(65010, 2)];
    cfg.ebgp_preference = bgp::EbgpPreference::Med { base: 2000 };
    assert!(matches!(
        sp.reconfigure(cfg.clone()),
        Ok(Reconfigured::Applied)
    ));
    for u in all_again(&mut p).await {
        assert_eq!(u.attrs.communities, vec![Community::new(65010, 2)]);
        assert_eq!(u.attrs.med, Some(2000 - 150));
    }
    assert!(ev.try_recv().is_err(), "the session went down");
    assert!(matches!(sp.reconfigure(cfg), Ok(Reconfigured::Unchanged)));
}

#[tokio::test]
async fn a_peer_next_hop_change_is_sent_without_a_reset() {
    let (sp, mut ev, mut p, port) = up_with_routes(speaker_cfg(), 65010).await;
    sp.add_peer(PeerConfig {
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 99)),
        ..peer_cfg(port, 65010)
    })
    .unwrap();
    for u in all_again(&mut p).await {
        assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 99)));
        assert_eq!(u.attrs.local_pref, Some(150));
    }
    assert!(ev.try_recv().is_err(), "the session went down");
}

#[tokio::test]
async fn a_new_hold_time_restarts_the_session() {
    let (sp, mut ev, mut p, _) = up_with_routes(speaker_cfg(), 65010).await;
    let cfg = SpeakerConfig {
        hold_time: 30,
        ..speaker_cfg()
    };
    assert!(matches!(
        sp.reconfigure(cfg),
        Ok(Reconfigured::SessionsRestarted)
    ));
    let n = loop {
        match p.recv().await {
            Some(Message::Notification(n)) => break n,
            Some(_) => continue,
            None => panic!("closed without NOTIFICATION"),
        }
    };
    assert_eq!((n.code, n.subcode), (CEASE, CEASE_ADMIN_RESET));
    assert!(matches!(ev.recv().await, Some(PeerEvent::Down { .. })));
}

#[tokio::test]
async fn speaker_wide_attributes_too_large_for_an_update_are_refused() {
    let many: Vec<Community> = (0..1100).map(Community).collect();
    let cfg = SpeakerConfig {
        communities: many.clone(),
        ..speaker_cfg()
    };
    let e = Speaker::start(cfg).unwrap_err();
    assert!(
        matches!(e, BgpError::AttributesTooLarge(ref t) if t.bytes > 4096),
        "{e}"
    );
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    let cfg = SpeakerConfig {
        communities: many,
        ..speaker_cfg()
    };
    assert!(matches!(
        sp.reconfigure(cfg),
        Err(BgpError::AttributesTooLarge(_))
    ));
}
