//! [`Config`]: `config.ini` and `secret.ini` read, checked and joined.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::ini::Ini;
use crate::secret::{self, SecretString, Secrets, MESSAGE_KEY_GONE};
use crate::section::bfd::BfdConfig;
use crate::section::bgp::{self, BgpConfig, PeerConfig};
use crate::section::daemon::{AnnounceConfig, ClientConfig, MessagesConfig, ServerConfig};
use crate::section::main::MainConfig;
use crate::value::{Fields, Invalid};

/// Largest `config.ini`/`secret.ini` read, to bound memory on a wrong path (e.g. a device).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `config.ini` it was read from (`config.ini` for [`Config::from_strs`]).
    pub file: PathBuf,
    /// `[main]`.
    pub main: MainConfig,
    /// `[bgp]` and its peers.
    pub bgp: BgpConfig,
    /// `[bfd]`: BFD timers of the peers with `bfd = true`.
    pub bfd: BfdConfig,
    /// `[announce]`.
    pub announce: AnnounceConfig,
    /// `[client]`.
    pub client: ClientConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[messages]`.
    pub messages: MessagesConfig,
    /// `secret.ini` (empty if the file is absent).
    pub secrets: Secrets,
}

impl Config {
    /// Reads `path` and `secret.ini` beside it. `secret.ini` may be absent; when present
    /// it must not be accessible by group or others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_limited(path)?.ok_or_else(|| ConfigError::Io {
            file: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let secret_file = Self::secret_path(path);
        let secret = read_secret_file(&secret_file)?;
        Self::from_parts(&text, path, secret.as_deref(), &secret_file)
    }

    /// Reads `path` alone, without `secret.ini`: for the parts of a node that need no secret
    /// (the quorum handler's desc files), so they work where `secret.ini` is unreadable.
    pub fn load_public(path: &Path) -> Result<Config, ConfigError> {
        let text = read_limited(path)?.ok_or_else(|| ConfigError::Io {
            file: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        Self::from_parts(&text, path, None, &Self::secret_path(path))
    }

    /// Parses texts instead of files (tests, tools); errors name `config.ini` and
    /// `secret.ini`. No permission check happens here.
    pub fn from_strs(config_text: &str, secret_text: Option<&str>) -> Result<Config, ConfigError> {
        Self::from_parts(
            config_text,
            Path::new("config.ini"),
            secret_text,
            Path::new("secret.ini"),
        )
    }

    /// `secret.ini` in the directory of `config_path`.
    pub fn secret_path(config_path: &Path) -> PathBuf {
        config_path.with_file_name("secret.ini")
    }

    /// The broker URL, with `amqp_password` from `secret.ini` filled in when the URL has
    /// a user but no password. Contains the password: do not log it (log
    /// [`crate::AmqpUrl`]'s `Display` instead).
    pub fn amqp_url(&self) -> String {
        self.main.amqp_server.to_url_with(
            self.secrets
                .amqp_password
                .as_ref()
                .map(SecretString::expose),
        )
    }

    /// The desc file of `vip` (`vip_description_filepath` filled in).
    pub fn desc_path(&self, vip: IpAddr) -> PathBuf {
        self.main.vip_description_filepath.path(vip)
    }

    /// This node's private key (text form), or an error saying `secret.ini` lacks it.
    pub fn node_key(&self) -> Result<&str, ConfigError> {
        self.secrets.node_key()
    }

    fn from_parts(
        config_text: &str,
        config_file: &Path,
        secret_text: Option<&str>,
        secret_file: &Path,
    ) -> Result<Config, ConfigError> {
        let ini = Ini::parse(config_text, config_file)?;
        let mut main = None;
        let mut bgp_cfg = None;
        let mut peers: Vec<PeerConfig> = Vec::new();
        let mut bfd_cfg = BfdConfig::default();
        let mut announce = AnnounceConfig::default();
        let mut client = ClientConfig::default();
        let mut server = ServerConfig::default();
        let mut messages = MessagesConfig::default();
        for section in &ini.sections {
            let mut f = Fields::new(config_file, section);
            let Some(known) = section_keys(&section.name) else {
                return Err(ConfigError::UnknownSection {
                    file: config_file.to_path_buf(),
                    line: section.line,
                    section: section.name.clone(),
                });
            };
            f.only(known, section_prefixes(&section.name))?;
            match section.name.as_str() {
                "main" => main = Some(MainConfig::from_fields(&mut f)?),
                "bgp" => bgp_cfg = Some(BgpConfig::from_fields(&mut f)?),
                "bfd" => bfd_cfg = BfdConfig::from_fields(&mut f)?,
                "announce" => announce = AnnounceConfig::from_fields(&mut f)?,
                "client" => client = ClientConfig::from_fields(&mut f)?,
                "server" => server = ServerConfig::from_fields(&mut f)?,
                "messages" => messages = MessagesConfig::from_fields(&mut f)?,
                other => {
                    // section_keys() let only `bgp.peer.*` through to here
                    let name = other.strip_prefix("bgp.peer.").unwrap_or(other);
                    if !bgp::peer_name(name) {
                        return Err(ConfigError::Syntax {
                            file: config_file.to_path_buf(),
                            line: section.line,
                            reason: format!(
                                "[{other}]: a peer name is 1..64 letters, digits, '-', '_', '.'"
                            ),
                        });
                    }
                    let peer = PeerConfig::from_fields(name, &mut f)?;
                    if let Some(first) = peers.iter().find(|p| p.address == peer.address) {
                        let reason = format!(
                            "{} is already the address of [bgp.peer.{}]",
                            peer.address, first.name
                        );
                        return Err(match f.entry("address") {
                            Some(e) => f.error(e, Invalid::Refused(Cow::Owned(reason)), false),
                            None => f.missing("address", ""),
                        });
                    }
                    peers.push(peer);
                }
            }
            f.finish()?;
        }
        let Some(main) = main else {
            return Err(ConfigError::MissingKey {
                file: config_file.to_path_buf(),
                section: "main".to_owned(),
                key: "amqp_server".to_owned(),
                reason: String::new(),
            });
        };
        let mut bgp_cfg = bgp_cfg.unwrap_or_default();
        bgp_cfg.peers = peers;
        if !bgp_cfg.peers.is_empty() {
            for (key, set) in [
                ("local_as", bgp_cfg.local_as.is_some()),
                ("router_id", bgp_cfg.router_id.is_some()),
            ] {
                if !set {
                    return Err(ConfigError::MissingKey {
                        file: config_file.to_path_buf(),
                        section: "bgp".to_owned(),
                        key: key.to_owned(),
                        reason: " when [bgp.peer.*] sections exist".to_owned(),
                    });
                }
            }
        }
        let secrets = match secret_text {
            Some(text) => parse_secrets(text, secret_file, &main, &mut bgp_cfg.peers)?,
            None => Secrets {
                file: secret_file.to_path_buf(),
                ..Secrets::default()
            },
        };
        Ok(Config {
            file: config_file.to_path_buf(),
            main,
            bgp: bgp_cfg,
            bfd: bfd_cfg,
            announce,
            client,
            server,
            messages,
            secrets,
        })
    }
}

/// The keys each section of `config.ini` takes; `None` for an unknown section.
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "main" => MainConfig::KEYS,
        "bgp" => BgpConfig::KEYS,
        "bfd" => BfdConfig::KEYS,
        "announce" => AnnounceConfig::KEYS,
        "client" => ClientConfig::KEYS,
        "server" => ServerConfig::KEYS,
        "messages" => MessagesConfig::KEYS,
        s if s.starts_with("bgp.peer.") => PeerConfig::KEYS,
        _ => return None,
    })
}

/// Key prefixes a section of `config.ini` takes besides its fixed keys (`execute.NAME`).
fn section_prefixes(section: &str) -> &'static [&'static str] {
    match section {
        "client" => ClientConfig::PREFIXES,
        _ => &[],
    }
}

/// Reads `[secret]` and applies `bgp_password.NAME` to the peers.
fn parse_secrets(
    text: &str,
    file: &Path,
    main: &MainConfig,
    peers: &mut [PeerConfig],
) -> Result<Secrets, ConfigError> {
    let ini = Ini::parse(text, file)?;
    let mut secrets = Secrets {
        file: file.to_path_buf(),
        ..Secrets::default()
    };
    for section in &ini.sections {
        if section.name != "secret" {
            return Err(ConfigError::UnknownSection {
                file: file.to_path_buf(),
                line: section.line,
                section: section.name.clone(),
            });
        }
        let mut f = Fields::new(file, section);
        for entry in &section.entries {
            if entry.value.is_empty() {
                f.entry(&entry.key);
                continue;
            }
            let refuse = |reason: String| Invalid::Refused(Cow::Owned(reason));
            match entry.key.as_str() {
                "amqp_password" => {
                    f.entry(&entry.key);
                    if main.amqp_server.user().is_none() {
                        return Err(f.error(
                            entry,
                            refuse(
                                "amqp_server has no user name to go with it; write \
                                 amqp://USER@host/ in config.ini"
                                    .to_owned(),
                            ),
                            true,
                        ));
                    }
                    secrets.amqp_password = Some(SecretString::new(entry.value.as_str()));
                }
                "node_key" => {
                    f.entry(&entry.key);
                    if !secret::looks_like_key(&entry.value) {
                        return Err(f.error(
                            entry,
                            Invalid::Expected(Cow::Borrowed(
                                "44 characters of base64, as `ipvs-sync keygen` writes",
                            )),
                            true,
                        ));
                    }
                    secrets.node_key = Some(SecretString::new(entry.value.as_str()));
                }
                "message_key" => {
                    f.entry(&entry.key);
                    return Err(f.error(
                        entry,
                        Invalid::Refused(Cow::Borrowed(MESSAGE_KEY_GONE)),
                        true,
                    ));
                }
                key => {
                    let Some(name) = key.strip_prefix("bgp_password.") else {
                        continue; // left unused: reported by finish()
                    };
                    f.entry(key);
                    let Some(peer) = peers.iter_mut().find(|p| p.name == name) else {
                        return Err(f.error(
                            entry,
                            refuse(format!("there is no [bgp.peer.{name}] in config.ini")),
                            true,
                        ));
                    };
                    if peer.password.is_some() {
                        return Err(f.error(
                            entry,
                            refuse(format!(
                                "[bgp.peer.{name}] in config.ini sets a password too; keep one"
                            )),
                            true,
                        ));
                    }
                    let key =
                        bgp::tcp_md5_key(&entry.value).map_err(|i| f.error(entry, i, true))?;
                    peer.password = Some(key.clone());
                    secrets.bgp_passwords.insert(name.to_owned(), key);
                }
            }
        }
        f.finish()?;
    }
    Ok(secrets)
}

/// Reads a file of at most [`MAX_FILE_BYTES`]; `None` when it does not exist.
fn read_limited(path: &Path) -> Result<Option<String>, ConfigError> {
    let io_err = |source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
        Ok(file) => read_open(file, path).map(Some),
    }
}

fn read_open(file: File, path: &Path) -> Result<String, ConfigError> {
    let mut text = String::new();
    let n = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
    if n as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::Io {
            file: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "larger than 4 MiB"),
        });
    }
    Ok(text)
}

/// Opens `secret.ini`, checks the mode of the opened file (no race with a swap of the
/// path), then reads it. `None` when absent.
fn read_secret_file(path: &Path) -> Result<Option<String>, ConfigError> {
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                file: path.to_path_buf(),
                source,
            })
        }
        Ok(f) => f,
    };
    let meta = file.metadata().map_err(|source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(ConfigError::SecretPermissions {
            file: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    if let Err(reason) = secret::check_owner_and_mode(meta.uid(), mode, 0o077) {
        return Err(ConfigError::SecretOwner {
            file: path.to_path_buf(),
            reason,
        });
    }
    read_open(file, path).map(Some)
}
