//! The signed message envelope: sealing and parsing, and why a message is dropped.
//!
//! Every message on the broker is one JSON object:
//!
//! ```text
//! {"type":"fin_announce","from":"arbiter.example.net","to":"broadcast","epoch":1763924527,
//!  "seq":42,"ts":1763924527123,"body":{"vips":["192.0.2.10"]},"sig":"ef0dce92…(128 hex digits)"}
//! ```
//!
//! | field   | JSON           | meaning |
//! |---------|----------------|---------|
//! | `type`  | string         | message type (`heartbeat`, `tree`, …, see `messages.rs`) |
//! | `from`  | string         | the sender: a balancer's hostname or the arbiter's; never `lbs` or `broadcast` |
//! | `to`    | string         | `lbs` (the arbiter), a balancer's hostname, or `broadcast` |
//! | `epoch` | integer < 2^64 | the sender's run: strictly above every earlier run's (kept on disk by the sender, see `state.rs`) |
//! | `seq`   | integer < 2^64 | the message's number within the epoch, from 1, one up per message the sender sends to anyone |
//! | `ts`    | integer < 2^64 | the sender's wall clock at sending, ms since the Unix epoch: only *measured* by receivers (clock offset), never used to accept or drop |
//! | `body`  | object         | the typed body of `type` |
//! | `sig`   | string         | Ed25519 signature (RFC 8032, 64 bytes) by the sender's key, as 128 hex digits, over the signed layout below |
//! | `mac`   | string         | instead of `sig`, from a balancer to the arbiter only: HMAC-SHA256 (32 bytes) with the pair key of the two (`keys.rs`), as 64 hex digits, over the same layout |
//!
//! `type`, `from` and `to` are 1 to 255 visible ASCII characters (0x21–0x7E, no space). No other
//! fields are allowed, no field may appear twice, and exactly one of `sig` and `mac` is present. `(epoch, seq)` is the message's id: a
//! message the broker gets twice (republished after a lost confirm) is the same bytes, the same
//! id, and the receiver keeps only the first.
//!
//! # Signed layout
//!
//! The signature (pure Ed25519 with the sender's `node_key`) or the MAC is over these bytes,
//! concatenated without separators other than the `\n` (0x0A) shown:
//!
//! ```text
//! "ipvs-sync-envelope-v2\n"
//! type "\n" from "\n" to "\n"
//! epoch as ASCII decimal, no sign or leading zeros "\n"
//! seq   as ASCII decimal, no sign or leading zeros "\n"
//! ts    as ASCII decimal, no sign or leading zeros "\n"
//! body: the exact bytes of the `body` value as they appear in the envelope, from its
//!       opening `{` to its closing `}`
//! ```
//!
//! `type`, `from` and `to` are the decoded JSON string values (they cannot contain `\n`, so the
//! layout is unambiguous). The body is never re-serialised: a receiver checks the bytes it
//! received, so any sender that embeds the body it signed verbatim is compatible, whatever its
//! JSON library's key order or spacing. The domain string differs from v1's
//! (`ipvs-sync-envelope-v1\n`, HMAC-SHA256 with one shared key), so no v1 message verifies as v2.
//!
//! Who may sign what, and the receiver's checks in order, are in `keys.rs` and `admission.rs`.
//! This file is pure: bytes in, bytes or typed errors out.

use std::fmt;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::keys::{NodeKey, PairKey, PublicKey};

/// Domain-separation prefix of the signed layout; a new layout gets a new version.
pub const SIGNING_DOMAIN: &[u8] = b"ipvs-sync-envelope-v2\n";

/// Longest `type`, `from` or `to` value, in bytes.
pub const MAX_FIELD_LEN: usize = 255;

/// Length of the hex signature (64 bytes of Ed25519).
const SIG_HEX_LEN: usize = 128;
/// Length of the hex MAC (32 bytes of HMAC-SHA256).
const MAC_HEX_LEN: usize = 64;

/// A message's identity: the sender's run and the message's number in it. Ordered by epoch,
/// then seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// The sender's run.
    pub epoch: u64,
    /// The message's number within the run, from 1.
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.epoch, self.seq)
    }
}

/// The signed header fields of an envelope (everything but `body` and `sig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Message type, the envelope's `type`.
    pub kind: String,
    /// Sender identity.
    pub from: String,
    /// Addressee: `lbs`, a hostname or `broadcast`.
    pub to: String,
    /// The message id.
    pub id: MessageId,
    /// Sender's wall clock at sending, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

impl Header {
    fn check(&self) -> Result<(), FieldError> {
        check_field("type", &self.kind)?;
        check_field("from", &self.from)?;
        check_field("to", &self.to)
    }

    /// The bytes the signature covers (see the module doc).
    pub fn signed_bytes(&self, body: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 128 + body.len());
        out.extend_from_slice(SIGNING_DOMAIN);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{}\n{}\n{}\n{}\n{}\n{}\n",
            self.kind, self.from, self.to, self.id.epoch, self.id.seq, self.ts_ms
        );
        out.extend_from_slice(body);
        out
    }
}

/// A header field that does not fit the envelope rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("envelope field `{field}` must be 1 to {MAX_FIELD_LEN} visible ASCII characters")]
pub struct FieldError {
    /// Name of the offending field.
    pub field: &'static str,
}

fn check_field(field: &'static str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_FIELD_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(FieldError { field })
    }
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A header field breaks the envelope rules.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The body is not a JSON object.
    #[error("envelope body must be a JSON object")]
    BodyNotObject,
    /// JSON serialisation failed.
    #[error("serialising the envelope: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JSON shape of an envelope, borrowing the body's raw bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    from: String,
    to: String,
    epoch: u64,
    seq: u64,
    ts: u64,
    #[serde(borrow)]
    body: &'a RawValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// What authenticates a message.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// An Ed25519 signature by the sender's key.
    Sig(Signature),
    /// An HMAC-SHA256 with the pair key of a balancer and the arbiter.
    Mac([u8; 32]),
}

/// Seals `body` under `header` with `key`: the envelope's JSON bytes with `sig` filled in.
///
/// `body` must be a JSON object; its bytes are embedded and signed verbatim.
pub fn seal(key: &NodeKey, header: &Header, body: &RawValue) -> Result<Vec<u8>, SealError> {
    header.check()?;
    if !body.get().starts_with('{') {
        return Err(SealError::BodyNotObject);
    }
    let sig = key.sign(&header.signed_bytes(body.get().as_bytes()));
    encode(header, body, Some(hex::encode(sig.to_bytes())), None)
}

/// Seals `body` under `header` with a MAC of the pair key (a balancer's messages to the
/// arbiter): the envelope's JSON bytes with `mac` filled in.
pub fn seal_mac(pair: &PairKey, header: &Header, body: &RawValue) -> Result<Vec<u8>, SealError> {
    header.check()?;
    if !body.get().starts_with('{') {
        return Err(SealError::BodyNotObject);
    }
    let mac = pair.mac(&header.signed_bytes(body.get().as_bytes()));
    encode(header, body, None, Some(hex::encode(mac)))
}

fn encode(
    header: &Header,
    body: &RawValue,
    sig: Option<String>,
    mac: Option<String>,
) -> Result<Vec<u8>, SealError> {
    let wire = WireEnvelope {
        kind: header.kind.clone(),
        from: header.from.clone(),
        to: header.to.clone(),
        epoch: header.id.epoch,
        seq: header.id.seq,
        ts: header.ts_ms,
        body,
        sig,
        mac,
    };
    Ok(serde_json::to_vec(&wire)?)
}

/// A parsed envelope whose signature (or MAC) is not checked yet.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// The signed header.
    pub header: Header,
    /// The body, exactly as received.
    pub body: &'a RawValue,
    /// The signature or MAC as sent.
    pub auth: Auth,
}

impl Parsed<'_> {
    /// The bytes the signature must cover.
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.header.signed_bytes(self.body.get().as_bytes())
    }

    /// Whether it carries a signature that verifies under `key`, or a MAC that verifies with
    /// `pair` (when a pair key is given: MACs are accepted from balancers by the arbiter only).
    pub fn verifies(&self, key: &PublicKey, pair: Option<&PairKey>) -> bool {
        match (&self.auth, pair) {
            (Auth::Sig(sig), _) => key.verifies(&self.signed_bytes(), sig),
            (Auth::Mac(tag), Some(pair)) => pair.verifies(&self.signed_bytes(), tag),
            (Auth::Mac(_), None) => false,
        }
    }
}

/// Why a received message was dropped; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not JSON, or JSON that is not an envelope.
    Malformed,
    /// The payload is larger than the configured maximum.
    TooLarge,
    /// No `sig` (or an empty one).
    Unsigned,
    /// `from` is no sender this node accepts (not the pinned arbiter; a balancer without a
    /// key file; `lbs`, `broadcast`).
    UnknownSender,
    /// The signature does not verify with the key of `from`: another key, or altered content.
    Forged,
    /// Signed by an accepted sender, but `to` names neither this node nor a group it is in.
    NotForUs,
    /// An id below the sender's replay window, or of an earlier epoch: a replay.
    Replayed,
    /// An id already seen within the window: the broker delivered the same message twice
    /// (republished after a lost confirm, or redelivered).
    Duplicate,
    /// The body does not fit the schema of its type (or the type is unknown).
    Schema,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::TooLarge,
        DropReason::Unsigned,
        DropReason::UnknownSender,
        DropReason::Forged,
        DropReason::NotForUs,
        DropReason::Replayed,
        DropReason::Duplicate,
        DropReason::Schema,
    ];

    /// Stable lower-case name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TooLarge => "too_large",
            DropReason::Unsigned => "unsigned",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::Forged => "forged",
            DropReason::NotForUs => "not_for_us",
            DropReason::Replayed => "replayed",
            DropReason::Duplicate => "duplicate",
            DropReason::Schema => "schema",
        }
    }

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a drop for this reason is expected in normal operation (a second copy the
    /// broker delivered after a lost confirm), as opposed to a sign of a fault or an attack.
    pub fn is_expected(self) -> bool {
        matches!(self, DropReason::Duplicate)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dropped message: the reason, and what is known of it for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Payload over the size limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// Not an envelope.
    #[error("not an envelope: {detail}")]
    Malformed {
        /// Parser message (never the payload itself).
        detail: String,
    },
    /// No signature.
    #[error("unsigned {kind} from {from}")]
    Unsigned {
        /// Claimed type.
        kind: String,
        /// Claimed sender.
        from: String,
    },
    /// A sender this node does not accept.
    #[error("{kind} from {from}: not a sender this node accepts")]
    UnknownSender {
        /// Claimed type.
        kind: String,
        /// Claimed sender.
        from: String,
    },
    /// Signature mismatch.
    #[error("bad signature on {kind} from {from}")]
    Forged {
        /// Claimed type.
        kind: String,
        /// Claimed sender.
        from: String,
    },
    /// Addressed elsewhere.
    #[error("{kind} from {from} is addressed to {to}")]
    NotForUs {
        /// Message type.
        kind: String,
        /// Sender.
        from: String,
        /// Addressee.
        to: String,
    },
    /// A replay.
    #[error("replayed {kind} from {from}: id {id} is below the window (last {last})")]
    Replayed {
        /// Message type.
        kind: String,
        /// Sender.
        from: String,
        /// The message's id.
        id: MessageId,
        /// Highest id accepted from that sender.
        last: MessageId,
    },
    /// A second copy.
    #[error("duplicate {kind} from {from}: id {id} was already received")]
    Duplicate {
        /// Message type.
        kind: String,
        /// Sender.
        from: String,
        /// The message's id.
        id: MessageId,
    },
}

impl Reject {
    /// The counter this rejection goes to.
    pub fn reason(&self) -> DropReason {
        match self {
            Reject::TooLarge { .. } => DropReason::TooLarge,
            Reject::Malformed { .. } => DropReason::Malformed,
            Reject::Unsigned { .. } => DropReason::Unsigned,
            Reject::UnknownSender { .. } => DropReason::UnknownSender,
            Reject::Forged { .. } => DropReason::Forged,
            Reject::NotForUs { .. } => DropReason::NotForUs,
            Reject::Replayed { .. } => DropReason::Replayed,
            Reject::Duplicate { .. } => DropReason::Duplicate,
        }
    }
}

/// Parses `bytes` into an envelope with a signature of the right shape; checks nothing else
/// (not the size, the sender, the signature itself, the addressee or the id).
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, Reject> {
    let wire: WireEnvelope<'_> = serde_json::from_slice(bytes).map_err(|e| Reject::Malformed {
        detail: e.to_string(),
    })?;
    let header = Header {
        kind: wire.kind,
        from: wire.from,
        to: wire.to,
        id: MessageId {
            epoch: wire.epoch,
            seq: wire.seq,
        },
        ts_ms: wire.ts,
    };
    header.check().map_err(|e| Reject::Malformed {
        detail: e.to_string(),
    })?;
    if !wire.body.get().starts_with('{') {
        return Err(Reject::Malformed {
            detail: "envelope body is not a JSON object".to_owned(),
        });
    }
    let forged = |header: Header| Reject::Forged {
        kind: header.kind,
        from: header.from,
    };
    let present = |f: &Option<String>| f.as_deref().is_some_and(|s| !s.is_empty());
    let auth = match (present(&wire.sig), present(&wire.mac)) {
        (false, false) => {
            return Err(Reject::Unsigned {
                kind: header.kind,
                from: header.from,
            })
        }
        (true, true) => {
            return Err(Reject::Malformed {
                detail: "both `sig` and `mac`".to_owned(),
            })
        }
        (true, false) => {
            let sig = wire.sig.as_deref().unwrap_or_default();
            let mut raw = [0u8; SIG_HEX_LEN / 2];
            if sig.len() != SIG_HEX_LEN || hex::decode_to_slice(sig, &mut raw).is_err() {
                return Err(forged(header));
            }
            Auth::Sig(Signature::from_bytes(&raw))
        }
        (false, true) => {
            let mac = wire.mac.as_deref().unwrap_or_default();
            let mut raw = [0u8; MAC_HEX_LEN / 2];
            if mac.len() != MAC_HEX_LEN || hex::decode_to_slice(mac, &mut raw).is_err() {
                return Err(forged(header));
            }
            Auth::Mac(raw)
        }
    };
    Ok(Parsed {
        header,
        body: wire.body,
        auth,
    })
}

/// Parses `bytes` and checks the signature under `key` (a MAC is refused); nothing else (used
/// by tools and tests: receivers go through [`super::admission::Verifier`]).
pub fn open<'a>(key: &PublicKey, bytes: &'a [u8]) -> Result<Parsed<'a>, Reject> {
    let parsed = parse(bytes)?;
    if parsed.verifies(key, None) {
        Ok(parsed)
    } else {
        Err(Reject::Forged {
            kind: parsed.header.kind,
            from: parsed.header.from,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 8032 §7.1 test 1 seed, the arbiter of the vector below.
    pub(crate) const ARBITER_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    pub(crate) const NOW: u64 = 1_763_924_527_123;

    pub(crate) fn arbiter_key() -> NodeKey {
        NodeKey::from_text(ARBITER_SEED).unwrap()
    }

    pub(crate) fn header(seq: u64) -> Header {
        Header {
            kind: "fin_announce".into(),
            from: "arbiter.example.net".into(),
            to: "broadcast".into(),
            id: MessageId {
                epoch: 1_763_924_527,
                seq,
            },
            ts_ms: NOW,
        }
    }

    pub(crate) fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    // The signature below was made independently of this code, with OpenSSL 3:
    //   printf '302e020100300506032b657004220420%s' 9d61…7f60 | xxd -r -p > k.der
    //   openssl pkey -inform DER -in k.der -out k.pem
    //   printf 'ipvs-sync-envelope-v2\nfin_announce\narbiter.example.net\nbroadcast\n1763924527\n42\n1763924527123\n{"vips":["192.0.2.10"]}' > m
    //   openssl pkeyutl -sign -rawin -inkey k.pem -in m | xxd -p -c 200
    const VECTOR_SIG: &str = "ef0dce92f5b47e88f33c0dd1a1e1c91ad4c30dbb9199a6536888b7d05a06a3efade8a7f65c7e23f71de985ec4f1800463d6d7306f3bc40ade4a6196a186cf003";
    const VECTOR_HEAD: &str = r#"{"type":"fin_announce","from":"arbiter.example.net","to":"broadcast","epoch":1763924527,"seq":42,"ts":1763924527123,"body":{"vips":["192.0.2.10"]},"sig":""#;

    pub(crate) fn vector() -> String {
        format!("{VECTOR_HEAD}{VECTOR_SIG}\"}}")
    }

    #[test]
    fn seal_emits_the_reference_bytes() {
        let body = raw(r#"{"vips":["192.0.2.10"]}"#);
        let bytes = seal(&arbiter_key(), &header(42), &body).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), vector());
    }

    #[test]
    fn open_parses_the_reference_bytes() {
        let v = vector();
        let opened = open(&arbiter_key().public(), v.as_bytes()).unwrap();
        assert_eq!(opened.header, header(42));
        assert_eq!(opened.body.get(), r#"{"vips":["192.0.2.10"]}"#);
        assert!(matches!(opened.auth, Auth::Sig(s) if hex::encode(s.to_bytes()) == VECTOR_SIG));
    }

    #[test]
    fn body_bytes_are_verified_as_received_not_reserialised() {
        // Another sender's spacing and key order: signed over its own bytes, it must verify.
        let body = r#"{ "vips" : [ "192.0.2.10" ] , "x":1 }"#;
        let h = header(7);
        let sig = hex::encode(
            arbiter_key()
                .sign(&h.signed_bytes(body.as_bytes()))
                .to_bytes(),
        );
        let msg = format!(
            r#"{{ "sig":"{sig}", "body": {body} ,"ts":{NOW},"seq":7,"epoch":1763924527,"to":"broadcast","from":"arbiter.example.net","type":"fin_announce"}}"#
        );
        let key = arbiter_key().public();
        let opened = open(&key, msg.as_bytes()).unwrap();
        assert_eq!(opened.body.get(), body);
        // The same body re-serialised compactly is a different byte string: forged.
        let compact = msg.replace(body, r#"{"vips":["192.0.2.10"],"x":1}"#);
        assert_eq!(
            open(&key, compact.as_bytes()).unwrap_err().reason(),
            DropReason::Forged
        );
    }

    #[test]
    fn every_header_field_is_covered_by_the_signature() {
        let v = vector();
        let key = arbiter_key().public();
        let tampered = [
            v.replace("\"fin_announce\"", "\"syn_announce\""),
            v.replace("arbiter.example.net", "arbiter.example.org"),
            v.replace("\"broadcast\"", "\"lb1.example.net\""),
            v.replace("\"epoch\":1763924527", "\"epoch\":1763924528"),
            v.replace("\"seq\":42", "\"seq\":43"),
            v.replace("\"ts\":1763924527123", "\"ts\":1763924527124"),
            v.replace("192.0.2.10", "192.0.2.11"),
        ];
        for t in tampered {
            assert_ne!(t, v);
            let err = open(&key, t.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), DropReason::Forged, "{t}");
        }
        let other = NodeKey::generate().unwrap().public();
        assert_eq!(
            open(&other, v.as_bytes()).unwrap_err().reason(),
            DropReason::Forged
        );
    }

    #[test]
    fn a_v1_envelope_is_malformed_and_no_v1_layout_verifies() {
        // The v1 reference message (HMAC, no epoch) is not a v2 envelope at all.
        let v1 = concat!(
            r#"{"type":"fin_announce","from":"arbiter.example.net","to":"broadcast","#,
            r#""seq":1763924527123456,"ts":1763924527123,"body":{"vips":["192.0.2.10"]},"#,
            r#""sig":"e316ccde689a0f44f49540834554e74dbf145424484b31553024000f8c2ad5d1"}"#
        );
        assert_eq!(
            parse(v1.as_bytes()).unwrap_err().reason(),
            DropReason::Malformed
        );
        // A v2 signature over the v1 domain does not verify as v2.
        let h = header(42);
        let mut v1_layout = h.signed_bytes(br#"{"vips":["192.0.2.10"]}"#);
        v1_layout[20] = b'1';
        let sig = hex::encode(arbiter_key().sign(&v1_layout).to_bytes());
        let msg = vector().replace(VECTOR_SIG, &sig);
        assert_eq!(
            open(&arbiter_key().public(), msg.as_bytes())
                .unwrap_err()
                .reason(),
            DropReason::Forged
        );
    }

    #[test]
    fn unsigned_forged_and_malformed_are_told_apart() {
        let v = vector();
        let key = arbiter_key().public();
        let unsigned = v.replace(&format!(r#","sig":"{VECTOR_SIG}""#), "");
        assert_eq!(
            open(&key, unsigned.as_bytes()).unwrap_err().reason(),
            DropReason::Unsigned
        );
        let empty = v.replace(VECTOR_SIG, "");
        assert_eq!(
            open(&key, empty.as_bytes()).unwrap_err().reason(),
            DropReason::Unsigned
        );
        for bad_sig in [&VECTOR_SIG[..126], &VECTOR_SIG.replace('e', "g")] {
            let m = v.replace(VECTOR_SIG, bad_sig);
            assert_eq!(
                open(&key, m.as_bytes()).unwrap_err().reason(),
                DropReason::Forged
            );
        }
        // Upper-case hex is the same signature.
        let upper = v.replace(VECTOR_SIG, &VECTOR_SIG.to_uppercase());
        assert!(open(&key, upper.as_bytes()).is_ok());
        let cases = [
            "".to_owned(),
            "not json".to_owned(),
            "[]".to_owned(),
            r#"{"type":"heartbeat"}"#.to_owned(),
            v.replace(r#""to":"broadcast","#, r#""to":"broadcast","to":"lb2","#),
            v.replace(r#""seq":"#, r#""extra":1,"seq":"#),
            v.replace(r#""seq":42"#, r#""seq":-1"#),
            v.replace(r#""epoch":1763924527"#, r#""epoch":18446744073709551616"#),
            v.replace(r#""epoch":1763924527,"#, ""),
            v.replace(r#"{"vips":["192.0.2.10"]}"#, r#"["192.0.2.10"]"#),
            v.replace("\"broadcast\"", "\"two words\""),
            v.replace("\"broadcast\"", "\"\""),
            v.replace("\"broadcast\"", "\"a\\nb\""),
            v.replace("\"broadcast\"", &format!("\"{}\"", "x".repeat(256))),
        ];
        for c in cases {
            assert_eq!(
                parse(c.as_bytes()).unwrap_err().reason(),
                DropReason::Malformed,
                "{c}"
            );
        }
    }

    #[test]
    fn macs_verify_with_the_pair_key_only_and_never_as_signatures() {
        let arbiter = arbiter_key();
        let lb1 = NodeKey::generate().unwrap();
        let pair = lb1.pair_with_arbiter("lb1", "arbiter.example.net", &arbiter.public());
        let mut h = header(5);
        h.from = "lb1".into();
        h.to = "lbs".into();
        let body = raw(r#"{"role":"client","uptime":1}"#);
        let m = seal_mac(&pair, &h, &body).unwrap();
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(
            text.contains(r#","mac":""#) && !text.contains(r#""sig""#),
            "{text}"
        );
        let p = parse(&m).unwrap();
        let arbiter_side = arbiter.pair_with_balancer("arbiter.example.net", "lb1", &lb1.public());
        assert!(p.verifies(&lb1.public(), Some(&arbiter_side)));
        // Without a pair key (a balancer checking the arbiter) a MAC is never enough.
        assert!(!p.verifies(&lb1.public(), None));
        assert_eq!(
            open(&lb1.public(), &m).unwrap_err().reason(),
            DropReason::Forged
        );
        // Tampered content, another pair's key.
        let other = NodeKey::generate().unwrap();
        let other_side = arbiter.pair_with_balancer("arbiter.example.net", "lb1", &other.public());
        assert!(!p.verifies(&lb1.public(), Some(&other_side)));
        let tampered = text.replace("\"uptime\":1", "\"uptime\":2");
        assert!(!parse(tampered.as_bytes())
            .unwrap()
            .verifies(&lb1.public(), Some(&arbiter_side)));
        // Both authenticators, or a short one.
        let both = text.replace(r#","mac":"#, &format!(r#","sig":"{VECTOR_SIG}","mac":"#));
        assert_eq!(
            parse(both.as_bytes()).unwrap_err().reason(),
            DropReason::Malformed
        );
        let mac_hex = text
            .rsplit_once(r#""mac":""#)
            .unwrap()
            .1
            .trim_end_matches("\"}");
        let short = text.replace(mac_hex, &mac_hex[..62]);
        assert_eq!(
            parse(short.as_bytes()).unwrap_err().reason(),
            DropReason::Forged
        );
    }

    #[test]
    fn seal_refuses_what_parse_would_refuse() {
        let body = raw(r#"{"vips":[]}"#);
        let mut h = header(1);
        h.to = "a\nb".into();
        assert!(matches!(
            seal(&arbiter_key(), &h, &body),
            Err(SealError::Field(FieldError { field: "to" }))
        ));
        assert!(matches!(
            seal(&arbiter_key(), &header(1), &raw("[1]")),
            Err(SealError::BodyNotObject)
        ));
    }

    #[test]
    fn ids_order_by_epoch_then_seq() {
        let id = |epoch, seq| MessageId { epoch, seq };
        assert!(id(1, 1000) < id(2, 1));
        assert!(id(2, 1) < id(2, 2));
        assert_eq!(id(3, 4).to_string(), "3/4");
    }
}
