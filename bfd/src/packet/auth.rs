//! The authentication section of a Control packet (RFC 5880 §4.2–4.4).
//!
//! ```text
//! Simple Password (type 1, §4.2), Auth Len 4..=19:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Auth Len    |  Auth Key ID  |  Password...  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Keyed / Meticulous Keyed MD5 (types 2, 3, §4.3), Auth Len 24;
//! Keyed / Meticulous Keyed SHA1 (types 4, 5, §4.4), Auth Len 28:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Auth Len    |  Auth Key ID  |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              Auth Key/Digest/Hash (16 or 20 bytes)...         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Only the framing is checked here; digests are verified by whoever holds the keys.

use super::DecodeError;

/// Auth Type codes (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// 1: Simple Password.
    SimplePassword,
    /// 2: Keyed MD5.
    KeyedMd5,
    /// 3: Meticulous Keyed MD5.
    MeticulousKeyedMd5,
    /// 4: Keyed SHA1.
    KeyedSha1,
    /// 5: Meticulous Keyed SHA1.
    MeticulousKeyedSha1,
    /// 0 and 6–255: reserved.
    Other(u8),
}

impl AuthType {
    /// The type of a code.
    pub fn from_code(code: u8) -> AuthType {
        match code {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            c => AuthType::Other(c),
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            AuthType::SimplePassword => 1,
            AuthType::KeyedMd5 => 2,
            AuthType::MeticulousKeyedMd5 => 3,
            AuthType::KeyedSha1 => 4,
            AuthType::MeticulousKeyedSha1 => 5,
            AuthType::Other(c) => c,
        }
    }
}

/// A parsed authentication section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Simple Password (§4.2): 1 to 16 bytes.
    SimplePassword {
        /// Auth Key ID.
        key_id: u8,
        /// The password, as sent.
        password: Vec<u8>,
    },
    /// Keyed MD5 or Meticulous Keyed MD5 (§4.3).
    KeyedMd5 {
        /// Type 3 (the sequence number increases on every packet) rather than 2.
        meticulous: bool,
        /// Auth Key ID.
        key_id: u8,
        /// Sequence Number.
        seq: u32,
        /// Auth Key/Digest.
        digest: [u8; 16],
    },
    /// Keyed SHA1 or Meticulous Keyed SHA1 (§4.4).
    KeyedSha1 {
        /// Type 5 rather than 4.
        meticulous: bool,
        /// Auth Key ID.
        key_id: u8,
        /// Sequence Number.
        seq: u32,
        /// Auth Key/Hash.
        hash: [u8; 20],
    },
    /// A reserved type, its data kept as received (after Auth Type and Auth Len).
    Other {
        /// Auth Type.
        auth_type: u8,
        /// Everything after the Auth Len byte.
        data: Vec<u8>,
    },
}

impl Auth {
    /// The section's Auth Type.
    pub fn auth_type(&self) -> AuthType {
        match self {
            Auth::SimplePassword { .. } => AuthType::SimplePassword,
            Auth::KeyedMd5 {
                meticulous: false, ..
            } => AuthType::KeyedMd5,
            Auth::KeyedMd5 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedMd5,
            Auth::KeyedSha1 {
                meticulous: false, ..
            } => AuthType::KeyedSha1,
            Auth::KeyedSha1 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedSha1,
            Auth::Other { auth_type, .. } => AuthType::from_code(*auth_type),
        }
    }

    /// Decodes the section: `buf` is exactly the bytes from Auth Type to the packet's Length.
    pub(super) fn decode(buf: &[u8]) -> Result<Auth, DecodeError> {
        let [ty, auth_len, rest @ ..] = buf else {
            return Err(DecodeError::AuthMissing);
        };
        let bad = || DecodeError::AuthLength {
            auth_type: *ty,
            auth_len: *auth_len,
            section: buf.len(),
        };
        if usize::from(*auth_len) != buf.len() {
            return Err(bad());
        }
        match AuthType::from_code(*ty) {
            AuthType::SimplePassword => match rest {
                [key_id, password @ ..] if (1..=16).contains(&password.len()) => {
                    Ok(Auth::SimplePassword {
                        key_id: *key_id,
                        password: password.to_vec(),
                    })
                }
                _ => Err(bad()),
            },
            t @ (AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5) => {
                let (key_id, seq, digest) = keyed::<16>(rest).ok_or_else(bad)?;
                Ok(Auth::KeyedMd5 {
                    meticulous: t == AuthType::MeticulousKeyedMd5,
                    key_id,
                    seq,
                    digest,
                })
            }
            t @ (AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1) => {
                let (key_id, seq, hash) = keyed::<20>(rest).ok_or_else(bad)?;
                Ok(Auth::KeyedSha1 {
                    meticulous: t == AuthType::MeticulousKeyedSha1,
                    key_id,
                    seq,
                    hash,
                })
            }
            AuthType::Other(auth_type) => Ok(Auth::Other {
                auth_type,
                data: rest.to_vec(),
            }),
        }
    }

    /// Appends the section. Data longer than a one-byte Auth Len allows is cut to fit.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.auth_type().code());
        out.push(0); // Auth Len, set below.
        match self {
            Auth::SimplePassword { key_id, password } => {
                out.push(*key_id);
                out.extend_from_slice(password.get(..16).unwrap_or(password));
            }
            Auth::KeyedMd5 {
                key_id,
                seq,
                digest,
                ..
            } => put_keyed(out, *key_id, *seq, digest),
            Auth::KeyedSha1 {
                key_id, seq, hash, ..
            } => put_keyed(out, *key_id, *seq, hash),
            Auth::Other { data, .. } => {
                // 255 total for Auth Len, minus the two bytes already written, minus the
                // 24-byte mandatory section that shares the one-byte packet Length.
                let room = usize::from(u8::MAX) - 2 - super::HEADER_LEN;
                out.extend_from_slice(data.get(..room).unwrap_or(data));
            }
        }
        let len = u8::try_from(out.len() - start).unwrap_or(u8::MAX);
        if let Some(b) = out.get_mut(start + 1) {
            *b = len;
        }
    }
}

/// Key ID, reserved byte, sequence number and an `N`-byte digest; `None` unless `rest` is
/// exactly that long.
fn keyed<const N: usize>(rest: &[u8]) -> Option<(u8, u32, [u8; N])> {
    let [key_id, _reserved, s0, s1, s2, s3, digest @ ..] = rest else {
        return None;
    };
    let digest: [u8; N] = digest.try_into().ok()?;
    Some((*key_id, u32::from_be_bytes([*s0, *s1, *s2, *s3]), digest))
}

fn put_keyed(out: &mut Vec<u8>, key_id: u8, seq: u32, digest: &[u8]) {
    out.push(key_id);
    out.push(0);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(digest);
}
