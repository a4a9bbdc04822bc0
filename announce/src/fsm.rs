//! The per-VIP announce state machine of a balancer (sans-IO).
//!
//! ```text
//!  Idle ──SynAnnounce──▶ Preparing ──PrepareResult(Ok)──▶ Acked ──AckAnnounce(go, LP)──▶ Announced
//!   ▲    (CheckFirewall,     │        (SendAck)                    (BgpAnnounce LP)        │
//!   │     ApplyServices,     │ PrepareResult(Err) → Idle, Count                            │
//!   │     AddAddress)        │                                                             │
//!   └──── FinAnnounce / NotInAnnounces / Shutdown from any busy state ◀────────────────────┘
//!         → BgpWithdraw, then RemoveAddress
//! ```
//!
//! The driver (the client daemon) feeds [`Input`]s and performs the returned
//! [`Output`]s in order. Prepare steps carry an `attempt` number; the driver runs
//! them one after the other, stops at the first failure, and reports the outcome as
//! `PrepareResult { attempt, .. }`, so a late result of an abandoned attempt is
//! recognised. Every exit to Idle emits `BgpWithdraw` before `RemoveAddress`: routers
//! must stop sending traffic before the address that accepts it goes away.
//!
//! Messages that arrive out of order or twice are handled explicitly and reported
//! as [`Output::Count`] with an [`Event`], so the daemon can log and count them:
//!
//! * a second `syn_announce` while Preparing keeps the newest LOCAL_PREF; while Acked
//!   it re-sends the ack (ours may have been lost); while Announced it re-announces
//!   if the LOCAL_PREF changed (an implicit BGP replace, no withdraw). Its tree is
//!   not re-applied: after the first apply, tree updates reach the kernel through
//!   the `tree`/`changes` messages;
//! * an `ack_announce` with no syn (Idle) or before our prepare finished is ignored —
//!   never announce what is not prepared;
//! * `fin_announce` while Preparing or Acked cancels the cycle (withdraw, remove);
//! * a prepare result of an abandoned attempt is ignored, except that in Idle a late
//!   success is undone by removing the address it may have added.

use std::fmt;

/// A BGP LOCAL_PREF value.
pub type LocalPref = u32;

/// Something that happened to the VIP's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<T> {
    /// The arbiter's `syn_announce`: prepare to announce, with the VIP's IPVS tree.
    SynAnnounce {
        /// LOCAL_PREF the arbiter intends.
        local_pref: LocalPref,
        /// The VIP's services.
        tree: T,
    },
    /// The driver finished the prepare steps of `attempt`.
    PrepareResult {
        /// The attempt the result belongs to.
        attempt: u64,
        /// Ok, or why preparation failed.
        result: Result<(), String>,
    },
    /// The arbiter's `ack_announce`: "go", with the LOCAL_PREF to announce.
    AckAnnounce {
        /// LOCAL_PREF to announce with.
        local_pref: LocalPref,
    },
    /// The arbiter's `fin_announce`: withdraw now.
    FinAnnounce,
    /// The arbiter's `announces` answer did not list this VIP.
    NotInAnnounces,
    /// The daemon is stopping.
    Shutdown,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<T> {
    /// Run the firewall check hook for the VIP (prepare step 1).
    CheckFirewall {
        /// Prepare attempt.
        attempt: u64,
    },
    /// Make the kernel hold the VIP's IPVS services (prepare step 2).
    ApplyServices {
        /// Prepare attempt.
        attempt: u64,
        /// The VIP's services.
        tree: T,
    },
    /// Put the VIP address on the interface (prepare step 3); then report
    /// `PrepareResult`.
    AddAddress {
        /// Prepare attempt.
        attempt: u64,
    },
    /// Send `ack_announce` ("prepared") to the arbiter.
    SendAck,
    /// Announce the VIP to every BGP peer with this LOCAL_PREF (or re-announce with a
    /// new one: an implicit replace, no withdraw).
    BgpAnnounce {
        /// LOCAL_PREF.
        local_pref: LocalPref,
    },
    /// Withdraw the VIP from every BGP peer.
    BgpWithdraw,
    /// Remove the VIP address from the interface.
    RemoveAddress,
    /// Log and count this event.
    Count(Event),
}

/// Unusual events worth a log line and a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Preparation failed; the VIP stays Idle.
    PrepareFailed(String),
    /// A `syn_announce` while already preparing, acked or announced with the same LP.
    DuplicateSyn,
    /// An `ack_announce` with no `syn_announce` before it (Idle).
    AckWithoutSyn,
    /// An `ack_announce` before our preparation finished.
    AckBeforePrepared,
    /// An `ack_announce` for a VIP already announced with the same LP.
    DuplicateAck,
    /// A prepare result for an attempt that is not the current one.
    StalePrepareResult,
    /// A `fin_announce` or absence from `announces` for a VIP that is Idle.
    WithdrawWhileIdle,
    /// The arbiter withdrew the VIP before we finished preparing or got the go.
    Cancelled,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PrepareFailed(r) => write!(f, "prepare failed: {r}"),
            Self::DuplicateSyn => f.write_str("duplicate syn_announce"),
            Self::AckWithoutSyn => f.write_str("ack_announce without syn_announce"),
            Self::AckBeforePrepared => f.write_str("ack_announce before preparation finished"),
            Self::DuplicateAck => f.write_str("duplicate ack_announce"),
            Self::StalePrepareResult => f.write_str("stale prepare result"),
            Self::WithdrawWhileIdle => f.write_str("withdraw for an idle VIP"),
            Self::Cancelled => f.write_str("announce cancelled before it completed"),
        }
    }
}

/// Where the VIP is in the announce cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not announced, no address (as far as we put it there).
    Idle,
    /// Running the prepare steps of `attempt`.
    Preparing {
        /// Current attempt.
        attempt: u64,
        /// LOCAL_PREF from the latest `syn_announce`.
        local_pref: LocalPref,
    },
    /// Prepared and acked; waiting for the arbiter's go.
    Acked {
        /// LOCAL_PREF from the latest `syn_announce`.
        local_pref: LocalPref,
    },
    /// Announced to the routers.
    Announced {
        /// LOCAL_PREF announced.
        local_pref: LocalPref,
    },
}

impl State {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Preparing { .. } => "preparing",
            Self::Acked { .. } => "acked",
            Self::Announced { .. } => "announced",
        }
    }
}

/// The announce state machine of one VIP.
#[derive(Debug, Clone)]
pub struct VipFsm {
    state: State,
    next_attempt: u64,
}

impl Default for VipFsm {
    fn default() -> Self {
        Self::new()
    }
}

impl VipFsm {
    /// A VIP in Idle.
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            next_attempt: 1,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Take one input; return the outputs to perform, in order.
    pub fn handle<T>(&mut self, input: Input<T>) -> Vec<Output<T>> {
        use Input as I;
        use Output as O;
        use State as S;
        match (self.state, input) {
            // --- SynAnnounce -------------------------------------------------
            (S::Idle, I::SynAnnounce { local_pref, tree }) => {
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                self.state = S::Preparing {
                    attempt,
                    local_pref,
                };
                vec![
                    O::CheckFirewall { attempt },
                    O::ApplyServices { attempt, tree },
                    O::AddAddress { attempt },
                ]
            }
            // Already under way: remember the newest LP; the go carries the final one.
            (S::Preparing { attempt, .. }, I::SynAnnounce { local_pref, .. }) => {
                self.state = S::Preparing {
                    attempt,
                    local_pref,
                };
                vec![O::Count(Event::DuplicateSyn)]
            }
            // The arbiter may have missed our ack: send it again.
            (S::Acked { .. }, I::SynAnnounce { local_pref, .. }) => {
                self.state = S::Acked { local_pref };
                vec![O::SendAck, O::Count(Event::DuplicateSyn)]
            }
            (S::Announced { local_pref: old }, I::SynAnnounce { local_pref, .. }) => {
                if old == local_pref {
                    vec![O::Count(Event::DuplicateSyn)]
                } else {
                    self.state = S::Announced { local_pref };
                    vec![O::BgpAnnounce { local_pref }]
                }
            }

            // --- PrepareResult -----------------------------------------------
            (
                S::Preparing {
                    attempt,
                    local_pref,
                },
                I::PrepareResult {
                    attempt: got,
                    result,
                },
            ) if attempt == got => match result {
                Ok(()) => {
                    self.state = S::Acked { local_pref };
                    vec![O::SendAck]
                }
                Err(reason) => {
                    self.state = S::Idle;
                    vec![O::Count(Event::PrepareFailed(reason))]
                }
            },
            // A prepare that finished after it was cancelled may have added the
            // address; nothing is announced in Idle, so removing it is safe.
            (S::Idle, I::PrepareResult { result: Ok(()), .. }) => {
                vec![O::RemoveAddress, O::Count(Event::StalePrepareResult)]
            }
            (_, I::PrepareResult { .. }) => vec![O::Count(Event::StalePrepareResult)],

            // --- AckAnnounce (the go) ----------------------------------------
            (S::Acked { .. }, I::AckAnnounce { local_pref }) => {
                self.state = S::Announced { local_pref };
                vec![O::BgpAnnounce { local_pref }]
            }
            (S::Announced { local_pref: old }, I::AckAnnounce { local_pref }) => {
                if old == local_pref {
                    vec![O::Count(Event::DuplicateAck)]
                } else {
                    self.state = S::Announced { local_pref };
                    vec![O::BgpAnnounce { local_pref }]
                }
            }
            (S::Idle, I::AckAnnounce { .. }) => vec![O::Count(Event::AckWithoutSyn)],
            (S::Preparing { .. }, I::AckAnnounce { .. }) => {
                vec![O::Count(Event::AckBeforePrepared)]
            }

            // --- withdraws ---------------------------------------------------
            (S::Idle, I::FinAnnounce) => vec![O::Count(Event::WithdrawWhileIdle)],
            (S::Idle, I::NotInAnnounces | I::Shutdown) => vec![],
            (S::Announced { .. }, I::FinAnnounce | I::NotInAnnounces | I::Shutdown) => {
                self.state = S::Idle;
                vec![O::BgpWithdraw, O::RemoveAddress]
            }
            (S::Preparing { .. } | S::Acked { .. }, I::FinAnnounce | I::NotInAnnounces) => {
                self.state = S::Idle;
                vec![O::BgpWithdraw, O::RemoveAddress, O::Count(Event::Cancelled)]
            }
            (S::Preparing { .. } | S::Acked { .. }, I::Shutdown) => {
                self.state = S::Idle;
                vec![O::BgpWithdraw, O::RemoveAddress]
            }
        }
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
