//! Scale bench: N simulated balancers (1,000 by default) heartbeating to one real arbiter.
//!
//! ```text
//!  namespace `scale` (192.0.2.5/32 on lo)
//!    rabbitmq-server (Debian) ◀──AMQP──▶ ipvs-sync server   (the release binary, ipvs = false,
//!         ▲                                                   heartbeat_interval 1, mapping of
//!         │ C lapin connections                              N balancers from keepalived configs)
//!    this process: N clients
//!      per client: its own Ed25519 key (the arbiter holds its .pub), the durable queues of
//!      both lanes as a balancer declares them (ipvs-sync.<name> on exchange `ipvs-sync`,
//!      ipvs-sync-announce.<name> on `ipvs-sync.announce`; the limits of
//!      src/wire/amqp/topology.rs), each bound to <name> and `broadcast`, one consumer per
//!      queue (checks the arbiter's signature, counts by type, acks),
//!      one heartbeat per second to key `lbs` (persistent, mandatory, confirmed) as a balancer
//!      sends it: the VIPs it announces listed (the arbiter's fleet view), a MAC with the pair
//!      key it shares with the arbiter (`--auth sig`: an Ed25519 signature instead)
//!    sampler (1 s): utime+stime and VmRSS/VmHWM of the arbiter, of beam.smp and of this
//!      process; the arbiter's /metrics counters
//! ```
//!
//! Every client starts heartbeating within the same second (the worst herd a fleet restart
//! of the arbiter's broker can produce), so the run also measures how long the arbiter takes
//! to welcome all of them (`tree`, `mapping` and the `announces` answer to each).
//!
//! Run as root: `netns-lab/bench-scale [--clients N] [--secs S] [--connections C] [--slots K]`
//! (or `cargo bench --bench scale -- …`). `IPVS_SYNC_BIN` overrides the binary under test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ipvs_sync::wire::amqp::topology;
use ipvs_sync::wire::envelope::{self, MessageId};
use ipvs_sync::wire::keys::PairKey;
use ipvs_sync::wire::{NodeKey, PublicKey, Role};
use labkit::proc;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::value::RawValue;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BROKER: &str = "192.0.2.5:5672";
const HTTP: &str = "127.0.0.1:9100";
const EXCHANGE: &str = topology::EXCHANGE;
/// Balancers that share one set of VIPs (an ECMP group).
const GROUP: usize = 10;
/// Message types, in the order the counters keep them.
const TYPES: [&str; 11] = [
    "heartbeat",
    "tree",
    "changes",
    "services",
    "mapping",
    "sync",
    "execute",
    "announces",
    "syn_announce",
    "ack_announce",
    "fin_announce",
];
const W_TREE: u8 = 1;
const W_MAPPING: u8 = 2;
const W_ANSWER: u8 = 4;

struct Opts {
    clients: usize,
    secs: u64,
    connections: usize,
    vips: usize,
    ttl: u64,
    /// Heartbeats go out in this many slots per second (`--slots`): 10 sends a tenth of the
    /// fleet every 100 ms; 1000 one heartbeat every millisecond, as a fleet whose balancers
    /// started at random times heartbeats.
    slots: u64,
    bin: PathBuf,
    /// Heartbeats signed with Ed25519 instead of the pair MAC balancers use.
    sign: bool,
}

impl Opts {
    fn parse() -> Result<Opts, BoxError> {
        let mut o = Opts {
            clients: 1000,
            secs: 60,
            connections: 4,
            vips: 3,
            ttl: 5,
            slots: 10,
            sign: false,
            bin: std::env::var_os("IPVS_SYNC_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ipvs-sync"))),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = || -> Result<u64, BoxError> {
                let v = args.next().ok_or(format!("{a} needs a value"))?;
                Ok(v.parse().map_err(|e| format!("{a} {v}: {e}"))?)
            };
            match a.as_str() {
                "--clients" => o.clients = num()? as usize,
                "--secs" => o.secs = num()?,
                "--connections" => o.connections = num()?.max(1) as usize,
                "--vips" => o.vips = num()?.clamp(1, 200) as usize,
                "--ttl" => o.ttl = num()?.max(1),
                "--slots" => o.slots = num()?.clamp(1, 1000),
                "--auth" => match args.next().as_deref() {
                    Some("mac") => o.sign = false,
                    Some("sig") => o.sign = true,
                    _ => return Err("--auth takes mac or sig".into()),
                },
                "--bench" => {}
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        if o.clients == 0 || o.clients > 99_999 {
            return Err("--clients must be 1..99999".into());
        }
        Ok(o)
    }
}

fn name(k: usize) -> String {
    format!("lb{k:05}")
}

/// VIP `j` of ECMP group `g`: the first one IPv4 while the /24 lasts, the rest IPv6.
fn vip(g: usize, j: usize) -> IpAddr {
    if j == 0 && g < 254 {
        format!("203.0.113.{}", g + 1).parse().unwrap()
    } else {
        format!("2001:db8:f00::{:x}:{:x}", g + 1, j + 1)
            .parse()
            .unwrap()
    }
}

/// Desc says announce for every group's first VIP and for all VIPs of even groups, so half
/// the balancers get `syn_announce` only and half `syn_announce` + `fin_announce`.
fn announces(g: usize, j: usize) -> bool {
    j == 0 || g & 1 == 0
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, text)
}

/// keepalived configs, desc files, config.ini, secret.ini (the arbiter's key) and the
/// balancers' public keys of the arbiter.
fn write_arbiter(
    d: &Path,
    o: &Opts,
    user: &str,
    pass: &str,
    arbiter: &NodeKey,
    clients: &[NodeKey],
) -> std::io::Result<(usize, usize)> {
    let groups = o.clients.div_ceil(GROUP);
    let (mut vips, mut up) = (0, 0);
    for g in 0..groups {
        for j in 0..o.vips {
            let v = vip(g, j);
            let a = announces(g, j);
            vips += 1;
            up += usize::from(a);
            write(
                &d.join(format!("desc/keepalived-{v}-desc.json")),
                &format!(
                    r#"{{"active":{n},"total":1,"announce":{a},"local-preference":100}}"#,
                    n = u8::from(a)
                ),
            )?;
        }
    }
    for (k, key) in clients.iter().enumerate() {
        write(
            &d.join(format!("balancers/{}.pub", name(k))),
            &format!("{}\n", key.public()),
        )?;
    }
    for k in 0..o.clients {
        let g = k / GROUP;
        let mut conf = String::from("! generated by benches/scale.rs\n");
        for j in 0..o.vips {
            let v = vip(g, j);
            let rs = if v.is_ipv4() {
                "192.0.2.200"
            } else {
                "2001:db8:ffff::200"
            };
            let _ = write!(
                conf,
                "virtual_server {v} 80 {{\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    real_server {rs} 80 {{\n        weight 1\n    }}\n}}\n"
            );
        }
        write(&d.join(format!("lbs/{}/web/vips.conf", name(k))), &conf)?;
    }
    let dd = d.display();
    write(
        &d.join("config.ini"),
        &format!(
            "[main]\namqp_server = amqp://{user}:{pass}@{BROKER}/%2f\nhostname = arbiter\nipvs = false\n\
             http_listen = {HTTP}\ncontrol_socket = {dd}/control.sock\nstate_dir = {dd}/state\n\
             service_mapping_wildcard = {dd}/lbs/*/*/*.conf\nservice_mapping_config = {dd}/svc_mapping.json\n\
             vip_description_filepath = {dd}/desc/keepalived-{{vip}}-desc.json\n\
             heartbeat_interval = 1\nconsumer_alive_ttl = {ttl}\n\
             [server]\nquorum_socket = {dd}/quorum.sock\nstartup_hold = 0\n\
             balancer_keys_dir = {dd}/balancers\n",
            ttl = o.ttl
        ),
    )?;
    let secret = d.join("secret.ini");
    write(
        &secret,
        &format!("[secret]\nnode_key = {}\n", arbiter.to_text()),
    )?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    Ok((vips, up))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the simulated fleet saw; shared by its tasks and the sampler.
struct Stats {
    /// Times below are ms after this (+1, so 0 means "not yet").
    t0: Instant,
    stop: AtomicBool,
    hb_sent: AtomicU64,
    hb_confirmed: AtomicU64,
    hb_returned: AtomicU64,
    hb_failed: AtomicU64,
    received: [AtomicU64; TYPES.len()],
    unknown_type: AtomicU64,
    bad_mac: AtomicU64,
    consumer_errors: AtomicU64,
    /// Per client: which parts of the welcome arrived (W_* bits).
    welcome: Vec<AtomicU64>,
    /// Per client: when its first heartbeat went out and when its welcome was complete.
    first_hb_ms: Vec<AtomicU64>,
    welcomed_ms: Vec<AtomicU64>,
    welcomed: AtomicUsize,
}

impl Stats {
    fn new(n: usize) -> Stats {
        let v = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Stats {
            t0: Instant::now(),
            stop: AtomicBool::new(false),
            hb_sent: AtomicU64::new(0),
            hb_confirmed: AtomicU64::new(0),
            hb_returned: AtomicU64::new(0),
            hb_failed: AtomicU64::new(0),
            received: Default::default(),
            unknown_type: AtomicU64::new(0),
            bad_mac: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            welcome: v(),
            first_hb_ms: v(),
            welcomed_ms: v(),
            welcomed: AtomicUsize::new(0),
        }
    }

    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64 + 1
    }

    /// One delivery to client `k` (`name`): check the arbiter's signature, count, note welcome
    /// parts.
    fn on_delivery(&self, key: &PublicKey, k: usize, name: &str, data: &[u8]) {
        let Ok(opened) = envelope::open(key, data) else {
            self.bad_mac.fetch_add(1, Relaxed);
            return;
        };
        let kind = opened.header.kind.as_str();
        let Some(i) = TYPES.iter().position(|t| *t == kind) else {
            self.unknown_type.fetch_add(1, Relaxed);
            return;
        };
        self.received[i].fetch_add(1, Relaxed);
        if opened.header.to != name {
            return; // broadcast: not part of this client's welcome
        }
        let bit = match kind {
            "tree" => W_TREE,
            "mapping" => W_MAPPING,
            "syn_announce" | "fin_announce" => W_ANSWER,
            _ => return,
        };
        let before = self.welcome[k].fetch_or(u64::from(bit), Relaxed);
        let all = u64::from(W_TREE | W_MAPPING | W_ANSWER);
        if before != all && (before | u64::from(bit)) == all {
            self.welcomed_ms[k].store(self.ms(), Relaxed);
            self.welcomed.fetch_add(1, Relaxed);
        }
    }
}

/// Declares each client's topology with the transport's own `topology::declare` (the
/// exchanges checked, both lanes' durable queues with their limits, bindings to the hostname
/// and `broadcast`) and starts a consumer per queue that acks what it counted.
async fn declare_and_consume(
    ch: &Channel,
    clients: &[(usize, String)],
    stats: &Arc<Stats>,
    key: &PublicKey,
) -> Result<(), BoxError> {
    ch.basic_qos(16, BasicQosOptions::default()).await?;
    let limits =
        ipvs_sync::wire::amqp::QueueLimits::new(Duration::from_secs(30), config::DEFAULT_MAX_BYTES);
    for (k, name) in clients {
        let role = Role::Client {
            hostname: name.clone(),
        };
        // Both lanes, as `ipvs-sync client` declares them: what decides announces
        // (`mapping`, `syn_announce`, `fin_announce`) comes by the announce lane.
        topology::declare(ch, &role, "/", &limits).await?;
        for &lane in role.lanes() {
            let queue = role.lane_queue(lane);
            let mut consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    format!("scale.{}.{name}", lane.label()).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let (k, name, stats, key) = (*k, name.clone(), stats.clone(), *key);
            tokio::spawn(async move {
                while let Some(d) = consumer.next().await {
                    match d {
                        Ok(delivery) => {
                            stats.on_delivery(&key, k, &name, &delivery.data);
                            if delivery.ack(BasicAckOptions::default()).await.is_err()
                                && !stats.stop.load(Relaxed)
                            {
                                stats.consumer_errors.fetch_add(1, Relaxed);
                            }
                        }
                        Err(_) => {
                            if !stats.stop.load(Relaxed) {
                                stats.consumer_errors.fetch_add(1, Relaxed);
                            }
                            break;
                        }
                    }
                }
            });
        }
    }
    Ok(())
}

/// How the simulated balancers seal their heartbeats.
enum Seal {
    /// The pair MAC each balancer shares with the arbiter, as `ipvs-sync client` sends.
    Mac(Vec<PairKey>),
    /// An Ed25519 signature with each balancer's own key.
    Sig(Arc<Vec<NodeKey>>),
}

/// What balancer `k` announces in steady state: the VIPs of its group whose desc says announce.
fn announced_json(o: &Opts, k: usize) -> String {
    let g = k / GROUP;
    let list: Vec<String> = (0..o.vips)
        .filter(|&j| announces(g, j))
        .map(|j| format!("\"{}\"", vip(g, j)))
        .collect();
    format!("[{}]", list.join(","))
}

/// Publishes one heartbeat per client per second, each sealed as `seal` says, in `slots`
/// slots, until stopped; counts the broker's confirms as they come.
async fn heartbeats(
    ch: Channel,
    clients: Vec<(usize, String, String)>,
    stats: Arc<Stats>,
    seal: Arc<Seal>,
    slots: u64,
) -> Result<(), BoxError> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let epoch = now_ms() / 1000;
    let mut seq: Vec<u64> = vec![0; clients.len()];
    // Burst (the default): a slot that fell behind is caught up, so the offered load stays at
    // one heartbeat per client per second even when this box is busy.
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / slots));
    let mut round = 0u64;
    while !stats.stop.load(Relaxed) {
        tick.tick().await;
        let slot = round % slots;
        round += 1;
        let uptime = stats.t0.elapsed().as_secs() + 1;
        let mut confirms = Vec::new();
        for (i, (k, name, announced)) in clients.iter().enumerate() {
            if *k as u64 % slots != slot {
                continue;
            }
            seq[i] += 1;
            let body = RawValue::from_string(format!(
                r#"{{"role":"client","uptime":{uptime},"version":"bench","announced":{announced}}}"#
            ))?;
            let header = envelope::Header {
                kind: "heartbeat".into(),
                from: name.clone(),
                to: "lbs".into(),
                id: MessageId { epoch, seq: seq[i] },
                ts_ms: now_ms(),
            };
            let payload = match &*seal {
                Seal::Mac(pairs) => envelope::seal_mac(&pairs[*k], &header, &body)?,
                Seal::Sig(keys) => envelope::seal(&keys[*k], &header, &body)?,
            };
            let c = ch
                .basic_publish(
                    EXCHANGE.into(),
                    "lbs".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &payload,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await?;
            let _ = stats.first_hb_ms[*k].compare_exchange(0, stats.ms(), Relaxed, Relaxed);
            stats.hb_sent.fetch_add(1, Relaxed);
            confirms.push(c);
        }
        let st = stats.clone();
        tokio::spawn(async move {
            for c in confirms {
                let ctr = match c.await {
                    Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => &st.hb_confirmed,
                    Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => &st.hb_returned,
                    _ => &st.hb_failed,
                };
                ctr.fetch_add(1, Relaxed);
            }
        });
    }
    Ok(())
}

/// Connects, declares every client's queue and starts its consumer. Returns per connection
/// the connection, a channel for publishing and the clients it carries.
async fn start_fleet(
    url: &str,
    o: &Opts,
    stats: &Arc<Stats>,
    arbiter: PublicKey,
) -> Result<Vec<(Connection, Channel, Vec<(usize, String)>)>, BoxError> {
    let key = arbiter;
    let mut conns = Vec::new();
    let mut setups = Vec::new();
    for c in 0..o.connections {
        let clients: Vec<(usize, String)> = (0..o.clients)
            .filter(|k| k % o.connections == c)
            .map(|k| (k, name(k)))
            .collect();
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let consume = conn.create_channel().await?;
        let publish = conn.create_channel().await?;
        let (st, cl) = (stats.clone(), clients.clone());
        setups.push(tokio::spawn(async move {
            declare_and_consume(&consume, &cl, &st, &key).await
        }));
        conns.push((conn, publish, clients));
    }
    for s in setups {
        s.await??;
    }
    Ok(conns)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    Some((
        proc::status_field(pid, "VmRSS:")?,
        proc::status_field(pid, "VmHWM:")?,
    ))
}

/// Blocking HTTP GET against the arbiter's `http_listen`.
fn http_get(path: &str) -> Option<String> {
    let addr: SocketAddr = HTTP.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// `name{label="value"} N` lines of a Prometheus text page, as label value → N.
fn metric(page: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in page.lines().filter(|l| l.starts_with(name)) {
        let Some((lhs, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = lhs
            .split_once('"')
            .and_then(|(_, r)| r.split_once('"'))
            .map_or(String::new(), |(l, _)| l.to_owned());
        if lhs == name || lhs.starts_with(&format!("{name}{{")) {
            out.insert(label, v.parse().unwrap_or(f64::NAN));
        }
    }
    out
}

#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    arb_ticks: u64,
    arb_rss: u64,
    arb_hwm: u64,
    broker_ticks: u64,
    broker_rss: u64,
    broker_hwm: u64,
    own_ticks: u64,
    hb_confirmed: u64,
    arb_hb_in: f64,
    arb_sent: f64,
    outbox: f64,
    welcomed: usize,
}

fn beam_pid(ns: &labkit::Netns) -> Option<u32> {
    ns.pids().ok()?.into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
    })
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn percentile(mut v: Vec<u64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// Everything measured at one instant.
fn take_sample(t: f64, arb_pid: u32, broker_pid: u32, stats: &Stats) -> Sample {
    let (arb_rss, arb_hwm) = memory_kb(arb_pid).unwrap_or_default();
    let (broker_rss, broker_hwm) = memory_kb(broker_pid).unwrap_or_default();
    let page = http_get("/metrics").unwrap_or_default();
    let sum = |name: &str| metric(&page, name).values().sum::<f64>();
    Sample {
        t,
        arb_ticks: proc::cpu_ticks(arb_pid).unwrap_or_default(),
        arb_rss,
        arb_hwm,
        broker_ticks: proc::cpu_ticks(broker_pid).unwrap_or_default(),
        broker_rss,
        broker_hwm,
        own_ticks: proc::cpu_ticks(std::process::id()).unwrap_or_default(),
        hb_confirmed: stats.hb_confirmed.load(Relaxed),
        arb_hb_in: metric(&page, "ipvs_sync_messages_received_total")
            .get("heartbeat")
            .copied()
            .unwrap_or(0.0),
        arb_sent: sum("ipvs_sync_messages_sent_total"),
        outbox: sum("ipvs_sync_outbox_depth"),
        welcomed: stats.welcomed.load(Relaxed),
    }
}

/// Rates between two samples.
struct Window<'a> {
    a: &'a Sample,
    b: &'a Sample,
    tck: f64,
}

impl Window<'_> {
    fn dt(&self) -> f64 {
        (self.b.t - self.a.t).max(1e-9)
    }
    fn cpu(&self, f: impl Fn(&Sample) -> u64) -> f64 {
        (f(self.b).saturating_sub(f(self.a))) as f64 / self.tck / self.dt() * 100.0
    }
    fn rate(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        (f(self.b) - f(self.a)) / self.dt()
    }
    fn mean_mb(&self, all: &[Sample], f: impl Fn(&Sample) -> u64) -> f64 {
        let v: Vec<u64> = all
            .iter()
            .filter(|s| s.t >= self.a.t && s.t <= self.b.t)
            .map(f)
            .collect();
        mb(v.iter().sum::<u64>() / v.len().max(1) as u64)
    }
}

/// WARN/ERROR lines of the arbiter's log, counted by their message (timestamps cut).
fn log_problems(path: &Path) -> BTreeMap<String, usize> {
    let text = labkit::strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(pos) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        // Keep the level and the message up to the first field, which carries per-client data.
        let msg = &line[pos + 1..];
        let msg: String = msg
            .split_once(" client=")
            .map_or(msg, |(m, _)| m)
            .chars()
            .take(120)
            .collect();
        *out.entry(msg).or_insert(0) += 1;
    }
    out
}

fn main() -> Result<(), BoxError> {
    let o = Opts::parse()?;
    if !labkit::is_root() {
        eprintln!("scale bench skipped: needs root (run netns-lab/bench-scale)");
        return Ok(());
    }
    if !o.bin.exists() {
        return Err(format!(
            "{} missing: cargo build --release --bin ipvs-sync",
            o.bin.display()
        )
        .into());
    }
    let tck = proc::ticks_per_sec();
    let scratch = labkit::scratch_dir("scale")?;
    let core = labkit::Netns::new("scale")?;
    core.ip(&["addr", "add", "192.0.2.5/32", "dev", "lo"])?;
    eprintln!("starting rabbitmq in namespace {} …", core.name());
    let rabbit = labkit::Rabbit::start(&core, BROKER)?;
    let broker_pid = beam_pid(&core).ok_or("no beam.smp in the namespace")?;
    let d = scratch.path().join("arbiter");
    let arbiter_key = NodeKey::generate()?;
    let client_keys: Arc<Vec<NodeKey>> = Arc::new(
        (0..o.clients)
            .map(|_| NodeKey::generate())
            .collect::<Result<_, _>>()?,
    );
    let (vips, up) = write_arbiter(
        &d,
        &o,
        rabbit.user(),
        rabbit.pass(),
        &arbiter_key,
        &client_keys,
    )?;

    let mut cmd = core.command(o.bin.to_str().ok_or("binary path is not UTF-8")?);
    cmd.arg("-c")
        .arg(d.join("config.ini"))
        .args(["--log-level", "info", "server"])
        .env("NO_COLOR", "1");
    let log = d.join("server.log");
    let mut arbiter = labkit::Daemon::spawn(cmd, &log)?;
    let arb_pid = arbiter.pid();
    // From here this thread, and the runtime's threads it starts, live in the namespace.
    core.enter()?;
    if !labkit::wait_until(Duration::from_secs(30), || {
        http_get("/status").is_some_and(|s| s.contains("\"role\""))
    }) {
        return Err(arbiter.failure("no /status within 30 s").into());
    }
    eprintln!(
        "arbiter pid {arb_pid} ({}) up: {} balancers, {vips} VIPs, {up} announce; \
         declaring {} client queues over {} connections …",
        o.bin.display(),
        o.clients,
        o.clients,
        o.connections
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stats = Arc::new(Stats::new(o.clients));
    let t_setup = Instant::now();
    let conns = rt.block_on(start_fleet(&rabbit.url(), &o, &stats, arbiter_key.public()))?;
    eprintln!(
        "queues and consumers ready in {:.1} s; heartbeating for {} s …",
        t_setup.elapsed().as_secs_f64(),
        o.secs
    );

    let start = Instant::now();
    let hb_start_ms = stats.ms();
    let mut samples = vec![take_sample(0.0, arb_pid, broker_pid, &stats)];
    let seal = Arc::new(if o.sign {
        Seal::Sig(Arc::clone(&client_keys))
    } else {
        let arbiter_pub = arbiter_key.public();
        Seal::Mac(
            client_keys
                .iter()
                .enumerate()
                .map(|(k, key)| key.pair_with_arbiter(&name(k), "arbiter", &arbiter_pub))
                .collect(),
        )
    });
    let mut pubs = Vec::new();
    for (_, ch, clients) in &conns {
        let clients = clients
            .iter()
            .map(|(k, n)| (*k, n.clone(), announced_json(&o, *k)))
            .collect();
        pubs.push(rt.spawn(heartbeats(
            ch.clone(),
            clients,
            stats.clone(),
            Arc::clone(&seal),
            o.slots,
        )));
    }
    let mut died = None;
    for s in 1..=o.secs {
        let next = start + Duration::from_secs(s);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let smp = take_sample(start.elapsed().as_secs_f64(), arb_pid, broker_pid, &stats);
        if s % 10 == 0 {
            eprintln!(
                "  {s:>4} s: welcomed {}/{}, arbiter RSS {:.1} MiB, heartbeats in {}",
                smp.welcomed,
                o.clients,
                mb(smp.arb_rss),
                smp.arb_hb_in
            );
        }
        samples.push(smp);
        if let Ok(Some(status)) = arbiter.exited() {
            died = Some(status);
            break;
        }
    }
    let status: serde_json::Value = http_get("/status")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let page = http_get("/metrics").unwrap_or_default();
    let live = status["clients"].as_array().map_or(0, Vec::len);
    let stale_live = status["clients"].as_array().map_or(0, |c| {
        c.iter()
            .filter(|c| c["age_s"].as_f64().is_some_and(|a| a > 2.5))
            .count()
    });

    // Heartbeat outcomes as of the end of the run (closing the connections fails what is
    // still in flight, which says nothing about the arbiter).
    let hb = [
        &stats.hb_sent,
        &stats.hb_confirmed,
        &stats.hb_returned,
        &stats.hb_failed,
    ]
    .map(|c| c.load(Relaxed));
    stats.stop.store(true, Relaxed);
    rt.block_on(async {
        for p in pubs {
            if let Ok(Err(e)) = p.await {
                eprintln!("heartbeat task: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (conn, _, _) in &conns {
            let _ = conn.close(200, "scale bench done".into()).await;
        }
    });
    let _ = arbiter.stop();
    drop(rt);

    // ---- report --------------------------------------------------------------------------
    let last = samples.last().copied().unwrap_or_default();
    let all_welcomed_s = (stats.welcomed.load(Relaxed) == o.clients).then(|| {
        let max = stats
            .welcomed_ms
            .iter()
            .map(|w| w.load(Relaxed))
            .max()
            .unwrap_or(0);
        max.saturating_sub(hb_start_ms) as f64 / 1000.0
    });
    let latencies: Vec<u64> = (0..o.clients)
        .filter_map(|k| {
            let w = stats.welcomed_ms[k].load(Relaxed);
            let f = stats.first_hb_ms[k].load(Relaxed);
            (w > 0 && f > 0).then(|| w.saturating_sub(f))
        })
        .collect();
    // Steady state: from 5 s after the last welcome (or mid-run) to the end.
    let from = all_welcomed_s
        .map_or(last.t / 2.0, |w| (w + 5.0).ceil())
        .min(last.t * 2.0 / 3.0);
    let a = samples
        .iter()
        .find(|s| s.t >= from)
        .copied()
        .unwrap_or_default();
    let steady = Window {
        a: &a,
        b: &last,
        tck,
    };
    let warm_end = samples
        .iter()
        .find(|s| all_welcomed_s.is_some_and(|w| s.t >= w))
        .copied()
        .unwrap_or(last);
    let warm = Window {
        a: &samples[0],
        b: &warm_end,
        tck,
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## scale: {} simulated clients → one arbiter ({} s run)\n",
        o.clients,
        last.t.round()
    );
    let _ = writeln!(
        out,
        "setup: {} balancers in groups of {GROUP} sharing {} VIPs each ({vips} VIPs, {up} with desc announce), \
         heartbeat_interval 1 s in {} slots, consumer_alive_ttl {} s, ipvs = false; clients on {} AMQP \
         connections; steady window {:.0}–{:.0} s\n",
        o.clients, o.vips, o.slots, o.ttl, o.connections, a.t, last.t
    );
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row("clients", o.clients.to_string());
    row(
        "heartbeats/s confirmed by the broker (steady)",
        format!("{:.0}", steady.rate(|s| s.hb_confirmed as f64)),
    );
    row(
        "heartbeats/s taken by the arbiter (steady)",
        format!("{:.0}", steady.rate(|s| s.arb_hb_in)),
    );
    row(
        "arbiter CPU, steady (% of one core)",
        format!("{:.1} %", steady.cpu(|s| s.arb_ticks)),
    );
    row(
        "arbiter CPU, welcome phase (% of one core)",
        format!(
            "{:.1} % over {:.0} s",
            warm.cpu(|s| s.arb_ticks),
            warm_end.t
        ),
    );
    row(
        "arbiter CPU time, whole run",
        format!(
            "{:.2} s",
            last.arb_ticks.saturating_sub(samples[0].arb_ticks) as f64 / tck
        ),
    );
    row(
        "arbiter RSS steady (mean) / at end / peak (VmHWM)",
        format!(
            "{:.1} / {:.1} / {:.1} MiB (before clients {:.1})",
            steady.mean_mb(&samples, |s| s.arb_rss),
            mb(last.arb_rss),
            mb(last.arb_hwm),
            mb(samples[0].arb_rss)
        ),
    );
    let sent = metric(&page, "ipvs_sync_messages_sent_total");
    let sent_s: Vec<String> = sent
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    row(
        "messages the arbiter sent (confirmed)",
        format!("{} ({})", sent.values().sum::<f64>(), sent_s.join(", ")),
    );
    let got: Vec<String> = TYPES
        .iter()
        .zip(&stats.received)
        .filter(|(_, n)| n.load(Relaxed) > 0)
        .map(|(t, n)| format!("{t} {}", n.load(Relaxed)))
        .collect();
    row("deliveries the clients received", got.join(", "));
    row(
        "time until all clients were welcomed (tree + mapping + announces answer)",
        match all_welcomed_s {
            Some(s) => format!("{s:.2} s"),
            None => format!(
                "NOT ALL: {}/{} after {:.0} s",
                stats.welcomed.load(Relaxed),
                o.clients,
                last.t
            ),
        },
    );
    row(
        "per-client first heartbeat → welcomed, p50 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} s",
            percentile(latencies.clone(), 0.5),
            percentile(latencies.clone(), 0.99),
            percentile(latencies, 1.0)
        ),
    );
    row(
        "live clients in the arbiter's /status at the end",
        format!("{live} ({stale_live} with age > 2.5 s)"),
    );
    row(
        "broker (beam.smp) CPU steady / RSS steady / peak",
        format!(
            "{:.1} % / {:.0} / {:.0} MiB",
            steady.cpu(|s| s.broker_ticks),
            steady.mean_mb(&samples, |s| s.broker_rss),
            mb(last.broker_hwm)
        ),
    );
    row(
        &format!("this bench process ({} clients) CPU steady", o.clients),
        format!("{:.1} %", steady.cpu(|s| s.own_ticks)),
    );
    let dropped = metric(&page, "ipvs_sync_messages_dropped_total");
    let outbox_dropped = metric(&page, "ipvs_sync_outbox_dropped_total");
    row(
        "anomalies",
        format!(
            "heartbeats sent {} / confirmed {} / in flight at the end {} / returned {} / failed {}; \
             bad signature at clients {};  consumer errors {}; arbiter drops {:?}; arbiter outbox drops {:?}; arbiter {}",
            hb[0],
            hb[1],
            hb[0].saturating_sub(hb[1] + hb[2] + hb[3]),
            hb[2],
            hb[3],
            stats.bad_mac.load(Relaxed),
            stats.consumer_errors.load(Relaxed),
            dropped.iter().filter(|(_, n)| **n > 0.0).collect::<Vec<_>>(),
            outbox_dropped.iter().filter(|(_, n)| **n > 0.0).collect::<Vec<_>>(),
            died.map_or("ran to the end".to_owned(), |s| format!("EXITED EARLY ({s})"))
        ),
    );
    let _ = writeln!(
        out,
        "\ntimeline (5 s steps): t, arbiter CPU %, arbiter RSS MiB, heartbeats in/s, sent/s, outbox depth, welcomed, broker CPU %"
    );
    for w in samples.windows(6).step_by(5) {
        let (p, q) = (&w[0], &w[5]);
        let win = Window { a: p, b: q, tck };
        let _ = writeln!(
            out,
            "  {:>4.0} {:>6.1} {:>7.1} {:>7.0} {:>7.0} {:>6.0} {:>6} {:>6.1}",
            q.t,
            win.cpu(|s| s.arb_ticks),
            mb(q.arb_rss),
            win.rate(|s| s.arb_hb_in),
            win.rate(|s| s.arb_sent),
            q.outbox,
            q.welcomed,
            win.cpu(|s| s.broker_ticks)
        );
    }
    let problems = log_problems(&log);
    if !problems.is_empty() {
        let _ = writeln!(out, "\narbiter WARN/ERROR lines by message:");
        let mut v: Vec<_> = problems.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (m, n) in v.into_iter().take(8) {
            let _ = writeln!(out, "  {n:>6} × {m}");
        }
    }
    println!("{out}");
    if std::env::var_os("SCALE_KEEP_LOG").is_some() {
        let keep = std::env::temp_dir().join("scale-arbiter.log");
        let _ = std::fs::copy(&log, &keep);
        eprintln!("arbiter log kept at {}", keep.display());
    }
    drop(rabbit);
    drop(core);
    Ok(())
}
