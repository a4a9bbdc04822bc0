//! The BFD Control packet decoder (`bfd::packet::ControlPacket::decode`) and the session FSM
//! fed with what it decodes.
//!
//! Input: one UDP payload as read from a neighbor. Decoding must return `Ok` or `Err`, never
//! panic; whatever decodes must re-encode to bytes that decode to the same packet. Then the
//! same bytes, cut into records `[op][len][len bytes]`, drive a session with a fake clock:
//! decoded packets (with Your Discriminator pointed at the session half of the time), timer
//! expiries, admin and interval changes. Every packet the session sends must decode. Keyed
//! SHA1 checking never panics, and what we sign checks out.
//! Seeds: the codec's byte vectors and packets BIRD and FRR sent, in fuzz/seeds/bfd_decode/.

#![no_main]

use std::time::{Duration, Instant};

use bfd::packet::{ControlPacket, Diag};
use bfd::{Damping, Input, Intervals, Output, Session, SessionConfig, Timer};
use libfuzzer_sys::fuzz_target;

const LOCAL: u32 = 0x0102_0304;

fn check_sent(outs: &[Output]) {
    for o in outs {
        if let Output::Send(p) = o {
            let bytes = p.encode();
            assert_eq!(
                ControlPacket::decode(&bytes).as_ref(),
                Ok(p),
                "the session sent a packet that does not decode"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        assert_eq!(ControlPacket::decode(&p.encode()), Ok(p.clone()));
        if let Ok(signed) = bfd::packet::sign_sha1(&p, b"fuzz") {
            assert!(bfd::packet::verify_sha1(&signed, b"fuzz"));
        }
    }
    let _ = bfd::packet::verify_sha1(data, b"fuzz");

    let jitter = f64::from(data.first().copied().unwrap_or(0)) / 256.0;
    let mut s = Session::new(
        SessionConfig {
            local_discr: LOCAL,
            intervals: Intervals {
                desired_min_tx: Duration::from_millis(50),
                required_min_rx: Duration::from_millis(50),
                detect_mult: 3,
            },
            damping: Damping::default(),
        },
        Box::new(move || jitter),
    );
    let mut now = Instant::now();
    check_sent(&s.process(now, Input::Start));
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*len));
        let input = match op % 8 {
            0 | 1 => match ControlPacket::decode(chunk) {
                Ok(mut p) => {
                    if op % 2 == 1 {
                        p.your_discr = LOCAL;
                    }
                    Input::Received(p)
                }
                Err(_) => continue,
            },
            2 => Input::TimerExpired(Timer::Transmit),
            3 => Input::TimerExpired(Timer::Detect),
            4 => Input::TimerExpired(Timer::HoldDown),
            5 => match len % 3 {
                0 => Input::AdminDown,
                1 => Input::AdminUp,
                _ => Input::LocalDown(Diag::from_code(*len)),
            },
            _ => {
                let w = |i: usize| u64::from(chunk.get(i).copied().unwrap_or(0));
                Input::SetIntervals(Intervals {
                    desired_min_tx: Duration::from_micros(w(0) << 16 | w(1) << 8 | w(2)),
                    required_min_rx: Duration::from_micros(w(3) << 16 | w(4) << 8 | w(5)),
                    detect_mult: chunk.get(6).copied().unwrap_or(0),
                })
            }
        };
        let outs = s.process(now, input);
        check_sent(&outs);
        let _ = (s.tx_interval(), s.detection_time(), s.packet(true, false).encode());
    }
});
