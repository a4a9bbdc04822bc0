//! The difference of two trees as a minimal [`Plan`].
//!
//! Rules, each one operation per changed object:
//! - a service only in `actual` is deleted with one `DelService` (the kernel drops its
//!   destinations with it, so they are not deleted one by one);
//! - a service whose scheduler, flags, timeout, netmask or engine changed is edited in
//!   place, never deleted and re-added (that would drop its connections);
//! - a destination whose weight, method, thresholds or tunnel changed is edited in place;
//! - order: service deletions first; then, per kept service, its edit, its destination
//!   deletions, edits and additions; then new services, each followed by its destinations.

use crate::model::{Service, Tree};
use crate::plan::{Op, Plan};

/// The operations that turn `actual` into `wanted`. Counters are ignored.
pub fn diff(actual: &Tree, wanted: &Tree) -> Plan {
    let mut ops = Vec::new();
    for svc in actual.services() {
        if wanted.get(svc.key()).is_none() {
            ops.push(Op::DelService {
                service: *svc.key(),
            });
        }
    }
    let mut additions = Vec::new();
    for want in wanted.services() {
        match actual.get(want.key()) {
            Some(have) => diff_service(have, want, &mut ops),
            None => {
                additions.push(Op::AddService {
                    service: want.spec.clone(),
                });
                for dest in want.dests.values() {
                    additions.push(Op::AddDest {
                        service: *want.key(),
                        dest: strip(dest),
                    });
                }
            }
        }
    }
    ops.extend(additions);
    Plan { ops }
}

fn diff_service(have: &Service, want: &Service, ops: &mut Vec<Op>) {
    let key = *want.key();
    if have.spec != want.spec {
        ops.push(Op::EditService {
            service: want.spec.clone(),
        });
    }
    for dest in have.dests.keys() {
        if !want.dests.contains_key(dest) {
            ops.push(Op::DelDest {
                service: key,
                dest: *dest,
            });
        }
    }
    let mut adds = Vec::new();
    for (dkey, dest) in &want.dests {
        match have.dests.get(dkey) {
            Some(old) if old == dest => {}
            Some(_) => ops.push(Op::EditDest {
                service: key,
                dest: strip(dest),
            }),
            None => adds.push(Op::AddDest {
                service: key,
                dest: strip(dest),
            }),
        }
    }
    ops.extend(adds);
}

/// Plans carry settings, not counters.
fn strip(dest: &crate::model::Dest) -> crate::model::Dest {
    let mut d = dest.clone();
    d.stats = None;
    d
}
