//! What the loopback driver tests share: settings, and a minimal BGP peer written with this
//! crate's codec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgp::packet::{message_len, Capability, DecodeCtx, EncodeCtx, Family, Message, Open, Update};
use bgp::{EbgpPreference, PeerConfig, PeerEvent, RouteAttrs, Speaker, SpeakerConfig};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

pub fn speaker_cfg() -> SpeakerConfig {
    SpeakerConfig {
        connect_retry: Duration::from_millis(200),
        graceful_restart: Some(120),
        ebgp_preference: EbgpPreference::Med { base: 1000 },
        communities: vec!["65010:1".parse().unwrap()],
        ..SpeakerConfig::new(65010, Ipv4Addr::new(192, 0, 2, 10))
    }
}

pub fn peer_cfg(port: u16, remote_as: u32) -> PeerConfig {
    PeerConfig {
        port,
        ..PeerConfig::new("r1", IpAddr::V4(Ipv4Addr::LOCALHOST), remote_as)
    }
}

/// A speaker listening on a free loopback port, with `r1` (127.0.0.1) as a passive peer.
pub fn passive_speaker() -> (Speaker, UnboundedReceiver<PeerEvent>, SocketAddr) {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (sp, ev) = Speaker::start(SpeakerConfig {
        listen: Some(addr),
        ..speaker_cfg()
    })
    .unwrap();
    sp.add_peer(PeerConfig {
        passive: true,
        ..peer_cfg(179, 65010)
    })
    .unwrap();
    (sp, ev, addr)
}

/// A minimal BGP peer: answers OPEN + KEEPALIVE, then records what it gets.
pub struct MiniPeer {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl MiniPeer {
    pub async fn handshake(s: TcpStream, asn: u32, hold: u16) -> (MiniPeer, Open) {
        let mut p = MiniPeer { s, buf: vec![] };
        let open = Open::new(
            asn,
            hold,
            Ipv4Addr::new(192, 0, 2, 1),
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::Multiprotocol(Family::IPV6_UNICAST),
                Capability::RouteRefresh,
            ],
        );
        p.send(&Message::Open(open)).await;
        let Message::Open(theirs) = p.recv().await.unwrap() else {
            panic!("expected OPEN")
        };
        p.send(&Message::Keepalive).await;
        assert_eq!(p.recv().await.unwrap(), Message::Keepalive);
        (p, theirs)
    }

    pub async fn send(&mut self, m: &Message) {
        self.s
            .write_all(&m.encode(&EncodeCtx::default()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// Next message, or None on EOF. Panics after 10 s.
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(n) = message_len(&self.buf) {
                    if self.buf.len() >= n {
                        let f: Vec<u8> = self.buf.drain(..n).collect();
                        return Some(Message::decode(&f, &DecodeCtx::default()).unwrap());
                    }
                }
                let mut chunk = [0u8; 8192];
                let n = self.s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("peer timed out waiting for a message")
    }

    /// Next UPDATE, skipping KEEPALIVEs.
    pub async fn update(&mut self) -> Update {
        loop {
            match self.recv().await {
                Some(Message::Update(u)) => return u,
                Some(Message::Keepalive) => continue,
                other => panic!("expected UPDATE, got {other:?}"),
            }
        }
    }
}

pub async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn lp(v: u32) -> RouteAttrs {
    RouteAttrs {
        local_pref: Some(v),
        ..RouteAttrs::default()
    }
}
