//! FSM tests: fake clock (an `Instant` advanced by hand), fixed jitter, no sockets, no sleeps.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

const ME: u32 = 0x11;
const PEER: u32 = 0x22;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(tx: u64, rx: u64, mult: u8, damping: Damping) -> SessionConfig {
    SessionConfig {
        local_discr: ME,
        intervals: Intervals {
            desired_min_tx: ms(tx),
            required_min_rx: ms(rx),
            detect_mult: mult,
        },
        damping,
    }
}

fn set(tx: u64, rx: u64, detect_mult: u8) -> Input {
    Input::SetIntervals(Intervals {
        desired_min_tx: ms(tx),
        required_min_rx: ms(rx),
        detect_mult,
    })
}

fn session_with(c: SessionConfig, jitter: f64) -> Session {
    Session::new(c, Box::new(move || jitter))
}

/// A packet from the remote: slow-start intervals unless changed.
fn remote(state: State, your: u32) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: PEER,
        your_discr: your,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
        auth: None,
    }
}

fn sent(out: &[Output]) -> Vec<&ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn timer(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::StartTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// A started session brought to `state` (damping off, jitter 0, 300 ms / 300 ms × 3).
fn session_in(state: State) -> (Session, Instant) {
    let now = Instant::now();
    let mut s = session_with(cfg(300, 300, 3, Damping::OFF), 0.0);
    s.process(now, Input::Start);
    match state {
        State::Down => {}
        State::AdminDown => {
            s.process(now, Input::AdminDown);
        }
        State::Init => {
            s.process(now, Input::Received(remote(State::Down, 0)));
        }
        State::Up => {
            s.process(now, Input::Received(remote(State::Init, ME)));
        }
    }
    assert_eq!(s.state(), state);
    (s, now)
}

/// The session is in `want.0` with diagnostic `want.1`, and `out` told the owner `want.2`.
fn check(s: &Session, out: &[Output], want: (State, Diag, Option<Event>), case: &str) {
    assert_eq!(s.state(), want.0, "{case}");
    assert_eq!(s.local_diag(), want.1, "{case}");
    assert_eq!(
        events(out),
        want.2.into_iter().collect::<Vec<_>>(),
        "{case}"
    );
}

const STATES: [State; 4] = [State::AdminDown, State::Down, State::Init, State::Up];

/// §6.2 / §6.8.6: every local state × every received State field.
#[test]
fn state_table_of_received_packets() {
    use State::*;
    let down = |diag, remote_admin_down| {
        Some(Event::Down {
            diag,
            remote_admin_down,
        })
    };
    #[rustfmt::skip]
    let table: [(State, State, State, Diag, Option<Event>); 16] = [
        // local      received   → new state  local diag          event
        (AdminDown, AdminDown, AdminDown, Diag::AdminDown, None),
        (AdminDown, Down,      AdminDown, Diag::AdminDown, None),
        (AdminDown, Init,      AdminDown, Diag::AdminDown, None),
        (AdminDown, Up,        AdminDown, Diag::AdminDown, None),
        (Down,      AdminDown, Down,      Diag::None,      None),
        (Down,      Down,      Init,      Diag::None,      None),
        (Down,      Init,      Up,        Diag::None,      Some(Event::Up)),
        (Down,      Up,        Down,      Diag::None,      None),
        (Init,      AdminDown, Down,      Diag::NeighborDown, None),
        (Init,      Down,      Init,      Diag::None,      None),
        (Init,      Init,      Up,        Diag::None,      Some(Event::Up)),
        (Init,      Up,        Up,        Diag::None,      Some(Event::Up)),
        (Up,        AdminDown, Down,      Diag::NeighborDown, down(Diag::NeighborDown, true)),
        (Up,        Down,      Down,      Diag::NeighborDown, down(Diag::NeighborDown, false)),
        (Up,        Init,      Up,        Diag::None,      None),
        (Up,        Up,        Up,        Diag::None,      None),
    ];
    for (local, received, want, diag, event) in table {
        let (mut s, now) = session_in(local);
        let out = s.process(now, Input::Received(remote(received, ME)));
        let case = format!("{local} + {received}");
        check(&s, &out, (want, diag, event), &case);
        assert_eq!(
            out.contains(&Output::Discarded(Discard::AdminDown)),
            local == AdminDown,
            "{case}"
        );
        // The remote's variables are taken in every state (§6.8.6 order).
        assert_eq!(s.remote_discr(), PEER, "{case}");
        assert_eq!(s.remote_state(), received, "{case}");
        if want != local {
            // A state change is sent at once, carrying the new state.
            assert_eq!(sent(&out).last().unwrap().state, want, "{case}");
        }
    }
}

/// Every local input in every state.
#[test]
fn state_table_of_local_inputs() {
    use State::*;
    let admin = Some(Event::Down {
        diag: Diag::AdminDown,
        remote_admin_down: false,
    });
    let expired = Some(Event::Down {
        diag: Diag::DetectionTimeExpired,
        remote_admin_down: false,
    });
    let path = Some(Event::Down {
        diag: Diag::PathDown,
        remote_admin_down: false,
    });
    #[rustfmt::skip]
    let table: Vec<(State, Input, State, Diag, Option<Event>)> = vec![
        (AdminDown, Input::AdminDown, AdminDown, Diag::AdminDown, None),
        (Down,      Input::AdminDown, AdminDown, Diag::AdminDown, None),
        (Init,      Input::AdminDown, AdminDown, Diag::AdminDown, None),
        (Up,        Input::AdminDown, AdminDown, Diag::AdminDown, admin),
        (AdminDown, Input::AdminUp,   Down,      Diag::None,      None),
        (Down,      Input::AdminUp,   Down,      Diag::None,      None),
        (Init,      Input::AdminUp,   Init,      Diag::None,      None),
        (Up,        Input::AdminUp,   Up,        Diag::None,      None),
        (AdminDown, Input::TimerExpired(Timer::Detect), AdminDown, Diag::AdminDown, None),
        (Down,      Input::TimerExpired(Timer::Detect), Down, Diag::None, None),
        (Init,      Input::TimerExpired(Timer::Detect), Down, Diag::DetectionTimeExpired, None),
        (Up,        Input::TimerExpired(Timer::Detect), Down, Diag::DetectionTimeExpired, expired),
        (AdminDown, Input::LocalDown(Diag::PathDown), AdminDown, Diag::AdminDown, None),
        (Down,      Input::LocalDown(Diag::PathDown), Down, Diag::None, None),
        (Init,      Input::LocalDown(Diag::PathDown), Down, Diag::PathDown, None),
        (Up,        Input::LocalDown(Diag::PathDown), Down, Diag::PathDown, path),
        (AdminDown, Input::TimerExpired(Timer::HoldDown), AdminDown, Diag::AdminDown, None),
        (Up,        Input::TimerExpired(Timer::HoldDown), Up, Diag::None, None),
    ];
    for (local, input, want, diag, event) in table {
        let (mut s, now) = session_in(local);
        let case = format!("{local} + {input:?}");
        let out = s.process(now, input.clone());
        check(&s, &out, (want, diag, event), &case);
        if want != local {
            let p = sent(&out);
            assert_eq!(p.last().unwrap().state, want, "{case}");
            assert_eq!(p.last().unwrap().diag, diag, "{case}");
        }
        if input == Input::TimerExpired(Timer::Detect) {
            // §6.8.1: the remote discriminator is forgotten with the remote.
            assert_eq!(s.remote_discr(), 0, "{case}");
        }
    }
}

#[test]
fn packets_for_another_session_or_with_auth_are_discarded() {
    for state in STATES {
        let (mut s, now) = session_in(state);
        let before = (s.state(), s.remote_discr());
        let out = s.process(now, Input::Received(remote(State::Up, ME + 1)));
        assert_eq!(out, vec![Output::Discarded(Discard::YourDiscriminator)]);
        let mut p = remote(State::AdminDown, ME);
        p.auth = Some(crate::packet::Auth::SimplePassword {
            key_id: 1,
            password: b"x".to_vec(),
        });
        let out = s.process(now, Input::Received(p));
        assert_eq!(out, vec![Output::Discarded(Discard::Auth)]);
        assert_eq!((s.state(), s.remote_discr()), before, "{state}");
    }
}

#[test]
fn nothing_is_sent_before_start() {
    let now = Instant::now();
    let mut s = session_with(cfg(300, 300, 3, Damping::OFF), 0.0);
    let out = s.process(now, Input::Received(remote(State::Down, 0)));
    assert!(sent(&out).is_empty() && timer(&out, Timer::Transmit).is_none());
    let out = s.process(now, Input::Start);
    assert_eq!(sent(&out).len(), 1);
}

/// §6.8.3: not Up, we advertise and use at least 1 s; the configured rate after the Poll.
#[test]
fn slow_start_then_configured_rate_after_the_final() {
    let now = Instant::now();
    let mut s = session_with(cfg(300, 200, 3, Damping::OFF), 0.0);
    let out = s.process(now, Input::Start);
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.desired_min_tx, p.required_min_rx),
        (State::Down, 1_000_000, 200_000)
    );
    assert_eq!(timer(&out, Timer::Transmit), Some(ms(1000)));
    assert_eq!(p.your_discr, 0);

    // The router answers at 100 ms / 100 ms × 3 (already Up on its side after our Init).
    let mut r = remote(State::Init, ME);
    r.desired_min_tx = 100_000;
    r.required_min_rx = 100_000;
    let out = s.process(now, Input::Received(r.clone()));
    assert_eq!(s.state(), State::Up);
    let p = sent(&out)[0];
    assert!(p.poll && !p.final_, "going Up changes Desired Min TX: Poll");
    assert_eq!(p.desired_min_tx, 300_000);
    // The faster rate applies at once: the router times us out by the 300 ms it just saw.
    assert_eq!(s.tx_interval(), Some(ms(300)));
    assert_eq!(timer(&out, Timer::Transmit), Some(ms(300)));
    // Detection: 3 × max(200 ms, 100 ms).
    assert_eq!(timer(&out, Timer::Detect), Some(ms(600)));

    // Periodic packets keep P until the Final.
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    assert!(sent(&out)[0].poll);

    r.state = State::Up;
    r.final_ = true;
    s.process(now, Input::Received(r));
    assert!(!s.polling());
    assert_eq!(s.tx_interval(), Some(ms(300)));
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    assert!(!sent(&out)[0].poll);
}

/// §6.8.2: the transmit interval is the larger of ours and the remote's Required Min RX; the
/// detection time the remote's mult × the larger of our Required Min RX and its Desired Min TX.
#[test]
fn negotiation_both_ways() {
    for (our_tx, our_rx, rem_tx, rem_rx, rem_mult, want_tx, want_detect) in [
        (300, 300, 100, 100, 3, 300, 900),
        (100, 100, 300, 500, 3, 500, 900),
        (50, 50, 50, 50, 5, 50, 250),
        (50, 400, 50, 50, 2, 50, 800),
        (300, 300, 1000, 1000, 3, 1000, 3000),
    ] {
        let (mut s, now) = session_in(State::Up);
        s.process(now, set(our_tx, our_rx, 3));
        let mut r = remote(State::Up, ME);
        r.desired_min_tx = u32::try_from(rem_tx * 1000).unwrap();
        r.required_min_rx = u32::try_from(rem_rx * 1000).unwrap();
        r.detect_mult = rem_mult;
        r.final_ = true;
        let out = s.process(now, Input::Received(r));
        let case = format!("{our_tx}/{our_rx} vs {rem_tx}/{rem_rx}x{rem_mult}");
        assert_eq!(s.tx_interval(), Some(ms(want_tx)), "{case}");
        assert_eq!(s.detection_time(), Some(ms(want_detect)), "{case}");
        assert_eq!(timer(&out, Timer::Detect), Some(ms(want_detect)), "{case}");
    }
}

/// §6.8.3: a change of our intervals in Up is carried by a Poll; a faster receive rate (a
/// shorter detection time) and a slower transmit rate wait for the Final, the others apply at
/// once.
#[test]
fn poll_sequence_on_interval_change() {
    let (mut s, now) = session_in(State::Up);
    let mut r = remote(State::Up, ME);
    r.desired_min_tx = 100_000;
    r.required_min_rx = 100_000;
    r.final_ = true;
    s.process(now, Input::Received(r.clone()));
    assert_eq!(s.detection_time(), Some(ms(900)));
    assert_eq!(s.tx_interval(), Some(ms(300)));

    // Faster both ways: we send faster at once, the shorter detection time waits.
    let out = s.process(now, set(100, 100, 3));
    assert!(s.polling());
    assert_eq!(timer(&out, Timer::Transmit), Some(ms(100)));
    assert_eq!(s.detection_time(), Some(ms(900)));
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!((p.desired_min_tx, p.required_min_rx), (100_000, 100_000));
    // A packet without F does not end the Poll.
    r.final_ = false;
    s.process(now, Input::Received(r.clone()));
    assert!(s.polling());
    assert_eq!(s.detection_time(), Some(ms(900)));
    r.final_ = true;
    let out = s.process(now, Input::Received(r.clone()));
    assert!(!s.polling());
    assert_eq!(s.detection_time(), Some(ms(300)));
    assert_eq!(timer(&out, Timer::Detect), Some(ms(300)));
    assert_eq!(s.tx_interval(), Some(ms(100)));

    // Slower transmit: the old rate until the Final (the remote lengthens its detection time
    // first).
    let out = s.process(now, set(500, 100, 3));
    assert!(s.polling());
    assert!(
        timer(&out, Timer::Transmit).is_none(),
        "rate unchanged until Final"
    );
    assert_eq!(s.tx_interval(), Some(ms(100)));
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    assert_eq!(
        sent(&out)[0].desired_min_tx,
        500_000,
        "the new value is advertised"
    );
    assert_eq!(timer(&out, Timer::Transmit), Some(ms(100)));
    let out = s.process(now, Input::Received(r.clone()));
    assert_eq!(timer(&out, Timer::Transmit), Some(ms(500)));

    // Slower receive: the longer detection time applies at once (the remote may slow down as
    // soon as it sees the new value).
    let (mut s, now) = session_in(State::Up);
    s.process(now, set(100, 1000, 3));
    assert!(s.polling());
    assert_eq!(s.detection_time(), Some(ms(3000)));
}

#[test]
fn a_poll_is_answered_at_once_with_final() {
    let (mut s, now) = session_in(State::Up);
    let mut r = remote(State::Up, ME);
    r.poll = true;
    r.desired_min_tx = 50_000;
    let out = s.process(now, Input::Received(r));
    let p = sent(&out);
    assert_eq!(p.len(), 1);
    assert!(p[0].final_ && !p[0].poll, "P and F never together");
    assert_eq!(p[0].state, State::Up);
}

#[test]
fn jitter_bounds() {
    let now = Instant::now();
    for (mult, jitter, want) in [
        (3, 0.0, 1000),
        (3, 0.999_999, 750),
        (3, 0.5, 875),
        (1, 0.0, 750),
        (1, 0.999_999, 900),
    ] {
        let mut s = session_with(cfg(1000, 1000, mult, Damping::OFF), jitter);
        let out = s.process(now, Input::Start);
        let got = timer(&out, Timer::Transmit).unwrap();
        assert!(
            got.abs_diff(ms(want)) < Duration::from_micros(5),
            "mult {mult} jitter {jitter}: {got:?}"
        );
        // Every expiry draws a new jittered interval.
        let out = s.process(now, Input::TimerExpired(Timer::Transmit));
        assert!(timer(&out, Timer::Transmit).is_some());
    }
}

#[test]
fn remote_min_rx_zero_stops_periodic_packets() {
    let (mut s, now) = session_in(State::Up);
    let mut r = remote(State::Up, ME);
    r.required_min_rx = 0;
    let out = s.process(now, Input::Received(r));
    assert!(out.contains(&Output::StopTimer(Timer::Transmit)));
    assert_eq!(s.tx_interval(), None);
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    assert!(sent(&out).is_empty());
}

#[test]
fn detection_expiry_forgets_the_remote() {
    let (mut s, now) = session_in(State::Up);
    let out = s.process(now, Input::TimerExpired(Timer::Detect));
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.diag, p.your_discr),
        (State::Down, Diag::DetectionTimeExpired, 0)
    );
    // Back to the slow rate at once, no Poll.
    assert_eq!(p.desired_min_tx, 1_000_000);
    assert!(!p.poll);
}

#[test]
fn admin_down_keeps_sending_admin_down() {
    let (mut s, now) = session_in(State::Up);
    let out = s.process(now, Input::AdminDown);
    assert!(out.contains(&Output::StopTimer(Timer::Detect)));
    let out = s.process(now, Input::TimerExpired(Timer::Transmit));
    let p = sent(&out)[0];
    assert_eq!((p.state, p.diag), (State::AdminDown, Diag::AdminDown));
}

/// Dampening with a fake clock: the first Up at once; after each flap the Up waits for a
/// hold-down that doubles up to the ceiling; a Down during the hold-down is not reported; an
/// old Down is forgotten.
#[test]
fn dampening_holds_ups_after_flaps() {
    let damping = Damping {
        initial_hold: ms(1000),
        max_hold: ms(8000),
        decay: Duration::from_secs(60),
    };
    let mut now = Instant::now();
    let mut s = session_with(cfg(300, 300, 3, damping), 0.0);
    s.process(now, Input::Start);
    let up = |s: &mut Session, now| s.process(now, Input::Received(remote(State::Init, ME)));
    let out = up(&mut s, now);
    assert_eq!(events(&out), vec![Event::Up]);

    let mut holds = vec![];
    for _ in 0..5 {
        now += ms(500);
        let out = s.process(now, Input::TimerExpired(Timer::Detect));
        assert_eq!(
            events(&out).len(),
            1,
            "the Down after a reported Up is reported"
        );
        now += ms(500);
        let out = up(&mut s, now);
        assert!(events(&out).is_empty(), "Up held back");
        let hold = timer(&out, Timer::HoldDown).unwrap();
        holds.push(hold.as_millis());
        now += hold;
        let out = s.process(now, Input::TimerExpired(Timer::HoldDown));
        assert_eq!(events(&out), vec![Event::Up]);
    }
    assert_eq!(holds, vec![1000, 2000, 4000, 8000, 8000]);

    // A Down during the hold-down: not reported, the hold-down stops and grows.
    now += ms(100);
    s.process(now, Input::TimerExpired(Timer::Detect));
    let out = up(&mut s, now);
    assert_eq!(timer(&out, Timer::HoldDown), Some(ms(8000)));
    let out = s.process(now, Input::TimerExpired(Timer::Detect));
    assert!(events(&out).is_empty());
    assert!(out.contains(&Output::StopTimer(Timer::HoldDown)));
    // A stale HoldDown expiry after that reports nothing.
    let out = s.process(now, Input::TimerExpired(Timer::HoldDown));
    assert!(events(&out).is_empty());
    assert!(!s.reported_up());

    // A minute without a Down: the next Up is reported at once.
    now += Duration::from_secs(60);
    let out = up(&mut s, now);
    assert_eq!(events(&out), vec![Event::Up]);
    assert_eq!(s.flaps(), 0);
}
