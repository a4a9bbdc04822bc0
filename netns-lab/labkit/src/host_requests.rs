//! Requests through a shared directory, for a side that cannot reach the other's network
//! namespaces: the VM lane's guest asks the host (`vm-cluster`) to cut a broker node off and
//! heal it. Both sides of the exchange are here, so its file names live in one place.
//!
//! The asker writes one line to `DIR/req-N` ([`ask`]); the server ([`pending`], [`answer`])
//! carries it out, writes `DIR/done-N` and removes the request. Every file is written under
//! a `.tmp` name and renamed into place, so neither side ever reads half of one over 9p.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Writes `path` whole or not at all (`PATH.tmp`, then a rename).
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Writes request `req` to `dir` and waits up to `patience` for its answer, looking every
/// 200 ms. Numbers requests from 1 in this process.
pub fn ask(dir: &Path, req: &str, patience: Duration) -> io::Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    write_atomic(&dir.join(format!("req-{n}")), req)?;
    let done = dir.join(format!("done-{n}"));
    let mut answer = None;
    crate::wait_every(patience, Duration::from_millis(200), || {
        answer = std::fs::read_to_string(&done).ok();
        answer.is_some()
    });
    answer.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no answer to {req:?} in {} within {patience:?}",
                dir.display()
            ),
        )
    })
}

/// The requests waiting in `dir`, oldest first: their files and their lines.
pub fn pending(dir: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let mut reqs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let n = name.strip_prefix("req-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    reqs.sort();
    Ok(reqs
        .into_iter()
        .map(|(_, p)| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            (p, text.trim().to_owned())
        })
        .collect())
}

/// Answers the request in file `req` (one of [`pending`]'s) with `text` and removes it.
pub fn answer(req: &Path, text: &str) -> io::Result<()> {
    let name = req.file_name().and_then(|n| n.to_str()).unwrap_or("req-0");
    let done = req.with_file_name(name.replacen("req-", "done-", 1));
    write_atomic(&done, text)?;
    std::fs::remove_file(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let server = std::thread::spawn(move || loop {
            let reqs = pending(&path).unwrap();
            if let Some((req, line)) = reqs.into_iter().next() {
                answer(&req, &format!("ok {line}")).unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        });
        let got = ask(dir.path(), "partition 2", Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        assert_eq!(got, "ok partition 2");
        // Nothing left but the answer; no temporary file.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("done-"), "{names:?}");
    }

    #[test]
    fn an_unanswered_request_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let e = ask(dir.path(), "heal 0", Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
