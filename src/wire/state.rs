//! What the transport keeps on disk, under `[main] state_dir` (mode 0700), so that a restart
//! opens no replay window and reuses no message id:
//!
//! | file | written | holds |
//! |---|---|---|
//! | `ROLE.lock` | held (`flock`) while the transport lives | nothing: a second daemon of the same role on this host fails at start |
//! | `ROLE.epoch` | replaced at every start, before anything is sent | this node's epoch as a sender: `max(last + 1, now in seconds)` |
//! | `ROLE.marks` | one line appended per admitted message, before the daemon sees it; compacted | `FROM EPOCH SEQ`: the highest id taken from each sender |
//!
//! ROLE is `server` or `client`, so an arbiter and a balancer may share a host and a
//! directory. The epoch grows even when the wall clock went back (`last + 1`) and stays
//! meaningful when the file is lost (the clock). The marks are a log: a line per message is
//! one `write(2)` to the page cache, so a daemon that crashes or restarts keeps every mark it
//! acted on; the log is fsynced every second ([`MarkLog::sync`]) and rewritten as one line
//! per sender (through [`config::atomic_file`]) when it grows past [`COMPACT_AT`] bytes. A
//! host that loses power may thus forget up to a second of marks. Unreadable lines (a torn
//! last line) are skipped.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::envelope::MessageId;

/// The mark log is compacted when it grows past this many bytes.
pub const COMPACT_AT: u64 = 4 << 20;

/// Largest state file read.
const MAX_READ: u64 = 64 << 20;

/// A state directory problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a file of the state directory.
    #[error("state_dir: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The directory may be changed by someone else.
    #[error("state_dir {path}: {reason}; fix with `chown root {path} && chmod 700 {path}`")]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the lock.
    #[error(
        "state_dir {path}: locked by another ipvs-sync {role} on this host; stop it first \
         (or give each its own state_dir)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// `server` or `client`.
        role: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory of one role, locked for this process.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    role: &'static str,
    _lock: File,
}

impl StateDir {
    /// Creates `dir` (mode 0700) when missing, checks it is owned by root or this user and not
    /// writable by group or others, and takes the role's lock.
    pub fn open(dir: &Path, role: &'static str) -> Result<StateDir, StateError> {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
        if !meta.is_dir() {
            return Err(StateError::Unsafe {
                path: dir.to_path_buf(),
                reason: "not a directory".to_owned(),
            });
        }
        config::secret::check_owner_and_mode(meta.uid(), meta.permissions().mode(), 0o022)
            .map_err(|reason| StateError::Unsafe {
                path: dir.to_path_buf(),
                reason,
            })?;
        let lock_path = dir.join(format!("{role}.lock"));
        let lock = config::atomic_file::open_lock(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: lock_path,
                    role,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            role,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file of this role in the directory (`ROLE.NAME`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.{name}", self.role))
    }

    /// This start's epoch: above the last one on disk and at least the wall clock in seconds,
    /// written (fsynced) before it is returned.
    pub fn next_epoch(&self, now_s: u64) -> Result<u64, StateError> {
        let path = self.file("epoch");
        let last = match read_small(&path) {
            Ok(text) => text.trim().parse::<u64>().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let epoch = next_epoch(last, now_s);
        config::atomic_file::replace(&path, format!("{epoch}\n").as_bytes(), 0o600)
            .map_err(io_err(&path))?;
        Ok(epoch)
    }

    /// Opens the mark log, with the marks it holds.
    pub fn marks(&self) -> Result<MarkLog, StateError> {
        MarkLog::open(self.file("marks"))
    }
}

/// The epoch after `last` (none: no file) when the wall clock says `now_s`.
pub fn next_epoch(last: Option<u64>, now_s: u64) -> u64 {
    last.map_or(now_s, |l| l.saturating_add(1).max(now_s))
        .max(1)
}

fn read_small(path: &Path) -> io::Result<String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    f.take(MAX_READ).read_to_string(&mut text)?;
    Ok(text)
}

/// Parses a mark log: the highest id per sender; lines that do not parse are skipped.
pub fn parse_marks(text: &str) -> BTreeMap<String, MessageId> {
    let mut out: BTreeMap<String, MessageId> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let (Some(from), Some(epoch), Some(seq), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (Ok(epoch), Ok(seq)) = (epoch.parse(), seq.parse()) else {
            continue;
        };
        if !super::keys::valid_node_name(from) {
            continue;
        }
        let id = MessageId { epoch, seq };
        let e = out.entry(from.to_owned()).or_insert(id);
        *e = (*e).max(id);
    }
    out
}

/// The line of a mark.
pub fn mark_line(from: &str, id: MessageId) -> String {
    format!("{from} {} {}\n", id.epoch, id.seq)
}

/// The append-only log of replay marks (see the module doc).
#[derive(Debug)]
pub struct MarkLog {
    path: PathBuf,
    file: File,
    marks: BTreeMap<String, MessageId>,
    size: u64,
    dirty: bool,
}

impl MarkLog {
    fn open(path: PathBuf) -> Result<MarkLog, StateError> {
        let text = match read_small(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let marks = parse_marks(&text);
        let mut log = MarkLog {
            file: open_append(&path)?,
            path,
            marks,
            size: text.len() as u64,
            dirty: false,
        };
        log.compact()?;
        Ok(log)
    }

    /// The highest id of each sender, as on disk.
    pub fn marks(&self) -> &BTreeMap<String, MessageId> {
        &self.marks
    }

    /// Appends the marks of messages about to be acted on, in one write.
    pub fn append<'a>(
        &mut self,
        ids: impl IntoIterator<Item = (&'a str, MessageId)>,
    ) -> Result<(), StateError> {
        let mut buf = String::new();
        for (from, id) in ids {
            match self.marks.get_mut(from) {
                Some(e) => *e = (*e).max(id),
                None => {
                    self.marks.insert(from.to_owned(), id);
                }
            }
            buf.push_str(&mark_line(from, id));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf.as_bytes())
            .map_err(io_err(&self.path))?;
        self.size += buf.len() as u64;
        self.dirty = true;
        if self.size > COMPACT_AT {
            self.compact()?;
        }
        Ok(())
    }

    /// A handle to fsync from another thread when [`MarkLog::take_dirty`] says so.
    pub fn sync_handle(&self) -> Result<File, StateError> {
        self.file.try_clone().map_err(io_err(&self.path))
    }

    /// Whether lines were appended since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Flushes the log to disk (`fdatasync`).
    pub fn sync(&self) -> Result<(), StateError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Rewrites the log as one line per sender.
    fn compact(&mut self) -> Result<(), StateError> {
        let text: String = self
            .marks
            .iter()
            .map(|(from, id)| mark_line(from, *id))
            .collect();
        config::atomic_file::replace(&self.path, text.as_bytes(), 0o600)
            .map_err(io_err(&self.path))?;
        self.file = open_append(&self.path)?;
        self.size = text.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: u64, seq: u64) -> MessageId {
        MessageId { epoch, seq }
    }

    #[test]
    fn epochs_grow_even_when_the_clock_goes_back() {
        assert_eq!(next_epoch(None, 1_700_000_000), 1_700_000_000);
        assert_eq!(
            next_epoch(Some(1_700_000_000), 1_700_000_500),
            1_700_000_500
        );
        assert_eq!(
            next_epoch(Some(1_700_000_000), 1_600_000_000),
            1_700_000_001
        );
        assert_eq!(
            next_epoch(Some(1_700_000_000), 1_700_000_000),
            1_700_000_001
        );
        assert_eq!(next_epoch(None, 0), 1);
        assert_eq!(next_epoch(Some(u64::MAX), 0), u64::MAX);
    }

    #[test]
    fn the_state_dir_keeps_the_epoch_and_is_locked() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let s = StateDir::open(&dir, "client").unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(s.next_epoch(1_000).unwrap(), 1_000);
        assert_eq!(s.next_epoch(900).unwrap(), 1_001);
        assert!(matches!(
            StateDir::open(&dir, "client"),
            Err(StateError::Locked { .. })
        ));
        let other = StateDir::open(&dir, "server").unwrap();
        assert_eq!(other.next_epoch(5).unwrap(), 5);
        drop(s);
        assert_eq!(
            StateDir::open(&dir, "client")
                .unwrap()
                .next_epoch(0)
                .unwrap(),
            1_002
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        drop(other);
        assert!(matches!(
            StateDir::open(&dir, "server"),
            Err(StateError::Unsafe { .. })
        ));
    }

    #[test]
    fn marks_parse_with_torn_and_bad_lines_skipped() {
        let text = "lb1 5 10\nlb1 5 9\nlb2 1 1\nlb1 6 1\nbroadcast 9 9\nlb3 1\nlb4 x 1\nlb5 1 2 3\nlb9 7 7";
        let m = parse_marks(text);
        assert_eq!(
            m,
            BTreeMap::from([
                ("lb1".to_owned(), id(6, 1)),
                ("lb2".to_owned(), id(1, 1)),
                ("lb9".to_owned(), id(7, 7)),
            ])
        );
        assert_eq!(mark_line("lb1", id(6, 1)), "lb1 6 1\n");
    }

    #[test]
    fn the_mark_log_survives_a_reopen_and_compacts() {
        let root = tempfile::tempdir().unwrap();
        let s = StateDir::open(root.path(), "server").unwrap();
        let mut log = s.marks().unwrap();
        assert!(log.marks().is_empty());
        log.append([("lb1", id(1, 1)), ("lb2", id(3, 7))]).unwrap();
        log.append([("lb1", id(1, 2))]).unwrap();
        assert!(log.take_dirty());
        log.sync().unwrap();
        drop(log);
        let text = std::fs::read_to_string(s.file("marks")).unwrap();
        assert_eq!(text, "lb1 1 1\nlb2 3 7\nlb1 1 2\n");
        let log = s.marks().unwrap();
        assert_eq!(log.marks().get("lb1"), Some(&id(1, 2)));
        // Opening compacted it to one line per sender.
        let text = std::fs::read_to_string(s.file("marks")).unwrap();
        assert_eq!(text, "lb1 1 2\nlb2 3 7\n");
        // Lines of 7 senders until past COMPACT_AT, when the log shrinks back to one line
        // per sender.
        let mut log = log;
        let mut n = 0u64;
        let mut grew = false;
        loop {
            let batch: Vec<(String, MessageId)> = (0..1000)
                .map(|i| (format!("lb{}", i % 7), id(2, n + i)))
                .collect();
            log.append(batch.iter().map(|(f, i)| (f.as_str(), *i)))
                .unwrap();
            n += 1000;
            let len = std::fs::metadata(s.file("marks")).unwrap().len();
            grew |= len > COMPACT_AT / 2;
            if grew && len < 1024 {
                break;
            }
            assert!(n < 1_000_000, "never compacted");
        }
        let reread = parse_marks(&std::fs::read_to_string(s.file("marks")).unwrap());
        assert_eq!(&reread, log.marks());
        assert_eq!(reread.len(), 7);
    }
}
