//! The lab's node keys: one Ed25519 key per daemon, in the text forms ipvs-sync reads
//! (`node_key` of `secret.ini`: base64 of the 32-byte RFC 8032 seed; `arbiter_public_key`
//! and `HOSTNAME.pub`: base64 of the 32-byte public key).

use std::fmt;
use std::io::{self, Read};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

/// A node's private key. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct LabKey([u8; 32]);

impl LabKey {
    /// A new key from the kernel's random source.
    pub fn generate() -> io::Result<LabKey> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(LabKey(seed))
    }

    /// The key of a fixed seed (unit tests).
    pub fn from_seed(seed: [u8; 32]) -> LabKey {
        LabKey(seed)
    }

    /// Parses the text form ([`LabKey::to_text`]).
    pub fn from_text(text: &str) -> io::Result<LabKey> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| bad(format!("a node key is base64: {e}")))?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("a node key is 32 bytes".to_owned()))?;
        Ok(LabKey(seed))
    }

    /// `node_key` of `secret.ini`.
    pub fn to_text(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The public key: `arbiter_public_key`, the line of a `HOSTNAME.pub`.
    pub fn public(&self) -> String {
        STANDARD.encode(SigningKey::from_bytes(&self.0).verifying_key().as_bytes())
    }
}

impl fmt::Debug for LabKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabKey(public {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_1_public_key() {
        // RFC 8032 §7.1, TEST 1.
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let k = LabKey::from_seed(seed);
        let public = STANDARD.decode(k.public()).unwrap();
        assert_eq!(
            public[..4],
            [0xd7, 0x5a, 0x98, 0x01],
            "public key d75a9801…"
        );
        assert_eq!(LabKey::from_text(&k.to_text()).unwrap(), k);
        assert!(!format!("{k:?}").contains(&k.to_text()));
        assert!(LabKey::from_text("AAAA").is_err());
    }
}
