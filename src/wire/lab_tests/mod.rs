//! The transport against a real RabbitMQ (Debian's `rabbitmq-server` in a namespace).
//!
//! Each test starts its own broker on 192.0.2.5 inside a fresh namespace, provisions
//! ipvs-sync's least-privilege layout in vhost `ipvs-sync` (an arbiter and two balancers, each
//! with its own broker user and its own Ed25519 key), moves the test thread into that
//! namespace and builds the tokio runtime there, so the arbiter and balancer transports (and
//! any attacker) connect to it as real peers would.
//!
//! - `transport`: messages both ways, reconnection, broker restarts and outages, garbage,
//!   latency and outbox figures;
//! - `trust`: keys, forged and replayed messages, restarts, lost confirms, skewed clocks;
//! - `broker`: permissions, exclusive queues, bounded queues, amqps with a private CA;
//! - `cluster`: a three-node cluster with quorum queues: node kills, a partition, a whole
//!   cluster restart, latency against classic queues on one node.

mod broker;
mod cluster;
mod transport;
mod trust;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

use super::amqp::{Dest, Incoming, Role, Transport, TransportOptions, EXCHANGE};
use super::keys::{NodeKey, Senders};
use super::messages::{Heartbeat, Message, PeerRole};

const LAB_ADDR: &str = "192.0.2.5";
const VHOST: &str = "ipvs-sync";
const ARBITER: &str = "arbiter.example.net";
const CLIENT: &str = "lb1.example.net";
const CLIENT2: &str = "lb2.example.net";
const RECV_TIMEOUT: Duration = Duration::from_secs(20);

/// The keys of the lab's nodes.
struct Keys {
    arbiter: NodeKey,
    lb1: NodeKey,
    lb2: NodeKey,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            arbiter: NodeKey::generate().unwrap(),
            lb1: NodeKey::generate().unwrap(),
            lb2: NodeKey::generate().unwrap(),
        }
    }

    fn of(&self, node: &str) -> &NodeKey {
        match node {
            ARBITER => &self.arbiter,
            CLIENT => &self.lb1,
            _ => &self.lb2,
        }
    }

    /// The arbiter's options, trusting both balancers.
    fn server_opts(&self, state_dir: PathBuf) -> TransportOptions {
        let senders = Senders::balancers(
            &self.arbiter,
            ARBITER,
            [
                (CLIENT.to_owned(), self.lb1.public()),
                (CLIENT2.to_owned(), self.lb2.public()),
            ]
            .into(),
        );
        tune(TransportOptions::new(
            self.arbiter.clone(),
            senders,
            state_dir,
        ))
    }

    /// Balancer `host`'s options, pinning the arbiter.
    fn client_opts(&self, host: &str, state_dir: PathBuf) -> TransportOptions {
        let senders = Senders::Arbiter {
            name: ARBITER.into(),
            key: self.arbiter.public(),
        };
        tune(TransportOptions::new(
            self.of(host).clone(),
            senders,
            state_dir,
        ))
    }
}

/// A broker in a namespace, the fleet's accounts and keys, and a runtime whose threads live
/// in that namespace. Fields drop in order: runtime (tasks), broker, namespace.
struct Lab {
    rt: tokio::runtime::Runtime,
    rabbit: labkit::Rabbit,
    fleet: labkit::rabbit::FleetBroker,
    keys: Keys,
    state: tempfile::TempDir,
    ns: labkit::Netns,
}

/// A lab; panics (the test fails) when not root.
fn lab(tag: &str) -> Lab {
    lab_with(tag, None)
}

/// What the lab tests log when RUST_LOG is not set: warnings, and the transport's
/// connects and reconnects (info), which say on which node each side was when a test fails.
const LAB_LOG: &str = "warn,ipvs_sync::wire::amqp=info";

/// Fails the test when not root; sends the transport's logs to the test's output.
fn lab_prelude() {
    assert!(
        labkit::require_root(),
        "lab tests need root: run netns-lab/test"
    );
    // A failed test shows the transport's warnings and reconnects (a lost connection, a
    // node that did not answer, the node it came back on) without RUST_LOG; RUST_LOG=debug
    // adds the transport's (and lapin's) whole view.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LAB_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A runtime whose threads start in the calling thread's namespace.
fn lab_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn lab_with(tag: &str, tls: Option<&labkit::rabbit::RabbitTls>) -> Lab {
    lab_prelude();
    let ns = labkit::Netns::new(tag).unwrap();
    ns.ip(&["addr", "add", &format!("{LAB_ADDR}/32"), "dev", "lo"])
        .unwrap();
    let rabbit = match tls {
        Some(t) => labkit::Rabbit::start_tls(&ns, LAB_ADDR, t).unwrap(),
        None => labkit::Rabbit::start(&ns, LAB_ADDR).unwrap(),
    };
    let fleet = rabbit
        .provision_fleet(VHOST, ARBITER, &[CLIENT, CLIENT2])
        .unwrap();
    ns.enter().unwrap();
    let rt = lab_runtime();
    Lab {
        rt,
        rabbit,
        fleet,
        keys: Keys::new(),
        state: tempfile::tempdir().unwrap(),
        ns,
    }
}

impl Lab {
    /// The URL of `node`'s broker account.
    fn url(&self, node: &str) -> String {
        let a = if node == ARBITER {
            &self.fleet.arbiter
        } else {
            &self.fleet.balancers[node]
        };
        self.rabbit.url_in(VHOST, &a.user, &a.pass)
    }

    /// The URL of the broker's administrator, given every right in the vhost: an attacker
    /// who owns the broker, or a broker without the layout's permissions.
    fn admin_url(&self) -> String {
        let u = self.rabbit.user();
        self.rabbit
            .ctl(&["set_permissions", "-p", VHOST, u, ".*", ".*", ".*"])
            .unwrap();
        self.rabbit
            .ctl(&[
                "set_topic_permissions",
                "-p",
                VHOST,
                u,
                EXCHANGE,
                ".*",
                ".*",
            ])
            .unwrap();
        self.rabbit.url_in(VHOST, u, self.rabbit.pass())
    }

    fn state_dir(&self, node: &str) -> PathBuf {
        self.state.path().join(node)
    }

    fn server_opts(&self) -> TransportOptions {
        self.keys.server_opts(self.state_dir(ARBITER))
    }

    fn client_opts(&self, host: &str) -> TransportOptions {
        self.keys.client_opts(host, self.state_dir(host))
    }

    async fn server(&self, o: TransportOptions) -> (Transport, mpsc::Receiver<Incoming>) {
        Transport::connect(&self.url(ARBITER), server_role(), o)
            .await
            .unwrap()
    }

    async fn client(
        &self,
        host: &str,
        o: TransportOptions,
    ) -> (Transport, mpsc::Receiver<Incoming>) {
        Transport::connect(&self.url(host), client_role(host), o)
            .await
            .unwrap()
    }

    /// The arbiter first (it declares the exchange), then balancer lb1.
    async fn pair(
        &self,
    ) -> (
        (Transport, mpsc::Receiver<Incoming>),
        (Transport, mpsc::Receiver<Incoming>),
    ) {
        let server = self.server(self.server_opts()).await;
        let client = self.client(CLIENT, self.client_opts(CLIENT)).await;
        (server, client)
    }

    /// `rabbitmqctl list_queues -p ipvs-sync NAME COLUMNS…`: one line per queue.
    fn list_queues(&self, columns: &[&str]) -> String {
        let mut args = vec![
            "list_queues",
            "-p",
            VHOST,
            "--no-table-headers",
            "-q",
            "name",
        ];
        args.extend_from_slice(columns);
        self.rabbit.ctl(&args).unwrap()
    }

    /// Messages waiting in `queue`, per `rabbitmqctl list_queues`.
    fn queue_len(&self, queue: &str) -> Option<u64> {
        self.queue_count(queue, "messages")
    }

    /// One numeric `rabbitmqctl list_queues` column of `queue`.
    fn queue_count(&self, queue: &str, column: &str) -> Option<u64> {
        self.list_queues(&[column]).lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(queue)).then(|| w.next()?.parse().ok())?
        })
    }
}

fn tune(mut o: TransportOptions) -> TransportOptions {
    o.send_timeout = Duration::from_secs(30);
    o.connect_timeout = Duration::from_secs(20);
    o
}

fn server_role() -> Role {
    Role::Server {
        name: ARBITER.into(),
    }
}

fn client_role(host: &str) -> Role {
    Role::Client {
        hostname: host.into(),
    }
}

async fn recv(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
    recv_within(rx, RECV_TIMEOUT).await
}

async fn recv_within(rx: &mut mpsc::Receiver<Incoming>, timeout: Duration) -> Incoming {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .expect("no message within the timeout")
        .expect("transport closed")
}

async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_within(what, RECV_TIMEOUT, cond).await
}

/// [`wait_for`] with a limit of its own (work that takes long on a loaded machine).
async fn wait_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(uptime: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        role: PeerRole::Server,
        uptime,
        version: None,
        serial: None,
        announced: None,
        drained: None,
        features: Vec::new(),
    })
}

fn client_heartbeat(uptime: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        role: PeerRole::Client,
        uptime,
        version: None,
        serial: None,
        announced: None,
        drained: None,
        features: Vec::new(),
    })
}

/// A channel of a plain lapin connection with `url`'s credentials: what anyone holding them
/// can do.
async fn raw_channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn raw_publish(ch: &Channel, key: &str, payload: &[u8]) {
    ch.basic_publish(
        EXCHANGE.into(),
        key.into(),
        BasicPublishOptions::default(),
        payload,
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sends `msg` and expects it on `rx`, skipping heartbeats the other side may send.
async fn send_and_expect(
    from: &Transport,
    to: Dest,
    msg: &Message,
    rx: &mut mpsc::Receiver<Incoming>,
) -> Incoming {
    send_and_expect_within(from, to, msg, rx, RECV_TIMEOUT).await
}

/// [`send_and_expect`], waiting up to `timeout` for each message.
async fn send_and_expect_within(
    from: &Transport,
    to: Dest,
    msg: &Message,
    rx: &mut mpsc::Receiver<Incoming>,
    timeout: Duration,
) -> Incoming {
    from.send(to, msg).await.unwrap();
    loop {
        let got = recv_within(rx, timeout).await;
        if &got.message == msg {
            return got;
        }
    }
}
