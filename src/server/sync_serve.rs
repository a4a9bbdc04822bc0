//! The arbiter's side of `sync`: the files of the directories it is configured to serve.
//!
//! A balancer's request names directories (its `[client] sync_dirs`); the arbiter answers for
//! each that is exactly one of its own `[server] sync_dirs` and ignores (and logs) the rest. It
//! lists those directories itself — a request never carries a pattern or a path below them —
//! down to [`MAX_DEPTH`] levels, and sends the regular files it finds, each named by its path
//! relative to the directory. Every file and subdirectory is opened under the served
//! directory's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink
//! planted below it is neither followed nor sent; hidden files (a leading `.`, such as the
//! temporary files of an atomic replace) are skipped. At most [`MAX_FILE`] bytes a file and,
//! all files together, what fits in one message of `max_bytes` once base64-encoded.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use tracing::warn;

use crate::client::sync::{beneath, open_dir};
use crate::wire::messages::{SyncAnswer, SyncFile, SyncRequest};

/// Largest file sent.
pub const MAX_FILE: u64 = 4 << 20;
/// Deepest subdirectory listed (1 = the served directory's own files only).
pub const MAX_DEPTH: usize = 4;
/// Most files sent in one answer.
pub const MAX_FILES: usize = 10_000;

/// The answer to `req` from the directories `serve` (`[server] sync_dirs`), within
/// `max_bytes` for the whole message.
pub fn answer(serve: &[PathBuf], req: &SyncRequest, max_bytes: usize) -> SyncAnswer {
    // base64 turns 3 bytes into 4; keep a margin for names, modes and the envelope.
    let mut budget = (max_bytes / 4 * 3).saturating_sub(64 << 10);
    let mut files = Vec::new();
    for dir in &req.dirs {
        let Some(root) = serve.iter().find(|d| d.as_os_str() == dir.as_str()) else {
            warn!(dir = %dir, "sync: not one of [server] sync_dirs; nothing sent for it");
            continue;
        };
        list(root, dir, &mut budget, &mut files);
    }
    SyncAnswer { files }
}

fn list(root: &Path, dir: &str, budget: &mut usize, out: &mut Vec<SyncFile>) {
    let Ok(fd) = open_dir(root) else {
        warn!(dir = %root.display(), "sync: cannot open the served directory");
        return;
    };
    // (relative path, depth) still to look at; sorted for a stable answer.
    let mut pending = vec![(String::new(), 1usize)];
    while let Some((rel, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names.into_iter().rev() {
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(f) = beneath(&fd, &path, OFlag::empty()) else {
                continue; // a symlink, or gone since the listing
            };
            let Ok(meta) = f.metadata() else { continue };
            if meta.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            if !meta.is_file() || meta.len() > MAX_FILE || out.len() >= MAX_FILES {
                continue;
            }
            let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            if len > *budget {
                warn!(dir = %dir, file = %path, "sync: answer full; file left out");
                continue;
            }
            let mut content = Vec::with_capacity(len);
            if f.take(MAX_FILE).read_to_end(&mut content).is_err() {
                continue;
            }
            *budget -= content.len().min(*budget);
            out.push(SyncFile {
                dir: dir.to_owned(),
                name: path,
                mode: meta.mode() & 0o7777,
                content,
            });
        }
    }
    out.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(a: &SyncAnswer) -> Vec<String> {
        a.files
            .iter()
            .map(|f| format!("{}:{}", f.dir, f.name))
            .collect()
    }

    #[test]
    fn serves_configured_dirs_only_without_symlinks_or_hidden_files() {
        let root = tempfile::tempdir().unwrap();
        let served = root.path().join("served");
        let other = root.path().join("other");
        fs::create_dir_all(served.join("sub/deeper")).unwrap();
        fs::create_dir_all(&other).unwrap();
        fs::write(served.join("a.conf"), b"a").unwrap();
        fs::write(served.join("sub/b.conf"), b"b").unwrap();
        fs::write(served.join("sub/deeper/c.conf"), b"c").unwrap();
        fs::write(served.join(".a.conf.123.tmp"), b"tmp").unwrap();
        fs::write(other.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(other.join("secret"), served.join("link")).unwrap();
        std::os::unix::fs::symlink(&other, served.join("linkdir")).unwrap();
        let s = served.display().to_string();
        let req = SyncRequest {
            dirs: vec![s.clone(), other.display().to_string(), "/etc".into()],
        };
        let a = answer(std::slice::from_ref(&served), &req, 16 << 20);
        assert_eq!(
            names(&a),
            [
                format!("{s}:a.conf"),
                format!("{s}:sub/b.conf"),
                format!("{s}:sub/deeper/c.conf")
            ]
        );
        assert_eq!(a.files[1].content, b"b");
        assert!(answer(&[], &req, 16 << 20).files.is_empty());
    }

    #[test]
    fn the_answer_fits_in_one_message() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..10 {
            fs::write(root.path().join(format!("f{i}")), vec![b'x'; 100_000]).unwrap();
        }
        let req = SyncRequest {
            dirs: vec![root.path().display().to_string()],
        };
        let max = 600_000;
        let a = answer(&[root.path().to_path_buf()], &req, max);
        assert!(
            !a.files.is_empty() && a.files.len() < 10,
            "{}",
            a.files.len()
        );
        let body = serde_json::to_vec(&a).unwrap();
        assert!(body.len() < max, "{}", body.len());
    }
}
