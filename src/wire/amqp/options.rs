//! What a transport is built from: keys, trusted senders, limits, TLS files, timeouts.
//!
//! # Memory budget of received messages
//!
//! A transport holds at most `prefetch` deliveries the broker pushed and it has not acked,
//! and at most [`INPUT_BUDGET`] bytes of verified messages handed to the daemon and not yet
//! dropped by it (a semaphore; each message holds its size until the daemon is done with it).
//! `prefetch` defaults to `INPUT_BUDGET / max_bytes` (16 with the default 16 MiB), so the
//! worst case is about 2 × 256 MiB whatever the senders do; with small messages both limits
//! are far away and the count limits (`prefetch`, `incoming_capacity`) apply.

use std::path::PathBuf;
use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;

use super::topology::{QueueLimits, Role, CLIENT_QUEUE_EXPIRES, CLIENT_QUEUE_MAX_LENGTH};
use super::WireError;
use crate::wire::keys::{self, NodeKey, PublicKey, Senders};

/// Bytes of received messages a transport may hold for the daemon (see the module doc).
pub const INPUT_BUDGET: usize = 256 << 20;

/// Largest prefetch: beyond it a batch only adds latency.
pub const MAX_PREFETCH: u16 = 64;

/// Largest PEM file read (CA bundle, certificate, key).
const MAX_PEM: u64 = 1 << 20;

/// The TLS files of an `amqps://` connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates trusted besides the system's (`amqp_ca_file`).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the broker (`amqp_client_cert`).
    pub client_cert: Option<PathBuf>,
    /// Its PKCS#8 PEM key (`amqp_client_key`): owner root or this user, no group/other access.
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// `amqp_ca_file`, `amqp_client_cert` and `amqp_client_key` of `[main]`.
    pub fn from_config(cfg: &config::Config) -> Self {
        TlsFiles {
            ca_file: cfg.main.amqp_ca_file.clone(),
            client_cert: cfg.main.amqp_client_cert.clone(),
            client_key: cfg.main.amqp_client_key.clone(),
        }
    }

    /// Reads the files into lapin's TLS configuration (again at every connection, so renewed
    /// certificates are picked up by the next reconnect).
    pub fn load(&self) -> Result<OwnedTLSConfig, WireError> {
        let cert_chain = match &self.ca_file {
            Some(p) => Some(read_pem(p, false)?),
            None => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: read_pem(cert, false)?.into_bytes(),
                key: read_pem(key, true)?.into_bytes(),
            }),
            (None, None) => None,
            _ => {
                return Err(WireError::Tls {
                    file: PathBuf::new(),
                    reason: "amqp_client_cert and amqp_client_key go together".to_owned(),
                })
            }
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

fn read_pem(path: &std::path::Path, secret: bool) -> Result<String, WireError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let err = |reason: String| WireError::Tls {
        file: path.to_path_buf(),
        reason,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    if secret {
        let meta = f.metadata().map_err(|e| err(e.to_string()))?;
        config::secret::check_owner_and_mode(meta.uid(), meta.mode(), 0o077)
            .map_err(|why| err(format!("{why}; run `chmod 600 {}`", path.display())))?;
    }
    let mut text = String::new();
    f.take(MAX_PEM)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if !text.contains("-----BEGIN ") {
        return Err(err("not a PEM file".to_owned()));
    }
    Ok(text)
}

/// Tunables of a [`super::Transport`].
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// This node's private key (`node_key`): signs what it sends.
    pub key: NodeKey,
    /// Who may send to this node, with their keys.
    pub senders: Senders,
    /// The arbiter: where [`super::Transport::reload`] reads the balancers' keys again.
    pub keys_dir: Option<PathBuf>,
    /// Where the epoch and the replay marks live (`state_dir`).
    pub state_dir: PathBuf,
    /// Broker password to use when the URL carries none (`amqp_password`).
    pub password: Option<String>,
    /// TLS files for `amqps://`.
    pub tls: TlsFiles,
    /// Longest wait of a message in the broker: the queues' message TTL (`max_age`).
    pub max_age: Duration,
    /// Largest message sent or accepted, in bytes (`max_bytes`).
    pub max_bytes: usize,
    /// `x-max-length` of a balancer's queue (`queue_max_length`).
    pub queue_max_length: u32,
    /// `x-expires` of a balancer's queue (`queue_expires`).
    pub queue_expires: Duration,
    /// Unacknowledged deliveries the broker may push ahead (`basic.qos`).
    pub prefetch: u16,
    /// Longest time a delivery handed to the daemon stays unacked (see `acks.rs`).
    pub ack_delay: Duration,
    /// Capacity of the channel of verified messages handed to the daemon.
    pub incoming_capacity: usize,
    /// Sender ids remembered per sender beyond the highest (see `replay.rs`).
    pub replay_window: usize,
    /// How long a send may wait for a connection and its confirm.
    pub send_timeout: Duration,
    /// How long one connection attempt (connect, declare, bind, consume) may take.
    pub connect_timeout: Duration,
    /// AMQP heartbeat in seconds, unless the URL sets `?heartbeat=`.
    pub heartbeat_s: u16,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How often the transport asks the broker how deep its queue is.
    pub depth_interval: Duration,
    /// Quorum or classic queues (`amqp_queue_type`).
    pub queue_type: config::QueueType,
}

impl TransportOptions {
    /// Defaults: 30 s message TTL, 16 MiB messages, prefetch from the memory budget, 1024
    /// queued, 10 s timeouts, 10 s heartbeat, reconnect every 0.2 s doubling to 5 s, queue
    /// depth every 5 s.
    pub fn new(key: NodeKey, senders: Senders, state_dir: PathBuf) -> Self {
        let max_bytes = config::DEFAULT_MAX_BYTES;
        TransportOptions {
            key,
            senders,
            keys_dir: None,
            state_dir,
            password: None,
            tls: TlsFiles::default(),
            max_age: Duration::from_secs(30),
            max_bytes,
            queue_max_length: CLIENT_QUEUE_MAX_LENGTH,
            queue_expires: CLIENT_QUEUE_EXPIRES,
            prefetch: prefetch_for(max_bytes),
            ack_delay: super::acks::ACK_DELAY,
            incoming_capacity: 1024,
            replay_window: crate::wire::replay::DEFAULT_CAPACITY,
            send_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_s: 10,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            depth_interval: Duration::from_secs(5),
            queue_type: config::QueueType::Classic,
        }
    }

    /// Sets `max_bytes` and the prefetch that keeps within [`INPUT_BUDGET`].
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self.prefetch = prefetch_for(max_bytes);
        self
    }

    /// The options of `role` from the configuration: `node_key`; for a balancer the pinned
    /// `arbiter_name` and `arbiter_public_key`, for the arbiter the keys of
    /// `balancer_keys_dir`; limits, TLS files and the state directory.
    pub fn from_config(cfg: &config::Config, role: &Role) -> Result<Self, WireError> {
        let config_err = |e: config::ConfigError| WireError::Config(Box::new(e));
        let key = NodeKey::from_text(cfg.node_key().map_err(config_err)?).map_err(|source| {
            WireError::Key {
                what: format!("{}: [secret] node_key", cfg.secrets.file.display()),
                source,
            }
        })?;
        let (senders, keys_dir) = match role {
            Role::Client { .. } => (arbiter_pin(cfg)?, None),
            Role::Server { name } => {
                let dir = cfg.server.balancer_keys_dir.clone();
                (load_balancers(&dir, &key, name)?, Some(dir))
            }
        };
        let mut o = TransportOptions::new(key, senders, cfg.main.state_dir.clone())
            .with_max_bytes(cfg.messages.max_bytes);
        o.keys_dir = keys_dir;
        o.password = cfg
            .secrets
            .amqp_password
            .as_ref()
            .map(|p| p.expose().to_owned());
        o.tls = TlsFiles::from_config(cfg);
        o.max_age = cfg.messages.max_age;
        o.queue_max_length = cfg.messages.queue_max_length;
        o.queue_expires = cfg.messages.queue_expires;
        o.queue_type = cfg.main.amqp_queue_type;
        o.incoming_capacity = cfg.main.processing_queue_limit.clamp(16, 1 << 20);
        Ok(o)
    }
}

impl TransportOptions {
    /// What this transport declares its queue with.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            queue_type: self.queue_type,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            client_max_length: self.queue_max_length,
            client_expires: self.queue_expires,
        }
    }
}

/// `INPUT_BUDGET / max_bytes`, between 1 and [`MAX_PREFETCH`].
pub fn prefetch_for(max_bytes: usize) -> u16 {
    let n = INPUT_BUDGET / max_bytes.max(1);
    u16::try_from(n)
        .unwrap_or(MAX_PREFETCH)
        .clamp(1, MAX_PREFETCH)
}

fn arbiter_pin(cfg: &config::Config) -> Result<Senders, WireError> {
    let file = cfg.file.display();
    let missing = |key: &str| WireError::Trust {
        reason: format!(
            "{file}: [main] {key} is required on a balancer: the arbiter's hostname and the \
             public key its `ipvs-sync keygen` printed"
        ),
    };
    let name = cfg
        .main
        .arbiter_name
        .clone()
        .ok_or_else(|| missing("arbiter_name"))?;
    let text = cfg
        .main
        .arbiter_public_key
        .as_deref()
        .ok_or_else(|| missing("arbiter_public_key"))?;
    let key = PublicKey::from_text(text).map_err(|source| WireError::Key {
        what: format!("{file}: [main] arbiter_public_key"),
        source,
    })?;
    Ok(Senders::Arbiter { name, key })
}

/// The balancers' keys of `dir`, with the pair keys the arbiter (`me`, `own`) shares with
/// each; files left out are logged.
pub(super) fn load_balancers(
    dir: &std::path::Path,
    own: &NodeKey,
    me: &str,
) -> Result<Senders, WireError> {
    let found = keys::load_key_dir(dir).map_err(WireError::KeyDir)?;
    for s in &found.skipped {
        tracing::warn!(file = %s.file.display(), reason = %s.reason, "balancer key file left out");
    }
    if found.keys.is_empty() {
        tracing::warn!(dir = %dir.display(), "no balancer keys: no balancer will be heard");
    }
    Ok(Senders::balancers(own, me, found.keys))
}

/// Opens one connection to the broker at `uri` named `name` (as the broker's management
/// shows it), with the TLS files of `tls` for `amqps://`.
pub(crate) async fn open_connection(
    uri: &AMQPUri,
    tls: &TlsFiles,
    name: String,
) -> Result<lapin::Connection, WireError> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    let mut builder = lapin::DefaultConnectionBuilder::new()?
        .with_uri(uri.clone())
        .with_properties(props);
    if uri.scheme == lapin::uri::AMQPScheme::AMQPS {
        builder = builder.with_tls_config(tls.load()?);
    }
    builder.connect().await.map_err(|e| {
        if super::topology::is_soft_error(&e, lapin::protocol::AMQPSoftError::ACCESSREFUSED) {
            super::topology::access_refused(e, "log in")
        } else {
            WireError::Amqp(e)
        }
    })
}

/// Largest AMQP frame asked for (unless the URL sets `frame_max`). lapin keeps a receive and
/// a send buffer of 32 frames per connection, zero-filled: at RabbitMQ's default of 128 KiB
/// that is 8 MiB of memory per daemon; at 32 KiB, 2 MiB. A larger message goes in more frames.
pub(crate) const FRAME_MAX: u32 = 32 * 1024;

/// Parses the URL, fills in the password from `secret.ini` when the URL has none, and sets
/// the heartbeat, the frame size and the connection timeout unless the URL does.
pub(crate) fn prepare_uri(
    url: &str,
    password: Option<&str>,
    heartbeat_s: u16,
    connect_timeout_ms: u64,
) -> Result<AMQPUri, WireError> {
    let mut uri: AMQPUri = url.parse().map_err(|reason| WireError::Url { reason })?;
    if let Some(password) = password {
        if !url_has_password(url) {
            uri.authority.userinfo.password = password.to_owned();
        }
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(heartbeat_s);
    }
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(FRAME_MAX);
    }
    if uri.query.connection_timeout.is_none() {
        // Bounds each TCP connect lapin makes, so a black-holed broker costs seconds, not
        // the kernel's SYN retry minutes.
        uri.query.connection_timeout = Some(connect_timeout_ms);
    }
    Ok(uri)
}

/// [`prepare_uri`] of each of the comma-separated URLs of `urls` (the nodes of a cluster).
pub(crate) fn prepare_uris(
    urls: &str,
    password: Option<&str>,
    heartbeat_s: u16,
    connect_timeout_ms: u64,
) -> Result<Vec<AMQPUri>, WireError> {
    urls.split(',')
        .map(|u| prepare_uri(u.trim(), password, heartbeat_s, connect_timeout_ms))
        .collect()
}

/// Opens a connection to the first of `uris` that takes it, in order; the last error when
/// none does.
pub(crate) async fn open_first(
    uris: &[AMQPUri],
    tls: &TlsFiles,
    name: &str,
) -> Result<lapin::Connection, WireError> {
    let mut last = WireError::Url {
        reason: "no broker URL".to_owned(),
    };
    for uri in uris {
        match open_connection(uri, tls, name.to_owned()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                tracing::warn!(node = %uri.authority.host, error = %e, "broker node did not answer; trying the next");
                last = e;
            }
        }
    }
    Err(last)
}

/// Whether the authority of `url` has a `user:password@` part.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comes_from_secret_ini_only_when_the_url_has_none() {
        let uri = prepare_uri("amqp://ipvs@192.0.2.1:5672/%2f", Some("s3cret"), 10, 7000).unwrap();
        assert_eq!(uri.authority.userinfo.username, "ipvs");
        assert_eq!(uri.authority.userinfo.password, "s3cret");
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.query.connection_timeout, Some(7000));
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let small = prepare_uri("amqp://ipvs@192.0.2.1/?frame_max=8192", None, 10, 7000).unwrap();
        assert_eq!(
            small.query.frame_max,
            Some(8192),
            "the URL's own frame_max stays"
        );
        let uri = prepare_uri(
            "amqp://ipvs:inurl@192.0.2.1/?heartbeat=3&connection_timeout=50",
            Some("s3cret"),
            10,
            7000,
        )
        .unwrap();
        assert_eq!(uri.authority.userinfo.password, "inurl");
        assert_eq!(uri.query.heartbeat, Some(3));
        assert_eq!(uri.query.connection_timeout, Some(50));
        assert!(matches!(
            prepare_uri("http//nope", None, 10, 7000),
            Err(WireError::Url { .. })
        ));
        let uris = prepare_uris(
            "amqp://ipvs@192.0.2.1/v, amqp://ipvs:own@192.0.2.2:5673/v",
            Some("s3cret"),
            10,
            7000,
        )
        .unwrap();
        assert_eq!(uris.len(), 2);
        assert_eq!(uris[0].authority.userinfo.password, "s3cret");
        assert_eq!(uris[1].authority.userinfo.password, "own");
        assert_eq!(uris[1].authority.port, 5673);
        assert_eq!(uris[1].vhost, "v");
        assert!(prepare_uris("amqp://a/,http//b", None, 10, 7000).is_err());
    }

    #[test]
    fn url_password_detection() {
        assert!(url_has_password("amqp://u:p@h/v"));
        assert!(url_has_password("amqps://u:@h"));
        assert!(!url_has_password("amqp://u@h:5672/v"));
        assert!(!url_has_password("amqp://h:5672/v"));
        assert!(!url_has_password("amqp://h/v?x=a:b@c"));
    }

    #[test]
    fn prefetch_keeps_within_the_budget() {
        assert_eq!(prefetch_for(16 << 20), 16);
        assert_eq!(prefetch_for(64 << 20), 4);
        assert_eq!(prefetch_for(256 << 20), 1);
        assert_eq!(prefetch_for(1 << 20), MAX_PREFETCH);
        assert_eq!(prefetch_for(0), MAX_PREFETCH);
        for mb in [1usize, 3, 16, 100, 256] {
            let p = usize::from(prefetch_for(mb << 20));
            assert!(p * (mb << 20) <= INPUT_BUDGET || p == 1, "{mb} MiB: {p}");
        }
    }

    fn config(main: &str, secret: &str) -> config::Config {
        config::Config::from_strs(
            &format!("[main]\namqp_server = amqp://u@b/\nhostname = lb1\n{main}"),
            Some(secret),
        )
        .unwrap()
    }

    #[test]
    fn a_balancer_needs_its_key_and_the_arbiter_pin() {
        let k = NodeKey::generate().unwrap();
        let arb = NodeKey::generate().unwrap().public();
        let secret = format!("[secret]\nnode_key = {}\n", k.to_text());
        let role = Role::Client {
            hostname: "lb1".into(),
        };
        let err = TransportOptions::from_config(&config("", &secret), &role).unwrap_err();
        assert!(
            err.to_string().contains("arbiter_name is required"),
            "{err}"
        );
        let cfg = config(
            &format!("arbiter_name = arb\narbiter_public_key = {arb}\nstate_dir = /tmp/s\n"),
            &secret,
        );
        let o = TransportOptions::from_config(&cfg, &role).unwrap();
        assert_eq!(
            o.senders,
            Senders::Arbiter {
                name: "arb".into(),
                key: arb
            }
        );
        assert_eq!(o.key.public(), k.public());
        assert_eq!(o.prefetch, 16);
        let err = TransportOptions::from_config(&config("", "[secret]\n"), &role).unwrap_err();
        assert!(err.to_string().contains("node_key"), "{err}");
        // A key of the right shape that is no usable point.
        let cfg = config(
            "arbiter_name = arb\narbiter_public_key = AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            &secret,
        );
        let err = TransportOptions::from_config(&cfg, &role).unwrap_err();
        assert!(err.to_string().contains("arbiter_public_key"), "{err}");
    }

    #[test]
    fn tls_files_are_read_and_the_key_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let write = |name: &str, text: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let ca = write("ca.pem", pem, 0o644);
        let cert = write("c.pem", pem, 0o644);
        let key = write(
            "c.key",
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
            0o644,
        );
        let files = TlsFiles {
            ca_file: Some(ca.clone()),
            client_cert: Some(cert),
            client_key: Some(key.clone()),
        };
        let err = files.load().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = files.load().unwrap();
        assert_eq!(tls.cert_chain.as_deref(), Some(pem));
        assert!(tls.identity.is_some());
        let not_pem = write("x.pem", "hello", 0o644);
        let err = TlsFiles {
            ca_file: Some(not_pem),
            ..TlsFiles::default()
        }
        .load()
        .unwrap_err();
        assert!(err.to_string().contains("not a PEM file"), "{err}");
        assert!(TlsFiles::default().load().unwrap().cert_chain.is_none());
    }
}
