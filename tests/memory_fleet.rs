//! The real arbiter and balancer loops in one process, over the in-memory broker, with fake
//! BGP and address edges: the announce cycle and its repair paths end to end, without root,
//! a broker or routers. (Each path also has a lab test against the real things.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipvs_sync::client::edges::{Addresses, Firewall, Routes};
use ipvs_sync::daemon::bus::BoxFuture;
use ipvs_sync::daemon::memory_bus::{Fate, MemoryNet};
use ipvs_sync::daemon::metrics::{Metrics, Role};
use ipvs_sync::daemon::quorum_socket::QuorumEvent;
use ipvs_sync::daemon::{http::StatusDoc, Shutdown, ShutdownHandle};
use ipvs_sync::wire::{Message, MessageType};
use tokio::sync::mpsc;

const ARBITER: &str = "arbiter.example.net";
const LB: &str = "lb1.example.net";

fn vip() -> IpAddr {
    "203.0.113.10".parse().unwrap()
}

/// What the fake edges saw, with times.
#[derive(Default)]
struct World {
    routes: BTreeMap<IpAddr, u32>,
    addresses: BTreeSet<IpAddr>,
    events: Vec<(Instant, String)>,
}

#[derive(Clone, Default)]
struct Fakes(Arc<Mutex<World>>);

impl Fakes {
    fn log(&self, what: String) {
        self.0.lock().unwrap().events.push((Instant::now(), what));
    }
    fn announced(&self) -> Option<u32> {
        self.0.lock().unwrap().routes.get(&vip()).copied()
    }
    fn has_address(&self) -> bool {
        self.0.lock().unwrap().addresses.contains(&vip())
    }
    fn time_of(&self, what: &str) -> Option<Instant> {
        let w = self.0.lock().unwrap();
        w.events
            .iter()
            .rev()
            .find(|(_, e)| e == what)
            .map(|(t, _)| *t)
    }
}

impl Routes for Fakes {
    fn announce(&self, vip: IpAddr, attrs: bgp::RouteAttrs) {
        let local_pref = attrs.local_pref.unwrap_or(100);
        self.0.lock().unwrap().routes.insert(vip, local_pref);
        self.log(format!("announce {vip}"));
    }
    fn withdraw(&self, vip: IpAddr) -> BoxFuture<'static, ()> {
        self.log(format!("withdraw asked {vip}"));
        let me = self.clone();
        Box::pin(async move {
            // The UPDATE takes a while to reach the socket.
            tokio::time::sleep(Duration::from_millis(50)).await;
            me.0.lock().unwrap().routes.remove(&vip);
            me.log(format!("withdrawn {vip}"));
        })
    }
    fn peers(&self) -> BoxFuture<'_, Vec<bgp::PeerStatus>> {
        Box::pin(async { Vec::new() })
    }
    fn shutdown(&self, _reason: &str) -> BoxFuture<'static, ()> {
        let me = self.clone();
        Box::pin(async move {
            me.0.lock().unwrap().routes.clear();
            me.log("cease".into());
        })
    }
}

impl Addresses for Fakes {
    fn add(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        let me = self.clone();
        Box::pin(async move {
            me.0.lock().unwrap().addresses.insert(vip);
            me.log(format!("add {vip}"));
            Ok(())
        })
    }
    fn remove(&self, vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        let me = self.clone();
        Box::pin(async move {
            me.0.lock().unwrap().addresses.remove(&vip);
            me.log(format!("remove {vip}"));
            Ok(())
        })
    }
    fn clean(
        &self,
        _keep: BTreeSet<IpAddr>,
        _mine: BTreeSet<IpAddr>,
    ) -> BoxFuture<'static, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
}

impl Firewall for Fakes {
    fn check(&self, _vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

struct Fleet {
    net: MemoryNet,
    fakes: Fakes,
    quorum: mpsc::Sender<QuorumEvent>,
    #[allow(dead_code)]
    control: mpsc::Sender<ipvs_sync::daemon::control::Asked>,
    stop: Vec<ShutdownHandle>,
    dir: tempfile::TempDir,
}

fn config(dir: &Path, host: &str, extra: &str) -> config::Config {
    let text = format!(
        "[main]\namqp_server = amqp://u@broker/\nhostname = {host}\nipvs = false\n\
         heartbeat_interval = 0.1\nconsumer_alive_ttl = 5\n\
         vips_description_update_interval = 0.1\nmapping_update_interval = 60\n\
         service_mapping_wildcard = {d}/lbs/*/*/*.conf\n\
         service_mapping_config = {d}/mapping.json\n\
         vip_description_filepath = {d}/desc/keepalived-{{vip}}-desc.json\n\
         [server]\nstartup_hold = 0\nquorum_socket = {d}/q.sock\n\
         [announce]\nwithdraw_grace = 0.3\n{extra}",
        d = dir.display()
    );
    config::Config::from_strs(&text, None).unwrap()
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join(format!("lbs/{LB}/web"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(dir.path().join("desc")).unwrap();
        std::fs::write(
            conf.join("web.conf"),
            format!("virtual_server {} 80 {{\n  protocol TCP\n}}\n", vip()),
        )
        .unwrap();
        let net = MemoryNet::new();
        let fakes = Fakes::default();
        let (qtx, qrx) = mpsc::channel(16);
        let mut stop = Vec::new();

        let (h, sd) = Shutdown::manual();
        stop.push(h);
        let (bus, incoming) = net.server(ARBITER);
        let (control, crx) = mpsc::channel(4);
        let edges = ipvs_sync::server::Edges {
            kernel: None,
            quorum: qrx,
            control: crx,
        };
        let cfg = config(dir.path(), ARBITER, "");
        tokio::spawn(async move {
            ipvs_sync::server::serve(
                cfg,
                edges,
                bus,
                incoming,
                sd,
                Metrics::new(Role::Server),
                StatusDoc::default(),
            )
            .await
        });

        let (h, sd) = Shutdown::manual();
        stop.push(h);
        let (bus, incoming) = net.client(LB);
        let (_peer_tx, peer_events) = mpsc::unbounded_channel();
        let (_ccontrol, ccrx) = mpsc::channel(4);
        let edges = ipvs_sync::client::Edges {
            routes: Arc::new(fakes.clone()),
            peer_events,
            addrs: Arc::new(fakes.clone()),
            kernel: None,
            firewall: Arc::new(fakes.clone()),
            speaker: None,
            control: ccrx,
            addrs_on: None,
            bfd: None,
            resumed: None,
        };
        let cfg = config(dir.path(), LB, "");
        tokio::spawn(async move {
            // Keep the peer-event and control senders alive with the loop.
            let _keep = (_peer_tx, _ccontrol);
            ipvs_sync::client::serve(
                cfg,
                edges,
                bus,
                incoming,
                sd,
                Metrics::new(Role::Client),
                StatusDoc::default(),
            )
            .await
        });
        Fleet {
            net,
            fakes,
            quorum: qtx,
            control,
            stop,
            dir,
        }
    }

    /// `ipvs-sync quorum DIR VIP,b-LP,80` as keepalived runs it: the desc file, then the
    /// hand-off to the arbiter.
    async fn quorum(&self, up: bool, lp: u32) {
        let cfg = config(self.dir.path(), ARBITER, "");
        let arg = announce::quorum::parse_arg(&format!("{},b-{lp},80", vip())).unwrap();
        let dir = if up {
            announce::quorum::Direction::Up
        } else {
            announce::quorum::Direction::Down
        };
        let o = announce::quorum::apply(&cfg.desc_path(vip()), &arg, dir, &BTreeSet::from([80]))
            .unwrap();
        self.hand_off(o.desc.announce).await;
    }

    /// The handler's hand-off to the arbiter: the desc file now says `announce`.
    async fn hand_off(&self, announce: bool) {
        self.quorum
            .send(QuorumEvent {
                vip: vip(),
                announce,
                forced: false,
                error: None,
            })
            .await
            .unwrap();
    }

    async fn wait(&self, what: &str, cond: impl Fn(&Fakes) -> bool) {
        self.wait_up_to(Duration::from_secs(10), what, cond).await
    }

    async fn wait_up_to(&self, limit: Duration, what: &str, cond: impl Fn(&Fakes) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(&self.fakes) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &self.stop {
            h.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_up_announces_and_down_withdraws_before_the_address_goes() {
    let f = Fleet::start().await;
    f.quorum(true, 150).await;
    f.wait("the announce", |w| w.announced() == Some(150)).await;
    assert!(f.fakes.has_address());
    f.quorum(false, 150).await;
    f.wait("the address removal", |w| !w.has_address()).await;
    let withdrawn = f.fakes.time_of("withdrawn 203.0.113.10").unwrap();
    let removed = f.fakes.time_of("remove 203.0.113.10").unwrap();
    assert!(
        removed.duration_since(withdrawn) >= Duration::from_millis(300),
        "the address went {:?} after the withdraw, before withdraw_grace",
        removed.saturating_duration_since(withdrawn)
    );
}

/// The handler has written the down and handed it over; the arbiter's read of the desc file
/// then fails (here: the file is garbage by the time it is read). A read that fails keeps what
/// was known, so the down must act on the hand-off itself, not wait for the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_withdraws_on_the_hand_off_even_when_the_desc_read_then_fails() {
    let f = Fleet::start().await;
    f.quorum(true, 100).await;
    f.wait("the announce", |w| w.announced().is_some()).await;
    let cfg = config(f.dir.path(), ARBITER, "");
    std::fs::write(cfg.desc_path(vip()), b"{ not json").unwrap();
    f.hand_off(false).await;
    f.wait("the withdraw", |w| w.announced().is_none()).await;
    f.wait("the address removal", |w| !w.has_address()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_fin_heals_within_a_heartbeat() {
    let f = Fleet::start().await;
    f.quorum(true, 100).await;
    f.wait("the announce", |w| w.announced().is_some()).await;
    f.net.set_fault(|_, to, m| match (to, m) {
        ("broadcast", Message::FinAnnounce(_)) => Fate::Drop,
        _ => Fate::Deliver,
    });
    f.quorum(false, 100).await;
    f.wait("the repaired withdraw", |w| w.announced().is_none())
        .await;
    let log = f.net.log();
    assert!(
        log.iter()
            .any(|r| r.kind == MessageType::FinAnnounce && r.fate == Fate::Drop),
        "the broadcast fin was lost"
    );
    assert!(
        log.iter()
            .any(|r| r.kind == MessageType::FinAnnounce && r.to == LB),
        "the arbiter sent the fin again to the balancer, from its heartbeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_go_heals_by_the_ack_repair() {
    let f = Fleet::start().await;
    // The first go is lost; the balancer asks for the announces 10 s after its ack.
    let dropped = Arc::new(Mutex::new(false));
    let d = dropped.clone();
    f.net.set_fault(move |_, _, m| {
        let mut d = d.lock().unwrap();
        match m {
            Message::AckGo(_) if !*d => {
                *d = true;
                Fate::Drop
            }
            _ => Fate::Deliver,
        }
    });
    f.quorum(true, 100).await;
    let t0 = Instant::now();
    f.wait_up_to(Duration::from_secs(20), "the repaired announce", |w| {
        w.announced().is_some()
    })
    .await;
    assert!(*dropped.lock().unwrap(), "the first go was lost");
    assert!(
        t0.elapsed() >= Duration::from_secs(9),
        "healed by the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_delivered_after_the_next_syn_never_withdraws() {
    let f = Fleet::start().await;
    f.quorum(true, 100).await;
    f.wait("the announce", |w| w.announced().is_some()).await;
    // The fin is held back and delivered after the syn of the next up (as a fin published
    // again after a lost confirm can be): the balancer sees up, then a late down, while the
    // desc says up. The late fin is older than the arbiter's last word on the VIP and says
    // nothing: the VIP is never withdrawn.
    f.net.set_fault(|_, _, m| match m {
        Message::FinAnnounce(_) => Fate::Hold,
        _ => Fate::Deliver,
    });
    f.quorum(false, 100).await;
    // The arbiter has read the down and sent its fin (held back) before the up comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f
        .net
        .log()
        .iter()
        .any(|r| r.kind == MessageType::FinAnnounce && r.fate == Fate::Hold)
    {
        assert!(Instant::now() < deadline, "no fin for the down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let syns = f.net.count(MessageType::SynAnnounce, LB);
    f.quorum(true, 100).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.net.count(MessageType::SynAnnounce, LB) == syns {
        assert!(Instant::now() < deadline, "no syn for the second up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.net.clear_fault();
    let released = Instant::now();
    f.net.release();
    // The arbiter's next word (a new LOCAL_PREF) reaches the balancer after the late fin:
    // once it is at the router, the fin has been handled (a withdraw is asked for at once,
    // the announce after it).
    f.quorum(true, 200).await;
    f.wait("LOCAL_PREF 200", |w| w.announced() == Some(200))
        .await;
    assert!(
        f.fakes.time_of(&format!("withdraw asked {}", vip())) < Some(released),
        "the late fin withdrew the VIP"
    );
    assert!(f.fakes.has_address());
}
