//! Virtual services.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Dest, DestKey, Family, ServiceFlags, ServiceKey, PE_NAME_MAX, SCHED_NAME_MAX};
use crate::error::ModelError;

/// Everything the kernel keeps of a service except its destinations: what
/// `ipvsadm -A`/`-E` sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    /// Identity.
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `lc`, `wlc`, `sh`, `mh`, …), `ipvsadm -s`.
    pub scheduler: String,
    /// Flags; [`ServiceFlags::HASHED`] is never kept.
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (`ipvsadm -p`); meaningful with
    /// [`ServiceFlags::PERSISTENT`].
    pub timeout: u32,
    /// Persistence granularity as a prefix length (`ipvsadm -M`): 32 or 128 is per client.
    pub netmask: u8,
    /// Persistence engine (`ipvsadm --pe sip`).
    pub pe_name: Option<String>,
}

impl ServiceSpec {
    /// A service with `scheduler`, no flags, no persistence, a full netmask.
    pub fn new(key: ServiceKey, scheduler: impl Into<String>) -> Self {
        Self {
            key,
            scheduler: scheduler.into(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: key.family().max_prefix(),
            pe_name: None,
        }
    }

    /// Makes the service persistent for `timeout` seconds (`ipvsadm -p TIMEOUT`).
    #[must_use]
    pub fn persistent(mut self, timeout: u32) -> Self {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = timeout;
        self
    }

    /// Checks what the kernel would refuse for structural reasons, naming the service.
    pub fn validate(&self) -> Result<(), ModelError> {
        let id = || self.key.to_string();
        if self.scheduler.is_empty()
            || self.scheduler.len() > SCHED_NAME_MAX
            || self.scheduler.contains('\0')
        {
            return Err(ModelError::Invalid {
                id: id(),
                reason: format!(
                    "scheduler name {:?} must be 1..={SCHED_NAME_MAX} bytes",
                    self.scheduler
                ),
            });
        }
        if let Some(pe) = &self.pe_name {
            if pe.is_empty() || pe.len() > PE_NAME_MAX || pe.contains('\0') {
                return Err(ModelError::Invalid {
                    id: id(),
                    reason: format!(
                        "persistence engine name {pe:?} must be 1..={PE_NAME_MAX} bytes"
                    ),
                });
            }
        }
        let max = self.key.family().max_prefix();
        if self.netmask > max || (self.key.family() == Family::Inet6 && self.netmask == 0) {
            return Err(ModelError::Invalid {
                id: id(),
                reason: format!("netmask /{} out of range for this family", self.netmask),
            });
        }
        if let ServiceKey::Fwmark { mark: 0, .. } = self.key {
            return Err(ModelError::Invalid {
                id: id(),
                reason: "fwmark 0 is not a firewall mark".into(),
            });
        }
        Ok(())
    }
}

/// Traffic counters of a service or destination (`IPVS_STATS_ATTR_*`, 64-bit form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connection rate (per second).
    pub cps: u64,
    /// Incoming packet rate.
    pub inpps: u64,
    /// Outgoing packet rate.
    pub outpps: u64,
    /// Incoming byte rate.
    pub inbps: u64,
    /// Outgoing byte rate.
    pub outbps: u64,
}

/// A virtual service with its destinations.
///
/// Equality ignores `stats`.
#[derive(Debug, Clone)]
pub struct Service {
    /// What `ipvsadm -A` sets.
    pub spec: ServiceSpec,
    /// Real servers, keyed and ordered by address and port.
    pub dests: BTreeMap<DestKey, Dest>,
    /// Counters, present on dumps only.
    pub stats: Option<Stats>,
}

impl Service {
    /// A service without destinations.
    pub fn new(spec: ServiceSpec) -> Self {
        Self {
            spec,
            dests: BTreeMap::new(),
            stats: None,
        }
    }

    /// Identity.
    pub fn key(&self) -> &ServiceKey {
        &self.spec.key
    }

    /// Adds (or replaces) a destination; builder style.
    #[must_use]
    pub fn with_dest(mut self, dest: Dest) -> Self {
        self.insert_dest(dest);
        self
    }

    /// Adds (or replaces) a destination.
    pub fn insert_dest(&mut self, dest: Dest) {
        self.dests.insert(dest.key, dest);
    }
}

impl PartialEq for Service {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.dests == other.dests
    }
}

impl Eq for Service {}
