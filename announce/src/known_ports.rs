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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::desc::lock_path;

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
    /// The cache file or its lock could not be used.
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
        let lp = lock_path(&self.path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lp)
            .map_err(|source| PortsCacheError::Io {
                op: "open lock",
                path: lp.clone(),
                source,
            })?;
        lock.lock().map_err(|source| PortsCacheError::Io {
            op: "lock",
            path: lp,
            source,
        })?;
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

    /// Replace the cache file atomically with `ports` (temp file, fsync, rename).
    pub fn store(&self, ports: &KnownPorts) -> io::Result<()> {
        let bytes = serde_json::to_vec(ports).map_err(io::Error::other)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
