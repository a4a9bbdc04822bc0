//! `ipvs-sync keygen [--out FILE]`: a new node key.
//!
//! Writes `[secret]` and a `node_key = …` line (the private key: base64 of an Ed25519 seed)
//! to FILE — by default `secret.ini` beside the config — created with mode 0600, never over an
//! existing file; prints the public key on stdout, and on stderr where it goes:
//!
//! ```text
//! # ipvs-sync keygen --out /etc/ipvs-sync/node.key
//! 11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
//! ```
//!
//! Exit 0 when written, 1 when the file exists or cannot be written.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::wire::NodeKey;

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (default: secret.ini beside the config file).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The text of a new key file.
pub fn key_file_text(key: &NodeKey) -> String {
    format!(
        "; this node's private key, made by `ipvs-sync keygen`: keep it in secret.ini only\n\
         [secret]\nnode_key = {}\n",
        key.to_text()
    )
}

/// Writes `text` to a new file `path`, mode 0600; refuses an existing file or symlink.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Runs `keygen`.
pub fn run(config: &Path, args: &KeygenArgs) -> ExitCode {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| config::Config::secret_path(config));
    let key = match NodeKey::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("ipvs-sync keygen: no random bytes: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = write_new(&out, &key_file_text(&key)) {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (it exists: keygen never overwrites; use --out NEWFILE and copy its node_key line)"
        } else {
            ""
        };
        eprintln!("ipvs-sync keygen: {}: {e}{hint}", out.display());
        return ExitCode::from(1);
    }
    println!("{}", key.public());
    eprintln!(
        "ipvs-sync keygen: private key written to {} (mode 0600); its node_key line belongs in \
         this node's secret.ini.\nThe public key above goes to the other side: on the arbiter, \
         as balancer_keys_dir/HOSTNAME.pub of this balancer; on every balancer, when this is \
         the arbiter, as [main] arbiter_public_key.",
        out.display()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_file_is_a_secret_ini_of_mode_0600_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("secret.ini");
        let cfg = d.path().join("config.ini");
        let args = KeygenArgs { out: None };
        assert_eq!(run(&cfg, &args), ExitCode::SUCCESS);
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let c = config::Config::from_strs(
            "[main]\namqp_server = amqp://b/\nhostname = h\n",
            Some(&text),
        )
        .unwrap();
        let key = NodeKey::from_text(c.node_key().unwrap()).unwrap();
        assert!(text.contains(&format!("node_key = {}", key.to_text())));
        // A second run refuses to overwrite; so does a symlink in the way.
        assert_eq!(run(&cfg, &args), ExitCode::from(1));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
        let link = d.path().join("link.ini");
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &link).unwrap();
        assert_eq!(
            run(&cfg, &KeygenArgs { out: Some(link) }),
            ExitCode::from(1)
        );
        assert!(!d.path().join("elsewhere").exists());
    }
}
