//! End to end, as root, with real processes: RabbitMQ, gobgpd routers, the arbiter and the
//! balancers of the real binary, in network namespaces (see `labkit::fleet`). The host
//! kernel has no IPVS, so these run announce-only (`ipvs = false`); the IPVS mirror is
//! proven in the VM lane. Run with `netns-lab/test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use labkit::fleet::{Fleet, FleetOpts, EBGP_AS, LOCAL_AS};
use labkit::metrics::{metric, metric_by, metric_with};
use nix::sys::signal::Signal;

const LOCAL_PREF: u64 = 5;
const MED: u64 = 4;
const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A fleet of the binary under test.
fn start(opts: FleetOpts) -> Fleet {
    Fleet::start(env!("CARGO_BIN_EXE_ipvs-sync").as_ref(), opts).unwrap()
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_announce_and_withdraw_with_local_pref_ibgp_ebgp_v4_v6() {
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let v6 = ip("2001:db8:f00::10");
    let f = start(FleetOpts {
        routers: vec![LOCAL_AS, EBGP_AS],
        vips: vec![v4, v6],
        ..Default::default()
    });

    f.quorum("up", "203.0.113.10,b-150,80").unwrap();
    f.quorum("up", "2001:db8:f00::10,b-120,80").unwrap();
    for j in 0..2 {
        for vip in [&v4, &v6] {
            assert!(
                f.wait_paths(j, vip, 1, WAIT).is_some(),
                "r{} lacks {vip}:\n{}",
                j + 1,
                f.client_log(0)
            );
        }
    }
    // iBGP router: LOCAL_PREF from the desc; eBGP router: no LOCAL_PREF, MED = 1000 - LP.
    let lp = f.attr(0, &v4, LOCAL_PREF).expect("LOCAL_PREF on iBGP");
    assert_eq!(lp["value"], 150, "{lp}");
    assert_eq!(f.attr(0, &v6, LOCAL_PREF).unwrap()["value"], 120);
    assert!(
        f.attr(1, &v4, LOCAL_PREF).is_none(),
        "no LOCAL_PREF over eBGP"
    );
    assert_eq!(f.attr(1, &v4, MED).expect("MED on eBGP")["metric"], 850);
    // The VIPs are on lo.
    let lo = f.lo_addrs(0);
    assert!(
        lo.contains("203.0.113.10/32") && lo.contains("2001:db8:f00::10/128"),
        "{lo}"
    );
    // A new local-preference re-announces in place.
    f.quorum("up", "203.0.113.10,b-170,80").unwrap();
    assert!(labkit::wait_until(WAIT, || f
        .attr(0, &v4, LOCAL_PREF)
        .is_some_and(|a| a["value"] == 170)));

    f.quorum("down", "203.0.113.10,b-170,80").unwrap();
    for j in 0..2 {
        assert!(
            f.wait_paths(j, &v4, 0, WAIT).is_some(),
            "r{} still has {v4}",
            j + 1
        );
        assert_eq!(f.path_count(j, &v6), 1, "the other VIP stays");
    }
    assert!(
        labkit::wait_until(WAIT, || !f.lo_addrs(0).contains("203.0.113.10/32")),
        "address removed after withdraw"
    );
    let st = f.client_status(0);
    assert_eq!(st["role"], "client", "{st}");
    assert_eq!(st["broker"]["connected"], true);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_sigterm_and_sigkill_withdraw_at_once_hung_daemon_after_hold_time() {
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts {
        balancers: 2,
        hold_time: 3,
        ..Default::default()
    });
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(
        f.wait_paths(0, &v4, 2, WAIT).is_some(),
        "both balancers announce: {:?}\n{}\n----\n{}\n----\n{}",
        f.paths(0, &v4),
        f.client_log(1),
        f.arbiter_log(),
        f.client_log(0)
    );

    f.signal_client(0, Signal::SIGTERM).unwrap();
    let t = f
        .wait_paths(0, &v4, 1, Duration::from_secs(3))
        .expect("SIGTERM withdraws at once (Cease)");
    assert!(t < Duration::from_secs(2), "took {t:?}");

    // A hung daemon (SIGSTOP: the socket stays open, no keepalives) is withdrawn by the
    // router's hold timer (3 s).
    f.signal_client(1, Signal::SIGSTOP).unwrap();
    let t = f
        .wait_paths(0, &v4, 0, Duration::from_secs(8))
        .expect("hold timer withdraws");
    assert!(
        t >= Duration::from_secs(1),
        "a frozen speaker cannot withdraw by itself ({t:?})"
    );
    f.signal_client(1, Signal::SIGCONT).unwrap();
    f.wait_sessions(1, Duration::from_secs(30)).unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, WAIT).is_some(),
        "re-announced after the session came back:\n{}",
        f.client_log(1)
    );
    // SIGKILL: the kernel closes the TCP session, so the router withdraws at once too.
    f.signal_client(1, Signal::SIGKILL).unwrap();
    let t = f
        .wait_paths(0, &v4, 0, Duration::from_secs(8))
        .expect("SIGKILL withdraws");
    assert!(t < Duration::from_secs(2), "took {t:?}");

    // Restarted, it is told again what to announce.
    f.stop_client(0);
    f.start_client(0).unwrap();
    f.wait_sessions(0, Duration::from_secs(20)).unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, WAIT).is_some(),
        "re-announced after restart:\n{}",
        f.client_log(0)
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_fail_static_without_arbiter_and_reconcile_after() {
    fail_static_then_reconcile(false);
}

/// The same with the lean handler, `ipvs-sync-quorum`: with the arbiter away it runs
/// `ipvs-sync quorum --recorded` in its place, whose fin_announce reaches the balancer
/// through the broker.
#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_lean_handler_without_arbiter_still_withdraws() {
    fail_static_then_reconcile(true);
}

fn fail_static_then_reconcile(lean: bool) {
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts::default());
    let handler = if lean {
        f.lean_quorum_handler()
            .expect("ipvs-sync-quorum beside ipvs-sync")
    } else {
        f.quorum_handler()
    };
    handler.run("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, WAIT).is_some());

    let mon = f.monitor(0, "ipv4").unwrap();
    f.stop_arbiter();
    // The balancer has sent 4 heartbeats (one a second) into the arbiter's absence, and the
    // router has seen no withdraw meanwhile.
    let beats = |f: &Fleet| metric_with(&f.client_metrics(0), SENT, "type", "heartbeat");
    let before = beats(&f);
    let silent = labkit::wait_until(WAIT, || beats(&f) >= before + 4.0);
    assert!(
        silent,
        "the balancer sent no heartbeats:\n{}",
        f.client_log(0)
    );
    assert!(
        mon.take().iter().all(|e| !e.withdrawal),
        "withdrawn while the arbiter was away"
    );
    assert_eq!(
        f.path_count(0, &v4),
        1,
        "balancer keeps announcing while the arbiter is away"
    );

    // The quorum is lost while the arbiter is down: the handler cannot hand the VIP to it,
    // so it publishes the fin_announce to the broker itself, and the withdraw does not wait
    // for the arbiter.
    handler.run("down", "203.0.113.10,b-100,80").unwrap();
    assert!(
        f.wait_paths(0, &v4, 0, Duration::from_secs(1)).is_some(),
        "quorum down with the arbiter away withdrawn within 1 s:\n{}",
        f.client_log(0)
    );
    // Back, the arbiter agrees with the desc file: still withdrawn.
    f.start_arbiter().unwrap();
    handler.run("up", "203.0.113.10,b-100,80").unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, Duration::from_secs(15)).is_some(),
        "announced again after the arbiter came back:\n{}",
        f.arbiter_log()
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_broker_restart_and_router_restart() {
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts::default());
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, WAIT).is_some());

    f.rabbit_mut().unwrap().restart().unwrap();
    assert_eq!(
        f.path_count(0, &v4),
        1,
        "a broker restart withdraws nothing"
    );
    // Once both sides reconnected, a withdraw flows again.
    let ok = labkit::wait_until(Duration::from_secs(30), || {
        f.client_status(0)["broker"]["connected"] == true
    });
    assert!(ok, "client reconnected:\n{}", f.client_log(0));
    // The arbiter is connected again and the client consumes its queue again, so the
    // arbiter's broadcast has somewhere to go.
    let ok = labkit::wait_until(Duration::from_secs(30), || {
        metric(&f.arbiter_metrics(), "ipvs_sync_broker_connected") == 1.0
            && f.client_queue(0).is_ok_and(|q| q.consumers >= 1)
    });
    assert!(ok, "arbiter or client queue not back:\n{}", f.arbiter_log());
    f.quorum("down", "203.0.113.10,b-100,80").unwrap();
    assert!(
        f.wait_paths(0, &v4, 0, Duration::from_secs(15)).is_some(),
        "withdraw after broker restart:\n{}",
        f.arbiter_log()
    );
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, Duration::from_secs(15)).is_some());

    // The router restarts: the speaker reconnects and re-announces (mind gobgpd's 5 s Idle).
    f.routers[0].gobgpd.restart().unwrap();
    f.wait_sessions(0, Duration::from_secs(40)).unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, Duration::from_secs(15)).is_some(),
        "re-announced after router restart"
    );
}

/// Publishes raw bodies to the fleet's exchange with the broker's own credentials, as a
/// stranger who has the broker password but not the message key would.
fn publish_raw(f: &Fleet, routing_key: &str, bodies: &[Vec<u8>]) {
    publish_raw_to(f, ipvs_sync::wire::amqp::EXCHANGE, routing_key, bodies);
}

/// [`publish_raw`] through `exchange`.
fn publish_raw_to(f: &Fleet, exchange: &'static str, routing_key: &str, bodies: &[Vec<u8>]) {
    use lapin::options::BasicPublishOptions;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let url = f.amqp_url();
    let core = f.core.name().to_string();
    let key = routing_key.to_string();
    let bodies = bodies.to_vec();
    std::thread::spawn(move || {
        labkit::Netns::attach(&core).unwrap().enter().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = Connection::connect(&url, ConnectionProperties::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            for b in &bodies {
                ch.basic_publish(
                    exchange.into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    b,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
            conn.close(200, "done".into()).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// The fleet arbiter's node key.
fn arbiter_key(f: &Fleet) -> ipvs_sync::wire::NodeKey {
    ipvs_sync::wire::NodeKey::from_text(&f.spec.arbiter.key.to_text()).unwrap()
}

/// An envelope signed with `key` (see `src/wire/envelope.rs`).
fn sign(
    key: &ipvs_sync::wire::NodeKey,
    kind: &str,
    from: &str,
    to: &str,
    id: (u64, u64),
    body: &str,
) -> Vec<u8> {
    use ipvs_sync::wire::envelope::{seal, Header};
    let header = Header {
        kind: kind.into(),
        from: from.into(),
        to: to.into(),
        id: ipvs_sync::wire::MessageId {
            epoch: id.0,
            seq: id.1,
        },
        ts_ms: 0,
    };
    let body = serde_json::value::RawValue::from_string(body.to_owned()).unwrap();
    seal(key, &header, &body).unwrap()
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_forged_and_garbage_messages_change_nothing() {
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let f = start(FleetOpts::default());
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, WAIT).is_some());

    let body = r#"{"vips":["203.0.113.10"]}"#;
    // Signed by a key that is not the arbiter's; unsigned; and signed by the arbiter's key
    // but from an earlier run (epoch 1), as a replay of a captured message would be.
    let wrong_key = ipvs_sync::wire::NodeKey::generate().unwrap();
    let forged = sign(
        &wrong_key,
        "fin_announce",
        "arbiter",
        "broadcast",
        (u64::MAX, 1),
        body,
    );
    let unsigned = String::from_utf8(forged.clone())
        .unwrap()
        .split(",\"sig\"")
        .next()
        .unwrap()
        .to_owned()
        + "}";
    let replayed = sign(
        &arbiter_key(&f),
        "fin_announce",
        "arbiter",
        "broadcast",
        (1, 1),
        body,
    );
    publish_raw(&f, "broadcast", &[forged, unsigned.into_bytes(), replayed]);
    // 10,000 garbage messages to both sides.
    let garbage: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| match i % 4 {
            0 => i.to_le_bytes().repeat(1 + (i as usize % 7)),
            1 => b"{\"type\":\"fin_announce\"".to_vec(),
            2 => format!("{{\"type\":\"tree\",\"from\":\"x\",\"to\":\"lbs\",\"seq\":{i},\"ts\":0,\"body\":[],\"sig\":\"zz\"}}").into_bytes(),
            _ => vec![0xff; 64],
        })
        .collect();
    publish_raw(&f, "broadcast", &garbage[..5_000]);
    publish_raw(&f, "lbs", &garbage[5_000..]);

    let dropped = |st: &serde_json::Value| {
        st["dropped"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum::<u64>())
            .unwrap_or(0)
    };
    assert!(
        labkit::wait_until(Duration::from_secs(30), || dropped(&f.client_status(0))
            >= 5_003),
        "client counted every bad message: {}",
        f.client_status(0)
    );
    let st = f.client_status(0);
    assert!(st["dropped"]["forged"].as_u64().unwrap_or(0) >= 1, "{st}");
    assert!(st["dropped"]["unsigned"].as_u64().unwrap_or(0) >= 1, "{st}");
    assert!(st["dropped"]["replayed"].as_u64().unwrap_or(0) >= 1, "{st}");
    assert_eq!(f.path_count(0, &v4), 1, "nothing was withdrawn");

    // A correctly signed `sync` whose file goes through a symlink out of sync_dirs is
    // refused; its sibling inside sync_dirs is written.
    let sync_dir = f.balancers[0].dir.join("sync");
    std::os::unix::fs::symlink("/etc", sync_dir.join("etc")).unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let body = format!(
        r#"{{"files":[{{"dir":"{d}","name":"etc/passwd","mode":420,"content_b64":"cHduZWQK"}},{{"dir":"{d}","name":"ok.conf","mode":420,"content_b64":"b2sK"}}]}}"#,
        d = sync_dir.display()
    );
    // In the arbiter's current run (its epoch file), with a seq it will not reach soon.
    let epoch: u64 = std::fs::read_to_string(f.arbiter_dir.join("state/server.epoch"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sync = String::from_utf8(sign(
        &arbiter_key(&f),
        "sync",
        "arbiter",
        "lb1",
        (epoch, 1 << 40),
        &body,
    ))
    .unwrap();
    publish_raw(&f, "lb1", &[sync.into_bytes()]);
    assert!(
        labkit::wait_until(WAIT, || sync_dir.join("ok.conf").exists()),
        "{}",
        f.client_log(0)
    );
    assert_eq!(std::fs::read(sync_dir.join("ok.conf")).unwrap(), b"ok\n");
    assert_eq!(
        std::fs::read("/etc/passwd").unwrap(),
        passwd_before,
        "/etc/passwd untouched"
    );
    assert!(
        f.client_log(0).contains("sync: refused"),
        "the refusal is logged"
    );

    // Both daemons still serve: a real withdraw flows at once.
    f.quorum("down", "203.0.113.10,b-100,80").unwrap();
    assert!(
        f.wait_paths(0, &v4, 0, WAIT).is_some(),
        "{}",
        f.arbiter_log()
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_lost_ack_heals_in_seconds() {
    // The balancer's ack is lost: a slow firewall check holds the prepare while the
    // arbiter is stopped with its prefetch window full of junk, so the ack waits in the
    // broker's `lbs` queue (not in the arbiter's socket) past max_age (2 s, the queue's
    // message TTL) and expires there. The client, still without its go 10 s after the
    // ack, asks for the announces again; without that the VIP would wait for the next
    // announces_request_interval (300 s).
    labkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let (began, go) = (dir.path().join("began"), dir.path().join("go"));
    let check = held_check(dir.path(), &began, &go);
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts {
        max_age: Some(2),
        firewall_check: Some(check),
        ..lost_opts()
    });
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(
        labkit::wait_until(WAIT, || began.exists()),
        "the syn never reached the balancer:\n{}",
        f.client_log(0)
    );
    f.signal_arbiter(Signal::SIGSTOP).unwrap();
    fill_prefetch_window(&f, "lbs", || f.arbiter_queue());
    std::fs::write(&go, "").unwrap();
    let acked = labkit::wait_until(WAIT, || {
        metric_with(&f.client_metrics(0), SENT, "type", "ack_announce") >= 1.0
    });
    assert!(
        acked,
        "the broker never confirmed the ack:\n{}",
        f.client_log(0)
    );
    older_than_max_age(Instant::now(), 2);
    f.signal_arbiter(Signal::SIGCONT).unwrap();
    let healed = f.wait_paths(0, &v4, 1, Duration::from_secs(40));
    assert!(
        healed.is_some(),
        "not announced within 40 s:\n{}",
        f.client_log(0)
    );
    let repairs: f64 = f
        .client_metrics(0)
        .lines()
        .find(|l| l.starts_with("ipvs_sync_ack_repairs_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(repairs >= 1.0, "healed without the ack repair");
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_failed_prepare_is_counted_and_tried_again() {
    // A prepare fails (here the firewall check, as a VIP address change the kernel never
    // answers would): the VIP is not announced, the failure is counted, and the
    // arbiter's syn repair tries again once the balancer's heartbeats keep leaving the
    // VIP out; with the check passing by then, the VIP reaches the router.
    labkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    let check = dir.path().join("firewall-check");
    std::fs::write(&check, format!("#!/bin/sh\ntest -e {}\n", pass.display())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let v4 = ip("203.0.113.10");
    let f = start(FleetOpts {
        firewall_check: Some(check),
        ..FleetOpts::default()
    });
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    let failures = || metric(&f.client_metrics(0), "ipvs_sync_prepare_failures_total");
    assert!(
        labkit::wait_until(WAIT, || failures() >= 1.0),
        "no prepare failure counted:\n{}",
        f.client_log(0)
    );
    assert!(
        f.wait_paths(0, &v4, 1, Duration::from_secs(2)).is_none(),
        "announced although its prepare failed"
    );
    std::fs::write(&pass, "").unwrap();
    let healed = f.wait_paths(0, &v4, 1, Duration::from_secs(40));
    assert!(
        healed.is_some(),
        "not announced within 40 s of the check passing:\n{}",
        f.client_log(0)
    );
    assert!(metric(&f.arbiter_metrics(), "ipvs_sync_syn_repairs_total") >= 1.0);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_stale_syn_heals_in_seconds() {
    // The arbiter's syn_announce goes stale: the balancer is stopped with its prefetch
    // window full of junk, so the syn waits in the broker (not in the balancer's socket)
    // past max_age (2 s, the queue's message TTL) and expires there: the queue empties
    // while nobody consumes. The balancer resumes without it; the arbiter's syn repair
    // (the balancer's heartbeats leave the VIP out for 15 s) sends it again; without that
    // the VIP would wait for the next announces_request_interval (300 s).
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts {
        max_age: Some(2),
        ..lost_opts()
    });
    wait_mapping(&f);
    const RECEIVED: &str = "ipvs_sync_messages_received_total";
    let received_before = metric_with(&metrics_after_now(&f, 0), RECEIVED, "type", "syn_announce");
    let syns = |f: &Fleet| metric_with(&f.arbiter_metrics(), SENT, "type", "syn_announce");
    let before = syns(&f);
    f.signal_client(0, Signal::SIGSTOP).unwrap();
    fill_balancer_windows(&f, 0);
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(
        labkit::wait_until(WAIT, || syns(&f) > before),
        "the broker never confirmed the syn:\n{}",
        f.arbiter_log()
    );
    // The syn waits in the queue, behind the junk the stopped balancer holds, until its
    // TTL ends it there (the arbiter's heartbeats come and expire the same way).
    older_than_max_age(Instant::now(), 2);
    f.signal_client(0, Signal::SIGCONT).unwrap();
    let page = metrics_after_now(&f, 0);
    assert_eq!(
        metric_with(&page, RECEIVED, "type", "syn_announce"),
        received_before,
        "the stale syn was delivered\n{}",
        f.client_log(0)
    );
    let healed = f.wait_paths(0, &v4, 1, Duration::from_secs(40));
    assert!(
        healed.is_some(),
        "not announced within 40 s:\n{}",
        f.client_log(0)
    );
    assert!(
        metric(&f.arbiter_metrics(), "ipvs_sync_syn_repairs_total") >= 1.0,
        "healed without the syn repair"
    );
}

/// Fills the prefetch window of a stopped consumer with junk published with `key`, so
/// what is published next stays in the broker's queue (where its TTL applies) instead of
/// waiting in the consumer's socket; returns once `queue` has junk left over (ready).
fn fill_prefetch_window(
    f: &Fleet,
    key: &str,
    queue: impl Fn() -> std::io::Result<labkit::fleet::QueueState>,
) {
    fill_window_of(f, ipvs_sync::wire::amqp::EXCHANGE, key, queue);
}

/// [`fill_prefetch_window`] for both of balancer `i`'s lanes: the main queue and the
/// announce queue (`syn_announce`, `ack_announce`, `fin_announce` go by the latter), each
/// consumed on a channel with its own prefetch window.
fn fill_balancer_windows(f: &Fleet, i: usize) {
    let host = f.balancers[i].name.clone();
    fill_window_of(f, ipvs_sync::wire::amqp::EXCHANGE, &host, || {
        f.client_queue(i)
    });
    fill_window_of(f, ipvs_sync::wire::amqp::ANNOUNCE_EXCHANGE, &host, || {
        f.queue(&announce_queue(&host))
    });
}

/// A balancer's announce-lane queue.
fn announce_queue(host: &str) -> String {
    format!("{}{host}", ipvs_sync::wire::amqp::ANNOUNCE_QUEUE_PREFIX)
}

fn fill_window_of(
    f: &Fleet,
    exchange: &'static str,
    key: &str,
    queue: impl Fn() -> std::io::Result<labkit::fleet::QueueState>,
) {
    let junk: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().to_vec()).collect();
    publish_raw_to(f, exchange, key, &junk);
    assert!(
        labkit::wait_until(WAIT, || queue().is_ok_and(|q| q.ready >= 1)),
        "the prefetch window of {exchange} {key} never filled: {:?}",
        queue()
    );
}

/// Sessions are up before the client reaches the broker: waits until it has its mapping.
fn wait_mapping(f: &Fleet) {
    assert!(
        labkit::wait_until(WAIT, || f
            .client_log(0)
            .contains("mapping: this balancer serves")),
        "no mapping:\n{}",
        f.client_log(0)
    );
}

/// `ipvs_sync_messages_sent_total`: messages sent and confirmed by the broker, by type.
const SENT: &str = "ipvs_sync_messages_sent_total";

/// A firewall check that creates `began` when it runs and holds the prepare until `go`
/// exists, so a test can act while a VIP is being prepared.
fn held_check(
    dir: &std::path::Path,
    began: &std::path::Path,
    go: &std::path::Path,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let check = dir.join("held-firewall-check");
    std::fs::write(
        &check,
        format!(
            "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            began.display(),
            go.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    check
}

/// Returns once a message the broker confirmed at `confirmed` is older than `max_age`
/// seconds (and half a second more), so its receiver drops it as stale. This waits for
/// the message's age, the condition under test, not for another process.
fn older_than_max_age(confirmed: Instant, max_age: u64) {
    let stale_at = confirmed + Duration::from_secs(max_age) + Duration::from_millis(500);
    std::thread::sleep(stale_at.saturating_duration_since(Instant::now()));
}

/// A fleet for `lose_for_real`: the balancer, then the arbiter, stay stopped for tens of
/// seconds on a loaded machine (each `rabbitmqctl` call takes seconds there). A balancer
/// the arbiter took for gone, or whose broker connection timed out, gets everything
/// again when it comes back, which would heal the loss without the repair under test;
/// one whose BGP session timed out meanwhile loses its routes without any fin.
fn lost_opts() -> FleetOpts {
    FleetOpts {
        hold_time: 90,
        consumer_alive_ttl: 600,
        amqp_heartbeat: Some(60),
        ..FleetOpts::default()
    }
}

/// Loses for real the `kind` message the arbiter sends balancer 0 while `send` runs: the
/// balancer is stopped (and the arbiter has read all it sent before), its prefetch window
/// filled with junk so the broker keeps what follows in the queue, and the queue purged
/// once the broker has confirmed the arbiter's message (so it is in the queue, whatever
/// else, heartbeats say, arrived there meanwhile).
///
/// The arbiter is stopped before the balancer resumes, so no repair of the arbiter's can
/// reach the balancer while the test looks: it returns once the balancer has read all its
/// queue had left (the junk of its window) and its counters say it never received
/// `kind`. The caller checks what the loss left, then resumes the arbiter
/// (`signal_arbiter(SIGCONT)`), which answers the balancer's heartbeats with the repair.
fn lose_for_real(f: &mut Fleet, kind: &str, send: impl FnOnce(&Fleet)) {
    const RECEIVED: &str = "ipvs_sync_messages_received_total";
    // Counted on a page refreshed from now on: the page is written once a second.
    let received_before = metric_with(&metrics_after_now(f, 0), RECEIVED, "type", kind);
    f.signal_client(0, Signal::SIGSTOP).unwrap();
    // The arbiter has read every heartbeat the balancer sent: none is left to answer with
    // a repair of the message about to be lost.
    let read = labkit::wait_until(WAIT, || {
        f.arbiter_queue()
            .is_ok_and(|q| q.ready == 0 && q.unacked == 0)
    });
    assert!(
        read,
        "the arbiter never read its queue: {:?}",
        f.arbiter_queue()
    );
    fill_balancer_windows(f, 0);
    let confirmed = || metric_with(&f.arbiter_metrics(), SENT, "type", kind);
    let before = confirmed();
    send(f);
    assert!(
        labkit::wait_until(WAIT, || confirmed() > before),
        "the broker never confirmed the arbiter's {kind}:\n{}",
        f.arbiter_log()
    );
    f.signal_arbiter(Signal::SIGSTOP).unwrap();
    let host = f.balancers[0].name.clone();
    for q in [format!("ipvs-sync.{host}"), announce_queue(&host)] {
        f.rabbit().unwrap().ctl(&["purge_queue", &q]).unwrap();
    }
    f.signal_client(0, Signal::SIGCONT).unwrap();
    let empty = |q: std::io::Result<labkit::fleet::QueueState>| {
        q.is_ok_and(|q| q.ready == 0 && q.unacked == 0)
    };
    let drained = labkit::wait_until(WAIT, || {
        empty(f.client_queue(0)) && empty(f.queue(&announce_queue(&host)))
    });
    assert!(
        drained,
        "the balancer never read its queues: {:?} {:?}",
        f.client_queue(0),
        f.queue(&announce_queue(&host))
    );
    let page = metrics_after_now(f, 0);
    assert_eq!(
        metric_with(&page, RECEIVED, "type", kind),
        received_before,
        "the {kind} was delivered, not lost\narbiter:\n{}\nclient:\n{}",
        f.arbiter_log(),
        f.client_log(0)
    );
}

/// Balancer `i`'s `/metrics` page as a refresh (once a second) after this call writes
/// it, so it counts everything the client had done when this was called. A refresh is
/// told by the count of heartbeats the client sent, which grows by one a second.
fn metrics_after_now(f: &Fleet, i: usize) -> String {
    let beats = |page: &str| metric_with(page, SENT, "type", "heartbeat");
    let first = beats(&f.client_metrics(i));
    let mut page = String::new();
    let refreshed = labkit::wait_until(WAIT, || {
        page = f.client_metrics(i);
        beats(&page) > first
    });
    assert!(refreshed, "balancer {i}'s page never refreshed:\n{page}");
    page
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_lost_fin_heals_within_a_heartbeat() {
    // The arbiter's fin_announce is lost for real (`lose_for_real`). The balancer's
    // heartbeat still lists the VIP as announced; the arbiter answers with the fin again.
    // Without that the VIP would stay announced until the next announces_request_interval
    // (300 s).
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(lost_opts());
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, WAIT).is_some());

    lose_for_real(&mut f, "fin_announce", |f| {
        f.quorum("down", "203.0.113.10,b-100,80").unwrap();
    });
    assert_eq!(f.path_count(0, &v4), 1, "the fin was lost, not delivered");
    f.signal_arbiter(Signal::SIGCONT).unwrap();

    let healed = f.wait_paths(0, &v4, 0, Duration::from_secs(20));
    assert!(
        healed.is_some(),
        "still announced 20 s after its fin was lost:\n{}",
        f.arbiter_log()
    );
    let repairs = metric(&f.arbiter_metrics(), "ipvs_sync_fin_repairs_total");
    assert!(repairs >= 1.0, "withdrawn without the heartbeat repair");
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_rebooted_arbiter_holds_until_keepalived_reports() {
    // An arbiter's reboot wipes its desc files (a tmpfs) until keepalived reports quorum
    // again. Without a hold, the arbiter's first answer to each balancer withdraws every
    // VIP whose desc is not back yet; with `startup_hold` the balancers keep announcing.
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let prefix = "203.0.113.10/32";
    let mut f = start(FleetOpts::default());
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, WAIT).is_some());
    let mon = f.monitor(0, "ipv4").unwrap();

    let reboot = |f: &mut Fleet, hold: f64| {
        f.stop_arbiter();
        std::fs::remove_file(f.desc_path(&v4)).unwrap();
        f.set_startup_hold(hold).unwrap();
        mon.drain();
        f.start_arbiter().unwrap();
    };

    // No hold: the arbiter's answer to the balancer withdraws the VIP before keepalived
    // has reported; the report brings it back.
    reboot(&mut f, 0.0);
    assert!(
        mon.wait(prefix, true, Duration::from_secs(15)).is_some(),
        "without a hold the VIP was never withdrawn: the test proves nothing\n{}",
        f.arbiter_log()
    );
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 1, Duration::from_secs(20)).is_some());

    // A 4 s hold: keepalived reports while the arbiter holds; the balancer is answered
    // only after that, and nothing is withdrawn at all.
    reboot(&mut f, 4.0);
    let holding = labkit::wait_until(WAIT, || {
        metric(&f.arbiter_metrics(), "ipvs_sync_holding") == 1.0
    });
    assert!(
        holding,
        "the arbiter never said it holds:\n{}",
        f.arbiter_log()
    );
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    let joined = labkit::wait_until(Duration::from_secs(15), || {
        metric(&f.arbiter_metrics(), "ipvs_sync_clients_live") >= 1.0
    });
    assert!(joined, "balancer never welcomed:\n{}", f.arbiter_log());
    let withdrawn = mon.wait(prefix, true, Duration::from_secs(3));
    assert!(
        withdrawn.is_none(),
        "withdrawn during the arbiter's restart despite the hold:\n{}",
        f.arbiter_log()
    );
    assert_eq!(f.path_count(0, &v4), 1);
    let page = f.arbiter_metrics();
    let held: f64 = metric_by(&page, "ipvs_sync_held_messages_total", "type")
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(held >= 1.0, "nothing was held back: {page}");
    assert_eq!(metric(&page, "ipvs_sync_holding"), 0.0);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_desc_files_edited_by_hand_are_seen_without_rescanning_all() {
    // Desc files rewritten in place, without `ipvs-sync quorum` and so without its hand-off:
    // the arbiter's inotify watch names each, so it is acted on at the next scan, while
    // scans of every file stay at about one per 10 s.
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let f = start(FleetOpts::default());
    let full_scans = || metric(&f.arbiter_metrics(), "ipvs_sync_desc_full_scans_total");
    // The arbiter's first scan (of the paths its first mapping names) can come after the
    // fleet is up on a loaded machine: count from after it.
    assert!(labkit::wait_until(WAIT, || full_scans() >= 1.0));
    let before = full_scans();
    let t = std::time::Instant::now();
    for round in 0..3 {
        f.write_desc_announce(&[v4], 100 + round).unwrap();
        assert!(
            f.wait_paths(0, &v4, 1, WAIT).is_some(),
            "round {round}: not announced:\n{}",
            f.arbiter_log()
        );
        std::fs::write(
            f.desc_path(&v4),
            r#"{"active": 0, "total": 1, "announce": false, "local-preference": 100}"#,
        )
        .unwrap();
        assert!(
            f.wait_paths(0, &v4, 0, WAIT).is_some(),
            "round {round}: not withdrawn:\n{}",
            f.arbiter_log()
        );
    }
    let scans = full_scans() - before;
    let secs = t.elapsed().as_secs_f64();
    assert!(
        scans <= (secs / 10.0).ceil() + 1.0,
        "{scans} full scans in {secs:.1} s: the changes were found by rescanning, not by the watch"
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_lost_syn_heals_in_seconds() {
    // The arbiter's syn_announce is lost for real (`lose_for_real`). The balancer never
    // hears of the VIP; its heartbeats leave it out, and after 15 s the arbiter says it
    // again.
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(lost_opts());
    wait_mapping(&f);
    lose_for_real(&mut f, "syn_announce", |f| {
        f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    });
    assert_eq!(
        f.path_count(0, &v4),
        0,
        "the syn was lost, not delivered\narbiter:\n{}\nclient:\n{}",
        f.arbiter_log(),
        f.client_log(0)
    );
    f.signal_arbiter(Signal::SIGCONT).unwrap();

    let healed = f.wait_paths(0, &v4, 1, Duration::from_secs(30));
    assert!(
        healed.is_some(),
        "not announced 30 s after its syn was lost:\n{}",
        f.arbiter_log()
    );
    let repairs = metric(&f.arbiter_metrics(), "ipvs_sync_syn_repairs_total");
    assert!(repairs >= 1.0, "announced without the heartbeat repair");
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_balancer_newly_mapped_to_a_vip_announces_it_at_once() {
    // A VIP with quorum is given to one more balancer (its keepalived config gains the
    // virtual server, the arbiter rebuilds the mapping on SIGHUP): that balancer gets the
    // syn with the mapping, not at its next announces_request_interval.
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts {
        balancers: 2,
        ..FleetOpts::default()
    });
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    assert!(f.wait_paths(0, &v4, 2, WAIT).is_some());

    f.edit_vips(|v| v[0].balancers.retain(|b| b != "lb2"))
        .unwrap();
    f.signal_arbiter(Signal::SIGHUP).unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, WAIT).is_some(),
        "lb2 kept the VIP the mapping took from it:\n{}",
        f.arbiter_log()
    );
    f.edit_vips(|v| v[0].balancers.push("lb2".into())).unwrap();
    f.signal_arbiter(Signal::SIGHUP).unwrap();
    assert!(
        f.wait_paths(0, &v4, 2, WAIT).is_some(),
        "lb2 not announcing the VIP the mapping gave it back:\n{}",
        f.arbiter_log()
    );
    let repairs = metric(&f.arbiter_metrics(), "ipvs_sync_syn_repairs_total");
    assert_eq!(
        repairs, 0.0,
        "announced by the heartbeat repair, not with the mapping"
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_virtual_server_removed_from_keepalived_stops_holding_its_vip_back() {
    // A VIP on ports 80 and 8080; 8080's quorum is down, so the VIP is not announced. The
    // operator removes the 8080 virtual server from keepalived's config: keepalived makes
    // no quorum call for it again, and its `down` used to count in the desc file forever.
    // The arbiter's mapping rebuild (SIGHUP here) forgets it; the VIP is announced.
    labkit::require_root();
    let v4 = ip("203.0.113.10");
    let mut f = start(FleetOpts {
        ports: vec![80, 8080],
        ..FleetOpts::default()
    });
    let mon = f.monitor(0, "ipv4").unwrap();
    f.quorum("up", "203.0.113.10,b-100,80").unwrap();
    f.quorum("down", "203.0.113.10,b-100,8080").unwrap();
    let path = f.desc_path(&v4);
    let desc = || std::fs::read_to_string(&path).unwrap();
    assert!(desc().contains(r#""announce":false"#), "{}", desc());
    assert!(
        mon.wait("203.0.113.10/32", false, Duration::from_secs(2))
            .is_none(),
        "announced with a port down"
    );
    assert_eq!(f.path_count(0, &v4), 0, "announced with a port down");

    f.edit_vips(|v| v[0].ports = vec![80]).unwrap();
    f.signal_arbiter(Signal::SIGHUP).unwrap();
    assert!(
        f.wait_paths(0, &v4, 1, WAIT).is_some(),
        "still held back by the removed port: {}\n{}",
        desc(),
        f.arbiter_log()
    );
    let d: serde_json::Value = serde_json::from_str(&desc()).unwrap();
    assert_eq!(
        (d["active"].as_u64(), d["total"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
}
