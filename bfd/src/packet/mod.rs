//! Pure codec of the BFD Control packet (RFC 5880 §4.1) and its authentication section
//! (§4.2–4.4).
//!
//! No I/O here: [`ControlPacket::decode`] takes one UDP payload and returns a typed packet or a
//! [`DecodeError`] naming the §6.8.6 rule the packet broke; [`ControlPacket::encode`] gives the
//! bytes back. Decoding never panics on any input: every length is checked before it is used.
//!
//! [`sign_sha1`] and [`verify_sha1`] compute and check the Keyed SHA1 hash (§6.7.4).
//!
//! The reception rules that need session state (discriminator lookup, the A bit against the
//! configured authentication, the state transitions) are the FSM's and the driver's.

mod auth;
mod control;
mod sha1;
#[cfg(test)]
mod tests;

pub use auth::{Auth, AuthType};
pub use control::{ControlPacket, Diag, State, HEADER_LEN, VERSION};
pub use sha1::{sign_sha1, verify_sha1, SignError, MAX_SHA1_KEY_LEN};

/// A packet that breaks a §6.8.6 rule the codec can check on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 24-byte mandatory section.
    #[error("truncated: {0} bytes, the mandatory section is 24")]
    Truncated(usize),
    /// Version field is not 1.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Length field below 24 (26 with the A bit set).
    #[error("length field {0} too short")]
    LengthTooShort(u8),
    /// Length field larger than the datagram.
    #[error("length field {field} larger than the {datagram}-byte datagram")]
    LengthPastDatagram {
        /// The Length field.
        field: u8,
        /// The UDP payload's length.
        datagram: usize,
    },
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    DetectMultZero,
    /// Multipoint (M) bit set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    MyDiscriminatorZero,
    /// Your Discriminator is zero while the State is Init or Up.
    #[error("your discriminator is zero in state {0}")]
    YourDiscriminatorZero(State),
    /// A bit set but the Length leaves no room for an authentication section.
    #[error("authentication bit set without an authentication section")]
    AuthMissing,
    /// A bit clear but the Length covers bytes past the mandatory section.
    #[error("{0} bytes after the mandatory section without the authentication bit")]
    UnexpectedAuth(usize),
    /// The authentication section's own Auth Len disagrees with the packet Length, or is wrong
    /// for its type.
    #[error("authentication section: auth len {auth_len} for type {auth_type}, {section} bytes")]
    AuthLength {
        /// Auth Type field.
        auth_type: u8,
        /// Auth Len field.
        auth_len: u8,
        /// Bytes the packet's Length leaves for the section.
        section: usize,
    },
}

impl DecodeError {
    /// A short stable name, used as a counter label.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Version(_) => "version",
            DecodeError::LengthTooShort(_) | DecodeError::LengthPastDatagram { .. } => "length",
            DecodeError::DetectMultZero => "detect_mult_zero",
            DecodeError::Multipoint => "multipoint",
            DecodeError::MyDiscriminatorZero => "my_discriminator_zero",
            DecodeError::YourDiscriminatorZero(_) => "your_discriminator_zero",
            DecodeError::AuthMissing
            | DecodeError::UnexpectedAuth(_)
            | DecodeError::AuthLength { .. } => "auth_section",
        }
    }
}
