//! The fallback decision on a fake clock.

use super::*;

const S: FallbackSettings = FallbackSettings {
    after: Some(Duration::from_secs(60)),
    recover: Duration::from_secs(30),
    gap: Duration::from_secs(3),
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A balancer that heard the arbiter every second for `for_s` seconds from `t0`; returns the
/// acts of all of it.
fn heartbeats(f: &mut Fallback, t0: Instant, from_s: u64, to_s: u64) -> Vec<Act> {
    (from_s..=to_s)
        .flat_map(|s| f.heard(t0 + secs(s)))
        .collect()
}

/// Drives a fresh balancer into fallback at t0 + 60 s.
fn in_fallback(t0: Instant) -> Fallback {
    let mut f = Fallback::new(S, t0, true);
    assert_eq!(f.tick(t0 + secs(60)), vec![Act::Enter { silent: secs(60) }]);
    f
}

#[test]
fn enters_after_fallback_after_of_silence_and_not_before() {
    let t0 = Instant::now();
    let mut f = Fallback::new(S, t0, true);
    assert_eq!(f.next_deadline(), Some(t0 + secs(60)));
    assert!(f.tick(t0 + secs(59)).is_empty());
    assert_eq!(f.phase(), Phase::Normal);
    assert_eq!(f.tick(t0 + secs(60)), vec![Act::Enter { silent: secs(60) }]);
    assert!(f.active());
    assert_eq!(f.entered(), Some(t0 + secs(60)));
    // Once in, time alone changes nothing.
    assert!(f.tick(t0 + secs(600)).is_empty());
    assert_eq!(f.phase(), Phase::Fallback);
}

#[test]
fn heartbeats_keep_it_normal_however_long_it_runs() {
    let t0 = Instant::now();
    let mut f = Fallback::new(S, t0, true);
    // One heartbeat every 59 s: never 60 s of silence.
    for i in 1..100 {
        let now = t0 + secs(59 * i);
        assert!(f.tick(now).is_empty());
        assert!(f.heard(now).is_empty());
    }
    assert_eq!(f.phase(), Phase::Normal);
}

#[test]
fn a_blip_shorter_than_fallback_after_does_not_enter() {
    let t0 = Instant::now();
    let mut f = Fallback::new(S, t0, true);
    f.heard(t0 + secs(1));
    assert!(f.connected(t0 + secs(2), false).is_empty());
    assert!(f.tick(t0 + secs(40)).is_empty());
    f.connected(t0 + secs(45), true);
    f.heard(t0 + secs(46));
    assert!(f.tick(t0 + secs(100)).is_empty());
    assert_eq!(f.phase(), Phase::Normal);
}

#[test]
fn fallback_after_zero_is_never() {
    let t0 = Instant::now();
    let mut f = Fallback::new(FallbackSettings { after: None, ..S }, t0, true);
    assert_eq!(f.next_deadline(), None);
    assert!(f.tick(t0 + secs(1_000_000)).is_empty());
    assert_eq!(f.phase(), Phase::Normal);
}

#[test]
fn without_configs_it_says_so_once_per_silence_and_stays_normal() {
    let t0 = Instant::now();
    let mut f = Fallback::new(S, t0, false);
    assert_eq!(
        f.tick(t0 + secs(60)),
        vec![Act::Unavailable { silent: secs(60) }]
    );
    assert!(f.tick(t0 + secs(61)).is_empty());
    assert_eq!(f.phase(), Phase::Normal);
    // The arbiter is back, then silent again: said again.
    f.heard(t0 + secs(70));
    assert_eq!(
        f.tick(t0 + secs(130)),
        vec![Act::Unavailable { silent: secs(60) }]
    );
    // The configs arrive (a sync): the next tick enters.
    f.set_configs(true);
    assert_eq!(
        f.tick(t0 + secs(131)),
        vec![Act::Enter { silent: secs(61) }]
    );
}

#[test]
fn leaves_only_after_recover_of_answers_and_the_hand_back() {
    let t0 = Instant::now();
    let mut f = in_fallback(t0);
    // The arbiter answers from 100 s on, every second.
    assert!(heartbeats(&mut f, t0, 100, 129).is_empty());
    assert_eq!(
        f.phase(),
        Phase::Recovering {
            back_since: t0 + secs(100)
        }
    );
    assert_eq!(f.heard(t0 + secs(130)), vec![Act::HandBack]);
    assert_eq!(
        f.phase(),
        Phase::HandingBack {
            since: t0 + secs(130)
        }
    );
    // keepalived stays until the client has taken IPVS back.
    assert!(heartbeats(&mut f, t0, 131, 140).is_empty());
    assert!(f.active());
    assert_eq!(
        f.taken_back(t0 + secs(141)),
        vec![Act::Leave { lasted: secs(81) }]
    );
    assert_eq!(f.phase(), Phase::Normal);
    assert!(f.taken_back(t0 + secs(142)).is_empty());
    // And it can enter again later.
    assert_eq!(
        f.tick(t0 + secs(201)),
        vec![Act::Enter { silent: secs(61) }]
    );
}

#[test]
fn a_gap_in_the_answers_starts_the_recover_count_again() {
    let t0 = Instant::now();
    let mut f = in_fallback(t0);
    assert!(heartbeats(&mut f, t0, 100, 120).is_empty());
    // Silent for more than the gap: back to plain fallback at the deadline.
    assert_eq!(f.next_deadline(), Some(t0 + secs(123)));
    assert_eq!(f.tick(t0 + secs(124)), vec![Act::RecoverReset]);
    assert_eq!(f.phase(), Phase::Fallback);
    // Back at 125: 30 s more from there.
    assert!(heartbeats(&mut f, t0, 125, 154).is_empty());
    assert_eq!(f.heard(t0 + secs(155)), vec![Act::HandBack]);
}

#[test]
fn a_late_heartbeat_restarts_the_count_even_without_a_tick() {
    let t0 = Instant::now();
    let mut f = in_fallback(t0);
    f.heard(t0 + secs(100));
    assert_eq!(f.heard(t0 + secs(110)), vec![Act::RecoverReset]);
    assert_eq!(
        f.phase(),
        Phase::Recovering {
            back_since: t0 + secs(110)
        }
    );
}

#[test]
fn losing_the_broker_while_recovering_resets() {
    let t0 = Instant::now();
    let mut f = in_fallback(t0);
    heartbeats(&mut f, t0, 100, 110);
    assert_eq!(f.connected(t0 + secs(111), false), vec![Act::RecoverReset]);
    assert_eq!(f.phase(), Phase::Fallback);
    f.connected(t0 + secs(112), true);
    assert!(heartbeats(&mut f, t0, 112, 141).is_empty());
    assert_eq!(f.heard(t0 + secs(142)), vec![Act::HandBack]);
}

#[test]
fn a_hand_back_that_does_not_finish_returns_to_fallback() {
    let t0 = Instant::now();
    let mut f = in_fallback(t0);
    heartbeats(&mut f, t0, 100, 130);
    assert!(matches!(f.phase(), Phase::HandingBack { .. }));
    assert_eq!(f.next_deadline(), Some(t0 + secs(130) + HANDBACK_TIMEOUT));
    assert_eq!(
        f.tick(t0 + secs(130) + HANDBACK_TIMEOUT),
        vec![Act::HandBackTimedOut]
    );
    assert_eq!(f.phase(), Phase::Fallback);
    // A late report of the abandoned hand-back changes nothing.
    assert!(f.taken_back(t0 + secs(200)).is_empty());
    assert!(f.active());
}

#[test]
fn the_phase_names_for_status() {
    let t0 = Instant::now();
    assert_eq!(Phase::Normal.name(), "normal");
    assert_eq!(Phase::Fallback.name(), "fallback");
    assert_eq!(Phase::Recovering { back_since: t0 }.name(), "recovering");
    assert_eq!(Phase::HandingBack { since: t0 }.name(), "handing_back");
}
