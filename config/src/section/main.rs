//! `[main]`: the keys of the original Python ipvs-sync plus `hostname`, `http_listen`, `ipvs`,
//! the arbiter a balancer trusts (`arbiter_name`, `arbiter_public_key`), the state directory,
//! and the broker's TLS files.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::amqp_servers::{AmqpServers, QueueType};
use crate::error::ConfigError;
use crate::hostname;
use crate::paths::{DescTemplate, MappingWildcard};
use crate::value::{self, Fields, Invalid, ValueResult};

/// `[main]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MainConfig {
    /// `amqp_server` (required): the broker's URL, or the URLs of the nodes of one cluster
    /// separated by commas.
    pub amqp_server: AmqpServers,
    /// `amqp_queue_type` (`quorum` when `amqp_server` lists several nodes, else `classic`):
    /// the kind of queue `lbs` and the balancers' queues are.
    pub amqp_queue_type: QueueType,
    /// `mapping_update_interval` (60 s): how often the service mapping is rebuilt.
    pub mapping_update_interval: Duration,
    /// `service_mapping_wildcard` (`/etc/keepalived/lbs/*/*/*.conf`).
    pub service_mapping_wildcard: MappingWildcard,
    /// `service_mapping_config` (`/var/tmp/svc_mapping.json`): the mapping as JSON.
    pub service_mapping_config: PathBuf,
    /// `export_service_mapping_wildcard_to_config` (true): build the mapping from the
    /// keepalived configs and write the JSON; false: read the JSON.
    pub export_service_mapping_wildcard_to_config: bool,
    /// `vips_description_update_interval` (0.5 s): how often the arbiter looks for desc
    /// file changes (those inotify names; every file at least every 10 s).
    pub vips_description_update_interval: Duration,
    /// `vip_description_filepath` (`/var/run/keepalived-{vip}-desc.json`).
    pub vip_description_filepath: DescTemplate,
    /// `consumer_alive_ttl` (15 s): a client silent this long is no longer active.
    pub consumer_alive_ttl: Duration,
    /// `active_consumers_update_interval` (0.1 s).
    pub active_consumers_update_interval: Duration,
    /// `heartbeat_interval` (3 s).
    pub heartbeat_interval: Duration,
    /// `tree_request_interval` (120 s).
    pub tree_request_interval: Duration,
    /// `announces_request_interval` (300 s).
    pub announces_request_interval: Duration,
    /// `announces_queue_limit` (524288).
    pub announces_queue_limit: usize,
    /// `firewall_update_try` (2): tries of the firewall check before giving up a VIP.
    pub firewall_update_try: u32,
    /// `client_requests_queue_limit` (262144).
    pub client_requests_queue_limit: usize,
    /// `processing_queue_limit` (65536).
    pub processing_queue_limit: usize,
    /// `hostname` (this host's FQDN): identity and AMQP routing key.
    pub hostname: String,
    /// `http_listen` (off): where `/metrics` and `/status` are served.
    pub http_listen: Option<SocketAddr>,
    /// `control_socket` (`/run/ipvs-sync/control.sock`): where `ipvs-sync drain`, `release`
    /// and friends reach the running daemon (root only).
    pub control_socket: PathBuf,
    /// `state_dir` (`/var/lib/ipvs-sync`): what the daemon keeps across restarts (drained
    /// VIPs, replay marks), created 0700.
    pub state_dir: PathBuf,
    /// `ipvs` (true): false runs announce-only.
    pub ipvs: bool,
    /// `arbiter_name` (required on a balancer): the `hostname` of the arbiter, the only
    /// sender a balancer accepts.
    pub arbiter_name: Option<String>,
    /// `arbiter_public_key` (required on a balancer): the arbiter's public key, as its
    /// `ipvs-sync keygen` printed it.
    pub arbiter_public_key: Option<String>,
    /// `amqp_ca_file` (none: the system's roots): PEM certificates trusted, in addition to
    /// the system's, for an `amqps://` broker.
    pub amqp_ca_file: Option<PathBuf>,
    /// `amqp_client_cert` (none): PEM certificate chain presented to an `amqps://` broker;
    /// needs `amqp_client_key`.
    pub amqp_client_cert: Option<PathBuf>,
    /// `amqp_client_key` (none): PEM PKCS#8 private key of `amqp_client_cert` (a secret file:
    /// same ownership and mode rules as `secret.ini`).
    pub amqp_client_key: Option<PathBuf>,
}

fn node_name(v: &str) -> ValueResult<String> {
    let v = hostname_value(v)?;
    if v == "lbs" || v == "broadcast" {
        return Err(Invalid::Refused(Cow::Borrowed(
            "`lbs` and `broadcast` are routing keys and cannot name a node",
        )));
    }
    Ok(v)
}

fn public_key(v: &str) -> ValueResult<String> {
    if crate::secret::looks_like_key(v) {
        Ok(v.to_owned())
    } else {
        Err(Invalid::Expected(Cow::Borrowed(
            "the arbiter's public key: 44 characters of base64, as `ipvs-sync keygen` prints it",
        )))
    }
}

const SECS: fn(&str) -> ValueResult<Duration> = value::seconds;

fn announces_source(v: &str) -> ValueResult<()> {
    match v.to_ascii_lowercase().as_str() {
        "client" => Ok(()),
        "server" => Err(Invalid::Refused(Cow::Borrowed(
            "`Server` (ExaBGP on the arbiter) is the old layout and is not supported: \
             balancers announce with their own BGP speakers; set `Client` or remove the key",
        ))),
        _ => Err(Invalid::Expected(Cow::Borrowed("Client"))),
    }
}

fn hostname_value(v: &str) -> ValueResult<String> {
    let v = v.to_ascii_lowercase();
    if hostname::is_valid_hostname(&v) {
        Ok(v)
    } else {
        Err(Invalid::Expected(Cow::Borrowed(
            "a host name (labels of letters, digits, '-', '_' joined by '.')",
        )))
    }
}

/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ipvs-sync";

/// Default `control_socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ipvs-sync/control.sock";

fn or_expected<T>(r: Result<T, &'static str>) -> ValueResult<T> {
    r.map_err(|e| Invalid::Expected(Cow::Borrowed(e)))
}

/// `vip_description_filepath`, or its older name `vip_announces_filepath` (configs of the
/// Python ipvs-sync carry over); both at once is an error on the older one.
fn desc_template(f: &mut Fields<'_>) -> Result<DescTemplate, ConfigError> {
    let parse = |v: &str| or_expected(DescTemplate::parse(v));
    let new = f.opt("vip_description_filepath", parse)?;
    let old = f.opt("vip_announces_filepath", parse)?;
    match (new, old) {
        (Some(_), Some(_)) => Err(f.refuse(
            "vip_announces_filepath",
            "is the older name of vip_description_filepath, which is set too: keep one",
        )),
        (new, old) => Ok(new.or(old).unwrap_or_default()),
    }
}

impl MainConfig {
    /// The keys of `[main]`.
    pub const KEYS: &'static [&'static str] = &[
        "amqp_server",
        "amqp_queue_type",
        "announces_source",
        "mapping_update_interval",
        "service_mapping_wildcard",
        "service_mapping_config",
        "export_service_mapping_wildcard_to_config",
        "vips_description_update_interval",
        "vip_description_filepath",
        "vip_announces_filepath",
        "consumer_alive_ttl",
        "active_consumers_update_interval",
        "heartbeat_interval",
        "tree_request_interval",
        "announces_request_interval",
        "announces_queue_limit",
        "firewall_update_try",
        "client_requests_queue_limit",
        "processing_queue_limit",
        "hostname",
        "http_listen",
        "ipvs",
        "control_socket",
        "state_dir",
        "arbiter_name",
        "arbiter_public_key",
        "amqp_ca_file",
        "amqp_client_cert",
        "amqp_client_key",
    ];

    /// Reads `[main]`.
    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<MainConfig, ConfigError> {
        f.get("announces_source", (), announces_source)?;
        let hostname = match f.opt("hostname", node_name)? {
            Some(h) => h,
            None => hostname::detect_fqdn()
                .map(|h| h.to_ascii_lowercase())
                .filter(|h| hostname::is_valid_hostname(h))
                .ok_or_else(|| {
                    f.missing(
                        "hostname",
                        " (this host's name could not be read from /proc/sys/kernel/hostname)",
                    )
                })?,
        };
        let amqp_server = f.required("amqp_server", AmqpServers::parse)?;
        let main = MainConfig {
            amqp_queue_type: f.get(
                "amqp_queue_type",
                QueueType::default_for(&amqp_server),
                QueueType::parse,
            )?,
            amqp_server,
            mapping_update_interval: f.get(
                "mapping_update_interval",
                Duration::from_secs(60),
                SECS,
            )?,
            service_mapping_wildcard: f.get(
                "service_mapping_wildcard",
                MappingWildcard::default(),
                |v| or_expected(MappingWildcard::parse(v)),
            )?,
            service_mapping_config: f.get(
                "service_mapping_config",
                PathBuf::from("/var/tmp/svc_mapping.json"),
                value::abs_path,
            )?,
            export_service_mapping_wildcard_to_config: f.get(
                "export_service_mapping_wildcard_to_config",
                true,
                value::boolean,
            )?,
            vips_description_update_interval: f.get(
                "vips_description_update_interval",
                Duration::from_millis(500),
                SECS,
            )?,
            vip_description_filepath: desc_template(f)?,
            consumer_alive_ttl: f.get("consumer_alive_ttl", Duration::from_secs(15), SECS)?,
            active_consumers_update_interval: f.get(
                "active_consumers_update_interval",
                Duration::from_millis(100),
                SECS,
            )?,
            heartbeat_interval: f.get("heartbeat_interval", Duration::from_secs(3), SECS)?,
            tree_request_interval: f.get(
                "tree_request_interval",
                Duration::from_secs(120),
                SECS,
            )?,
            announces_request_interval: f.get(
                "announces_request_interval",
                Duration::from_secs(300),
                SECS,
            )?,
            announces_queue_limit: f.get(
                "announces_queue_limit",
                524_288,
                value::positive_usize,
            )?,
            firewall_update_try: f.get("firewall_update_try", 2, |v| {
                value::int_in(v, 1, 1000, "a number of tries 1..1000")
            })?,
            client_requests_queue_limit: f.get(
                "client_requests_queue_limit",
                262_144,
                value::positive_usize,
            )?,
            processing_queue_limit: f.get(
                "processing_queue_limit",
                65_536,
                value::positive_usize,
            )?,
            hostname,
            http_listen: f.opt("http_listen", value::socket_addr)?,
            ipvs: f.get("ipvs", true, value::boolean)?,
            arbiter_name: f.opt("arbiter_name", node_name)?,
            arbiter_public_key: f.opt("arbiter_public_key", public_key)?,
            control_socket: f.get(
                "control_socket",
                PathBuf::from(DEFAULT_CONTROL_SOCKET),
                value::abs_path,
            )?,
            state_dir: f.get(
                "state_dir",
                PathBuf::from(DEFAULT_STATE_DIR),
                value::abs_path,
            )?,
            amqp_ca_file: f.opt("amqp_ca_file", value::abs_path)?,
            amqp_client_cert: f.opt("amqp_client_cert", value::abs_path)?,
            amqp_client_key: f.opt("amqp_client_key", value::abs_path)?,
        };
        match (&main.amqp_client_cert, &main.amqp_client_key) {
            (Some(_), None) => Err(f.missing("amqp_client_key", " when amqp_client_cert is set")),
            (None, Some(_)) => Err(f.missing("amqp_client_cert", " when amqp_client_key is set")),
            _ => Ok(main),
        }
    }
}
