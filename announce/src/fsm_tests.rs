//! Table-driven tests of every (state, input) pair of the announce state machine.

use super::*;
use proptest::prelude::*;

type In = Input<&'static str>;
type Out = Output<&'static str>;

const LP: LocalPref = 100;

fn syn(lp: LocalPref) -> In {
    Input::SynAnnounce {
        local_pref: lp,
        tree: "tree",
    }
}
fn ok(attempt: u64) -> In {
    Input::PrepareResult {
        attempt,
        result: Ok(()),
    }
}
fn err(attempt: u64) -> In {
    Input::PrepareResult {
        attempt,
        result: Err("firewall check failed".into()),
    }
}
fn ack(lp: LocalPref) -> In {
    Input::AckAnnounce { local_pref: lp }
}

/// Starting points, reached through real inputs (no back door into the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Idle,
    Preparing,
    Acked,
    Announced,
    /// Idle again after a cycle was cancelled while preparing (attempt 1 abandoned).
    IdleAfterCancel,
}

fn at(start: Start) -> VipFsm {
    let mut f = VipFsm::new();
    let script: Vec<In> = match start {
        Start::Idle => vec![],
        Start::Preparing => vec![syn(LP)],
        Start::Acked => vec![syn(LP), ok(1)],
        Start::Announced => vec![syn(LP), ok(1), ack(LP)],
        Start::IdleAfterCancel => vec![syn(LP), Input::FinAnnounce],
    };
    for i in script {
        f.handle(i);
    }
    f
}

fn c(e: Event) -> Out {
    Output::Count(e)
}

struct Row {
    start: Start,
    input: In,
    out: Vec<Out>,
    end: State,
}

fn row(start: Start, input: In, out: Vec<Out>, end: State) -> Row {
    Row {
        start,
        input,
        out,
        end,
    }
}

fn table() -> Vec<Row> {
    use Output as O;
    use Start::*;
    use State as S;
    let prep1 = S::Preparing {
        attempt: 1,
        local_pref: LP,
    };
    let withdraw = |extra: Option<Event>| {
        let mut v = vec![O::BgpWithdraw, O::RemoveAddress];
        v.extend(extra.map(O::Count));
        v
    };
    vec![
        // Idle
        row(
            Idle,
            syn(LP),
            vec![
                O::CheckFirewall { attempt: 1 },
                O::ApplyServices {
                    attempt: 1,
                    tree: "tree",
                },
                O::AddAddress { attempt: 1 },
            ],
            prep1,
        ),
        row(
            Idle,
            ok(1),
            vec![O::RemoveAddress, c(Event::StalePrepareResult)],
            S::Idle,
        ),
        row(Idle, err(1), vec![c(Event::StalePrepareResult)], S::Idle),
        row(Idle, ack(LP), vec![c(Event::AckWithoutSyn)], S::Idle),
        row(
            Idle,
            Input::FinAnnounce,
            vec![c(Event::WithdrawWhileIdle)],
            S::Idle,
        ),
        row(Idle, Input::NotInAnnounces, vec![], S::Idle),
        row(Idle, Input::Shutdown, vec![], S::Idle),
        // Preparing (attempt 1, LP 100)
        row(Preparing, syn(LP), vec![c(Event::DuplicateSyn)], prep1),
        row(
            Preparing,
            syn(200),
            vec![c(Event::DuplicateSyn)],
            S::Preparing {
                attempt: 1,
                local_pref: 200,
            },
        ),
        row(
            Preparing,
            ok(1),
            vec![O::SendAck],
            S::Acked { local_pref: LP },
        ),
        row(
            Preparing,
            err(1),
            vec![c(Event::PrepareFailed("firewall check failed".into()))],
            S::Idle,
        ),
        row(Preparing, ok(7), vec![c(Event::StalePrepareResult)], prep1),
        row(Preparing, err(7), vec![c(Event::StalePrepareResult)], prep1),
        row(Preparing, ack(LP), vec![c(Event::AckBeforePrepared)], prep1),
        row(
            Preparing,
            Input::FinAnnounce,
            withdraw(Some(Event::Cancelled)),
            S::Idle,
        ),
        row(
            Preparing,
            Input::NotInAnnounces,
            withdraw(Some(Event::Cancelled)),
            S::Idle,
        ),
        row(Preparing, Input::Shutdown, withdraw(None), S::Idle),
        // Acked (LP 100)
        row(
            Acked,
            syn(LP),
            vec![O::SendAck, c(Event::DuplicateSyn)],
            S::Acked { local_pref: LP },
        ),
        row(
            Acked,
            syn(300),
            vec![O::SendAck, c(Event::DuplicateSyn)],
            S::Acked { local_pref: 300 },
        ),
        row(
            Acked,
            ok(1),
            vec![c(Event::StalePrepareResult)],
            S::Acked { local_pref: LP },
        ),
        row(
            Acked,
            err(1),
            vec![c(Event::StalePrepareResult)],
            S::Acked { local_pref: LP },
        ),
        // The go's LP wins over the syn's.
        row(
            Acked,
            ack(150),
            vec![O::BgpAnnounce { local_pref: 150 }],
            S::Announced { local_pref: 150 },
        ),
        row(
            Acked,
            Input::FinAnnounce,
            withdraw(Some(Event::Cancelled)),
            S::Idle,
        ),
        row(
            Acked,
            Input::NotInAnnounces,
            withdraw(Some(Event::Cancelled)),
            S::Idle,
        ),
        row(Acked, Input::Shutdown, withdraw(None), S::Idle),
        // Announced (LP 100)
        row(
            Announced,
            syn(LP),
            vec![c(Event::DuplicateSyn)],
            S::Announced { local_pref: LP },
        ),
        row(
            Announced,
            syn(50),
            vec![O::BgpAnnounce { local_pref: 50 }],
            S::Announced { local_pref: 50 },
        ),
        row(
            Announced,
            ok(1),
            vec![c(Event::StalePrepareResult)],
            S::Announced { local_pref: LP },
        ),
        row(
            Announced,
            err(1),
            vec![c(Event::StalePrepareResult)],
            S::Announced { local_pref: LP },
        ),
        row(
            Announced,
            ack(LP),
            vec![c(Event::DuplicateAck)],
            S::Announced { local_pref: LP },
        ),
        row(
            Announced,
            ack(120),
            vec![O::BgpAnnounce { local_pref: 120 }],
            S::Announced { local_pref: 120 },
        ),
        row(Announced, Input::FinAnnounce, withdraw(None), S::Idle),
        row(Announced, Input::NotInAnnounces, withdraw(None), S::Idle),
        row(Announced, Input::Shutdown, withdraw(None), S::Idle),
        // Idle after a cancelled prepare: its late Ok removes what it may have added;
        // a new syn starts attempt 2, and attempt 1's result is then stale.
        row(
            IdleAfterCancel,
            ok(1),
            vec![O::RemoveAddress, c(Event::StalePrepareResult)],
            S::Idle,
        ),
        row(
            IdleAfterCancel,
            syn(LP),
            vec![
                O::CheckFirewall { attempt: 2 },
                O::ApplyServices {
                    attempt: 2,
                    tree: "tree",
                },
                O::AddAddress { attempt: 2 },
            ],
            S::Preparing {
                attempt: 2,
                local_pref: LP,
            },
        ),
    ]
}

#[test]
fn every_transition() {
    for (n, r) in table().into_iter().enumerate() {
        let mut f = at(r.start);
        let desc = format!("row {n}: {:?} + {:?}", r.start, r.input);
        let out = f.handle(r.input);
        assert_eq!(out, r.out, "{desc}");
        assert_eq!(f.state(), r.end, "{desc}");
    }
}

fn kind(i: &In) -> &'static str {
    match i {
        Input::SynAnnounce { .. } => "syn",
        Input::PrepareResult { result: Ok(()), .. } => "prepare-ok",
        Input::PrepareResult { result: Err(_), .. } => "prepare-err",
        Input::AckAnnounce { .. } => "ack",
        Input::FinAnnounce => "fin",
        Input::NotInAnnounces => "not-in-announces",
        Input::Shutdown => "shutdown",
    }
}

#[test]
fn table_covers_every_state_and_input_kind() {
    let rows = table();
    for start in [
        Start::Idle,
        Start::Preparing,
        Start::Acked,
        Start::Announced,
    ] {
        for k in [
            "syn",
            "prepare-ok",
            "prepare-err",
            "ack",
            "fin",
            "not-in-announces",
            "shutdown",
        ] {
            assert!(
                rows.iter().any(|r| r.start == start && kind(&r.input) == k),
                "no row for {start:?} + {k}"
            );
        }
    }
}

#[test]
fn full_cycle_then_a_second_one() {
    let mut f = VipFsm::new();
    assert_eq!(f.handle(syn(100)).len(), 3);
    assert_eq!(f.handle(ok(1)), vec![Output::SendAck]);
    assert_eq!(
        f.handle(ack(100)),
        vec![Output::BgpAnnounce { local_pref: 100 }]
    );
    assert_eq!(
        f.handle::<&str>(Input::FinAnnounce),
        vec![Output::BgpWithdraw, Output::RemoveAddress]
    );
    assert_eq!(f.state(), State::Idle);
    let second = f.handle(syn(90));
    assert_eq!(second[0], Output::CheckFirewall { attempt: 2 });
    assert_eq!(
        f.handle(ok(1)),
        vec![Output::Count(Event::StalePrepareResult)]
    );
    assert_eq!(f.handle(ok(2)), vec![Output::SendAck]);
    assert_eq!(f.state().name(), "acked");
}

fn arb_input() -> impl Strategy<Value = In> {
    prop_oneof![
        (0u32..3).prop_map(|lp| syn(100 + lp)),
        (1u64..4).prop_map(ok),
        (1u64..4).prop_map(err),
        (0u32..3).prop_map(|lp| ack(100 + lp)),
        Just(Input::FinAnnounce),
        Just(Input::NotInAnnounces),
        Just(Input::Shutdown),
    ]
}

proptest! {
    /// Over any sequence of inputs: the address is never removed while announced
    /// (withdraw comes first), a BGP announce only follows a completed prepare and
    /// an ack, and the machine's state agrees with what it told the driver.
    #[test]
    fn withdraw_always_precedes_removal(inputs in proptest::collection::vec(arb_input(), 0..40)) {
        let mut f = VipFsm::new();
        let mut announced = false;
        let mut acked_this_cycle = false;
        for input in inputs {
            for out in f.handle(input) {
                match out {
                    Output::BgpAnnounce { .. } => {
                        prop_assert!(acked_this_cycle, "announce without a prior ack");
                        announced = true;
                    }
                    Output::BgpWithdraw => {
                        announced = false;
                        acked_this_cycle = false;
                    }
                    Output::RemoveAddress => prop_assert!(!announced, "address removed while announced"),
                    Output::SendAck => acked_this_cycle = true,
                    Output::CheckFirewall { .. } => acked_this_cycle = false,
                    _ => {}
                }
            }
            prop_assert_eq!(announced, matches!(f.state(), State::Announced { .. }));
        }
    }
}
