//! VIP desc files: the per-VIP quorum summary keepalived's quorum handler writes and
//! the arbiter reads.
//!
//! ```json
//! {"active": 1, "total": 2, "announce": false, "local-preference": 100,
//!  "ports": {"80": "up", "443": "down"}}
//! ```
//!
//! `ports` holds the last quorum state of each virtual server (port; 0 for a
//! fwmark/all-ports service) so that a later call can recount. Readers ignore fields
//! they do not know; files without `ports` (written by the original Python tool) read
//! as having no per-port state.
//!
//! Writers hold an exclusive `flock` on `<path>.lock` ([`DescLock`]) for the whole
//! read-modify-write and replace the file atomically ([`write_atomic`]): temp file in
//! the same directory, `fsync`, `rename`, `fsync` of the directory. A reader therefore
//! sees the old or the new file, never a torn one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Local-preference used when no quorum call has given one.
pub const DEFAULT_LOCAL_PREFERENCE: u32 = 100;

/// Desc files larger than this are refused as corrupt (a real one is < 1 KiB).
pub const MAX_DESC_BYTES: u64 = 256 * 1024;

/// Quorum state of one virtual server (port) of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// Last quorum call was `up`.
    Up,
    /// Last quorum call was `down`.
    Down,
}

/// The contents of one VIP desc file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desc {
    /// Virtual servers (ports) of the VIP whose last quorum call was `up`.
    pub active: u32,
    /// Virtual servers (ports) of the VIP known so far.
    pub total: u32,
    /// True exactly when `active == total`: the VIP should be announced.
    pub announce: bool,
    /// BGP LOCAL_PREF for the VIP.
    #[serde(rename = "local-preference", default = "default_local_preference")]
    pub local_preference: u32,
    /// Per-port quorum state (port 0 = fwmark/all-ports service).
    #[serde(default)]
    pub ports: BTreeMap<u16, PortState>,
    /// BGP communities of the VIP's route (`65000:100`, `65000:1:2`, `no-export`), from the
    /// quorum argument's `c-` parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

fn default_local_preference() -> u32 {
    DEFAULT_LOCAL_PREFERENCE
}

impl Default for Desc {
    fn default() -> Self {
        Self {
            active: 0,
            total: 0,
            announce: false,
            local_preference: DEFAULT_LOCAL_PREFERENCE,
            ports: BTreeMap::new(),
            communities: Vec::new(),
        }
    }
}

/// Errors reading, locking or writing desc files.
#[derive(Debug, thiserror::Error)]
pub enum DescError {
    /// The desc file does not exist.
    #[error("desc file {0} does not exist")]
    NotFound(PathBuf),
    /// An I/O error on the file, its lock or its directory.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_DESC_BYTES`].
    #[error("desc file {path} is {size} bytes, more than the {MAX_DESC_BYTES} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not valid desc JSON (corrupt, truncated, wrong types).
    #[error("desc file {path} is not valid: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said (line and column included).
        #[source]
        source: serde_json::Error,
    },
    /// The JSON parses but says more ports are active than exist.
    #[error("desc file {path} says active {active} > total {total}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// `active` as read.
        active: u32,
        /// `total` as read.
        total: u32,
    },
    /// Another process held the lock longer than the caller would wait.
    #[error("lock {path} still held by another process after {waited:?}")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// The desc could not be serialised (not expected for this plain structure).
    #[error("cannot encode desc: {0}")]
    Encode(#[source] serde_json::Error),
    /// The path has no file name or no parent directory.
    #[error("desc path {0} has no parent directory or file name")]
    BadPath(PathBuf),
}

impl DescError {
    /// True when the file is simply absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// True when the file exists but its contents are unusable.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. } | Self::TooLarge { .. } | Self::Inconsistent { .. }
        )
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DescError + 'a {
    move |source| DescError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Desc {
    /// Parse desc JSON; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, DescError> {
        let desc: Desc = serde_json::from_slice(bytes).map_err(|source| DescError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        if desc.active > desc.total {
            return Err(DescError::Inconsistent {
                path: path.to_path_buf(),
                active: desc.active,
                total: desc.total,
            });
        }
        Ok(desc)
    }

    /// Read and parse a desc file (no lock needed: writers replace atomically).
    pub fn read(path: &Path) -> Result<Self, DescError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DescError::NotFound(path.to_path_buf()))
            }
            Err(e) => return Err(io_err("open", path)(e)),
        };
        read_open(file, path)
    }

    /// Serialise as the file's bytes (one line of JSON and a newline).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DescError> {
        let mut out = serde_json::to_vec(self).map_err(DescError::Encode)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Recompute `active`, `total` and `announce` from `ports` and the ports the
    /// service mapping knows for the VIP: `total` = |known ∪ ports seen|, `active` =
    /// ports whose state is up, `announce` = `active == total`.
    pub fn recount(&mut self, known_ports: &std::collections::BTreeSet<u16>) {
        let extra_known = known_ports
            .iter()
            .filter(|p| !self.ports.contains_key(p))
            .count();
        let total = self.ports.len() + extra_known;
        let active = self.ports.values().filter(|s| **s == PortState::Up).count();
        self.total = u32::try_from(total).unwrap_or(u32::MAX);
        self.active = u32::try_from(active).unwrap_or(u32::MAX);
        self.announce = self.active == self.total;
    }
}

/// Parse an already opened desc file, refusing oversized ones.
pub(crate) fn read_open(file: File, path: &Path) -> Result<Desc, DescError> {
    let size = file.metadata().map_err(io_err("stat", path))?.len();
    if size > MAX_DESC_BYTES {
        return Err(DescError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_DESC_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    Desc::parse(&buf, path)
}

/// `<path>.lock`, the lock file of a desc file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// An exclusive lock on a desc file, held until dropped.
///
/// It is an `flock(LOCK_EX)` on `<path>.lock` (never on the desc itself, which is
/// replaced by rename and so changes inode). The lock file is created when missing
/// and left in place.
#[derive(Debug)]
pub struct DescLock {
    _file: File,
}

impl DescLock {
    /// Block until the exclusive lock for `path` is ours.
    pub fn acquire(path: &Path) -> Result<Self, DescError> {
        let (file, lp) = open_lock(path)?;
        file.lock().map_err(io_err("lock", &lp))?;
        Ok(Self { _file: file })
    }

    /// Like [`acquire`](Self::acquire), but give up after `timeout` so a stuck
    /// holder cannot hang every quorum handler behind it. Uncontended, this is one
    /// `flock`; contended, the blocking `flock` runs on a helper thread so waiters are
    /// woken in kernel order rather than by polling.
    pub fn acquire_timeout(path: &Path, timeout: std::time::Duration) -> Result<Self, DescError> {
        let (file, lp) = open_lock(path)?;
        match file.try_lock() {
            Ok(()) => return Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lp)(e)),
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("desc-lock".into())
            .spawn(move || {
                let res = file.lock().map(|()| file);
                // If the waiter gave up, the file (and the lock) is dropped here.
                let _ = tx.send(res);
            })
            .map_err(io_err("spawn lock waiter for", &lp))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(file)) => Ok(Self { _file: file }),
            Ok(Err(e)) => Err(io_err("lock", &lp)(e)),
            Err(_) => Err(DescError::LockTimeout {
                path: lp,
                waited: timeout,
            }),
        }
    }
}

/// Opens (creating) the lock file of `path`; a symlink there is refused, not followed.
fn open_lock(path: &Path) -> Result<(File, PathBuf), DescError> {
    let lp = lock_path(path);
    let file = config::atomic_file::open_lock(&lp).map_err(io_err("open lock", &lp))?;
    Ok((file, lp))
}

/// Replace `path` with `desc` atomically and durably (mode 0644; see
/// [`config::atomic_file`]). The caller should hold the [`DescLock`].
pub fn write_atomic(path: &Path, desc: &Desc) -> Result<(), DescError> {
    if path.file_name().is_none() {
        return Err(DescError::BadPath(path.to_path_buf()));
    }
    config::atomic_file::replace(path, &desc.to_bytes()?, 0o644).map_err(io_err("replace", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    #[test]
    fn reads_the_design_example_and_ignores_unknown_fields() {
        let raw = br#"{"active": 2, "total": 2, "announce": true, "local-preference": 100, "vendor": {"x": 1}}"#;
        let d = Desc::parse(raw, Path::new("x")).unwrap();
        assert_eq!(d.active, 2);
        assert_eq!(d.total, 2);
        assert!(d.announce);
        assert_eq!(d.local_preference, 100);
        assert!(d.ports.is_empty());
    }

    #[test]
    fn round_trips_with_ports() {
        let raw = br#"{"active":1,"total":2,"announce":false,"local-preference":150,"ports":{"80":"up","443":"down"}}"#;
        let d = Desc::parse(raw, Path::new("x")).unwrap();
        assert_eq!(d.ports.get(&80), Some(&PortState::Up));
        assert_eq!(d.ports.get(&443), Some(&PortState::Down));
        let again = Desc::parse(&d.to_bytes().unwrap(), Path::new("x")).unwrap();
        assert_eq!(again, d);
        let text = String::from_utf8(d.to_bytes().unwrap()).unwrap();
        assert!(text.contains(r#""local-preference":150"#), "{text}");
        assert!(
            text.contains(r#""ports":{"80":"up","443":"down"}"#),
            "{text}"
        );
    }

    #[test]
    fn corrupt_inputs_are_typed_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            br#"{"active": 1, "total": 2, "announce": tr"#,
            br#"{"active": "1", "total": 2, "announce": false}"#,
            br#"{"active": 1, "total": 1, "announce": true, "ports": {"http": "up"}}"#,
            br#"{"active": 1, "total": 1, "announce": true, "ports": {"80": "sideways"}}"#,
            br#"{"active": -1, "total": 1, "announce": true}"#,
            b"\xff\xfe garbage",
            br#"[1,2,3]"#,
        ];
        for raw in cases {
            let err = Desc::parse(raw, Path::new("f")).unwrap_err();
            assert!(err.is_corrupt(), "{err}");
        }
        let err = Desc::parse(
            br#"{"active": 3, "total": 2, "announce": false}"#,
            Path::new("f"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            DescError::Inconsistent {
                active: 3,
                total: 2,
                ..
            }
        ));
    }

    #[test]
    fn recount_unions_known_and_seen_ports() {
        let mut d = Desc::default();
        d.ports.insert(80, PortState::Up);
        d.ports.insert(8080, PortState::Up);
        d.recount(&BTreeSet::from([80, 443]));
        assert_eq!((d.active, d.total, d.announce), (2, 3, false));
        d.ports.insert(443, PortState::Up);
        d.recount(&BTreeSet::from([80, 443]));
        assert_eq!((d.active, d.total, d.announce), (3, 3, true));
    }

    #[test]
    fn write_read_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keepalived-192.0.2.1-desc.json");
        assert!(Desc::read(&path).unwrap_err().is_not_found());
        let mut d = Desc::default();
        d.ports.insert(0, PortState::Up);
        d.recount(&BTreeSet::new());
        {
            let _lock = DescLock::acquire(&path).unwrap();
            write_atomic(&path, &d).unwrap();
        }
        assert_eq!(Desc::read(&path).unwrap(), d);
        assert!(lock_path(&path).exists());
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        fs::write(&path, vec![b' '; (MAX_DESC_BYTES + 1) as usize]).unwrap();
        assert!(matches!(Desc::read(&path), Err(DescError::TooLarge { .. })));
    }

    #[test]
    fn lock_wait_is_bounded_and_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let held = DescLock::acquire(&path).unwrap();
        let t = std::time::Duration::from_millis(100);
        let started = std::time::Instant::now();
        let err = DescLock::acquire_timeout(&path, t).unwrap_err();
        assert!(matches!(err, DescError::LockTimeout { .. }), "{err}");
        assert!(started.elapsed() >= t);
        // Released while a waiter blocks: the waiter gets it.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(held);
        });
        let got = DescLock::acquire_timeout(&path, std::time::Duration::from_secs(10));
        assert!(got.is_ok());
        releaser.join().unwrap();
        drop(got);
        // The abandoned waiter thread from the first attempt must not keep the lock.
        let mut free = false;
        for _ in 0..100 {
            if DescLock::acquire_timeout(&path, std::time::Duration::from_millis(10)).is_ok() {
                free = true;
                break;
            }
        }
        assert!(free);
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let held = DescLock::acquire(&path).unwrap();
        let other = File::options().write(true).open(lock_path(&path)).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
