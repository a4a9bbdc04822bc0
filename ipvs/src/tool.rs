//! What `ipvs-sync ipvs dump|apply` does, as functions the binary wraps and tests call.
//!
//! Exit status: 0 done; 1 applied with failures (each failed operation printed); 2 could
//! not start (no IPVS in the kernel, unreadable file, bad JSON with its line and column).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::IpvsError;
use crate::handle::Ipvs;
use crate::model::Tree;
use crate::{diff, ApplyOptions, Plan};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: ran, but some operations failed.
pub const EXIT_PARTIAL: u8 = 1;
/// Exit status: could not start.
pub const EXIT_CANNOT_START: u8 = 2;

/// A tree file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid tree.
    #[error("{path}:{line}:{column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Parses the JSON form of a tree; errors carry line and column.
pub fn parse_tree(path: &Path, text: &str) -> Result<Tree, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Reads and parses a tree file.
pub fn load_tree(path: &Path) -> Result<Tree, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tree(path, &text)
}

/// `ipvs dump [--json]`: the kernel's tree as `ipvsadm -Sn` rules, or as JSON (with counters).
pub fn dump(json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = Ipvs::connect().and_then(|mut ipvs| ipvs.dump());
    match result {
        Ok(tree) => write_dump(&tree, json, out, err),
        Err(e) => {
            let _ = writeln!(err, "ipvs dump: {e}");
            cannot_start_or_failed(&e)
        }
    }
}

/// No IPVS, no socket, or not allowed (EPERM: not root) is "could not start"; anything
/// else went wrong while running.
fn cannot_start_or_failed(e: &IpvsError) -> u8 {
    match e {
        IpvsError::FamilyNotFound | IpvsError::Socket { .. } => EXIT_CANNOT_START,
        IpvsError::Kernel { errno, .. } if errno.0 == libc::EPERM => EXIT_CANNOT_START,
        _ => EXIT_PARTIAL,
    }
}

fn write_dump(tree: &Tree, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let text = if json {
        match serde_json::to_string_pretty(tree) {
            Ok(s) => s + "\n",
            Err(e) => {
                let _ = writeln!(err, "ipvs dump: {e}");
                return EXIT_PARTIAL;
            }
        }
    } else {
        tree.to_ipvsadm_rules()
    };
    match out.write_all(text.as_bytes()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "ipvs dump: {e}");
            EXIT_PARTIAL
        }
    }
}

/// `ipvs apply FILE [--dry-run]`: makes the kernel's tree equal to the file's with the
/// fewest operations.
///
/// The file is read and parsed on a second thread while this one dumps the kernel's
/// table: on a large tree both take long, and neither needs the other. A bad file is
/// still reported before anything the dump met, and nothing is changed.
pub fn apply(file: &Path, dry_run: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let dump = || {
        Ipvs::connect().map(|mut ipvs| {
            let actual = ipvs.dump();
            (ipvs, actual)
        })
    };
    let (wanted, kernel) = std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("ipvs-apply-read".into())
            .spawn_scoped(scope, || load_tree(file));
        match reading {
            Ok(reading) => {
                let kernel = dump();
                let wanted = reading
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (wanted, kernel)
            }
            // No thread to be had: one after the other.
            Err(_) => (load_tree(file), dump()),
        }
    });
    let wanted = match wanted {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "ipvs apply: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let (mut ipvs, actual) = match kernel {
        Ok(k) => k,
        Err(e) => {
            let _ = writeln!(err, "ipvs apply: {e}");
            return EXIT_CANNOT_START;
        }
    };
    apply_dumped(&mut ipvs, actual, &wanted, dry_run, out, err)
}

/// `ipvs apply FILE --from-dump DUMP [--dry-run]`: makes the kernel's tree equal to FILE's
/// trusting DUMP (a JSON tree, as `ipvs dump --json` printed it earlier) for what the kernel
/// holds: no dump, only the operations from DUMP to FILE. For scripts that keep the last
/// tree they applied; a kernel that drifted from DUMP since is not repaired (an operation
/// that meets the drift fails and is printed, exit 1: run `ipvs apply FILE` to repair).
/// With `--dry-run` the kernel is not touched at all.
pub fn apply_from_dump(
    file: &Path,
    from_dump: &Path,
    dry_run: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (wanted, actual) = match (load_tree(file), load_tree(from_dump)) {
        (Ok(w), Ok(a)) => (w, a),
        (Err(e), _) | (_, Err(e)) => {
            let _ = writeln!(err, "ipvs apply: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let plan = diff(&actual, &wanted);
    if dry_run {
        let _ = write!(out, "{plan}");
        return EXIT_OK;
    }
    match Ipvs::connect() {
        Ok(mut ipvs) => apply_plan(&mut ipvs, &plan, out, err),
        Err(e) => {
            let _ = writeln!(err, "ipvs apply: {e}");
            cannot_start_or_failed(&e)
        }
    }
}

/// Dumps, diffs against `wanted`, and applies (or, with `dry_run`, prints) the plan.
pub fn apply_tree(
    ipvs: &mut Ipvs,
    wanted: &Tree,
    dry_run: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let actual = ipvs.dump();
    apply_dumped(ipvs, actual, wanted, dry_run, out, err)
}

fn apply_dumped(
    ipvs: &mut Ipvs,
    actual: Result<Tree, IpvsError>,
    wanted: &Tree,
    dry_run: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let actual = match actual {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "ipvs apply: reading the kernel's table: {e}");
            return cannot_start_or_failed(&e);
        }
    };
    let plan = diff(&actual, wanted);
    if dry_run {
        let _ = write!(out, "{plan}");
        return EXIT_OK;
    }
    apply_plan(ipvs, &plan, out, err)
}

/// Applies `plan`, prints each failure and a summary.
fn apply_plan(ipvs: &mut Ipvs, plan: &Plan, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let report = ipvs.apply_with(plan, ApplyOptions::default());
    for f in &report.failures {
        let _ = writeln!(err, "failed: {}: {}", f.op, f.error);
    }
    let _ = writeln!(
        out,
        "applied {} of {} operations in {} sends",
        report.succeeded(),
        report.attempted,
        report.sends
    );
    if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_PARTIAL
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bad_json_names_line_and_column() {
        let text = "{\"services\": [\n  {\"fwmark\": 7, \"scheduler\": 5}\n]}";
        let e = parse_tree(Path::new("t.json"), text).unwrap_err();
        let LoadError::Json { line, column, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*line, 2);
        assert!(*column > 10, "{column}");
        assert!(e.to_string().starts_with("t.json:2:"), "{e}");
        assert!(matches!(
            load_tree(Path::new("/nonexistent/tree.json")),
            Err(LoadError::Read { .. })
        ));
    }

    #[test]
    fn from_dump_plans_from_the_file_not_the_kernel() {
        let dir = std::env::temp_dir().join(format!("ipvs-from-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (before, after) = (dir.join("before.json"), dir.join("after.json"));
        std::fs::write(&before, r#"{"services":[{"protocol":"tcp","addr":"192.0.2.1","port":80,"scheduler":"wrr","dests":[{"addr":"198.51.100.5","port":80,"weight":1}]}]}"#).unwrap();
        std::fs::write(&after, r#"{"services":[{"protocol":"tcp","addr":"192.0.2.1","port":80,"scheduler":"wrr","dests":[{"addr":"198.51.100.5","port":80,"weight":7}]}]}"#).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // Dry run: no kernel needed, the one edit between the two files.
        let code = apply_from_dump(&after, &before, true, &mut out, &mut err);
        assert_eq!(code, EXIT_OK, "{}", String::from_utf8_lossy(&err));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-e -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 7\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let missing = dir.join("missing.json");
        assert_eq!(
            apply_from_dump(&after, &missing, true, &mut out, &mut err),
            EXIT_CANNOT_START
        );
        assert!(String::from_utf8(err).unwrap().contains("missing.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dump_output_forms() {
        let tree: Tree = serde_json::from_str(r#"{"services":[{"protocol":"tcp","addr":"192.0.2.1","port":80,"scheduler":"wrr","dests":[{"addr":"198.51.100.5","port":80}]}]}"#).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(write_dump(&tree, false, &mut out, &mut err), EXIT_OK);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-A -t 192.0.2.1:80 -s wrr\n-a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 1\n"
        );
        let mut out = Vec::new();
        assert_eq!(write_dump(&tree, true, &mut out, &mut err), EXIT_OK);
        let back: Tree = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, tree);
    }

    #[test]
    fn without_ipvs_the_command_cannot_start() {
        // Runs anywhere: on a kernel without ip_vs (like the CI host) connect fails with
        // the documented text and exit 2; where IPVS exists, dump works.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = dump(false, &mut out, &mut err);
        let err = String::from_utf8(err).unwrap();
        if Path::new("/proc/net/ip_vs").exists() {
            // Present (root in the VM lane gets the table; others get EPERM).
            assert!(!err.contains("family IPVS not found"), "{err}");
        } else {
            assert_eq!(code, EXIT_CANNOT_START);
            assert_eq!(err, "ipvs dump: generic netlink family IPVS not found: modprobe ip_vs, or set ipvs = false\n");
        }
    }

    #[test]
    fn a_bad_file_is_reported_before_anything_the_kernel_said() {
        // The file is read while the table is dumped; whatever the dump met (no IPVS on
        // this host, or a table read for nothing), the file's error is the one reported.
        let dir = std::env::temp_dir().join(format!("ipvs-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"services\": [\n  {\"fwmark\": \"seven\"}\n]}").unwrap();
        for dry_run in [true, false] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(apply(&bad, dry_run, &mut out, &mut err), EXIT_CANNOT_START);
            let err = String::from_utf8(err).unwrap();
            assert!(
                err.starts_with(&format!("ipvs apply: {}:2:", bad.display())),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(out.is_empty());
        }
        let missing = dir.join("missing.json");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            apply(&missing, false, &mut out, &mut err),
            EXIT_CANNOT_START
        );
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("missing.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
