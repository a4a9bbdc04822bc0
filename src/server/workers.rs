//! The arbiter's slow work, off its loop: reading desc files, dumping the kernel's IPVS table,
//! rebuilding the mapping from the keepalived configs. Each runs on a thread of its own and
//! reports to the loop through one channel, so a `quorum down` hand-off or a balancer's
//! message never waits behind a dump, a scan or a lock.
//!
//! ```text
//!  loop ──DescJob (scan, one VIP, paths)──▶ desc thread (DescCache + inotify) ──┐
//!  tree task (every TREE_POLL+) ▶ spawn_blocking(dump) ─────────────────────────┼─▶ Report ─▶ loop
//!  loop ──rebuild──▶ spawn_blocking(mapping, known ports, desc ports forgotten) ┘
//! ```
//!
//! Desc reads of one VIP (a quorum hand-off) go through the same thread as the scans, so the
//! loop sees every file's states in the order they were read; a full scan is done in slices
//! and a VIP asked for meanwhile is read between two slices.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use announce::known_ports::KnownPorts;
use announce::{DescCache, DescUpdate, DescWatch, Seen};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Every desc file is looked at least this often, whatever inotify reports: changes it
/// never reports (NFS, a desc file that is a symlink elsewhere) are seen within this long.
pub const DESC_FULL_SCAN: Duration = Duration::from_secs(10);

/// Files of a full scan read between two looks at the job queue.
const SCAN_SLICE: usize = 256;

/// What a worker reports to the loop.
#[derive(Debug)]
pub enum Report {
    /// Desc files read.
    Descs(DescScan),
    /// The kernel's IPVS table, or why it could not be read.
    Tree(TreeDump),
    /// The mapping rebuilt, or why not.
    Mapping(MappingBuilt),
}

/// The outcome of a desc look.
#[derive(Debug, Default)]
pub struct DescScan {
    /// VIPs whose desc state changed.
    pub updates: Vec<DescUpdate>,
    /// Every file was looked at.
    pub full: bool,
    /// The VIP a hand-off asked for, if this look was for one.
    pub asked: Option<IpAddr>,
    /// This look followed a new set of paths (a new mapping): every file of it was read.
    pub paths_set: bool,
    /// Directories watched and not watched, after a change of paths.
    pub watch: Option<(usize, usize)>,
}

/// Jobs of the desc thread.
#[derive(Debug)]
pub enum DescJob {
    /// Look at what inotify saw change (everything when it cannot tell, or every
    /// [`DESC_FULL_SCAN`]).
    Scan,
    /// Look at every file now.
    FullScan,
    /// Look at this VIP's file now (a quorum hand-off).
    Vip(IpAddr),
    /// Read this VIP's file afresh and report its state even if unchanged.
    Reread(IpAddr),
    /// The VIPs and their files changed (a new mapping).
    Paths(Vec<(IpAddr, PathBuf)>),
}

/// Starts the desc thread. Jobs go in through the returned sender; reports come out on `out`.
pub fn spawn_descs(
    out: mpsc::UnboundedSender<Report>,
) -> std::io::Result<std_mpsc::Sender<DescJob>> {
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("desc-scan".into())
        .spawn(move || DescThread::new().run(&rx, &out))?;
    Ok(tx)
}

struct DescThread {
    cache: DescCache,
    watch: Option<DescWatch>,
    full_scan: Option<Instant>,
}

impl DescThread {
    fn new() -> Self {
        DescThread {
            cache: DescCache::new(),
            watch: DescWatch::new()
                .inspect_err(|e| warn!(error = %e, "desc files are polled without inotify"))
                .ok(),
            full_scan: None,
        }
    }

    fn run(mut self, rx: &std_mpsc::Receiver<DescJob>, out: &mpsc::UnboundedSender<Report>) {
        let mut deferred = Vec::new();
        while let Ok(job) = rx.recv() {
            let report = match job {
                DescJob::Vip(vip) => self.one(vip),
                DescJob::Reread(vip) => {
                    self.cache.forget(vip);
                    self.one(vip)
                }
                DescJob::Paths(paths) => self.set_paths(paths),
                DescJob::Scan => {
                    // Scans asked for while this thread was busy are one scan.
                    self.scan(false, rx, out, &mut deferred)
                }
                DescJob::FullScan => self.scan(true, rx, out, &mut deferred),
            };
            if out.send(Report::Descs(report)).is_err() {
                return;
            }
            for job in deferred.drain(..) {
                if let DescJob::Paths(p) = job {
                    let r = self.set_paths(p);
                    if out.send(Report::Descs(r)).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn one(&mut self, vip: IpAddr) -> DescScan {
        let paths: Vec<PathBuf> = self.cache.path_of(vip).into_iter().collect();
        DescScan {
            updates: self.cache.refresh_paths(&paths),
            asked: Some(vip),
            ..DescScan::default()
        }
    }

    fn set_paths(&mut self, paths: Vec<(IpAddr, PathBuf)>) -> DescScan {
        self.cache.set_paths(paths);
        let mut watch = None;
        if let Some(w) = self.watch.as_mut() {
            w.set_dirs(&self.cache.dirs());
            watch = Some((w.watched(), w.unwatched()));
        }
        // New VIPs start unknown: read everything now.
        let mut scan = self.full();
        scan.watch = watch;
        scan.paths_set = true;
        scan
    }

    fn full(&mut self) -> DescScan {
        self.full_scan = Some(Instant::now());
        DescScan {
            updates: self.cache.refresh(),
            full: true,
            ..DescScan::default()
        }
    }

    /// A scan; a full one is read in slices, and VIPs asked for meanwhile are read (and
    /// reported) between two slices.
    fn scan(
        &mut self,
        force_full: bool,
        rx: &std_mpsc::Receiver<DescJob>,
        out: &mpsc::UnboundedSender<Report>,
        deferred: &mut Vec<DescJob>,
    ) -> DescScan {
        let seen = self
            .watch
            .as_mut()
            .map_or(Seen::Everything, DescWatch::take);
        let due = force_full || self.full_scan.is_none_or(|t| t.elapsed() >= DESC_FULL_SCAN);
        let paths = match seen {
            Seen::Paths(p) if !due => {
                let p: Vec<PathBuf> = p.into_iter().collect();
                return DescScan {
                    updates: self.cache.refresh_paths(&p),
                    ..DescScan::default()
                };
            }
            _ => self.cache.paths(),
        };
        self.full_scan = Some(Instant::now());
        let mut updates = Vec::new();
        for slice in paths.chunks(SCAN_SLICE) {
            updates.extend(self.cache.refresh_paths(slice));
            while let Ok(job) = rx.try_recv() {
                match job {
                    DescJob::Vip(vip) => {
                        let _ = out.send(Report::Descs(self.one(vip)));
                    }
                    DescJob::Reread(vip) => {
                        self.cache.forget(vip);
                        let _ = out.send(Report::Descs(self.one(vip)));
                    }
                    DescJob::Scan | DescJob::FullScan => {}
                    paths @ DescJob::Paths(_) => deferred.push(paths),
                }
            }
        }
        DescScan {
            updates,
            full: true,
            ..DescScan::default()
        }
    }
}

/// How long to wait after a dump that took `took` before the next: `every` from the start
/// of the last dump, and never less than what keeps dumping within `share` percent of the
/// time (`[server] ipvs_dump_share`): `took × (100 − share) / share`. A table dumped in
/// under `share`% of `every` is dumped every `every`; at 50% (the default), a dump of 5,000
/// services × 20 real servers under TCG (1.2 s and more) is followed by a pause as long as
/// itself instead of by the next dump at once.
pub fn pause_after_dump(took: Duration, every: Duration, share: u32) -> Duration {
    let share = u128::from(share.clamp(1, 100));
    // Rounded up, so that the share is kept to the nanosecond.
    let keep = (took.as_nanos() * (100 - share)).div_ceil(share);
    let keep = Duration::from_nanos(u64::try_from(keep).unwrap_or(u64::MAX));
    every.saturating_sub(took).max(keep)
}

/// One look at the kernel's IPVS table.
#[derive(Debug)]
pub struct TreeDump {
    /// The table, or why it could not be read.
    pub tree: Result<ipvs::Tree, String>,
    /// How long the dump took.
    pub took: Duration,
    /// From the start of this dump to the start of the next.
    pub period: Duration,
}

/// Dumps the kernel's IPVS table every `every` (longer for a table whose dump takes more than
/// `share`% of that: [`pause_after_dump`]), off the loop; one dump at a time.
pub fn spawn_tree(
    kernel: Arc<Mutex<ipvs::Ipvs>>,
    every: Duration,
    share: u32,
    out: mpsc::UnboundedSender<Report>,
) {
    tokio::spawn(async move {
        loop {
            let k = kernel.clone();
            let started = Instant::now();
            let dumped = tokio::task::spawn_blocking(move || {
                let mut t = k.lock().unwrap_or_else(|e| e.into_inner()).dump()?;
                t.clear_stats();
                Ok::<_, ipvs::IpvsError>(t)
            })
            .await;
            let took = started.elapsed();
            let tree = match dumped {
                Ok(Ok(t)) => Ok(t),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("dump task failed: {e}")),
            };
            let pause = pause_after_dump(took, every, share);
            let period = took + pause;
            if out
                .send(Report::Tree(TreeDump { tree, took, period }))
                .is_err()
            {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
}

/// A rebuilt mapping and what the rebuild did to desc files.
#[derive(Debug)]
pub struct MappingBuilt {
    /// Balancer → VIPs and firewall mark → VIP, or why the rebuild failed.
    pub mapping: Result<config::mapping::ServiceMapping, String>,
    /// Desc files rewritten because ports left the keepalived configs.
    pub forgotten: Vec<IpAddr>,
    /// Services the build left out, for the log.
    pub skipped: usize,
}

/// Rebuilds the mapping off the loop: the keepalived configs (or the JSON), the known-ports
/// cache of the quorum handler, and the ports gone from the configs forgotten in their desc
/// files (under each file's lock). `known` is what the configs named at the last rebuild.
pub fn spawn_mapping(
    cfg: config::Config,
    known: Arc<Mutex<Option<KnownPorts>>>,
    out: mpsc::UnboundedSender<Report>,
) {
    tokio::task::spawn_blocking(move || {
        let built = build_mapping(&cfg, &known);
        let _ = out.send(Report::Mapping(built));
    });
}

fn build_mapping(cfg: &config::Config, known: &Mutex<Option<KnownPorts>>) -> MappingBuilt {
    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
    if known.is_none() {
        // What the last run's configs named, before this run's cache replaces it.
        *known = Some(
            announce::known_ports::ports_cache(cfg)
                .load()
                .unwrap_or_default(),
        );
    }
    let m = &cfg.main;
    if !m.export_service_mapping_wildcard_to_config {
        return MappingBuilt {
            mapping: config::mapping::read_json(&m.service_mapping_config)
                .map_err(|e| e.to_string()),
            forgotten: Vec::new(),
            skipped: 0,
        };
    }
    let report = match config::mapping::build(&m.service_mapping_wildcard) {
        Ok(r) => r,
        Err(e) => {
            return MappingBuilt {
                mapping: Err(e.to_string()),
                forgotten: Vec::new(),
                skipped: 0,
            }
        }
    };
    for s in &report.skipped {
        warn!(balancer = %s.balancer, file = %s.file.display(), line = s.line, reason = %s.reason,
              "keepalived service left out of the mapping");
    }
    let mapping = report.mapping();
    if let Err(e) = config::mapping::write_json(&m.service_mapping_config, &mapping) {
        warn!(error = %e, "mapping JSON not written");
    }
    if let Err(e) = announce::known_ports::store_known_ports(cfg, &report.ports) {
        warn!(error = %e, "known-ports cache for quorum not written");
    }
    let now = announce::known_ports::known_ports_of(&report.ports);
    let before = known.replace(now.clone()).unwrap_or_default();
    MappingBuilt {
        mapping: Ok(mapping),
        forgotten: forget_gone_ports(cfg, &before, &now),
        skipped: report.skipped.len(),
    }
}

/// Ports the keepalived configs named for a VIP at the last rebuild (or in the last run's
/// cache) and no longer name are forgotten in its desc file, so a virtual server removed
/// while its quorum was down stops holding the VIP back. Returns the VIPs whose desc file
/// was rewritten.
fn forget_gone_ports(cfg: &config::Config, before: &KnownPorts, now: &KnownPorts) -> Vec<IpAddr> {
    let mut rewritten = Vec::new();
    for (vip, ports) in now {
        let Some(was) = before.get(vip) else {
            continue;
        };
        let gone: BTreeSet<u16> = was.difference(ports).copied().collect();
        if gone.is_empty() {
            continue;
        }
        match announce::quorum::forget_ports(&cfg.desc_path(*vip), &gone, ports) {
            Ok(Some((d, was_announce))) => {
                info!(%vip, ?gone, active = d.active, total = d.total, announce = d.announce,
                      was_announce, "ports gone from the keepalived configs forgotten in the desc file");
                rewritten.push(*vip);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(%vip, ?gone, error = %e, "cannot forget ports gone from the keepalived configs");
            }
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_quick_dump_keeps_the_poll_interval() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after_dump(ms(0), SEC, 50), SEC);
        assert_eq!(pause_after_dump(ms(30), SEC, 50), ms(970));
        assert_eq!(pause_after_dump(ms(500), SEC, 50), ms(500));
        assert_eq!(pause_after_dump(ms(200), SEC, 20), ms(800));
    }

    #[test]
    fn a_slow_dump_is_followed_by_a_pause_that_keeps_the_share() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after_dump(ms(600), SEC, 50), ms(600));
        assert_eq!(pause_after_dump(ms(1200), SEC, 50), ms(1200));
        assert_eq!(pause_after_dump(ms(1200), SEC, 25), ms(3600));
        // 100%: the next dump at once, as before the share existed.
        assert_eq!(pause_after_dump(ms(1200), SEC, 100), Duration::ZERO);
        for share in [10, 25, 50, 75, 100] {
            for took in [ms(501), ms(900), ms(1200), ms(5000)] {
                let period = took + pause_after_dump(took, SEC, share);
                assert!(
                    took * 100 <= period * share,
                    "{share}%, {took:?}: period {period:?}"
                );
            }
        }
    }
}
