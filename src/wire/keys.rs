//! Node keys (Ed25519, RFC 8032) and who may send what.
//!
//! Every node signs what it sends with its own private key, `[secret] node_key` of
//! `secret.ini` (written by `ipvs-sync keygen`). The receivers hold public keys only:
//!
//! - a balancer pins the arbiter: `[main] arbiter_name` and `arbiter_public_key`; it accepts a
//!   message only when `from` is that name **and** the signature verifies with that key;
//! - the arbiter holds one `HOSTNAME.pub` per balancer in `[server] balancer_keys_dir` and
//!   accepts a message only when `from` names a balancer whose key it holds and the signature
//!   verifies with it. The directory is read again on SIGHUP ([`load_key_dir`]).
//!
//! So a balancer's private key signs for that balancer and nothing else: it cannot speak as the
//! arbiter or as another balancer. `lbs` and `broadcast` are routing keys, never names.
//!
//! # Pair keys: balancer → arbiter messages
//!
//! What a balancer sends the arbiter (a heartbeat a second from each of a thousand balancers)
//! is authenticated with a MAC instead of a signature: checking an Ed25519 signature costs
//! ~50 µs, an HMAC-SHA256 ~1 µs (`benches/envelope.rs`). The MAC key of a balancer B and the
//! arbiter A is derived from their Ed25519 keys by X25519 (the keys' Montgomery forms, as
//! libsodium's `crypto_sign_ed25519_*_to_curve25519` do; the joint security of this use is
//! shown in <https://eprint.iacr.org/2021/509>):
//!
//! ```text
//! shared   = X25519(own secret scalar, peer's public key)       (the same on both sides)
//! pair key = HMAC-SHA256(key = shared,
//!                        "ipvs-sync-pair-v2\n" arbiter_name "\n" balancer_name "\n"
//!                        || arbiter public key (32 bytes) || balancer public key (32 bytes))
//! ```
//!
//! Only A and B can compute it: another balancer C knows the pair key of C and A and no other,
//! so it still speaks for itself only. The arbiter signs everything it sends (every balancer
//! must be able to check a broadcast), and a balancer accepts only signatures from it, never a
//! MAC.
//!
//! Text forms (what `keygen` writes and prints) are standard base64 with padding of the
//! 32-byte RFC 8032 seed (private) or the 32-byte encoded point (public): 44 characters.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::envelope::MAX_FIELD_LEN;
use super::messages::{PeerRole, BROADCAST, SERVER_ADDRESS};

/// Suffix of a balancer's public key file in `balancer_keys_dir`.
pub const PUB_SUFFIX: &str = ".pub";

/// Largest key file read (a key, a comment or two).
const MAX_KEY_FILE: u64 = 4096;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of 32 bytes.
    #[error("expected 44 characters of base64 (32 bytes), as `ipvs-sync keygen` writes")]
    Encoding,
    /// A public key that is not a point of the curve, or one of small order (RFC 8032 §5.1.3).
    #[error("not a usable Ed25519 public key (not on the curve, or of small order)")]
    BadPoint,
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let mut out = [0u8; 32];
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError::Encoding);
    }
    match STANDARD.decode_slice(text.as_bytes(), &mut out) {
        Ok(32) => Ok(out),
        _ => Err(KeyError::Encoding),
    }
}

/// This node's private key. `Debug` never prints it; the bytes are wiped when dropped.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

impl NodeKey {
    /// A new key from the kernel's random source (`/dev/urandom`).
    pub fn generate() -> std::io::Result<NodeKey> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let key = NodeKey(SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// The key of an RFC 8032 seed (deterministic keys of test fakes; real nodes use
    /// [`NodeKey::generate`]).
    pub fn from_seed(seed: [u8; 32]) -> NodeKey {
        NodeKey(SigningKey::from_bytes(&seed))
    }

    /// Parses the text form (`node_key` of `secret.ini`).
    pub fn from_text(text: &str) -> Result<NodeKey, KeyError> {
        let mut seed = decode32(text)?;
        let key = NodeKey(SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// The text form, for `secret.ini` (a secret: never log it).
    pub fn to_text(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Ed25519 signature of `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> Signature {
        self.0.sign(msg)
    }

    /// X25519 of this key's secret scalar with `peer`'s public key (see the module doc).
    fn shared_with(&self, peer: &PublicKey) -> [u8; 32] {
        peer.0
            .to_montgomery()
            .mul_clamped(self.0.to_scalar_bytes())
            .to_bytes()
    }

    /// The pair key of this balancer (`me`) and the arbiter `arbiter` with key `key`.
    pub fn pair_with_arbiter(&self, me: &str, arbiter: &str, key: &PublicKey) -> PairKey {
        PairKey::derive(&self.shared_with(key), arbiter, key, me, &self.public())
    }

    /// The pair key of this arbiter (`me`) and the balancer `balancer` with key `key`.
    pub fn pair_with_balancer(&self, me: &str, balancer: &str, key: &PublicKey) -> PairKey {
        PairKey::derive(&self.shared_with(key), me, &self.public(), balancer, key)
    }
}

/// Domain of the pair-key derivation.
const PAIR_DOMAIN: &[u8] = b"ipvs-sync-pair-v2\n";

/// The MAC key a balancer and the arbiter share (see the module doc). `Debug` never shows it.
#[derive(Clone)]
pub struct PairKey(Hmac<Sha256>);

impl PairKey {
    fn derive(
        shared: &[u8; 32],
        arbiter: &str,
        arbiter_key: &PublicKey,
        balancer: &str,
        balancer_key: &PublicKey,
    ) -> PairKey {
        let mut kdf =
            <Hmac<Sha256> as Mac>::new_from_slice(shared).unwrap_or_else(|_| unreachable_hmac());
        kdf.update(PAIR_DOMAIN);
        kdf.update(arbiter.as_bytes());
        kdf.update(b"\n");
        kdf.update(balancer.as_bytes());
        kdf.update(b"\n");
        kdf.update(arbiter_key.0.as_bytes());
        kdf.update(balancer_key.0.as_bytes());
        let key = kdf.finalize().into_bytes();
        PairKey(<Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable_hmac()))
    }

    /// HMAC-SHA256 of `msg`.
    pub(crate) fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `msg` (compared in constant time).
    pub(crate) fn verifies(&self, msg: &[u8], tag: &[u8; 32]) -> bool {
        let mut m = self.0.clone();
        m.update(msg);
        m.verify_slice(tag).is_ok()
    }
}

/// HMAC takes a key of any length: building one cannot fail.
fn unreachable_hmac() -> Hmac<Sha256> {
    // A fixed key keeps this total without a panic path; never reached.
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default())
}

impl fmt::Debug for PairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairKey(<hidden>)")
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(public {})", self.public())
    }
}

/// A node's public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// Parses the text form (`arbiter_public_key`, a `HOSTNAME.pub` line). Points of small
    /// order are refused: any signature would verify under them.
    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = decode32(text)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint)?;
        if key.is_weak() {
            return Err(KeyError::BadPoint);
        }
        Ok(PublicKey(key))
    }

    /// Whether `sig` is a valid signature of `msg` under this key.
    pub(crate) fn verifies(&self, msg: &[u8], sig: &Signature) -> bool {
        self.0.verify_strict(msg, sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Whether `name` may be a node's name: 1 to 255 visible ASCII characters without `*` or `#`
/// (it is a routing key of a topic exchange, where those are wildcards), and neither
/// [`SERVER_ADDRESS`] nor [`BROADCAST`].
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'#')
        && name != SERVER_ADDRESS
        && name != BROADCAST
}

/// A balancer as the arbiter knows it: its public key and the pair key of the two.
#[derive(Debug, Clone)]
pub struct Balancer {
    /// Its public key (checks its signatures).
    pub key: PublicKey,
    /// The pair key (checks its MACs).
    pub pair: PairKey,
}

impl PartialEq for Balancer {
    fn eq(&self, other: &Self) -> bool {
        // The pair key follows from the keys.
        self.key == other.key
    }
}

impl Eq for Balancer {}

/// How a sender's messages are checked.
#[derive(Debug, Clone, Copy)]
pub struct SenderKeys<'a> {
    /// Its public key, for signatures.
    pub key: &'a PublicKey,
    /// The pair key, for MACs (the arbiter's view of a balancer only).
    pub pair: Option<&'a PairKey>,
    /// What it is.
    pub role: PeerRole,
}

/// The senders a receiver accepts, each with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Senders {
    /// A balancer's view: the pinned arbiter only.
    Arbiter {
        /// `arbiter_name`.
        name: String,
        /// `arbiter_public_key`.
        key: PublicKey,
    },
    /// The arbiter's view: the balancers of `balancer_keys_dir`.
    Balancers(BTreeMap<String, Balancer>),
}

impl Senders {
    /// The arbiter's view of `keys` (balancer name → public key): each with the pair key the
    /// arbiter (`me`, `own`) shares with it.
    pub fn balancers(own: &NodeKey, me: &str, keys: BTreeMap<String, PublicKey>) -> Senders {
        Senders::Balancers(
            keys.into_iter()
                .map(|(name, key)| {
                    let pair = own.pair_with_balancer(me, &name, &key);
                    (name, Balancer { key, pair })
                })
                .collect(),
        )
    }

    /// How to check `from`'s messages, if it is an accepted sender.
    pub fn lookup(&self, from: &str) -> Option<SenderKeys<'_>> {
        if !valid_node_name(from) {
            return None;
        }
        match self {
            Senders::Arbiter { name, key } => (name == from).then_some(SenderKeys {
                key,
                pair: None,
                role: PeerRole::Server,
            }),
            Senders::Balancers(map) => map.get(from).map(|b| SenderKeys {
                key: &b.key,
                pair: Some(&b.pair),
                role: PeerRole::Client,
            }),
        }
    }

    /// How many senders are accepted.
    pub fn len(&self) -> usize {
        match self {
            Senders::Arbiter { .. } => 1,
            Senders::Balancers(map) => map.len(),
        }
    }

    /// Whether no sender is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file of `balancer_keys_dir` that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKeyFile {
    /// The file.
    pub file: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// What [`load_key_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDir {
    /// Balancer name → key.
    pub keys: BTreeMap<String, PublicKey>,
    /// Files that were left out (bad name, bad key, unsafe ownership or mode).
    pub skipped: Vec<SkippedKeyFile>,
}

/// Why the key directory could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("balancer_keys_dir {dir}: {source}")]
pub struct KeyDirError {
    /// The directory.
    pub dir: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

/// Parses the text of a `HOSTNAME.pub` file: one key line; blank lines and `#` comments
/// are ignored.
pub fn parse_pub_file(text: &str) -> Result<PublicKey, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = lines.next() else {
        return Err("no key in the file".to_owned());
    };
    if lines.next().is_some() {
        return Err("more than one key line".to_owned());
    }
    PublicKey::from_text(line).map_err(|e| e.to_string())
}

/// Reads every `HOSTNAME.pub` of `dir`. A file is used only when it is a regular file (not a
/// symlink) owned by root or by this process's user and not writable by group or others, its
/// name (lower-cased) is a valid node name, and it holds one valid key; anything else is
/// reported in [`KeyDir::skipped`]. Other files (without the suffix) are ignored.
pub fn load_key_dir(dir: &Path) -> Result<KeyDir, KeyDirError> {
    let err = |source| KeyDirError {
        dir: dir.to_path_buf(),
        source,
    };
    let mut out = KeyDir {
        keys: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let file = entry.path();
        let fname = entry.file_name();
        let Some(name) = fname.to_str().and_then(|n| n.strip_suffix(PUB_SUFFIX)) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let mut skip = |reason: String| {
            out.skipped.push(SkippedKeyFile {
                file: file.clone(),
                reason,
            })
        };
        if !valid_node_name(&name) {
            skip(format!("`{name}` cannot be a balancer's name"));
            continue;
        }
        match read_key_file(&file) {
            Ok(key) => {
                if out.keys.insert(name.clone(), key).is_some() {
                    skip(format!(
                        "a second key file for `{name}` (names are not case-sensitive)"
                    ));
                }
            }
            Err(reason) => skip(reason),
        }
    }
    Ok(out)
}

fn read_key_file(file: &Path) -> Result<PublicKey, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .map_err(|e| format!("cannot open (a symlink?): {e}"))?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    config::secret::check_owner_and_mode(meta.uid(), meta.mode(), 0o022).map_err(|why| {
        format!(
            "{why}; fix with `chown root {0} && chmod 644 {0}`",
            file.display()
        )
    })?;
    let mut text = String::new();
    f.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    parse_pub_file(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn b64(hex_str: &str) -> String {
        STANDARD.encode(hex::decode(hex_str).unwrap())
    }

    #[test]
    fn rfc8032_seed_gives_its_public_key_and_text_forms_round_trip() {
        let key = NodeKey::from_text(&b64(SEED)).unwrap();
        assert_eq!(key.public().to_string(), b64(PUBLIC));
        assert_eq!(key.to_text(), b64(SEED));
        assert_eq!(PublicKey::from_text(&b64(PUBLIC)).unwrap(), key.public());
        // RFC 8032 §7.1 test 1: the signature of the empty message.
        let sig = key.sign(b"");
        assert_eq!(
            hex::encode(sig.to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(key.public().verifies(b"", &sig));
        assert!(!key.public().verifies(b"x", &sig));
        assert!(!format!("{key:?}").contains(&b64(SEED)));
    }

    #[test]
    fn bad_key_texts_are_refused() {
        assert_eq!(NodeKey::from_text("abc").unwrap_err(), KeyError::Encoding);
        assert_eq!(
            NodeKey::from_text(&STANDARD.encode([1u8; 33])).unwrap_err(),
            KeyError::Encoding
        );
        // The identity point (small order) and a y with no point on the curve.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_text(&STANDARD.encode(identity)).unwrap_err(),
            KeyError::BadPoint
        );
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            PublicKey::from_text(&STANDARD.encode(off_curve)).unwrap_err(),
            KeyError::BadPoint
        );
        let a = NodeKey::generate().unwrap();
        let b = NodeKey::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn reserved_names_are_never_senders() {
        let own = NodeKey::generate().unwrap();
        let k = NodeKey::generate().unwrap().public();
        let balancers = Senders::balancers(
            &own,
            "arbiter",
            BTreeMap::from([
                ("lb1".to_owned(), k),
                ("broadcast".to_owned(), k),
                ("lbs".to_owned(), k),
            ]),
        );
        assert_eq!(
            balancers.lookup("lb1").map(|x| x.role),
            Some(PeerRole::Client)
        );
        assert!(balancers.lookup("lb1").unwrap().pair.is_some());
        assert!(balancers.lookup("broadcast").is_none());
        assert!(balancers.lookup("lbs").is_none());
        assert!(balancers.lookup("lb2").is_none());
        let arbiter = Senders::Arbiter {
            name: "arbiter".into(),
            key: k,
        };
        assert_eq!(
            arbiter.lookup("arbiter").map(|x| x.role),
            Some(PeerRole::Server)
        );
        assert!(arbiter.lookup("lb1").is_none());
        for bad in [
            "",
            "a b",
            "broadcast",
            "lbs",
            "lb#",
            "*.example",
            &"x".repeat(256),
        ] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
    }

    /// The pair key of two RFC 8032 test keys, computed independently with OpenSSL 3: the
    /// X25519 private keys are the first 32 bytes of SHA-512 of each seed (what Ed25519 uses
    /// as its scalar before clamping, which X25519 does again):
    ///
    /// ```text
    /// for s in 9d61…7f60 4ccd…a6fb; do
    ///   printf '302e020100300506032b656e04220420%s' \
    ///     "$(printf %s $s | xxd -r -p | openssl dgst -sha512 -binary | head -c 32 | xxd -p -c 64)" \
    ///     | xxd -r -p | openssl pkey -inform DER -out x-$s.pem
    /// done
    /// openssl pkey -in x-4ccd….pem -pubout -out peer.pem
    /// openssl pkeyutl -derive -inkey x-9d61….pem -peerkey peer.pem | xxd -p -c 64      # shared
    /// { printf 'ipvs-sync-pair-v2\narbiter\nlb1\n'; printf %s d75a…511a 3d40…660c | xxd -r -p; } \
    ///   | openssl dgst -sha256 -mac HMAC -macopt hexkey:SHARED                       # pair key
    /// printf abc | openssl dgst -sha256 -mac HMAC -macopt hexkey:PAIRKEY                # MAC of "abc"
    /// ```
    const PAIR_MAC_ABC: &str = "7a8cfe06940d724945b2f1a37e728330580348fb65c57accca4bd706e0baaf48";

    #[test]
    fn pair_keys_agree_on_both_sides_and_only_there() {
        // RFC 8032 §7.1 tests 1 and 2: the arbiter and lb1.
        let arbiter = NodeKey::from_text(&b64(SEED)).unwrap();
        let lb1 = NodeKey::from_text(&b64(
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        ))
        .unwrap();
        let lb2 = NodeKey::generate().unwrap();
        let a = arbiter.pair_with_balancer("arbiter", "lb1", &lb1.public());
        let b = lb1.pair_with_arbiter("lb1", "arbiter", &arbiter.public());
        assert_eq!(a.mac(b"abc"), b.mac(b"abc"));
        assert_eq!(hex::encode(a.mac(b"abc")), PAIR_MAC_ABC);
        assert!(a.verifies(b"abc", &b.mac(b"abc")));
        assert!(!a.verifies(b"abd", &b.mac(b"abc")));
        // lb2 cannot make lb1's: neither with its own key nor naming itself lb1.
        for other in [
            lb2.pair_with_arbiter("lb1", "arbiter", &arbiter.public()),
            lb2.pair_with_arbiter("lb2", "arbiter", &arbiter.public()),
            // The names are bound too.
            lb1.pair_with_arbiter("lb1", "arbiter2", &arbiter.public()),
        ] {
            assert_ne!(other.mac(b"abc"), a.mac(b"abc"));
        }
        assert!(!format!("{a:?}").contains(&hex::encode(a.mac(b""))));
    }

    #[test]
    fn pub_files_parse_with_comments_only_one_key() {
        let k = NodeKey::generate().unwrap().public();
        assert_eq!(parse_pub_file(&format!("# lb1\n\n{k}\n")).unwrap(), k);
        assert!(parse_pub_file("# nothing\n").is_err());
        assert!(parse_pub_file(&format!("{k}\n{k}\n")).is_err());
    }

    #[test]
    fn key_dir_keeps_good_files_and_says_why_others_are_left_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let k1 = NodeKey::generate().unwrap().public();
        let k2 = NodeKey::generate().unwrap().public();
        let write = |name: &str, text: &str, mode: u32| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("LB1.example.net.pub", &format!("{k1}\n"), 0o644);
        write("lb2.example.net.pub", &format!("{k2}\n"), 0o666);
        write("broadcast.pub", &format!("{k2}\n"), 0o644);
        write("lb3.pub", "garbage\n", 0o644);
        write("README", "not a key", 0o644);
        std::os::unix::fs::symlink(d.join("LB1.example.net.pub"), d.join("lb4.pub")).unwrap();
        let got = load_key_dir(d).unwrap();
        assert_eq!(
            got.keys,
            BTreeMap::from([("lb1.example.net".to_owned(), k1)])
        );
        let skipped: Vec<_> = got
            .skipped
            .iter()
            .map(|s| s.file.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            skipped,
            ["broadcast.pub", "lb2.example.net.pub", "lb3.pub", "lb4.pub"]
        );
        assert!(
            got.skipped[1].reason.contains("writable"),
            "{:?}",
            got.skipped[1]
        );
        assert!(load_key_dir(&d.join("missing")).is_err());
    }
}
