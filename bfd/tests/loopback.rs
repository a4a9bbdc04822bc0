//! Two drivers talking over loopback (IPv4: 127.0.0.1 ↔ 127.0.0.2, IPv6: ::1 ↔ ::1 on
//! separate ports), and hostile datagrams thrown at one of them. No root needed: the real
//! sockets, TTL 255 and the TTL check are exercised; waits are on events with deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bfd::packet::{ControlPacket, Diag, State};
use bfd::{Bfd, BfdConfig, BfdEvent, Damping, DropReason, PeerSpec, Status};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn start(listen: &str) -> (Bfd, UnboundedReceiver<BfdEvent>) {
    // RUST_LOG=bfd::wire=trace shows every datagram.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Bfd::start(BfdConfig {
        listen: vec![listen.parse().unwrap()],
        damping: Damping::OFF,
        shutdown_timeout: Duration::from_secs(1),
    })
    .unwrap()
}

fn spec(name: &str, remote: &str, local: &str, port: u16, ms: u64) -> PeerSpec {
    PeerSpec {
        local: Some(local.parse().unwrap()),
        remote_port: port,
        min_tx: Duration::from_millis(ms),
        min_rx: Duration::from_millis(ms),
        ..PeerSpec::new(name, remote.parse().unwrap())
    }
}

async fn next_event(ev: &mut UnboundedReceiver<BfdEvent>) -> BfdEvent {
    tokio::time::timeout(WAIT, ev.recv())
        .await
        .expect("no BFD event in time")
        .expect("driver stopped")
}

/// Polls the status until `f` holds (or panics at the deadline).
async fn wait_status(bfd: &Bfd, what: &str, f: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = bfd.status().await.unwrap();
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next event of A is B Up, and of B, A Up.
async fn both_up(a_ev: &mut UnboundedReceiver<BfdEvent>, b_ev: &mut UnboundedReceiver<BfdEvent>) {
    assert_eq!(next_event(a_ev).await, BfdEvent::Up { name: "b".into() });
    assert_eq!(next_event(b_ev).await, BfdEvent::Up { name: "a".into() });
}

struct Pair {
    a: Bfd,
    a_ev: UnboundedReceiver<BfdEvent>,
    b: Bfd,
    b_ev: UnboundedReceiver<BfdEvent>,
}

/// A at `a_ip`, B at `b_ip`, each the other's peer "a"/"b", both Up.
async fn pair(a_ip: &str, b_ip: &str, ms: u64) -> Pair {
    let sock = |ip: &str| match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => format!("{ip}:0"),
        IpAddr::V6(_) => format!("[{ip}]:0"),
    };
    let (a, mut a_ev) = start(&sock(a_ip));
    let (b, mut b_ev) = start(&sock(b_ip));
    let a_port = a.listen_addrs()[0].port();
    let b_port = b.listen_addrs()[0].port();
    a.add_peer(spec("b", b_ip, a_ip, b_port, ms)).await.unwrap();
    b.add_peer(spec("a", a_ip, b_ip, a_port, ms)).await.unwrap();
    both_up(&mut a_ev, &mut b_ev).await;
    Pair { a, a_ev, b, b_ev }
}

/// Both sessions Up, the Poll done, the fast rate in use; then B stops dead (no AdminDown)
/// and A reports Down within its detection time.
async fn up_then_frozen(a_ip: &str, b_ip: &str) {
    let Pair { a, mut a_ev, b, .. } = pair(a_ip, b_ip, 100).await;
    let s = wait_status(&a, "A's Poll done", |s| !s.peers[0].polling).await;
    let p = &s.peers[0];
    assert_eq!(p.state, State::Up);
    assert_eq!(p.tx_interval, Some(Duration::from_millis(100)));
    assert_eq!(p.detection_time, Some(Duration::from_millis(300)));
    // Source port from the dynamic range, distinct from the listening port.
    assert!(bfd::SOURCE_PORTS.contains(&p.local.port()), "{p:?}");
    assert!(p.drops.is_empty(), "{p:?}");
    // No flap on either side on the way from slow start to the fast rate.
    assert_eq!(p.flaps, 0, "{p:?}");
    assert!(a_ev.try_recv().is_err());
    let bs = wait_status(&b, "B's Poll done", |s| !s.peers[0].polling).await;
    assert_eq!(bs.peers[0].flaps, 0, "{bs:?}");
    let detect = p.detection_time.unwrap();

    // Dropping every handle stops B's driver without an AdminDown: a frozen neighbor.
    drop(b);
    let t0 = Instant::now();
    let ev = next_event(&mut a_ev).await;
    let took = t0.elapsed();
    assert_eq!(
        ev,
        BfdEvent::Down {
            name: "b".into(),
            diag: Diag::DetectionTimeExpired,
            remote_admin_down: false
        }
    );
    eprintln!("Down reported {took:?} after the neighbor stopped (detection time {detect:?})");
    // Scheduling slack on a loaded machine: the detection timer itself is `detect`.
    assert!(took < detect + Duration::from_millis(250), "{took:?}");
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn v4_up_then_neighbor_frozen() {
    up_then_frozen("127.0.0.1", "127.0.0.2").await;
}

#[tokio::test]
async fn v6_up_then_neighbor_frozen() {
    up_then_frozen("::1", "::1").await;
}

/// AdminDown from B is a Down with remote_admin_down at A; admin_up brings it back; B's
/// shutdown() sends AdminDown before returning; remove_peer too.
#[tokio::test]
async fn admin_down_shutdown_and_remove() {
    let Pair {
        a,
        mut a_ev,
        b,
        mut b_ev,
    } = pair("127.0.0.1", "127.0.0.2", 100).await;
    // What A sees when B goes AdminDown.
    let b_admin_down = BfdEvent::Down {
        name: "b".into(),
        diag: Diag::NeighborDown,
        remote_admin_down: true,
    };
    b.admin_down("a").await.unwrap();
    assert_eq!(
        next_event(&mut b_ev).await,
        BfdEvent::Down {
            name: "a".into(),
            diag: Diag::AdminDown,
            remote_admin_down: false
        }
    );
    assert_eq!(next_event(&mut a_ev).await, b_admin_down);
    b.admin_up("a").await.unwrap();
    both_up(&mut a_ev, &mut b_ev).await;

    b.shutdown().await.unwrap();
    assert_eq!(next_event(&mut a_ev).await, b_admin_down);
    assert!(b.status().await.is_err(), "driver stopped after shutdown");

    // remove_peer: gone from the status, errors for unknown names.
    a.remove_peer("b").await.unwrap();
    assert!(a.status().await.unwrap().peers.is_empty());
    assert!(matches!(
        a.remove_peer("b").await,
        Err(bfd::BfdError::NoPeer(_))
    ));
    a.shutdown().await.unwrap();
}

/// Changing our intervals while Up: a Poll, then the new detection time on both sides.
#[tokio::test]
async fn interval_change_polls_and_applies() {
    let Pair { a, b, .. } = pair("127.0.0.1", "127.0.0.2", 300).await;
    wait_status(&b, "B at 300 ms", |s| {
        s.peers[0].detection_time == Some(Duration::from_millis(900)) && !s.peers[0].polling
    })
    .await;
    set(&a, "b", 50, 300, 4).await.unwrap();
    // B: 4 × max(B's 300 ms rx, A's 50 ms tx) = 1.2 s; A's tx: max(50 ms, B's 300 ms rx).
    wait_status(&b, "B uses A's new multiplier", |s| {
        s.peers[0].detection_time == Some(Duration::from_millis(1200))
    })
    .await;
    wait_status(&a, "A's Poll done", |s| {
        !s.peers[0].polling && s.peers[0].tx_interval == Some(Duration::from_millis(300))
    })
    .await;
    set(&b, "a", 300, 50, 3).await.unwrap();
    let s = wait_status(&a, "A sends at B's new 50 ms rx", |s| {
        s.peers[0].tx_interval == Some(Duration::from_millis(50))
    })
    .await;
    assert_eq!(s.peers[0].state, State::Up);
    assert!(matches!(
        a.set_intervals("b", Duration::ZERO, Duration::from_millis(1), 3)
            .await,
        Err(bfd::BfdError::BadPeer { .. })
    ));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn set(bfd: &Bfd, name: &str, tx: u64, rx: u64, mult: u8) -> Result<(), bfd::BfdError> {
    let ms = Duration::from_millis;
    bfd.set_intervals(name, ms(tx), ms(rx), mult).await
}

fn raw_socket(bind: &str, ttl: u32) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap();
    s.set_ttl(ttl).unwrap();
    s
}

/// Malformed, truncated, wrong-TTL, unknown-discriminator, wrong-source and
/// authenticated datagrams: dropped, counted by reason, and the session stays Up.
#[tokio::test]
async fn bad_input_is_dropped_and_counted() {
    let Pair { a, mut a_ev, b, .. } = pair("127.0.0.1", "127.0.0.2", 100).await;
    let a_addr: SocketAddr = a.listen_addrs()[0];
    let s = a.status().await.unwrap();
    let good = ControlPacket {
        diag: Diag::None,
        state: State::Up,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: s.peers[0].remote_discr,
        your_discr: s.peers[0].local_discr,
        desired_min_tx: 100_000,
        required_min_rx: 100_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    let from_b = raw_socket("127.0.0.2:0", 255);
    let send = |s: &UdpSocket, bytes: &[u8]| {
        s.send_to(bytes, a_addr).unwrap();
    };
    // From B's address: attributed to the peer.
    send(&from_b, &[]);
    send(&from_b, &good.encode()[..20]);
    let mut v2 = good.encode();
    v2[0] = 0x40;
    send(&from_b, &v2);
    send(&raw_socket("127.0.0.2:0", 64), &good.encode());
    let mut unknown = good.clone();
    unknown.your_discr = good.your_discr.wrapping_add(1).max(1);
    send(&from_b, &unknown.encode());
    let mut authed = good.clone();
    authed.auth = Some(bfd::packet::Auth::SimplePassword {
        key_id: 1,
        password: b"x".to_vec(),
    });
    send(&from_b, &authed.encode());
    // From an address no session has.
    let stranger = raw_socket("127.0.0.3:0", 255);
    send(&stranger, &good.encode());
    let mut zero = good.clone();
    zero.your_discr = 0;
    zero.state = State::Down;
    send(&stranger, &zero.encode());

    let want = [
        (DropReason::Malformed("truncated"), 2),
        (DropReason::Malformed("version"), 1),
        (DropReason::Ttl, 1),
        (DropReason::UnknownDiscriminator, 1),
        (DropReason::Auth, 1),
    ];
    let s = wait_status(&a, "every drop counted", |s| {
        s.peers[0].drops.values().sum::<u64>() == 6
            && s.unattributed_drops.values().sum::<u64>() == 2
    })
    .await;
    assert_eq!(s.peers[0].drops, want.into_iter().collect());
    assert_eq!(
        s.unattributed_drops,
        [
            (DropReason::SourceMismatch, 1),
            (DropReason::UnknownSource, 1)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(s.peers[0].state, State::Up);
    assert!(
        a_ev.try_recv().is_err(),
        "no event: the session did not flap"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn duplicate_and_bad_peers_are_refused() {
    let (a, _ev) = start("127.0.0.1:0");
    a.add_peer(spec("x", "127.0.0.2", "127.0.0.1", 3784, 100))
        .await
        .unwrap();
    for dup in [
        spec("x", "127.0.0.9", "127.0.0.1", 3784, 100),
        spec("y", "127.0.0.2", "127.0.0.1", 3784, 100),
    ] {
        assert!(matches!(
            a.add_peer(dup).await,
            Err(bfd::BfdError::Duplicate(_))
        ));
    }
    let mut zero = spec("z", "127.0.0.3", "127.0.0.1", 3784, 100);
    zero.multiplier = 0;
    assert!(matches!(
        a.add_peer(zero).await,
        Err(bfd::BfdError::BadPeer { .. })
    ));
    a.shutdown().await.unwrap();
}

/// A stall of the whole process (here: the one runtime thread blocked for twice the
/// detection time, while B keeps sending from another thread) is not a Down: the packets
/// that arrived meanwhile are read before the detection timer is looked at.
#[tokio::test]
async fn a_stalled_process_does_not_declare_a_live_neighbor_down() {
    let (a, mut a_ev) = start("127.0.0.1:0");
    let a_port = a.listen_addrs()[0].port();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let b_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (b, _ev) = start("127.0.0.2:0");
            port_tx.send(b.listen_addrs()[0].port()).unwrap();
            // B sends every 100 ms but gives A 3 s (3 × its 1 s Required Min RX).
            let mut s = spec("a", "127.0.0.1", "127.0.0.2", a_port, 100);
            s.min_rx = Duration::from_secs(1);
            b.add_peer(s).await.unwrap();
            let _ = stop_rx.await;
            b.shutdown().await.unwrap();
        });
    });
    let b_port = port_rx.recv().unwrap();
    a.add_peer(spec("b", "127.0.0.2", "127.0.0.1", b_port, 100))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut a_ev).await,
        BfdEvent::Up { name: "b".into() }
    );
    wait_status(&a, "A at 300 ms detection", |s| {
        s.peers[0].detection_time == Some(Duration::from_millis(300))
    })
    .await;
    for round in 0..5 {
        let before = a.status().await.unwrap().peers[0].packets_in;
        // The stall itself: nothing of this runtime runs for 600 ms.
        std::thread::sleep(Duration::from_millis(600));
        let s = wait_status(&a, "the backlog read", |s| {
            s.peers[0].packets_in >= before + 5
        })
        .await;
        assert_eq!(s.peers[0].flaps, 0, "round {round}: {:?}", s.peers[0]);
        assert!(a_ev.try_recv().is_err(), "round {round}: an event");
    }
    a.shutdown().await.unwrap();
    stop_tx.send(()).unwrap();
    b_thread.join().unwrap();
}
