//! Messages both ways, reconnection, broker restarts and outages, garbage, and figures.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::amqp::WireError;
use crate::wire::envelope::{self, DropReason, Header, MessageId};
use crate::wire::messages::{self, Direction, FinAnnounce, MessageType};

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_every_message_type_round_trips_between_server_and_client() {
    let lab = lab("wire-rt");
    lab.rt.block_on(async {
        let ((server, mut srx), (client, mut crx)) = lab.pair().await;
        let samples = messages::tests::samples();
        for m in &samples {
            if m.travels(Direction::ToServer) {
                client.send(Dest::Server, m).await.unwrap();
                let got = recv(&mut srx).await;
                assert_eq!(&got.message, m);
                assert_eq!((got.from.as_str(), got.to.as_str()), (CLIENT, "lbs"));
                assert_eq!(got.role, PeerRole::Client);
                assert_eq!(got.id.epoch, client.epoch());
            }
            if m.travels(Direction::ToClient) {
                server.send(Dest::Client(CLIENT.into()), m).await.unwrap();
                let got = recv(&mut crx).await;
                assert_eq!(&got.message, m);
                assert_eq!(got.from, ARBITER);
                assert_eq!(got.role, PeerRole::Server);
                assert_eq!(got.id.epoch, server.epoch());
                server.send(Dest::Broadcast, m).await.unwrap();
                let got = recv(&mut crx).await;
                assert_eq!(&got.message, m);
                assert_eq!(got.to, "broadcast");
            }
        }
        for t in MessageType::ALL {
            let both = server.counters().sent(t) + client.counters().sent(t);
            let got = server.counters().received(t) + client.counters().received(t);
            assert!(both > 0, "{t} never sent");
            assert_eq!(both, got, "{t}: sent {both}, received {got}");
        }
        assert_eq!(server.counters().dropped_total(), 0);
        assert_eq!(client.counters().dropped_total(), 0);

        // No queue for this host: the broker returns the message and send says so.
        let err = server
            .send(Dest::Client("lb9.example.net".into()), &heartbeat(1))
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Unroutable { ref routing_key } if routing_key == "lb9.example.net"), "{err}");
        assert_eq!(server.counters().unroutable(), 1);
        // A role never sends the other role's messages.
        assert!(matches!(
            client.send(Dest::Server, &samples[2]).await,
            Err(WireError::WrongDirection { .. })
        ));
        server.close().await;
        client.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_transport_reconnects_after_the_broker_closes_every_connection() {
    let lab = lab("wire-rec");
    let ((server, mut srx), (client, mut crx)) = lab.rt.block_on(lab.pair());
    lab.rt.block_on(async {
        server
            .send(Dest::Client(CLIENT.into()), &heartbeat(1))
            .await
            .unwrap();
        assert_eq!(recv(&mut crx).await.message, heartbeat(1));
    });
    lab.rabbit.close_all_connections().unwrap();
    lab.rt.block_on(async {
        wait_within("both sides to reconnect", Duration::from_secs(60), || {
            server.counters().reconnects() >= 1 && client.counters().reconnects() >= 1
        })
        .await;
        server
            .send(Dest::Client(CLIENT.into()), &heartbeat(2))
            .await
            .unwrap();
        assert_eq!(recv(&mut crx).await.message, heartbeat(2));
        let hb = client_heartbeat(3);
        client.send(Dest::Server, &hb).await.unwrap();
        assert_eq!(recv(&mut srx).await.message, hb);
        server.close().await;
        client.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_broker_restart_loses_nothing_confirmed_and_the_client_consumes_again() {
    let mut lab = lab("wire-restart");
    let slow = |mut o: TransportOptions| {
        // Messages wait in the queue through the restart; let them live long enough.
        o.max_age = Duration::from_secs(300);
        o.send_timeout = Duration::from_secs(60);
        o.prefetch = 4;
        o.incoming_capacity = 4;
        o
    };
    let (server, _srx) = lab.rt.block_on(lab.server(slow(lab.server_opts())));
    let (client, mut crx) = lab
        .rt
        .block_on(lab.client(CLIENT, slow(lab.client_opts(CLIENT))));
    let server = std::sync::Arc::new(server);
    const N: u64 = 200;
    // The arbiter sends N heartbeats, paced, recording those the broker confirmed.
    let sender = {
        let server = std::sync::Arc::clone(&server);
        lab.rt.spawn(async move {
            let mut confirmed = BTreeSet::new();
            let mut failed = 0u32;
            for i in 0..N {
                match server
                    .send(Dest::Client(CLIENT.into()), &heartbeat(i))
                    .await
                {
                    Ok(()) => {
                        confirmed.insert(i);
                    }
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (confirmed, failed)
        })
    };
    // The client reads nothing yet: with a full channel and prefetch 4, confirmed messages
    // pile up in the durable queue, which is what the restart must not lose.
    std::thread::sleep(Duration::from_millis(800));
    lab.rabbit.restart().unwrap();
    let (confirmed, failed) = lab.rt.block_on(sender).unwrap();
    assert!(confirmed.len() as u64 + u64::from(failed) == N);
    assert!(
        confirmed.len() as u64 > N / 2,
        "only {} of {N} confirmed ({failed} failed)",
        confirmed.len()
    );
    let received = lab.rt.block_on(async {
        let mut received = BTreeSet::new();
        while !confirmed.is_subset(&received) {
            let got = recv(&mut crx).await;
            if let Message::Heartbeat(h) = got.message {
                received.insert(h.uptime);
            }
        }
        received
    });
    assert!(confirmed.is_subset(&received));
    assert!(server.counters().reconnects() >= 1);
    assert!(client.counters().reconnects() >= 1);
    // The client consumes again: a new message arrives after the restart.
    lab.rt.block_on(async {
        server
            .send(Dest::Client(CLIENT.into()), &heartbeat(10_000))
            .await
            .unwrap();
        loop {
            let got = recv(&mut crx).await;
            if got.message == heartbeat(10_000) {
                break;
            }
        }
    });
    eprintln!(
        "restart: {} confirmed, {failed} failed sends, {} received, reconnects server {} client {}",
        confirmed.len(),
        received.len(),
        server.counters().reconnects(),
        client.counters().reconnects(),
    );
    lab.rt.block_on(client.close());
}

/// Deterministic garbage of every kind a receiver must drop, with the reason it must count.
/// `from` is a sender the receiver accepts.
fn garbage(i: u64, from: &str, to: &str, max_bytes: usize) -> (Vec<u8>, DropReason) {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let wrong_key = NodeKey::from_text("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
    let mut header = Header {
        kind: "fin_announce".into(),
        from: from.into(),
        to: to.into(),
        id: MessageId {
            epoch: 1,
            seq: i + 1,
        },
        ts_ms: now_ms(),
    };
    let body =
        serde_json::value::to_raw_value(&serde_json::json!({"vips": ["192.0.2.10"]})).unwrap();
    match i % 6 {
        // Random bytes (never valid JSON: they start with a byte no JSON starts with).
        0 => {
            let mut b: Vec<u8> = (0..(rnd() % 512)).map(|_| rnd() as u8).collect();
            b.insert(0, 0xff);
            (b, DropReason::Malformed)
        }
        // JSON that is not an envelope.
        1 => (
            format!(r#"{{"type":"fin_announce","n":{}}}"#, rnd()).into_bytes(),
            DropReason::Malformed,
        ),
        // An envelope without a signature.
        2 => {
            let sealed = envelope::seal(&wrong_key, &header, &body).unwrap();
            let text = String::from_utf8(sealed).unwrap();
            let cut = text.split(",\"sig\"").next().unwrap().to_owned() + "}";
            (cut.into_bytes(), DropReason::Unsigned)
        }
        // Signed with another key in the name of an accepted sender.
        3 => (
            envelope::seal(&wrong_key, &header, &body).unwrap(),
            DropReason::Forged,
        ),
        // In the name of nobody the receiver knows.
        4 => {
            header.from = "broadcast".into();
            (
                envelope::seal(&wrong_key, &header, &body).unwrap(),
                DropReason::UnknownSender,
            )
        }
        // Larger than the receiver accepts.
        _ => (
            vec![b' '; max_bytes + 1 + (rnd() % 100) as usize],
            DropReason::TooLarge,
        ),
    }
}

/// Waits until the broker confirmed what `ch` published and `t` has counted `n` drops.
async fn counted(ch: &Channel, t: &Transport, n: u64) {
    ch.wait_for_confirms().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.counters().dropped_total() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} garbage messages counted after 60 s",
            t.counters().dropped_total()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_ten_thousand_garbage_messages_leave_both_sides_serving() {
    let lab = lab("wire-flood");
    const MAX: usize = 4096;
    const N: u64 = 10_000;
    lab.rt.block_on(async {
        // Nothing may expire while the flood is drained: every drop must be counted.
        let small = |o: TransportOptions| {
            let mut o = o.with_max_bytes(MAX);
            o.max_age = Duration::from_secs(600);
            o
        };
        let (server, mut srx) = lab.server(small(lab.server_opts())).await;
        let (client, mut crx) = lab.client(CLIENT, small(lab.client_opts(CLIENT))).await;
        // The garbage comes from someone who owns the broker: nothing of the layout's
        // permissions stops it, only the receivers' checks.
        let (_conn, ch) = raw_channel(&lab.admin_url()).await;
        let mut expect_server = [0u64; DropReason::ALL.len()];
        let mut expect_client = [0u64; DropReason::ALL.len()];
        let start = Instant::now();
        // A queue holds a few of the largest messages at most (x-max-length-bytes: 16 ×
        // max_bytes for `lbs`, 4 × for a balancer's) and drops its oldest past that, so a
        // receiver slower than this publisher would lose garbage in the broker, uncounted.
        // The flood goes out in steps of at most 3 × max_bytes, each once the receiver has
        // counted everything before it.
        const STEP: usize = 3 * MAX;
        let (mut sent_s, mut sent_c, mut step_s, mut step_c) = (0u64, 0u64, 0usize, 0usize);
        for i in 0..N {
            let (g, r) = garbage(i, CLIENT, "lbs", MAX);
            if step_s + g.len() > STEP {
                counted(&ch, &server, sent_s).await;
                step_s = 0;
            }
            raw_publish(&ch, "lbs", &g).await;
            (sent_s, step_s) = (sent_s + 1, step_s + g.len());
            expect_server[r.index()] += 1;
            let (g, r) = garbage(i + N, ARBITER, CLIENT, MAX);
            if step_c + g.len() > STEP {
                counted(&ch, &client, sent_c).await;
                step_c = 0;
            }
            raw_publish(&ch, CLIENT, &g).await;
            (sent_c, step_c) = (sent_c + 1, step_c + g.len());
            expect_client[r.index()] += 1;
        }
        ch.wait_for_confirms().await.unwrap();
        // A genuine message each way, queued behind the garbage.
        server
            .send(Dest::Client(CLIENT.into()), &heartbeat(42))
            .await
            .unwrap();
        client
            .send(Dest::Server, &client_heartbeat(42))
            .await
            .unwrap();
        assert_eq!(recv(&mut crx).await.message, heartbeat(42));
        assert_eq!(recv(&mut srx).await.message, client_heartbeat(42));
        let took = start.elapsed();
        for (side, t, expect) in [
            ("server", &server, expect_server),
            ("client", &client, expect_client),
        ] {
            let c = t.counters();
            assert_eq!(c.dropped_total(), N, "{side}");
            for r in DropReason::ALL {
                assert_eq!(c.dropped(r), expect[r.index()], "{side} {r}");
            }
            assert!(t.is_connected(), "{side}");
        }
        eprintln!("flood: 2 x {N} garbage messages published and drained in {took:?}");
        server.close().await;
        client.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_long_broker_outage_is_survived() {
    let mut lab = lab("wire-outage");
    // A connect timeout shorter than the outage, long enough for a first connect on a
    // loaded machine (2 s was not).
    let quick = |mut o: TransportOptions| {
        o.connect_timeout = Duration::from_secs(8);
        o
    };
    let (server, _srx) = lab.rt.block_on(lab.server(quick(lab.server_opts())));
    let (client, mut crx) = lab
        .rt
        .block_on(lab.client(CLIENT, quick(lab.client_opts(CLIENT))));
    lab.rabbit.stop_server().unwrap();
    // Well past the reconnect backoff's cap: the transport keeps trying.
    std::thread::sleep(Duration::from_secs(25));
    lab.rabbit.start_server().unwrap();
    lab.rt.block_on(async {
        wait_for("the client to reconnect", || {
            client.counters().reconnects() >= 1
        })
        .await;
        server
            .send(Dest::Client(CLIENT.into()), &heartbeat(7))
            .await
            .unwrap();
        assert_eq!(recv(&mut crx).await.message, heartbeat(7));
        eprintln!(
            "outage: reconnects server {} client {}",
            server.counters().reconnects(),
            client.counters().reconnects(),
        );
        server.close().await;
        client.close().await;
    });
}

/// Not an assertion: figures for the closing note (send = seal + publish + broker confirm;
/// delivery = send start until the client holds the verified message).
#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_latency_figures() {
    let lab = lab("wire-lat");
    lab.rt.block_on(async {
        let ((server, _srx), (client, mut crx)) = lab.pair().await;
        const N: usize = 500;
        let mut send = Vec::with_capacity(N);
        let mut deliver = Vec::with_capacity(N);
        let msg = Message::FinAnnounce(FinAnnounce {
            vips: vec!["192.0.2.10".parse().unwrap()],
        });
        let all = Instant::now();
        for _ in 0..N {
            let t = Instant::now();
            server.send(Dest::Broadcast, &msg).await.unwrap();
            send.push(t.elapsed());
            recv(&mut crx).await;
            deliver.push(t.elapsed());
        }
        let took = all.elapsed();
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        eprintln!(
            "latency over {N} fin_announce: send+confirm p50 {:?} p99 {:?}; delivered p50 {:?} p99 {:?}; {:.0} msg/s sequential",
            pct(&mut send, 50),
            pct(&mut send, 99),
            pct(&mut deliver, 50),
            pct(&mut deliver, 99),
            N as f64 / took.as_secs_f64()
        );
        server.close().await;
        client.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_outbox_keeps_lane_order_with_many_in_flight() {
    use crate::daemon::metrics::Metrics;
    use crate::daemon::Outbox;
    use std::sync::Arc;

    let lab = lab("wire-outbox");
    lab.rt.block_on(async {
        // Nothing may expire while thousands wait in the queue on a loaded machine.
        let long = |mut o: TransportOptions| {
            o.max_age = Duration::from_secs(600);
            o
        };
        let (server, _srx) = lab.server(long(lab.server_opts())).await;
        let (client, mut crx) = lab.client(CLIENT, long(lab.client_opts(CLIENT))).await;
        let server = Arc::new(server);
        const N: u64 = 1000;
        let fin = |i: u64| {
            Message::FinAnnounce(FinAnnounce {
                vips: vec![std::net::IpAddr::from([198, 51, (100 + i / 250) as u8, (i % 250) as u8])],
            })
        };

        // One at a time, each confirm awaited: the old way, for the figure.
        let t = Instant::now();
        for i in 0..N {
            server.send(Dest::Broadcast, &fin(i)).await.unwrap();
        }
        let one_by_one = t.elapsed();
        for _ in 0..N {
            recv(&mut crx).await;
        }

        // Through the outbox: heartbeats (normal lane) and fin_announce (urgent) interleaved.
        let outbox = Outbox::spawn(
            crate::daemon::bus::AmqpBus::new_shared(Arc::clone(&server)),
            4 * N as usize,
            Metrics::new(crate::daemon::metrics::Role::Server),
        );
        let t = Instant::now();
        for i in 0..N {
            outbox.send(Dest::Broadcast, heartbeat(i));
            outbox.send(Dest::Broadcast, fin(i));
        }
        let (mut beats, mut fins) = (Vec::new(), Vec::new());
        while beats.len() + fins.len() < 2 * N as usize {
            match recv(&mut crx).await.message {
                Message::Heartbeat(h) => beats.push(h.uptime),
                Message::FinAnnounce(f) => fins.push(f.vips[0]),
                other => panic!("unexpected {other:?}"),
            }
        }
        let delivered = t.elapsed();
        wait_for("the outbox to drain", || outbox.depth() == 0).await;
        let confirmed = t.elapsed();
        let expected: Vec<std::net::IpAddr> = (0..N)
            .map(|i| match fin(i) {
                Message::FinAnnounce(f) => f.vips[0],
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(beats, (0..N).collect::<Vec<_>>(), "heartbeats out of order");
        assert_eq!(fins, expected, "fin_announce out of order");
        assert_eq!(server.counters().sent(MessageType::Heartbeat), N);
        assert_eq!(server.counters().sent(MessageType::FinAnnounce), 2 * N);
        eprintln!(
            "{N} fin_announce one by one: {:.0} msg/s; {} through the outbox: all delivered in {:?} \
             ({:.0} msg/s), all confirmed in {:?}",
            N as f64 / one_by_one.as_secs_f64(),
            2 * N,
            delivered,
            (2 * N) as f64 / delivered.as_secs_f64(),
            confirmed
        );
        outbox.close().await;
        client.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_fin_overtakes_the_main_lane_queued_before_it() {
    let lab = lab("wire-lanes");
    lab.rt.block_on(async {
        let ((server, _srx), (client, mut crx)) = lab.pair().await;
        // The balancer's daemon is busy: forty main-lane messages wait for it (in its
        // queue, the prefetch window and the transport), then a fin_announce comes.
        const N: u64 = 40;
        for i in 1..=N {
            server
                .send(Dest::Client(CLIENT.into()), &heartbeat(i))
                .await
                .unwrap();
        }
        let vip = std::net::IpAddr::from([198, 51, 100, 7]);
        let fin = Message::FinAnnounce(FinAnnounce { vips: vec![vip] });
        server
            .send(Dest::Client(CLIENT.into()), &fin)
            .await
            .unwrap();
        wait_for("the fin to reach the balancer", || {
            client.counters().received(MessageType::FinAnnounce) == 1
        })
        .await;
        let mut order = Vec::new();
        for _ in 0..=N {
            order.push(recv(&mut crx).await.message);
        }
        let at = order.iter().position(|m| *m == fin);
        assert!(
            at.is_some_and(|i| i <= 1),
            "fin_announce handed over at {at:?} of {}: it waited behind the main lane",
            N + 1
        );
        let beats: Vec<u64> = order
            .iter()
            .filter_map(|m| match m {
                Message::Heartbeat(h) => Some(h.uptime),
                _ => None,
            })
            .collect();
        assert_eq!(beats, (1..=N).collect::<Vec<_>>(), "main lane out of order");
        server.close().await;
        client.close().await;
    });
}

/// Deliveries are acked together, not one by one (`acks.rs`), but every one handed over is
/// acked: at half the prefetch window, `ack_delay` after the oldest, and before the consumer
/// stops, so nothing comes back to the queue after a clean stop.
#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_deliveries_handed_over_are_acked_in_batches_and_at_a_stop() {
    let lab = lab("wire-acks");
    lab.rt.block_on(async {
        let (server, _srx) = lab.server(lab.server_opts()).await;
        let queue = format!("ipvs-sync.{CLIENT}");
        let unacked = |lab: &Lab| lab.queue_count(&queue, "messages_unacknowledged");
        let to_client = |i: u64| {
            let server = &server;
            async move {
                server
                    .send(Dest::Client(CLIENT.into()), &heartbeat(i))
                    .await
                    .unwrap();
            }
        };

        // Three of a window of 16, with the default delay: acked by the delay.
        let (client, mut crx) = lab.client(CLIENT, lab.client_opts(CLIENT)).await;
        assert_eq!(lab.client_opts(CLIENT).prefetch, 16);
        for i in 0..3 {
            to_client(i).await;
            recv(&mut crx).await;
        }
        wait_for("the delay to ack three", || unacked(&lab) == Some(0)).await;
        client.close().await;

        // With a delay no test waits for: seven stay unacked, the eighth acks all eight.
        let mut o = lab.client_opts(CLIENT);
        o.ack_delay = Duration::from_secs(3600);
        let (client, mut crx) = lab.client(CLIENT, o).await;
        for i in 10..17 {
            to_client(i).await;
            recv(&mut crx).await;
        }
        wait_for("seven to show unacked", || unacked(&lab) == Some(7)).await;
        to_client(17).await;
        recv(&mut crx).await;
        wait_for("half the window to ack all eight", || {
            unacked(&lab) == Some(0)
        })
        .await;

        // Three more, unacked until the stop, which acks them: none comes back.
        for i in 20..23 {
            to_client(i).await;
            recv(&mut crx).await;
        }
        wait_for("three to show unacked", || unacked(&lab) == Some(3)).await;
        assert_eq!(client.counters().dropped_total(), 0);
        client.close().await;
        assert_eq!(
            lab.queue_len(&queue),
            Some(0),
            "a stopped consumer left them unacked"
        );
        server.close().await;
    });
}
