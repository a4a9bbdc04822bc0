//! Typed message bodies, one per message type (docs/wire-protocol.md has the table).
//!
//! The envelope's `type` names the message; its `to` gives the direction: `to = "lbs"` is
//! client → arbiter ([`Direction::ToServer`]), anything else arbiter → client
//! ([`Direction::ToClient`]). Types used both ways (`tree`, `services`, `mapping`, `sync`,
//! `ack_announce`) carry the request when sent to the arbiter and the answer when sent to a
//! client, so `{}` means "send me the mapping" to the arbiter and "the mapping is empty" to a
//! client.
//!
//! | type | to arbiter (request) | to a client (answer) |
//! |---|---|---|
//! | `heartbeat` | `{"role","uptime",…}` | `{"role","uptime",…}` |
//! | `tree` | `{}` | `{"serial": N, "tree": Tree}` |
//! | `changes` | — | `{"from_serial": N, "to_serial": N, "plan": Plan}` |
//! | `services` | `{"vips": [IP]}` | `{"tree": Tree}` |
//! | `mapping` | `{}` | `{"<balancer>": [IP], …}` |
//! | `sync` | `{"dirs": [DIR]}` | `{"files": [{"dir","name","mode","content_b64"}]}` |
//! | `execute` | — | `{"argv": [..], "timeout_s": N}` |
//! | `announces` | `{}` | — |
//! | `syn_announce` | — | `{"<VIP>": {"tree": Tree, "local-preference": N}}` |
//! | `ack_announce` | `{"vip": IP}` or `{"vips": [IP]}` | `{"vip": IP, "local-preference": N}` or `{"go": [{"vip": IP, "local-preference": N}]}` |
//! | `fin_announce` | — | `{"vips": [IP]}` |
//! | `drain` | — | `{"drain": bool, "timeout_s": N}` |
//!
//! The list forms of `ack_announce` (several VIPs in one message) go only to a peer whose
//! heartbeats name the feature [`FEATURE_ACK_BATCH`]: an older peer refuses them as a schema
//! error, so a sender never uses them before it has heard that.
//!
//! Bodies are JSON objects. Fields a reader does not know are ignored (so a newer arbiter can
//! add fields without older clients dropping its messages); missing or mistyped known fields,
//! a type sent the wrong way, and an unknown type are schema errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The IPVS tree (whole, or the part a message carries) and a diff of it, in the `ipvs`
/// crate's JSON form, so bodies are checked against the real model on receipt.
pub use ipvs::{Plan, Tree};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → arbiter (routing key and `to` = `lbs`).
    ToServer,
    /// Arbiter → one client or every client.
    ToClient,
}

/// The `to` (and routing key) that addresses the arbiter; never a node's name.
pub const SERVER_ADDRESS: &str = "lbs";

/// The `to` (and routing key) that addresses every balancer; never a node's name.
pub const BROADCAST: &str = "broadcast";

impl Direction {
    /// The direction of a message addressed to `to`.
    pub fn of_address(to: &str) -> Self {
        if to == SERVER_ADDRESS {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }
}

/// The envelope `type`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// `heartbeat`
    Heartbeat,
    /// `tree`
    Tree,
    /// `changes`
    Changes,
    /// `services`
    Services,
    /// `mapping`
    Mapping,
    /// `sync`
    Sync,
    /// `execute`
    Execute,
    /// `announces`
    Announces,
    /// `syn_announce`
    SynAnnounce,
    /// `ack_announce`
    AckAnnounce,
    /// `fin_announce`
    FinAnnounce,
    /// `drain`
    Drain,
}

impl MessageType {
    /// Every type, in counter order.
    pub const ALL: [MessageType; 12] = [
        MessageType::Heartbeat,
        MessageType::Tree,
        MessageType::Changes,
        MessageType::Services,
        MessageType::Mapping,
        MessageType::Sync,
        MessageType::Execute,
        MessageType::Announces,
        MessageType::SynAnnounce,
        MessageType::AckAnnounce,
        MessageType::FinAnnounce,
        MessageType::Drain,
    ];

    /// The envelope's `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Heartbeat => "heartbeat",
            MessageType::Tree => "tree",
            MessageType::Changes => "changes",
            MessageType::Services => "services",
            MessageType::Mapping => "mapping",
            MessageType::Sync => "sync",
            MessageType::Execute => "execute",
            MessageType::Announces => "announces",
            MessageType::SynAnnounce => "syn_announce",
            MessageType::AckAnnounce => "ack_announce",
            MessageType::FinAnnounce => "fin_announce",
            MessageType::Drain => "drain",
        }
    }

    /// Parses an envelope `type`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Position in [`MessageType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// The arbiter.
    Server,
    /// A balancer.
    Client,
}

/// `heartbeat`: liveness, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's role.
    pub role: PeerRole,
    /// Seconds since the sender's daemon started.
    pub uptime: u64,
    /// Sender's software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Arbiter: serial of its current tree; client: serial of the tree it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Client: the VIPs it announces now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<Vec<IpAddr>>,
    /// Client: the VIPs drained on it (`ipvs-sync drain`): the arbiter sends it no
    /// `syn_announce` of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<Vec<IpAddr>>,
    /// What the sender reads beyond the first release's wire ([`FEATURE_ACK_BATCH`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// The heartbeat feature "reads `ack_announce` with several VIPs" (`{"vips": [..]}` to the
/// arbiter, `{"go": [..]}` to a balancer).
pub const FEATURE_ACK_BATCH: &str = "ack_batch";

/// The most VIPs one `ack_announce` carries (and a receiver accepts).
pub const MAX_ACK_BATCH: usize = 1024;

impl Heartbeat {
    /// Whether its sender reads the list forms of `ack_announce`.
    pub fn reads_ack_batches(&self) -> bool {
        self.features.iter().any(|f| f == FEATURE_ACK_BATCH)
    }
}

/// `tree` answer: the whole IPVS tree at `serial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeAnswer {
    /// Serial of this tree; `changes` continue from it.
    pub serial: u64,
    /// The tree.
    pub tree: Tree,
}

/// `changes`: how to go from the tree at `from_serial` to the tree at `to_serial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    /// Serial the plan applies to.
    pub from_serial: u64,
    /// Serial after the plan.
    pub to_serial: u64,
    /// Adds, edits and deletes.
    pub plan: Plan,
}

/// `services` request: the tree of these VIPs only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesRequest {
    /// The VIPs asked for.
    pub vips: Vec<IpAddr>,
}

/// `services` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicesAnswer {
    /// The services of the requested VIPs.
    pub tree: Tree,
}

/// `mapping` answer: which balancer serves which VIPs (the `svc_mapping.json` layout), and
/// the VIP each firewall mark of those VIPs goes with (`"@fwmarks": {"7": "VIP"}`, only when
/// there is one: a balancer of a release before it refuses the whole message, so balancers
/// are upgraded before the arbiter where keepalived has fwmark services). A broadcast on a
/// change carries every mark; a balancer keeps those of its own VIPs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mapping {
    /// Balancer hostname → its VIPs.
    #[serde(flatten)]
    pub balancers: BTreeMap<String, Vec<IpAddr>>,
    /// Firewall mark → the VIP its fwmark services go with.
    #[serde(
        rename = "@fwmarks",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub fwmarks: BTreeMap<u32, IpAddr>,
}

/// `sync` request: the files of these directories. The arbiter answers only for directories
/// of its own `[server] sync_dirs` and lists them itself; it never expands a pattern it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Absolute directories (the balancer's `[client] sync_dirs`).
    pub dirs: Vec<String>,
}

/// `sync` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// The files.
    pub files: Vec<SyncFile>,
}

/// One file of a `sync` answer. The receiver decides whether `dir` is one of its own; this type
/// only guarantees the fields are well formed: `dir` absolute, `name` relative, made of normal
/// components (no `.`, `..` or empty ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFile {
    /// The synced directory it belongs to (absolute).
    pub dir: String,
    /// Its path under `dir`, e.g. `lbs/web.conf`.
    pub name: String,
    /// Permission bits (at most `0o7777`).
    pub mode: u32,
    /// File content; base64 (standard alphabet, padded) on the wire as `content_b64`.
    #[serde(rename = "content_b64", with = "base64_field")]
    pub content: Vec<u8>,
}

/// `execute`: run a command on the client, if its allow-list permits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execute {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Seconds before the command is killed.
    pub timeout_s: u32,
}

/// What a balancer needs to announce one VIP (a value of `syn_announce`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnounceSpec {
    /// The VIP's IPVS services.
    pub tree: Tree,
    /// Serial of the arbiter's tree `tree` was cut from; a balancer whose mirror is newer
    /// prepares from its mirror instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// BGP LOCAL_PREF to announce with.
    #[serde(rename = "local-preference")]
    pub local_preference: u32,
    /// The VIP's own BGP communities (`65000:100`, `65000:1:2`, `no-export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// `syn_announce`: prepare to announce these VIPs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SynAnnounce {
    /// VIP → what to prepare.
    pub vips: BTreeMap<IpAddr, AnnounceSpec>,
}

/// `ack_announce` from a client: "VIP prepared".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckPrepared {
    /// The prepared VIP.
    pub vip: IpAddr,
}

/// `ack_announce` from a client: "these VIPs prepared" (to an arbiter that reads batches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckPreparedBatch {
    /// The prepared VIPs, each once.
    pub vips: Vec<IpAddr>,
}

/// `ack_announce` from the arbiter: a go for each of several VIPs (to a balancer that reads
/// batches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckGoBatch {
    /// One go per VIP, each VIP once.
    pub go: Vec<AckGo>,
}

/// Only to tell the two forms of `ack_announce` to the arbiter apart: whether the body has
/// `vips`.
#[derive(Deserialize)]
struct HasVips {
    #[serde(default)]
    vips: Option<serde::de::IgnoredAny>,
}

/// The same for `ack_announce` to a balancer: whether the body has `go`.
#[derive(Deserialize)]
struct HasGo {
    #[serde(default)]
    go: Option<serde::de::IgnoredAny>,
}

/// `ack_announce` from the arbiter: "go, announce with this local-preference".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckGo {
    /// The VIP to announce.
    pub vip: IpAddr,
    /// BGP LOCAL_PREF.
    #[serde(rename = "local-preference")]
    pub local_preference: u32,
    /// The VIP's own BGP communities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// `fin_announce`: withdraw these VIPs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinAnnounce {
    /// VIPs to withdraw.
    pub vips: Vec<IpAddr>,
}

/// `drain`: the arbiter drains (or undrains) a whole balancer (`ipvs-sync drain --balancer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainOrder {
    /// Drain (`true`) or undrain (`false`) every VIP of the balancer.
    pub drain: bool,
    /// Overrides the balancer's `drain_timeout`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

/// A request with no parameters: `{}` (unknown fields ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Empty {}

/// Every message, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `heartbeat`, either way.
    Heartbeat(Heartbeat),
    /// `tree` → arbiter: send the whole tree.
    TreeRequest,
    /// `tree` → client.
    Tree(TreeAnswer),
    /// `changes` → client.
    Changes(Changes),
    /// `services` → arbiter.
    ServicesRequest(ServicesRequest),
    /// `services` → client.
    Services(ServicesAnswer),
    /// `mapping` → arbiter: send the mapping.
    MappingRequest,
    /// `mapping` → client.
    Mapping(Mapping),
    /// `sync` → arbiter.
    SyncRequest(SyncRequest),
    /// `sync` → client.
    Sync(SyncAnswer),
    /// `execute` → client.
    Execute(Execute),
    /// `announces` → arbiter: what should I announce?
    AnnouncesRequest,
    /// `syn_announce` → client.
    SynAnnounce(SynAnnounce),
    /// `ack_announce` → arbiter: prepared.
    AckPrepared(AckPrepared),
    /// `ack_announce` → arbiter, several VIPs.
    AckPreparedBatch(AckPreparedBatch),
    /// `ack_announce` → client: go.
    AckGo(AckGo),
    /// `ack_announce` → client, several VIPs.
    AckGoBatch(AckGoBatch),
    /// `fin_announce` → client.
    FinAnnounce(FinAnnounce),
    /// `drain` → client.
    Drain(DrainOrder),
}

/// A body that does not fit its type.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// `type` is not one of [`MessageType::ALL`].
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// The type is never sent this way.
    #[error("`{kind}` is never sent {dir:?}")]
    WrongDirection {
        /// Message type.
        kind: MessageType,
        /// Direction it was sent.
        dir: Direction,
    },
    /// The body is not a JSON object.
    #[error("`{0}` body is not a JSON object")]
    NotObject(MessageType),
    /// A field is missing or has the wrong JSON type.
    #[error("`{kind}` body: {source}")]
    Json {
        /// Message type.
        kind: MessageType,
        /// serde_json's description.
        source: serde_json::Error,
    },
    /// Fields parse but break a rule of the type.
    #[error("`{kind}` body: {rule}")]
    Invalid {
        /// Message type.
        kind: MessageType,
        /// The broken rule.
        rule: &'static str,
    },
}

impl Message {
    /// The envelope `type` of this message.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::TreeRequest | Message::Tree(_) => MessageType::Tree,
            Message::Changes(_) => MessageType::Changes,
            Message::ServicesRequest(_) | Message::Services(_) => MessageType::Services,
            Message::MappingRequest | Message::Mapping(_) => MessageType::Mapping,
            Message::SyncRequest(_) | Message::Sync(_) => MessageType::Sync,
            Message::Execute(_) => MessageType::Execute,
            Message::AnnouncesRequest => MessageType::Announces,
            Message::SynAnnounce(_) => MessageType::SynAnnounce,
            Message::AckPrepared(_)
            | Message::AckPreparedBatch(_)
            | Message::AckGo(_)
            | Message::AckGoBatch(_) => MessageType::AckAnnounce,
            Message::FinAnnounce(_) => MessageType::FinAnnounce,
            Message::Drain(_) => MessageType::Drain,
        }
    }

    /// Whether this message may travel in `dir`.
    pub fn travels(&self, dir: Direction) -> bool {
        use Direction::{ToClient, ToServer};
        match self {
            Message::Heartbeat(_) => true,
            Message::TreeRequest
            | Message::ServicesRequest(_)
            | Message::MappingRequest
            | Message::SyncRequest(_)
            | Message::AnnouncesRequest
            | Message::AckPrepared(_)
            | Message::AckPreparedBatch(_) => dir == ToServer,
            Message::Tree(_)
            | Message::Changes(_)
            | Message::Services(_)
            | Message::Mapping(_)
            | Message::Sync(_)
            | Message::Execute(_)
            | Message::SynAnnounce(_)
            | Message::AckGo(_)
            | Message::AckGoBatch(_)
            | Message::FinAnnounce(_)
            | Message::Drain(_) => dir == ToClient,
        }
    }

    /// Serialises the body (a JSON object).
    pub fn encode_body(&self) -> Result<Box<RawValue>, serde_json::Error> {
        use serde_json::value::to_raw_value as raw;
        match self {
            Message::Heartbeat(b) => raw(b),
            Message::TreeRequest | Message::MappingRequest | Message::AnnouncesRequest => {
                raw(&Empty {})
            }
            Message::Tree(b) => raw(b),
            Message::Changes(b) => raw(b),
            Message::ServicesRequest(b) => raw(b),
            Message::Services(b) => raw(b),
            Message::Mapping(b) => raw(b),
            Message::SyncRequest(b) => raw(b),
            Message::Sync(b) => raw(b),
            Message::Execute(b) => raw(b),
            Message::SynAnnounce(b) => raw(b),
            Message::AckPrepared(b) => raw(b),
            Message::AckGo(b) => raw(b),
            Message::AckPreparedBatch(b) => raw(b),
            Message::AckGoBatch(b) => raw(b),
            Message::FinAnnounce(b) => raw(b),
            Message::Drain(b) => raw(b),
        }
    }

    /// Decodes the body of an envelope of type `kind` travelling in `dir`.
    pub fn decode(kind: &str, dir: Direction, body: &RawValue) -> Result<Self, SchemaError> {
        let kind = MessageType::parse(kind).ok_or_else(|| SchemaError::UnknownType(kind.into()))?;
        if !body.get().starts_with('{') {
            return Err(SchemaError::NotObject(kind));
        }
        let msg = Self::decode_object(kind, dir, body.get())
            .map_err(|source| SchemaError::Json { kind, source })?
            .ok_or(SchemaError::WrongDirection { kind, dir })?;
        msg.validate()?;
        Ok(msg)
    }

    fn decode_object(
        kind: MessageType,
        dir: Direction,
        json: &str,
    ) -> Result<Option<Self>, serde_json::Error> {
        use serde_json::from_str as de;
        use Direction::{ToClient, ToServer};
        let msg = match (kind, dir) {
            (MessageType::Heartbeat, _) => Message::Heartbeat(de(json)?),
            (MessageType::Tree, ToServer) => de::<Empty>(json).map(|_| Message::TreeRequest)?,
            (MessageType::Tree, ToClient) => Message::Tree(de(json)?),
            (MessageType::Changes, ToClient) => Message::Changes(de(json)?),
            (MessageType::Services, ToServer) => Message::ServicesRequest(de(json)?),
            (MessageType::Services, ToClient) => Message::Services(de(json)?),
            (MessageType::Mapping, ToServer) => {
                de::<Empty>(json).map(|_| Message::MappingRequest)?
            }
            (MessageType::Mapping, ToClient) => Message::Mapping(de(json)?),
            (MessageType::Sync, ToServer) => Message::SyncRequest(de(json)?),
            (MessageType::Sync, ToClient) => Message::Sync(de(json)?),
            (MessageType::Execute, ToClient) => Message::Execute(de(json)?),
            (MessageType::Announces, ToServer) => {
                de::<Empty>(json).map(|_| Message::AnnouncesRequest)?
            }
            (MessageType::SynAnnounce, ToClient) => Message::SynAnnounce(de(json)?),
            (MessageType::AckAnnounce, ToServer) => match de::<HasVips>(json)?.vips {
                Some(_) => Message::AckPreparedBatch(de(json)?),
                None => Message::AckPrepared(de(json)?),
            },
            (MessageType::AckAnnounce, ToClient) => match de::<HasGo>(json)?.go {
                Some(_) => Message::AckGoBatch(de(json)?),
                None => Message::AckGo(de(json)?),
            },
            (MessageType::FinAnnounce, ToClient) => Message::FinAnnounce(de(json)?),
            (MessageType::Drain, ToClient) => Message::Drain(de(json)?),
            (MessageType::Changes, ToServer)
            | (MessageType::Drain, ToServer)
            | (MessageType::Execute, ToServer)
            | (MessageType::Announces, ToClient)
            | (MessageType::SynAnnounce, ToServer)
            | (MessageType::FinAnnounce, ToServer) => return Ok(None),
        };
        Ok(Some(msg))
    }

    /// Rules serde cannot express.
    fn validate(&self) -> Result<(), SchemaError> {
        let kind = self.kind();
        let fail = |rule| Err(SchemaError::Invalid { kind, rule });
        match self {
            Message::Execute(e) if e.argv.is_empty() => fail("argv is empty"),
            Message::Execute(e) if e.timeout_s == 0 => fail("timeout_s is 0"),
            Message::Sync(s) if s.files.iter().any(|f| f.mode > 0o7777) => {
                fail("mode has bits above 0o7777")
            }
            Message::Sync(s) if s.files.iter().any(|f| !relative_name(&f.name)) => {
                fail("name is not a relative path of normal components")
            }
            Message::Sync(s) if s.files.iter().any(|f| !absolute_dir(&f.dir)) => {
                fail("dir is not an absolute path of normal components")
            }
            Message::SyncRequest(r) if r.dirs.iter().any(|d| !absolute_dir(d)) => {
                fail("dirs must be absolute paths of normal components")
            }
            Message::Drain(d) if d.timeout_s.is_some_and(|t| !(t.is_finite() && t >= 0.0)) => {
                fail("timeout_s is not a number of seconds")
            }
            Message::SynAnnounce(s) if s.vips.values().any(|a| !communities_ok(&a.communities)) => {
                fail("a community is not ASN:VALUE, GLOBAL:LOCAL1:LOCAL2 or a well-known name")
            }
            Message::AckGo(g) if !communities_ok(&g.communities) => {
                fail("a community is not ASN:VALUE, GLOBAL:LOCAL1:LOCAL2 or a well-known name")
            }
            Message::AckGoBatch(b) if b.go.iter().any(|g| !communities_ok(&g.communities)) => {
                fail("a community is not ASN:VALUE, GLOBAL:LOCAL1:LOCAL2 or a well-known name")
            }
            Message::AckPreparedBatch(b) => batch_ok(b.vips.iter().copied()).or_else(fail),
            Message::AckGoBatch(b) => batch_ok(b.go.iter().map(|g| g.vip)).or_else(fail),
            _ => Ok(()),
        }
    }
}

/// Longest path accepted in a `sync` message.
pub const MAX_SYNC_PATH: usize = 4096;

/// `a/b.conf`: relative, no `.`, `..` or empty components, no NUL.
pub fn relative_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYNC_PATH
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `/etc/x`: absolute, then like [`relative_name`] (`/` alone is refused).
pub fn absolute_dir(dir: &str) -> bool {
    dir.strip_prefix('/').is_some_and(relative_name)
}

/// Communities a VIP may carry: each parses, and not too many for its route.
/// A batch of `ack_announce` names 1 to [`MAX_ACK_BATCH`] VIPs, each once.
fn batch_ok(vips: impl ExactSizeIterator<Item = IpAddr>) -> Result<(), &'static str> {
    let n = vips.len();
    if n == 0 {
        return Err("a batch names no VIP");
    }
    if n > MAX_ACK_BATCH {
        return Err("a batch names more than 1024 VIPs");
    }
    let distinct: std::collections::BTreeSet<IpAddr> = vips.collect();
    if distinct.len() != n {
        return Err("a batch names a VIP twice");
    }
    Ok(())
}

fn communities_ok(c: &[String]) -> bool {
    c.len() <= announce::quorum::MAX_VIP_COMMUNITIES
        && c.iter().all(|x| config::Community::parse(x).is_some())
}

/// `content_b64`: standard base64 with padding.
mod base64_field {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn decode(kind: &str, dir: Direction, body: &str) -> Result<Message, SchemaError> {
        Message::decode(kind, dir, &raw(body))
    }

    /// One message of every variant.
    pub(crate) fn samples() -> Vec<Message> {
        let tree: Tree = serde_json::from_value(json!({"services": [
            {"protocol": "tcp", "addr": "192.0.2.10", "port": 80, "scheduler": "wrr",
             "dests": [{"addr": "198.51.100.5", "port": 80, "weight": 3}]}
        ]}))
        .unwrap();
        let key: ipvs::ServiceKey = "tcp:192.0.2.10:80".parse().unwrap();
        vec![
            Message::Heartbeat(Heartbeat {
                role: PeerRole::Client,
                uptime: 12,
                version: Some("0.1.0".into()),
                serial: Some(7),
                announced: Some(vec![ip("192.0.2.10"), ip("2001:db8::1")]),
                drained: None,
                features: Vec::new(),
            }),
            Message::TreeRequest,
            Message::Tree(TreeAnswer {
                serial: 7,
                tree: tree.clone(),
            }),
            Message::Changes(Changes {
                from_serial: 7,
                to_serial: 8,
                plan: Plan {
                    ops: vec![ipvs::Op::DelDest {
                        service: key,
                        dest: ipvs::DestKey::new(ip("198.51.100.6"), 80),
                    }],
                },
            }),
            Message::ServicesRequest(ServicesRequest {
                vips: vec![ip("192.0.2.10")],
            }),
            Message::Services(ServicesAnswer { tree: tree.clone() }),
            Message::MappingRequest,
            Message::Mapping(Mapping {
                balancers: BTreeMap::from([(
                    "lb1.example.net".to_owned(),
                    vec![ip("2001:db8::2:105"), ip("198.51.100.159")],
                )]),
                fwmarks: BTreeMap::new(),
            }),
            Message::Mapping(Mapping {
                balancers: BTreeMap::from([(
                    "lb1.example.net".to_owned(),
                    vec![ip("198.51.100.159")],
                )]),
                fwmarks: BTreeMap::from([(7, ip("198.51.100.159"))]),
            }),
            Message::SyncRequest(SyncRequest {
                dirs: vec!["/etc/ipvs-sync/fw".into()],
            }),
            Message::Sync(SyncAnswer {
                files: vec![SyncFile {
                    dir: "/etc/ipvs-sync/fw".into(),
                    name: "a.conf".into(),
                    mode: 0o644,
                    content: b"\x00binary\xffok\n".to_vec(),
                }],
            }),
            Message::Execute(Execute {
                argv: vec!["/usr/sbin/ipvsadm".into(), "-Ln".into()],
                timeout_s: 10,
            }),
            Message::AnnouncesRequest,
            Message::SynAnnounce(SynAnnounce {
                vips: BTreeMap::from([(
                    ip("2001:db8::1:1"),
                    AnnounceSpec {
                        tree,
                        serial: Some(7),
                        local_preference: 150,
                        communities: vec!["65000:100".into()],
                    },
                )]),
            }),
            Message::AckPrepared(AckPrepared {
                vip: ip("2001:db8::1:1"),
            }),
            Message::AckGo(AckGo {
                vip: ip("2001:db8::1:1"),
                local_preference: 150,
                communities: vec![],
            }),
            Message::AckPreparedBatch(AckPreparedBatch {
                vips: vec![ip("2001:db8::1:1"), ip("192.0.2.10")],
            }),
            Message::AckGoBatch(AckGoBatch {
                go: vec![
                    AckGo {
                        vip: ip("2001:db8::1:1"),
                        local_preference: 150,
                        communities: vec!["65000:100".into()],
                    },
                    AckGo {
                        vip: ip("192.0.2.10"),
                        local_preference: 100,
                        communities: vec![],
                    },
                ],
            }),
            Message::FinAnnounce(FinAnnounce {
                vips: vec![ip("192.0.2.10")],
            }),
            Message::Drain(DrainOrder {
                drain: true,
                timeout_s: Some(60.0),
            }),
        ]
    }

    fn dir_of(m: &Message) -> Direction {
        if m.travels(Direction::ToServer) {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }

    #[test]
    fn every_variant_round_trips() {
        let all = samples();
        let kinds: std::collections::BTreeSet<_> = all.iter().map(Message::kind).collect();
        assert_eq!(kinds.len(), MessageType::ALL.len());
        for m in all {
            let body = m.encode_body().unwrap();
            let back = Message::decode(m.kind().as_str(), dir_of(&m), &body).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn ack_batches_are_refused_when_empty_oversized_repeated_or_malformed() {
        let many: Vec<String> = (0..=MAX_ACK_BATCH)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
            .collect();
        let over = format!(r#"{{"vips":[{}]}}"#, many.join(","));
        let at_limit = format!(r#"{{"vips":[{}]}}"#, many[..MAX_ACK_BATCH].join(","));
        assert!(decode("ack_announce", Direction::ToServer, &at_limit).is_ok());
        for (dir, body, why) in [
            (
                Direction::ToServer,
                r#"{"vips":[]}"#,
                "a batch names no VIP",
            ),
            (
                Direction::ToServer,
                &over,
                "a batch names more than 1024 VIPs",
            ),
            (
                Direction::ToServer,
                r#"{"vips":["192.0.2.1","192.0.2.1"]}"#,
                "a batch names a VIP twice",
            ),
            (Direction::ToClient, r#"{"go":[]}"#, "a batch names no VIP"),
            (
                Direction::ToClient,
                r#"{"go":[{"vip":"192.0.2.1","local-preference":1},{"vip":"192.0.2.1","local-preference":2}]}"#,
                "a batch names a VIP twice",
            ),
            (
                Direction::ToClient,
                r#"{"go":[{"vip":"192.0.2.1","local-preference":1,"communities":["bad"]}]}"#,
                "a community is not ASN:VALUE, GLOBAL:LOCAL1:LOCAL2 or a well-known name",
            ),
        ] {
            match decode("ack_announce", dir, body) {
                Err(SchemaError::Invalid { rule, .. }) => assert_eq!(rule, why, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        for (dir, body) in [
            (Direction::ToServer, r#"{"vips":"192.0.2.1"}"#),
            (Direction::ToServer, r#"{"vips":["not-an-ip"]}"#),
            (Direction::ToClient, r#"{"go":[{"vip":"192.0.2.1"}]}"#),
            (
                Direction::ToClient,
                r#"{"go":{"vip":"192.0.2.1","local-preference":1}}"#,
            ),
        ] {
            assert!(
                matches!(
                    decode("ack_announce", dir, body),
                    Err(SchemaError::Json { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn a_heartbeat_names_the_features_its_sender_reads() {
        let Message::Heartbeat(old) = decode(
            "heartbeat",
            Direction::ToClient,
            r#"{"role":"server","uptime":5}"#,
        )
        .unwrap() else {
            panic!("not a heartbeat")
        };
        assert!(
            !old.reads_ack_batches(),
            "a sender that names nothing reads no batches"
        );
        let Message::Heartbeat(new) = decode(
            "heartbeat",
            Direction::ToClient,
            r#"{"role":"server","uptime":5,"features":["ack_batch","later"]}"#,
        )
        .unwrap() else {
            panic!("not a heartbeat")
        };
        assert!(new.reads_ack_batches());
        assert_eq!(
            Message::Heartbeat(new).encode_body().unwrap().get(),
            r#"{"role":"server","uptime":5,"features":["ack_batch","later"]}"#
        );
    }

    #[test]
    fn bodies_match_the_documented_layout() {
        // Hand-written bodies as another implementation would send them.
        let cases = [
            (
                "ack_announce",
                Direction::ToClient,
                r#"{"vip":"2001:db8::1:1","local-preference":150}"#,
            ),
            (
                "ack_announce",
                Direction::ToServer,
                r#"{"vip":"192.0.2.1"}"#,
            ),
            (
                "ack_announce",
                Direction::ToClient,
                r#"{"go":[{"vip":"2001:db8::1:1","local-preference":150},{"vip":"192.0.2.1","local-preference":100,"communities":["65000:7"]}]}"#,
            ),
            (
                "ack_announce",
                Direction::ToServer,
                r#"{"vips":["192.0.2.1","2001:db8::1:1"]}"#,
            ),
            (
                "syn_announce",
                Direction::ToClient,
                r#"{"192.0.2.1":{"tree":{"services":[]},"local-preference":100}}"#,
            ),
            (
                "mapping",
                Direction::ToClient,
                r#"{"lb1.example.net":["2001:db8::2:105","198.51.100.159"]}"#,
            ),
            (
                "mapping",
                Direction::ToClient,
                r#"{"lb1.example.net":["198.51.100.159"],"@fwmarks":{"7":"198.51.100.159"}}"#,
            ),
            (
                "sync",
                Direction::ToClient,
                r#"{"files":[{"dir":"/etc/x","name":"a","mode":420,"content_b64":"aGk="}]}"#,
            ),
            (
                "heartbeat",
                Direction::ToServer,
                r#"{"role":"client","uptime":5}"#,
            ),
            (
                "fin_announce",
                Direction::ToClient,
                r#"{"vips":["192.0.2.1"]}"#,
            ),
        ];
        for (kind, dir, body) in cases {
            let m = decode(kind, dir, body).unwrap();
            assert_eq!(m.kind().as_str(), kind);
            assert_eq!(m.encode_body().unwrap().get(), body, "{kind}");
        }
        let Message::Sync(s) = decode(
            "sync",
            Direction::ToClient,
            r#"{"files":[{"dir":"/etc/x","name":"a","mode":420,"content_b64":"aGk="}]}"#,
        )
        .unwrap() else {
            panic!("not a sync answer")
        };
        assert_eq!(s.files[0].content, b"hi");
    }

    #[test]
    fn empty_object_means_request_to_the_arbiter_and_empty_answer_to_a_client() {
        assert_eq!(
            decode("mapping", Direction::ToServer, "{}").unwrap(),
            Message::MappingRequest
        );
        assert_eq!(
            decode("mapping", Direction::ToClient, "{}").unwrap(),
            Message::Mapping(Mapping::default())
        );
        assert!(matches!(
            decode("tree", Direction::ToClient, "{}"),
            Err(SchemaError::Json { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_known_ones_are_checked() {
        let hb = decode(
            "heartbeat",
            Direction::ToClient,
            r#"{"role":"server","uptime":1,"future":{"x":1}}"#,
        )
        .unwrap();
        assert!(matches!(hb, Message::Heartbeat(h) if h.role == PeerRole::Server));
        let bad = [
            (
                "heartbeat",
                Direction::ToClient,
                r#"{"role":"router","uptime":1}"#,
            ),
            (
                "heartbeat",
                Direction::ToClient,
                r#"{"role":"server","uptime":-1}"#,
            ),
            ("heartbeat", Direction::ToClient, r#"{"role":"server"}"#),
            (
                "fin_announce",
                Direction::ToClient,
                r#"{"vips":["not-an-ip"]}"#,
            ),
            (
                "fin_announce",
                Direction::ToClient,
                r#"{"vips":"192.0.2.1"}"#,
            ),
            (
                "ack_announce",
                Direction::ToClient,
                r#"{"vip":"192.0.2.1"}"#,
            ),
            (
                "syn_announce",
                Direction::ToClient,
                r#"{"lb1":{"tree":{"services":[]},"local-preference":1}}"#,
            ),
            (
                "syn_announce",
                Direction::ToClient,
                r#"{"192.0.2.1":{"tree":{"services":[]},"local-preference":4294967296}}"#,
            ),
            (
                "sync",
                Direction::ToClient,
                r#"{"files":[{"dir":"/etc/x","name":"a","mode":420,"content_b64":"!!"}]}"#,
            ),
            ("execute", Direction::ToClient, r#"{"argv":["ls"]}"#),
            ("services", Direction::ToServer, r#"{"vips":[1]}"#),
        ];
        for (kind, dir, body) in bad {
            assert!(
                matches!(decode(kind, dir, body), Err(SchemaError::Json { .. })),
                "{kind} {body}"
            );
        }
    }

    #[test]
    fn trees_are_checked_against_the_ipvs_model() {
        let bad = [
            r#"{"serial":1,"tree":{}}"#,
            r#"{"serial":1,"tree":{"services":[{"protocol":"tcp","addr":"192.0.2.1","port":80},{"protocol":"tcp","addr":"192.0.2.1","port":80}]}}"#,
        ];
        for body in bad {
            assert!(
                matches!(
                    decode("tree", Direction::ToClient, body),
                    Err(SchemaError::Json { .. })
                ),
                "{body}"
            );
        }
        let ok =
            r#"{"serial":1,"tree":{"services":[{"protocol":"tcp","addr":"192.0.2.1","port":80}]}}"#;
        let Message::Tree(t) = decode("tree", Direction::ToClient, ok).unwrap() else {
            panic!("not a tree answer")
        };
        assert_eq!(t.tree.len(), 1);
    }

    #[test]
    fn rules_beyond_types_are_enforced() {
        let cases = [
            ("execute", r#"{"argv":[],"timeout_s":5}"#),
            ("execute", r#"{"argv":["ls"],"timeout_s":0}"#),
            (
                "sync",
                r#"{"files":[{"dir":"/x","name":"a","mode":65535,"content_b64":""}]}"#,
            ),
        ];
        for (kind, body) in cases {
            assert!(
                matches!(
                    decode(kind, Direction::ToClient, body),
                    Err(SchemaError::Invalid { .. })
                ),
                "{body}"
            );
        }
        for (dir, name) in [
            ("/x", ""),
            ("/x", "/etc/passwd"),
            ("/x", "../passwd"),
            ("/x", "a/../../b"),
            ("/x", "a//b"),
            ("/x", "./a"),
            ("/x", "a/"),
            ("/x", "a\\u0000b"),
            ("x", "a"),
            ("/", "a"),
            ("/x/../y", "a"),
        ] {
            let body = format!(
                r#"{{"files":[{{"dir":"{dir}","name":"{name}","mode":420,"content_b64":""}}]}}"#
            );
            assert!(
                matches!(
                    decode("sync", Direction::ToClient, &body),
                    Err(SchemaError::Invalid { .. })
                ),
                "{body}"
            );
        }
        for dirs in [r#"["x"]"#, r#"["/a/../b"]"#, r#"["/"]"#] {
            let body = format!(r#"{{"dirs":{dirs}}}"#);
            assert!(
                matches!(
                    decode("sync", Direction::ToServer, &body),
                    Err(SchemaError::Invalid { .. })
                ),
                "{body}"
            );
        }
        assert!(relative_name("lbs/web/a.conf"));
        assert!(absolute_dir("/etc/keepalived"));
    }

    #[test]
    fn wrong_direction_unknown_type_and_non_objects_are_refused() {
        for kind in ["changes", "execute", "syn_announce", "fin_announce"] {
            assert!(matches!(
                decode(kind, Direction::ToServer, r#"{"vips":[]}"#),
                Err(SchemaError::WrongDirection { .. })
            ));
        }
        assert!(matches!(
            decode("announces", Direction::ToClient, "{}"),
            Err(SchemaError::WrongDirection { .. })
        ));
        assert!(matches!(
            decode("reboot", Direction::ToClient, "{}"),
            Err(SchemaError::UnknownType(t)) if t == "reboot"
        ));
        // serde would read a struct from an array; bodies must be objects.
        assert!(matches!(
            decode("ack_announce", Direction::ToServer, r#"["192.0.2.1"]"#),
            Err(SchemaError::NotObject(MessageType::AckAnnounce))
        ));
        assert!(matches!(
            decode("tree", Direction::ToServer, "[]"),
            Err(SchemaError::NotObject(_))
        ));
    }

    #[test]
    fn direction_follows_the_address() {
        assert_eq!(Direction::of_address("lbs"), Direction::ToServer);
        assert_eq!(Direction::of_address("broadcast"), Direction::ToClient);
        assert_eq!(
            Direction::of_address("lb1.example.net"),
            Direction::ToClient
        );
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(t));
        }
    }
}
