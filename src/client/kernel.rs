//! The balancer's IPVS mirror: the arbiter's tree, cut down to this balancer's VIPs, made
//! real in the kernel by plan-then-execute.
//!
//! ```text
//!  tree / changes ─▶ mirror (arbiter's whole tree, by serial)
//!                        │ filter_vips(mine)
//!                        ▼
//!  kernel dump ─filter_vips(owned)─▶ diff ─▶ Plan ─▶ Ipvs::apply (spawn_blocking) ─▶ report
//! ```
//!
//! Services of VIPs that are neither in this balancer's mapping nor were in it before are
//! never touched: an operator's own services on the balancer survive. A fwmark service goes
//! with the VIP the mapping gives its mark (`@fwmarks`, from the `quorum_up` of keepalived's
//! `virtual_server fwmark N`): it is mirrored, prepared and removed with that VIP. Fwmark
//! services of marks no mapping of this run gave are never touched.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipvs::{FwmarkVips, Ipvs, Plan, Tree};

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Operations planned.
    pub planned: usize,
    /// Operations that failed, as text for the log.
    pub failures: Vec<String>,
    /// Wall time of dump + diff + apply.
    pub took: Duration,
}

/// Errors that stop a reconcile before it applies anything.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Dump failed (netlink).
    #[error("IPVS dump failed: {0}")]
    Dump(#[from] ipvs::IpvsError),
    /// The blocking task died.
    #[error("IPVS task failed: {0}")]
    Join(String),
}

/// Shared kernel handle (the netlink socket is blocking: used from `spawn_blocking` only).
#[derive(Clone)]
pub struct Kernel(Arc<Mutex<Ipvs>>);

impl Kernel {
    /// Connects to the kernel's IPVS family.
    pub fn connect() -> Result<Self, ipvs::IpvsError> {
        Ok(Kernel(Arc::new(Mutex::new(Ipvs::connect()?))))
    }

    /// Makes the kernel's services for `owned` VIPs (and the fwmark services `marks` gives
    /// them) equal `wanted` (already filtered).
    pub async fn reconcile(
        &self,
        wanted: Tree,
        owned: BTreeSet<IpAddr>,
        marks: FwmarkVips,
    ) -> Result<Applied, KernelError> {
        let this = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let mut ipvs = this.lock().unwrap_or_else(|e| e.into_inner());
            // Only the owned VIPs' services and their destinations are read.
            let actual = ipvs.dump_vips(&owned, &marks)?;
            let plan = ipvs::diff(&actual, &wanted);
            let report = ipvs.apply(&plan);
            Ok(Applied {
                planned: plan.len(),
                failures: report
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.op.id(), f.error))
                    .collect(),
                took: t0.elapsed(),
            })
        })
        .await
        .map_err(|e| KernelError::Join(e.to_string()))?
    }
}

impl Kernel {
    /// Applies `plan` as is, without a dump: the caller knows what the kernel holds.
    pub async fn apply(&self, plan: Plan) -> Result<Applied, KernelError> {
        let this = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let mut ipvs = this.lock().unwrap_or_else(|e| e.into_inner());
            let report = ipvs.apply(&plan);
            Applied {
                planned: plan.len(),
                failures: report
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.op.id(), f.error))
                    .collect(),
                took: t0.elapsed(),
            }
        })
        .await
        .map_err(|e| KernelError::Join(e.to_string()))
    }

    /// Active + inactive connections of `vip`'s services, its fwmark services by `marks`
    /// included (its services and their destinations only, not the whole table).
    pub async fn conns(&self, vip: IpAddr, marks: FwmarkVips) -> Result<u64, KernelError> {
        let this = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut ipvs = this.lock().unwrap_or_else(|e| e.into_inner());
            let tree = ipvs.dump_vips(&BTreeSet::from([vip]), &marks)?;
            Ok(tree
                .services()
                .flat_map(|s| s.dests.values())
                .filter_map(|d| d.stats.as_ref())
                .map(|st| u64::from(st.active_conns) + u64::from(st.inact_conns))
                .sum())
        })
        .await
        .map_err(|e| KernelError::Join(e.to_string()))?
    }
}

/// The arbiter's tree as this balancer last heard it.
#[derive(Debug, Default)]
pub struct Mirror {
    /// The whole tree at `serial` (`None` before the first `tree`).
    pub tree: Option<Tree>,
    /// Serial of `tree`.
    pub serial: u64,
}

/// Result of feeding `changes` to the mirror.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangesOutcome {
    /// Applied; the mirror is at the new serial.
    Applied,
    /// Not applicable (no tree yet, serial gap, conflict): ask for the whole `tree`.
    NeedTree,
    /// Already applied (duplicate), nothing to do.
    Duplicate,
}

impl Mirror {
    /// Replaces the mirror with a whole tree.
    pub fn set_tree(&mut self, serial: u64, tree: Tree) {
        self.tree = Some(tree);
        self.serial = serial;
    }

    /// Applies `changes` from `from` to `to`.
    pub fn apply_changes(&mut self, from: u64, to: u64, plan: &Plan) -> ChangesOutcome {
        let Some(tree) = self.tree.as_mut() else {
            return ChangesOutcome::NeedTree;
        };
        if to <= self.serial && from < self.serial {
            return ChangesOutcome::Duplicate;
        }
        if from != self.serial {
            return ChangesOutcome::NeedTree;
        }
        let mut next = tree.clone();
        match next.apply_plan(plan) {
            Ok(()) => {
                *tree = next;
                self.serial = to;
                ChangesOutcome::Applied
            }
            Err(_) => ChangesOutcome::NeedTree,
        }
    }

    /// The part of the mirror this balancer must hold: the services of `mine`, with the
    /// fwmark services `marks` gives them.
    pub fn wanted(&self, mine: &BTreeSet<IpAddr>, marks: &FwmarkVips) -> Option<Tree> {
        self.tree.as_ref().map(|t| t.filter_vips(mine, marks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Dest, Service, ServiceKey, ServiceSpec};

    fn svc(vip: &str, port: u16, rs: &[(&str, u32)]) -> Service {
        let mut s = Service::new(ServiceSpec::new(
            ServiceKey::tcp(vip.parse().unwrap(), port),
            "wrr",
        ));
        for (a, w) in rs {
            s.insert_dest(Dest::new(a.parse().unwrap(), port).weight(*w));
        }
        s
    }

    fn tree(services: Vec<Service>) -> Tree {
        let mut t = Tree::new();
        for s in services {
            t.insert(s);
        }
        t
    }

    #[test]
    fn changes_follow_serials_and_gaps_ask_for_the_tree() {
        let a = tree(vec![svc("192.0.2.10", 80, &[("198.51.100.1", 1)])]);
        let b = tree(vec![svc(
            "192.0.2.10",
            80,
            &[("198.51.100.1", 5), ("198.51.100.2", 1)],
        )]);
        let mut m = Mirror::default();
        assert_eq!(
            m.apply_changes(1, 2, &ipvs::diff(&a, &b)),
            ChangesOutcome::NeedTree
        );
        m.set_tree(1, a.clone());
        assert_eq!(
            m.apply_changes(1, 2, &ipvs::diff(&a, &b)),
            ChangesOutcome::Applied
        );
        assert_eq!(m.tree.as_ref(), Some(&b));
        assert_eq!(m.serial, 2);
        assert_eq!(
            m.apply_changes(1, 2, &ipvs::diff(&a, &b)),
            ChangesOutcome::Duplicate
        );
        assert_eq!(
            m.apply_changes(3, 4, &ipvs::diff(&b, &a)),
            ChangesOutcome::NeedTree
        );
        assert_eq!(
            m.tree.as_ref(),
            Some(&b),
            "a gap leaves the mirror as it was"
        );
    }

    #[test]
    fn wanted_keeps_only_my_vips() {
        let t = tree(vec![
            svc("192.0.2.10", 80, &[]),
            svc("192.0.2.11", 80, &[]),
            svc("2001:db8::10", 443, &[]),
        ]);
        let mut m = Mirror::default();
        m.set_tree(7, t);
        let mine: BTreeSet<IpAddr> = [
            "192.0.2.11".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ]
        .into();
        let w = m.wanted(&mine, &FwmarkVips::new()).unwrap();
        assert_eq!(w.vips(), mine);
    }
}
