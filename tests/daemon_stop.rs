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
    fn announce(&self, _vip: IpAddr, _local_pref: u32) {}
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

/// Waits for a loop to end (it must, within 30 s).
async fn ended<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the loop ended")
}

async fn client(closed: bool, stop: bool) -> Stopped {
    let g = given(closed, stop);
    let (bus, _) = MemoryNet::new().client("lb1.example.net");
    let (_peer_tx, peer_events) = mpsc::unbounded_channel();
    let edges = ipvs_sync::client::Edges {
        routes: Arc::new(Inert),
        peer_events,
        addrs: Arc::new(Inert),
        kernel: None,
        firewall: Arc::new(Inert),
        speaker: None,
    };
    let metrics = Metrics::new(Role::Client);
    let cfg = config(g.dir.path());
    ended(ipvs_sync::client::serve(
        cfg,
        edges,
        bus,
        g.rx,
        g.shutdown,
        metrics,
        StatusDoc::default(),
    ))
    .await
}

async fn server(closed: bool, stop: bool) -> Stopped {
    let g = given(closed, stop);
    let (bus, _) = MemoryNet::new().server("arbiter.example.net");
    let (_qtx, quorum) = mpsc::channel(1);
    let edges = ipvs_sync::server::Edges {
        kernel: None,
        quorum,
    };
    let metrics = Metrics::new(Role::Server);
    let cfg = config(g.dir.path());
    ended(ipvs_sync::server::serve(
        cfg,
        edges,
        bus,
        g.rx,
        g.shutdown,
        metrics,
        StatusDoc::default(),
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_transport_ends_stops_unrequested() {
    assert_eq!(client(true, false).await, Stopped::TransportLost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asked_to_stop_stops_requested() {
    assert_eq!(client(false, true).await, Stopped::Requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_whose_transport_ends_stops_unrequested() {
    assert_eq!(server(true, false).await, Stopped::TransportLost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_asked_to_stop_stops_requested() {
    assert_eq!(server(false, true).await, Stopped::Requested);
}
