//! Which desc files may have changed since the last look, from inotify(7) on their
//! directories, so the arbiter stats only those instead of every file on every scan.
//!
//! The kernel queues an event for each create, write, rename, attribute change or removal
//! of a file in a watched directory; [`DescWatch::take`] drains the queue without waiting
//! and names the files. Whenever the queue cannot be trusted to be complete — it overflowed,
//! a watched directory was removed or moved, a directory could not be watched (it does not
//! exist yet), or reading failed — it answers [`Seen::Everything`] and the caller looks at
//! every file, as it would without a watch. Changes inotify never reports (a file on NFS
//! written by another host, a desc file that is a symlink into an unwatched directory) are
//! left to the caller's periodic full scan.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// What may have changed since the last [`DescWatch::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Only files among these paths (possibly none).
    Paths(BTreeSet<PathBuf>),
    /// Anything: look at every file.
    Everything,
}

/// inotify watches on the directories that hold desc files.
#[derive(Debug)]
pub struct DescWatch {
    fd: Inotify,
    /// Watched directory of each watch.
    dirs: BTreeMap<WatchDescriptor, PathBuf>,
    /// Directories wanted but not watched (missing, or their watch was lost).
    unwatched: BTreeSet<PathBuf>,
    /// The next take answers everything (the watched set changed).
    fresh: bool,
}

/// Events that name a file changing, plus those that say the directory itself went away.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl DescWatch {
    /// An inotify instance with no watches (non-blocking, close-on-exec).
    pub fn new() -> io::Result<DescWatch> {
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io::Error::other(format!("inotify_init1: {e}")))?;
        Ok(DescWatch {
            fd,
            dirs: BTreeMap::new(),
            unwatched: BTreeSet::new(),
            fresh: true,
        })
    }

    /// Watches exactly `dirs`: new ones are added, ones no longer wanted removed. A
    /// directory that cannot be watched now is tried again on every [`DescWatch::take`].
    /// The next take answers [`Seen::Everything`]: what changed before a watch was added
    /// was never queued.
    pub fn set_dirs(&mut self, dirs: &BTreeSet<PathBuf>) {
        self.fresh = true;
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, d)| !dirs.contains(*d))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = self.fd.rm_watch(wd);
        }
        let watched: BTreeSet<PathBuf> = self.dirs.values().cloned().collect();
        self.unwatched = dirs.difference(&watched).cloned().collect();
        self.rewatch();
    }

    /// Directories watched now.
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Directories wanted but not watched now (missing, or out of inotify watches:
    /// `fs.inotify.max_user_watches`); while any is, every take answers everything.
    pub fn unwatched(&self) -> usize {
        self.unwatched.len()
    }

    fn rewatch(&mut self) {
        let todo = std::mem::take(&mut self.unwatched);
        for dir in todo {
            match self.fd.add_watch(dir.as_path(), mask()) {
                Ok(wd) => {
                    // The kernel hands out one descriptor per inode: two names of one
                    // directory share it, and the later name wins (both hold the same files).
                    self.dirs.insert(wd, dir);
                }
                Err(_) => {
                    self.unwatched.insert(dir);
                }
            }
        }
    }

    /// Drains the queued events without waiting.
    pub fn take(&mut self) -> Seen {
        let mut everything = std::mem::take(&mut self.fresh);
        let mut paths = BTreeSet::new();
        loop {
            let events = match self.fd.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    everything = true;
                    break;
                }
            };
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    everything = true;
                    continue;
                }
                if ev.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    // The directory (or this name of it) is gone: watch it again by name.
                    if let Some(dir) = self.dirs.remove(&ev.wd) {
                        let _ = self.fd.rm_watch(ev.wd);
                        self.unwatched.insert(dir);
                    }
                    everything = true;
                    continue;
                }
                match (self.dirs.get(&ev.wd), ev.name) {
                    (Some(dir), Some(name)) => {
                        paths.insert(dir.join(name));
                    }
                    // An event on the directory itself, or from a watch already dropped.
                    _ => everything = true,
                }
            }
        }
        if !self.unwatched.is_empty() {
            self.rewatch();
            everything = true;
        }
        if everything {
            Seen::Everything
        } else {
            Seen::Paths(paths)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(seen: Seen) -> BTreeSet<PathBuf> {
        match seen {
            Seen::Paths(p) => p,
            Seen::Everything => panic!("expected paths, got everything"),
        }
    }

    #[test]
    fn names_the_files_written_renamed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let mut w = DescWatch::new().unwrap();
        w.set_dirs(&[d.clone()].into());
        assert_eq!(w.watched(), 1);
        assert_eq!(w.take(), Seen::Everything, "a new watch: look at all once");
        assert!(paths(w.take()).is_empty(), "nothing happened since");

        std::fs::write(d.join("a.json"), b"{}").unwrap();
        std::fs::write(d.join(".b.tmp"), b"{}").unwrap();
        std::fs::rename(d.join(".b.tmp"), d.join("b.json")).unwrap();
        let seen = paths(w.take());
        assert!(seen.contains(&d.join("a.json")), "{seen:?}");
        assert!(seen.contains(&d.join("b.json")), "{seen:?}");
        assert!(paths(w.take()).is_empty(), "drained");

        std::fs::remove_file(d.join("a.json")).unwrap();
        assert_eq!(paths(w.take()), [d.join("a.json")].into());
    }

    #[test]
    fn a_missing_or_removed_directory_means_look_at_everything_until_watched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("desc");
        let mut w = DescWatch::new().unwrap();
        w.set_dirs(&[d.clone()].into());
        assert_eq!((w.watched(), w.unwatched()), (0, 1));
        w.take();
        assert_eq!(w.take(), Seen::Everything, "cannot watch what is not there");

        std::fs::create_dir(&d).unwrap();
        assert_eq!(w.take(), Seen::Everything, "watched from this take on");
        assert_eq!(w.watched(), 1);
        std::fs::write(d.join("x.json"), b"{}").unwrap();
        assert_eq!(paths(w.take()), [d.join("x.json")].into());

        std::fs::remove_file(d.join("x.json")).unwrap();
        std::fs::remove_dir(&d).unwrap();
        assert_eq!(w.take(), Seen::Everything);
        assert_eq!(w.watched(), 0);

        // No longer wanted: no watch, nothing to report.
        w.set_dirs(&BTreeSet::new());
        w.take();
        assert!(paths(w.take()).is_empty());
    }

    #[test]
    fn an_overflowing_queue_means_everything() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let mut w = DescWatch::new().unwrap();
        w.set_dirs(&[d.clone()].into());
        w.take();
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16_384);
        // Each write is at least two events (modify, close-write).
        for i in 0..max {
            std::fs::write(d.join(format!("{}.json", i % 64)), b"{}").unwrap();
        }
        assert_eq!(w.take(), Seen::Everything);
        assert!(paths(w.take()).is_empty(), "and a fresh queue after it");
    }
}
