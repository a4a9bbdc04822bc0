//! One typed description of a lab, and every file its nodes read.
//!
//! ```text
//!  LabSpec ──files()──▶ arbiter/config.ini, secret.ini         structural keys, then the lab's
//!     │                                                         `config`/`secret`, then the node's
//!     │                 arbiter/keepalived/keepalived.conf
//!     │                 arbiter/keepalived/lbs/<lb>/<group>/vips.conf   one virtual_server per
//!     │                                                         (VIP, port), from `vips`
//!     │                 arbiter/balancers/<lb>.pub              each balancer's public key
//!     │                 <lb>/config.ini, secret.ini             [bgp] and a [bgp.peer.*] per peer;
//!     │                                                         the arbiter's name and public key
//!     │                 <router>/gobgpd.toml                    each router's GobgpConfig
//!     └─desc_files()──▶ desc/keepalived-<vip>-desc.json        "announce", as `quorum up` leaves it
//! ```
//!
//! The two topologies build one: [`crate::bridge`] (the demo's LAN, written for
//! `netns-lab/lab` by the `lab-gen` binary) and [`crate::fleet`] (a veth fleet per test).
//! A config key the lab does not model is a plain [`Ini`] key: in [`LabSpec::config`] for
//! every daemon, in [`Arbiter::config`] or [`Balancer::config`] for one node
//! (`b.config.set("announce", "withdraw_grace", 1)`), likewise for `secret.ini`.
//!
//! Every node has a key of its own ([`LabKey`], `node_key` in its `secret.ini`): the
//! arbiter finds each balancer's public key in `balancer_keys_dir` (`arbiter/balancers/`),
//! each balancer pins the arbiter (`arbiter_name`, `arbiter_public_key`).

mod keepalived;
mod keys;

use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{GobgpConfig, Ini};

pub use keepalived::{desc_announce, Proto, Vip};
pub use keys::LabKey;

/// The arbiter's name (`hostname`; the balancers' `arbiter_name`).
pub const ARBITER_NAME: &str = "arbiter";

/// A whole lab: its daemons' shared keys, the arbiter, the balancers, the routers and the
/// VIPs the arbiter's keepalived knows.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Keys of every daemon's `config.ini` (`amqp_server`, intervals, `[messages]` …).
    pub config: Ini,
    /// Keys of every daemon's `secret.ini` (`amqp_password` …).
    pub secret: Ini,
    /// The arbiter.
    pub arbiter: Arbiter,
    /// The balancers.
    pub balancers: Vec<Balancer>,
    /// The routers (gobgpd).
    pub routers: Vec<Router>,
    /// The VIPs of the keepalived configs: which balancers serve them, on which ports.
    pub vips: Vec<Vip>,
}

/// The arbiter (`ipvs-sync server`).
#[derive(Debug, Clone)]
pub struct Arbiter {
    /// Its directory: `config.ini`, `secret.ini`, `keepalived/`, the mapping JSON, the
    /// quorum socket.
    pub dir: PathBuf,
    /// Where the desc files are (`vip_description_filepath`).
    pub desc_dir: PathBuf,
    /// The `ipvs-sync` binary keepalived's quorum handlers run; `None` writes
    /// virtual servers without handlers.
    pub quorum_bin: Option<PathBuf>,
    /// Its own keys (`http_listen`, `[server] startup_hold` …), over [`LabSpec::config`].
    pub config: Ini,
    /// Its own `secret.ini` keys, over [`LabSpec::secret`].
    pub secret: Ini,
    /// Its node key.
    pub key: LabKey,
}

/// A balancer (`ipvs-sync client`).
#[derive(Debug, Clone)]
pub struct Balancer {
    /// Its hostname (and AMQP routing key): `lb1`.
    pub name: String,
    /// Its directory: `config.ini`, `secret.ini`, `sync/`.
    pub dir: PathBuf,
    /// `[bgp] local_as`.
    pub local_as: u32,
    /// `[bgp] router_id`.
    pub router_id: IpAddr,
    /// One `[bgp.peer.NAME]` each.
    pub peers: Vec<Peer>,
    /// Its own keys (`http_listen`, `[bgp] hold_time`, `[announce] interface` …), over
    /// [`LabSpec::config`].
    pub config: Ini,
    /// Its own `secret.ini` keys, over [`LabSpec::secret`].
    pub secret: Ini,
    /// Its node key.
    pub key: LabKey,
}

/// A balancer's BGP peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The section name: `[bgp.peer.NAME]`.
    pub name: String,
    /// The router's address.
    pub address: IpAddr,
    /// The router's AS.
    pub remote_as: u32,
    /// TCP-MD5 key, written to `secret.ini` as `bgp_password.NAME`.
    pub md5: Option<String>,
}

/// A router: its gobgpd configuration, written to `DIR/gobgpd.toml`.
#[derive(Debug, Clone)]
pub struct Router {
    /// Its name: `r1`.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub gobgpd: GobgpConfig,
}

/// One file of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabFile {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds.
    pub text: String,
    /// Mode 600 (`secret.ini`) instead of 644.
    pub private: bool,
}

impl LabSpec {
    /// The arbiter's `config.ini`.
    pub fn arbiter_config(&self) -> Ini {
        let a = &self.arbiter;
        let mut ini = Ini::new();
        ini.header("generated by labkit: arbiter");
        ini.section("main").section("server").section("messages");
        ini.set("main", "hostname", ARBITER_NAME)
            .set(
                "main",
                "control_socket",
                a.dir.join("control.sock").display(),
            )
            .set("main", "state_dir", a.dir.join("state").display())
            .set(
                "main",
                "service_mapping_wildcard",
                self.keepalived_dir().join("lbs/*/*/*.conf").display(),
            )
            .set(
                "main",
                "service_mapping_config",
                a.dir.join("svc_mapping.json").display(),
            )
            .set("main", "export_service_mapping_wildcard_to_config", true)
            .set(
                "main",
                "vip_description_filepath",
                a.desc_dir.join("keepalived-{vip}-desc.json").display(),
            )
            .set("server", "quorum_socket", self.quorum_socket().display())
            .set(
                "server",
                "balancer_keys_dir",
                self.balancer_keys_dir().display(),
            );
        ini.merge(&self.config).merge(&a.config);
        ini
    }

    /// Balancer `b`'s `config.ini`.
    pub fn balancer_config(&self, b: &Balancer) -> Ini {
        let mut ini = Ini::new();
        ini.header(&format!("generated by labkit: {}", b.name));
        ini.section("main").section("bgp");
        for p in &b.peers {
            ini.section(&peer_section(p));
        }
        ini.section("announce")
            .section("client")
            .section("messages");
        ini.set("main", "hostname", &b.name)
            .set(
                "main",
                "control_socket",
                b.dir.join("control.sock").display(),
            )
            .set("main", "state_dir", b.dir.join("state").display())
            .set("main", "arbiter_name", ARBITER_NAME)
            .set("main", "arbiter_public_key", self.arbiter.key.public())
            .set("bgp", "local_as", b.local_as)
            .set("bgp", "router_id", b.router_id);
        for p in &b.peers {
            ini.set(&peer_section(p), "address", p.address).set(
                &peer_section(p),
                "remote_as",
                p.remote_as,
            );
            if p.md5.is_some() {
                ini.comment(
                    &peer_section(p),
                    &format!("TCP-MD5 key: bgp_password.{} in secret.ini", p.name),
                );
            }
        }
        ini.set("client", "sync_dirs", b.dir.join("sync").display())
            .comment(
                "client",
                "no keepalived configs on lab balancers: no fallback (a test that wants one sets it)",
            )
            .set("client", "fallback_after", 0);
        ini.merge(&self.config).merge(&b.config);
        ini
    }

    /// The arbiter's `secret.ini`.
    pub fn arbiter_secret(&self) -> Ini {
        let mut ini = Ini::new();
        ini.section("secret");
        ini.set("secret", "node_key", self.arbiter.key.to_text());
        ini.merge(&self.secret).merge(&self.arbiter.secret);
        ini
    }

    /// Balancer `b`'s `secret.ini`: its node key, the lab's secrets and its peers' TCP-MD5
    /// keys.
    pub fn balancer_secret(&self, b: &Balancer) -> Ini {
        let mut ini = Ini::new();
        ini.section("secret");
        ini.set("secret", "node_key", b.key.to_text());
        ini.merge(&self.secret);
        for p in &b.peers {
            ini.set_opt(
                "secret",
                &format!("bgp_password.{}", p.name),
                p.md5.as_ref(),
            );
        }
        ini.merge(&b.secret);
        ini
    }

    /// The arbiter's keepalived directory: `keepalived.conf` and `lbs/`.
    pub fn keepalived_dir(&self) -> PathBuf {
        self.arbiter.dir.join("keepalived")
    }

    /// The arbiter's `[server] balancer_keys_dir`: `HOSTNAME.pub` per balancer.
    pub fn balancer_keys_dir(&self) -> PathBuf {
        self.arbiter.dir.join("balancers")
    }

    /// The balancers' public keys, as the arbiter reads them.
    pub fn balancer_key_files(&self) -> Vec<LabFile> {
        self.balancers
            .iter()
            .map(|b| LabFile {
                path: self.balancer_keys_dir().join(format!("{}.pub", b.name)),
                text: format!("{}\n", b.key.public()),
                private: false,
            })
            .collect()
    }

    /// The arbiter's `[server] quorum_socket`.
    pub fn quorum_socket(&self) -> PathBuf {
        self.arbiter.dir.join("quorum.sock")
    }

    /// The desc file of `vip`.
    pub fn desc_path(&self, vip: &IpAddr) -> PathBuf {
        self.arbiter
            .desc_dir
            .join(format!("keepalived-{vip}-desc.json"))
    }

    /// A balancer by name.
    pub fn balancer(&self, name: &str) -> Option<&Balancer> {
        self.balancers.iter().find(|b| b.name == name)
    }

    /// The keepalived tree: `keepalived.conf` including one `lbs/<lb>/<group>/vips.conf`
    /// per balancer and group.
    pub fn keepalived_files(&self) -> Vec<LabFile> {
        let handler = self
            .arbiter
            .quorum_bin
            .as_ref()
            .map(|bin| (bin.as_path(), self.arbiter.dir.join("config.ini")));
        let handler = handler.as_ref().map(|(b, c)| (*b, c.as_path()));
        keepalived::files(&self.keepalived_dir(), &self.vips, handler)
    }

    /// The desc files of `vips` saying announce with local-preference `lp` (every port of
    /// the VIP up), as `ipvs-sync quorum up` leaves them.
    pub fn desc_files(&self, vips: &[IpAddr], lp: u32) -> Vec<LabFile> {
        vips.iter()
            .map(|vip| {
                // A VIP may be listed once per protocol.
                let ports: Vec<u16> = self
                    .vips
                    .iter()
                    .filter(|v| v.addr == *vip)
                    .flat_map(|v| v.ports.iter().copied())
                    .collect();
                LabFile {
                    path: self.desc_path(vip),
                    text: desc_announce(&ports, lp),
                    private: false,
                }
            })
            .collect()
    }

    /// Every file of the lab but the desc files.
    pub fn files(&self) -> Vec<LabFile> {
        let a = &self.arbiter;
        let mut out = vec![
            LabFile {
                path: a.dir.join("config.ini"),
                text: self.arbiter_config().to_string(),
                private: false,
            },
            LabFile {
                path: a.dir.join("secret.ini"),
                text: self.arbiter_secret().to_string(),
                private: true,
            },
        ];
        out.extend(self.keepalived_files());
        out.extend(self.balancer_key_files());
        for b in &self.balancers {
            out.push(LabFile {
                path: b.dir.join("config.ini"),
                text: self.balancer_config(b).to_string(),
                private: false,
            });
            out.push(LabFile {
                path: b.dir.join("secret.ini"),
                text: self.balancer_secret(b).to_string(),
                private: true,
            });
        }
        for r in &self.routers {
            out.push(LabFile {
                path: r.dir.join("gobgpd.toml"),
                text: r.gobgpd.to_toml(),
                private: false,
            });
        }
        out
    }

    /// Writes every file (and the desc and sync directories); the keepalived tree is
    /// replaced, so a VIP taken out of [`LabSpec::vips`] is gone from it.
    pub fn write(&self) -> io::Result<()> {
        self.write_keepalived()?;
        let keepalived = self.keepalived_dir();
        for f in self.files() {
            if !f.path.starts_with(&keepalived) {
                write_file(&f)?;
            }
        }
        std::fs::create_dir_all(&self.arbiter.desc_dir)?;
        for b in &self.balancers {
            std::fs::create_dir_all(b.dir.join("sync"))?;
        }
        Ok(())
    }

    /// Writes the arbiter's `config.ini` again (after a change of [`Arbiter::config`]).
    pub fn write_arbiter_config(&self) -> io::Result<()> {
        write_file(&LabFile {
            path: self.arbiter.dir.join("config.ini"),
            text: self.arbiter_config().to_string(),
            private: false,
        })
    }

    /// Replaces the keepalived tree with [`LabSpec::keepalived_files`] (after a change
    /// of [`LabSpec::vips`]; the arbiter reads it at its next mapping rebuild or SIGHUP).
    pub fn write_keepalived(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.keepalived_dir().join("lbs")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.keepalived_files().iter().try_for_each(write_file)
    }

    /// Writes [`LabSpec::desc_files`].
    pub fn write_desc_announce(&self, vips: &[IpAddr], lp: u32) -> io::Result<()> {
        self.desc_files(vips, lp).iter().try_for_each(write_file)
    }
}

/// `bgp.peer.NAME`.
fn peer_section(p: &Peer) -> String {
    format!("bgp.peer.{}", p.name)
}

/// Writes one file, creating its directory; a private one is mode 600 from the start.
pub fn write_file(f: &LabFile) -> io::Result<()> {
    if let Some(dir) = f.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mode = if f.private { 0o600 } else { 0o644 };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(mode);
    let mut file = opts
        .open(&f.path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.path.display())))?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    io::Write::write_all(&mut file, f.text.as_bytes())
}

/// Reads a file of the lab, with its path in the error.
pub fn read_file(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
