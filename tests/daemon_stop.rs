//! Why the daemons' loops end: a requested stop, or a broker transport that ended. Only the
//! first is a success; the second exits 1 so that systemd's `Restart=on-failure` starts the
//! daemon again (`cmd::run_daemon`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipvs_sync::client::edges::{Addresses, Firewall, Routes};
use ipvs_sync::cmd::Stopped;
use ipvs_sync::daemon::bus::BoxFuture;
use ipvs_sync::daemon::memory_bus::MemoryNet;
use ipvs_sync::daemon::metrics::{Metrics, Role};
use ipvs_sync::daemon::{http::StatusDoc, Shutdown, ShutdownHandle};
use ipvs_sync::wire::Incoming;
use tokio::sync::mpsc;

/// Edges that do nothing: these tests look only at how the loop ends.
struct Inert;

impl Routes for Inert {
    fn announce(&self, _vip: IpAddr, _attrs: bgp::RouteAttrs) {}
    fn withdraw(&self, _vip: IpAddr) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn peers(&self) -> BoxFuture<'_, Vec<bgp::PeerStatus>> {
        Box::pin(async { Vec::new() })
    }
    fn shutdown(&self, _reason: &str) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Addresses for Inert {
    fn add(&self, _vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn remove(&self, _vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn clean(&self, _k: BTreeSet<IpAddr>, _m: BTreeSet<IpAddr>) -> BoxFuture<'static, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
}

impl Firewall for Inert {
    fn check(&self, _vip: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

fn config(dir: &Path) -> config::Config {
    let text = format!(
        "[main]\namqp_server = amqp://u@broker/\nhostname = lb1.example.net\nipvs = false\n\
         service_mapping_wildcard = {d}/lbs/*/*/*.conf\n\
         service_mapping_config = {d}/mapping.json\n\
         vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
         [server]\nquorum_socket = {d}/q.sock\n",
        d = dir.display()
    );
    config::Config::from_strs(&text, None).unwrap()
}

/// What both loops take besides their edges: a config in a temporary directory, an
/// incoming channel whose sender is already gone (`closed`) or kept, and a shutdown already
/// asked for (`stop`) or not.
struct Given {
    dir: tempfile::TempDir,
    _tx: Option<mpsc::Sender<Incoming>>,
    rx: mpsc::Receiver<Incoming>,
    _stop: ShutdownHandle,
    shutdown: Shutdown,
}

fn given(closed: bool, stop: bool) -> Given {
    let (tx, rx) = mpsc::channel(1);
    let (h, shutdown) = Shutdown::manual();
    if stop {
        h.stop();
    }
    Given {
        dir: tempfile::tempdir().unwrap(),
        _tx: (!closed).then_some(tx),
        rx,
        _stop: h,
        shutdown,
    }
}

/// Runs a loop (`serve`, given the config, incoming channel, shutdown, metrics and status
/// document) and returns why it ended; it must end within 30 s.
async fn run<T, F: std::future::Future<Output = T>>(
    closed: bool,
    stop: bool,
    role: Role,
    serve: impl FnOnce(config::Config, mpsc::Receiver<Incoming>, Shutdown, Metrics, StatusDoc) -> F,
) -> T {
    let g = given(closed, stop);
    let looping = serve(
        config(g.dir.path()),
        g.rx,
        g.shutdown,
        Metrics::new(role),
        StatusDoc::default(),
    );
    tokio::time::timeout(Duration::from_secs(30), looping)
        .await
        .expect("the loop ended")
}

async fn client(closed: bool, stop: bool) -> Stopped {
    let (bus, _) = MemoryNet::new().client("lb1.example.net");
    let (_peer_tx, peer_events) = mpsc::unbounded_channel();
    let edges = ipvs_sync::client::Edges {
        routes: Arc::new(Inert),
        peer_events,
        addrs: Arc::new(Inert),
        kernel: None,
        firewall: Arc::new(Inert),
        speaker: None,
        control: mpsc::channel(1).1,
        addrs_on: None,
        bfd: None,
        resumed: None,
    };
    run(closed, stop, Role::Client, |cfg, rx, sd, m, st| {
        ipvs_sync::client::serve(cfg, edges, bus, rx, sd, m, st)
    })
    .await
}

async fn server(closed: bool, stop: bool) -> Stopped {
    let (bus, _) = MemoryNet::new().server("arbiter.example.net");
    let (_qtx, quorum) = mpsc::channel(1);
    let edges = ipvs_sync::server::Edges {
        kernel: None,
        quorum,
        control: mpsc::channel(1).1,
    };
    run(closed, stop, Role::Server, |cfg, rx, sd, m, st| {
        ipvs_sync::server::serve(cfg, edges, bus, rx, sd, m, st)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_loop_says_whether_its_stop_was_asked_for() {
    assert_eq!(client(true, false).await, Stopped::TransportLost);
    assert_eq!(client(false, true).await, Stopped::Requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_loop_says_whether_its_stop_was_asked_for() {
    assert_eq!(server(true, false).await, Stopped::TransportLost);
    assert_eq!(server(false, true).await, Stopped::Requested);
}

/// SIGUSR2 (the restart handle): with `[bgp] graceful_restart` the client exits for a
/// graceful restart and leaves its marker in `state_dir`; without it the request is ignored
/// and the loop goes on until a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_exits_for_a_graceful_restart_only_with_graceful_restart_on() {
    for gr in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[main]\namqp_server = amqp://u@broker/\nhostname = lb1.example.net\nipvs = false\n\
             state_dir = {d}/state\n[bgp]\ngraceful_restart = {gr}\n",
            d = dir.path().display()
        );
        let cfg = config::Config::from_strs(&text, None).unwrap();
        let (bus, _) = MemoryNet::new().client("lb1.example.net");
        let (_peer_tx, peer_events) = mpsc::unbounded_channel();
        let edges = ipvs_sync::client::Edges {
            routes: Arc::new(Inert),
            peer_events,
            addrs: Arc::new(Inert),
            kernel: None,
            firewall: Arc::new(Inert),
            speaker: None,
            control: mpsc::channel(1).1,
            addrs_on: None,
            bfd: None,
            resumed: None,
        };
        let (_tx, rx) = mpsc::channel(1);
        let (h, shutdown) = Shutdown::manual();
        h.restart();
        let looping = tokio::spawn(ipvs_sync::client::serve(
            cfg,
            edges,
            bus,
            rx,
            shutdown,
            Metrics::new(Role::Client),
            StatusDoc::default(),
        ));
        let marker = dir.path().join("state/restart.json");
        if gr {
            let why = tokio::time::timeout(Duration::from_secs(30), looping)
                .await
                .expect("the loop ended")
                .unwrap();
            assert_eq!(why, Stopped::ForRestart);
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
            assert!(m["at_ms"].as_u64().unwrap() > 0, "{m}");
            assert_eq!(m["announced"], serde_json::json!([]));
        } else {
            // Still running once the request has been seen: a stop ends it, as a stop.
            let mut looping = looping;
            let early = tokio::time::timeout(Duration::from_millis(300), &mut looping).await;
            assert!(early.is_err(), "exited on SIGUSR2 without graceful_restart");
            h.stop();
            let why = tokio::time::timeout(Duration::from_secs(30), looping)
                .await
                .expect("the loop ended")
                .unwrap();
            assert_eq!(why, Stopped::Requested);
            assert!(!marker.exists());
        }
    }
}
