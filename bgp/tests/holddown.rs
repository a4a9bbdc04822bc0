//! Hold-down (the hook BFD calls) over loopback: `set_peer_down` tears the session down at
//! once with Cease / BFD Down and keeps it down — no connect, no accept — until
//! `set_peer_up`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bgp::packet::{Message, CEASE, CEASE_BFD_DOWN};
use bgp::{BgpError, PeerConfig, PeerEvent, Speaker};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

mod common;
use common::*;

/// Longer than the speaker's reconnect delay (`connect_retry` 200 ms, backoff ×2 per
/// failure) by far: a peer that is not held down reconnects well within it.
const NO_RECONNECT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn held_down_peer_gets_bfd_down_and_stays_down_until_released() {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.announce(net("198.51.100.1/32"), lp(100));
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));

    sp.set_peer_down("r1", "BFD: control detection time expired")
        .unwrap();
    let n = loop {
        match p.recv().await {
            Some(Message::Notification(n)) => break n,
            Some(_) => continue,
            None => panic!("closed without NOTIFICATION"),
        }
    };
    assert_eq!((n.code, n.subcode), (CEASE, CEASE_BFD_DOWN));
    assert_eq!(p.recv().await, None, "connection not closed");
    assert!(matches!(ev.recv().await, Some(PeerEvent::Down { .. })));
    let st = &sp.peers().await[0];
    assert_eq!(st.state, "idle");
    assert_eq!(
        st.held_down.as_deref(),
        Some("BFD: control detection time expired")
    );
    assert!(
        tokio::time::timeout(NO_RECONNECT, l.accept())
            .await
            .is_err(),
        "a held-down peer connected again"
    );
    // A changed configuration restarts the peer, still held down.
    sp.add_peer(PeerConfig {
        hold_time: Some(30),
        ..peer_cfg(port, 65010)
    })
    .unwrap();
    assert!(
        tokio::time::timeout(NO_RECONNECT, l.accept())
            .await
            .is_err(),
        "a held-down peer connected again after a configuration change"
    );
    assert!(sp.peers().await[0].held_down.is_some());

    sp.set_peer_up("r1").unwrap();
    let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
        .await
        .expect("no reconnect after release")
        .unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 30).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    assert_eq!(
        p.update().await.nlri,
        vec!["198.51.100.1/32".parse().unwrap()]
    );
    assert_eq!(sp.peers().await[0].held_down, None);
}

#[tokio::test]
async fn held_down_passive_peer_refuses_the_router() {
    let (sp, mut ev, addr) = passive_speaker();
    sp.set_peer_down("r1", "BFD down").unwrap();
    // The connection is accepted by the kernel and closed by the speaker without an OPEN.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "the speaker answered a held-down peer");
    sp.set_peer_up("r1").unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let (_p, _) = MiniPeer::handshake(s, 65010, 30).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
}

#[tokio::test]
async fn unknown_peers_are_an_error() {
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    assert!(matches!(
        sp.set_peer_down("nope", "x"),
        Err(BgpError::UnknownPeer(_))
    ));
    assert!(matches!(
        sp.set_peer_up("nope"),
        Err(BgpError::UnknownPeer(_))
    ));
}
