//! The balancer's decisions, without I/O: messages, timers and the results of kernel and BGP
//! work in, commands out. The daemon loop (`client/mod.rs`) feeds [`ClientState`] and performs
//! what it returns; every repair path is decided here, so it is tested here with a fake clock.
//!
//! | input | commands |
//! |---|---|
//! | `tree` | the mirror replaced (never by a lower serial of the same arbiter run), `Reconcile` |
//! | `changes` | applied to the mirror and `Reconcile`, or a `tree` request when they do not follow |
//! | `services` (asked for) | merged into the mirror, `Reconcile` |
//! | `mapping` | VIPs that left it withdrawn (their services kept until their address goes), `Reconcile`; the first one also cleans leftover addresses |
//! | `syn_announce` | per VIP of ours: `Prepare` (firewall, services — from the mirror when it is newer than the syn's —, address) |
//! | prepare result | `ack_announce` to the arbiter, or the VIP back to idle |
//! | `ack_announce` (the go) | `Announce` |
//! | `fin_announce` | `Withdraw`; once it is on the wire, `withdraw_grace`; then `RemoveAddress` if the VIP is still idle |
//! | `sync` (asked for) / `execute` | `WriteFiles` / `Execute` |
//! | arbiter `heartbeat` | a `tree` request when its serial is not ours; everything again when it restarted |
//! | timers | `heartbeat`, `tree` and `announces` requests; an ack still without its go after 10 s asks for the announces again |
//! | broker back, messages dropped as stale | mapping, tree, announces (and sync) asked again |
//!
//! Address work of one VIP is serialised: at most one prepare (which adds the address) or one
//! removal is in flight per VIP, the next waits for it, and a removal re-checks that the VIP is
//! still idle when its turn comes. So a `fin` then `syn` flap can never leave an announced VIP
//! without its address, and an address never goes before its withdraw was written and the grace
//! has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use announce::fsm::{Event, Input, Output};
use announce::{State, Vips};
use ipvs::{FwmarkVips, Tree};

use super::announce_order::AnnounceOrder;
use super::kernel::{ChangesOutcome, Mirror};
use crate::wire::messages::{
    AckPrepared, Execute, Heartbeat, Mapping, PeerRole, SynAnnounce, SyncFile, SyncRequest,
    FEATURE_ACK_BATCH,
};
use crate::wire::{Dest, Message, MessageId};

/// At most one re-sync per this long when messages arrive stale.
pub const STALE_RESYNC_EVERY: Duration = Duration::from_secs(10);

/// A VIP acked this long ago and still without the arbiter's go makes the client ask for the
/// announces again; the arbiter answers with `syn_announce`, on which every acked VIP sends its
/// ack again. A lost ack or go then heals in seconds rather than at the next
/// `announces_request_interval`.
pub const ACK_REPAIR_AFTER: Duration = Duration::from_secs(10);

/// Answers (`services`, `sync`) are taken only this long after they were asked for.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);

/// What the core needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This balancer's name (its entry in the mapping).
    pub hostname: String,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Period of `tree` requests.
    pub tree_request_interval: Duration,
    /// Period of `announces` requests.
    pub announces_request_interval: Duration,
    /// Wait between a withdraw on the wire and the address removal.
    pub withdraw_grace: Duration,
    /// Globs asked for with `sync` on every (re)sync; empty: none.
    pub sync_dirs: Vec<String>,
    /// Whether IPVS is mirrored (`ipvs = true`).
    pub ipvs: bool,
    /// Software version for heartbeats.
    pub version: String,
    /// `drain_min`, `drain_conns`, `drain_timeout`.
    pub drain: DrainSettings,
}

/// How a VIP is drained (`[announce] drain_*`).
#[derive(Debug, Clone, Copy)]
pub struct DrainSettings {
    /// Announced with GRACEFUL_SHUTDOWN at least this long.
    pub min: Duration,
    /// Withdrawn once its connections are at most this many...
    pub conns: u64,
    /// ... or once this long has passed.
    pub timeout: Duration,
}

/// Something for the daemon to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// Publish a message.
    Send(Dest, Message),
    /// Prepare `vip`: firewall check, then its IPVS services (`None` with `ipvs = false`), then
    /// its address; report with [`ClientState::prepared`].
    Prepare {
        /// The VIP.
        vip: IpAddr,
        /// The attempt the result belongs to.
        attempt: u64,
        /// The VIP's services to put in the kernel.
        services: Option<Tree>,
    },
    /// Announce `vip` to every BGP peer (or re-announce with a new LOCAL_PREF, or drained).
    Announce {
        /// The VIP.
        vip: IpAddr,
        /// LOCAL_PREF.
        local_pref: u32,
        /// Drained: GRACEFUL_SHUTDOWN (65535:0, RFC 8326) and the lowest preference.
        drain: bool,
        /// The VIP's own communities.
        communities: Vec<String>,
    },
    /// Count `vip`'s IPVS active + inactive connections on this balancer; report with
    /// [`ClientState::conns`].
    CountConns {
        /// The VIP.
        vip: IpAddr,
    },
    /// Persist the set of drained VIPs (they stay drained across a restart).
    SaveDrained(BTreeSet<IpAddr>),
    /// Withdraw `vip` from every BGP peer; report with [`ClientState::withdrawn`] once the
    /// UPDATE is written to every Established peer.
    Withdraw {
        /// The VIP.
        vip: IpAddr,
        /// Ties the report to this withdraw.
        ticket: u64,
    },
    /// Remove `vip`'s address (and, with `services`, its IPVS services); report with
    /// [`ClientState::removed`].
    RemoveAddress {
        /// The VIP.
        vip: IpAddr,
        /// The VIP left the mapping: remove its IPVS services too.
        services: bool,
    },
    /// Apply `plan` to the kernel as is (no dump: the core trusts what it applied last);
    /// report with [`ClientState::reconciled`]. Runs after the kernel work before it.
    ApplyPlan {
        /// The operations.
        plan: ipvs::Plan,
        /// The mirror's serial the kernel is at once they are applied.
        serial: u64,
    },
    /// Dump the services of the `owned` VIPs and make them equal `wanted` (the verify that
    /// repairs drift); report with [`ClientState::reconciled`]. Supersedes kernel work still
    /// waiting.
    Reconcile {
        /// This balancer's part of the arbiter's tree.
        wanted: Tree,
        /// VIPs whose services may be changed or removed.
        owned: BTreeSet<IpAddr>,
        /// Which VIP each fwmark service goes with (`owned` decides for those too).
        marks: FwmarkVips,
        /// The mirror's serial the kernel is at once it is done.
        serial: u64,
    },
    /// Remove addresses of `mine` left from an earlier run, keeping `keep`.
    CleanAddresses {
        /// VIPs in use now.
        keep: BTreeSet<IpAddr>,
        /// VIPs of this balancer.
        mine: BTreeSet<IpAddr>,
    },
    /// Write files of a `sync` answer.
    WriteFiles(Vec<SyncFile>),
    /// In fallback, the hand-back is done: the arbiter's tree is re-read and IPVS equals it;
    /// keepalived may go.
    TakenBack,
    /// Run an `execute` command.
    Execute(Execute),
    /// Log and count.
    Note(Note),
}

/// Events worth a log line and a counter.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A `syn_announce` for a VIP the mapping does not give this balancer.
    NotMine(IpAddr),
    /// An event of a VIP's announce machine.
    Vip(IpAddr, Event),
    /// The mapping changed: this balancer now serves this many VIPs.
    Mapping(usize),
    /// A `tree` older than the mirror of the same arbiter run was ignored.
    OldTree {
        /// Its serial.
        got: u64,
        /// The mirror's.
        have: u64,
    },
    /// `changes` do not follow the mirror: the whole tree is asked for.
    ChangesGap {
        /// Their `from_serial`.
        from: u64,
        /// The mirror's.
        have: u64,
    },
    /// The arbiter restarted (its heartbeat came with a new epoch): everything is asked
    /// for again.
    ArbiterRestarted,
    /// An arbiter heartbeat older than one taken already (published again after a lost
    /// confirm) was dropped.
    LateHeartbeat,
    /// The broker is reachable again: everything is asked for again.
    Reconnected,
    /// Messages arrived stale: everything is asked for again.
    StaleResync(u64),
    /// VIPs acked long ago without the go: the announces are asked for again.
    AckRepair(usize),
    /// A removal found its VIP busy again (a new `syn_announce` came) and was dropped.
    RemovalCancelled(IpAddr),
    /// An answer nobody asked for (or a file not asked for) was ignored.
    Unsolicited(&'static str),
    /// A message a balancer does not take was ignored.
    Ignored(&'static str),
    /// An announce message of the arbiter was ignored: keepalived decides in fallback.
    InFallback(&'static str),
    /// A `syn_announce` arrived before the first mapping and waits for it.
    SynBeforeMapping,
    /// The kernel reconcile or an address removal failed.
    Failed(String),
    /// A `syn_announce` of a drained VIP was not acted on.
    Drained(IpAddr),
    /// An announce message older than the arbiter's last word on the VIP said nothing of it
    /// (a copy published again after a lost confirm; see `announce_order`).
    Late {
        /// The message's type.
        kind: &'static str,
        /// The VIP.
        vip: IpAddr,
    },
    /// A drained VIP was withdrawn: its connections, or the timeout.
    DrainDone {
        /// The VIP.
        vip: IpAddr,
        /// Its connections at the last count.
        conns: Option<u64>,
        /// The timeout ended the wait.
        timed_out: bool,
    },
}

/// What an address slot of a VIP is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    Preparing,
    Removing,
}

/// Where a removal of a VIP's address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// The withdraw with this ticket is not on the wire yet.
    AwaitWithdraw(u64),
    /// Waiting for the grace to pass.
    Grace(Instant),
    /// Due as soon as no other address work of the VIP is in flight.
    Ready,
}

/// Address work of one VIP.
#[derive(Debug, Default)]
struct Slot {
    busy: Option<Busy>,
    /// A prepare waiting for the slot: its attempt and services.
    queued: Option<(u64, Option<Tree>)>,
    /// The services of the prepare in flight.
    preparing: Option<Tree>,
    removal: Option<Removal>,
}

/// The last thing each kind of answer was asked for.
#[derive(Debug, Default)]
struct Asked {
    services: Option<Instant>,
    sync: Option<Instant>,
}

/// The kernel's IPVS against the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelSerial {
    /// The last kernel work succeeded; it brought the kernel to this serial.
    Applied(u64),
    /// Kernel work fails; the serial last applied without a failure, if any.
    Failing { last_good: Option<u64> },
}

/// The balancer's state; one task owns it.
#[derive(Debug)]
pub struct ClientState {
    s: Settings,
    started: Instant,
    mirror: Mirror,
    /// VIPs the mapping gives this balancer (`None` before the first mapping).
    mine: Option<BTreeSet<IpAddr>>,
    /// VIPs whose services this client put in the kernel.
    owned: BTreeSet<IpAddr>,
    /// Firewall mark → VIP, from the last mapping: the fwmark services mirrored with a VIP.
    fwmarks: FwmarkVips,
    /// Every mark a mapping of this run gave (with its last VIP): their services are this
    /// client's to change or remove, as those of `owned` VIPs are.
    marks_owned: FwmarkVips,
    /// VIPs that left the mapping whose services stay until their address removal.
    leaving: BTreeSet<IpAddr>,
    vips: Vips,
    slots: BTreeMap<IpAddr, Slot>,
    early_syns: Vec<SynAnnounce>,
    arbiter_heartbeat_id: Option<MessageId>,
    last_arbiter_heartbeat: Option<Instant>,
    /// The arbiter restarted since the mirror was last set: any serial is taken.
    arbiter_restarted: bool,
    acked: BTreeMap<IpAddr, Instant>,
    /// No time in `acked` is earlier than this (`None`: `acked` is empty). Exact after
    /// `repair_acks`, a lower bound in between, so that [`ClientState::next_deadline`] does
    /// not scan 10,000 acks after each message of a cold start.
    acked_floor: Option<Instant>,
    /// No grace of a removal in `slots` ends before this; exact after `tick_removals`.
    grace_floor: Option<Instant>,
    asked: Asked,
    next_heartbeat: Instant,
    next_tree: Instant,
    next_announces: Instant,
    next_ticket: u64,
    connected: bool,
    stale_seen: u64,
    last_stale_resync: Option<Instant>,
    last_reconcile_ok: Option<Instant>,
    /// Drained VIPs and where their drain is.
    drained: BTreeMap<IpAddr, drain::Draining>,
    /// VIP → its own communities (from the arbiter's syn and go).
    communities: BTreeMap<IpAddr, Vec<String>>,
    /// This balancer's part of the tree as last put in the kernel, and the VIPs it covers
    /// (`None`: unknown, the next kernel work is a full reconcile).
    applied: Option<(Tree, BTreeSet<IpAddr>)>,
    /// How the kernel stands against the mirror (what the heartbeats report).
    kernel: KernelSerial,
    /// When the next full reconcile (the verify) is due.
    next_verify: Instant,
    /// Addresses the first mapping's clean-up leaves alone (a graceful restart's VIPs).
    kept: BTreeSet<IpAddr>,
    /// The id of the arbiter's last announce message per VIP.
    order: AnnounceOrder,
    /// In fallback: how far keepalived owns IPVS and the announces (`None`: the arbiter).
    local: Option<Local>,
    /// VIPs whose go comes from a local quorum call, not from the arbiter.
    local_go: BTreeSet<IpAddr>,
}

#[path = "state_drain.rs"]
mod drain;
pub use drain::{DrainStep, Draining};
#[path = "state_local.rs"]
mod local;
pub use local::{Local, LocalRefused, LOCAL_PREF_DEFAULT};

impl ClientState {
    /// A fresh balancer at `now`: it asks for mapping, tree and announces at once.
    pub fn new(s: Settings, now: Instant) -> (Self, Vec<Cmd>) {
        let mut st = ClientState {
            started: now,
            mirror: Mirror::default(),
            mine: None,
            owned: BTreeSet::new(),
            fwmarks: FwmarkVips::new(),
            marks_owned: FwmarkVips::new(),
            leaving: BTreeSet::new(),
            vips: Vips::new(),
            slots: BTreeMap::new(),
            early_syns: Vec::new(),
            arbiter_heartbeat_id: None,
            last_arbiter_heartbeat: None,
            arbiter_restarted: false,
            acked: BTreeMap::new(),
            acked_floor: None,
            grace_floor: None,
            asked: Asked::default(),
            next_heartbeat: now,
            next_tree: now + s.tree_request_interval,
            next_announces: now + s.announces_request_interval,
            next_ticket: 0,
            connected: true,
            stale_seen: 0,
            last_stale_resync: None,
            last_reconcile_ok: None,
            drained: BTreeMap::new(),
            communities: BTreeMap::new(),
            applied: None,
            kernel: KernelSerial::Applied(0),
            next_verify: now + s.tree_request_interval,
            kept: BTreeSet::new(),
            order: AnnounceOrder::default(),
            local: None,
            local_go: BTreeSet::new(),
            s,
        };
        let mut out = Vec::new();
        st.request_all(now, &mut out);
        (st, out)
    }

    // --- queries ------------------------------------------------------------------------

    /// The state of `vip`'s announce machine.
    pub fn vip_state(&self, vip: IpAddr) -> State {
        self.vips.state(vip)
    }

    /// VIPs announced now, with their LOCAL_PREF.
    pub fn announced(&self) -> BTreeMap<IpAddr, u32> {
        self.vips.announced()
    }

    /// VIPs the mapping gives this balancer (empty before the first mapping).
    pub fn mine(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.mine.iter().flatten().copied()
    }

    /// Whether the mapping gives this balancer `vip`.
    pub fn is_mine(&self, vip: IpAddr) -> bool {
        self.mine.as_ref().is_some_and(|m| m.contains(&vip))
    }

    /// VIPs whose address is, or is about to be, on the interface.
    pub fn busy(&self) -> BTreeSet<IpAddr> {
        self.vips.busy()
    }

    /// After a graceful restart: the addresses of `vips` (announced by the previous process)
    /// survive the first mapping's clean-up, so they are in place while the arbiter's
    /// announces come in again.
    pub fn keep_addresses(&mut self, vips: BTreeSet<IpAddr>) {
        self.kept = vips;
    }

    /// New settings (a reload): the intervals apply from the next period on.
    pub fn reconfigure(&mut self, s: Settings) {
        self.s = s;
    }

    /// Serial of the mirror.
    pub fn serial(&self) -> u64 {
        self.mirror.serial
    }

    /// When the arbiter's last heartbeat came.
    pub fn last_arbiter_heartbeat(&self) -> Option<Instant> {
        self.last_arbiter_heartbeat
    }

    /// When the kernel last took a reconcile.
    pub fn last_reconcile_ok(&self) -> Option<Instant> {
        self.last_reconcile_ok
    }

    /// The earliest time [`ClientState::tick`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self
            .next_heartbeat
            .min(self.next_tree)
            .min(self.next_announces)
            .min(self.next_verify);
        // A floor earlier than the truth wakes the loop early once; the tick then makes it
        // exact.
        if let Some(at) = self.acked_floor {
            t = t.min(at + ACK_REPAIR_AFTER);
        }
        if let Some(until) = self.grace_floor {
            t = t.min(until);
        }
        for d in self.drained.values() {
            if let Some(at) = d.next_look() {
                t = t.min(at);
            }
        }
        t
    }

    // --- inputs -------------------------------------------------------------------------

    /// A verified message from the arbiter.
    /// [`ClientState::on_message`] for a message of the arbiter with its id: a late copy of
    /// an announce message says nothing of a VIP the arbiter spoke of since
    /// ([`super::announce_order`]).
    pub fn on_arbiter_message(&mut self, now: Instant, id: MessageId, msg: Message) -> Vec<Cmd> {
        if let Message::AckGoBatch(_) = msg {
            // Each go as if it had come alone (the VIPs of a batch are distinct).
            return crate::wire::ack_batch::split(msg)
                .into_iter()
                .flat_map(|m| self.on_arbiter_message(now, id, m))
                .collect();
        }
        if let Message::Heartbeat(hb) = &msg {
            if hb.role == PeerRole::Server {
                let mut out = Vec::new();
                self.on_arbiter_heartbeat(now, id, hb, &mut out);
                return out;
            }
        }
        let kind = msg.kind().as_str();
        let (kept, late) = self.order.admit(id, msg);
        let mut out: Vec<Cmd> = late
            .into_iter()
            .map(|vip| Cmd::Note(Note::Late { kind, vip }))
            .collect();
        if let Some(m) = kept {
            out.extend(self.on_message(now, m));
        }
        out
    }

    pub fn on_message(&mut self, now: Instant, msg: Message) -> Vec<Cmd> {
        let mut out = Vec::new();
        if self.local_ignores(&msg, &mut out) {
            return out;
        }
        match msg {
            Message::Tree(t) => {
                if t.serial < self.mirror.serial
                    && self.mirror.tree.is_some()
                    && !self.arbiter_restarted
                {
                    out.push(Cmd::Note(Note::OldTree {
                        got: t.serial,
                        have: self.mirror.serial,
                    }));
                } else {
                    self.mirror.set_tree(t.serial, t.tree);
                    self.arbiter_restarted = false;
                    self.local_tree_taken(&mut out);
                    self.reconcile(&mut out);
                }
            }
            Message::Changes(c) => {
                match self
                    .mirror
                    .apply_changes(c.from_serial, c.to_serial, &c.plan)
                {
                    ChangesOutcome::Applied => self.reconcile(&mut out),
                    ChangesOutcome::Duplicate => {}
                    ChangesOutcome::NeedTree => {
                        out.push(Cmd::Note(Note::ChangesGap {
                            from: c.from_serial,
                            have: self.mirror.serial,
                        }));
                        out.push(Cmd::Send(Dest::Server, Message::TreeRequest));
                    }
                }
            }
            Message::Services(s) => {
                if !asked_within(self.asked.services, now) {
                    out.push(Cmd::Note(Note::Unsolicited("services")));
                } else if let Some(tree) = self.mirror.tree.as_mut() {
                    for svc in s.tree.services() {
                        tree.insert(svc.clone());
                    }
                    self.reconcile(&mut out);
                }
            }
            Message::Mapping(map) => self.on_mapping(now, map, &mut out),
            Message::SynAnnounce(syn) if self.mine.is_none() => {
                out.push(Cmd::Note(Note::SynBeforeMapping));
                self.early_syns.push(syn);
                out.push(Cmd::Send(Dest::Server, Message::MappingRequest));
            }
            Message::SynAnnounce(syn) => self.on_syn(now, syn, &mut out),
            Message::AckGo(go) => {
                let changed = self.set_communities(go.vip, go.communities);
                let outs = self.vips.handle::<Tree>(
                    go.vip,
                    Input::AckAnnounce {
                        local_pref: go.local_preference,
                    },
                );
                let announces = outs.iter().any(|o| matches!(o, Output::BgpAnnounce { .. }));
                self.perform(now, go.vip, outs, &mut out);
                self.reannounce_if(changed && !announces, go.vip, &mut out);
            }
            Message::FinAnnounce(fin) => {
                for vip in fin.vips {
                    let outs = self.vips.handle::<Tree>(vip, Input::FinAnnounce);
                    self.perform(now, vip, outs, &mut out);
                }
            }
            Message::Sync(answer) => {
                if asked_within(self.asked.sync, now) {
                    out.push(Cmd::WriteFiles(answer.files));
                } else {
                    out.push(Cmd::Note(Note::Unsolicited("sync")));
                }
            }
            Message::Execute(ex) => out.push(Cmd::Execute(ex)),
            Message::Drain(d) => {
                let (cmds, _) = if d.drain {
                    let timeout = d
                        .timeout_s
                        .and_then(|t| Duration::try_from_secs_f64(t).ok());
                    self.drain(now, None, timeout)
                } else {
                    self.undrain(now, None)
                };
                out.extend(cmds);
            }
            other => out.push(Cmd::Note(Note::Ignored(other.kind().as_str()))),
        }
        out
    }

    /// The prepare of `attempt` for `vip` finished.
    pub fn prepared(
        &mut self,
        now: Instant,
        vip: IpAddr,
        attempt: u64,
        result: Result<(), String>,
    ) -> Vec<Cmd> {
        let mut out = Vec::new();
        if let Some(slot) = self.slots.get_mut(&vip) {
            if slot.busy == Some(Busy::Preparing) {
                slot.busy = None;
            }
        }
        let services = self.slots.get_mut(&vip).and_then(|s| s.preparing.take());
        if let Ok(()) = &result {
            if self.s.ipvs && self.mine.as_ref().is_some_and(|m| m.contains(&vip)) {
                self.owned.insert(vip);
                // The prepare put the VIP's services in the kernel: what was applied has them.
                if let (Some((tree, covered)), Some(svcs)) = (self.applied.as_mut(), services) {
                    if covered.contains(&vip) {
                        let of_vip: Vec<ipvs::ServiceKey> = tree
                            .filter_vips(&BTreeSet::from([vip]), &self.fwmarks)
                            .services()
                            .map(|s| *s.key())
                            .collect();
                        for key in of_vip {
                            tree.remove(&key);
                        }
                        for svc in svcs.services() {
                            tree.insert(svc.clone());
                        }
                    }
                }
            }
        }
        let outs = self
            .vips
            .handle::<Tree>(vip, Input::PrepareResult { attempt, result });
        self.perform(now, vip, outs, &mut out);
        self.pump(vip, &mut out);
        out
    }

    /// Every firewall mark a mapping of this run gave this balancer, with its last VIP: the
    /// kernel's fwmark services this client may change or remove ([`Cmd::Reconcile`] carries
    /// them; the prepare, the removal and the connection count of a VIP read them here).
    pub fn marks_owned(&self) -> &FwmarkVips {
        &self.marks_owned
    }

    /// The withdraw `ticket` of `vip` is on the wire to every Established peer.
    pub fn withdrawn(&mut self, now: Instant, vip: IpAddr, ticket: u64) -> Vec<Cmd> {
        let mut out = Vec::new();
        if let Some(slot) = self.slots.get_mut(&vip) {
            if slot.removal == Some(Removal::AwaitWithdraw(ticket)) {
                let until = now + self.s.withdraw_grace;
                slot.removal = Some(Removal::Grace(until));
                lower_to(&mut self.grace_floor, until);
            }
        }
        self.tick_removals(now, &mut out);
        out
    }

    /// The address removal of `vip` finished.
    pub fn removed(&mut self, vip: IpAddr, result: Result<(), String>) -> Vec<Cmd> {
        let mut out = Vec::new();
        if let Err(e) = result {
            out.push(Cmd::Note(Note::Failed(format!("removing {vip}: {e}"))));
        }
        if let Some(slot) = self.slots.get_mut(&vip) {
            if slot.busy == Some(Busy::Removing) {
                slot.busy = None;
            }
        }
        self.pump(vip, &mut out);
        out
    }

    /// Kernel work for the mirror's `serial` finished (`Err` with why it failed): a failure
    /// makes the next work a full reconcile, at once, and the heartbeats report the serial
    /// last applied without a failure until one succeeds.
    pub fn reconciled(
        &mut self,
        now: Instant,
        serial: u64,
        result: Result<(), String>,
    ) -> Vec<Cmd> {
        match result {
            Ok(()) => {
                self.last_reconcile_ok = Some(now);
                self.kernel = KernelSerial::Applied(serial);
                self.local_kernel_taken()
            }
            Err(e) => {
                if let KernelSerial::Applied(s) = self.kernel {
                    self.kernel = KernelSerial::Failing { last_good: Some(s) };
                }
                self.applied = None;
                self.next_verify = now;
                vec![Cmd::Note(Note::Failed(format!("IPVS: {e}")))]
            }
        }
    }

    /// Whether the broker connection is up; coming back asks for everything again.
    pub fn set_connected(&mut self, now: Instant, up: bool) -> Vec<Cmd> {
        let mut out = Vec::new();
        if up && !self.connected {
            out.push(Cmd::Note(Note::Reconnected));
            self.request_all(now, &mut out);
        }
        self.connected = up;
        out
    }

    /// The transport has dropped `total` messages as stale so far: ask for everything again,
    /// at most every [`STALE_RESYNC_EVERY`] (a dropped message may have been a syn, fin, tree
    /// or mapping this client never learns of otherwise).
    pub fn stale_dropped(&mut self, now: Instant, total: u64) -> Vec<Cmd> {
        let mut out = Vec::new();
        if total <= self.stale_seen
            || self
                .last_stale_resync
                .is_some_and(|t| now.saturating_duration_since(t) < STALE_RESYNC_EVERY)
        {
            return out;
        }
        out.push(Cmd::Note(Note::StaleResync(total - self.stale_seen)));
        self.stale_seen = total;
        self.last_stale_resync = Some(now);
        self.request_all(now, &mut out);
        out
    }

    /// Time passed: periodic requests, ack repair, removals whose grace is over.
    pub fn tick(&mut self, now: Instant) -> Vec<Cmd> {
        let mut out = Vec::new();
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.s.heartbeat_interval;
            out.push(Cmd::Send(Dest::Server, self.heartbeat(now)));
        }
        if now >= self.next_tree {
            self.next_tree = now + self.s.tree_request_interval;
            out.push(Cmd::Send(Dest::Server, Message::TreeRequest));
        }
        if now >= self.next_announces {
            self.next_announces = now + self.s.announces_request_interval;
            out.push(Cmd::Send(Dest::Server, Message::AnnouncesRequest));
        }
        if now >= self.next_verify {
            self.next_verify = now + self.s.tree_request_interval;
            self.kernel_work(true, &mut out);
        }
        self.repair_acks(now, &mut out);
        self.tick_drains(now, &mut out);
        self.tick_removals(now, &mut out);
        out
    }

    /// The daemon stops: every busy VIP is withdrawn. Returns the withdraw commands and the
    /// VIPs whose address the daemon removes after them (`remove_vips_on_stop`).
    pub fn shutdown(&mut self) -> (Vec<Cmd>, Vec<IpAddr>) {
        let mut withdraws = Vec::new();
        let mut removals = Vec::new();
        for (vip, o) in self.vips.shutdown::<Tree>() {
            match o {
                Output::BgpWithdraw => {
                    self.next_ticket += 1;
                    withdraws.push(Cmd::Withdraw {
                        vip,
                        ticket: self.next_ticket,
                    });
                }
                Output::RemoveAddress => removals.push(vip),
                _ => {}
            }
        }
        (withdraws, removals)
    }

    // --- the parts ----------------------------------------------------------------------

    fn heartbeat(&self, now: Instant) -> Message {
        Message::Heartbeat(Heartbeat {
            role: PeerRole::Client,
            uptime: now.saturating_duration_since(self.started).as_secs(),
            version: Some(self.s.version.clone()),
            serial: self.applied_serial(),
            announced: Some(self.vips.announced().into_keys().collect()),
            drained: (!self.drained.is_empty()).then(|| self.drained.keys().copied().collect()),
            features: vec![FEATURE_ACK_BATCH.to_owned()],
        })
    }

    /// The tree serial this balancer has applied, which its heartbeats report and the
    /// arbiter's fleet view compares with its own: the mirror's while the kernel follows
    /// it, the last one applied without a failure while IPVS work fails (none if none was).
    pub fn applied_serial(&self) -> Option<u64> {
        match self.kernel {
            KernelSerial::Failing { last_good } if self.s.ipvs => last_good,
            _ => Some(self.mirror.serial),
        }
    }

    fn request_all(&mut self, now: Instant, out: &mut Vec<Cmd>) {
        out.push(Cmd::Send(Dest::Server, Message::MappingRequest));
        out.push(Cmd::Send(Dest::Server, Message::TreeRequest));
        out.push(Cmd::Send(Dest::Server, Message::AnnouncesRequest));
        if !self.s.sync_dirs.is_empty() {
            self.asked.sync = Some(now);
            out.push(Cmd::Send(
                Dest::Server,
                Message::SyncRequest(SyncRequest {
                    dirs: self.s.sync_dirs.clone(),
                }),
            ));
        }
    }

    /// The arbiter's heartbeat, numbered `id`. A restart shows as a new epoch (the arbiter
    /// takes a higher one at every start), not as a lower uptime: a heartbeat published
    /// again after a lost confirm (a broker node lost, a partition) keeps its id and uptime
    /// and can arrive after newer ones. Such a late copy is dropped whole; taken as a restart,
    /// it would let an older tree roll the mirror back.
    fn on_arbiter_heartbeat(
        &mut self,
        now: Instant,
        id: MessageId,
        hb: &Heartbeat,
        out: &mut Vec<Cmd>,
    ) {
        if self.arbiter_heartbeat_id.is_some_and(|last| id <= last) {
            out.push(Cmd::Note(Note::LateHeartbeat));
            return;
        }
        // An arbiter that restarted has forgotten nothing it needs (it reads its own kernel
        // and files), but this client must re-sync its view with it.
        if self
            .arbiter_heartbeat_id
            .is_some_and(|last| id.epoch > last.epoch)
        {
            out.push(Cmd::Note(Note::ArbiterRestarted));
            self.arbiter_restarted = true;
            self.request_all(now, out);
        }
        self.arbiter_heartbeat_id = Some(id);
        self.last_arbiter_heartbeat = Some(now);
        if hb.serial.is_some_and(|s| s != self.mirror.serial) && self.mirror.tree.is_some() {
            out.push(Cmd::Send(Dest::Server, Message::TreeRequest));
        }
    }

    fn on_mapping(&mut self, now: Instant, map: Mapping, out: &mut Vec<Cmd>) {
        let mine: BTreeSet<IpAddr> = map
            .balancers
            .get(&self.s.hostname)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let marks: FwmarkVips = map
            .fwmarks
            .into_iter()
            .filter(|(_, vip)| mine.contains(vip))
            .collect();
        let first = self.mine.is_none();
        if marks != self.fwmarks {
            self.marks_owned.extend(&marks);
            self.fwmarks = marks;
            if self.mine.as_ref() == Some(&mine) {
                // Same VIPs, other marks: only the kernel's fwmark services change.
                self.reconcile(out);
                return;
            }
        }
        if self.mine.as_ref() == Some(&mine) {
            return;
        }
        out.push(Cmd::Note(Note::Mapping(mine.len())));
        let before = self.mine.take().unwrap_or_default();
        // VIPs that left: withdrawn like a fin_announce; their services go with the address.
        for vip in before.difference(&mine) {
            if self.owned.contains(vip) {
                self.leaving.insert(*vip);
            }
        }
        for (vip, o) in self.vips.reconcile::<Tree>(&mine) {
            self.perform(now, vip, vec![o], out);
        }
        // A leaving VIP that was idle has no withdraw to wait for: its services go now.
        let idle_leaving: Vec<IpAddr> = self
            .leaving
            .iter()
            .filter(|v| {
                self.vips.state(**v) == State::Idle
                    && self.slots.get(v).is_none_or(|s| s.removal.is_none())
            })
            .copied()
            .collect();
        for vip in idle_leaving {
            self.slots.entry(vip).or_default().removal = Some(Removal::Ready);
            self.pump(vip, out);
        }
        // A VIP that came back is not leaving any more.
        self.leaving.retain(|v| !mine.contains(v));
        if first {
            let mut keep = self.vips.busy();
            keep.extend(std::mem::take(&mut self.kept));
            out.push(Cmd::CleanAddresses {
                keep,
                mine: mine.clone(),
            });
        }
        self.mine = Some(mine);
        for syn in std::mem::take(&mut self.early_syns) {
            self.on_syn(now, syn, out);
        }
        self.reconcile(out);
    }

    fn on_syn(&mut self, now: Instant, syn: SynAnnounce, out: &mut Vec<Cmd>) {
        for (vip, spec) in syn.vips {
            if !self.mine.as_ref().is_some_and(|m| m.contains(&vip)) {
                out.push(Cmd::Note(Note::NotMine(vip)));
                continue;
            }
            if self.drained.contains_key(&vip) {
                out.push(Cmd::Note(Note::Drained(vip)));
                continue;
            }
            // The mirror may have moved on since the arbiter cut this syn's tree.
            let tree = match (&self.mirror.tree, spec.serial) {
                (Some(t), Some(s)) if self.mirror.serial > s => {
                    t.filter_vips(&BTreeSet::from([vip]), &self.fwmarks)
                }
                _ => spec.tree,
            };
            let changed = self.set_communities(vip, spec.communities);
            let input = Input::SynAnnounce {
                local_pref: spec.local_preference,
                tree,
            };
            let outs = self.vips.handle(vip, input);
            let announces = outs.iter().any(|o| matches!(o, Output::BgpAnnounce { .. }));
            self.perform(now, vip, outs, out);
            self.reannounce_if(changed && !announces, vip, out);
        }
    }

    /// The Announce of `vip` with its LOCAL_PREF, drain state and communities.
    fn announce_cmd(&self, vip: IpAddr, local_pref: u32) -> Cmd {
        Cmd::Announce {
            vip,
            local_pref,
            drain: self.drained.contains_key(&vip),
            communities: self.communities.get(&vip).cloned().unwrap_or_default(),
        }
    }

    /// Records `vip`'s communities; returns whether they changed.
    fn set_communities(&mut self, vip: IpAddr, c: Vec<String>) -> bool {
        let old = if c.is_empty() {
            self.communities.remove(&vip)
        } else {
            self.communities.insert(vip, c.clone())
        };
        old.unwrap_or_default() != c
    }

    /// An announced VIP whose communities alone changed is announced again (an implicit
    /// replace at the routers: no withdraw).
    fn reannounce_if(&self, changed: bool, vip: IpAddr, out: &mut Vec<Cmd>) {
        if let (true, State::Announced { local_pref }) = (changed, self.vips.state(vip)) {
            out.push(self.announce_cmd(vip, local_pref));
        }
    }

    /// Brings the kernel to the mirror: the difference from what was applied last, without a
    /// dump, when that is known and covers the same VIPs; else a full reconcile.
    fn reconcile(&mut self, out: &mut Vec<Cmd>) {
        self.kernel_work(false, out);
    }

    fn kernel_work(&mut self, verify: bool, out: &mut Vec<Cmd>) {
        if !self.s.ipvs || !self.mirroring() {
            return;
        }
        let Some(mine) = &self.mine else { return };
        let Some(wanted) = self.mirror.wanted(mine, &self.fwmarks) else {
            return;
        };
        // Services of VIPs on their way out stay as they are until their address goes.
        let owned: BTreeSet<IpAddr> = mine
            .iter()
            .chain(self.owned.difference(&self.leaving))
            .copied()
            .collect();
        self.owned = mine.iter().chain(&self.leaving).copied().collect();
        match self.applied.take() {
            Some((before, covered)) if !verify && covered == owned => {
                let plan = ipvs::diff(&before, &wanted);
                if !plan.is_empty() {
                    out.push(Cmd::ApplyPlan {
                        plan,
                        serial: self.mirror.serial,
                    });
                }
            }
            _ => out.push(Cmd::Reconcile {
                wanted: wanted.clone(),
                owned: owned.clone(),
                marks: self.marks_owned.clone(),
                serial: self.mirror.serial,
            }),
        }
        self.applied = Some((wanted, owned));
    }

    /// Performs the announce machine's outputs for one VIP.
    fn perform(&mut self, now: Instant, vip: IpAddr, outs: Vec<Output<Tree>>, out: &mut Vec<Cmd>) {
        for o in outs {
            match o {
                Output::CheckFirewall { .. } | Output::AddAddress { .. } => {}
                Output::ApplyServices { attempt, tree } => {
                    let services =
                        (self.s.ipvs && self.local != Some(Local::Owned)).then_some(tree);
                    let slot = self.slots.entry(vip).or_default();
                    slot.queued = Some((attempt, services));
                    self.pump(vip, out);
                }
                Output::SendAck if self.local_go.contains(&vip) => self.local_ack(now, vip, out),
                Output::SendAck => {
                    self.acked.insert(vip, now);
                    lower_to(&mut self.acked_floor, now);
                    out.push(Cmd::Send(
                        Dest::Server,
                        Message::AckPrepared(AckPrepared { vip }),
                    ));
                }
                Output::BgpAnnounce { local_pref } => {
                    self.acked.remove(&vip);
                    out.push(self.announce_cmd(vip, local_pref));
                }
                Output::BgpWithdraw => {
                    self.acked.remove(&vip);
                    self.next_ticket += 1;
                    let ticket = self.next_ticket;
                    self.slots.entry(vip).or_default().removal =
                        Some(Removal::AwaitWithdraw(ticket));
                    out.push(Cmd::Withdraw { vip, ticket });
                }
                Output::RemoveAddress => {
                    let slot = self.slots.entry(vip).or_default();
                    if slot.removal.is_none() {
                        // Nothing was announced (a late prepare of a cancelled attempt).
                        slot.removal = Some(Removal::Ready);
                        self.pump(vip, out);
                    }
                }
                Output::Count(ev) => out.push(Cmd::Note(Note::Vip(vip, ev))),
            }
        }
    }

    /// Starts the next address work of `vip` when none is in flight: a due removal (if the VIP
    /// is still idle), else a queued prepare.
    fn pump(&mut self, vip: IpAddr, out: &mut Vec<Cmd>) {
        let idle = self.vips.state(vip) == State::Idle;
        let Some(slot) = self.slots.get_mut(&vip) else {
            return;
        };
        if slot.busy.is_some() {
            return;
        }
        if slot.removal == Some(Removal::Ready) {
            slot.removal = None;
            if idle {
                let services = self.leaving.remove(&vip);
                if services {
                    self.owned.remove(&vip);
                }
                slot.busy = Some(Busy::Removing);
                out.push(Cmd::RemoveAddress { vip, services });
                return;
            }
            out.push(Cmd::Note(Note::RemovalCancelled(vip)));
        }
        if let Some((attempt, services)) = slot.queued.take() {
            if matches!(self.vips.state(vip), State::Preparing { attempt: a, .. } if a == attempt) {
                slot.busy = Some(Busy::Preparing);
                out.push(Cmd::Prepare {
                    vip,
                    attempt,
                    services,
                });
            }
        }
        if slot.busy.is_none()
            && slot.removal.is_none()
            && slot.queued.is_none()
            && slot.preparing.is_none()
        {
            self.slots.remove(&vip);
        }
    }

    fn tick_removals(&mut self, now: Instant, out: &mut Vec<Cmd>) {
        let mut floor: Option<Instant> = None;
        let due: Vec<IpAddr> = self
            .slots
            .iter_mut()
            .filter_map(|(vip, slot)| match slot.removal {
                Some(Removal::Grace(until)) if until <= now => {
                    slot.removal = Some(Removal::Ready);
                    Some(*vip)
                }
                Some(Removal::Grace(until)) => {
                    lower_to(&mut floor, until);
                    None
                }
                _ => None,
            })
            .collect();
        self.grace_floor = floor;
        for vip in due {
            self.pump(vip, out);
        }
    }

    fn repair_acks(&mut self, now: Instant, out: &mut Vec<Cmd>) {
        let vips = &self.vips;
        self.acked
            .retain(|vip, _| matches!(vips.state(*vip), State::Acked { .. }));
        let stuck = self
            .acked
            .values()
            .filter(|t| now.saturating_duration_since(**t) >= ACK_REPAIR_AFTER)
            .count();
        if stuck > 0 {
            out.push(Cmd::Note(Note::AckRepair(stuck)));
            out.push(Cmd::Send(Dest::Server, Message::AnnouncesRequest));
            self.acked.values_mut().for_each(|t| *t = now);
        }
        self.acked_floor = self.acked.values().min().copied();
    }
}

/// Makes `floor` no later than `t`.
fn lower_to(floor: &mut Option<Instant>, t: Instant) {
    *floor = Some(floor.map_or(t, |f| f.min(t)));
}

fn asked_within(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|t| now.saturating_duration_since(t) <= ANSWER_WINDOW)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
