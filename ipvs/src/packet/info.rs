//! `IPVS_INFO_ATTR_*`: the top-level attributes of a `GET_INFO` reply (cmd `SET_INFO`).

use serde::Serialize;

use super::{read_u32, Nla};
use crate::error::DecodeError;

const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// One info attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InfoAttr {
    /// `IPVS_INFO_ATTR_VERSION`: `(major << 16) | (minor << 8) | patch`.
    Version(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE`: connection hash table size.
    ConnTabSize(u32),
    /// Anything else: raw type and payload.
    Other(u16, Vec<u8>),
}

impl Nla for InfoAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::Version(_) => IPVS_INFO_ATTR_VERSION,
            Self::ConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Self::Other(t, _) => *t,
        }
    }
    fn emit_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::Version(v) | Self::ConnTabSize(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::Other(_, p) => out.extend_from_slice(p),
        }
    }
    fn parse(raw_type: u16, p: &[u8]) -> Result<Self, DecodeError> {
        Ok(match raw_type {
            IPVS_INFO_ATTR_VERSION => Self::Version(read_u32("IPVS_INFO_ATTR_VERSION", p)?),
            IPVS_INFO_ATTR_CONN_TAB_SIZE => {
                Self::ConnTabSize(read_u32("IPVS_INFO_ATTR_CONN_TAB_SIZE", p)?)
            }
            _ => Self::Other(raw_type, p.to_vec()),
        })
    }
}

/// What `GET_INFO` tells: the IPVS version and the connection table size
/// (`ipvsadm -L` prints "IP Virtual Server version 1.2.1 (size=4096)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Info {
    /// `(major, minor, patch)`.
    pub version: (u8, u8, u8),
    /// Connection hash table size.
    pub conn_tab_size: u32,
}

impl Info {
    /// From the reply's attributes.
    pub fn from_attrs(attrs: &[InfoAttr]) -> Result<Self, DecodeError> {
        let mut version = None;
        let mut size = None;
        for a in attrs {
            match a {
                InfoAttr::Version(v) => version = Some(*v),
                InfoAttr::ConnTabSize(v) => size = Some(*v),
                InfoAttr::Other(..) => {}
            }
        }
        let v = version.ok_or(DecodeError::Missing {
            what: "info",
            attr: "IPVS_INFO_ATTR_VERSION",
        })?;
        let [_, major, minor, patch] = v.to_be_bytes();
        Ok(Self {
            version: (major, minor, patch),
            conn_tab_size: size.ok_or(DecodeError::Missing {
                what: "info",
                attr: "IPVS_INFO_ATTR_CONN_TAB_SIZE",
            })?,
        })
    }
}
