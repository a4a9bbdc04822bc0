//! FSM tests: fake clock (an `Instant` advanced by hand), fixed jitter, no sockets, no sleeps.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::packet::{RouteRefresh, CEASE_ADMIN_SHUTDOWN};

const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn cfg(local_as: u32, remote_as: u32) -> FsmConfig {
    FsmConfig {
        local_as,
        remote_as,
        router_id: ME,
        hold_time: 90,
        connect_retry: Duration::from_secs(2),
        passive: false,
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
        ],
        required: vec![],
    }
}

fn fsm(c: FsmConfig) -> Fsm {
    Fsm::new(c, Box::new(|| 1.0))
}

fn peer_open(asn: u32, hold: u16) -> Open {
    Open::new(
        asn,
        hold,
        PEER,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::RouteRefresh,
        ],
    )
}

fn sent_notification(out: &[Output]) -> Option<(u8, u8)> {
    out.iter().find_map(|o| match o {
        Output::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn timer(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::StartTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// Drives a fresh FSM to Established; returns it and the clock.
fn established(c: FsmConfig, peer_hold: u16) -> (Fsm, Instant) {
    let now = Instant::now();
    let remote = c.remote_as;
    let mut f = fsm(c);
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    f.process(
        now,
        Input::Message(Message::Open(peer_open(remote, peer_hold))),
    );
    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    assert!(out.iter().any(|o| matches!(o, Output::Established(_))));
    (f, now)
}

#[test]
fn active_peer_walks_to_established() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    let out = f.process(now, Input::ManualStart);
    assert_eq!(f.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
    assert_eq!(
        timer(&out, Timer::ConnectRetry),
        Some(Duration::from_secs(2))
    );

    let out = f.process(now, Input::TcpConnected);
    assert_eq!(f.state(), State::OpenSent);
    let Some(Output::Send(Message::Open(o))) = out.iter().find(|o| matches!(o, Output::Send(_)))
    else {
        panic!("no OPEN sent: {out:?}")
    };
    assert_eq!(o.asn(), 65010);
    assert_eq!(o.hold_time, 90);
    assert_eq!(timer(&out, Timer::Hold), Some(OPEN_HOLD_TIME));

    let out = f.process(now, Input::Message(Message::Open(peer_open(65001, 30))));
    assert_eq!(f.state(), State::OpenConfirm);
    assert!(out.contains(&Output::Send(Message::Keepalive)));
    // Hold time is the smaller one, keepalive a third of it.
    assert_eq!(timer(&out, Timer::Hold), Some(Duration::from_secs(30)));
    assert_eq!(timer(&out, Timer::Keepalive), Some(Duration::from_secs(10)));

    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    let neg = out
        .iter()
        .find_map(|o| match o {
            Output::Established(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(neg.hold_time, 30);
    assert_eq!(neg.peer_as, 65001);
    assert!(neg.four_octet_as);
    assert!(neg.route_refresh);
    // The peer only advertised IPv4 unicast.
    assert_eq!(neg.families, vec![Family::IPV4_UNICAST]);
    assert_eq!(f.established_at(), Some(now));
}

#[test]
fn passive_peer_waits_in_active_and_never_connects() {
    let now = Instant::now();
    let mut f = fsm(FsmConfig {
        passive: true,
        ..cfg(65010, 65001)
    });
    let out = f.process(now, Input::ManualStart);
    assert_eq!(f.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
    let out = f.process(now, Input::TimerExpired(Timer::ConnectRetry));
    assert!(!out.contains(&Output::Connect));
    assert_eq!(f.state(), State::Active);
    f.process(now, Input::TcpConnected);
    assert_eq!(f.state(), State::OpenSent);
}

#[test]
fn connect_failures_back_off_exponentially_with_jitter() {
    let now = Instant::now();
    let mut f = Fsm::new(cfg(65010, 65001), Box::new(|| 0.75));
    f.process(now, Input::ManualStart);
    let mut delays = vec![];
    for _ in 0..9 {
        let out = f.process(now, Input::TcpFailed);
        assert_eq!(f.state(), State::Active);
        delays.push(timer(&out, Timer::ConnectRetry).unwrap());
        let out = f.process(now, Input::TimerExpired(Timer::ConnectRetry));
        assert_eq!(f.state(), State::Connect);
        assert!(out.contains(&Output::Connect));
    }
    let secs: Vec<f64> = delays.iter().map(|d| d.as_secs_f64()).collect();
    // 2 s base × 2^(n-1), capped at 120 s, times the 0.75 jitter.
    assert_eq!(
        secs,
        vec![1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 90.0, 90.0, 90.0]
    );
}

#[test]
fn connect_retry_expiry_in_connect_retries() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    let out = f.process(now, Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(
        out,
        vec![
            Output::Disconnect,
            Output::Connect,
            Output::StartTimer(Timer::ConnectRetry, Duration::from_secs(2))
        ]
    );
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn hold_timer_expiry_sends_4_0_and_reports_down() {
    let (mut f, now) = established(cfg(65010, 65001), 9);
    let out = f.process(
        now + Duration::from_secs(9),
        Input::TimerExpired(Timer::Hold),
    );
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert!(out.contains(&Output::Disconnect));
    assert!(out.contains(&Output::Down(DownReason::HoldTimerExpired)));
    assert_eq!(f.state(), State::Idle);
    // Automatic restart after the backoff.
    assert_eq!(timer(&out, Timer::IdleHold), Some(Duration::from_secs(2)));
    let out = f.process(now, Input::TimerExpired(Timer::IdleHold));
    assert_eq!(f.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
}

#[test]
fn hold_timer_expiry_in_open_sent_and_open_confirm() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::TimerExpired(Timer::Hold));
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert!(!out.iter().any(|o| matches!(o, Output::Down(_))));
    assert_eq!(f.state(), State::Idle);

    f.process(now, Input::TimerExpired(Timer::IdleHold));
    f.process(now, Input::TcpConnected);
    f.process(now, Input::Message(Message::Open(peer_open(65001, 90))));
    assert_eq!(f.state(), State::OpenConfirm);
    let out = f.process(now, Input::TimerExpired(Timer::Hold));
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn keepalive_and_update_restart_the_hold_timer() {
    let (mut f, now) = established(cfg(65010, 65001), 30);
    let out = f.process(now, Input::TimerExpired(Timer::Keepalive));
    assert_eq!(
        out,
        vec![
            Output::Send(Message::Keepalive),
            Output::StartTimer(Timer::Keepalive, Duration::from_secs(10))
        ]
    );
    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(
        out,
        vec![Output::StartTimer(Timer::Hold, Duration::from_secs(30))]
    );
    let out = f.process(now, Input::Message(Message::Update(Update::default())));
    assert_eq!(
        out[0],
        Output::StartTimer(Timer::Hold, Duration::from_secs(30))
    );
    assert!(matches!(out[1], Output::UpdateReceived(_)));
}

#[test]
fn hold_time_zero_means_no_timers() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::Message(Message::Open(peer_open(65001, 0))));
    assert_eq!(timer(&out, Timer::Hold), None);
    assert_eq!(timer(&out, Timer::Keepalive), None);
    assert!(out.contains(&Output::StopTimer(Timer::Hold)));
    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(timer(&out, Timer::Hold), None);
    assert_eq!(f.negotiated().unwrap().hold_time, 0);
}

fn open_error(c: FsmConfig, open: Open) -> (Fsm, Vec<Output>) {
    let now = Instant::now();
    let mut f = fsm(c);
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::Message(Message::Open(open)));
    assert_eq!(f.state(), State::Idle);
    assert!(out.contains(&Output::Disconnect));
    (f, out)
}

fn sent(out: &[Output]) -> Notification {
    out.iter()
        .find_map(|o| match o {
            Output::Send(Message::Notification(n)) => Some(n.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn bad_open_peer_as() {
    let (f, out) = open_error(cfg(65010, 65001), peer_open(65002, 90));
    assert_eq!(sent(&out), Notification::new(2, 2));
    assert_eq!(
        f.last_error(),
        Some(&DownReason::NotificationSent(Notification::new(2, 2)))
    );
}

#[test]
fn bad_open_hold_time() {
    for h in [1, 2] {
        let (_, out) = open_error(cfg(65010, 65001), peer_open(65001, h));
        assert_eq!(sent(&out), Notification::new(2, 6));
    }
}

#[test]
fn bad_open_bgp_identifier() {
    let mut o = peer_open(65001, 90);
    o.bgp_id = Ipv4Addr::UNSPECIFIED;
    let (_, out) = open_error(cfg(65010, 65001), o);
    assert_eq!(sent(&out), Notification::new(2, 3));
    // iBGP: the peer may not use our identifier.
    let mut o = peer_open(65010, 90);
    o.bgp_id = ME;
    let (_, out) = open_error(cfg(65010, 65010), o);
    assert_eq!(sent(&out), Notification::new(2, 3));
    // eBGP: the same identifier is allowed (RFC 6286).
    let mut f = fsm(cfg(65010, 65001));
    let mut o = peer_open(65001, 90);
    o.bgp_id = ME;
    assert!(f.validate_open(&o).is_ok());
    f.process(Instant::now(), Input::ManualStart);
}

#[test]
fn bad_open_missing_required_capability() {
    let c = FsmConfig {
        required: vec![Capability::Multiprotocol(Family::IPV6_UNICAST)],
        ..cfg(65010, 65001)
    };
    let (_, out) = open_error(c, peer_open(65001, 90));
    let n = sent(&out);
    assert_eq!((n.code, n.subcode), (2, 7));
    // Data: the missing capability, code 1 length 4 AFI 2 SAFI 1.
    assert_eq!(n.data, vec![1, 4, 0, 2, 0, 1]);
}

#[test]
fn four_octet_peer_as_via_as_trans() {
    let (f, _) = established(cfg(65010, 4_200_000_001), 90);
    assert_eq!(f.negotiated().unwrap().peer_as, 4_200_000_001);
}

#[test]
fn header_and_open_decode_errors_send_their_notification() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::DecodeError(DecodeError::UnsupportedVersion(3)));
    assert_eq!(
        sent(&out),
        Notification {
            code: 2,
            subcode: 1,
            data: vec![0, 4]
        }
    );
    assert_eq!(f.state(), State::Idle);
    // A malformed NOTIFICATION is never answered.
    let (mut f, now) = established(cfg(65010, 65001), 90);
    let out = f.process(now, Input::DecodeError(DecodeError::BadNotification));
    assert_eq!(sent_notification(&out), None);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn unexpected_messages_are_fsm_errors_with_rfc6608_subcodes() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(sent_notification(&out), Some((5, 1)));

    f.process(now, Input::TimerExpired(Timer::IdleHold));
    f.process(now, Input::TcpConnected);
    f.process(now, Input::Message(Message::Open(peer_open(65001, 90))));
    let out = f.process(now, Input::Message(Message::Update(Update::default())));
    assert_eq!(sent_notification(&out), Some((5, 2)));

    let (mut f, now) = established(cfg(65010, 65001), 90);
    let out = f.process(now, Input::Message(Message::Open(peer_open(65001, 90))));
    assert_eq!(sent_notification(&out), Some((5, 3)));
    assert!(out.iter().any(|o| matches!(o, Output::Down(_))));
}

#[test]
fn notification_from_peer_brings_the_session_down() {
    let (mut f, now) = established(cfg(65010, 65001), 90);
    let n = Notification::admin_shutdown("bye");
    let out = f.process(now, Input::Message(Message::Notification(n.clone())));
    assert_eq!(sent_notification(&out), None);
    assert!(out.contains(&Output::Down(DownReason::NotificationReceived(n))));
    assert_eq!(f.state(), State::Idle);
    assert!(timer(&out, Timer::IdleHold).is_some());
}

#[test]
fn tcp_failure_per_state() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    let out = f.process(now, Input::TcpFailed);
    assert_eq!(f.state(), State::Active);
    assert!(timer(&out, Timer::ConnectRetry).is_some());

    let (mut f, now) = established(cfg(65010, 65001), 90);
    let out = f.process(now, Input::TcpFailed);
    assert_eq!(f.state(), State::Idle);
    assert!(out.contains(&Output::Down(DownReason::ConnectionLost)));
}

#[test]
fn manual_stop_sends_cease_only_with_a_session_and_stays_idle() {
    let cease = Notification::admin_shutdown("ipvs-sync shutting down");
    let (mut f, now) = established(cfg(65010, 65001), 90);
    let out = f.process(now, Input::ManualStop(cease.clone()));
    assert_eq!(out[0], Output::Send(Message::Notification(cease.clone())));
    assert_eq!(sent_notification(&out), Some((CEASE, CEASE_ADMIN_SHUTDOWN)));
    assert!(out.contains(&Output::Down(DownReason::Stopped(cease.clone()))));
    assert_eq!(timer(&out, Timer::IdleHold), None);
    assert_eq!(f.state(), State::Idle);
    // Idle ignores timers left over.
    assert!(f.process(now, Input::TimerExpired(Timer::Hold)).is_empty());

    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    let out = f.process(now, Input::ManualStop(cease));
    assert_eq!(sent_notification(&out), None);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn manual_stop_for_restart_closes_without_a_notification() {
    let (mut f, now) = established(cfg(65010, 65001), 90);
    let out = f.process(now, Input::ManualStopForRestart);
    assert_eq!(sent_notification(&out), None);
    assert!(out.contains(&Output::Disconnect));
    assert!(out.contains(&Output::Down(DownReason::StoppedForRestart)));
    assert_eq!(timer(&out, Timer::IdleHold), None);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn new_capabilities_go_in_the_next_open() {
    let mut f = fsm(cfg(65010, 65001));
    f.set_capabilities(vec![Capability::RouteRefresh]);
    assert_eq!(f.open_message().capabilities.len(), 2); // + 4-octet AS
    assert!(f.open_message().has(&Capability::RouteRefresh));
}

#[test]
fn route_refresh_request_is_reported_and_markers_ignored() {
    let (mut f, now) = established(cfg(65010, 65001), 90);
    let rr = |subtype| {
        Input::Message(Message::RouteRefresh(RouteRefresh {
            afi: 1,
            subtype,
            safi: 1,
        }))
    };
    let out = f.process(now, rr(0));
    assert!(out.contains(&Output::RouteRefresh(Family::IPV4_UNICAST)));
    let out = f.process(now, rr(1));
    assert!(!out.iter().any(|o| matches!(o, Output::RouteRefresh(_))));
}

#[test]
fn collision_resolution_by_bgp_identifier() {
    // §6.8: the connection initiated by the higher identifier survives.
    assert!(keep_locally_initiated(
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(192, 0, 2, 9)
    ));
    assert!(!keep_locally_initiated(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(192, 0, 2, 1)
    ));
    // The loser gets Cease 6/7 and no restart is scheduled (the other connection lives on).
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpConnected);
    f.process(now, Input::Message(Message::Open(peer_open(65001, 90))));
    let out = f.process(now, Input::CollisionDump);
    assert_eq!(sent_notification(&out), Some((6, 7)));
    assert_eq!(timer(&out, Timer::IdleHold), None);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn established_resets_the_backoff() {
    let now = Instant::now();
    let mut f = fsm(cfg(65010, 65001));
    f.process(now, Input::ManualStart);
    f.process(now, Input::TcpFailed);
    f.process(now, Input::TimerExpired(Timer::ConnectRetry));
    f.process(now, Input::TcpFailed);
    f.process(now, Input::TimerExpired(Timer::ConnectRetry));
    f.process(now, Input::TcpConnected);
    f.process(now, Input::Message(Message::Open(peer_open(65001, 90))));
    f.process(now, Input::Message(Message::Keepalive));
    let out = f.process(now, Input::TcpFailed);
    assert_eq!(timer(&out, Timer::IdleHold), Some(Duration::from_secs(2)));
}
