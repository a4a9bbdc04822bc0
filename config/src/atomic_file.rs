//! Replacing a file so that readers see the old content or the new, never a part of either,
//! and it survives a crash once the call returns; and opening lock files without following
//! symlinks. One implementation for every file ipvs-sync writes (desc files, the known-ports
//! cache, the service mapping, `sync`ed files, the daemons' state files).
//!
//! ```text
//!   openat(dir, ".NAME.PID.N.tmp", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode)
//!   write · fchmod(mode) · fsync
//!   renameat(dir, tmp, dir, NAME)        readers switch from the old inode to the new here
//!   fsync(dir)                            the rename itself is on disk
//! ```
//!
//! `O_EXCL | O_NOFOLLOW` on the temporary name means a planted file or symlink there makes the
//! write fail instead of writing through it; the rename replaces whatever is at `NAME` (a
//! symlink there is replaced, never followed). On any failure the temporary file is removed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Makes temporary names unique within the process (the pid makes them unique across).
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` (permissions `mode & 0o7777`), atomically and durably: see the
/// module doc.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let dir = open_dir(dir)?;
    replace_at(dir.as_fd(), name, bytes, mode)
}

/// [`replace`] for a file `name` (one path component) of the directory open as `dir`.
pub fn replace_at(dir: BorrowedFd<'_>, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    if name.is_empty() || name.as_bytes().contains(&b'/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name, not a path, is needed",
        ));
    }
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mode = Mode::from_bits_truncate(mode & 0o7777);
    let fd = openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )?;
    let mut file = File::from(fd);
    let written = (|| {
        file.write_all(bytes)?;
        // The umask may have narrowed the mode given to openat.
        fchmod(file.as_fd(), mode)?;
        file.sync_all()?;
        drop(file);
        renameat(dir, tmp.as_os_str(), dir, name)?;
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = written {
        let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    nix::unistd::fsync(dir)?;
    Ok(())
}

/// Opens (creating it, mode 0600, when missing) the lock file `path` for `flock`, refusing to
/// follow a symlink there.
pub fn open_lock(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The directory (`.` for a bare name) and the file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn open_dir(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_with_the_mode_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        replace(&p, b"one", 0o644).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        replace(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_ne!(
            meta.ino(),
            ino,
            "a new inode: readers of the old one saw it whole"
        );
        assert_eq!(names(d.path()), ["a.json"]);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let p = d.path().join("f");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        replace(&p, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn names_that_are_paths_are_refused_and_failures_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(d.path()).unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(replace_at(dir.as_fd(), OsStr::new(bad), b"x", 0o644).is_err());
        }
        // A directory in the way: the rename fails, the temporary file goes.
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/x"), b"x").unwrap();
        assert!(replace(&d.path().join("sub"), b"x", 0o644).is_err());
        assert_eq!(names(d.path()), ["sub"]);
        assert!(replace(&d.path().join("missing/x"), b"x", 0o644).is_err());
    }

    #[test]
    fn lock_files_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join("x.lock");
        let f = open_lock(&lock).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        drop(f);
        assert!(
            open_lock(&lock).is_ok(),
            "an existing lock file opens again"
        );
        let link = d.path().join("y.lock");
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &link).unwrap();
        assert!(open_lock(&link).is_err());
        assert!(!d.path().join("elsewhere").exists());
    }
}
