//! The core in fallback: the balancer's own keepalived owns IPVS and decides the announces,
//! part of the balancer's core.
//!
//! ```text
//!  enter_local ─▶ Owned: no mirroring (no kernel work, prepares put no services); the
//!     │           arbiter's syn/go/fin ignored; `local_quorum` up/down announce and withdraw
//!     │           through the same per-VIP machine (prepare → go → announce; fin → withdraw
//!     │           → grace → address), the go given locally
//!     │ hand_back: mapping, tree and announces asked for again
//!     ▼
//!  AwaitTree: the arbiter's syn/go/fin taken again
//!     │ a tree arrives
//!     ▼
//!  AwaitKernel: a full reconcile (dump, then the difference: no flush) to the new tree
//!     │ the kernel took it
//!     ▼
//!  TakenBack ─▶ the daemon stops keepalived (IPVS left as it is), then verifies once more
//! ```
//!
//! A VIP announced when the switch happens stays announced: a local `up` of an announced VIP
//! is a duplicate, and neither switch withdraws anything by itself.

use std::net::IpAddr;
use std::time::Instant;

use announce::fsm::Input;
use announce::State;
use ipvs::Tree;

use super::{ClientState, Cmd, Note};
use crate::wire::Message;

/// LOCAL_PREF of a VIP a local `quorum up` announces without a `b-LP` and without an earlier
/// one.
pub const LOCAL_PREF_DEFAULT: u32 = 100;

/// How far keepalived owns IPVS and the announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// keepalived decides; nothing is mirrored.
    Owned,
    /// Handing back: waiting for the arbiter's tree.
    AwaitTree,
    /// Handing back: waiting for the kernel to take the tree.
    AwaitKernel,
}

/// Why a local quorum call was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LocalRefused {
    /// The balancer is not in fallback: the arbiter decides.
    #[error("not in fallback: the arbiter decides announces")]
    NotInFallback,
    /// The VIP is not this balancer's.
    #[error("not a VIP of this balancer")]
    NotMine,
}

impl ClientState {
    /// Where the fallback is (`None`: not in fallback).
    pub fn local(&self) -> Option<Local> {
        self.local
    }

    /// Whether the kernel follows the arbiter's tree now.
    pub(super) fn mirroring(&self) -> bool {
        matches!(self.local, None | Some(Local::AwaitKernel))
    }

    /// Fallback starts: keepalived owns IPVS from now on; what was applied is forgotten (the
    /// hand-back dumps the kernel). Also after a hand-back that did not finish.
    pub fn enter_local(&mut self) {
        self.local = Some(Local::Owned);
        self.applied = None;
    }

    /// The arbiter is back: ask for everything again; the tree that answers is applied in
    /// full, and [`Cmd::TakenBack`] follows once the kernel took it.
    pub fn hand_back(&mut self, now: Instant) -> Vec<Cmd> {
        let mut out = Vec::new();
        if self.local.is_none() {
            return out;
        }
        self.local = Some(Local::AwaitTree);
        self.local_go.clear();
        self.request_all(now, &mut out);
        out
    }

    /// A quorum call of the balancer's keepalived, in fallback: `up` announces `vip` (the
    /// prepare adds its address, the go is local), `down` withdraws it (grace, then the
    /// address goes).
    pub fn local_quorum(
        &mut self,
        now: Instant,
        vip: IpAddr,
        up: bool,
        local_pref: Option<u32>,
    ) -> Result<Vec<Cmd>, LocalRefused> {
        if self.local != Some(Local::Owned) {
            return Err(LocalRefused::NotInFallback);
        }
        if !self.mine.as_ref().is_some_and(|m| m.contains(&vip)) {
            return Err(LocalRefused::NotMine);
        }
        let mut out = Vec::new();
        if !up {
            self.local_go.remove(&vip);
            let outs = self.vips.handle::<Tree>(vip, Input::FinAnnounce);
            self.perform(now, vip, outs, &mut out);
            return Ok(out);
        }
        if self.drained.contains_key(&vip) {
            out.push(Cmd::Note(Note::Drained(vip)));
            return Ok(out);
        }
        let local_pref = match (self.vips.state(vip), local_pref) {
            // Announced: kept as it is (no re-announce for a LOCAL_PREF spelled differently).
            (State::Announced { local_pref }, _) => local_pref,
            (_, Some(lp)) => lp,
            (State::Preparing { local_pref, .. } | State::Acked { local_pref }, None) => local_pref,
            (State::Idle, None) => LOCAL_PREF_DEFAULT,
        };
        self.local_go.insert(vip);
        let outs = self.vips.handle(
            vip,
            Input::SynAnnounce {
                local_pref,
                tree: Tree::new(),
            },
        );
        self.perform(now, vip, outs, &mut out);
        Ok(out)
    }

    /// The prepare of a locally decided VIP is done: the go, at once.
    pub(super) fn local_ack(&mut self, now: Instant, vip: IpAddr, out: &mut Vec<Cmd>) {
        self.local_go.remove(&vip);
        let State::Acked { local_pref } = self.vips.state(vip) else {
            return;
        };
        let outs = self
            .vips
            .handle::<Tree>(vip, Input::AckAnnounce { local_pref });
        self.perform(now, vip, outs, out);
    }

    /// While keepalived decides, the arbiter's announce messages are not acted on.
    pub(super) fn local_ignores(&self, msg: &Message, out: &mut Vec<Cmd>) -> bool {
        let ignored = self.local == Some(Local::Owned)
            && matches!(
                msg,
                Message::SynAnnounce(_) | Message::AckGo(_) | Message::FinAnnounce(_)
            );
        if ignored {
            out.push(Cmd::Note(Note::InFallback(msg.kind().as_str())));
        }
        ignored
    }

    /// A tree arrived: while handing back, it is applied in full (dump and difference).
    pub(super) fn local_tree_taken(&mut self, out: &mut Vec<Cmd>) {
        if self.local != Some(Local::AwaitTree) {
            return;
        }
        if self.s.ipvs {
            self.local = Some(Local::AwaitKernel);
            self.applied = None;
        } else {
            self.local = None;
            out.push(Cmd::TakenBack);
        }
    }

    /// The kernel took a reconcile: while handing back, that was the tree.
    pub(super) fn local_kernel_taken(&mut self) -> Vec<Cmd> {
        if self.local != Some(Local::AwaitKernel) {
            return Vec::new();
        }
        self.local = None;
        vec![Cmd::TakenBack]
    }

    /// keepalived is gone: one more full reconcile repairs what it changed between the
    /// hand-back's reconcile and its exit.
    pub fn verify_now(&mut self, now: Instant) {
        self.applied = None;
        self.next_verify = now;
    }
}
