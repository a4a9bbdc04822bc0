//! Small JSON files a daemon keeps across restarts in `[main] state_dir` (drained VIPs and
//! balancers): read leniently, replaced atomically.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::error;

/// The value in `path`; the default when there is no file, and the default (loudly) when it
/// cannot be read or parsed.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> T {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            error!(file = %path.display(), error = %e, "state file unreadable: taken as empty");
            T::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => {
            error!(file = %path.display(), error = %e, "state file unreadable: taken as empty");
            T::default()
        }
    }
}

/// Replaces `path` with `value` atomically and durably (mode 0600, through
/// [`config::atomic_file`], the one file-replace of the project); the directory is created
/// 0700 when missing.
pub fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    config::atomic_file::replace(path, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn saves_loads_and_survives_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/x.json");
        let none: BTreeSet<String> = load(&path);
        assert!(none.is_empty());
        save(&path, &BTreeSet::from(["lb1".to_string()])).unwrap();
        let back: BTreeSet<String> = load(&path);
        assert_eq!(back, BTreeSet::from(["lb1".to_string()]));
        std::fs::write(&path, b"{").unwrap();
        let broken: BTreeSet<String> = load(&path);
        assert!(broken.is_empty());
    }
}
