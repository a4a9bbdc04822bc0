//! A cache of "which ports does the service mapping know for each VIP", so the
//! quorum handler need not parse every keepalived config on every call.
//!
//! Building the mapping means globbing and parsing all keepalived files (tens of ms
//! for a few hundred files); the quorum handler must finish in a few ms. So the
//! result is kept in one small JSON file, `{"VIP": [port, …], …}`:
//!
//! * fresh (mtime younger than `max_age`) → used as is: one read, no glob;
//! * missing, stale or corrupt → rebuilt under an exclusive lock on `<path>.lock`,
//!   so a burst of 100 quorum calls rebuilds once and the rest wait and reuse it;
//! * rebuild failed → the stale copy is used if there is one, and the caller is told.
//!
//! The arbiter daemon, which rebuilds the mapping every `mapping_update_interval`
//! anyway, can refresh the file with [`PortsCache::store`] so the quorum handler
//! never pays for a rebuild while the daemon runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::desc::DescLock;
use crate::quorum::LOCK_TIMEOUT;

/// VIP → ports the service mapping names for it (over every balancer).
pub type KnownPorts = BTreeMap<IpAddr, BTreeSet<u16>>;

/// Cache files larger than this are treated as corrupt.
const MAX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Where the ports came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh cache file.
    Cached,
    /// Built now (and stored, unless storing failed).
    Built,
    /// The build failed; this is the last stored copy, older than `max_age`.
    Stale,
}

/// Errors of the ports cache.
#[derive(Debug, thiserror::Error)]
pub enum PortsCacheError<E: std::error::Error + 'static> {
    /// The build failed and there is no usable stored copy.
    #[error("cannot build the service mapping: {0}")]
    Build(#[source] E),
    /// The rebuild lock could not be taken (in time).
    #[error(transparent)]
    Lock(crate::desc::DescError),
    /// The cache file could not be used.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The on-disk known-ports cache.
#[derive(Debug, Clone)]
pub struct PortsCache {
    path: PathBuf,
    max_age: Duration,
}

impl PortsCache {
    /// A cache at `path`, trusted for `max_age` after it was written.
    pub fn new(path: impl Into<PathBuf>, max_age: Duration) -> Self {
        Self {
            path: path.into(),
            max_age,
        }
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The known ports, from the cache when fresh, else from `build` (run at most
    /// once across concurrent callers) and stored for the next callers.
    pub fn load_or_build<E: std::error::Error + 'static>(
        &self,
        build: impl FnOnce() -> Result<KnownPorts, E>,
    ) -> Result<(KnownPorts, Source), PortsCacheError<E>> {
        if let Some(ports) = self.read(true) {
            return Ok((ports, Source::Cached));
        }
        // Bounded like every quorum-path lock: a stuck holder costs the caller
        // LOCK_TIMEOUT, then the count falls back to the ports reported so far.
        let _lock =
            DescLock::acquire_timeout(&self.path, LOCK_TIMEOUT).map_err(PortsCacheError::Lock)?;
        // Someone else may have rebuilt it while we waited.
        if let Some(ports) = self.read(true) {
            return Ok((ports, Source::Cached));
        }
        match build() {
            Ok(ports) => {
                if let Err(e) = self.store(&ports) {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot store the known-ports cache");
                }
                Ok((ports, Source::Built))
            }
            Err(e) => match self.read(false) {
                Some(ports) => {
                    tracing::warn!(error = %e, "service mapping build failed; using the stale known-ports cache");
                    Ok((ports, Source::Stale))
                }
                None => Err(PortsCacheError::Build(e)),
            },
        }
    }

    /// The stored ports however old, if the file exists and parses.
    pub fn load(&self) -> Option<KnownPorts> {
        self.read(false)
    }

    /// Replace the cache file atomically and durably with `ports` (see
    /// [`config::atomic_file`]).
    pub fn store(&self, ports: &KnownPorts) -> io::Result<()> {
        let bytes = serde_json::to_vec(ports).map_err(io::Error::other)?;
        config::atomic_file::replace(&self.path, &bytes, 0o644)
    }

    /// The stored ports, if the file exists, parses and (when `fresh_only`) is
    /// younger than `max_age`. A file dated in the future counts as stale.
    fn read(&self, fresh_only: bool) -> Option<KnownPorts> {
        let file = File::open(&self.path).ok()?;
        let meta = file.metadata().ok()?;
        if fresh_only {
            let age = meta.modified().ok()?.elapsed().ok()?;
            if age > self.max_age {
                return None;
            }
        }
        if meta.len() > MAX_CACHE_BYTES {
            return None;
        }
        let mut buf = Vec::new();
        file.take(MAX_CACHE_BYTES).read_to_end(&mut buf).ok()?;
        match serde_json::from_slice(&buf) {
            Ok(ports) => Some(ports),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "corrupt known-ports cache ignored");
                None
            }
        }
    }
}

/// File name of the known-ports cache, kept in the desc files' directory.
pub const KNOWN_PORTS_FILE: &str = "ipvs-sync-known-ports.json";

/// The known-ports cache of a node: next to the desc files, trusted for
/// `mapping_update_interval` (the arbiter daemon refreshes it at that cadence with
/// [`store_known_ports`]).
pub fn ports_cache(cfg: &config::Config) -> PortsCache {
    let any = cfg.desc_path(IpAddr::from([0, 0, 0, 0]));
    let dir = any.parent().unwrap_or_else(|| Path::new("/var/run"));
    PortsCache::new(dir.join(KNOWN_PORTS_FILE), cfg.main.mapping_update_interval)
}

/// VIP → ports over every balancer of a built mapping.
pub fn known_ports_of(mapping: &config::mapping::PortMapping) -> KnownPorts {
    let mut out = KnownPorts::new();
    for vips in mapping.values() {
        for (vip, ports) in vips {
            out.entry(*vip).or_default().extend(ports.iter().copied());
        }
    }
    out
}

/// For the arbiter daemon: refresh the quorum handler's known-ports cache from the
/// mapping it has just built.
pub fn store_known_ports(
    cfg: &config::Config,
    mapping: &config::mapping::PortMapping,
) -> io::Result<()> {
    ports_cache(cfg).store(&known_ports_of(mapping))
}

/// The ports the keepalived configs (`service_mapping_wildcard`) name for `vip`, over
/// every balancer, through the known-ports cache. If the configs cannot be read and
/// nothing is cached (or the cache's lock stays held), the count falls back to the ports
/// already reported for the VIP, and the reason is logged.
pub fn known_ports(cfg: &config::Config, vip: IpAddr) -> BTreeSet<u16> {
    let build = || {
        config::mapping::build(&cfg.main.service_mapping_wildcard)
            .map(|report| known_ports_of(&report.ports))
    };
    match ports_cache(cfg).load_or_build(build) {
        Ok((ports, _source)) => ports.get(&vip).cloned().unwrap_or_default(),
        Err(e) => {
            tracing::warn!(%vip, error = %e,
                "cannot read the keepalived configs; counting only the ports reported so far");
            BTreeSet::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    fn sample() -> KnownPorts {
        KnownPorts::from([
            ("192.0.2.1".parse().unwrap(), BTreeSet::from([80, 443])),
            ("2001:db8::1".parse().unwrap(), BTreeSet::from([0])),
        ])
    }

    #[test]
    fn builds_once_then_reads_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PortsCache::new(dir.path().join("ports.json"), Duration::from_secs(60));
        let builds = AtomicUsize::new(0);
        let build = || {
            builds.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Boom>(sample())
        };
        assert_eq!(
            cache.load_or_build(build).unwrap(),
            (sample(), Source::Built)
        );
        assert_eq!(
            cache.load_or_build(build).unwrap(),
            (sample(), Source::Cached)
        );
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        let text = fs::read_to_string(cache.path()).unwrap();
        assert_eq!(text, r#"{"192.0.2.1":[80,443],"2001:db8::1":[0]}"#);
    }

    #[test]
    fn stale_cache_is_rebuilt_and_used_when_the_build_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PortsCache::new(dir.path().join("ports.json"), Duration::ZERO);
        cache.store(&sample()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut other = sample();
        other.insert("198.51.100.1".parse().unwrap(), BTreeSet::from([53]));
        let (got, src) = cache
            .load_or_build(|| Ok::<_, Boom>(other.clone()))
            .unwrap();
        assert_eq!((got, src), (other.clone(), Source::Built));
        std::thread::sleep(Duration::from_millis(5));
        let (got, src) = cache.load_or_build(|| Err(Boom)).unwrap();
        assert_eq!((got, src), (other, Source::Stale));
    }

    #[test]
    fn no_cache_and_failed_build_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PortsCache::new(dir.path().join("ports.json"), Duration::from_secs(60));
        assert!(matches!(
            cache.load_or_build(|| Err(Boom)),
            Err(PortsCacheError::Build(Boom))
        ));
        fs::write(cache.path(), b"{not json").unwrap();
        assert!(matches!(
            cache.load_or_build(|| Err(Boom)),
            Err(PortsCacheError::Build(Boom))
        ));
    }

    #[test]
    fn concurrent_callers_build_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(PortsCache::new(
            dir.path().join("ports.json"),
            Duration::from_secs(60),
        ));
        let builds = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (cache, builds) = (cache.clone(), builds.clone());
                std::thread::spawn(move || {
                    cache
                        .load_or_build(|| {
                            builds.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<_, Boom>(sample())
                        })
                        .unwrap()
                        .0
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), sample());
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    fn cfg(dir: &Path) -> config::Config {
        let text = format!(
            "[main]\namqp_server = amqp://ipvs@127.0.0.1:5672/\nhostname = arbiter.example.net\n\
             vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
             service_mapping_wildcard = {d}/lbs/*/*/*.conf\n",
            d = dir.display()
        );
        config::Config::from_strs(&text, None).unwrap()
    }

    #[test]
    fn known_ports_come_from_the_cache_until_it_is_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("lbs/lb1.example.net/web");
        std::fs::create_dir_all(&conf).unwrap();
        let vs = |port: u16| format!("virtual_server 2001:db8::10 {port} {{\n  protocol TCP\n}}\n");
        std::fs::write(conf.join("web.conf"), vs(80)).unwrap();
        let cfg = cfg(dir.path());
        let vip: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!(known_ports(&cfg, vip), BTreeSet::from([80]));
        assert!(dir.path().join(KNOWN_PORTS_FILE).exists());

        std::fs::write(conf.join("web.conf"), vs(80) + &vs(443)).unwrap();
        assert_eq!(
            known_ports(&cfg, vip),
            BTreeSet::from([80]),
            "fresh cache is trusted"
        );

        let report = config::mapping::build(&cfg.main.service_mapping_wildcard).unwrap();
        store_known_ports(&cfg, &report.ports).unwrap();
        assert_eq!(known_ports(&cfg, vip), BTreeSet::from([80, 443]));
    }
}
