//! Tests of the balancer's core: every message type in every VIP state, every repair path,
//! and the withdraw → grace → remove order, with a fake clock and a fake world that runs the
//! commands only when a test says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipvs::{Dest as RealServer, Service, ServiceKey, ServiceSpec, Tree};

use super::*;
use crate::wire::messages::{
    AckGo, AckGoBatch, AnnounceSpec, Changes, FinAnnounce, ServicesAnswer, SyncAnswer, TreeAnswer,
};

const ME: &str = "lb1.example.net";
const GRACE: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vip() -> IpAddr {
    ip("203.0.113.10")
}

fn settings() -> Settings {
    Settings {
        hostname: ME.into(),
        heartbeat_interval: Duration::from_secs(3),
        tree_request_interval: Duration::from_secs(120),
        announces_request_interval: Duration::from_secs(300),
        withdraw_grace: GRACE,
        sync_dirs: vec!["/etc/keepalived".into()],
        ipvs: true,
        version: "test".into(),
        drain: DrainSettings {
            min: Duration::from_secs(5),
            conns: 0,
            timeout: Duration::from_secs(300),
        },
    }
}

fn svc(vip: IpAddr, port: u16, weight: u32) -> Service {
    let mut s = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, port), "wrr"));
    s.insert_dest(RealServer::new(ip("198.51.100.1"), port).weight(weight));
    s
}

/// A fwmark service (IPv4, mark `m`) with one real server.
fn fwmark_svc(m: u32) -> Service {
    Service::new(ServiceSpec::new(
        ServiceKey::fwmark(ipvs::Family::Inet, m),
        "sh",
    ))
    .with_dest(RealServer::new(ip("198.51.100.5"), 0))
}

fn tree_of(services: Vec<Service>) -> Tree {
    let mut t = Tree::new();
    for s in services {
        t.insert(s);
    }
    t
}

/// The client core and a fake world: work is queued when commanded and done when a test says.
struct Sim {
    st: ClientState,
    now: Instant,
    sent: Vec<Message>,
    notes: Vec<Note>,
    prepares: VecDeque<(IpAddr, u64, Option<Tree>)>,
    withdraws: VecDeque<(IpAddr, u64)>,
    removals: VecDeque<(IpAddr, bool)>,
    reconciles: Vec<(Tree, BTreeSet<IpAddr>)>,
    plans: Vec<ipvs::Plan>,
    cleans: Vec<(BTreeSet<IpAddr>, BTreeSet<IpAddr>)>,
    files: Vec<SyncFile>,
    executes: Vec<Execute>,
    /// The world: addresses on the interface, routes at the routers (with LOCAL_PREF),
    /// VIPs whose services were removed.
    addresses: BTreeSet<IpAddr>,
    routes: BTreeMap<IpAddr, u32>,
    services_removed: Vec<IpAddr>,
    /// When each address removal ran and each withdraw reached the wire.
    removed_at: Vec<(IpAddr, Instant)>,
    withdrawn_at: Vec<(IpAddr, Instant)>,
    /// Whether each route was last announced drained, and with which communities.
    drained_routes: BTreeMap<IpAddr, bool>,
    route_communities: BTreeMap<IpAddr, Vec<String>>,
    /// Connection counts asked for, and the drained set last saved.
    counts: VecDeque<IpAddr>,
    saved: Option<BTreeSet<IpAddr>>,
    /// Hand-backs reported done (fallback).
    taken_back: usize,
    /// The arbiter's message numbers: every message gets the next.
    seq: u64,
    /// The arbiter's run (its epoch): [`Sim::restart_arbiter`] takes the next.
    epoch: u64,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(settings())
    }

    fn with(s: Settings) -> Sim {
        let now = Instant::now();
        let (st, out) = ClientState::new(s, now);
        let mut sim = Sim {
            st,
            now,
            sent: Vec::new(),
            notes: Vec::new(),
            prepares: VecDeque::new(),
            withdraws: VecDeque::new(),
            removals: VecDeque::new(),
            reconciles: Vec::new(),
            plans: Vec::new(),
            cleans: Vec::new(),
            files: Vec::new(),
            executes: Vec::new(),
            addresses: BTreeSet::new(),
            routes: BTreeMap::new(),
            services_removed: Vec::new(),
            removed_at: Vec::new(),
            withdrawn_at: Vec::new(),
            drained_routes: BTreeMap::new(),
            route_communities: BTreeMap::new(),
            counts: VecDeque::new(),
            saved: None,
            taken_back: 0,
            seq: 0,
            epoch: 1,
        };
        sim.take(out);
        sim
    }

    fn take(&mut self, out: Vec<Cmd>) {
        for c in out {
            match c {
                Cmd::Send(to, m) => {
                    assert_eq!(to, crate::wire::Dest::Server, "a client only sends to lbs");
                    self.sent.push(m);
                }
                Cmd::Prepare {
                    vip,
                    attempt,
                    services,
                } => self.prepares.push_back((vip, attempt, services)),
                Cmd::Announce {
                    vip,
                    local_pref,
                    drain,
                    communities,
                } => {
                    self.route_communities.insert(vip, communities);
                    assert!(
                        self.addresses.contains(&vip),
                        "{vip} announced without its address"
                    );
                    self.routes.insert(vip, local_pref);
                    self.drained_routes.insert(vip, drain);
                }
                Cmd::CountConns { vip } => self.counts.push_back(vip),
                Cmd::SaveDrained(v) => self.saved = Some(v),
                Cmd::Withdraw { vip, ticket } => self.withdraws.push_back((vip, ticket)),
                Cmd::RemoveAddress { vip, services } => self.removals.push_back((vip, services)),
                Cmd::Reconcile { wanted, owned, .. } => self.reconciles.push((wanted, owned)),
                Cmd::ApplyPlan { plan, .. } => self.plans.push(plan),
                Cmd::CleanAddresses { keep, mine } => self.cleans.push((keep, mine)),
                Cmd::WriteFiles(f) => self.files.extend(f),
                Cmd::Execute(e) => self.executes.push(e),
                Cmd::TakenBack => self.taken_back += 1,
                Cmd::Note(n) => self.notes.push(n),
            }
        }
    }

    /// A message of the arbiter, numbered after the ones before it.
    fn msg(&mut self, m: Message) {
        self.seq += 1;
        self.msg_numbered(self.seq, m);
    }

    /// A message of the arbiter with number `seq` (this run of the arbiter).
    fn msg_numbered(&mut self, seq: u64, m: Message) {
        let id = MessageId {
            epoch: self.epoch,
            seq,
        };
        let out = self.st.on_arbiter_message(self.now, id, m);
        self.take(out);
    }

    /// The arbiter starts again: its messages from now on carry the next epoch.
    fn restart_arbiter(&mut self) {
        self.epoch += 1;
        self.seq = 0;
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let out = self.st.tick(self.now);
        self.take(out);
    }

    fn mapping(&mut self, vips: &[IpAddr]) {
        self.mapping_with_marks(vips, &[]);
    }

    fn mapping_with_marks(&mut self, vips: &[IpAddr], marks: &[(u32, IpAddr)]) {
        self.msg(Message::Mapping(Mapping {
            balancers: [(ME.to_string(), vips.to_vec())].into(),
            fwmarks: marks.iter().copied().collect(),
        }));
    }

    fn syn(&mut self, vip: IpAddr, lp: u32) {
        self.syn_with(vip, lp, tree_of(vec![svc(vip, 80, 1)]), None);
    }

    fn syn_with(&mut self, vip: IpAddr, lp: u32, tree: Tree, serial: Option<u64>) {
        let mut s = SynAnnounce::default();
        s.vips.insert(
            vip,
            AnnounceSpec {
                tree,
                serial,
                local_preference: lp,
                communities: vec![],
            },
        );
        self.msg(Message::SynAnnounce(s));
    }

    fn go(&mut self, vip: IpAddr, lp: u32) {
        self.msg(Message::AckGo(AckGo {
            vip,
            local_preference: lp,
            communities: vec![],
        }));
    }

    fn fin(&mut self, vip: IpAddr) {
        self.msg(Message::FinAnnounce(FinAnnounce { vips: vec![vip] }));
    }

    /// Runs the oldest queued prepare: the address goes on, then the result is reported.
    fn finish_prepare(&mut self, ok: bool) {
        let (vip, attempt, _) = self.prepares.pop_front().expect("a prepare in flight");
        let result = if ok {
            self.addresses.insert(vip);
            Ok(())
        } else {
            Err("firewall check failed".into())
        };
        let out = self.st.prepared(self.now, vip, attempt, result);
        self.take(out);
    }

    /// The oldest queued withdraw reaches the wire.
    fn finish_withdraw(&mut self) {
        let (vip, ticket) = self.withdraws.pop_front().expect("a withdraw in flight");
        self.routes.remove(&vip);
        self.withdrawn_at.push((vip, self.now));
        let out = self.st.withdrawn(self.now, vip, ticket);
        self.take(out);
    }

    fn finish_removal(&mut self) {
        let (vip, services) = self.removals.pop_front().expect("a removal in flight");
        self.addresses.remove(&vip);
        self.removed_at.push((vip, self.now));
        if services {
            self.services_removed.push(vip);
        }
        let out = self.st.removed(vip, Ok(()));
        self.take(out);
    }

    /// Runs everything queued, in order, until nothing is left (time does not move).
    fn settle(&mut self) {
        loop {
            if !self.withdraws.is_empty() {
                self.finish_withdraw();
            } else if !self.removals.is_empty() {
                self.finish_removal();
            } else if !self.prepares.is_empty() {
                self.finish_prepare(true);
            } else {
                return;
            }
        }
    }

    /// A full announce: mapping, syn, prepare, go.
    fn announced(vip: IpAddr, lp: u32) -> Sim {
        let mut sim = Sim::new();
        sim.mapping(&[vip]);
        sim.syn(vip, lp);
        sim.finish_prepare(true);
        sim.go(vip, lp);
        assert_eq!(sim.st.vip_state(vip), State::Announced { local_pref: lp });
        sim
    }

    fn sent_kinds(&self) -> Vec<&'static str> {
        self.sent.iter().map(|m| m.kind().as_str()).collect()
    }

    fn count_sent(&self, want: fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| want(m)).count()
    }

    fn has_note(&self, want: fn(&Note) -> bool) -> bool {
        self.notes.iter().any(want)
    }
}

#[path = "state_local_tests.rs"]
mod local;

// --- start, timers, heartbeats -------------------------------------------------------------

#[test]
fn a_fresh_client_asks_for_everything_and_heartbeats() {
    let mut sim = Sim::new();
    assert_eq!(sim.sent_kinds(), ["mapping", "tree", "announces", "sync"]);
    sim.sent.clear();
    sim.advance(Duration::ZERO);
    assert_eq!(sim.sent_kinds(), ["heartbeat"]);
    sim.sent.clear();
    sim.advance(Duration::from_secs(3));
    assert_eq!(sim.sent_kinds(), ["heartbeat"]);
    sim.sent.clear();
    sim.advance(Duration::from_secs(120));
    assert!(sim.sent_kinds().contains(&"tree"));
    sim.advance(Duration::from_secs(180));
    assert!(sim.sent_kinds().contains(&"announces"));
    assert!(sim.st.next_deadline() > sim.now);
}

#[test]
fn heartbeat_lists_what_is_announced_and_the_serial() {
    let mut sim = Sim::announced(vip(), 150);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 42,
        tree: Tree::new(),
    }));
    sim.sent.clear();
    sim.advance(Duration::from_secs(3));
    let Some(Message::Heartbeat(hb)) = sim.sent.last() else {
        panic!("no heartbeat: {:?}", sim.sent_kinds())
    };
    assert_eq!(hb.role, PeerRole::Client);
    assert_eq!(hb.announced, Some(vec![vip()]));
    assert_eq!(hb.serial, Some(42));
}

// --- the announce cycle --------------------------------------------------------------------

#[test]
fn syn_prepare_ack_go_announces_with_the_local_pref() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.sent.clear();
    sim.syn(vip(), 150);
    assert!(matches!(sim.st.vip_state(vip()), State::Preparing { .. }));
    let (v, _, services) = sim.prepares.front().cloned().unwrap();
    assert_eq!(v, vip());
    assert_eq!(services.unwrap().vips(), BTreeSet::from([vip()]));
    sim.finish_prepare(true);
    assert_eq!(sim.sent_kinds(), ["ack_announce"]);
    assert!(sim.routes.is_empty(), "no announce before the go");
    sim.go(vip(), 200);
    assert_eq!(sim.routes, BTreeMap::from([(vip(), 200)]));
}

#[test]
fn a_fin_published_again_after_the_next_syn_does_not_withdraw() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(vip(), 150);
    sim.finish_prepare(true);
    sim.go(vip(), 150);
    // The arbiter's fin (its confirm lost with a broker node) and the syn it sent next:
    // the syn arrives first, the fin's copy after it.
    let fin_seq = sim.seq + 1;
    sim.seq += 1;
    sim.syn(vip(), 150);
    sim.settle();
    sim.msg_numbered(
        fin_seq,
        Message::FinAnnounce(FinAnnounce { vips: vec![vip()] }),
    );
    sim.settle();
    assert_eq!(
        sim.routes,
        BTreeMap::from([(vip(), 150)]),
        "withdrawn by a late fin"
    );
    assert!(sim.withdrawn_at.is_empty());
    assert!(sim.notes.iter().any(|n| matches!(
        n,
        Note::Late {
            kind: "fin_announce",
            ..
        }
    )));
    // A fin sent after that syn still withdraws.
    sim.fin(vip());
    sim.settle();
    assert!(sim.routes.is_empty());
}

#[test]
fn a_failed_prepare_leaves_the_vip_idle_and_counted() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(vip(), 150);
    sim.finish_prepare(false);
    assert_eq!(sim.st.vip_state(vip()), State::Idle);
    assert!(sim.has_note(|n| matches!(n, Note::Vip(_, Event::PrepareFailed(_)))));
    assert!(!sim.sent_kinds().contains(&"ack_announce"));
    // The next syn (the arbiter's repair) tries again.
    sim.syn(vip(), 150);
    sim.finish_prepare(true);
    assert!(matches!(sim.st.vip_state(vip()), State::Acked { .. }));
}

#[test]
fn with_ipvs_off_prepare_carries_no_services() {
    let mut s = settings();
    s.ipvs = false;
    let mut sim = Sim::with(s);
    sim.mapping(&[vip()]);
    assert!(sim.reconciles.is_empty());
    sim.syn(vip(), 100);
    assert_eq!(sim.prepares.front().unwrap().2, None);
}

#[test]
fn a_syn_for_a_vip_not_mine_is_refused() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(ip("203.0.113.99"), 100);
    assert!(sim.prepares.is_empty());
    assert!(sim.has_note(|n| matches!(n, Note::NotMine(_))));
}

#[test]
fn a_syn_before_the_mapping_waits_for_it() {
    let mut sim = Sim::new();
    sim.sent.clear();
    sim.syn(vip(), 100);
    assert!(sim.prepares.is_empty());
    assert_eq!(sim.sent_kinds(), ["mapping"], "the mapping is asked for");
    sim.mapping(&[vip()]);
    assert_eq!(sim.prepares.len(), 1, "the kept syn is handled");
}

/// Every message type in every state of the VIP's machine: nothing panics, and the
/// messages that change the state do only what the table says.
#[test]
fn every_message_in_every_state() {
    #[derive(Clone, Copy, Debug)]
    enum At {
        Idle,
        Preparing,
        Acked,
        Announced,
    }
    let messages: Vec<(&str, Message)> = vec![
        ("heartbeat", arbiter_heartbeat(5, Some(1))),
        (
            "tree",
            Message::Tree(TreeAnswer {
                serial: 1,
                tree: Tree::new(),
            }),
        ),
        (
            "changes",
            Message::Changes(Changes {
                from_serial: 9,
                to_serial: 10,
                plan: ipvs::Plan::default(),
            }),
        ),
        (
            "services",
            Message::Services(ServicesAnswer { tree: Tree::new() }),
        ),
        (
            "mapping",
            Message::Mapping(Mapping {
                balancers: [(ME.to_string(), vec![vip()])].into(),
                fwmarks: Default::default(),
            }),
        ),
        ("syn", {
            let mut s = SynAnnounce::default();
            s.vips.insert(
                vip(),
                AnnounceSpec {
                    tree: Tree::new(),
                    serial: None,
                    local_preference: 100,
                    communities: vec![],
                },
            );
            Message::SynAnnounce(s)
        }),
        (
            "go",
            Message::AckGo(AckGo {
                vip: vip(),
                local_preference: 100,
                communities: vec![],
            }),
        ),
        (
            "fin",
            Message::FinAnnounce(FinAnnounce { vips: vec![vip()] }),
        ),
        ("sync", Message::Sync(SyncAnswer { files: vec![] })),
        (
            "execute",
            Message::Execute(Execute {
                argv: vec!["/bin/true".into()],
                timeout_s: 1,
            }),
        ),
        ("tree request", Message::TreeRequest),
        ("announces request", Message::AnnouncesRequest),
        (
            "ack from a client",
            Message::AckPrepared(AckPrepared { vip: vip() }),
        ),
    ];
    for at in [At::Idle, At::Preparing, At::Acked, At::Announced] {
        for (name, m) in &messages {
            let mut sim = Sim::new();
            sim.mapping(&[vip()]);
            if !matches!(at, At::Idle) {
                sim.syn(vip(), 100);
            }
            if matches!(at, At::Acked | At::Announced) {
                sim.finish_prepare(true);
            }
            if matches!(at, At::Announced) {
                sim.go(vip(), 100);
            }
            let before = sim.st.vip_state(vip());
            sim.msg(m.clone());
            let after = sim.st.vip_state(vip());
            let want = match (at, *name) {
                (At::Preparing | At::Acked | At::Announced, "fin") => State::Idle,
                (At::Acked, "go") => State::Announced { local_pref: 100 },
                (At::Idle, "syn") => after,
                _ => before,
            };
            assert_eq!(after, want, "{at:?} + {name}");
            match (at, *name) {
                (At::Idle, "syn") => assert!(matches!(after, State::Preparing { .. })),
                (At::Announced, "fin") => assert_eq!(sim.withdraws.len(), 1),
                (_, "execute") => assert_eq!(sim.executes.len(), 1),
                (_, "tree request" | "announces request" | "ack from a client") => {
                    assert!(sim.has_note(|n| matches!(n, Note::Ignored(_))))
                }
                _ => {}
            }
            // Nothing announced is ever without its address.
            for v in sim.routes.keys() {
                assert!(sim.addresses.contains(v), "{at:?} + {name}");
            }
        }
    }
}

// --- withdraw, grace, remove -----------------------------------------------------------------

#[test]
fn the_address_goes_only_after_the_withdraw_is_written_and_the_grace_passed() {
    let mut sim = Sim::announced(vip(), 100);
    sim.fin(vip());
    assert_eq!(sim.withdraws.len(), 1);
    assert!(
        sim.removals.is_empty(),
        "no removal before the withdraw is on the wire"
    );
    sim.advance(Duration::from_secs(10));
    assert!(
        sim.removals.is_empty(),
        "however long it takes, no removal before the withdraw is written"
    );
    sim.finish_withdraw();
    assert!(sim.removals.is_empty(), "not before the grace");
    sim.advance(GRACE - Duration::from_millis(1));
    assert!(sim.removals.is_empty(), "not before the grace");
    assert!(sim.st.next_deadline() <= sim.now + Duration::from_millis(1));
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.removals.front(), Some(&(vip(), false)));
    sim.finish_removal();
    let (_, w) = sim.withdrawn_at[0];
    let (_, r) = sim.removed_at[0];
    assert!(r - w >= GRACE, "removed {:?} after the withdraw", r - w);
    assert!(!sim.addresses.contains(&vip()));
}

#[test]
fn a_zero_grace_removes_as_soon_as_the_withdraw_is_written() {
    let mut s = settings();
    s.withdraw_grace = Duration::ZERO;
    let mut sim = Sim::with(s);
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    sim.finish_prepare(true);
    sim.go(vip(), 100);
    sim.fin(vip());
    assert!(sim.removals.is_empty());
    sim.finish_withdraw();
    assert_eq!(sim.removals.len(), 1);
}

#[test]
fn a_syn_during_the_grace_keeps_the_address() {
    let mut sim = Sim::announced(vip(), 100);
    sim.fin(vip());
    sim.finish_withdraw();
    sim.advance(Duration::from_secs(1));
    sim.syn(vip(), 100);
    sim.finish_prepare(true);
    sim.advance(GRACE);
    assert!(sim.removals.is_empty(), "the VIP is busy again: no removal");
    assert!(sim.has_note(|n| matches!(n, Note::RemovalCancelled(_))));
    sim.go(vip(), 100);
    assert!(sim.addresses.contains(&vip()));
}

#[test]
fn a_syn_while_the_removal_runs_prepares_after_it() {
    let mut sim = Sim::announced(vip(), 100);
    sim.fin(vip());
    sim.finish_withdraw();
    sim.advance(GRACE);
    assert_eq!(sim.removals.len(), 1, "removal in flight");
    sim.syn(vip(), 100);
    assert!(
        sim.prepares.is_empty(),
        "the prepare (which adds the address) waits for the removal"
    );
    sim.finish_removal();
    assert_eq!(sim.prepares.len(), 1);
    sim.finish_prepare(true);
    sim.go(vip(), 100);
    assert!(sim.addresses.contains(&vip()) && sim.routes.contains_key(&vip()));
}

#[test]
fn a_fin_while_preparing_removes_the_address_after_the_prepare() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    sim.fin(vip());
    assert_eq!(sim.st.vip_state(vip()), State::Idle);
    sim.finish_withdraw(); // nothing was announced: written at once
    sim.advance(GRACE);
    assert!(sim.removals.is_empty(), "the prepare is still running");
    sim.finish_prepare(true); // a late success of the cancelled attempt
    assert_eq!(sim.removals.len(), 1);
    sim.finish_removal();
    assert!(sim.addresses.is_empty());
}

/// The flap of the must-show, in the core: `fin` then `syn` 1,000 times, 10 ms apart, with the
/// world doing its work at varying speeds. An announced VIP never lacks its address, and the
/// end state is announced with the address.
#[test]
fn a_fin_syn_flap_never_ends_announced_without_its_address() {
    let mut sim = Sim::announced(vip(), 100);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..1000 {
        sim.fin(vip());
        sim.advance(Duration::from_millis(5));
        sim.syn(vip(), 100);
        // The world catches up with a random part of its queues.
        for _ in 0..(next() % 4) {
            match next() % 3 {
                0 if !sim.withdraws.is_empty() => sim.finish_withdraw(),
                1 if !sim.removals.is_empty() => sim.finish_removal(),
                2 if !sim.prepares.is_empty() => sim.finish_prepare(true),
                _ => {}
            }
        }
        if matches!(sim.st.vip_state(vip()), State::Acked { .. }) && next() % 2 == 0 {
            sim.go(vip(), 100);
        }
        sim.advance(Duration::from_millis(5));
        if sim.routes.contains_key(&vip()) && sim.withdraws.is_empty() {
            assert!(
                sim.addresses.contains(&vip()),
                "flap {i}: announced without address"
            );
        }
    }
    sim.settle();
    sim.advance(GRACE * 2);
    sim.settle();
    if matches!(sim.st.vip_state(vip()), State::Acked { .. }) {
        sim.go(vip(), 100);
    }
    assert_eq!(
        sim.st.vip_state(vip()),
        State::Announced { local_pref: 100 }
    );
    assert!(sim.routes.contains_key(&vip()));
    assert!(sim.addresses.contains(&vip()));
}

#[test]
fn shutdown_withdraws_every_busy_vip_and_names_the_addresses() {
    let mut sim = Sim::announced(vip(), 100);
    let other = ip("2001:db8::10");
    sim.mapping(&[vip(), other]);
    sim.syn(other, 100);
    let (withdraws, removals) = sim.st.shutdown();
    assert_eq!(withdraws.len(), 2);
    assert!(withdraws.iter().all(|c| matches!(c, Cmd::Withdraw { .. })));
    assert_eq!(removals, vec![vip(), other]);
}

// --- mapping ---------------------------------------------------------------------------------

#[test]
fn a_vip_leaving_the_mapping_keeps_its_services_until_its_address_goes() {
    let mut sim = Sim::announced(vip(), 100);
    let t = tree_of(vec![svc(vip(), 80, 1)]);
    sim.msg(Message::Tree(TreeAnswer { serial: 5, tree: t }));
    let (_, owned) = sim.reconciles.last().unwrap().clone();
    assert!(owned.contains(&vip()));
    sim.mapping(&[]);
    let (wanted, owned) = sim.reconciles.last().unwrap().clone();
    assert!(wanted.is_empty());
    assert!(
        !owned.contains(&vip()),
        "the reconcile must not remove the services of a VIP still in its grace"
    );
    assert_eq!(sim.withdraws.len(), 1);
    sim.finish_withdraw();
    sim.advance(GRACE);
    assert_eq!(sim.removals.front(), Some(&(vip(), true)));
    sim.finish_removal();
    assert_eq!(sim.services_removed, vec![vip()]);
}

#[test]
fn fwmark_services_go_with_the_vip_the_mapping_gives_their_mark() {
    let mut sim = Sim::announced(vip(), 100);
    let other = ip("203.0.113.99");
    let t = tree_of(vec![svc(vip(), 80, 1), fwmark_svc(7), fwmark_svc(8)]);
    sim.msg(Message::Tree(TreeAnswer { serial: 5, tree: t }));
    let (wanted, _) = sim.reconciles.last().unwrap().clone();
    assert_eq!(
        wanted.len(),
        1,
        "no mark mapped yet: the VIP's own service only"
    );
    // Same VIPs, mark 7 now goes with mine and 8 with a VIP of another balancer.
    let plans = sim.plans.len();
    sim.mapping_with_marks(&[vip()], &[(7, vip()), (8, other)]);
    let lines = |p: &ipvs::Plan| p.ops.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        sim.plans.len(),
        plans + 1,
        "a mark alone changes the kernel"
    );
    assert_eq!(
        lines(sim.plans.last().unwrap()),
        ["-A -f 7 -s sh", "-a -f 7 -r 198.51.100.5:0 -g -w 1"]
    );
    assert_eq!(
        sim.st.marks_owned(),
        &FwmarkVips::from([(7, vip())]),
        "the mark of another balancer's VIP is not this one's to touch"
    );
    // The mark leaves the mapping: its service goes, and the mark stays owned (so that a
    // verify removes what is left of it).
    sim.mapping_with_marks(&[vip()], &[]);
    assert_eq!(lines(sim.plans.last().unwrap()), ["-D -f 7"]);
    assert_eq!(sim.st.marks_owned(), &FwmarkVips::from([(7, vip())]));
}

#[test]
fn a_syn_older_than_the_mirror_prepares_the_vips_fwmark_services_from_it() {
    let mut sim = Sim::new();
    sim.mapping_with_marks(&[vip()], &[(7, vip())]);
    let newer = tree_of(vec![svc(vip(), 80, 9), fwmark_svc(7), fwmark_svc(8)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 30,
        tree: newer,
    }));
    sim.syn_with(vip(), 100, tree_of(vec![svc(vip(), 80, 1)]), Some(29));
    assert_eq!(
        sim.prepares.back().unwrap().2,
        Some(tree_of(vec![svc(vip(), 80, 9), fwmark_svc(7)]))
    );
}

#[test]
fn the_first_mapping_cleans_leftover_addresses() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    assert_eq!(sim.cleans, vec![(BTreeSet::new(), BTreeSet::from([vip()]))]);
    sim.mapping(&[vip(), ip("203.0.113.11")]);
    assert_eq!(sim.cleans.len(), 1, "only the first");
}

#[test]
fn after_a_graceful_restart_the_first_clean_keeps_the_vips_announced_before() {
    let mut sim = Sim::new();
    let other = ip("203.0.113.11");
    sim.st.keep_addresses(BTreeSet::from([vip()]));
    sim.mapping(&[vip(), other]);
    assert_eq!(
        sim.cleans,
        vec![(BTreeSet::from([vip()]), BTreeSet::from([vip(), other]))]
    );
}

// --- the tree mirror -------------------------------------------------------------------------

#[test]
fn changes_follow_the_mirror_and_gaps_ask_for_the_tree() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let a = tree_of(vec![svc(vip(), 80, 1)]);
    let b = tree_of(vec![svc(vip(), 80, 5)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 10,
        tree: a.clone(),
    }));
    sim.sent.clear();
    sim.msg(Message::Changes(Changes {
        from_serial: 10,
        to_serial: 11,
        plan: ipvs::diff(&a, &b),
    }));
    assert_eq!(sim.st.serial(), 11);
    assert_eq!(sim.plans.last().unwrap(), &ipvs::diff(&a, &b));
    sim.msg(Message::Changes(Changes {
        from_serial: 20,
        to_serial: 21,
        plan: ipvs::diff(&b, &a),
    }));
    assert_eq!(sim.sent_kinds(), ["tree"]);
    assert!(sim.has_note(|n| matches!(n, Note::ChangesGap { .. })));
}

#[test]
fn an_older_tree_never_rolls_the_mirror_back_unless_the_arbiter_restarted() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let new = tree_of(vec![svc(vip(), 80, 5)]);
    let old = tree_of(vec![svc(vip(), 80, 1)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 20,
        tree: new.clone(),
    }));
    let n = sim.reconciles.len();
    sim.msg(Message::Tree(TreeAnswer {
        serial: 19,
        tree: old.clone(),
    }));
    assert_eq!(sim.reconciles.len(), n, "no reconcile to an older tree");
    assert_eq!(sim.st.serial(), 20);
    assert!(sim.has_note(|n| matches!(n, Note::OldTree { got: 19, have: 20 })));
    // A restarted arbiter (its clock behind) starts lower: its tree is taken.
    let hb = |uptime| arbiter_heartbeat(uptime, None);
    sim.msg(hb(100));
    sim.restart_arbiter();
    sim.msg(hb(1));
    assert!(sim.has_note(|n| matches!(n, Note::ArbiterRestarted)));
    sim.msg(Message::Tree(TreeAnswer {
        serial: 3,
        tree: old.clone(),
    }));
    assert_eq!(sim.st.serial(), 3);
    // The kernel is brought to the restarted arbiter's tree (as a plan from what was applied).
    assert_eq!(sim.plans.last().unwrap(), &ipvs::diff(&new, &old));
}

#[test]
fn prepare_takes_services_from_the_mirror_when_it_is_newer_than_the_syn() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let newer = tree_of(vec![svc(vip(), 80, 9)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 30,
        tree: newer.clone(),
    }));
    sim.syn_with(vip(), 100, tree_of(vec![svc(vip(), 80, 1)]), Some(29));
    assert_eq!(sim.prepares.back().unwrap().2, Some(newer.clone()));
    // A syn cut from a tree at least as new as the mirror brings its own.
    let other = ip("203.0.113.11");
    sim.mapping(&[vip(), other]);
    let own = tree_of(vec![svc(other, 443, 3)]);
    sim.syn_with(other, 100, own.clone(), Some(31));
    assert_eq!(sim.prepares.back().unwrap().2, Some(own));
}

#[test]
fn an_arbiter_heartbeat_with_another_serial_asks_for_the_tree() {
    let mut sim = Sim::new();
    sim.msg(Message::Tree(TreeAnswer {
        serial: 7,
        tree: Tree::new(),
    }));
    sim.sent.clear();
    let hb = |serial| arbiter_heartbeat(10, Some(serial));
    sim.msg(hb(7));
    assert!(sim.sent.is_empty());
    sim.msg(hb(8));
    assert_eq!(sim.sent_kinds(), ["tree"]);
    assert_eq!(sim.st.last_arbiter_heartbeat(), Some(sim.now));
}

/// The arbiter's heartbeat with this uptime and tree serial.
fn arbiter_heartbeat(uptime: u64, serial: Option<u64>) -> Message {
    Message::Heartbeat(Heartbeat {
        role: PeerRole::Server,
        uptime,
        version: None,
        serial,
        announced: None,
        drained: None,
        features: Vec::new(),
    })
}

/// A heartbeat the arbiter published again after a lost confirm keeps its id and uptime
/// and can arrive after newer ones (seen in the VM lane's partition test: three of them, on
/// both balancers, right after the arbiter moved to another broker node). It is no restart:
/// nothing is asked again, and an older tree still does not roll the mirror back.
#[test]
fn a_late_copy_of_an_arbiter_heartbeat_is_no_restart() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let new = tree_of(vec![svc(vip(), 80, 5)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 20,
        tree: new,
    }));
    let hb = |uptime| arbiter_heartbeat(uptime, Some(20));
    sim.msg_numbered(40, hb(40));
    sim.msg_numbered(41, hb(41));
    sim.sent.clear();
    let heard = sim.st.last_arbiter_heartbeat();
    sim.advance(Duration::from_millis(10));
    sim.sent.clear();
    // Number 38, published first before the broker node was lost, arrives now.
    sim.msg_numbered(38, hb(38));
    assert!(!sim.has_note(|n| matches!(n, Note::ArbiterRestarted)));
    assert!(sim.has_note(|n| matches!(n, Note::LateHeartbeat)));
    assert!(sim.sent.is_empty(), "{:?}", sim.sent_kinds());
    assert_eq!(sim.st.last_arbiter_heartbeat(), heard);
    let n = sim.reconciles.len();
    sim.msg(Message::Tree(TreeAnswer {
        serial: 19,
        tree: tree_of(vec![svc(vip(), 80, 1)]),
    }));
    assert_eq!(sim.reconciles.len(), n, "no reconcile to an older tree");
    assert_eq!(sim.st.serial(), 20);
    // The same heartbeat once more (the broker kept the first copy too): dropped as well.
    sim.msg_numbered(41, hb(41));
    assert!(!sim.has_note(|n| matches!(n, Note::ArbiterRestarted)));
}

// --- repair paths ----------------------------------------------------------------------------

#[test]
fn a_lost_ack_or_go_asks_for_the_announces_after_ten_seconds() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    sim.finish_prepare(true);
    sim.sent.clear();
    sim.advance(Duration::from_secs(9));
    assert_eq!(
        sim.count_sent(|m| matches!(m, Message::AnnouncesRequest)),
        0
    );
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        sim.count_sent(|m| matches!(m, Message::AnnouncesRequest)),
        1
    );
    assert!(sim.has_note(|n| matches!(n, Note::AckRepair(1))));
    // The arbiter answers with the syn again: the ack goes again.
    sim.sent.clear();
    sim.syn(vip(), 100);
    assert_eq!(sim.sent_kinds(), ["ack_announce"]);
    sim.go(vip(), 100);
    sim.sent.clear();
    sim.advance(Duration::from_secs(20));
    assert_eq!(
        sim.count_sent(|m| matches!(m, Message::AnnouncesRequest)),
        0,
        "announced: no repair"
    );
}

/// The loop sleeps until `next_deadline`, which keeps only a floor of the acks' times (no
/// scan of every ack after each message): never later than the oldest ack's repair, and
/// never a deadline already past after the tick that makes it exact.
#[test]
fn the_next_deadline_follows_the_oldest_ack_and_never_stays_in_the_past() {
    let (a, b) = (ip("203.0.113.10"), ip("203.0.113.11"));
    let mut s = settings();
    s.heartbeat_interval = Duration::from_secs(3600);
    s.tree_request_interval = Duration::from_secs(3600);
    s.announces_request_interval = Duration::from_secs(3600);
    let mut sim = Sim::with(s);
    sim.mapping(&[a, b]);
    // The first requests and the first verify go now; the next ones in an hour.
    sim.advance(Duration::ZERO);
    let t0 = sim.now;
    sim.syn(a, 100);
    sim.finish_prepare(true);
    assert_eq!(sim.st.next_deadline(), t0 + ACK_REPAIR_AFTER);
    sim.advance(Duration::from_secs(3));
    sim.syn(b, 100);
    sim.finish_prepare(true);
    sim.go(a, 100);
    sim.sent.clear();
    // Woken at the first ack's time at the latest: nothing is stuck yet, and the deadline
    // moves on to the second ack's.
    let first = sim.st.next_deadline();
    assert!(first <= t0 + ACK_REPAIR_AFTER, "{:?} late", first - t0);
    sim.advance(first - sim.now);
    assert!(!sim.has_note(|n| matches!(n, Note::AckRepair(_))));
    assert_eq!(
        sim.st.next_deadline(),
        t0 + Duration::from_secs(3) + ACK_REPAIR_AFTER
    );
    sim.advance(sim.st.next_deadline() - sim.now);
    assert!(sim.has_note(|n| matches!(n, Note::AckRepair(1))));
    assert!(sim.st.next_deadline() > sim.now);
}

#[test]
fn the_broker_back_or_stale_drops_ask_for_everything_again() {
    let mut sim = Sim::new();
    sim.sent.clear();
    let out = sim.st.set_connected(sim.now, false);
    sim.take(out);
    assert!(sim.sent.is_empty());
    let out = sim.st.set_connected(sim.now, true);
    sim.take(out);
    assert_eq!(sim.sent_kinds(), ["mapping", "tree", "announces", "sync"]);
    assert!(sim.has_note(|n| matches!(n, Note::Reconnected)));

    sim.sent.clear();
    let out = sim.st.stale_dropped(sim.now, 3);
    sim.take(out);
    assert_eq!(sim.sent_kinds(), ["mapping", "tree", "announces", "sync"]);
    sim.sent.clear();
    sim.now += Duration::from_secs(5);
    let out = sim.st.stale_dropped(sim.now, 4);
    sim.take(out);
    assert!(sim.sent.is_empty(), "at most every 10 s");
    sim.now += Duration::from_secs(5);
    let out = sim.st.stale_dropped(sim.now, 4);
    sim.take(out);
    assert_eq!(sim.sent.len(), 4);
    sim.sent.clear();
    sim.now += Duration::from_secs(60);
    let out = sim.st.stale_dropped(sim.now, 4);
    sim.take(out);
    assert!(sim.sent.is_empty(), "no new stale drops");
}

#[test]
fn an_announces_answer_without_a_vip_withdraws_it() {
    // The arbiter's answer to `announces` is a syn of what has quorum and a fin of the rest;
    // a VIP it does not list as announceable arrives as a fin.
    let mut sim = Sim::announced(vip(), 100);
    sim.fin(vip());
    sim.finish_withdraw();
    assert!(sim.routes.is_empty());
}

// --- answers and files -----------------------------------------------------------------------

#[test]
fn answers_nobody_asked_for_are_ignored() {
    let mut s = settings();
    s.sync_dirs.clear();
    let mut sim = Sim::with(s);
    sim.msg(Message::Sync(SyncAnswer {
        files: vec![SyncFile {
            dir: "/etc/keepalived".into(),
            name: "x.conf".into(),
            mode: 0o644,
            content: b"x".to_vec(),
        }],
    }));
    assert!(sim.files.is_empty());
    assert!(sim.has_note(|n| matches!(n, Note::Unsolicited("sync"))));
    sim.msg(Message::Tree(TreeAnswer {
        serial: 1,
        tree: Tree::new(),
    }));
    sim.msg(Message::Services(ServicesAnswer {
        tree: tree_of(vec![svc(vip(), 80, 1)]),
    }));
    assert!(sim.has_note(|n| matches!(n, Note::Unsolicited("services"))));
}

#[test]
fn a_sync_answer_after_the_request_is_written() {
    let mut sim = Sim::new();
    sim.advance(Duration::from_secs(1));
    sim.msg(Message::Sync(SyncAnswer {
        files: vec![SyncFile {
            dir: "/etc/keepalived".into(),
            name: "x.conf".into(),
            mode: 0o644,
            content: b"x".to_vec(),
        }],
    }));
    assert_eq!(sim.files.len(), 1);
    sim.advance(ANSWER_WINDOW + Duration::from_secs(1));
    sim.msg(Message::Sync(SyncAnswer { files: vec![] }));
    assert!(sim.has_note(|n| matches!(n, Note::Unsolicited("sync"))));
}

// --- drain ---------------------------------------------------------------------------------

impl Sim {
    fn drain(&mut self, vips: Option<Vec<IpAddr>>) -> Vec<IpAddr> {
        let (out, done) = self.st.drain(self.now, vips, None);
        self.take(out);
        done
    }

    fn answer_count(&mut self, n: u64) {
        let vip = self.counts.pop_front().expect("a count asked for");
        let out = self.st.conns(self.now, vip, Ok(n));
        self.take(out);
    }
}

#[test]
fn a_drain_announces_graceful_shutdown_waits_for_connections_then_withdraws() {
    let mut sim = Sim::announced(vip(), 150);
    let start = sim.now;
    assert_eq!(sim.drain(None), vec![vip()]);
    assert!(sim.drained_routes[&vip()], "re-announced drained");
    assert_eq!(sim.saved, Some(BTreeSet::from([vip()])));
    sim.advance(Duration::from_secs(4));
    assert!(
        sim.counts.is_empty() && sim.withdraws.is_empty(),
        "drain_min first"
    );
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.counts.len(), 1, "counting after drain_min");
    sim.answer_count(3);
    assert!(sim.withdraws.is_empty(), "connections left: no withdraw");
    sim.advance(Duration::from_secs(1));
    sim.answer_count(0);
    assert_eq!(sim.withdraws.len(), 1, "no connections left: withdrawn");
    assert!(sim.now - start >= Duration::from_secs(5));
    assert!(sim.has_note(|n| matches!(
        n,
        Note::DrainDone {
            timed_out: false,
            ..
        }
    )));
    sim.finish_withdraw();
    sim.advance(GRACE);
    assert_eq!(sim.removals.len(), 1, "the address goes after the grace");
    sim.finish_removal();
    // Drained: the arbiter's syn is not acted on, and the heartbeat says drained.
    sim.syn(vip(), 150);
    assert!(sim.prepares.is_empty());
    assert!(sim.has_note(|n| matches!(n, Note::Drained(_))));
    sim.sent.clear();
    sim.advance(Duration::from_secs(3));
    let hb = sim.sent.iter().find_map(|m| match m {
        Message::Heartbeat(h) => Some(h.clone()),
        _ => None,
    });
    assert_eq!(hb.unwrap().drained, Some(vec![vip()]));
}

#[test]
fn a_drain_withdraws_at_its_timeout_with_connections_left() {
    let mut sim = Sim::announced(vip(), 150);
    let (out, _) = sim.st.drain(sim.now, None, Some(Duration::from_secs(20)));
    sim.take(out);
    for _ in 0..30 {
        sim.advance(Duration::from_secs(1));
        while !sim.counts.is_empty() {
            sim.answer_count(7);
        }
        if !sim.withdraws.is_empty() {
            break;
        }
    }
    assert_eq!(sim.withdraws.len(), 1);
    assert!(sim.has_note(|n| matches!(
        n,
        Note::DrainDone {
            timed_out: true,
            conns: Some(7),
            ..
        }
    )));
}

#[test]
fn without_ipvs_a_drain_withdraws_after_drain_min() {
    let mut s = settings();
    s.ipvs = false;
    let mut sim = Sim::with(s);
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    sim.finish_prepare(true);
    sim.go(vip(), 100);
    sim.drain(None);
    sim.advance(Duration::from_secs(5));
    assert!(sim.counts.is_empty(), "nothing to count");
    assert_eq!(sim.withdraws.len(), 1);
}

#[test]
fn undrain_announces_again() {
    // Still announced (drain not finished): announced again as usual at once.
    let mut sim = Sim::announced(vip(), 150);
    sim.drain(None);
    let (out, done) = sim.st.undrain(sim.now, None);
    sim.take(out);
    assert_eq!(done, vec![vip()]);
    assert!(!sim.drained_routes[&vip()]);
    assert_eq!(sim.routes[&vip()], 150);
    // Already withdrawn: the announces are asked for, and the syn is acted on again.
    let mut sim = Sim::announced(vip(), 150);
    sim.drain(None);
    sim.advance(Duration::from_secs(5));
    sim.answer_count(0);
    sim.settle();
    sim.sent.clear();
    let (out, _) = sim.st.undrain(sim.now, Some(vec![vip()]));
    sim.take(out);
    assert_eq!(sim.sent_kinds(), ["announces"]);
    assert_eq!(sim.saved, Some(BTreeSet::new()));
    sim.syn(vip(), 150);
    assert_eq!(sim.prepares.len(), 1);
}

#[test]
fn a_vip_drained_before_a_restart_stays_drained() {
    let mut sim = Sim::new();
    sim.st.restore_drained(sim.now, BTreeSet::from([vip()]));
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    assert!(sim.prepares.is_empty());
    assert!(sim.st.drains_done());
}

#[test]
fn draining_a_vip_being_prepared_cancels_it() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.syn(vip(), 100);
    sim.drain(None);
    assert_eq!(sim.st.vip_state(vip()), State::Idle);
    sim.finish_prepare(true);
    sim.go(vip(), 100);
    assert!(sim.routes.is_empty(), "never announced while drained");
}

#[test]
fn a_vips_communities_ride_its_announce_and_a_change_reannounces_without_a_withdraw() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let mut syn = SynAnnounce::default();
    syn.vips.insert(
        vip(),
        AnnounceSpec {
            tree: Tree::new(),
            serial: None,
            local_preference: 100,
            communities: vec!["65000:100".into()],
        },
    );
    sim.msg(Message::SynAnnounce(syn.clone()));
    sim.finish_prepare(true);
    sim.msg(Message::AckGo(AckGo {
        vip: vip(),
        local_preference: 100,
        communities: vec!["65000:100".into()],
    }));
    assert_eq!(sim.route_communities[&vip()], vec!["65000:100".to_string()]);
    // Same LP, new communities: announced again, nothing withdrawn.
    syn.vips.get_mut(&vip()).unwrap().communities = vec!["65000:200".into()];
    sim.msg(Message::SynAnnounce(syn));
    assert_eq!(sim.route_communities[&vip()], vec!["65000:200".to_string()]);
    assert!(sim.withdraws.is_empty());
}

// --- kernel work: plans without a dump, full reconciles to verify ----------------------------

#[test]
fn changes_go_to_the_kernel_as_plans_and_a_full_reconcile_verifies() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let a = tree_of(vec![svc(vip(), 80, 1)]);
    let b = tree_of(vec![svc(vip(), 80, 5)]);
    let c = tree_of(vec![svc(vip(), 80, 7)]);
    sim.msg(Message::Tree(TreeAnswer {
        serial: 10,
        tree: a.clone(),
    }));
    let full = sim.reconciles.len();
    assert!(full >= 1, "the first tree is a full reconcile");
    let out = sim.st.reconciled(sim.now, 10, Ok(()));
    sim.take(out);
    sim.msg(Message::Changes(Changes {
        from_serial: 10,
        to_serial: 11,
        plan: ipvs::diff(&a, &b),
    }));
    assert_eq!(sim.reconciles.len(), full, "no dump for a change");
    assert_eq!(sim.plans.last().unwrap(), &ipvs::diff(&a, &b));
    // A failed apply: the next kernel work is a full reconcile, at once.
    let out = sim
        .st
        .reconciled(sim.now, 11, Err("1 operations failed".into()));
    sim.take(out);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.reconciles.len(), full + 1, "verify after a failure");
    assert_eq!(sim.reconciles.last().unwrap().0, b);
    let out = sim.st.reconciled(sim.now, 11, Ok(()));
    sim.take(out);
    sim.msg(Message::Changes(Changes {
        from_serial: 11,
        to_serial: 12,
        plan: ipvs::diff(&b, &c),
    }));
    assert_eq!(sim.plans.last().unwrap(), &ipvs::diff(&b, &c));
    // And every tree_request_interval, a full reconcile repairs drift made by hand.
    let n = sim.reconciles.len();
    sim.advance(Duration::from_secs(120));
    assert_eq!(sim.reconciles.len(), n + 1);
    assert_eq!(sim.reconciles.last().unwrap().0, c);
}

#[test]
fn heartbeats_report_the_serial_the_kernel_has_while_ipvs_work_fails() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let a = tree_of(vec![svc(vip(), 80, 1)]);
    let b = tree_of(vec![svc(vip(), 80, 5)]);
    let serial = |sim: &mut Sim| {
        sim.sent.clear();
        sim.advance(Duration::from_secs(3));
        sim.sent
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::Heartbeat(h) => Some(h.serial),
                _ => None,
            })
            .expect("no heartbeat")
    };
    sim.msg(Message::Tree(TreeAnswer {
        serial: 10,
        tree: a.clone(),
    }));
    let out = sim.st.reconciled(sim.now, 10, Ok(()));
    sim.take(out);
    assert_eq!(serial(&mut sim), Some(10));
    sim.msg(Message::Changes(Changes {
        from_serial: 10,
        to_serial: 11,
        plan: ipvs::diff(&a, &b),
    }));
    let out = sim
        .st
        .reconciled(sim.now, 11, Err("1 operations failed".into()));
    sim.take(out);
    // The fleet view sees this balancer one change behind, for as long as it fails.
    assert_eq!(serial(&mut sim), Some(10));
    let out = sim
        .st
        .reconciled(sim.now, 11, Err("1 operations failed".into()));
    sim.take(out);
    assert_eq!(serial(&mut sim), Some(10));
    let out = sim.st.reconciled(sim.now, 11, Ok(()));
    sim.take(out);
    assert_eq!(serial(&mut sim), Some(11));
}

#[test]
fn a_new_mapping_is_a_full_reconcile() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    let t = tree_of(vec![svc(vip(), 80, 1), svc(ip("203.0.113.11"), 80, 1)]);
    sim.msg(Message::Tree(TreeAnswer { serial: 1, tree: t }));
    let n = sim.reconciles.len();
    sim.mapping(&[vip(), ip("203.0.113.11")]);
    assert_eq!(sim.reconciles.len(), n + 1);
    assert!(sim.plans.is_empty());
}

#[test]
fn a_batch_of_gos_announces_each_vip_as_its_own_go_would() {
    let vips = [ip("203.0.113.10"), ip("203.0.113.11"), ip("2001:db8::10")];
    let mut sim = Sim::new();
    sim.mapping(&vips);
    for (i, v) in vips.iter().enumerate() {
        sim.syn(*v, 100 + u32::try_from(i).unwrap());
    }
    for _ in vips {
        sim.finish_prepare(true);
    }
    let prepared = sim.count_sent(|m| matches!(m, Message::AckPrepared(_)));
    assert_eq!(prepared, 3, "the core acks each VIP; the outbox folds them");
    // One batch: the first two VIPs go; the third is not in it and stays prepared.
    sim.msg(Message::AckGoBatch(AckGoBatch {
        go: vec![
            AckGo {
                vip: vips[0],
                local_preference: 100,
                communities: vec![],
            },
            AckGo {
                vip: vips[1],
                local_preference: 250,
                communities: vec!["65000:7".into()],
            },
        ],
    }));
    assert_eq!(sim.routes.get(&vips[0]), Some(&100));
    assert_eq!(sim.routes.get(&vips[1]), Some(&250));
    assert_eq!(sim.routes.get(&vips[2]), None);
    assert_eq!(
        sim.st.vip_state(vips[1]),
        State::Announced { local_pref: 250 }
    );
    // A fin sent after the batch wins over it; a go sent before the batch is late.
    sim.fin(vips[0]);
    assert_eq!(sim.withdraws.front().map(|w| w.0), Some(vips[0]));
    sim.finish_withdraw();
    assert_eq!(sim.routes.get(&vips[0]), None);
    sim.msg_numbered(
        1,
        Message::AckGo(AckGo {
            vip: vips[1],
            local_preference: 50,
            communities: vec![],
        }),
    );
    assert_eq!(sim.routes.get(&vips[1]), Some(&250), "an older go is late");
}
