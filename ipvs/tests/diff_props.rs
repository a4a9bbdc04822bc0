//! Property tests of diff/plan: for random pairs of trees, applying `diff(a, b)` to `a`
//! gives `b`; a single change gives a one-operation plan; plans survive their JSON form.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use ipvs::model::{TunFlags, TunType};
use ipvs::{
    diff, Dest, Family, FwdMethod, Op, Plan, Service, ServiceFlags, ServiceKey, ServiceSpec, Tree,
};
use proptest::prelude::*;

// Small pools so that random pairs of trees overlap a lot.
fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (0u8..4, prop::sample::select(vec![80u16, 443, 53]))
            .prop_map(|(i, port)| ServiceKey::tcp(IpAddr::from([192, 0, 2, i]), port)),
        (0u8..3).prop_map(|i| ServiceKey::udp(format!("2001:db8::{i}").parse().unwrap(), 53)),
        (1u32..4, any::<bool>()).prop_map(|(mark, v6)| ServiceKey::fwmark(
            if v6 { Family::Inet6 } else { Family::Inet },
            mark
        )),
    ]
}

fn spec(key: ServiceKey) -> impl Strategy<Value = ServiceSpec> {
    (
        prop::sample::select(vec!["rr", "wrr", "sh", "mh", "wlc"]),
        any::<bool>(),
        prop::sample::select(vec![0u32, 60, 300]),
        any::<bool>(),
    )
        .prop_map(move |(sched, persistent, timeout, sched1)| {
            let mut s = ServiceSpec::new(key, sched);
            if persistent {
                s = s.persistent(timeout);
            }
            s.flags.set(ServiceFlags::SCHED1, sched1);
            s
        })
}

fn dest() -> impl Strategy<Value = Dest> {
    (
        0u8..6,
        prop::sample::select(vec![0u16, 80]),
        0u32..4,
        0u8..3,
        0u32..3,
    )
        .prop_map(|(i, port, weight, fwd, thresh)| {
            let mut d = Dest::new(IpAddr::from([198, 51, 100, i]), port).weight(weight);
            d.fwd = [FwdMethod::Route, FwdMethod::Masq, FwdMethod::Tunnel][usize::from(fwd)];
            d.u_threshold = thresh * 10;
            if d.fwd == FwdMethod::Tunnel && i % 2 == 0 {
                d.tun_type = TunType::Gue;
                d.tun_port = 6080;
                d.tun_flags = TunFlags::CSUM;
            }
            d
        })
}

fn service() -> impl Strategy<Value = Service> {
    service_key().prop_flat_map(|key| {
        (spec(key), prop::collection::vec(dest(), 0..5)).prop_map(|(spec, dests)| {
            let mut svc = Service::new(spec);
            for d in dests {
                svc.insert_dest(d);
            }
            svc
        })
    })
}

fn tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec(service(), 0..8).prop_map(|v| v.into_iter().collect())
}

/// One change to a tree, and the single operation kind it must produce.
#[derive(Debug, Clone)]
enum Change {
    AddService(Service),
    DelService(usize),
    EditScheduler(usize),
    AddDest(usize, Dest),
    DelDest(usize),
    Reweight(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        service().prop_map(|mut s| {
            s.dests.clear();
            Change::AddService(s)
        }),
        any::<usize>().prop_map(Change::DelService),
        any::<usize>().prop_map(Change::EditScheduler),
        (any::<usize>(), dest()).prop_map(|(i, d)| Change::AddDest(i, d)),
        any::<usize>().prop_map(Change::DelDest),
        any::<usize>().prop_map(Change::Reweight),
    ]
}

/// Applies `change` to a copy of `a`; `None` when it does not apply (e.g. nothing to delete).
fn changed(a: &Tree, change: &Change) -> Option<(Tree, &'static str)> {
    let mut b = a.clone();
    let keys: Vec<ServiceKey> = a.services().map(|s| *s.key()).collect();
    let pick = |i: usize| keys.get(i % keys.len().max(1)).copied();
    match change {
        Change::AddService(s) => {
            if a.get(s.key()).is_some() {
                return None;
            }
            b.insert(s.clone());
            Some((b, "add_service"))
        }
        Change::DelService(i) => {
            b.remove(&pick(*i)?);
            Some((b, "del_service"))
        }
        Change::EditScheduler(i) => {
            let svc = b.get_mut(&pick(*i)?)?;
            svc.spec.scheduler = if svc.spec.scheduler == "lc" {
                "nq".into()
            } else {
                "lc".into()
            };
            Some((b, "edit_service"))
        }
        Change::AddDest(i, d) => {
            let svc = b.get_mut(&pick(*i)?)?;
            if svc.dests.contains_key(&d.key) {
                return None;
            }
            svc.insert_dest(d.clone());
            Some((b, "add_dest"))
        }
        Change::DelDest(i) => {
            let svc = b.get_mut(&pick(*i)?)?;
            let k = *svc.dests.keys().next()?;
            svc.dests.remove(&k);
            Some((b, "del_dest"))
        }
        Change::Reweight(i) => {
            let svc = b.get_mut(&pick(*i)?)?;
            let d = svc.dests.values_mut().next()?;
            d.weight += 1;
            Some((b, "edit_dest"))
        }
    }
}

fn op_name(op: &Op) -> String {
    serde_json::to_value(op).unwrap()["op"]
        .as_str()
        .unwrap()
        .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_the_diff_gives_the_wanted_tree(a in tree(), b in tree()) {
        let plan = diff(&a, &b);
        let mut got = a.clone();
        prop_assert_eq!(got.apply_plan(&plan), Ok(()));
        prop_assert_eq!(&got, &b);
        prop_assert!(diff(&got, &b).is_empty());
        // Destinations are never deleted one by one with their service, and a service's
        // additions come after its deletion-free edits.
        for op in &plan.ops {
            if let Op::DelDest { service, .. } = op {
                prop_assert!(b.get(service).is_some());
            }
        }
    }

    #[test]
    fn a_single_change_is_a_single_op(a in tree(), c in change()) {
        if let Some((b, kind)) = changed(&a, &c) {
            let plan = diff(&a, &b);
            prop_assert_eq!(plan.len(), 1, "plan {:?}", plan);
            prop_assert_eq!(op_name(&plan.ops[0]), kind);
        }
    }

    #[test]
    fn plans_survive_their_json_form(a in tree(), b in tree()) {
        let plan = diff(&a, &b);
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        prop_assert_eq!(&back, &plan);
        let tree_back: Tree = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        prop_assert_eq!(tree_back, b);
    }

    #[test]
    fn ipvsadm_text_round_trips_what_it_can_express(a in tree()) {
        // ipvsadm -S prints neither thresholds nor a non-persistent timeout; and for -g/-i
        // real servers of an address service it forces the service's port.
        let mut expressible = a.clone();
        let keys: Vec<ServiceKey> = a.services().map(|s| *s.key()).collect();
        for key in keys {
            let svc = expressible.get_mut(&key).unwrap();
            if !svc.spec.flags.contains(ServiceFlags::PERSISTENT) {
                svc.spec.timeout = 0;
            }
            let mut dests = std::collections::BTreeMap::new();
            for (_, mut d) in std::mem::take(&mut svc.dests) {
                d.u_threshold = 0;
                d.l_threshold = 0;
                if let ServiceKey::Addr { port, .. } = key {
                    if d.fwd != FwdMethod::Masq {
                        d.key.port = port;
                    }
                }
                dests.insert(d.key, d);
            }
            svc.dests = dests;
        }
        let text = expressible.to_ipvsadm_rules();
        prop_assert_eq!(Tree::from_ipvsadm_rules(&text).unwrap(), expressible);
    }
}

#[test]
fn identical_trees_give_an_empty_plan_and_stats_are_ignored() {
    let key = ServiceKey::tcp("192.0.2.1".parse().unwrap(), 80);
    let a: Tree = [Service::new(ServiceSpec::new(key, "wrr"))
        .with_dest(Dest::new("198.51.100.5".parse().unwrap(), 80))]
    .into_iter()
    .collect();
    let mut b = a.clone();
    b.get_mut(&key).unwrap().stats = Some(Default::default());
    assert!(diff(&a, &b).is_empty());
}
