//! State the speaker handle and its peer tasks share.
//!
//! The speaker owns one [`SpeakerShared`] (settings, the route table, the event channel) and
//! one [`PeerShared`] per peer (its Adj-RIB-Out, the writer's wake-up, counters); the peer
//! tasks in `session.rs` get `Arc`s of both. Lock order everywhere: `routes`, then the
//! speaker's peer map, then a peer's RIB, then its `info`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::{mpsc, Notify};

use crate::config::SpeakerConfig;
use crate::fsm::State;
use crate::policy::RouteAttrs;
use crate::rib_out::AdjRibOut;
use crate::status::PeerEvent;

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
    pub routes: Mutex<HashMap<IpNet, Arc<RouteAttrs>>>,
    events: mpsc::UnboundedSender<PeerEvent>,
}

impl SpeakerShared {
    pub(crate) fn new(cfg: SpeakerConfig, events: mpsc::UnboundedSender<PeerEvent>) -> Self {
        Self {
            cfg: Mutex::new(Arc::new(cfg)),
            routes: Mutex::new(HashMap::new()),
            events,
        }
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
