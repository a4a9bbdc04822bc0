//! Decode errors, their NOTIFICATION code/subcode/data (RFC 4271 §6) and RFC 7606 actions.

use std::net::Ipv4Addr;

use super::attrs::attr_type;
use super::Notification;

/// What the session does about an error (RFC 7606 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send the NOTIFICATION and close the session.
    SessionReset,
    /// Treat every prefix of the UPDATE as withdrawn, keep the session.
    TreatAsWithdraw,
    /// Drop the one attribute, process the rest of the UPDATE.
    AttributeDiscard,
}

/// A malformed message. `Notification::from(&err)` gives the exact NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Marker not all ones (1/1).
    #[error("message header: connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    /// Length field out of range for the type (1/2, data = the length field).
    #[error("message header: bad message length {0}")]
    BadMessageLength(u16),
    /// Unknown type (1/3, data = the type).
    #[error("message header: bad message type {0}")]
    BadMessageType(u8),
    /// OPEN version is not 4 (2/1, data = 4, the version we support).
    #[error("OPEN: unsupported version number {0}")]
    UnsupportedVersion(u8),
    /// OPEN "My AS" differs from the configured peer AS (2/2).
    #[error("OPEN: bad peer AS {0}")]
    BadPeerAs(u32),
    /// OPEN BGP identifier is 0 or equals ours on iBGP (2/3).
    #[error("OPEN: bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    /// Unknown optional parameter type (2/4).
    #[error("OPEN: unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// Hold time 1 or 2 (2/6).
    #[error("OPEN: unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// A capability we require was not offered (2/7, RFC 5492; data = the capabilities we need).
    #[error("OPEN: required capability missing")]
    UnsupportedCapability(Vec<u8>),
    /// OPEN body is inconsistent (parameter lengths, capability lengths) (2/0).
    #[error("OPEN: malformed: {0}")]
    MalformedOpen(&'static str),
    /// UPDATE length fields inconsistent with the message (3/1).
    #[error("UPDATE: malformed attribute list")]
    MalformedAttributeList,
    /// Well-known attribute we do not know (3/2, data = the attribute).
    #[error("UPDATE: unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute (flags, type, length, value).
        data: Vec<u8>,
    },
    /// A mandatory attribute is missing (3/3, data = its type code).
    #[error("UPDATE: missing well-known attribute {0}")]
    MissingWellKnown(u8),
    /// A known attribute has the wrong flags (3/4).
    #[error("UPDATE: attribute flags error on type {type_code}")]
    AttributeFlags {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute.
        data: Vec<u8>,
    },
    /// A known attribute has the wrong length (3/5).
    #[error("UPDATE: attribute length error on type {type_code}")]
    AttributeLength {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute.
        data: Vec<u8>,
    },
    /// ORIGIN value not 0..=2 (3/6).
    #[error("UPDATE: invalid ORIGIN")]
    InvalidOrigin(Vec<u8>),
    /// NEXT_HOP is not a usable unicast address (3/8).
    #[error("UPDATE: invalid NEXT_HOP")]
    InvalidNextHop(Vec<u8>),
    /// An optional attribute's value is malformed (3/9).
    #[error("UPDATE: optional attribute error on type {type_code}")]
    OptionalAttribute {
        /// Attribute type code.
        type_code: u8,
        /// The whole attribute.
        data: Vec<u8>,
    },
    /// NLRI or withdrawn prefix cannot be parsed (3/10).
    #[error("UPDATE: invalid network field")]
    InvalidNetworkField,
    /// AS_PATH segments malformed (3/11).
    #[error("UPDATE: malformed AS_PATH")]
    MalformedAsPath(Vec<u8>),
    /// NOTIFICATION body shorter than code + subcode. Never answered with a NOTIFICATION.
    #[error("NOTIFICATION: too short")]
    BadNotification,
    /// ROUTE-REFRESH not exactly 23 bytes (7/1, RFC 7313 §5, data = the message body).
    #[error("ROUTE-REFRESH: invalid message length")]
    RouteRefreshLength(Vec<u8>),
}

impl DecodeError {
    /// The RFC 7606 action for this error.
    pub fn action(&self) -> Action {
        match self {
            DecodeError::AttributeFlags { type_code, .. }
            | DecodeError::AttributeLength { type_code, .. }
            | DecodeError::OptionalAttribute { type_code, .. } => malformed_action(*type_code),
            DecodeError::InvalidOrigin(_)
            | DecodeError::InvalidNextHop(_)
            | DecodeError::MalformedAsPath(_)
            | DecodeError::MissingWellKnown(_) => Action::TreatAsWithdraw,
            _ => Action::SessionReset,
        }
    }

    /// (code, subcode) of the NOTIFICATION for this error.
    pub fn code(&self) -> (u8, u8) {
        match self {
            DecodeError::ConnectionNotSynchronized => (1, 1),
            DecodeError::BadMessageLength(_) | DecodeError::BadNotification => (1, 2),
            DecodeError::BadMessageType(_) => (1, 3),
            DecodeError::UnsupportedVersion(_) => (2, 1),
            DecodeError::BadPeerAs(_) => (2, 2),
            DecodeError::BadBgpIdentifier(_) => (2, 3),
            DecodeError::UnsupportedOptionalParameter(_) => (2, 4),
            DecodeError::UnacceptableHoldTime(_) => (2, 6),
            DecodeError::UnsupportedCapability(_) => (2, 7),
            DecodeError::MalformedOpen(_) => (2, 0),
            DecodeError::MalformedAttributeList => (3, 1),
            DecodeError::UnrecognizedWellKnown { .. } => (3, 2),
            DecodeError::MissingWellKnown(_) => (3, 3),
            DecodeError::AttributeFlags { .. } => (3, 4),
            DecodeError::AttributeLength { .. } => (3, 5),
            DecodeError::InvalidOrigin(_) => (3, 6),
            DecodeError::InvalidNextHop(_) => (3, 8),
            DecodeError::OptionalAttribute { .. } => (3, 9),
            DecodeError::InvalidNetworkField => (3, 10),
            DecodeError::MalformedAsPath(_) => (3, 11),
            DecodeError::RouteRefreshLength(_) => (7, 1),
        }
    }

    /// NOTIFICATION data for this error.
    pub fn data(&self) -> Vec<u8> {
        match self {
            DecodeError::BadMessageLength(l) => l.to_be_bytes().to_vec(),
            DecodeError::BadMessageType(t) => vec![*t],
            // RFC 4271 §6.2: the largest locally supported version.
            DecodeError::UnsupportedVersion(_) => vec![0, 4],
            DecodeError::UnsupportedOptionalParameter(_) => vec![],
            DecodeError::UnsupportedCapability(caps) => caps.clone(),
            DecodeError::MissingWellKnown(t) => vec![*t],
            DecodeError::UnrecognizedWellKnown { data, .. }
            | DecodeError::AttributeFlags { data, .. }
            | DecodeError::AttributeLength { data, .. }
            | DecodeError::OptionalAttribute { data, .. }
            | DecodeError::InvalidOrigin(data)
            | DecodeError::InvalidNextHop(data)
            | DecodeError::MalformedAsPath(data)
            | DecodeError::RouteRefreshLength(data) => data.clone(),
            _ => vec![],
        }
    }
}

/// RFC 7606 §7: what to do with a malformed attribute of a given type.
fn malformed_action(type_code: u8) -> Action {
    match type_code {
        attr_type::ATOMIC_AGGREGATE
        | attr_type::AGGREGATOR
        | attr_type::AS4_PATH
        | attr_type::AS4_AGGREGATOR => Action::AttributeDiscard,
        attr_type::MP_REACH | attr_type::MP_UNREACH => Action::SessionReset,
        _ => Action::TreatAsWithdraw,
    }
}

impl From<&DecodeError> for Notification {
    fn from(e: &DecodeError) -> Self {
        let (code, subcode) = e.code();
        Notification {
            code,
            subcode,
            data: e.data(),
        }
    }
}
