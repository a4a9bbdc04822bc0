//! `secret.ini`: passwords and this node's private key, kept out of `Debug` output; and the
//! ownership rule for files that hold or decide trust.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::ConfigError;

/// A secret string. `Debug` prints `<hidden>`; there is no `Display`: read it with
/// [`SecretString::expose`] where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<hidden>)")
    }
}

/// What `message_key` (the shared HMAC key of earlier versions) became, for the error that
/// refuses it.
pub const MESSAGE_KEY_GONE: &str = "message_key is no longer used: every node signs with its \
     own Ed25519 key. Run `ipvs-sync keygen --out FILE` on this node, put its `node_key = …` \
     line here instead of message_key, and give the public key it prints to the other side \
     (balancers: [main] arbiter_public_key; arbiter: [server] balancer_keys_dir/HOSTNAME.pub)";

/// Length of the text form of a node key (base64 of 32 bytes, padded).
pub const NODE_KEY_TEXT_LEN: usize = 44;

/// Longest TCP-MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_TCP_MD5_KEY_LEN: usize = 80;

/// The `[secret]` section of `secret.ini` (all empty when the file is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Where the secrets were (or would have been) read from, for error messages.
    pub file: PathBuf,
    /// `amqp_password`: used when `amqp_server` carries no password.
    pub amqp_password: Option<SecretString>,
    /// `node_key`: this node's Ed25519 private key (base64 of the 32-byte seed), written by
    /// `ipvs-sync keygen`; it signs every message the node sends.
    pub node_key: Option<SecretString>,
    /// `bgp_password.NAME`: TCP-MD5 key per `[bgp.peer.NAME]` (already applied to
    /// [`crate::PeerConfig::password`]; kept here for reference).
    pub bgp_passwords: BTreeMap<String, SecretString>,
}

impl Secrets {
    /// This node's private key (text form), or a [`ConfigError::MissingSecret`] saying it
    /// is needed and how to make one.
    pub fn node_key(&self) -> Result<&str, ConfigError> {
        self.node_key
            .as_ref()
            .map(SecretString::expose)
            .ok_or_else(|| ConfigError::MissingSecret {
                file: self.file.clone(),
                key: "node_key".to_owned(),
                purpose: "to sign messages (make one with `ipvs-sync keygen`)",
            })
    }

    /// The AMQP password, or a [`ConfigError::MissingSecret`].
    pub fn amqp_password(&self) -> Result<&str, ConfigError> {
        self.amqp_password
            .as_ref()
            .map(SecretString::expose)
            .ok_or_else(|| ConfigError::MissingSecret {
                file: self.file.clone(),
                key: "amqp_password".to_owned(),
                purpose: "to log in to the AMQP broker",
            })
    }
}

/// Whether a file owned by `uid` with permission bits `mode` may be trusted: owned by root or
/// by this process's effective user, and none of the `forbidden` bits (`0o077` for secrets,
/// `0o022` for files that only others must not change) set. The error says what is wrong.
pub fn check_owner_and_mode(uid: u32, mode: u32, forbidden: u32) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(format!(
            "owned by uid {uid}, neither root nor this process's user (uid {me})"
        ));
    }
    if mode & forbidden != 0 {
        let who = if forbidden & 0o044 != 0 {
            "readable or writable"
        } else {
            "writable"
        };
        return Err(format!(
            "mode {:04o} is {who} by group or others",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Whether `text` has the shape of a key's text form: 44 characters of standard base64
/// ending in one `=`. (The key itself is checked where it is used.)
pub fn looks_like_key(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == NODE_KEY_TEXT_LEN
        && b[NODE_KEY_TEXT_LEN - 1] == b'='
        && b[..NODE_KEY_TEXT_LEN - 1]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let s = Secrets {
            node_key: Some(SecretString::new("topsecret-topsecret-topsecret-xx")),
            ..Secrets::default()
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(dbg.contains("<hidden>"));
    }

    #[test]
    fn missing_secret_is_typed() {
        let s = Secrets {
            file: PathBuf::from("/etc/ipvs-sync/secret.ini"),
            ..Secrets::default()
        };
        let err = s.node_key().unwrap_err();
        assert!(matches!(err, ConfigError::MissingSecret { .. }));
        assert_eq!(
            err.to_string(),
            "/etc/ipvs-sync/secret.ini: [secret] node_key: required to sign messages (make one \
             with `ipvs-sync keygen`), but not set"
        );
        assert!(s.amqp_password().is_err());
    }

    #[test]
    fn owner_and_mode_rules() {
        let me = nix::unistd::geteuid().as_raw();
        assert!(check_owner_and_mode(0, 0o100600, 0o077).is_ok());
        assert!(check_owner_and_mode(me, 0o400, 0o077).is_ok());
        assert!(check_owner_and_mode(0, 0o644, 0o022).is_ok());
        let other = if me == 4242 { 4243 } else { 4242 };
        assert!(check_owner_and_mode(other, 0o600, 0o077)
            .unwrap_err()
            .contains("uid 4242"));
        assert!(check_owner_and_mode(0, 0o640, 0o077)
            .unwrap_err()
            .contains("0640 is readable or writable"));
        assert!(check_owner_and_mode(0, 0o664, 0o022)
            .unwrap_err()
            .contains("0664 is writable"));
    }

    #[test]
    fn key_shapes() {
        assert!(looks_like_key(
            "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
        ));
        assert!(!looks_like_key(
            "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
        ));
        assert!(!looks_like_key(
            "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyu 2A="
        ));
    }
}
