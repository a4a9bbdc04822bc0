//! Keyed SHA1 and Meticulous Keyed SHA1 (RFC 5880 §6.7.4): signing a packet and checking a
//! received one.
//!
//! The hash is SHA-1 over the whole packet (up to its Length) with the Auth Key/Hash field
//! holding the key, zero-padded to 20 bytes. Sequence numbers (which a receiver must see
//! increase) are the session's business, not the codec's.

use sha1::{Digest, Sha1};

use super::{Auth, ControlPacket, HEADER_LEN};

/// Longest key of the SHA1 types.
pub const MAX_SHA1_KEY_LEN: usize = 20;

/// Offset of the Auth Key/Hash field: the mandatory section, then Auth Type, Auth Len,
/// Auth Key ID, Reserved and the 4-byte Sequence Number.
const HASH_AT: usize = HEADER_LEN + 8;
const HASH_END: usize = HASH_AT + 20;

/// Why a packet could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The packet's authentication section is not Keyed SHA1 or Meticulous Keyed SHA1.
    #[error("the packet carries no keyed SHA1 section")]
    NotSha1,
    /// The key is longer than 20 bytes.
    #[error("a keyed SHA1 key is at most 20 bytes")]
    KeyTooLong,
}

fn padded(key: &[u8]) -> Option<[u8; 20]> {
    let mut k = [0u8; 20];
    k.get_mut(..key.len())?.copy_from_slice(key);
    Some(k)
}

/// Encodes `packet` (whose `auth` is a [`Auth::KeyedSha1`], its hash ignored) with the hash
/// computed for `key`.
pub fn sign_sha1(packet: &ControlPacket, key: &[u8]) -> Result<Vec<u8>, SignError> {
    if !matches!(packet.auth, Some(Auth::KeyedSha1 { .. })) {
        return Err(SignError::NotSha1);
    }
    let key = padded(key).ok_or(SignError::KeyTooLong)?;
    let mut bytes = packet.encode();
    let field = bytes.get_mut(HASH_AT..HASH_END).ok_or(SignError::NotSha1)?;
    field.copy_from_slice(&key);
    let hash: [u8; 20] = Sha1::digest(&bytes).into();
    if let Some(field) = bytes.get_mut(HASH_AT..HASH_END) {
        field.copy_from_slice(&hash);
    }
    Ok(bytes)
}

/// Whether `datagram` (a packet that decodes with a keyed SHA1 section) carries the right
/// hash for `key`. Anything else — another authentication type, a short datagram, a key over
/// 20 bytes — is `false`.
pub fn verify_sha1(datagram: &[u8], key: &[u8]) -> bool {
    let Ok(p) = ControlPacket::decode(datagram) else {
        return false;
    };
    let Some(Auth::KeyedSha1 { hash, .. }) = p.auth else {
        return false;
    };
    let (Some(key), Some(len)) = (padded(key), datagram.get(3)) else {
        return false;
    };
    let Some(packet) = datagram.get(..usize::from(*len)) else {
        return false;
    };
    let mut copy = packet.to_vec();
    let Some(field) = copy.get_mut(HASH_AT..HASH_END) else {
        return false;
    };
    field.copy_from_slice(&key);
    let want: [u8; 20] = Sha1::digest(&copy).into();
    // Compared without an early exit, so the time taken does not tell how much matched.
    want.iter()
        .zip(hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
