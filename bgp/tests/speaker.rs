//! Driver tests over real TCP on loopback (no root): the speaker against a minimal BGP peer
//! written with this crate's codec. Interop with a real router is in `interop.rs` (lab).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bgp::packet::{Capability, Family, Message, MpReach, MpUnreach, Notification};
use bgp::{PeerConfig, PeerEvent, Speaker, SpeakerConfig};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::*;

#[tokio::test]
async fn ibgp_dump_end_of_rib_withdraw_and_cease_on_shutdown() {
    let (l, port) = listener().await;
    let (sp, mut events) = Speaker::start(SpeakerConfig {
        next_hop_v6: Some("2001:db8::10".parse().unwrap()),
        ..speaker_cfg()
    })
    .unwrap();
    for i in 0..1000u32 {
        let a = Ipv4Addr::from(0xc633_6400 + i); // 198.51.100.0 ..
        sp.announce(IpNet::new(IpAddr::V4(a), 32).unwrap(), lp(150));
    }
    sp.announce(net("2001:db8:1::1/128"), lp(150));
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, open) = MiniPeer::handshake(s, 65010, 90).await;
    assert_eq!(open.asn(), 65010);
    assert!(open
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::GracefulRestart(g) if g.restart_time == 120)));
    assert_eq!(
        events.recv().await,
        Some(PeerEvent::Up { name: "r1".into() })
    );

    let mut v4 = 0;
    let mut v6 = vec![];
    let mut eors = vec![];
    let mut updates = 0;
    while eors.len() < 2 {
        let u = p.update().await;
        if let Some(f) = u.end_of_rib_family() {
            eors.push(f);
            continue;
        }
        updates += 1;
        if !u.nlri.is_empty() {
            assert_eq!(u.attrs.local_pref, Some(150));
            assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::LOCALHOST));
            assert_eq!(u.attrs.communities, vec!["65010:1".parse().unwrap()]);
            v4 += u.nlri.len();
        }
        if let Some(MpReach::Ipv6Unicast { next_hop, nlri, .. }) = &u.attrs.mp_reach {
            // IPv6 over an IPv4 session: the configured IPv6 next hop.
            assert_eq!(next_hop.to_string(), "2001:db8::10");
            v6.extend(nlri.clone());
        }
    }
    assert_eq!(v4, 1000);
    assert_eq!(v6, vec!["2001:db8:1::1/128".parse().unwrap()]);
    assert_eq!(updates, 3); // 1000 /32 in 2 UPDATEs + 1 IPv6
    assert_eq!(eors, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);

    sp.withdraw(net("198.51.100.5/32"));
    let u = p.update().await;
    assert_eq!(u.withdrawn, vec!["198.51.100.5/32".parse().unwrap()]);
    sp.withdraw(net("2001:db8:1::1/128"));
    let u = p.update().await;
    assert_eq!(
        u.attrs.mp_unreach,
        Some(MpUnreach::Ipv6Unicast(vec!["2001:db8:1::1/128"
            .parse()
            .unwrap()]))
    );
    // Changed attributes replace.
    sp.announce(net("198.51.100.6/32"), lp(50));
    let u = p.update().await;
    assert_eq!(u.nlri, vec!["198.51.100.6/32".parse().unwrap()]);
    assert_eq!(u.attrs.local_pref, Some(50));

    let st = sp.peers().await;
    assert_eq!(st[0].state, "established");
    assert_eq!(st[0].routes_sent, 999);

    let t = Instant::now();
    sp.clone().shutdown("ipvs-sync shutting down").await;
    assert!(t.elapsed() < Duration::from_millis(1500));
    let n = loop {
        match p.recv().await {
            Some(Message::Notification(n)) => break n,
            Some(_) => continue,
            None => panic!("closed without NOTIFICATION"),
        }
    };
    assert_eq!(n, Notification::admin_shutdown("ipvs-sync shutting down"));
    assert_eq!(p.recv().await, None);
}

/// Over loopback the session's interface (`lo`) has no global IPv6 address: without a
/// configured IPv6 next hop, no IPv6 route goes out (never an IPv4-mapped next hop), and the
/// peer's status says why.
#[tokio::test]
async fn ipv6_routes_without_an_ipv6_next_hop_are_not_sent() {
    let (l, port) = listener().await;
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.announce(net("2001:db8:1::1/128"), lp(100));
    sp.announce(net("198.51.100.1/32"), lp(100));
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    let mut eors = 0;
    while eors < 2 {
        let u = p.update().await;
        if u.end_of_rib_family().is_some() {
            eors += 1;
            continue;
        }
        assert_eq!(u.nlri, vec!["198.51.100.1/32".parse().unwrap()]);
        assert!(u.attrs.mp_reach.is_none(), "{u:?}");
    }
    let st = sp.peers().await;
    let why = st[0].next_hop_missing.clone().unwrap_or_default();
    assert!(
        why.contains("IPv6 routes not sent") && why.contains("interface lo"),
        "{why:?}"
    );
    assert_eq!(st[0].routes_sent, 1);
}

#[tokio::test]
async fn ebgp_gets_med_and_our_as_and_no_local_pref() {
    let (l, port) = listener().await;
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.add_peer(peer_cfg(port, 65001)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65001, 90).await;
    // Initial dump of an empty table: just the End-of-RIBs.
    assert!(p.update().await.end_of_rib_family().is_some());
    assert!(p.update().await.end_of_rib_family().is_some());
    sp.announce(net("203.0.113.7/32"), lp(200));
    let u = p.update().await;
    assert_eq!(u.attrs.local_pref, None);
    assert_eq!(u.attrs.med, Some(800));
    assert_eq!(
        u.attrs.as_path.unwrap().asns().collect::<Vec<_>>(),
        vec![65010]
    );
}

#[tokio::test]
async fn passive_peer_is_accepted_on_the_listen_address() {
    let (sp, _ev, addr) = passive_speaker();
    sp.announce(net("192.0.2.99/32"), lp(100));
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 30).await;
    let u = p.update().await;
    assert_eq!(u.nlri, vec!["192.0.2.99/32".parse().unwrap()]);
    // A connection from an address that is not a peer is closed at once.
    let st = sp.peers().await;
    assert_eq!(st[0].state, "established");
}

#[tokio::test]
async fn hold_timer_expiry_sends_4_0() {
    let (l, port) = listener().await;
    let (sp, mut ev) = Speaker::start(SpeakerConfig {
        hold_time: 3,
        ..speaker_cfg()
    })
    .unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 3).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    let t = Instant::now();
    // We never send a KEEPALIVE again; the speaker's keepalives (every 1 s) are read.
    let n = loop {
        match p.recv().await {
            Some(Message::Notification(n)) => break n,
            Some(_) => continue,
            None => panic!("closed without NOTIFICATION"),
        }
    };
    assert_eq!((n.code, n.subcode), (4, 0));
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(2500) && e < Duration::from_secs(5),
        "{e:?}"
    );
    assert!(
        matches!(ev.recv().await, Some(PeerEvent::Down { reason, .. }) if reason.contains("hold timer"))
    );
}

#[tokio::test]
async fn malformed_message_gets_the_exact_notification_and_reconnects() {
    let (l, port) = listener().await;
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    // An UPDATE whose NLRI has prefix length 33: 3/10, session reset.
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&[0, 29, 2, 0, 0, 0, 0, 33, 1, 2, 3, 4, 5]);
    p.send_raw(&b).await;
    let n = loop {
        match p.recv().await {
            Some(Message::Notification(n)) => break n,
            Some(_) => continue,
            None => panic!("closed without NOTIFICATION"),
        }
    };
    assert_eq!((n.code, n.subcode), (3, 10));
    assert_eq!(sp.peers().await[0].malformed_in, 1);
    // The speaker reconnects by itself after the backoff (200 ms base).
    let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
        .await
        .unwrap()
        .unwrap();
    let (_p, _) = MiniPeer::handshake(s, 65010, 90).await;
}

#[tokio::test]
async fn rfc7606_update_error_keeps_the_session() {
    let (l, port) = listener().await;
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    // ORIGIN value 7 → treat-as-withdraw, no NOTIFICATION.
    let attrs = [0x40, 1, 1, 7, 0x40, 2, 0, 0x40, 3, 4, 192, 0, 2, 1];
    let mut b = vec![0xff; 16];
    let len = 19 + 4 + attrs.len() + 5;
    b.extend_from_slice(&(len as u16).to_be_bytes());
    b.extend_from_slice(&[2, 0, 0, 0, attrs.len() as u8]);
    b.extend_from_slice(&attrs);
    b.extend_from_slice(&[32, 198, 51, 100, 1]);
    p.send_raw(&b).await;
    sp.announce(net("198.51.100.77/32"), lp(100));
    let mut got = None;
    for _ in 0..5 {
        let u = p.update().await;
        if !u.nlri.is_empty() {
            got = Some(u);
            break;
        }
    }
    assert_eq!(got.unwrap().nlri, vec!["198.51.100.77/32".parse().unwrap()]);
    // The peer task counts the bad UPDATE asynchronously: poll for it (bounded).
    let mut st = sp.peers().await.remove(0);
    for _ in 0..100 {
        if st.malformed_in > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = sp.peers().await.remove(0);
    }
    assert_eq!(st.state, "established");
    assert_eq!(st.malformed_in, 1);
    assert_eq!(st.updates_in, 1);
}

#[tokio::test]
async fn withdraw_overtakes_a_large_announce_backlog() {
    let (l, port) = listener().await;
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    // Empty-table End-of-RIBs first.
    p.update().await;
    p.update().await;
    sp.announce(net("203.0.113.1/32"), lp(100));
    let u = p.update().await;
    assert_eq!(u.nlri.len(), 1);
    // 100,000 announces queued, then a withdraw of the route the peer already has.
    for i in 0..100_000u32 {
        let a = Ipv4Addr::from(0xc612_0000 + i); // 198.18.0.0/15 (RFC 2544 benchmarking)
        sp.announce(IpNet::new(IpAddr::V4(a), 32).unwrap(), lp(100));
    }
    sp.withdraw(net("203.0.113.1/32"));
    let mut before = 0usize;
    loop {
        let u = p.update().await;
        if !u.withdrawn.is_empty() {
            assert_eq!(u.withdrawn, vec!["203.0.113.1/32".parse().unwrap()]);
            break;
        }
        before += u.nlri.len();
    }
    // At most one write batch (64 KiB ≈ 13,000 /32s) went out ahead of it.
    assert!(
        before < 20_000,
        "{before} prefixes went out before the withdraw"
    );
    let _ = SocketAddr::from(([127, 0, 0, 1], port));
}

/// GTSM (RFC 5082) over loopback: with `ttl_security` the speaker sends TTL 255 and drops
/// anything below 254, so a peer whose packets carry the default TTL (64) never completes the
/// handshake, and one that sends TTL 255 does. (gobgpd 3.10 only applies its TTL options to
/// connections it initiates, which makes it a poor oracle for this.)
#[tokio::test]
async fn ttl_security_requires_ttl_255_from_the_peer() {
    let (sp, mut ev) = Speaker::start(speaker_cfg()).unwrap();
    // A peer with the default TTL: its SYN-ACK is dropped by our IP_MINTTL.
    let (l, port) = listener().await;
    sp.add_peer(PeerConfig {
        ttl_security: true,
        ..peer_cfg(port, 65010)
    })
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), l.accept())
            .await
            .is_err(),
        "TCP handshake completed with TTL 64 packets"
    );
    // A peer that sends TTL 255 (set on the listener, inherited by the SYN-ACK and the
    // accepted socket).
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.set_ttl(255).unwrap();
    let port = l.local_addr().unwrap().port();
    sp.add_peer(PeerConfig {
        ttl_security: true,
        ..peer_cfg(port, 65010)
    })
    .unwrap();
    let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.ttl().unwrap(), 255);
    let (_p, _) = MiniPeer::handshake(s, 65010, 90).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
}
