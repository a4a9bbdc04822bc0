//! The core in fallback: keepalived's quorum calls announce and withdraw in the usual order,
//! nothing is mirrored, and the hand-back applies the arbiter's tree before it reports.

use super::*;

fn other() -> IpAddr {
    ip("203.0.113.20")
}

fn tree_msg(serial: u64, vips: &[IpAddr]) -> Message {
    Message::Tree(TreeAnswer {
        serial,
        tree: tree_of(vips.iter().map(|v| svc(*v, 80, 1)).collect()),
    })
}

/// `vip()` announced by the arbiter with a tree, then the fallback entered.
fn in_fallback() -> Sim {
    let mut sim = Sim::announced(vip(), 150);
    sim.msg(tree_msg(1, &[vip()]));
    sim.reconciles.clear();
    sim.plans.clear();
    sim.st.enter_local();
    assert_eq!(sim.st.local(), Some(Local::Owned));
    sim.sent.clear();
    sim
}

#[test]
fn in_fallback_nothing_is_mirrored_and_the_arbiters_announces_are_ignored() {
    let mut sim = in_fallback();
    sim.msg(tree_msg(2, &[]));
    sim.advance(Duration::from_secs(600));
    assert!(sim.reconciles.is_empty(), "{:?}", sim.reconciles);
    assert!(sim.plans.is_empty());
    sim.fin(vip());
    sim.syn(other(), 100);
    assert!(sim.withdraws.is_empty());
    assert!(sim.prepares.is_empty());
    assert_eq!(sim.routes.get(&vip()), Some(&150));
    assert!(sim.has_note(|n| matches!(n, Note::InFallback("fin_announce"))));
}

#[test]
fn a_local_up_announces_with_its_local_pref_and_asks_no_arbiter() {
    let mut sim = Sim::new();
    sim.mapping(&[vip(), other()]);
    sim.st.enter_local();
    sim.sent.clear();
    let out = sim
        .st
        .local_quorum(sim.now, other(), true, Some(120))
        .unwrap();
    sim.take(out);
    // keepalived owns IPVS: the prepare puts no services.
    assert_eq!(sim.prepares.front().map(|p| p.2.clone()), Some(None));
    sim.finish_prepare(true);
    assert_eq!(
        sim.st.vip_state(other()),
        State::Announced { local_pref: 120 }
    );
    assert_eq!(sim.routes.get(&other()), Some(&120));
    assert_eq!(
        sim.count_sent(|m| matches!(m, Message::AckPrepared(_))),
        0,
        "{:?}",
        sim.sent_kinds()
    );
}

#[test]
fn a_local_up_without_a_local_pref_takes_the_default() {
    let mut sim = Sim::new();
    sim.mapping(&[vip()]);
    sim.st.enter_local();
    let out = sim.st.local_quorum(sim.now, vip(), true, None).unwrap();
    sim.take(out);
    sim.finish_prepare(true);
    assert_eq!(sim.routes.get(&vip()), Some(&LOCAL_PREF_DEFAULT));
}

#[test]
fn a_vip_announced_through_the_switch_is_never_withdrawn_by_it() {
    let mut sim = in_fallback();
    // keepalived's first quorum_up of a VIP the arbiter announced (another LOCAL_PREF spelled
    // in its config): nothing changes at the routers.
    let out = sim
        .st
        .local_quorum(sim.now, vip(), true, Some(100))
        .unwrap();
    sim.take(out);
    sim.settle();
    assert_eq!(sim.routes.get(&vip()), Some(&150));
    // And back: the hand-back and the arbiter's announces again.
    let out = sim.st.hand_back(sim.now);
    sim.take(out);
    sim.msg(tree_msg(3, &[vip()]));
    let out = sim.st.reconciled(sim.now, 3, Ok(()));
    sim.take(out);
    sim.syn(vip(), 150);
    sim.go(vip(), 150);
    sim.settle();
    assert!(sim.withdrawn_at.is_empty(), "{:?}", sim.withdrawn_at);
    assert_eq!(sim.routes.get(&vip()), Some(&150));
    assert!(sim.addresses.contains(&vip()));
}

#[test]
fn a_local_down_withdraws_and_the_address_goes_after_the_grace() {
    let mut sim = in_fallback();
    let out = sim.st.local_quorum(sim.now, vip(), false, None).unwrap();
    sim.take(out);
    assert_eq!(sim.withdraws.len(), 1);
    assert!(
        sim.removals.is_empty(),
        "the address waits for the withdraw"
    );
    sim.finish_withdraw();
    assert!(sim.removals.is_empty(), "the address waits for the grace");
    sim.advance(GRACE);
    sim.finish_removal();
    assert!(!sim.routes.contains_key(&vip()));
    assert!(!sim.addresses.contains(&vip()));
    assert!(sim.removed_at[0].1 >= sim.withdrawn_at[0].1 + GRACE);
    // The VIP's services are keepalived's: the removal leaves them.
    assert!(sim.services_removed.is_empty());
}

#[test]
fn local_calls_are_refused_outside_fallback_and_for_other_vips() {
    let mut sim = Sim::announced(vip(), 150);
    assert_eq!(
        sim.st
            .local_quorum(sim.now, vip(), false, None)
            .unwrap_err(),
        LocalRefused::NotInFallback
    );
    sim.st.enter_local();
    assert_eq!(
        sim.st
            .local_quorum(sim.now, other(), true, None)
            .unwrap_err(),
        LocalRefused::NotMine
    );
    let out = sim.st.hand_back(sim.now);
    sim.take(out);
    assert_eq!(
        sim.st
            .local_quorum(sim.now, vip(), false, None)
            .unwrap_err(),
        LocalRefused::NotInFallback,
        "once handing back, the arbiter decides"
    );
    assert_eq!(sim.routes.get(&vip()), Some(&150));
}

#[test]
fn the_hand_back_reads_the_tree_then_applies_it_in_full_then_reports() {
    let mut sim = in_fallback();
    let out = sim.st.hand_back(sim.now);
    sim.take(out);
    assert_eq!(sim.sent_kinds(), ["mapping", "tree", "announces", "sync"]);
    assert_eq!(sim.st.local(), Some(Local::AwaitTree));
    // Time alone does not touch the kernel before the tree is read again.
    sim.advance(Duration::from_secs(600));
    assert!(sim.reconciles.is_empty());
    sim.msg(tree_msg(7, &[vip()]));
    assert_eq!(sim.st.local(), Some(Local::AwaitKernel));
    // A full reconcile (dump, then the difference), not a plan on a guess.
    assert_eq!(sim.reconciles.len(), 1);
    assert!(sim.plans.is_empty());
    assert_eq!(sim.taken_back, 0);
    let out = sim.st.reconciled(sim.now, 7, Err("netlink: busy".into()));
    sim.take(out);
    assert_eq!(sim.taken_back, 0, "not taken back while the kernel refused");
    sim.advance(Duration::ZERO);
    assert_eq!(sim.reconciles.len(), 2);
    let out = sim.st.reconciled(sim.now, 7, Ok(()));
    sim.take(out);
    assert_eq!(sim.taken_back, 1);
    assert_eq!(sim.st.local(), None);
    // Mirroring again.
    sim.msg(tree_msg(8, &[]));
    assert_eq!(sim.plans.len(), 1);
}

#[test]
fn with_ipvs_false_the_hand_back_reports_once_the_tree_is_read() {
    let mut sim = Sim::with(Settings {
        ipvs: false,
        ..settings()
    });
    sim.mapping(&[vip()]);
    sim.st.enter_local();
    let out = sim.st.hand_back(sim.now);
    sim.take(out);
    assert_eq!(sim.taken_back, 0);
    sim.msg(tree_msg(1, &[vip()]));
    assert_eq!(sim.taken_back, 1);
    assert_eq!(sim.st.local(), None);
}

#[test]
fn a_hand_back_that_timed_out_goes_back_to_keepalived() {
    let mut sim = in_fallback();
    let out = sim.st.hand_back(sim.now);
    sim.take(out);
    sim.st.enter_local();
    sim.msg(tree_msg(9, &[vip()]));
    assert!(sim.reconciles.is_empty());
    assert_eq!(sim.taken_back, 0);
    let out = sim.st.reconciled(sim.now, 9, Ok(()));
    sim.take(out);
    assert_eq!(sim.taken_back, 0);
}
