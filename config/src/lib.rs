//! Configuration of ipvs-sync: `config.ini` + `secret.ini`, and the service mapping built
//! from keepalived configs.
//!
//! ```text
//!  config.ini ──┐                     ┌─▶ MainConfig, BgpConfig (+ PeerConfig), BfdConfig,
//!               ├─ ini::Ini::parse ───┤    AnnounceConfig, ClientConfig, ServerConfig, MessagesConfig
//!  secret.ini ──┘  (lines kept)       └─▶ Secrets (owner root or this user; no group/other access)
//!
//!  /etc/keepalived/lbs/<balancer>/*/*.conf ─ keepalived::parse ─▶ mapping::PortMapping
//!                                         (includes, groups, fwmark)      │ flatten
//!                                                                          ▼
//!                                         svc_mapping.json ◀─ write ─ mapping::VipMapping
//! ```
//!
//! - [`Config::load`] reads `config.ini` and the `secret.ini` beside it into typed,
//!   validated structs; every error names the file, line and key
//!   (`config.ini:14: [bgp.peer.r1] remote_as: expected an AS number 1..4294967295, got 'abc'`).
//!   Unknown sections and keys and repeated keys are errors. See [`ini`] for the dialect.
//! - [`keepalived`] parses keepalived's configuration language far enough to find every
//!   `virtual_server` (address, port, groups, fwmark) with `include` followed.
//! - [`mapping`] turns a glob of keepalived configs into which balancer serves which VIPs
//!   and ports, and reads/writes that mapping as JSON (atomically).
//!
//! `config.ini.example` and `secret.ini.example` beside this crate document every key;
//! a test keeps them loadable.
//!
//! Nothing here panics on input from files: parsers return errors, and the decoders are
//! fuzzed (`fuzz/`: targets `config_ini`, `keepalived`).

// `ConfigError` is ~140 bytes because its variants carry file, line, section, key and
// value as plain fields. It is built at most once per configuration load, never on a hot
// path, so boxing it would buy nothing but clumsier matching.
#![allow(clippy::result_large_err)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod amqp;
pub mod amqp_servers;
pub mod atomic_file;
pub mod error;
pub mod hostname;
pub mod ini;
pub mod keepalived;
mod load;
pub mod mapping;
pub mod paths;
pub mod secret;
mod section;
mod value;

pub use amqp::AmqpUrl;
pub use amqp_servers::{AmqpServers, QueueType};
pub use error::ConfigError;
pub use load::Config;
pub use paths::{DescTemplate, MappingWildcard};
pub use secret::{SecretString, Secrets};
pub use section::bfd::BfdConfig;
pub use section::bgp::{
    route_fits, split_communities, BgpConfig, Community, EbgpAttributes, EbgpPreference,
    PeerConfig, GRACEFUL_SHUTDOWN, MAX_PREPENDS,
};
pub use section::daemon::{
    AnnounceConfig, ArgPattern, ClientConfig, ExecRule, InterfaceName, MessagesConfig,
    ServerConfig, StopMode, WithdrawLimit, DEFAULT_MAX_BYTES,
};
pub use section::main::{MainConfig, DEFAULT_STATE_DIR};

/// Where the daemons and commands look for `config.ini` unless told otherwise (`-c`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ipvs-sync/config.ini";
