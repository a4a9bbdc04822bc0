//! State the speaker handle and its peer tasks share.
//!
//! The speaker owns one [`SpeakerShared`] (settings, the route table, the event channel) and
//! one [`PeerShared`] per peer (its Adj-RIB-Out, the writer's wake-up, counters); the peer
//! tasks in `session.rs` get `Arc`s of both. Lock order everywhere: `routes`, then the
//! speaker's peer map, then a peer's RIB, then its `info`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};

use crate::config::SpeakerConfig;
use crate::fsm::State;
use crate::rib_out::AdjRibOut;
use crate::status::PeerEvent;
use crate::table::RouteTable;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data of these
/// mutexes stays consistent at every await-free step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every peer task shares with the speaker.
pub(crate) struct SpeakerShared {
    /// The current settings (replaced by `Speaker::reconfigure`).
    cfg: Mutex<Arc<SpeakerConfig>>,
    /// The routes every session gets (its initial dump and later changes).
    pub routes: Mutex<RouteTable>,
    events: mpsc::UnboundedSender<PeerEvent>,
    /// End-of-RIB is held back until released (`defer_end_of_rib`).
    eor_deferred: AtomicBool,
    /// Peers (by name) that have had a session since start: a graceful restart is over for
    /// them, so their OPENs no longer set the Restart State bit.
    restart_done: Mutex<HashSet<String>>,
}

impl SpeakerShared {
    pub(crate) fn new(cfg: SpeakerConfig, events: mpsc::UnboundedSender<PeerEvent>) -> Self {
        Self {
            eor_deferred: AtomicBool::new(cfg.defer_end_of_rib),
            cfg: Mutex::new(Arc::new(cfg)),
            routes: Mutex::new(RouteTable::default()),
            events,
            restart_done: Mutex::new(HashSet::new()),
        }
    }

    /// Whether End-of-RIB is still held back. Read under the peer's RIB lock, so a release
    /// (which clears it, then goes through every RIB) is never missed.
    pub(crate) fn eor_deferred(&self) -> bool {
        self.eor_deferred.load(Ordering::SeqCst)
    }

    /// Stops holding End-of-RIB back; the caller then releases it in every RIB.
    pub(crate) fn release_eor(&self) {
        self.eor_deferred.store(false, Ordering::SeqCst);
    }

    /// Whether our OPENs to `peer` still say we are restarting (RFC 4724 Restart State).
    pub(crate) fn restarting_for(&self, peer: &str) -> bool {
        let cfg = self.cfg();
        cfg.restarting && cfg.graceful_restart.is_some() && !lock(&self.restart_done).contains(peer)
    }

    /// `peer` had a session: the restart is over for it.
    pub(crate) fn restart_done(&self, peer: &str) {
        lock(&self.restart_done).insert(peer.to_owned());
    }

    /// The current settings.
    pub(crate) fn cfg(&self) -> Arc<SpeakerConfig> {
        lock(&self.cfg).clone()
    }

    /// Replaces the settings.
    pub(crate) fn set_cfg(&self, cfg: Arc<SpeakerConfig>) {
        *lock(&self.cfg) = cfg;
    }

    /// Reports a session event (dropped when nobody listens any more).
    pub(crate) fn emit(&self, e: PeerEvent) {
        let _ = self.events.send(e);
    }
}

/// State shared between a peer task, its writer and the speaker handle.
#[derive(Debug, Default)]
pub(crate) struct PeerShared {
    pub rib: Mutex<AdjRibOut>,
    /// Wakes the writer: the RIB has something new to send.
    pub notify: Notify,
    pub info: Mutex<PeerInfo>,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub updates_in: AtomicU64,
    pub malformed_in: AtomicU64,
}

/// Status fields the peer task keeps up to date.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerInfo {
    pub state: Option<State>,
    pub established_at: Option<Instant>,
    pub last_error: Option<String>,
    /// Why a family's routes are not sent on the current session.
    pub next_hop_missing: Option<String>,
    /// Held down (no session until released), and why.
    pub held_down: Option<String>,
}
