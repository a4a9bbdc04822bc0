//! 100 concurrent quorum processes over 10 VIPs: no count lost, no torn file seen.
//!
//! Each call is a real `ipvs-sync quorum up|down ARG` process with its own config (desc
//! files in a temp dir, keepalived configs naming ports 80 and 443 for every VIP, a stand-in
//! arbiter socket that takes every hand-off). Every (VIP, port) pair is reported exactly once, so the final
//! state does not depend on the order the calls win the lock, and the concurrent
//! result must equal running the same calls one after the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use announce::desc::{Desc, PortState};
use labkit::spec::{Arbiter, LabSpec, Vip};
use labkit::Ini;

/// The binary under test.
fn quorum_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipvs-sync"))
}

/// Writes the arbiter's `config.ini` (and the keepalived configs it points at, naming
/// ports 80 and 443 of every VIP for lb1) for desc files in `dir`; returns the config
/// path. Everything but the desc files lives in a sibling directory, the quorum socket
/// (`quorum.sock`, see [`FakeArbiter`]) too.
fn config_for(dir: &Path, vips: &[IpAddr]) -> PathBuf {
    let etc = dir.with_extension("etc");
    let spec = LabSpec {
        config: Ini::with("main", "amqp_server", "amqp://ipvs@127.0.0.1:5672/"),
        secret: Ini::new(),
        arbiter: Arbiter {
            dir: etc.clone(),
            desc_dir: dir.to_owned(),
            quorum_bin: None,
            config: Ini::new(),
            secret: Ini::new(),
            key: labkit::spec::LabKey::generate().unwrap(),
        },
        balancers: Vec::new(),
        routers: Vec::new(),
        vips: vips
            .iter()
            .map(|v| Vip::new(*v, &["lb1"]).ports(&[80, 443]))
            .collect(),
    };
    spec.write().unwrap();
    etc.join("config.ini")
}

/// A stand-in arbiter on the quorum socket of the config in `etc`: answers `ok` to every
/// hand-off until dropped (the handler's own path to the broker is tested elsewhere).
struct FakeArbiter {
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl FakeArbiter {
    fn start(dir: &Path) -> FakeArbiter {
        use std::io::{BufRead, BufReader, Write};
        let path = dir.with_extension("etc").join("quorum.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut line = String::new();
                        let _ = BufReader::new(&c).read_line(&mut line);
                        let _ = (&c).write_all(b"ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        FakeArbiter { stop, path }
    }
}

impl Drop for FakeArbiter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Debug, Clone)]
struct Call {
    vip: IpAddr,
    up: bool,
    arg: String,
}

fn calls(vips: &[IpAddr], per_vip: u16, seed: u64) -> Vec<Call> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for (i, vip) in vips.iter().enumerate() {
        let lp = 100 + i;
        for n in 0..per_vip {
            // Ports 80 and 443 are known to the mapping; the rest appear only in calls.
            let port = match n {
                0 => 80,
                1 => 443,
                n => 1000 + n,
            };
            let up = !rng.next().is_multiple_of(4);
            // Only some calls carry the local-preference; all carry the same one.
            let arg = if rng.next().is_multiple_of(2) {
                format!("{vip},b-{lp},{port}")
            } else {
                format!("{vip},,{port}")
            };
            out.push(Call { vip: *vip, up, arg });
        }
    }
    // Interleave VIPs so concurrent calls hit different and the same files at once.
    for i in (1..out.len()).rev() {
        let j = usize::try_from(rng.next() % (i as u64 + 1)).unwrap();
        out.swap(i, j);
    }
    out
}

fn spawn(bin: &Path, cfg: &Path, call: &Call) -> Child {
    Command::new(bin)
        .arg("-c")
        .arg(cfg)
        .args(["--log-level", "error", "quorum"])
        .arg(if call.up { "up" } else { "down" })
        .arg(&call.arg)
        .spawn()
        .unwrap()
}

fn desc_path(dir: &Path, vip: &IpAddr) -> PathBuf {
    dir.join(format!("keepalived-{vip}-desc.json"))
}

fn run_concurrent_and_compare(vips: &[IpAddr], per_vip: u16) {
    let bin = quorum_bin();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let calls = calls(vips, per_vip, seed);
    assert_eq!(calls.len(), 100);

    let concurrent = tempfile::tempdir().unwrap();
    let sequential = tempfile::tempdir().unwrap();
    let concurrent_cfg = config_for(concurrent.path(), vips);
    let sequential_cfg = config_for(sequential.path(), vips);
    let _arbiters = (
        FakeArbiter::start(concurrent.path()),
        FakeArbiter::start(sequential.path()),
    );

    // A reader that loops over every desc file while the writers run.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let paths: Vec<PathBuf> = vips
            .iter()
            .map(|v| desc_path(concurrent.path(), v))
            .collect();
        std::thread::spawn(move || {
            let (mut ok, mut missing) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for p in &paths {
                    match Desc::read(p) {
                        Ok(d) => {
                            assert!(d.active <= d.total);
                            assert_eq!(d.announce, d.active == d.total, "{d:?}");
                            ok += 1;
                        }
                        Err(e) if e.is_not_found() => missing += 1,
                        Err(e) => panic!("reader saw a bad desc file: {e}"),
                    }
                }
            }
            (ok, missing)
        })
    };

    let children: Vec<Child> = calls
        .iter()
        .map(|c| spawn(&bin, &concurrent_cfg, c))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads_ok, _) = reader.join().unwrap();
    assert!(reads_ok > 0, "the reader never saw a file");

    for c in &calls {
        assert!(spawn(&bin, &sequential_cfg, c).wait().unwrap().success());
    }

    let known: BTreeSet<u16> = BTreeSet::from([80, 443]);
    for (i, vip) in vips.iter().enumerate() {
        let got = std::fs::read(desc_path(concurrent.path(), vip)).unwrap();
        let want = std::fs::read(desc_path(sequential.path(), vip)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{vip}: concurrent result differs from sequential"
        );
        // And both equal the model: every reported port, its last (only) state.
        let d = Desc::parse(&got, Path::new("x")).unwrap();
        let mine: Vec<&Call> = calls.iter().filter(|c| c.vip == *vip).collect();
        let ups = mine.iter().filter(|c| c.up).count() as u32;
        let total = (mine.len() + known.iter().filter(|p| !d.ports.contains_key(p)).count()) as u32;
        assert_eq!(d.ports.len(), mine.len(), "{vip}: a port was lost");
        assert_eq!((d.active, d.total), (ups, total), "{vip}");
        assert_eq!(d.announce, ups == total);
        assert_eq!(
            d.ports.values().filter(|s| **s == PortState::Up).count() as u32,
            ups
        );
        let lp_given = mine.iter().any(|c| c.arg.contains(",b-"));
        let want_lp = if lp_given { 100 + i as u32 } else { 100 };
        assert_eq!(d.local_preference, want_lp, "{vip}");
    }
    // Nothing but desc and lock files (and the known-ports cache) is left behind: no
    // stray temp files.
    let names: Vec<String> = std::fs::read_dir(concurrent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ipvs-sync-known-ports"))
        .collect();
    assert_eq!(names.len(), 2 * vips.len(), "{names:?}");
}

#[test]
fn hundred_processes_over_ten_vips() {
    let vips: Vec<IpAddr> = (1..=5u8)
        .map(|n| IpAddr::from([192, 0, 2, n]))
        .chain((1..=5u16).map(|n| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, n])))
        .collect();
    run_concurrent_and_compare(&vips, 10);
}

#[test]
fn hundred_processes_on_one_vip() {
    run_concurrent_and_compare(&["203.0.113.10".parse().unwrap()], 100);
}
