//! Quorum up/down cycles on a few VIPs, in a thread of their own, each half waited for at the
//! router; meanwhile every look at the router also counts the paths of a VIP that stays up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use labkit::fleet::{host_prefix, QuorumHandler};
use labkit::GobgpApi;

/// How long one half of a cycle (every VIP down, or every VIP up) may take at the router.
pub const PHASE_WAIT: Duration = Duration::from_secs(90);
/// How often the router is looked at.
const POLL: Duration = Duration::from_millis(100);

/// One cycle: every VIP down (withdrawn at the router), then up (one path per balancer).
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    /// Just before the first `quorum down`.
    pub started: Instant,
    /// When the router held none of the VIPs.
    pub withdrawn: Instant,
    /// When the router held every VIP again, one path per balancer.
    pub done: Instant,
}

/// What the cycles saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Every finished cycle, in order.
    pub cycles: Vec<Cycle>,
    /// The first thing that went wrong (the cycles stop there).
    pub failure: Option<String>,
    /// Looks at the router.
    pub looks: u64,
    /// Fewest paths the steady VIP had in a look.
    pub steady_min: Option<usize>,
    /// Looks where the steady VIP lacked a path or had a neighbor twice (the first ten).
    pub steady_bad: Vec<String>,
}

/// The running cycles; [`Cycler::stop`] ends them after the cycle under way.
pub struct Cycler {
    report: Arc<Mutex<Report>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The neighbors of each prefix's paths at the router.
fn look(router: &GobgpApi) -> Result<BTreeMap<String, Vec<Option<String>>>, String> {
    let paths = router.paths("ipv4").map_err(|e| e.to_string())?;
    let mut by_prefix: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for p in paths {
        by_prefix.entry(p.prefix).or_default().push(p.neighbor);
    }
    Ok(by_prefix)
}

/// Whether `neighbors` are `want` paths from as many neighbors.
fn exactly(neighbors: Option<&Vec<Option<String>>>, want: usize) -> bool {
    let n = neighbors.map_or(&[][..], Vec::as_slice);
    n.len() == want && n.iter().collect::<BTreeSet<_>>().len() == want
}

impl Cycler {
    /// Starts cycling `vips` (`quorum down` then `up`, port 80, LOCAL_PREF 100) against a
    /// fleet of `balancers` balancers, watching `router` and the steady VIP `steady`.
    pub fn start(
        quorum: QuorumHandler,
        router: GobgpApi,
        vips: Vec<IpAddr>,
        steady: IpAddr,
        balancers: usize,
    ) -> Cycler {
        let report = Arc::new(Mutex::new(Report::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (report.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let run = Run {
                quorum,
                router,
                vips,
                steady: host_prefix(&steady),
                balancers,
                report: r,
            };
            while !s.load(Ordering::Relaxed) {
                match run.cycle() {
                    Ok(c) => run.report.lock().unwrap().cycles.push(c),
                    Err(e) => {
                        run.report.lock().unwrap().failure = Some(e);
                        return;
                    }
                }
            }
        });
        Cycler {
            report,
            stop,
            thread: Some(thread),
        }
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.report.lock().unwrap().failure.clone()
    }

    /// The first cycle that started at or after `t`, once it has finished.
    pub fn done_since(&self, t: Instant) -> Option<Cycle> {
        let r = self.report.lock().unwrap();
        r.cycles.iter().find(|c| c.started >= t).copied()
    }

    /// Stops after the cycle under way (so every VIP ends up) and returns what was seen.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }
}

impl Drop for Cycler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cycling thread's state.
struct Run {
    quorum: QuorumHandler,
    router: GobgpApi,
    vips: Vec<IpAddr>,
    steady: String,
    balancers: usize,
    report: Arc<Mutex<Report>>,
}

impl Run {
    fn cycle(&self) -> Result<Cycle, String> {
        let started = Instant::now();
        self.half("down", 0)?;
        let withdrawn = Instant::now();
        self.half("up", self.balancers)?;
        Ok(Cycle {
            started,
            withdrawn,
            done: Instant::now(),
        })
    }

    /// `quorum DIR` for every VIP, then waits until the router has `want` paths for each.
    fn half(&self, dir: &str, want: usize) -> Result<(), String> {
        for v in &self.vips {
            self.quorum
                .run(dir, &format!("{v},b-100,80"))
                .map_err(|e| e.to_string())?;
        }
        self.wait(dir, want)
    }

    /// Looks at the router every [`POLL`] until every VIP has `want` paths from as many
    /// neighbors, for at most [`PHASE_WAIT`].
    fn wait(&self, dir: &str, want: usize) -> Result<(), String> {
        let deadline = Instant::now() + PHASE_WAIT;
        loop {
            let seen = look(&self.router);
            if let Ok(rib) = &seen {
                self.note_steady(rib);
                if self
                    .vips
                    .iter()
                    .all(|v| exactly(rib.get(&host_prefix(v)), want))
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "quorum {dir} of {:?} not at the router ({want} paths each) after \
                     {PHASE_WAIT:?}; last look: {seen:?}",
                    self.vips
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn note_steady(&self, rib: &BTreeMap<String, Vec<Option<String>>>) {
        let paths = rib.get(&self.steady);
        let n = paths.map_or(0, Vec::len);
        let mut r = self.report.lock().unwrap();
        r.looks += 1;
        r.steady_min = Some(r.steady_min.map_or(n, |m| m.min(n)));
        if !exactly(paths, self.balancers) && r.steady_bad.len() < 10 {
            r.steady_bad.push(format!("{paths:?}"));
        }
    }
}
