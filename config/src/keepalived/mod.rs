//! keepalived's configuration language, far enough to find every virtual server.
//!
//! ```text
//!  file ─ lexer::lex ─▶ lines of tokens ─ include spliced in (load) ─▶ parser::parse
//!        ─▶ Statement tree ─ services::services ─▶ Services { virtual_servers, groups }
//! ```
//!
//! `include GLOB` lines are followed like keepalived does: textually, wherever they are,
//! a relative GLOB resolved against the directory of the file that includes it, matches
//! in sorted order; a GLOB that matches nothing is skipped, but a plain path (no `*?[`)
//! that does not exist is an error, since a typo there would silently drop services. Include loops and nesting
//! deeper than [`MAX_INCLUDE_DEPTH`] are errors. Parsing never panics; every error names
//! the file and line.
//!
//! Not interpreted (their statements are kept as plain statements and ignored by
//! [`services`]): `@name` conditional prefixes, `$NAME=` parameters and `~SEQ` loops.

mod lexer;
mod parser;
mod services;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use lexer::{lex, Line, Token};
pub use parser::{parse, Statement, MAX_DEPTH};
pub use services::{
    services, Group, GroupMember, Services, VirtualServer, VirtualServerAddr, MAX_RANGE,
};

/// Deepest chain of `include`s followed (the top file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Largest keepalived file read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a keepalived configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeepalivedError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid keepalived syntax, or a service line is malformed.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An `include` would read a file that is already being read.
    #[error("{file}:{line}: include loop: {target} is already being read")]
    IncludeLoop {
        /// The including file.
        file: PathBuf,
        /// 1-based line of the `include`.
        line: usize,
        /// The file included again.
        target: PathBuf,
    },
    /// `include` names a plain path (no glob characters) that does not exist.
    #[error("{file}:{line}: include: no such file {target}")]
    IncludeMissing {
        /// The including file.
        file: PathBuf,
        /// 1-based line of the `include`.
        line: usize,
        /// The missing file.
        target: PathBuf,
    },
    /// `include`s nest deeper than [`MAX_INCLUDE_DEPTH`].
    #[error("{file}:{line}: includes nested deeper than {MAX_INCLUDE_DEPTH}")]
    IncludeDepth {
        /// The including file.
        file: PathBuf,
        /// 1-based line of the `include`.
        line: usize,
    },
}

/// Parses `text` without touching the file system; `include` lines stay as plain
/// statements. `name` only names the file in errors.
pub fn parse_str(text: &str, name: &Path) -> Result<Vec<Statement>, KeepalivedError> {
    let file: Arc<Path> = Arc::from(name);
    parse(lex(text, &file)?)
}

/// Reads `path` with its includes and parses the whole.
pub fn load(path: &Path) -> Result<Vec<Statement>, KeepalivedError> {
    let mut lines = Vec::new();
    let mut chain = Vec::new();
    expand(path, &mut chain, &mut lines)?;
    parse(lines)
}

/// Reads `path` and its includes and returns their services.
pub fn load_services(path: &Path) -> Result<Services, KeepalivedError> {
    services(&load(path)?)
}

/// Appends the lines of `path` to `out`, splicing includes; `chain` holds the canonical
/// paths of the files being read (for loop detection), its length is the depth.
fn expand(
    path: &Path,
    chain: &mut Vec<PathBuf>,
    out: &mut Vec<Line>,
) -> Result<(), KeepalivedError> {
    let io = |source| KeepalivedError::Io {
        file: path.to_path_buf(),
        source,
    };
    let canonical = fs::canonicalize(path).map_err(io)?;
    let mut text = String::new();
    fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    // Included files are named by their canonical path, so one file reached through
    // different relative paths is recognisably the same; the top file keeps its name.
    let file: Arc<Path> = if chain.is_empty() {
        Arc::from(path)
    } else {
        Arc::from(canonical.as_path())
    };
    chain.push(canonical);
    for line in lex(&text, &file)? {
        if line.keyword() != Some("include") {
            out.push(line);
            continue;
        }
        let syntax = |reason: &str| KeepalivedError::Syntax {
            file: path.to_path_buf(),
            line: line.line,
            reason: reason.to_owned(),
        };
        let pattern = match line.tokens.as_slice() {
            [_, Token::Word { text, .. }] => text,
            _ => return Err(syntax("include: expected one file name or glob")),
        };
        if chain.len() > MAX_INCLUDE_DEPTH {
            return Err(KeepalivedError::IncludeDepth {
                file: path.to_path_buf(),
                line: line.line,
            });
        }
        let pattern = match Path::new(pattern).is_absolute() {
            true => PathBuf::from(pattern),
            false => path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(pattern),
        };
        let Some(pattern) = pattern.to_str() else {
            return Err(syntax("include: the path is not UTF-8"));
        };
        // A plain path must exist; a glob may match nothing (as in keepalived).
        if !pattern.contains(['*', '?', '[']) && !Path::new(pattern).exists() {
            return Err(KeepalivedError::IncludeMissing {
                file: path.to_path_buf(),
                line: line.line,
                target: PathBuf::from(pattern),
            });
        }
        let matches = glob::glob(pattern).map_err(|_| syntax("include: bad glob pattern"))?;
        let mut targets = Vec::new();
        for m in matches {
            let target = m.map_err(|e| KeepalivedError::Io {
                file: e.path().to_path_buf(),
                source: io::Error::from(e),
            })?;
            if target.is_file() {
                targets.push(target);
            }
        }
        targets.sort();
        for target in targets {
            let canonical = fs::canonicalize(&target).map_err(|source| KeepalivedError::Io {
                file: target.clone(),
                source,
            })?;
            if chain.contains(&canonical) {
                return Err(KeepalivedError::IncludeLoop {
                    file: path.to_path_buf(),
                    line: line.line,
                    target,
                });
            }
            expand(&target, chain, out)?;
        }
    }
    chain.pop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn includes_are_spliced_relative_and_sorted() {
        let d = tempfile::tempdir().unwrap();
        let top = write(
            d.path(),
            "keepalived.conf",
            "include conf.d/*.conf\ninclude \"missing/*.conf\"\nvirtual_server 192.0.2.1 80 {\n}\n",
        );
        write(
            d.path(),
            "conf.d/b.conf",
            "virtual_server 192.0.2.3 80 {\n}\n",
        );
        write(
            d.path(),
            "conf.d/a.conf",
            "virtual_server 192.0.2.2 80 {\n include ../inner.inc\n}\n",
        );
        write(
            d.path(),
            "inner.inc",
            "quorum_up \"/q up 192.0.2.2,b-100,80\"\n",
        );
        let s = load_services(&top).unwrap();
        let vips: Vec<String> = s
            .virtual_servers
            .iter()
            .map(|v| match &v.addr {
                VirtualServerAddr::Ip { addr, .. } => addr.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(vips, ["192.0.2.2", "192.0.2.3", "192.0.2.1"]);
        assert_eq!(
            s.virtual_servers[0].quorum_vip,
            Some("192.0.2.2".parse().unwrap())
        );
        assert!(s.virtual_servers[1].file.ends_with("conf.d/b.conf"));
    }

    #[test]
    fn include_loop_and_depth_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.conf", "x 1\ninclude b.conf\n");
        write(d.path(), "b.conf", "include a.conf\n");
        let e = load(&a).unwrap_err();
        assert!(
            matches!(e, KeepalivedError::IncludeLoop { line: 1, .. }),
            "{e}"
        );

        // A diamond (two includes of one file, no cycle) is fine.
        let top = write(
            d.path(),
            "top.conf",
            "include leaf.conf\ninclude leaf.conf\n",
        );
        write(d.path(), "leaf.conf", "virtual_server 192.0.2.1 80 { }\n");
        assert_eq!(load_services(&top).unwrap().virtual_servers.len(), 2);

        for i in 0..=MAX_INCLUDE_DEPTH + 1 {
            write(
                d.path(),
                &format!("d{i}.conf"),
                &format!("include d{}.conf\n", i + 1),
            );
        }
        write(d.path(), &format!("d{}.conf", MAX_INCLUDE_DEPTH + 2), "x\n");
        let e = load(&d.path().join("d0.conf")).unwrap_err();
        assert!(matches!(e, KeepalivedError::IncludeDepth { .. }), "{e}");
        // Exactly MAX_INCLUDE_DEPTH levels below the top are accepted.
        let start = 2;
        assert!(load(&d.path().join(format!("d{start}.conf"))).is_ok());

        let bad = write(d.path(), "bad.conf", "include\n");
        assert!(matches!(
            load(&bad),
            Err(KeepalivedError::Syntax { line: 1, .. })
        ));
        let typo = write(d.path(), "typo.conf", "include no-such.inc\n");
        let e = load(&typo).unwrap_err();
        assert!(
            e.to_string().contains("typo.conf:1: include: no such file"),
            "{e}"
        );
        let missing = load(&d.path().join("nope.conf")).unwrap_err();
        assert!(matches!(missing, KeepalivedError::Io { .. }));
    }
}
