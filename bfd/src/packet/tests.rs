//! Byte-vector tests both ways (bytes → struct → the same bytes), one per §6.8.6 codec rule,
//! and property tests: every encoded packet decodes to itself, no input panics the decoder.

#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;

use super::*;

fn down_packet() -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 1,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
        auth: None,
    }
}

const DOWN: [u8; 24] = [
    0x20, 0x40, 0x03, 0x18, // v1 diag 0, Down, mult 3, len 24
    0x00, 0x00, 0x00, 0x01, // my discr 1
    0x00, 0x00, 0x00, 0x00, // your discr 0
    0x00, 0x0f, 0x42, 0x40, // desired min tx 1 s
    0x00, 0x0f, 0x42, 0x40, // required min rx 1 s
    0x00, 0x00, 0x00, 0x00, // echo 0
];

/// Decodes `bytes` to `want` and encodes `want` back to `bytes`.
fn both_ways(bytes: &[u8], want: &ControlPacket) {
    assert_eq!(&ControlPacket::decode(bytes).unwrap(), want);
    assert_eq!(want.encode(), bytes);
}

#[test]
fn down_both_ways() {
    both_ways(&DOWN, &down_packet());
}

#[test]
fn up_poll_final_and_flags() {
    let mut p = down_packet();
    p.state = State::Up;
    p.your_discr = 0x0102_0304;
    p.poll = true;
    p.desired_min_tx = 300_000;
    p.required_min_rx = 100_000;
    let mut b = DOWN;
    b[1] = 0xe0; // Up, P
    b[8..12].copy_from_slice(&[1, 2, 3, 4]);
    b[12..16].copy_from_slice(&[0x00, 0x04, 0x93, 0xe0]);
    b[16..20].copy_from_slice(&[0x00, 0x01, 0x86, 0xa0]);
    both_ways(&b, &p);

    p.poll = false;
    p.final_ = true;
    b[1] = 0xd0; // Up, F
    both_ways(&b, &p);

    p.final_ = false;
    p.cpi = true;
    p.demand = true;
    b[1] = 0xca; // Up, C, D
    both_ways(&b, &p);
}

#[test]
fn diagnostics_and_states() {
    for (code, diag) in [
        (0, Diag::None),
        (1, Diag::DetectionTimeExpired),
        (2, Diag::EchoFailed),
        (3, Diag::NeighborDown),
        (4, Diag::ForwardingPlaneReset),
        (5, Diag::PathDown),
        (6, Diag::ConcatenatedPathDown),
        (7, Diag::AdminDown),
        (8, Diag::ReverseConcatenatedPathDown),
        (9, Diag::MisConnectivity),
        (31, Diag::Other(31)),
    ] {
        for (bits, state) in [(0u8, State::AdminDown), (1, State::Down)] {
            let mut p = down_packet();
            p.diag = diag;
            p.state = state;
            let mut b = DOWN;
            b[0] = 0x20 | code;
            b[1] = bits << 6;
            both_ways(&b, &p);
        }
    }
}

#[test]
fn init_both_ways() {
    let mut p = down_packet();
    p.state = State::Init;
    p.your_discr = 7;
    let mut b = DOWN;
    b[1] = 0x80;
    b[11] = 7;
    both_ways(&b, &p);
}

#[test]
fn bytes_past_length_are_ignored() {
    let mut b = DOWN.to_vec();
    b.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(ControlPacket::decode(&b).unwrap(), down_packet());
}

fn with_auth(auth: Auth) -> ControlPacket {
    ControlPacket {
        auth: Some(auth),
        ..down_packet()
    }
}

#[test]
fn simple_password_both_ways() {
    let mut b = DOWN.to_vec();
    b[1] |= 0x04;
    b[3] = 24 + 9;
    b.extend_from_slice(&[0x01, 0x09, 0x05]);
    b.extend_from_slice(b"secret");
    both_ways(
        &b,
        &with_auth(Auth::SimplePassword {
            key_id: 5,
            password: b"secret".to_vec(),
        }),
    );
}

#[test]
fn keyed_md5_and_sha1_both_ways() {
    for (ty, meticulous) in [(2u8, false), (3, true)] {
        let mut b = DOWN.to_vec();
        b[1] |= 0x04;
        b[3] = 24 + 24;
        b.extend_from_slice(&[ty, 24, 9, 0, 0, 0, 1, 0]);
        b.extend_from_slice(&[0xaa; 16]);
        both_ways(
            &b,
            &with_auth(Auth::KeyedMd5 {
                meticulous,
                key_id: 9,
                seq: 256,
                digest: [0xaa; 16],
            }),
        );
    }
    for (ty, meticulous) in [(4u8, false), (5, true)] {
        let mut b = DOWN.to_vec();
        b[1] |= 0x04;
        b[3] = 24 + 28;
        b.extend_from_slice(&[ty, 28, 1, 0, 0x80, 0, 0, 0x2a]);
        b.extend_from_slice(&[0x55; 20]);
        both_ways(
            &b,
            &with_auth(Auth::KeyedSha1 {
                meticulous,
                key_id: 1,
                seq: 0x8000_002a,
                hash: [0x55; 20],
            }),
        );
    }
}

#[test]
fn reserved_auth_type_both_ways() {
    let mut b = DOWN.to_vec();
    b[1] |= 0x04;
    b[3] = 24 + 5;
    b.extend_from_slice(&[0x09, 0x05, 1, 2, 3]);
    both_ways(
        &b,
        &with_auth(Auth::Other {
            auth_type: 9,
            data: vec![1, 2, 3],
        }),
    );
}

/// Each §6.8.6 rule of the codec, broken once.
#[test]
fn validation_rules() {
    let err = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = DOWN.to_vec();
        f(&mut b);
        ControlPacket::decode(&b).unwrap_err()
    };
    assert_eq!(err(&|b| b.truncate(23)), DecodeError::Truncated(23));
    assert_eq!(err(&|b| b.clear()), DecodeError::Truncated(0));
    assert_eq!(err(&|b| b[0] = 0x40), DecodeError::Version(2));
    assert_eq!(err(&|b| b[0] = 0x00), DecodeError::Version(0));
    assert_eq!(err(&|b| b[3] = 23), DecodeError::LengthTooShort(23));
    assert_eq!(
        err(&|b| b[3] = 25),
        DecodeError::LengthPastDatagram {
            field: 25,
            datagram: 24
        }
    );
    assert_eq!(err(&|b| b[2] = 0), DecodeError::DetectMultZero);
    assert_eq!(err(&|b| b[1] |= 0x01), DecodeError::Multipoint);
    assert_eq!(err(&|b| b[7] = 0), DecodeError::MyDiscriminatorZero);
    assert_eq!(
        err(&|b| b[1] = 0xc0),
        DecodeError::YourDiscriminatorZero(State::Up)
    );
    assert_eq!(
        err(&|b| b[1] = 0x80),
        DecodeError::YourDiscriminatorZero(State::Init)
    );
    assert_eq!(err(&|b| b[1] |= 0x04), DecodeError::AuthMissing);
    assert_eq!(
        err(&|b| {
            b[1] |= 0x04;
            b[3] = 25;
            b.push(1);
        }),
        DecodeError::LengthTooShort(25)
    );
    assert_eq!(
        err(&|b| {
            b[3] = 26;
            b.extend_from_slice(&[1, 2]);
        }),
        DecodeError::UnexpectedAuth(2)
    );
    // Auth Len disagrees with the packet Length.
    assert_eq!(
        err(&|b| {
            b[1] |= 0x04;
            b[3] = 24 + 9;
            b.extend_from_slice(&[1, 8, 1, b'a', b'b', b'c', b'd', b'e', b'f']);
        }),
        DecodeError::AuthLength {
            auth_type: 1,
            auth_len: 8,
            section: 9
        }
    );
    // SHA1 section one byte short, password of 17 bytes, empty password.
    for section in [
        [&[4u8, 27, 1, 0, 0, 0, 0, 1][..], &[0; 19]].concat(),
        [&[1u8, 20, 1][..], &[b'x'; 17]].concat(),
        vec![1u8, 3, 1],
    ] {
        let e = err(&|b| {
            b[1] |= 0x04;
            b[3] = 24 + section.len() as u8;
            b.extend_from_slice(&section);
        });
        assert!(
            matches!(e, DecodeError::AuthLength { .. }),
            "{section:?}: {e:?}"
        );
    }
}

#[test]
fn error_kinds_are_stable_names() {
    assert_eq!(DecodeError::Truncated(3).kind(), "truncated");
    assert_eq!(DecodeError::Multipoint.kind(), "multipoint");
    assert_eq!(DecodeError::AuthMissing.kind(), "auth_section");
}

fn arb_auth() -> impl Strategy<Value = Option<Auth>> {
    prop_oneof![
        Just(None),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 1..=16))
            .prop_map(|(key_id, password)| Some(Auth::SimplePassword { key_id, password })),
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<[u8; 16]>()).prop_map(
            |(meticulous, key_id, seq, digest)| Some(Auth::KeyedMd5 {
                meticulous,
                key_id,
                seq,
                digest
            })
        ),
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<[u8; 20]>()).prop_map(
            |(meticulous, key_id, seq, hash)| Some(Auth::KeyedSha1 {
                meticulous,
                key_id,
                seq,
                hash
            })
        ),
        (6u8..=255, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(auth_type, data)| Some(Auth::Other { auth_type, data })),
    ]
}

prop_compose! {
    fn arb_packet()(
        diag in 0u8..32,
        state in 0u8..4,
        flags in any::<[bool; 4]>(),
        detect_mult in 1u8..=255,
        my_discr in 1u32..,
        your_discr in 1u32..,
        times in any::<[u32; 3]>(),
        auth in arb_auth(),
    ) -> ControlPacket {
        let state = [State::AdminDown, State::Down, State::Init, State::Up][usize::from(state)];
        ControlPacket {
            diag: Diag::from_code(diag),
            state,
            poll: flags[0],
            final_: flags[1],
            cpi: flags[2],
            demand: flags[3],
            detect_mult,
            my_discr,
            your_discr,
            desired_min_tx: times[0],
            required_min_rx: times[1],
            required_min_echo_rx: times[2],
            auth,
        }
    }
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(p in arb_packet()) {
        let bytes = p.encode();
        prop_assert_eq!(usize::from(bytes[3]), bytes.len());
        prop_assert_eq!(ControlPacket::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(p) = ControlPacket::decode(&bytes) {
            // What decodes re-encodes to the bytes up to Length (reserved bytes aside).
            let again = ControlPacket::decode(&p.encode()).unwrap();
            prop_assert_eq!(again, p);
        }
    }
}
