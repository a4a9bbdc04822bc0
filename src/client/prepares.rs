//! VIP prepares (firewall check, the VIP's IPVS services, its address), at most
//! [`MAX_PREPARING`] at a time; the others wait in a queue, in order.
//!
//! A cold start asks for one prepare per VIP at once. A task each would hold 10,000 futures
//! (~0.75 KiB apiece) that only wait for the address slots (`announce::addr` lets 64 address
//! requests out at once); the queue holds what each needs to start, ~80 bytes.

use std::collections::VecDeque;
use std::net::IpAddr;

use ipvs::Tree;

use super::{Client, Done};

/// Prepares in flight at once: as many as the address requests `announce::addr` has out.
pub const MAX_PREPARING: usize = 64;

/// Prepares waiting to start, and how many run.
#[derive(Debug, Default)]
pub struct Prepares {
    waiting: VecDeque<(IpAddr, u64, Option<Tree>)>,
    running: usize,
}

impl Client {
    /// Starts a prepare of `vip`, or queues it when [`MAX_PREPARING`] run.
    pub(super) fn prepare(&mut self, vip: IpAddr, attempt: u64, services: Option<Tree>) {
        if self.prepares.running >= MAX_PREPARING {
            self.prepares.waiting.push_back((vip, attempt, services));
            return;
        }
        self.prepares.running += 1;
        self.spawn_prepare(vip, attempt, services);
    }

    /// A prepare ended: the next waiting one starts.
    pub(super) fn prepare_ended(&mut self) {
        self.prepares.running = self.prepares.running.saturating_sub(1);
        if let Some((vip, attempt, services)) = self.prepares.waiting.pop_front() {
            self.prepares.running += 1;
            self.spawn_prepare(vip, attempt, services);
        }
    }

    fn spawn_prepare(&self, vip: IpAddr, attempt: u64, services: Option<Tree>) {
        let done = self.done.clone();
        let firewall = self.edges.firewall.clone();
        let kernel = self.edges.kernel.clone();
        let addrs = self.edges.addrs.clone();
        let marks = self.core.marks_owned().clone();
        tokio::spawn(async move {
            let result = async {
                firewall.check(vip).await?;
                if let (Some(k), Some(tree)) = (kernel, services) {
                    let a = k
                        .reconcile(tree, std::collections::BTreeSet::from([vip]), marks)
                        .await?;
                    if !a.failures.is_empty() {
                        return Err(format!("IPVS: {}", a.failures.join("; ")));
                    }
                }
                addrs.add(vip).await
            }
            .await;
            let _ = done.send(Done::Prepared {
                vip,
                attempt,
                result,
            });
        });
    }
}
