//! Who may say what: a balancer's key speaks for that balancer only; replays are refused
//! across restarts; a republished message arrives once; clocks ten minutes apart change
//! nothing but the offset reported.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::*;
use crate::wire::envelope::{self, DropReason, Header, MessageId};
use crate::wire::keys::PairKey;
use crate::wire::messages::{FinAnnounce, MessageType};

fn fin(last_octet: u8) -> Message {
    Message::FinAnnounce(FinAnnounce {
        vips: vec![std::net::IpAddr::from([192, 0, 2, last_octet])],
    })
}

/// A message signed with `key` in the name of `from`, as whoever holds that key could make.
fn signed(key: &NodeKey, kind: &str, from: &str, to: &str, seq: u64, body: &str) -> Vec<u8> {
    envelope::seal(key, &forged_header(kind, from, to, seq), &raw_body(body)).unwrap()
}

/// A message with a MAC of `pair` in the name of `from`.
fn maced(pair: &PairKey, kind: &str, from: &str, to: &str, seq: u64, body: &str) -> Vec<u8> {
    envelope::seal_mac(pair, &forged_header(kind, from, to, seq), &raw_body(body)).unwrap()
}

fn raw_body(body: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(body.to_owned()).unwrap()
}

fn forged_header(kind: &str, from: &str, to: &str, seq: u64) -> Header {
    Header {
        kind: kind.into(),
        from: from.into(),
        to: to.into(),
        // An epoch far above any real one: a replay window would not stop it.
        id: MessageId {
            epoch: u64::MAX - 1,
            seq,
        },
        ts_ms: now_ms(),
    }
}

/// A queue of the broker's administrator bound to `key` on both exchanges: what a tap on the
/// broker sees.
async fn tap(ch: &Channel, name: &str, key: &str) -> lapin::Consumer {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Both lanes: announces to a balancer go by the announce exchange.
    for exchange in [EXCHANGE, crate::wire::amqp::ANNOUNCE_EXCHANGE] {
        ch.queue_bind(
            name.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_consume(
        name.into(),
        name.into(),
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

async fn next_payload(tap: &mut lapin::Consumer) -> Vec<u8> {
    tokio::time::timeout(RECV_TIMEOUT, tap.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .data
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_balancers_key_speaks_for_that_balancer_only() {
    let lab = lab("wire-keys");
    lab.rt.block_on(async {
        let ((server, mut srx), (lb1, mut rx1)) = lab.pair().await;
        let (lb2, mut rx2) = lab.client(CLIENT2, lab.client_opts(CLIENT2)).await;
        // Everything lb1's secret.ini holds that signs: its node_key. (Its broker password
        // cannot even publish these: see broker::lab_a_balancer_user_*; here the broker is
        // assumed owned, so only the receivers' checks stand.)
        let k = &lab.keys.lb1;
        let (_conn, ch) = raw_channel(&lab.admin_url()).await;
        let withdraw = r#"{"vips":["192.0.2.10"]}"#;
        // …and the pair key it shares with the arbiter, which its key can derive.
        let pair = k.pair_with_arbiter(CLIENT, ARBITER, &lab.keys.arbiter.public());
        let attempts: [(&str, Vec<u8>, &Transport, DropReason); 9] = [
            // A MAC with lb1's pair key, as lb2 to the arbiter and as the arbiter to lb2.
            (
                "lbs",
                maced(
                    &pair,
                    "heartbeat",
                    CLIENT2,
                    "lbs",
                    8,
                    r#"{"role":"client","uptime":1}"#,
                ),
                &server,
                DropReason::Forged,
            ),
            (
                CLIENT2,
                maced(&pair, "fin_announce", ARBITER, CLIENT2, 9, withdraw),
                &lb2,
                DropReason::Forged,
            ),
            // As the arbiter, to one balancer and to all.
            (
                CLIENT2,
                signed(k, "fin_announce", ARBITER, CLIENT2, 1, withdraw),
                &lb2,
                DropReason::Forged,
            ),
            (
                "broadcast",
                signed(k, "fin_announce", ARBITER, "broadcast", 2, withdraw),
                &lb2,
                DropReason::Forged,
            ),
            // As another balancer, to the arbiter.
            (
                "lbs",
                signed(
                    k,
                    "heartbeat",
                    CLIENT2,
                    "lbs",
                    3,
                    r#"{"role":"client","uptime":1,"announced":[]}"#,
                ),
                &server,
                DropReason::Forged,
            ),
            // As `broadcast` (the name of every balancer's binding) and as `lbs`.
            (
                "lbs",
                signed(
                    k,
                    "heartbeat",
                    "broadcast",
                    "lbs",
                    4,
                    r#"{"role":"client","uptime":1}"#,
                ),
                &server,
                DropReason::UnknownSender,
            ),
            (
                "lbs",
                signed(
                    k,
                    "heartbeat",
                    "lbs",
                    "lbs",
                    5,
                    r#"{"role":"client","uptime":1}"#,
                ),
                &server,
                DropReason::UnknownSender,
            ),
            // As itself, but to another balancer: balancers hear the arbiter only.
            (
                CLIENT2,
                signed(k, "fin_announce", CLIENT, CLIENT2, 6, withdraw),
                &lb2,
                DropReason::UnknownSender,
            ),
            // As itself, to the arbiter, addressed as if to a balancer.
            (
                "lbs",
                signed(
                    k,
                    "heartbeat",
                    CLIENT,
                    "broadcast",
                    7,
                    r#"{"role":"client","uptime":1}"#,
                ),
                &server,
                DropReason::NotForUs,
            ),
        ];
        for (key, payload, _, _) in &attempts {
            raw_publish(&ch, key, payload).await;
        }
        ch.wait_for_confirms().await.unwrap();
        let expect = |t: &Transport, r: DropReason| {
            attempts
                .iter()
                .filter(|(_, _, at, reason)| std::ptr::eq(*at, t) && *reason == r)
                .count() as u64
        };
        let total = |t: &Transport| attempts.iter().filter(|a| std::ptr::eq(a.2, t)).count() as u64;
        wait_for("every forgery to be counted", || {
            lb2.counters().dropped_total() >= total(&lb2)
                && server.counters().dropped_total() >= total(&server)
                // lb1 gets the broadcast one too.
                && lb1.counters().dropped(DropReason::Forged) >= 1
        })
        .await;
        for (name, t) in [("lb2", &lb2), ("arbiter", &server)] {
            for r in DropReason::ALL {
                assert_eq!(t.counters().dropped(r), expect(t, r), "{name}: {r}");
            }
        }
        eprintln!(
            "lb1's key: lb2 dropped {:?}; arbiter dropped {:?}",
            lb2.counters().snapshot().dropped,
            server.counters().snapshot().dropped
        );
        // None of it reached a daemon; lb1 speaking as itself to the arbiter does.
        assert!(rx2.try_recv().is_err() && rx1.try_recv().is_err() && srx.try_recv().is_err());
        let got = send_and_expect(&lb1, Dest::Server, &client_heartbeat(9), &mut srx).await;
        assert_eq!((got.from.as_str(), got.role), (CLIENT, PeerRole::Client));
        let got = send_and_expect(&server, Dest::Client(CLIENT2.into()), &fin(11), &mut rx2).await;
        assert_eq!((got.from.as_str(), got.role), (ARBITER, PeerRole::Server));
        assert_eq!(lb2.counters().received(MessageType::FinAnnounce), 1);
        server.close().await;
        lb1.close().await;
        lb2.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_captured_message_replayed_to_a_restarted_receiver_is_refused() {
    let lab = lab("wire-replay");
    lab.rt.block_on(async {
        let ((server, mut srx), (client, mut crx)) = lab.pair().await;
        let (_conn, ch) = raw_channel(&lab.admin_url()).await;
        let mut to_client = tap(&ch, "tap-client", CLIENT).await;
        let mut to_server = tap(&ch, "tap-lbs", "lbs").await;
        // A genuine withdraw to lb1 and a genuine heartbeat of lb1, captured on the way.
        send_and_expect(&server, Dest::Client(CLIENT.into()), &fin(10), &mut crx).await;
        send_and_expect(&client, Dest::Server, &client_heartbeat(1), &mut srx).await;
        let withdraw = next_payload(&mut to_client).await;
        let beat = next_payload(&mut to_server).await;
        let (server_epoch, client_epoch) = (server.epoch(), client.epoch());

        // Both receivers restart (same state directories); the captures come back.
        client.close().await;
        server.close().await;
        drop((crx, srx));
        let (server, mut srx) = lab.server(lab.server_opts()).await;
        let (client, mut crx) = lab.client(CLIENT, lab.client_opts(CLIENT)).await;
        assert!(server.epoch() > server_epoch && client.epoch() > client_epoch);
        raw_publish(&ch, CLIENT, &withdraw).await;
        raw_publish(&ch, "lbs", &beat).await;
        ch.wait_for_confirms().await.unwrap();
        wait_for("both replays to be counted", || {
            client.counters().dropped(DropReason::Replayed) == 1
                && server.counters().dropped(DropReason::Replayed) == 1
        })
        .await;
        assert!(crx.try_recv().is_err() && srx.try_recv().is_err());
        // The restarted senders' new messages (a higher epoch) pass.
        let got = send_and_expect(&server, Dest::Client(CLIENT.into()), &fin(12), &mut crx).await;
        assert_eq!(
            got.id,
            MessageId {
                epoch: server.epoch(),
                seq: 1
            }
        );
        send_and_expect(&client, Dest::Server, &client_heartbeat(2), &mut srx).await;
        assert_eq!(client.counters().dropped_total(), 1);
        assert_eq!(server.counters().dropped_total(), 1);
        server.close().await;
        client.close().await;
    });
}

/// A TCP relay in front of the broker whose connections can be made deaf: what the broker
/// sends on a muted connection (publisher confirms, heartbeats) is read and thrown away, while
/// what the client sends still goes through. Connections made after the muting are not muted.
struct Relay {
    addr: std::net::SocketAddr,
    /// Id of the last connection accepted.
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Connections with an id up to this one are muted.
    muted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((upstream.ip(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let last = Arc::new(AtomicU64::new(0));
        let muted = Arc::new(AtomicU64::new(0));
        let (l, m) = (Arc::clone(&last), Arc::clone(&muted));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = l.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(broker) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut br, mut bw) = broker.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut bw).await;
                    let _ = bw.shutdown().await;
                });
                let m = Arc::clone(&m);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    while let Ok(n) = br.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if id > m.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        Relay { addr, last, muted }
    }

    /// Mutes every connection made so far.
    fn mute(&self) {
        use std::sync::atomic::Ordering;
        self.muted
            .store(self.last.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_message_republished_after_a_lost_confirm_is_delivered_once() {
    let lab = lab("wire-dup");
    lab.rt.block_on(async {
        // The arbiter reaches the broker through a relay, with a 1 s AMQP heartbeat: it
        // notices a deaf connection in about 2 s.
        let relay = Relay::start(lab.rabbit.addr()).await;
        let a = &lab.fleet.arbiter;
        let url = format!(
            "amqp://{}:{}@{}/{VHOST}?heartbeat=1",
            a.user, a.pass, relay.addr
        );
        let (server, _srx) = Transport::connect(&url, server_role(), lab.server_opts())
            .await
            .unwrap();
        let (client, mut crx) = lab.client(CLIENT, lab.client_opts(CLIENT)).await;
        let (_conn, ch) = raw_channel(&lab.admin_url()).await;
        let mut seen = tap(&ch, "tap-dup", CLIENT).await;
        // From here on the broker's answers to the arbiter are lost: the message gets to the
        // queue, its confirm never gets back.
        relay.mute();
        let in_flight = server
            .publish(Dest::Client(CLIENT.into()), &fin(10))
            .await
            .unwrap();
        let id = in_flight.id();
        let first = recv(&mut crx).await;
        assert_eq!((first.id, &first.message), (id, &fin(10)));
        let server = std::sync::Arc::new(server);
        let confirming = {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move { server.confirmed(in_flight).await })
        };
        // The arbiter gives the deaf connection up, makes a new one (not muted), publishes
        // the same message again and gets its confirm.
        confirming.await.unwrap().unwrap();
        assert!(server.counters().confirms_failed() >= 1);
        // The broker got the message twice, the same bytes both times; the balancer took one.
        let (a, b) = (next_payload(&mut seen).await, next_payload(&mut seen).await);
        assert_eq!(a, b, "the republished message is the same bytes");
        wait_for("the second copy to be counted", || {
            client.counters().dropped(DropReason::Duplicate) == 1
        })
        .await;
        assert!(crx.try_recv().is_err(), "delivered twice");
        assert_eq!(client.counters().received(MessageType::FinAnnounce), 1);
        assert_eq!(client.counters().dropped(DropReason::Replayed), 0);
        assert_eq!(server.counters().sent(MessageType::FinAnnounce), 1);
        eprintln!(
            "lost confirm: message {id} published twice (same bytes), delivered once; \
             duplicates dropped {}, confirms lost {}, reconnects {}",
            client.counters().dropped(DropReason::Duplicate),
            server.counters().confirms_failed(),
            server.counters().reconnects()
        );
        client.close().await;
    });
}

/// The `ipvs-sync` binary next to the test binary (`netns-lab/test` builds it), or
/// `IPVS_SYNC_BIN`.
fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IPVS_SYNC_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("ipvs-sync");
    assert!(
        bin.exists(),
        "{} missing: cargo build --bin ipvs-sync",
        bin.display()
    );
    bin
}

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `name{peer="PEER"} VALUE` of a Prometheus page.
fn metric(page: &str, name: &str, label: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and faketime; run netns-lab/test"]
fn lab_clocks_ten_minutes_apart_still_announce_and_withdraw_and_the_offset_is_reported() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} missing: apt-get install faketime"
    );
    let lab = lab("wire-skew");
    let bin = daemon_binary();
    let dir = tempfile::tempdir().unwrap();
    for (run, shift) in ["+600s", "-600s"].into_iter().enumerate() {
        // Balancer lb2 is the real daemon, its wall clock moved by `shift` (timers stay on
        // the monotonic clock); the arbiter is this process, on the real clock.
        let d = dir.path().join(format!("run{run}"));
        std::fs::create_dir_all(&d).unwrap();
        let http = labkit::free_port().unwrap();
        let a = &lab.fleet.balancers[CLIENT2];
        std::fs::write(
            d.join("config.ini"),
            format!(
                "[main]\namqp_server = {}\nhostname = {CLIENT2}\nipvs = false\n\
                 arbiter_name = {ARBITER}\narbiter_public_key = {}\nstate_dir = {}\n\
                 http_listen = 127.0.0.1:{http}\nheartbeat_interval = 0.5\n\
                 [bgp]\nlocal_as = 65000\nrouter_id = 192.0.2.99\n",
                lab.rabbit.url_in(VHOST, &a.user, &a.pass),
                lab.keys.arbiter.public(),
                // One state directory for both runs: the second, 20 minutes "earlier", still
                // continues above the first's epoch.
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let secret = d.join("secret.ini");
        std::fs::write(
            &secret,
            format!("[secret]\nnode_key = {}\n", lab.keys.lb2.to_text()),
        )
        .unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut cmd = lab.ns.command(bin.to_str().unwrap());
        cmd.arg("-c")
            .arg(d.join("config.ini"))
            .args(["--log-level", "info", "client"])
            .env("LD_PRELOAD", FAKETIME)
            .env("FAKETIME", shift)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("NO_COLOR", "1");
        lab.rt.block_on(async {
            // What the previous run's lb2 sent after that run's arbiter had stopped would show
            // the previous clock for two measurement periods (the estimate is the largest
            // recent `ts − arrival`): gone before this run's arbiter consumes. The first
            // run's arbiter declares the exchange lb2 checks for, so it comes first there.
            if run > 0 {
                lab.rabbit
                    .ctl(&["purge_queue", "-p", VHOST, "lbs"])
                    .unwrap();
            }
            let (server, mut srx) = lab.server(lab.server_opts()).await;
            let _daemon = labkit::Daemon::spawn(cmd, &d.join("client.log")).unwrap();
            // Balancer → arbiter: its heartbeats pass, and its clock shows.
            loop {
                let m = recv(&mut srx).await;
                if m.from == CLIENT2 && matches!(m.message, Message::Heartbeat(_)) {
                    break;
                }
            }
            let want: i64 = if shift.starts_with('+') {
                600_000
            } else {
                -600_000
            };
            wait_for("the arbiter to measure lb2's clock", || {
                server
                    .clock_offsets()
                    .iter()
                    .any(|p| p.peer == CLIENT2 && (p.offset_ms - want).abs() < 5_000 && p.warn)
            })
            .await;
            // Arbiter → balancer: a heartbeat and a withdraw pass, and our clock shows there.
            server.send(Dest::Broadcast, &heartbeat(1)).await.unwrap();
            server
                .send(Dest::Client(CLIENT2.into()), &fin(10))
                .await
                .unwrap();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
            let mut page = String::new();
            wait_for("lb2 to take both and report the arbiter's clock", || {
                page = crate::daemon::http::get(addr, "/metrics", Duration::from_secs(2))
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                metric(&page, "ipvs_sync_messages_received_total", "fin_announce") >= Some(1.0)
                    && metric(&page, "ipvs_sync_peer_clock_offset_seconds", ARBITER)
                        .is_some_and(|s| (s * 1000.0 + want as f64).abs() < 5_000.0)
            })
            .await;
            let offset_there = metric(&page, "ipvs_sync_peer_clock_offset_seconds", ARBITER);
            let offset_here = server.clock_offsets();
            eprintln!(
                "lb2 at {shift}: the arbiter measures lb2 {:?} ms off, lb2 measures the arbiter \
                 {offset_there:?} s off",
                offset_here
                    .iter()
                    .find(|p| p.peer == CLIENT2)
                    .map(|p| p.offset_ms),
            );
            assert_eq!(server.counters().dropped_total(), 0);
            for line in page
                .lines()
                .filter(|l| l.starts_with("ipvs_sync_messages_dropped_total"))
            {
                assert!(line.ends_with(" 0"), "lb2 dropped messages: {line}");
            }
            server.close().await;
        });
    }
}
