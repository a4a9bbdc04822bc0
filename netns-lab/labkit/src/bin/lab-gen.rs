//! `lab-gen`: writes the files of the demo's lab (`netns-lab/lab gen`) from
//! [`labkit::bridge::spec`], the builder the Rust tests use too.
//!
//! ```text
//! lab-gen --run DIR --bin IPVS_SYNC [--ipvs true|false] [--interface NAME] [--brokers 1|3]
//! ```
//!
//! Writes `DIR/NODE/config.ini` + `secret.ini` (mode 600) of the arbiter and each balancer,
//! the arbiter's keepalived tree, each router's `gobgpd.toml`, `broker/amqp_password` and
//! `topology.sh` (the nodes and addresses for the script). Secrets are made once, in
//! `DIR/secrets/`, and kept; everything else is rewritten. Needs no root.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use labkit::bridge::{self, BridgeOpts};
use labkit::spec::{write_file, LabFile, LabKey};

type BoxError = Box<dyn std::error::Error>;

const USAGE: &str = "usage: lab-gen --run DIR --bin IPVS_SYNC [--ipvs true|false] \
                     [--interface NAME] [--brokers 1|3]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-gen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), BoxError> {
    let mut run = None;
    let mut bin = None;
    let mut ipvs = false;
    let mut interface = "lo".to_owned();
    let mut brokers = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--run" => run = Some(PathBuf::from(value()?)),
            "--bin" => bin = Some(PathBuf::from(value()?)),
            "--ipvs" => {
                ipvs = match value()?.as_str() {
                    "true" => true,
                    "false" => false,
                    v => return Err(format!("--ipvs {v}: true or false").into()),
                }
            }
            "--interface" => interface = value()?,
            "--brokers" => {
                brokers = match value()?.as_str() {
                    "1" => 1,
                    "3" => 3,
                    v => return Err(format!("--brokers {v}: 1 or 3").into()),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a}; {USAGE}").into()),
        }
    }
    let run = run.ok_or(USAGE)?;
    let bin = bin.ok_or(USAGE)?;
    std::fs::create_dir_all(run.join("logs"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run.join("secrets"))?;
    let opts = BridgeOpts {
        amqp_password: secret(&run, "amqp_password", 16)?,
        arbiter_key: node_key(&run, "arbiter")?,
        balancer_keys: [
            node_key(&run, bridge::BALANCERS[0])?,
            node_key(&run, bridge::BALANCERS[1])?,
            node_key(&run, bridge::BALANCERS[2])?,
        ],
        md5_r1: secret(&run, "bgp_md5_r1", 16)?,
        run: run.clone(),
        bin,
        ipvs,
        interface,
        brokers,
    };
    let spec = bridge::spec(&opts);
    spec.write()?;
    // The broker's own copy, for its config (netns-lab/lib/rabbit.sh).
    write_file(&LabFile {
        path: run.join("broker/amqp_password"),
        text: opts.amqp_password.clone(),
        private: true,
    })?;
    write_file(&LabFile {
        path: bridge::topology_path(&run),
        text: bridge::topology_sh(brokers),
        private: false,
    })?;
    Ok(())
}

/// A random secret of `bytes` bytes as hex, made once and kept in `RUN/secrets/NAME`.
fn secret(run: &Path, name: &str, bytes: usize) -> Result<String, BoxError> {
    kept(run, name, || {
        let mut raw = vec![0u8; bytes];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
    })
}

/// Node `node`'s key, made once and kept in `RUN/secrets/node_key_NODE`.
fn node_key(run: &Path, node: &str) -> Result<LabKey, BoxError> {
    let text = kept(run, &format!("node_key_{node}"), || {
        Ok(LabKey::generate()?.to_text())
    })?;
    Ok(LabKey::from_text(&text)?)
}

/// The secret kept in `RUN/secrets/NAME`, or a new one from `make`, kept there (mode 600).
fn kept(
    run: &Path,
    name: &str,
    make: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, BoxError> {
    let path = run.join("secrets").join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    }
    let text = make()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(text)
}
