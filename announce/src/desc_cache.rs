//! The arbiter's view of all VIP desc files, refreshed cheaply.
//!
//! Every `vips_description_update_interval` the arbiter calls
//! [`DescCache::refresh_paths`] with the files a [`DescWatch`](crate::DescWatch) saw
//! change, and [`DescCache::refresh`] (every file) when the watch cannot tell and every
//! few seconds regardless. A look `stat`s the path and re-reads the file only when its
//! (inode, size, mtime) changed since the last look. Writers replace desc files by rename,
//! so every write yields a new inode and is seen even within one mtime tick. The result
//! lists the VIPs whose state actually changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::desc::{read_open, Desc, DescError};

/// What the cache knows about one VIP's desc file.
#[derive(Debug, Clone)]
pub enum DescState {
    /// No file (yet).
    Missing,
    /// A valid desc.
    Valid(Desc),
    /// The file exists but could not be read or parsed.
    Invalid(Arc<DescError>),
}

impl DescState {
    /// The desc, when valid.
    pub fn desc(&self) -> Option<&Desc> {
        match self {
            Self::Valid(d) => Some(d),
            _ => None,
        }
    }

    /// True when the VIP should be announced per its desc.
    pub fn announce(&self) -> bool {
        self.desc().is_some_and(|d| d.announce)
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Missing, Self::Missing) => true,
            (Self::Valid(a), Self::Valid(b)) => a == b,
            (Self::Invalid(a), Self::Invalid(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// One VIP whose desc state changed in a [`DescCache::refresh`].
#[derive(Debug, Clone)]
pub struct DescUpdate {
    /// The VIP.
    pub vip: IpAddr,
    /// Its state before.
    pub old: DescState,
    /// Its state now.
    pub new: DescState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    seen: Option<Fingerprint>,
    state: DescState,
}

/// Cached desc files of a set of VIPs.
#[derive(Debug, Default)]
pub struct DescCache {
    entries: BTreeMap<IpAddr, Entry>,
    /// The VIPs of each path (one, unless a template gives several VIPs one file).
    by_path: BTreeMap<PathBuf, Vec<IpAddr>>,
    parses: u64,
}

impl DescCache {
    /// An empty cache; give it paths with [`set_paths`](Self::set_paths).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the watched set (e.g. after a mapping change). VIPs that stay keep
    /// their cached state when their path is unchanged; new ones start `Missing` and
    /// are read on the next [`refresh`](Self::refresh).
    pub fn set_paths(&mut self, paths: impl IntoIterator<Item = (IpAddr, PathBuf)>) {
        let mut old = std::mem::take(&mut self.entries);
        for (vip, path) in paths {
            let entry = match old.remove(&vip) {
                Some(e) if e.path == path => e,
                _ => Entry {
                    path,
                    seen: None,
                    state: DescState::Missing,
                },
            };
            self.entries.insert(vip, entry);
        }
        self.by_path.clear();
        for (vip, e) in &self.entries {
            self.by_path.entry(e.path.clone()).or_default().push(*vip);
        }
    }

    /// Stat every file, re-parse the changed ones, and return the VIPs whose state
    /// differs from before.
    pub fn refresh(&mut self) -> Vec<DescUpdate> {
        let mut updates = Vec::new();
        for (vip, entry) in &mut self.entries {
            updates.extend(look(*vip, entry, &mut self.parses));
        }
        updates
    }

    /// Like [`refresh`](Self::refresh), for the files among `paths` only (those a
    /// [`DescWatch`](crate::DescWatch) saw change); other paths are ignored.
    pub fn refresh_paths<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Vec<DescUpdate> {
        let mut updates = Vec::new();
        for path in paths {
            let Some(vips) = self.by_path.get(path) else {
                continue;
            };
            for vip in vips {
                if let Some(entry) = self.entries.get_mut(vip) {
                    updates.extend(look(*vip, entry, &mut self.parses));
                }
            }
        }
        updates
    }

    /// Forgets what was read of `vip`'s file, so the next look reports its state as new.
    pub fn forget(&mut self, vip: IpAddr) {
        if let Some(e) = self.entries.get_mut(&vip) {
            e.seen = None;
            e.state = DescState::Missing;
        }
    }

    /// The desc file of `vip`, if it is watched.
    pub fn path_of(&self, vip: IpAddr) -> Option<PathBuf> {
        self.entries.get(&vip).map(|e| e.path.clone())
    }

    /// Every watched path, for a full look done in slices (see
    /// [`refresh_paths`](Self::refresh_paths)).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.by_path.keys().cloned().collect()
    }

    /// The directories holding the watched files.
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        self.entries
            .values()
            .filter_map(|e| e.path.parent())
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
            .collect()
    }

    /// The cached state of `vip`, if it is watched.
    pub fn state(&self, vip: IpAddr) -> Option<&DescState> {
        self.entries.get(&vip).map(|e| &e.state)
    }

    /// The cached desc of `vip`, when valid.
    pub fn get(&self, vip: IpAddr) -> Option<&Desc> {
        self.state(vip).and_then(DescState::desc)
    }

    /// Every watched VIP and its state.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &DescState)> {
        self.entries.iter().map(|(vip, e)| (*vip, &e.state))
    }

    /// How many file parses the cache has done (for metrics and tests).
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// Looks at one file: one `stat(2)` when unchanged. A changed one is opened and its
/// fingerprint taken again from the open file (`fstat`), so the bytes parsed and the
/// fingerprint kept belong to the same inode even if a writer renames meanwhile. Returns
/// the update when the VIP's state differs from before.
fn look(vip: IpAddr, entry: &mut Entry, parses: &mut u64) -> Option<DescUpdate> {
    let (seen, new) = match std::fs::metadata(&entry.path) {
        Ok(meta) if entry.seen == Some(Fingerprint::of(&meta)) => return None,
        Ok(_) => match open(&entry.path) {
            Err(state) => (None, state),
            Ok((_, fp)) if entry.seen == Some(fp) => return None,
            Ok((file, fp)) => {
                *parses += 1;
                let state = match read_open(file, &entry.path) {
                    Ok(d) => DescState::Valid(d),
                    Err(e) => {
                        tracing::warn!(%vip, error = %e, "unusable VIP desc file");
                        DescState::Invalid(Arc::new(e))
                    }
                };
                (Some(fp), state)
            }
        },
        Err(e) => (None, unreadable(e, &entry.path, "stat")),
    };
    entry.seen = seen;
    if entry.state.same(&new) {
        return None;
    }
    let old = std::mem::replace(&mut entry.state, new.clone());
    Some(DescUpdate { vip, old, new })
}

/// Opens a desc file and fingerprints the open inode.
fn open(path: &std::path::Path) -> Result<(File, Fingerprint), DescState> {
    let file = File::open(path).map_err(|e| unreadable(e, path, "open"))?;
    let meta = file.metadata().map_err(|e| unreadable(e, path, "stat"))?;
    Ok((file, Fingerprint::of(&meta)))
}

/// The state of a file that `op` failed on: missing when it is not there, else invalid.
fn unreadable(source: io::Error, path: &std::path::Path, op: &'static str) -> DescState {
    if source.kind() == io::ErrorKind::NotFound {
        return DescState::Missing;
    }
    DescState::Invalid(Arc::new(DescError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::{write_atomic, PortState};
    use std::collections::BTreeSet;

    fn desc(up: &[u16], down: &[u16]) -> Desc {
        let mut d = Desc::default();
        for p in up {
            d.ports.insert(*p, PortState::Up);
        }
        for p in down {
            d.ports.insert(*p, PortState::Down);
        }
        d.recount(&BTreeSet::new());
        d
    }

    #[test]
    fn reparses_only_changed_files_and_reports_changes() {
        let dir = tempfile::tempdir().unwrap();
        let vips: Vec<IpAddr> = (1..=5u8).map(|n| IpAddr::from([192, 0, 2, n])).collect();
        let path = |vip: &IpAddr| dir.path().join(format!("keepalived-{vip}-desc.json"));
        for vip in &vips {
            write_atomic(&path(vip), &desc(&[80], &[])).unwrap();
        }
        let mut cache = DescCache::new();
        cache.set_paths(vips.iter().map(|v| (*v, path(v))));

        let first = cache.refresh();
        assert_eq!(first.len(), 5);
        assert_eq!(cache.parses(), 5);
        assert!(first
            .iter()
            .all(|u| matches!(u.old, DescState::Missing) && u.new.announce()));

        assert!(cache.refresh().is_empty());
        assert_eq!(cache.parses(), 5, "unchanged files must not be re-parsed");

        write_atomic(&path(&vips[2]), &desc(&[80], &[443])).unwrap();
        let second = cache.refresh();
        assert_eq!(cache.parses(), 6);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].vip, vips[2]);
        assert!(second[0].old.announce() && !second[0].new.announce());
        assert_eq!(
            cache.get(vips[2]).map(|d| (d.active, d.total)),
            Some((1, 2))
        );

        // Rewritten with identical content: parsed again, but nothing to report.
        write_atomic(&path(&vips[0]), &desc(&[80], &[])).unwrap();
        assert!(cache.refresh().is_empty());
        assert_eq!(cache.parses(), 7);
    }

    #[test]
    fn corrupt_and_removed_files_are_states_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let vip: IpAddr = "2001:db8::1".parse().unwrap();
        let p = dir.path().join("d.json");
        let mut cache = DescCache::new();
        cache.set_paths([(vip, p.clone())]);
        assert!(cache.refresh().is_empty(), "missing stays missing");

        std::fs::write(&p, b"{\"active\": 1, \"tot").unwrap();
        let u = cache.refresh();
        assert_eq!(u.len(), 1);
        assert!(matches!(&u[0].new, DescState::Invalid(e) if e.is_corrupt()));
        assert!(cache.get(vip).is_none());

        write_atomic(&p, &desc(&[0], &[])).unwrap();
        let u = cache.refresh();
        assert!(u[0].new.announce());

        std::fs::remove_file(&p).unwrap();
        let u = cache.refresh();
        assert!(matches!(u[0].new, DescState::Missing));
    }

    #[test]
    fn a_file_rewritten_in_place_is_seen() {
        // Not every writer renames: `echo … > file` keeps the inode. Size or mtime
        // must still give it away to the stat that guards the re-read.
        let dir = tempfile::tempdir().unwrap();
        let vip: IpAddr = "192.0.2.9".parse().unwrap();
        let p = dir.path().join("d.json");
        let text = |d: &Desc| serde_json::to_vec(d).unwrap();
        std::fs::write(&p, text(&desc(&[80], &[]))).unwrap();
        let mut cache = DescCache::new();
        cache.set_paths([(vip, p.clone())]);
        assert!(cache.refresh()[0].new.announce());
        let ino = std::fs::metadata(&p).unwrap().ino();

        std::fs::write(&p, text(&desc(&[80], &[443]))).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino, "same inode");
        let u = cache.refresh();
        assert_eq!(u.len(), 1);
        assert!(!u[0].new.announce());
        assert_eq!(cache.parses(), 2);
    }

    #[test]
    fn refresh_paths_looks_only_at_the_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let pa = dir.path().join("a.json");
        let pb = dir.path().join("b.json");
        write_atomic(&pa, &desc(&[80], &[])).unwrap();
        write_atomic(&pb, &desc(&[80], &[])).unwrap();
        let mut cache = DescCache::new();
        cache.set_paths([(a, pa.clone()), (b, pb.clone())]);
        assert_eq!(cache.dirs(), [dir.path().to_path_buf()].into());
        assert_eq!(cache.refresh_paths([&pa, &pb]).len(), 2);

        write_atomic(&pa, &desc(&[80], &[443])).unwrap();
        write_atomic(&pb, &desc(&[80], &[443])).unwrap();
        let stranger = dir.path().join(".a.json.123.tmp");
        let u = cache.refresh_paths([&pa, &stranger]);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].vip, a);
        assert!(cache.get(b).unwrap().announce, "b not looked at yet");
        let u = cache.refresh();
        assert_eq!((u.len(), u[0].vip), (1, b), "the full look finds the rest");
    }

    #[test]
    fn set_paths_keeps_known_entries() {
        let dir = tempfile::tempdir().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let pa = dir.path().join("a.json");
        let pb = dir.path().join("b.json");
        write_atomic(&pa, &desc(&[80], &[])).unwrap();
        write_atomic(&pb, &desc(&[80], &[])).unwrap();
        let mut cache = DescCache::new();
        cache.set_paths([(a, pa.clone())]);
        cache.refresh();
        cache.set_paths([(a, pa), (b, pb)]);
        let u = cache.refresh();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].vip, b);
        assert_eq!(cache.parses(), 2);
        cache.set_paths([(b, dir.path().join("b.json"))]);
        assert!(cache.state(a).is_none());
        assert_eq!(cache.iter().count(), 1);
    }
}
