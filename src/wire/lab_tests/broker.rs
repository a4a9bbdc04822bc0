//! The broker's side: least-privilege users, exclusive queues, bounded queues, an old queue
//! refused with what to do, amqps with a private CA.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;

use super::*;
use crate::wire::amqp::topology::{ANNOUNCE_QUEUE_PREFIX, CLIENT_QUEUE_PREFIX};
use crate::wire::amqp::{Lane, TlsFiles, WireError};
use crate::wire::messages::MessageType;

/// Runs `op` on a fresh channel of `conn` and says whether the broker refused it for lack
/// of permission (it closes the channel with `ACCESS_REFUSED`); panics on any other error.
async fn refused<F, Fut, T>(conn: &Connection, what: &str, op: F) -> bool
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    match tokio::time::timeout(RECV_TIMEOUT, op(ch)).await {
        Err(_) => panic!("{what}: no answer"),
        Ok(Ok(_)) => false,
        Ok(Err(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("ACCESS_REFUSED") || text.contains("access to"),
                "{what}: refused for another reason: {text}"
            );
            true
        }
    }
}

/// Publishes and waits for the confirm: a refusal closes the channel before it comes.
async fn publish(ch: Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default(),
        )
        .await?;
    confirm.await?;
    // A refused publish closes the channel asynchronously: a round trip makes it show.
    ch.basic_qos(1, Default::default()).await
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_balancer_user_is_refused_everything_but_its_own_queue_and_lbs() {
    let lab = lab("wire-acl");
    lab.rt.block_on(async {
        // The layout's users run the transports: the permissions are enough to work.
        let ((server, mut srx), (lb1, _rx1)) = lab.pair().await;
        let (lb2, mut rx2) = lab.client(CLIENT2, lab.client_opts(CLIENT2)).await;
        send_and_expect(&lb1, Dest::Server, &client_heartbeat(1), &mut srx).await;
        send_and_expect(
            &server,
            Dest::Client(CLIENT2.into()),
            &heartbeat(1),
            &mut rx2,
        )
        .await;
        send_and_expect(&server, Dest::Broadcast, &heartbeat(2), &mut rx2).await;

        let own: &'static str = format!("{CLIENT_QUEUE_PREFIX}{CLIENT}").leak();
        let other: &'static str = format!("{CLIENT_QUEUE_PREFIX}{CLIENT2}").leak();
        let conn = Connection::connect(&lab.url(CLIENT), ConnectionProperties::default())
            .await
            .unwrap();
        let mut results = Vec::new();
        macro_rules! attempt {
            ($what:expr, |$ch:ident| $op:expr) => {{
                let r = refused(&conn, $what, |$ch| async move { $op }).await;
                results.push(($what, r));
            }};
        }
        attempt!("lb1 publishes to lbs", |ch| publish(ch, EXCHANGE, "lbs")
            .await);
        attempt!("lb1 publishes to broadcast", |ch| publish(
            ch,
            EXCHANGE,
            "broadcast"
        )
        .await);
        attempt!("lb1 publishes to lb2", |ch| publish(ch, EXCHANGE, CLIENT2)
            .await);
        attempt!("lb1 publishes to the arbiter's queue by name", |ch| {
            publish(ch, "", "lbs").await
        });
        attempt!("lb1 consumes lbs", |ch| ch
            .basic_consume(
                "lbs".into(),
                "x".into(),
                BasicConsumeOptions::default(),
                FieldTable::default()
            )
            .await);
        attempt!("lb1 consumes lb2's queue", |ch| ch
            .basic_consume(
                other.into(),
                "x".into(),
                BasicConsumeOptions::default(),
                FieldTable::default()
            )
            .await);
        attempt!("lb1 binds its queue to lb2's key", |ch| ch
            .queue_bind(
                own.into(),
                EXCHANGE.into(),
                CLIENT2.into(),
                QueueBindOptions::default(),
                FieldTable::default()
            )
            .await);
        attempt!("lb1 binds its queue to lbs", |ch| ch
            .queue_bind(
                own.into(),
                EXCHANGE.into(),
                "lbs".into(),
                QueueBindOptions::default(),
                FieldTable::default()
            )
            .await);
        attempt!("lb1 purges lb2's queue", |ch| ch
            .queue_purge(other.into(), QueuePurgeOptions::default())
            .await);
        attempt!("lb1 deletes lb2's queue", |ch| ch
            .queue_delete(other.into(), QueueDeleteOptions::default())
            .await);
        attempt!("lb1 declares a queue of its own choosing", |ch| ch
            .queue_declare(
                "lb1-tap".into(),
                QueueDeclareOptions::default(),
                FieldTable::default()
            )
            .await);
        attempt!("lb1 declares the exchange", |ch| ch
            .exchange_declare(
                EXCHANGE.into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await);
        attempt!("lb1 deletes the exchange", |ch| ch
            .exchange_delete(EXCHANGE.into(), ExchangeDeleteOptions::default())
            .await);
        let arbiter = Connection::connect(&lab.url(ARBITER), ConnectionProperties::default())
            .await
            .unwrap();
        for (what, key, want) in [
            ("the arbiter publishes to lb1", CLIENT, false),
            ("the arbiter publishes to broadcast", "broadcast", false),
            ("the arbiter publishes to lbs", "lbs", true),
        ] {
            let r = refused(&arbiter, what, |ch| async move {
                publish(ch, EXCHANGE, key).await
            })
            .await;
            assert_eq!(r, want, "{what}");
        }
        assert!(
            refused(
                &arbiter,
                "the arbiter consumes lb1's queue",
                |ch| async move {
                    ch.basic_consume(
                        own.into(),
                        "x".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                }
            )
            .await
        );
        for (what, r) in &results {
            eprintln!("{what}: {}", if *r { "refused" } else { "allowed" });
        }
        let allowed: Vec<_> = results
            .iter()
            .filter(|(_, r)| !r)
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(allowed, ["lb1 publishes to lbs"]);
        // `guest` is gone.
        assert!(!lab.rabbit.ctl(&["list_users"]).unwrap().contains("guest"));
        server.close().await;
        lb1.close().await;
        lb2.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_second_process_with_the_same_hostname_is_refused_at_start() {
    let lab = lab("wire-excl");
    lab.rt.block_on(async {
        let ((server, _srx), (lb1, _rx1)) = lab.pair().await;
        let mut o = lab.client_opts(CLIENT);
        o.state_dir = lab.state_dir("lb1-twin");
        let err = Transport::connect(&lab.url(CLIENT), client_role(CLIENT), o)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::QueueInUse { .. }), "{err}");
        assert!(err.is_fatal());
        let text = err.to_string();
        assert!(
            text.contains("another ipvs-sync with this hostname"),
            "{text}"
        );
        eprintln!("second lb1: {text}");
        // The same state directory is refused even before the broker is asked.
        let err = Transport::connect(
            &lab.url(CLIENT),
            client_role(CLIENT),
            lab.client_opts(CLIENT),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("locked by another ipvs-sync client"),
            "{err}"
        );
        server.close().await;
        lb1.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_a_balancer_queue_without_consumer_stays_bounded() {
    use crate::daemon::metrics::Metrics;
    use crate::daemon::Outbox;
    use std::sync::Arc;

    let lab = lab("wire-bound");
    let queue = format!("{CLIENT_QUEUE_PREFIX}{CLIENT2}");
    lab.rt.block_on(async {
        let (server, _srx) = lab.server(lab.server_opts()).await;
        let server = Arc::new(server);
        // lb1 with the default limits but a 5 s TTL; lb2 with 16 KiB (4 × max_bytes) and a
        // TTL long enough that only the size bounds it. Both go away for good.
        let mut o1 = lab.client_opts(CLIENT);
        o1.max_age = Duration::from_secs(5);
        let (lb1, rx1) = lab.client(CLIENT, o1).await;
        let mut o2 = lab.client_opts(CLIENT2).with_max_bytes(4096);
        o2.max_age = Duration::from_secs(3600);
        let (lb2, rx2) = lab.client(CLIENT2, o2).await;
        lb1.close().await;
        lb2.close().await;
        drop((rx1, rx2));
        let args = lab.list_queues(&["arguments"]);
        eprintln!("queues and their arguments:\n{args}");
        let lb1_args = args.lines().find(|l| l.contains(CLIENT)).unwrap();
        for want in [
            "{\"x-message-ttl\",5000}",
            "{\"x-max-length\",50000}",
            "{\"x-max-length-bytes\",67108864}",
            "{\"x-overflow\",\"drop-head\"}",
            "{\"x-expires\",86400000}",
        ] {
            assert!(lb1_args.contains(want), "{want} missing in {lb1_args}");
        }
        const N: u64 = 10_000;
        let outbox = Outbox::spawn(
            crate::daemon::bus::AmqpBus::new_shared(Arc::clone(&server)),
            2 * N as usize,
            Metrics::new(crate::daemon::metrics::Role::Server),
        );
        for i in 0..N {
            outbox.send(Dest::Broadcast, heartbeat(i));
        }
        wait_within(
            "every broadcast to be confirmed",
            Duration::from_secs(180),
            || server.counters().sent(MessageType::Heartbeat) == N,
        )
        .await;
        let held = lab.queue_len(&queue).unwrap();
        eprintln!("after {N} broadcasts: lb2's queue (16 KiB, drop-head) holds {held}");
        assert!(held > 0 && held < 100, "lb2's queue holds {held}");
        // And the TTL empties lb1's.
        let lb1_queue = format!("{CLIENT_QUEUE_PREFIX}{CLIENT}");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let n = lab.queue_len(&lb1_queue).unwrap();
            if n == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lb1's queue still holds {n}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        outbox.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_queue_depth_is_reported() {
    let lab = lab("wire-depth");
    lab.rt.block_on(async {
        let (server, _srx) = lab.server(lab.server_opts()).await;
        let mut o = lab.client_opts(CLIENT);
        o.prefetch = 1;
        o.incoming_capacity = 1;
        o.depth_interval = Duration::from_millis(200);
        // Nobody reads `_rx`: the queue fills behind one message in hand and one prefetched.
        let (lb1, _rx) = lab.client(CLIENT, o).await;
        for i in 0..50 {
            server
                .send(Dest::Client(CLIENT.into()), &heartbeat(i))
                .await
                .unwrap();
        }
        // And a backlog in the announce lane, which has a queue of its own.
        for i in 0..30u8 {
            let fin = Message::FinAnnounce(crate::wire::messages::FinAnnounce {
                vips: vec![std::net::IpAddr::from([198, 51, 100, i])],
            });
            server
                .send(Dest::Client(CLIENT.into()), &fin)
                .await
                .unwrap();
        }
        wait_for("the depth to show the backlog", || {
            lb1.queue_depth().is_some_and(|d| d >= 45)
                && lb1.lane_depth(Lane::Announce).is_some_and(|d| d >= 25)
        })
        .await;
        let depths = lb1.queue_depths();
        eprintln!("queue depths: {depths:?}");
        assert_eq!(
            depths.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(),
            [
                format!("ipvs-sync.{CLIENT}"),
                format!("ipvs-sync-announce.{CLIENT}")
            ]
        );
        server.close().await;
        lb1.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_an_old_queue_without_limits_is_refused_with_what_to_do() {
    let lab = lab("wire-oldq");
    let queue = format!("{CLIENT_QUEUE_PREFIX}{CLIENT}");
    lab.rt.block_on(async {
        let (server, _srx) = lab.server(lab.server_opts()).await;
        // The queue as an earlier version declared it: durable, no arguments.
        let (_conn, ch) = raw_channel(&lab.admin_url()).await;
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let err = Transport::connect(
            &lab.url(CLIENT),
            client_role(CLIENT),
            lab.client_opts(CLIENT),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WireError::QueueArguments { .. }), "{err}");
        let text = err.to_string();
        eprintln!("{text}");
        let fix = format!("rabbitmqctl delete_queue -p {VHOST} {queue}");
        assert!(text.contains(&fix), "{text}");
        // Doing what it says is enough.
        lab.rabbit
            .ctl(&["delete_queue", "-p", VHOST, &queue])
            .unwrap();
        let (lb1, _rx) = lab.client(CLIENT, lab.client_opts(CLIENT)).await;
        lb1.close().await;
        server.close().await;
    });
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and openssl; run netns-lab/test"]
fn lab_amqps_with_a_private_ca_and_client_certificates() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki =
        labkit::rabbit::make_test_pki(pki_dir.path(), LAB_ADDR.parse().unwrap(), CLIENT).unwrap();
    let tls = labkit::rabbit::RabbitTls {
        port: 5671,
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        require_client_cert: true,
    };
    let lab = lab_with("wire-tls", Some(&tls));
    let url = |node: &str| {
        let a = if node == ARBITER {
            &lab.fleet.arbiter
        } else {
            &lab.fleet.balancers[node]
        };
        lab.rabbit.tls_url_in(VHOST, &a.user, &a.pass).unwrap()
    };
    let good = TlsFiles {
        ca_file: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    };
    lab.rt.block_on(async {
        let with = |mut o: TransportOptions, tls: TlsFiles| {
            o.tls = tls;
            o.connect_timeout = Duration::from_secs(10);
            o
        };
        let (server, mut srx) = Transport::connect(
            &url(ARBITER),
            server_role(),
            with(lab.server_opts(), good.clone()),
        )
        .await
        .unwrap();
        let (lb1, mut rx1) = Transport::connect(
            &url(CLIENT),
            client_role(CLIENT),
            with(lab.client_opts(CLIENT), good.clone()),
        )
        .await
        .unwrap();
        send_and_expect(
            &server,
            Dest::Client(CLIENT.into()),
            &heartbeat(1),
            &mut rx1,
        )
        .await;
        send_and_expect(&lb1, Dest::Server, &client_heartbeat(1), &mut srx).await;
        let mut o = lab.client_opts(CLIENT2);
        o.state_dir = lab.state_dir("tls-refused");
        let refusals = [
            (
                "no client certificate",
                TlsFiles {
                    client_cert: None,
                    client_key: None,
                    ..good.clone()
                },
            ),
            (
                "the broker's CA not trusted",
                TlsFiles {
                    ca_file: None,
                    ..good.clone()
                },
            ),
            (
                "a client certificate of another CA",
                TlsFiles {
                    client_cert: Some(pki.rogue_client_cert.clone()),
                    client_key: Some(pki.rogue_client_key.clone()),
                    ..good.clone()
                },
            ),
            (
                "a CA that did not sign the broker",
                TlsFiles {
                    ca_file: Some(pki.rogue_ca.clone()),
                    ..good.clone()
                },
            ),
        ];
        for (what, files) in refusals {
            let r = Transport::connect(&url(CLIENT2), client_role(CLIENT2), with(o.clone(), files))
                .await;
            match r {
                Ok(_) => panic!("{what}: connected"),
                Err(e) => eprintln!("{what}: refused: {e}"),
            }
        }
        // Plain AMQP still works beside it (the lab keeps both listeners).
        assert!(lab.url(CLIENT2).starts_with("amqp://"));
        server.close().await;
        lb1.close().await;
    });
}

/// Quorum queues on one node: a balancer whose queue exists as a classic queue is refused
/// with what to do (RabbitMQ cannot change a queue's type), a quorum queue takes messages,
/// and a second process with the same hostname is refused at start although RabbitMQ does
/// not enforce an exclusive consume on a quorum queue.
#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_quorum_queues_refuse_a_type_change_and_a_second_consumer() {
    let lab = lab("wire-qq");
    let queue = format!("{CLIENT_QUEUE_PREFIX}{CLIENT}");
    let announce = format!("{ANNOUNCE_QUEUE_PREFIX}{CLIENT}");
    let quorum = |mut o: TransportOptions| {
        o.queue_type = config::QueueType::Quorum;
        o
    };
    lab.rt.block_on(async {
        let ((server, _srx), (lb1, _rx)) = lab.pair().await;
        lb1.close().await;
        let err = Transport::connect(
            &lab.url(CLIENT),
            client_role(CLIENT),
            quorum(lab.client_opts(CLIENT)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WireError::QueueArguments { .. }), "{err}");
        let text = err.to_string();
        eprintln!("classic → quorum: {text}");
        assert!(text.contains("x-queue-type=quorum"), "{text}");
        // What `ipvs-sync forget` does: both of the balancer's queues go.
        for q in [&queue, &announce] {
            lab.rabbit.ctl(&["delete_queue", "-p", VHOST, q]).unwrap();
        }
        let (lb1, mut rx) = lab.client(CLIENT, quorum(lab.client_opts(CLIENT))).await;
        let types = lab.list_queues(&["type"]);
        assert!(
            types
                .lines()
                .any(|l| l.split_whitespace().eq([queue.as_str(), "quorum"])),
            "{types}"
        );
        send_and_expect(&server, Dest::Client(CLIENT.into()), &heartbeat(3), &mut rx).await;
        let mut o = quorum(lab.client_opts(CLIENT));
        o.state_dir = lab.state_dir("lb1-twin");
        let err = Transport::connect(&lab.url(CLIENT), client_role(CLIENT), o)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::QueueInUse { .. }), "{err}");
        lb1.close().await;
        server.close().await;
    });
}
