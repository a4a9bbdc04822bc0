//! The arbiter's side of `sync`: which files a balancer's request gets.

use std::path::PathBuf;

use tracing::warn;

use crate::wire::messages::SyncFile;

/// Largest file a `sync` answer carries.
const SYNC_MAX_FILE: u64 = 4 << 20;

/// Files for a `sync` request: only regular files directly matched by the globs and
/// lying under `[client] sync_dirs` of the arbiter's own config (the same directories are
/// allow-listed on both ends), at most 4 MiB each.
pub fn sync_files(sync_dirs: &[PathBuf], names: &[String]) -> Vec<SyncFile> {
    use std::os::unix::fs::PermissionsExt;
    let allowed: Vec<_> = sync_dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect();
    let mut out = Vec::new();
    for pat in names {
        let Ok(paths) = glob::glob(pat) else {
            warn!(pattern = %pat, "sync: bad pattern");
            continue;
        };
        for p in paths.flatten() {
            let Ok(real) = p.canonicalize() else { continue };
            let meta = match std::fs::metadata(&real) {
                Ok(m) if m.is_file() && m.len() <= SYNC_MAX_FILE => m,
                _ => continue,
            };
            if !allowed.iter().any(|a| real.starts_with(a)) {
                warn!(file = %p.display(), "sync: outside sync_dirs, not sent");
                continue;
            }
            if let Ok(content) = std::fs::read(&real) {
                out.push(SyncFile {
                    name: p.display().to_string(),
                    mode: meta.permissions().mode() & 0o777,
                    content,
                });
            }
        }
    }
    out
}
