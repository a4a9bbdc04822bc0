//! `sync`: files the arbiter hands a balancer, written only under allow-listed directories.
//!
//! A name is accepted when it is absolute, has no `.`/`..`/empty components, and its parent
//! directory — after the kernel resolves every symlink (`canonicalize`) — lies inside one of
//! `[client] sync_dirs` (also canonicalized). The file is written to a fresh temp file in that
//! directory, fsynced, then renamed over the target, so readers see the old or the new file,
//! never half of one; a symlink at the target is replaced, never followed. Nothing is written
//! when any check fails, and every refusal is returned with its reason.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a `sync` file was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `sync_dirs` is empty: the feature is off.
    #[error("sync is off: [client] sync_dirs is empty")]
    Disabled,
    /// Not an absolute, normal path.
    #[error("{0}: refused: not an absolute path without '.', '..' or empty parts")]
    BadName(String),
    /// Outside every allowed directory (after resolving symlinks).
    #[error("{name}: refused: resolves to {resolved}, outside sync_dirs")]
    Escapes {
        /// As sent.
        name: String,
        /// Where its directory really is.
        resolved: String,
    },
    /// The parent directory does not exist.
    #[error("{name}: directory missing: {source}")]
    NoDir {
        /// As sent.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("{name}: write failed: {source}")]
    Io {
        /// As sent.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Checks `name` against the allow-list and returns the real path to write.
pub fn resolve(allowed: &[PathBuf], name: &str) -> Result<PathBuf, SyncError> {
    if allowed.is_empty() {
        return Err(SyncError::Disabled);
    }
    let p = Path::new(name);
    let normal = p.is_absolute()
        && !name.contains('\0')
        && !name.contains("//")
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && !name
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == "..");
    let (Some(parent), Some(file)) = (p.parent(), p.file_name()) else {
        return Err(SyncError::BadName(name.to_string()));
    };
    if !normal {
        return Err(SyncError::BadName(name.to_string()));
    }
    let real_parent = parent.canonicalize().map_err(|source| SyncError::NoDir {
        name: name.to_string(),
        source,
    })?;
    let inside = allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .any(|a| real_parent.starts_with(&a));
    if !inside {
        return Err(SyncError::Escapes {
            name: name.to_string(),
            resolved: real_parent.display().to_string(),
        });
    }
    Ok(real_parent.join(file))
}

/// Writes one file atomically after [`resolve`] accepted it. `mode` is masked to 0o777.
pub fn write(
    allowed: &[PathBuf],
    name: &str,
    mode: u32,
    content: &[u8],
) -> Result<PathBuf, SyncError> {
    let target = resolve(allowed, name)?;
    let io = |source| SyncError::Io {
        name: name.to_string(),
        source,
    };
    let dir = target.parent().unwrap_or(Path::new("/"));
    let file = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file}.ipvs-sync.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("etc/allowed");
        fs::create_dir_all(allowed.join("sub")).unwrap();
        (root, allowed)
    }

    #[test]
    fn writes_inside_and_replaces_atomically() {
        let (_root, allowed) = setup();
        let name = format!("{}/sub/a.conf", allowed.display());
        write(std::slice::from_ref(&allowed), &name, 0o644, b"one").unwrap();
        write(std::slice::from_ref(&allowed), &name, 0o640, b"two").unwrap();
        assert_eq!(fs::read(&name).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&name).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = fs::read_dir(allowed.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn refuses_dotdot_relative_and_escapes() {
        let (root, allowed) = setup();
        let al = std::slice::from_ref(&allowed);
        let passwd = format!("{}/../../etc/passwd", allowed.display());
        assert!(matches!(
            write(al, &passwd, 0o644, b"x"),
            Err(SyncError::BadName(_))
        ));
        assert!(matches!(
            write(al, "../../etc/passwd", 0o644, b"x"),
            Err(SyncError::BadName(_))
        ));
        assert!(matches!(
            write(al, "sub/a", 0o644, b"x"),
            Err(SyncError::BadName(_))
        ));
        let outside = root.path().join("etc/other");
        fs::create_dir_all(&outside).unwrap();
        let err = write(al, &format!("{}/x", outside.display()), 0o644, b"x").unwrap_err();
        assert!(matches!(err, SyncError::Escapes { .. }), "{err}");
        // A prefix that is not a path parent: /etc/allowed-evil is not inside /etc/allowed.
        let evil = root.path().join("etc/allowed-evil");
        fs::create_dir_all(&evil).unwrap();
        assert!(matches!(
            write(al, &format!("{}/x", evil.display()), 0o644, b"x"),
            Err(SyncError::Escapes { .. })
        ));
        assert!(!outside.join("x").exists() && !evil.join("x").exists());
    }

    #[test]
    fn symlinked_dir_pointing_out_is_refused_and_symlink_file_is_replaced_not_followed() {
        let (root, allowed) = setup();
        let al = std::slice::from_ref(&allowed);
        let outside = root.path().join("secret");
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        let err = write(al, &format!("{}/link/x", allowed.display()), 0o644, b"x").unwrap_err();
        assert!(matches!(err, SyncError::Escapes { .. }), "{err}");
        assert!(!outside.join("x").exists());

        let victim = outside.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, allowed.join("f")).unwrap();
        write(al, &format!("{}/f", allowed.display()), 0o644, b"new").unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"keep",
            "symlink target untouched"
        );
        assert_eq!(fs::read(allowed.join("f")).unwrap(), b"new");
    }

    #[test]
    fn empty_allow_list_disables_sync() {
        assert!(matches!(resolve(&[], "/tmp/x"), Err(SyncError::Disabled)));
    }
}
