//! `sync`: files the arbiter hands a balancer, written only under `[client] sync_dirs`.
//!
//! A file names the synced directory it belongs to (`dir`, which must be exactly one of
//! `sync_dirs`) and its path below it (`name`: relative, normal components only). Everything
//! below the directory is resolved by the kernel under the directory's file descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no `..`, no absolute path and no symlink,
//! wherever it was planted, can take a write outside, and a missing parent directory is an
//! error (nothing is created but the file). The file is replaced atomically and durably
//! ([`config::atomic_file`]: temp file `O_EXCL | O_NOFOLLOW`, fsync, rename, fsync of the
//! directory); its mode is capped at `0755`: no setuid, setgid or sticky bit, no write for
//! group or others. Nothing is written when a check fails, and every refusal says why.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::wire::messages::{relative_name, SyncFile};

/// The mode bits a synced file may have.
pub const MODE_CAP: u32 = 0o755;

/// Why a `sync` file was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `sync_dirs` is empty: the feature is off.
    #[error("sync is off: [client] sync_dirs is empty")]
    Disabled,
    /// The file's directory is not one of `sync_dirs`.
    #[error("{dir}: refused: not one of [client] sync_dirs")]
    NotSynced {
        /// As sent.
        dir: String,
    },
    /// Not a relative path of normal components.
    #[error("{dir}/{name}: refused: the name must be relative, without '.', '..' or empty parts")]
    BadName {
        /// As sent.
        dir: String,
        /// As sent.
        name: String,
    },
    /// Resolving the file's directory under the synced one failed: it is missing, or the
    /// path crosses a symlink or leaves the directory.
    #[error("{dir}/{name}: refused: {source} (no symlinks are followed below a synced directory)")]
    Resolve {
        /// As sent.
        dir: String,
        /// As sent.
        name: String,
        /// What the kernel said.
        source: nix::Error,
    },
    /// Writing failed.
    #[error("{path}: write failed: {source}")]
    Io {
        /// Where.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Writes one file of a `sync` answer under `allowed`; returns where it went.
pub fn write(allowed: &[PathBuf], file: &SyncFile) -> Result<PathBuf, SyncError> {
    if allowed.is_empty() {
        return Err(SyncError::Disabled);
    }
    let Some(dir) = allowed.iter().find(|d| d.as_os_str() == file.dir.as_str()) else {
        return Err(SyncError::NotSynced {
            dir: file.dir.clone(),
        });
    };
    let bad_name = || SyncError::BadName {
        dir: file.dir.clone(),
        name: file.name.clone(),
    };
    if !relative_name(&file.name) {
        return Err(bad_name());
    }
    let (parent, leaf) = match file.name.rsplit_once('/') {
        Some((p, l)) => (Some(p), l),
        None => (None, file.name.as_str()),
    };
    let target = dir.join(&file.name);
    let io = |source| SyncError::Io {
        path: target.display().to_string(),
        source,
    };
    let root = open_dir(dir).map_err(io)?;
    let parent_fd =
        match parent {
            None => None,
            Some(p) => Some(beneath(&root, p, OFlag::O_DIRECTORY).map_err(|source| {
                SyncError::Resolve {
                    dir: file.dir.clone(),
                    name: file.name.clone(),
                    source,
                }
            })?),
        };
    let at = parent_fd.as_ref().map_or(root.as_fd(), |f| f.as_fd());
    config::atomic_file::replace_at(at, OsStr::new(leaf), &file.content, file.mode & MODE_CAP)
        .map_err(io)?;
    Ok(target)
}

/// Opens a configured directory (the operator's path: symlinks in it are the operator's).
pub(crate) fn open_dir(dir: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Opens `rel` below `root` read-only with `flags` added, refusing `..`, absolute paths and
/// every symlink (`openat2`, Linux ≥ 5.6).
pub(crate) fn beneath(root: &File, rel: &str, flags: OFlag) -> nix::Result<File> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | flags)
        .mode(Mode::empty())
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(root.as_fd(), rel, how).map(File::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("etc/allowed");
        fs::create_dir_all(allowed.join("sub")).unwrap();
        (root, allowed)
    }

    fn file(dir: &Path, name: &str, mode: u32, content: &[u8]) -> SyncFile {
        SyncFile {
            dir: dir.display().to_string(),
            name: name.to_owned(),
            mode,
            content: content.to_vec(),
        }
    }

    #[test]
    fn writes_inside_replaces_atomically_and_caps_the_mode() {
        let (_root, allowed) = setup();
        let al = std::slice::from_ref(&allowed);
        write(al, &file(&allowed, "sub/a.conf", 0o644, b"one")).unwrap();
        let p = write(al, &file(&allowed, "sub/a.conf", 0o7777, b"two")).unwrap();
        assert_eq!(p, allowed.join("sub/a.conf"));
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        write(al, &file(&allowed, "top", 0o666, b"x")).unwrap();
        assert_eq!(
            fs::metadata(allowed.join("top"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o644
        );
        let leftovers: Vec<_> = fs::read_dir(allowed.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn refuses_other_dirs_dotdot_and_absolute_names() {
        let (root, allowed) = setup();
        let al = std::slice::from_ref(&allowed);
        let outside = root.path().join("etc/other");
        fs::create_dir_all(&outside).unwrap();
        assert!(matches!(
            write(al, &file(&outside, "x", 0o644, b"x")),
            Err(SyncError::NotSynced { .. })
        ));
        // A prefix that is not the directory itself.
        let evil = root.path().join("etc/allowed-evil");
        fs::create_dir_all(&evil).unwrap();
        assert!(matches!(
            write(al, &file(&evil, "x", 0o644, b"x")),
            Err(SyncError::NotSynced { .. })
        ));
        assert!(matches!(
            write(al, &file(&allowed.join("sub"), "x", 0o644, b"x")),
            Err(SyncError::NotSynced { .. })
        ));
        for name in [
            "../other/x",
            "/etc/passwd",
            "sub/../../other/x",
            "",
            "a//b",
            "./x",
        ] {
            assert!(
                matches!(
                    write(al, &file(&allowed, name, 0o644, b"x")),
                    Err(SyncError::BadName { .. })
                ),
                "{name}"
            );
        }
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        assert!(matches!(
            write(al, &file(&allowed, "missing/x", 0o644, b"x")),
            Err(SyncError::Resolve { .. })
        ));
        assert!(matches!(
            write(&[], &file(&allowed, "x", 0o644, b"x")),
            Err(SyncError::Disabled)
        ));
    }

    #[test]
    fn symlinks_below_the_synced_dir_are_never_followed() {
        let (root, allowed) = setup();
        let al = std::slice::from_ref(&allowed);
        let secret = root.path().join("secret");
        fs::create_dir_all(&secret).unwrap();
        // A symlinked directory pointing out, and one pointing back inside: both refused.
        std::os::unix::fs::symlink(&secret, allowed.join("out")).unwrap();
        std::os::unix::fs::symlink(allowed.join("sub"), allowed.join("in")).unwrap();
        for name in ["out/x", "in/x"] {
            let err = write(al, &file(&allowed, name, 0o644, b"x")).unwrap_err();
            assert!(matches!(err, SyncError::Resolve { .. }), "{name}: {err}");
        }
        assert!(fs::read_dir(&secret).unwrap().next().is_none());
        // A symlink at the file itself is replaced, its target untouched.
        let victim = secret.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, allowed.join("f")).unwrap();
        write(al, &file(&allowed, "f", 0o644, b"new")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(allowed.join("f")).unwrap(), b"new");
        assert!(!fs::symlink_metadata(allowed.join("f"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
