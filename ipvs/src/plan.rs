//! Plans: ordered lists of single-object operations, their JSON wire form, their
//! `ipvsadm`-like text, and their pure application to a [`Tree`].
//!
//! A plan is what [`crate::diff`] computes and what [`crate::Ipvs::apply`] executes; the
//! arbiter sends one to clients as `changes`, and a client applies it to its mirror copy
//! with [`Tree::apply_plan`], which fails exactly where the kernel would.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Errno, OpKind};
use crate::ipvsadm;
use crate::model::{Dest, DestId, DestKey, Service, ServiceKey, ServiceSpec, Tree};

/// One operation on one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// Add a service without destinations (`ipvsadm -A`).
    AddService {
        /// The service.
        service: ServiceSpec,
    },
    /// Change a service's scheduler, flags, timeout, netmask or engine in place (`-E`).
    EditService {
        /// The new settings.
        service: ServiceSpec,
    },
    /// Delete a service and, with it, its destinations (`-D`).
    DelService {
        /// The service.
        service: ServiceKey,
    },
    /// Add a destination (`-a`).
    AddDest {
        /// Its service.
        service: ServiceKey,
        /// The destination.
        dest: Dest,
    },
    /// Change a destination's weight, method, thresholds or tunnel in place (`-e`).
    EditDest {
        /// Its service.
        service: ServiceKey,
        /// The new settings.
        dest: Dest,
    },
    /// Delete a destination (`-d`).
    DelDest {
        /// Its service.
        service: ServiceKey,
        /// The destination.
        dest: DestKey,
    },
}

impl Op {
    /// What kind of operation.
    pub fn kind(&self) -> OpKind {
        match self {
            Self::AddService { .. } => OpKind::AddService,
            Self::EditService { .. } => OpKind::EditService,
            Self::DelService { .. } => OpKind::DelService,
            Self::AddDest { .. } => OpKind::AddDest,
            Self::EditDest { .. } => OpKind::EditDest,
            Self::DelDest { .. } => OpKind::DelDest,
        }
    }

    /// The service the operation is about.
    pub fn service_key(&self) -> &ServiceKey {
        match self {
            Self::AddService { service } | Self::EditService { service } => &service.key,
            Self::DelService { service }
            | Self::AddDest { service, .. }
            | Self::EditDest { service, .. }
            | Self::DelDest { service, .. } => service,
        }
    }

    /// Canonical id of the object (`tcp:192.0.2.1:80` or `tcp:192.0.2.1:80 -> 198.51.100.5:80`).
    pub fn id(&self) -> String {
        match self {
            Self::AddDest { service, dest } | Self::EditDest { service, dest } => {
                DestId(service, &dest.key).to_string()
            }
            Self::DelDest { service, dest } => DestId(service, dest).to_string(),
            _ => self.service_key().to_string(),
        }
    }
}

impl fmt::Display for Op {
    /// The operation as an `ipvsadm -R` line (`-A -t 192.0.2.1:80 -s wrr`,
    /// `-e -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3`, …).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddService { service } => write!(f, "-A {}", ipvsadm::service_args(service)),
            Self::EditService { service } => write!(f, "-E {}", ipvsadm::service_args(service)),
            Self::DelService { service } => write!(f, "-D {}", ipvsadm::service_selector(service)),
            Self::AddDest { service, dest } => {
                write!(f, "-a {}", ipvsadm::dest_args(service, dest, true))
            }
            Self::EditDest { service, dest } => {
                write!(f, "-e {}", ipvsadm::dest_args(service, dest, true))
            }
            Self::DelDest { service, dest } => {
                write!(
                    f,
                    "-d {} -r {}",
                    ipvsadm::service_selector(service),
                    ipvsadm::dest_addr(dest)
                )
            }
        }
    }
}

/// An ordered list of operations. Order matters: a service is added before its
/// destinations; deletions come before additions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The operations, in execution order.
    pub ops: Vec<Op>,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

impl fmt::Display for Plan {
    /// One `ipvsadm -R` line per operation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.ops {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

/// An operation of a plan that does not fit the tree it is applied to; `errno` is what
/// the kernel would answer (`EEXIST`, `ESRCH` for a missing service, `ENOENT` for a
/// missing destination).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op {index} ({op} {id}): {errno}")]
pub struct PlanConflict {
    /// Position of the operation in the plan.
    pub index: usize,
    /// The operation.
    pub op: OpKind,
    /// Canonical id of the object.
    pub id: String,
    /// What the kernel would answer.
    pub errno: Errno,
}

impl Tree {
    /// Applies a plan to this tree as the kernel would, operation by operation. Operations
    /// that do not fit (adding what exists, changing what does not) are skipped and
    /// returned; the rest are applied.
    pub fn apply_plan(&mut self, plan: &Plan) -> Result<(), Vec<PlanConflict>> {
        let mut conflicts = Vec::new();
        for (index, op) in plan.ops.iter().enumerate() {
            if let Err(errno) = self.apply_op(op) {
                conflicts.push(PlanConflict {
                    index,
                    op: op.kind(),
                    id: op.id(),
                    errno,
                });
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(conflicts)
        }
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::AddService { service } => {
                if self.get(&service.key).is_some() {
                    return Err(Errno::EEXIST);
                }
                self.insert(Service::new(service.clone()));
            }
            Op::EditService { service } => {
                let svc = self.get_mut(&service.key).ok_or(Errno::ESRCH)?;
                svc.spec = service.clone();
            }
            Op::DelService { service } => {
                self.remove(service).ok_or(Errno::ESRCH)?;
            }
            Op::AddDest { service, dest } => {
                let svc = self.get_mut(service).ok_or(Errno::ESRCH)?;
                if svc.dests.contains_key(&dest.key) {
                    return Err(Errno::EEXIST);
                }
                svc.insert_dest(dest.clone());
            }
            Op::EditDest { service, dest } => {
                let svc = self.get_mut(service).ok_or(Errno::ESRCH)?;
                let slot = svc.dests.get_mut(&dest.key).ok_or(Errno::ENOENT)?;
                *slot = dest.clone();
            }
            Op::DelDest { service, dest } => {
                let svc = self.get_mut(service).ok_or(Errno::ESRCH)?;
                svc.dests.remove(dest).ok_or(Errno::ENOENT)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn plan_json_and_text() {
        let key: ServiceKey = "tcp:192.0.2.1:80".parse().unwrap();
        let plan = Plan {
            ops: vec![
                Op::AddService {
                    service: ServiceSpec::new(key, "wrr").persistent(300),
                },
                Op::AddDest {
                    service: key,
                    dest: Dest::new("198.51.100.5".parse().unwrap(), 80).weight(3),
                },
                Op::DelDest {
                    service: key,
                    dest: DestKey::new("198.51.100.6".parse().unwrap(), 8080),
                },
            ],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""op":"add_service""#), "{json}");
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        assert_eq!(
            plan.to_string(),
            "-A -t 192.0.2.1:80 -s wrr -p 300\n\
             -a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3\n\
             -d -t 192.0.2.1:80 -r 198.51.100.6:8080\n"
        );
    }

    #[test]
    fn apply_plan_reports_what_the_kernel_would_refuse() {
        let key: ServiceKey = "udp:[2001:db8::1]:53".parse().unwrap();
        let dest = Dest::new("2001:db8:1::5".parse().unwrap(), 53);
        let plan = Plan {
            ops: vec![
                Op::AddDest {
                    service: key,
                    dest: dest.clone(),
                },
                Op::AddService {
                    service: ServiceSpec::new(key, "rr"),
                },
                Op::AddDest {
                    service: key,
                    dest: dest.clone(),
                },
                Op::AddService {
                    service: ServiceSpec::new(key, "rr"),
                },
                Op::EditDest {
                    service: key,
                    dest: Dest::new("2001:db8:1::6".parse().unwrap(), 53),
                },
            ],
        };
        let mut tree = Tree::new();
        let conflicts = tree.apply_plan(&plan).unwrap_err();
        let got: Vec<(usize, Errno)> = conflicts.iter().map(|c| (c.index, c.errno)).collect();
        assert_eq!(
            got,
            [(0, Errno::ESRCH), (3, Errno::EEXIST), (4, Errno::ENOENT)]
        );
        assert_eq!(tree.dest_count(), 1);
    }
}
