//! Awaitable withdraws over loopback (no root): the speaker's [`Withdrawal`] resolves only
//! once the UPDATE is on the socket, or the session is gone, or there was nothing to tell.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bgp::packet::Message;
use bgp::Community;
use bgp::{PeerEvent, Speaker, WithdrawOutcome};
use ipnet::IpNet;
use tokio::net::TcpSocket;

mod common;
use common::*;

/// Up to End-of-RIB of an empty table, then one announced /32 the peer holds. The peer's
/// receive buffer is small (4 KiB, no autotuning), so a peer that stops reading soon stops
/// the speaker's writes.
async fn session_with_one_route(prefix: &str) -> (Speaker, MiniPeer) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = sock.local_addr().unwrap().port();
    let l = sock.listen(8).unwrap();
    let (sp, mut ev) = Speaker::start(speaker_cfg()).unwrap();
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (mut p, _) = MiniPeer::handshake(s, 65010, 90).await;
    assert_eq!(ev.recv().await, Some(PeerEvent::Up { name: "r1".into() }));
    p.update().await;
    p.update().await;
    sp.announce(net(prefix), lp(100));
    assert_eq!(p.update().await.nlri, vec![prefix.parse().unwrap()]);
    (sp, p)
}

/// Queues 2,000 announces of ~4 KiB UPDATEs each (every route its own 1,000 communities):
/// 8 MB, more than the speaker's send buffer grows to (Linux's default `tcp_wmem` maximum is
/// 4 MB), so with a peer that does not read the writer blocks in `write_all`.
fn backlog(sp: &Speaker) {
    sp.announce_many((0..2_000u32).map(|i| {
        let a = Ipv4Addr::from(0xc612_0000 + i); // 198.18.0.0/15 (RFC 2544 benchmarking)
        let mut attrs = lp(100);
        attrs.communities = (0..1000u16).map(|c| Community::new(i as u16, c)).collect();
        (IpNet::new(IpAddr::V4(a), 32).unwrap(), attrs)
    }));
}

/// Waits until the writer is stuck: routes are still queued, and the count handed to the
/// socket has stopped moving (the peer reads nothing, so it stops for good).
async fn wait_writer_blocked(sp: &Speaker) {
    let mut last = usize::MAX;
    for _ in 0..100 {
        let sent = sp.peers().await[0].routes_sent;
        assert!(sent < 2_000, "everything went out: the socket never filled");
        if sent == last {
            return;
        }
        last = sent;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the writer never stopped");
}

#[tokio::test]
async fn withdrawal_resolves_only_after_the_update_is_written() {
    let (sp, mut p) = session_with_one_route("203.0.113.1/32").await;
    backlog(&sp);
    wait_writer_blocked(&sp).await;
    let mut w = Box::pin(sp.withdraw(net("203.0.113.1/32")));
    // The peer reads nothing: the withdrawal cannot be on the socket yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut w)
            .await
            .is_err(),
        "resolved while the writer was blocked"
    );
    // Read until the withdraw arrives; the future resolves once its write returned.
    loop {
        let u = p.update().await;
        if !u.withdrawn.is_empty() {
            assert_eq!(u.withdrawn, vec!["203.0.113.1/32".parse().unwrap()]);
            break;
        }
    }
    let r = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .expect("withdrawal did not resolve");
    assert_eq!(r.outcome("r1"), Some(WithdrawOutcome::Written));
}

#[tokio::test]
async fn withdrawal_resolves_when_the_session_ends_first() {
    let (sp, p) = session_with_one_route("203.0.113.2/32").await;
    backlog(&sp);
    let w = sp.withdraw(net("203.0.113.2/32"));
    drop(p); // the router goes away with the withdrawal still queued
    let r = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .expect("withdrawal did not resolve");
    assert_eq!(r.outcome("r1"), Some(WithdrawOutcome::SessionDown));
}

#[tokio::test]
async fn withdrawal_of_a_route_never_sent_resolves_at_once() {
    let (sp, mut p) = session_with_one_route("203.0.113.3/32").await;
    let r = tokio::time::timeout(Duration::from_secs(1), sp.withdraw(net("203.0.113.99/32")))
        .await
        .unwrap();
    assert_eq!(r.outcome("r1"), Some(WithdrawOutcome::NotHeld));
    // A batch: one held, one not; one UPDATE with the held one.
    let r = sp
        .withdraw_many([net("203.0.113.3/32"), net("203.0.113.98/32")])
        .await;
    assert_eq!(r.outcome("r1"), Some(WithdrawOutcome::Written));
    let u = p.update().await;
    assert_eq!(u.withdrawn, vec!["203.0.113.3/32".parse().unwrap()]);
}

#[tokio::test]
async fn without_an_established_peer_a_withdrawal_resolves_at_once() {
    let (sp, _ev) = Speaker::start(speaker_cfg()).unwrap();
    let r = sp.withdraw(net("203.0.113.4/32")).await;
    assert!(r.peers.is_empty());
    // A peer that never comes up (nothing listens on the port).
    let (l, port) = listener().await;
    drop(l);
    sp.add_peer(peer_cfg(port, 65010)).unwrap();
    sp.announce(net("203.0.113.4/32"), lp(100));
    let r = tokio::time::timeout(Duration::from_secs(1), sp.withdraw(net("203.0.113.4/32")))
        .await
        .unwrap();
    assert_eq!(r.outcome("r1"), Some(WithdrawOutcome::NotEstablished));
    // Dropping a withdrawal without awaiting it is fine: the withdraw still goes out.
    let (sp, mut p) = session_with_one_route("203.0.113.5/32").await;
    drop(sp.withdraw(net("203.0.113.5/32")));
    loop {
        match p.recv().await {
            Some(Message::Update(u)) if !u.withdrawn.is_empty() => break,
            Some(_) => continue,
            None => panic!("closed"),
        }
    }
}
