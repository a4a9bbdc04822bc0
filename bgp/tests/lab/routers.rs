//! The lab: two namespaces, a router of each kind configured for the speaker, and the
//! questions every test asks of a router (is the session up, is this prefix usable, with
//! which attributes).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bgp::{EbgpPreference, PeerConfig, PeerEvent, RouteAttrs, Speaker, SpeakerConfig};
use labkit::{Bird, Frr, GobgpConfig, GobgpNeighbor, Gobgpd, Netns};
use tokio::sync::mpsc::UnboundedReceiver;

pub const R_V4: &str = "192.0.2.1";
pub const LB_V4: &str = "192.0.2.11";
pub const ROUTER_AS: u32 = 65000;

/// Which router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gobgp,
    Bird,
    Frr,
}

pub struct Lab {
    pub r: Netns,
    pub lb: Netns,
    /// The speaker's end of the veth.
    pub lb_if: String,
}

/// The two namespaces and the veth between them. Panics when not root: a lab test that
/// cannot run must fail, not pass.
pub fn lab() -> Lab {
    assert!(
        labkit::require_root(),
        "lab tests need root, netns and the routers: run netns-lab/test"
    );
    let r = Netns::new("r").unwrap();
    let lb = Netns::new("lb").unwrap();
    let (_, lb_if) = labkit::veth_pair(
        &r,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &lb,
        &["192.0.2.11/24", "2001:db8::11/64"],
    )
    .unwrap();
    Lab { r, lb, lb_if }
}

/// How the router sees the speaker.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The speaker's AS (ROUTER_AS: iBGP).
    pub speaker_as: u32,
    /// The speaker's address the router expects the session from.
    pub neighbor: &'static str,
    /// Act as graceful-restart helper (RFC 4724) for the speaker, for both families.
    pub graceful_restart: bool,
    /// Hold time the router proposes.
    pub hold_time: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            speaker_as: ROUTER_AS,
            neighbor: LB_V4,
            graceful_restart: false,
            hold_time: 90,
        }
    }
}

/// A router of one kind, passive, with the speaker as its only neighbor (IPv4 and IPv6).
pub enum Router {
    Gobgp(Gobgpd),
    Bird(Bird),
    Frr(Frr),
}

impl Router {
    pub fn start(kind: Kind, lab: &Lab, o: &Opts) -> Router {
        match kind {
            Kind::Gobgp => Router::Gobgp(Gobgpd::start(&lab.r, &gobgp_config(o)).unwrap()),
            Kind::Bird => Router::Bird(Bird::start(&lab.r, &bird_config(o)).unwrap()),
            Kind::Frr => Router::Frr(Frr::start(&lab.r, &frr_config(o)).unwrap()),
        }
    }

    /// The session with the speaker is Established.
    pub fn established(&self, neighbor: &str) -> bool {
        match self {
            Router::Gobgp(g) => g.neighbor_state(neighbor).is_ok_and(|s| s == "established"),
            Router::Bird(b) => b.bgp_state("lb").is_ok_and(|s| s == "Established"),
            Router::Frr(f) => f.neighbor_state(neighbor).is_ok_and(|s| s == "Established"),
        }
    }

    /// The router uses a path from the speaker for `prefix`: gobgpd holds it; BIRD has it
    /// as its best route, unicast (not filtered, not unreachable); FRR has a valid best path
    /// and zebra installed it in the namespace's kernel table.
    pub fn installed(&self, prefix: &str) -> bool {
        match self {
            Router::Gobgp(g) => g.api().paths_for(prefix).is_ok_and(|ps| !ps.is_empty()),
            Router::Bird(b) => b.has_best_route(prefix, "lb"),
            Router::Frr(f) => f.has_best_path(prefix) && f.fib_installed(prefix),
        }
    }

    /// The router holds any path for `prefix` (even one it does not use).
    pub fn has_path(&self, prefix: &str) -> bool {
        match self {
            Router::Gobgp(g) => g.api().paths_for(prefix).is_ok_and(|ps| !ps.is_empty()),
            Router::Bird(b) => b.routes(prefix).is_ok_and(|rs| !rs.is_empty()),
            Router::Frr(f) => f.bgp_paths(prefix).is_ok_and(|ps| !ps.is_empty()),
        }
    }

    /// The next hop of the speaker's path for `prefix`, as the router shows it.
    pub fn next_hop(&self, prefix: &str) -> Option<String> {
        match self {
            Router::Gobgp(g) => g.api().paths_for(prefix).ok()?.first()?.nexthop.clone(),
            Router::Bird(b) => b
                .routes(prefix)
                .ok()?
                .first()?
                .attrs
                .get("BGP.next_hop")
                .cloned(),
            Router::Frr(f) => f.bgp_paths(prefix).ok()?.first()?["nexthops"][0]["ip"]
                .as_str()
                .map(str::to_owned),
        }
    }

    /// LOCAL_PREF of the speaker's path for `prefix`.
    pub fn local_pref(&self, prefix: &str) -> Option<u32> {
        match self {
            Router::Gobgp(g) => g.api().paths_for(prefix).ok()?.first()?.local_pref,
            Router::Bird(b) => b
                .routes(prefix)
                .ok()?
                .first()?
                .attrs
                .get("BGP.local_pref")?
                .parse()
                .ok(),
            Router::Frr(f) => f.bgp_paths(prefix).ok()?.first()?["locPrf"]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok()),
        }
    }

    /// Communities of the speaker's path for `prefix`, as `high:low`.
    pub fn communities(&self, prefix: &str) -> Vec<String> {
        match self {
            Router::Gobgp(g) => {
                let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
                let rib = g.rib(family).unwrap_or_default();
                let attrs = rib[prefix][0]["attrs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                attrs
                    .iter()
                    .filter(|a| a["type"] == 8)
                    .flat_map(|a| a["communities"].as_array().cloned().unwrap_or_default())
                    .filter_map(|c| c.as_u64())
                    .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                    .collect()
            }
            Router::Bird(b) => b
                .routes(prefix)
                .ok()
                .and_then(|rs| rs.first()?.attrs.get("BGP.community").cloned())
                .unwrap_or_default()
                .split_whitespace()
                .map(|c| c.trim_matches(|c| c == '(' || c == ')').replace(',', ":"))
                .collect(),
            Router::Frr(f) => f
                .bgp_paths(prefix)
                .ok()
                .and_then(|ps| {
                    ps.first()?["community"]["string"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Starts watching the router's own record of withdrawals of `prefix`.
    pub fn watch_withdrawals(&self, prefix: &str) -> Watch {
        let offset = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        match self {
            Router::Gobgp(g) => Watch::Monitor(Monitor::start(g, prefix)),
            Router::Bird(b) => Watch::Log(prefix.to_owned(), offset(&b.log_path())),
            Router::Frr(f) => Watch::Log(prefix.to_owned(), offset(&f.log_path())),
        }
    }

    /// A point in the router's log (BIRD, FRR) from which [`Router::eor_received`] and
    /// [`Router::restart_bit_seen`] look.
    pub fn mark(&self) -> Since {
        let offset = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        Since(match self {
            Router::Gobgp(_) => 0,
            Router::Bird(b) => offset(&b.log_path()),
            Router::Frr(f) => offset(&f.log_path()),
        })
    }

    /// End-of-RIB for every family received on the current session (gobgpd: its per-family
    /// graceful-restart state, reset when a session ends) or since `since` (BIRD logs the
    /// end of the neighbor's graceful restart, which comes with the last End-of-RIB; FRR
    /// logs each End-of-RIB).
    pub fn eor_received(&self, since: &Since) -> bool {
        match self {
            Router::Gobgp(g) => g
                .cli(&["neighbor", crate::routers::LB_V4, "-j"])
                .ok()
                .and_then(|o| serde_json::from_str::<serde_json::Value>(o.trim()).ok())
                .and_then(|v| v["afi_safis"].as_array().cloned())
                .is_some_and(|fs| {
                    !fs.is_empty()
                        && fs.iter().all(|f| {
                            f["mp_graceful_restart"]["state"]["end_of_rib_received"] == true
                        })
                }),
            Router::Bird(b) => log_lines(&b.log_path(), since.0)
                .iter()
                .any(|l| l.contains("Neighbor graceful restart done")),
            Router::Frr(f) => {
                let lines = log_lines(&f.log_path(), since.0);
                ["IPv4 Unicast", "IPv6 Unicast"].iter().all(|fam| {
                    lines
                        .iter()
                        .any(|l| l.contains(&format!("rcvd End-of-RIB for {fam} from")))
                })
            }
        }
    }

    /// Whether the neighbor's OPEN since `since` had the graceful-restart Restart State bit
    /// (BIRD: "Restart recovery" among its capabilities; FRR logs "Peer has restarted");
    /// `None` where the router does not tell (gobgpd).
    pub fn restart_bit_seen(&self, since: &Since) -> Option<bool> {
        match self {
            Router::Gobgp(_) => None,
            Router::Bird(b) => Some(
                b.birdc(&["show", "protocols", "all", "lb"])
                    .is_ok_and(|o| o.contains("Restart recovery")),
            ),
            Router::Frr(f) => Some(
                log_lines(&f.log_path(), since.0)
                    .iter()
                    .any(|l| l.contains("Peer has restarted")),
            ),
        }
    }

    /// Polls `cond` every 50 ms until it holds or `timeout` passes.
    pub fn wait(&self, timeout: Duration, cond: impl Fn(&Router) -> bool) -> bool {
        labkit::wait_until(timeout, || cond(self))
    }
}

/// A point in a router's log.
pub struct Since(u64);

/// A router's record of withdrawals from a point on: gobgpd's `monitor global rib` stream,
/// or the log of BIRD (`debug { routes }`) and FRR (`debug bgp updates`) past an offset.
pub enum Watch {
    Monitor(Monitor),
    Log(String, u64),
}

impl Watch {
    /// The records of a withdrawal of the watched prefix seen so far.
    pub fn withdrawals(&self, router: &Router) -> Vec<String> {
        match (self, router) {
            (Watch::Monitor(m), _) => m.withdrawals(),
            (Watch::Log(prefix, from), Router::Bird(b)) => log_lines(&b.log_path(), *from)
                .into_iter()
                // lb.ipv4 < removed [sole] 198.51.100.1/32 unicast
                .filter(|l| l.contains(&format!(" {prefix} ")) && l.contains(" removed "))
                .collect(),
            (Watch::Log(prefix, from), Router::Frr(f)) => log_lines(&f.log_path(), *from)
                .into_iter()
                // ... rcvd UPDATE about 198.51.100.1/32 IPv4 unicast -- withdrawn
                .filter(|l| l.contains(prefix.as_str()) && l.contains("withdrawn"))
                .collect(),
            (Watch::Log(..), Router::Gobgp(_)) => vec![],
        }
    }
}

fn log_lines(path: &std::path::Path, from: u64) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[from..])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `gobgp monitor global rib -j` for one prefix, read by a thread into a list.
pub struct Monitor {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(g: &Gobgpd, prefix: &str) -> Monitor {
        use std::io::BufRead;
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let mut child = std::process::Command::new("gobgp")
            .args(["--target", &g.api_target(), "monitor", "global", "rib"])
            .args(["-a", family, "--current", "-j"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if l.contains(&prefix) {
                    l2.lock().unwrap().push(l);
                }
            }
        });
        // The stream starts with the current best path: once it is there, the monitor is
        // subscribed.
        assert!(
            labkit::wait_until(Duration::from_secs(5), || !lines.lock().unwrap().is_empty()),
            "gobgp monitor printed nothing"
        );
        Monitor { child, lines }
    }

    fn withdrawals(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"withdrawal\":true"))
            .cloned()
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gobgp_config(o: &Opts) -> String {
    let n = GobgpNeighbor::new(o.neighbor.parse().unwrap(), o.speaker_as)
        .passive(true)
        .hold_time(o.hold_time);
    let mut t = GobgpConfig::new(ROUTER_AS, R_V4.parse().unwrap())
        .neighbor(n)
        .to_toml();
    if o.graceful_restart {
        // gobgpd as a helper: per neighbor, and per family (mp-graceful-restart). The keys
        // below attach to the last [[neighbors]] and [[neighbors.afi-safis]] tables written.
        t = t.replacen(
            "  [[neighbors.afi-safis]]",
            "  [neighbors.graceful-restart.config]\n    enabled = true\n    helper-only = true\n  [[neighbors.afi-safis]]",
            1,
        );
        t = t.replace(
            "      afi-safi-name = \"ipv4-unicast\"",
            "      afi-safi-name = \"ipv4-unicast\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true",
        );
        t = t.replace(
            "      afi-safi-name = \"ipv6-unicast\"",
            "      afi-safi-name = \"ipv6-unicast\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true",
        );
    }
    t
}

fn bird_config(o: &Opts) -> String {
    let gr = if o.graceful_restart {
        "  graceful restart on;\n"
    } else {
        ""
    };
    format!(
        "router id {R_V4};\n\
         log \"{log}\" all;\n\
         protocol device {{}}\n\
         protocol direct {{ ipv4; ipv6; }}\n\
         protocol bgp lb {{\n  local as {ROUTER_AS};\n  neighbor {n} as {asn};\n  \
         passive on;\n  hold time {hold};\n{gr}  debug {{ states, events, routes }};\n  \
         ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
        log = Bird::LOG_PLACEHOLDER,
        n = o.neighbor,
        asn = o.speaker_as,
        hold = o.hold_time,
    )
}

fn frr_config(o: &Opts) -> String {
    let gr = if o.graceful_restart {
        " bgp graceful-restart\n"
    } else {
        ""
    };
    let n = o.neighbor;
    format!(
        "hostname r\n\
         debug bgp updates\n\
         debug bgp neighbor-events\n\
         debug bgp graceful-restart\n\
         router bgp {ROUTER_AS}\n bgp router-id {R_V4}\n no bgp ebgp-requires-policy\n\
         {gr} neighbor {n} remote-as {asn}\n neighbor {n} passive\n \
         neighbor {n} timers {ka} {hold}\n \
         address-family ipv4 unicast\n  neighbor {n} activate\n exit-address-family\n \
         address-family ipv6 unicast\n  neighbor {n} activate\n exit-address-family\n",
        asn = o.speaker_as,
        ka = (o.hold_time / 3).max(1),
        hold = o.hold_time,
    )
}

/// Speaker settings for the lab (AS `local_as`, router id 192.0.2.11, 1 s connect retry,
/// MED 1000 − local-preference to eBGP peers).
pub fn speaker_cfg(local_as: u32) -> SpeakerConfig {
    SpeakerConfig {
        connect_retry: Duration::from_secs(1),
        ebgp_preference: EbgpPreference::Med { base: 1000 },
        ..SpeakerConfig::new(local_as, LB_V4.parse().unwrap())
    }
}

/// The router as a peer of the speaker.
pub fn peer(name: &str, addr: &str) -> PeerConfig {
    PeerConfig::new(name, addr.parse::<IpAddr>().unwrap(), ROUTER_AS)
}

/// Path of `examples/speaker`, built next to this test binary.
pub fn example_speaker() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join("speaker");
    assert!(
        p.exists(),
        "build it first: cargo build -p bgp --examples ({})",
        p.display()
    );
    p
}

/// Enters `lb` (this thread, for good) and runs `f` on a fresh two-thread runtime there,
/// so the speaker's sockets live in `lb`.
pub fn run_in_lb<F: std::future::Future<Output = ()>>(lab: &Lab, f: impl FnOnce() -> F) {
    lab.lb.enter().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f());
}

/// [`run_in_lb`] with the router shared for `blocking` calls.
pub fn in_lb<F: std::future::Future<Output = ()>>(
    lab: &Lab,
    router: Router,
    f: impl FnOnce(Arc<Router>) -> F,
) {
    let r = Arc::new(router);
    run_in_lb(lab, || f(r));
}

/// Waits, off the runtime's threads, until `cond` holds at the router (polled every 50 ms),
/// at most `timeout`.
pub async fn until(
    r: &Arc<Router>,
    timeout: Duration,
    cond: impl Fn(&Router) -> bool + Send + 'static,
) -> bool {
    let r = r.clone();
    blocking(move || r.wait(timeout, cond)).await
}

/// A router query, run off the runtime's threads.
pub async fn ask<T: Send + 'static>(
    r: &Arc<Router>,
    f: impl FnOnce(&Router) -> T + Send + 'static,
) -> T {
    let r = r.clone();
    blocking(move || f(&r)).await
}

/// The next session event, within `secs` seconds.
pub async fn next_event(ev: &mut UnboundedReceiver<PeerEvent>, secs: u64) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(secs), ev.recv())
        .await
        .unwrap_or_else(|_| panic!("no session event within {secs} s"))
        .expect("event channel closed")
}

/// Waits for the session to come up, at most `secs` seconds.
pub async fn expect_up(ev: &mut UnboundedReceiver<PeerEvent>, secs: u64) {
    let e = next_event(ev, secs).await;
    assert!(matches!(e, PeerEvent::Up { .. }), "{e:?}");
}

/// A speaker with `cfg` and `routes` announced, then the router added as `peer` (usually
/// [`peer`]`("r", R_V4)`); returns once the session is up.
pub async fn speaker_up(
    cfg: SpeakerConfig,
    peer: PeerConfig,
    routes: &[(&str, RouteAttrs)],
) -> (Speaker, UnboundedReceiver<PeerEvent>) {
    let (sp, mut ev) = Speaker::start(cfg).unwrap();
    sp.announce_many(routes.iter().map(|(p, a)| (p.parse().unwrap(), a.clone())));
    sp.add_peer(peer).unwrap();
    expect_up(&mut ev, 20).await;
    (sp, ev)
}

/// Runs a blocking router query off the runtime's threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
