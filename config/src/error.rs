//! Errors of `config.ini`/`secret.ini` loading.
//!
//! Every variant that comes from a file names the file and, where there is one, the line
//! and the `[section] key`, so an operator can go straight to the mistake:
//!
//! ```text
//! config.ini:14: [bgp.peer.r1] remote_as: expected an AS number 1..4294967295, got 'abc'
//! ```

use std::path::PathBuf;

/// Why `config.ini` or `secret.ini` could not be turned into a [`crate::Config`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A line is neither a section header, a `key = value` pair, a comment nor blank.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// A section header this program does not know.
    #[error("{file}:{line}: unknown section [{section}]")]
    UnknownSection {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the header.
        line: usize,
        /// The section name as written.
        section: String,
    },

    /// The same section header appears twice.
    #[error("{file}:{line}: section [{section}] appears again (first on line {first})")]
    DuplicateSection {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the second header.
        line: usize,
        /// The section name.
        section: String,
        /// 1-based line number of the first header.
        first: usize,
    },

    /// A key this program does not know in a section it does know.
    #[error("{file}:{line}: [{section}] unknown key '{key}'")]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The section.
        section: String,
        /// The key as written.
        key: String,
    },

    /// The same key is set twice in one section.
    #[error("{file}:{line}: [{section}] {key}: set again (first on line {first})")]
    DuplicateKey {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the second assignment.
        line: usize,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// 1-based line number of the first assignment.
        first: usize,
    },

    /// A value does not parse as what the key needs.
    #[error("{file}:{line}: [{section}] {key}: expected {expected}, got '{got}'")]
    InvalidValue {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// What the key takes, e.g. "an AS number 1..4294967295".
        expected: String,
        /// The value as written (secrets are never echoed: they show as `<hidden>`).
        got: String,
    },

    /// A value parses but is refused for a reason of its own (e.g. `announces_source = Server`).
    #[error("{file}:{line}: [{section}] {key}: {reason}")]
    Refused {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// Why the value is refused and what to do instead.
        reason: String,
    },

    /// A key that must be set is absent.
    #[error("{file}: [{section}] {key}: required{reason}")]
    MissingKey {
        /// The file.
        file: PathBuf,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// When it is required, e.g. " when [bgp.peer.*] sections exist" (may be empty).
        reason: String,
    },

    /// `secret.ini` may be read or written by group or others.
    #[error(
        "{file}: mode {mode:04o} lets group or others access the secrets; run `chmod 600 {file}`"
    )]
    SecretPermissions {
        /// The secret file.
        file: PathBuf,
        /// Its permission bits (`mode & 0o7777`).
        mode: u32,
    },

    /// `secret.ini` belongs to a user other than root or the one running ipvs-sync, who could
    /// read or replace the secrets.
    #[error(
        "{file}: {reason}; run `chown root {file}` (or chown it to the user ipvs-sync runs as)"
    )]
    SecretOwner {
        /// The secret file.
        file: PathBuf,
        /// What is wrong with its owner.
        reason: String,
    },

    /// A secret needed by the caller is not in `secret.ini` (or the file is absent).
    #[error("{file}: [secret] {key}: required {purpose}, but not set")]
    MissingSecret {
        /// The secret file the value was looked for in.
        file: PathBuf,
        /// The key in `[secret]`.
        key: String,
        /// What needs it, e.g. "to sign messages".
        purpose: &'static str,
    },
}
