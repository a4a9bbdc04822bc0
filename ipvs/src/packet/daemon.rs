//! `IPVS_DAEMON_ATTR_*`: the connection-sync daemon state nested in `IPVS_CMD_ATTR_DAEMON`.
//!
//! Unlike ports elsewhere, `MCAST_PORT` is sent in host order (seen in kernel 6.1 replies:
//! port 8848 as bytes `90 22`). The multicast groups are raw addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{read_str, read_u16, read_u32, read_u8, Nla};
use crate::error::DecodeError;

const IPVS_DAEMON_ATTR_STATE: u16 = 1;
const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// `IP_VS_STATE_MASTER`.
const IP_VS_STATE_MASTER: u32 = 1;
/// `IP_VS_STATE_BACKUP`.
const IP_VS_STATE_BACKUP: u32 = 2;

/// One daemon attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonAttr {
    /// `IPVS_DAEMON_ATTR_STATE` (u32): 1 master, 2 backup.
    State(u32),
    /// `IPVS_DAEMON_ATTR_MCAST_IFN` (string).
    McastIfn(String),
    /// `IPVS_DAEMON_ATTR_SYNC_ID` (u32).
    SyncId(u32),
    /// `IPVS_DAEMON_ATTR_SYNC_MAXLEN` (u16).
    SyncMaxlen(u16),
    /// `IPVS_DAEMON_ATTR_MCAST_GROUP` (IPv4 address).
    McastGroup(Ipv4Addr),
    /// `IPVS_DAEMON_ATTR_MCAST_GROUP6` (IPv6 address).
    McastGroup6(Ipv6Addr),
    /// `IPVS_DAEMON_ATTR_MCAST_PORT` (u16, host order).
    McastPort(u16),
    /// `IPVS_DAEMON_ATTR_MCAST_TTL` (u8).
    McastTtl(u8),
    /// Anything else: raw type and payload.
    Other(u16, Vec<u8>),
}

impl Nla for DaemonAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::State(_) => IPVS_DAEMON_ATTR_STATE,
            Self::McastIfn(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            Self::SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            Self::SyncMaxlen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            Self::McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            Self::McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            Self::McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            Self::McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Self::Other(t, _) => *t,
        }
    }
    fn emit_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::State(v) | Self::SyncId(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::McastIfn(s) => super::put_str(out, s),
            Self::SyncMaxlen(v) | Self::McastPort(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::McastGroup(a) => out.extend_from_slice(&a.octets()),
            Self::McastGroup6(a) => out.extend_from_slice(&a.octets()),
            Self::McastTtl(v) => out.push(*v),
            Self::Other(_, p) => out.extend_from_slice(p),
        }
    }
    fn parse(raw_type: u16, p: &[u8]) -> Result<Self, DecodeError> {
        Ok(match raw_type {
            IPVS_DAEMON_ATTR_STATE => Self::State(read_u32("IPVS_DAEMON_ATTR_STATE", p)?),
            IPVS_DAEMON_ATTR_MCAST_IFN => {
                Self::McastIfn(read_str("IPVS_DAEMON_ATTR_MCAST_IFN", p)?)
            }
            IPVS_DAEMON_ATTR_SYNC_ID => Self::SyncId(read_u32("IPVS_DAEMON_ATTR_SYNC_ID", p)?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => {
                Self::SyncMaxlen(read_u16("IPVS_DAEMON_ATTR_SYNC_MAXLEN", p)?)
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP => {
                let b: [u8; 4] = p.try_into().map_err(|_| DecodeError::BadLength {
                    attr: "IPVS_DAEMON_ATTR_MCAST_GROUP",
                    len: p.len(),
                })?;
                Self::McastGroup(Ipv4Addr::from(b))
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => {
                let b: [u8; 16] = p.try_into().map_err(|_| DecodeError::BadLength {
                    attr: "IPVS_DAEMON_ATTR_MCAST_GROUP6",
                    len: p.len(),
                })?;
                Self::McastGroup6(Ipv6Addr::from(b))
            }
            IPVS_DAEMON_ATTR_MCAST_PORT => {
                Self::McastPort(read_u16("IPVS_DAEMON_ATTR_MCAST_PORT", p)?)
            }
            IPVS_DAEMON_ATTR_MCAST_TTL => Self::McastTtl(read_u8("IPVS_DAEMON_ATTR_MCAST_TTL", p)?),
            _ => Self::Other(raw_type, p.to_vec()),
        })
    }
}

/// A running connection-sync daemon, as `ipvsadm -L --daemon` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonState {
    /// `"master"`, `"backup"`, or the number.
    pub state: String,
    /// Multicast interface.
    pub mcast_ifn: String,
    /// Sync id.
    pub sync_id: u32,
    /// Maximum sync message length.
    pub sync_maxlen: Option<u16>,
    /// Multicast group (IPv4 or IPv6).
    pub mcast_group: Option<std::net::IpAddr>,
    /// Multicast port.
    pub mcast_port: Option<u16>,
    /// Multicast TTL.
    pub mcast_ttl: Option<u8>,
}

impl DaemonState {
    /// From a reply's daemon attributes.
    pub fn from_attrs(attrs: &[DaemonAttr]) -> Result<Self, DecodeError> {
        let mut d = DaemonState {
            state: String::new(),
            mcast_ifn: String::new(),
            sync_id: 0,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        };
        let mut state = None;
        for a in attrs {
            match a {
                DaemonAttr::State(v) => state = Some(*v),
                DaemonAttr::McastIfn(s) => d.mcast_ifn = s.clone(),
                DaemonAttr::SyncId(v) => d.sync_id = *v,
                DaemonAttr::SyncMaxlen(v) => d.sync_maxlen = Some(*v),
                DaemonAttr::McastGroup(a) => d.mcast_group = Some((*a).into()),
                DaemonAttr::McastGroup6(a) => d.mcast_group = Some((*a).into()),
                DaemonAttr::McastPort(v) => d.mcast_port = Some(*v),
                DaemonAttr::McastTtl(v) => d.mcast_ttl = Some(*v),
                DaemonAttr::Other(..) => {}
            }
        }
        d.state = match state.ok_or(DecodeError::Missing {
            what: "daemon",
            attr: "IPVS_DAEMON_ATTR_STATE",
        })? {
            IP_VS_STATE_MASTER => "master".into(),
            IP_VS_STATE_BACKUP => "backup".into(),
            n => n.to_string(),
        };
        Ok(d)
    }
}
