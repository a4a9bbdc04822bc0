//! `secret.ini`: passwords and the message key, kept out of `Debug` output.

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

/// Minimum length of `message_key`: HMAC-SHA256 wants at least its output size.
pub const MIN_MESSAGE_KEY_LEN: usize = 32;

/// Longest TCP-MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_TCP_MD5_KEY_LEN: usize = 80;

/// The `[secret]` section of `secret.ini` (all empty when the file is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Where the secrets were (or would have been) read from, for error messages.
    pub file: PathBuf,
    /// `amqp_password`: used when `amqp_server` carries no password.
    pub amqp_password: Option<SecretString>,
    /// `message_key`: HMAC-SHA256 key of message envelopes, at least 32 bytes.
    pub message_key: Option<SecretString>,
    /// `bgp_password.NAME`: TCP-MD5 key per `[bgp.peer.NAME]` (already applied to
    /// [`crate::PeerConfig::password`]; kept here for reference).
    pub bgp_passwords: BTreeMap<String, SecretString>,
}

impl Secrets {
    /// The message key, or a [`ConfigError::MissingSecret`] saying it is needed.
    pub fn message_key(&self) -> Result<&[u8], ConfigError> {
        self.message_key
            .as_ref()
            .map(|k| k.expose().as_bytes())
            .ok_or_else(|| ConfigError::MissingSecret {
                file: self.file.clone(),
                key: "message_key".to_owned(),
                purpose: "to sign and check messages",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let s = Secrets {
            message_key: Some(SecretString::new("topsecret-topsecret-topsecret-xx")),
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
        let err = s.message_key().unwrap_err();
        assert!(matches!(err, ConfigError::MissingSecret { .. }));
        assert_eq!(
            err.to_string(),
            "/etc/ipvs-sync/secret.ini: [secret] message_key: required to sign and check \
             messages, but not set"
        );
        assert!(s.amqp_password().is_err());
    }
}
