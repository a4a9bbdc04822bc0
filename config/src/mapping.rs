//! The service mapping: which balancer serves which VIPs (and ports).
//!
//! Built from the keepalived configs matched by `service_mapping_wildcard`
//! (`/etc/keepalived/lbs/<balancer>/*/*.conf`; see [`MappingWildcard`] for which path
//! component names the balancer) and exchanged as JSON in `service_mapping_config`:
//!
//! ```json
//! {"lb1.example.net": ["141.8.146.159", "2a02:6b8::2:105"]}
//! ```
//!
//! Per balancer, every `virtual_server` of its files (includes followed) adds its VIP and
//! port; `virtual_server group NAME` adds every address and port of the
//! `virtual_server_group NAME` defined in any file of the same balancer. Firewall-mark
//! services count as port 0 and take their VIP from the service's `quorum_up`/
//! `quorum_down` argument `VIP,b-LP,PORT`; those without one are not mapped and are
//! listed in [`MappingReport::skipped`] for the caller to log. The mark goes with that VIP
//! ([`MappingReport::fwmarks`]): a balancer serving the VIP mirrors the arbiter's fwmark
//! services of that mark. A mark can go with one VIP only: the first file (in path order)
//! that names it wins, and a later one naming another VIP is listed in `skipped`. In the
//! JSON form the marks are the entry `"@fwmarks": {"7": "198.51.100.7"}` (no hostname
//! has an `@`); a JSON mapping without it mirrors no fwmark service.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keepalived::{
    self, Group, GroupMember, KeepalivedError, Services, VirtualServer, VirtualServerAddr,
};
use crate::paths::MappingWildcard;

/// Ports of each VIP of one balancer (port 0 = firewall-mark / all ports).
pub type VipPorts = BTreeMap<IpAddr, BTreeSet<u16>>;
/// Balancer → VIP → ports.
pub type PortMapping = BTreeMap<String, VipPorts>;
/// Balancer → VIPs: the JSON form.
pub type VipMapping = BTreeMap<String, BTreeSet<IpAddr>>;
/// Firewall mark → the VIP its `virtual_server fwmark N` names in `quorum_up`/`quorum_down`:
/// the fwmark services of that mark are mirrored with that VIP.
pub type FwmarkVips = BTreeMap<u32, IpAddr>;

/// Most threads [`build`] parses files on.
const MAX_THREADS: usize = 8;
/// Fewer files than this per thread are not worth a thread.
const MIN_FILES_PER_THREAD: usize = 64;

/// Largest mapping JSON read.
const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;

/// Why a mapping could not be built, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// A keepalived file is unreadable or malformed.
    #[error(transparent)]
    Keepalived(#[from] KeepalivedError),
    /// The wildcard could not be expanded.
    #[error("{pattern}: {reason}")]
    Glob {
        /// The pattern.
        pattern: String,
        /// What went wrong.
        reason: String,
    },
    /// The wildcard matched no file at all: more likely a missing mount or a wrong
    /// pattern than a fleet without services, so no (empty) mapping is produced.
    #[error("{pattern}: matches no file; not replacing the mapping with an empty one")]
    NoFiles {
        /// The pattern.
        pattern: String,
    },
    /// A file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `virtual_server group NAME` names a group no file of the balancer defines.
    #[error("{file}:{line}: virtual_server group {name}: no virtual_server_group {name} in the configs of {balancer}")]
    UnknownGroup {
        /// File of the `virtual_server`.
        file: PathBuf,
        /// Its line.
        line: usize,
        /// The group name.
        name: String,
        /// The balancer.
        balancer: String,
    },
    /// Two different `virtual_server_group` blocks of one balancer share a name.
    #[error("{file}:{line}: virtual_server_group {name} is already defined at {first_file}:{first_line}")]
    DuplicateGroup {
        /// File of the second definition.
        file: PathBuf,
        /// Its line.
        line: usize,
        /// The group name.
        name: String,
        /// File of the first definition.
        first_file: PathBuf,
        /// Its line.
        first_line: usize,
    },
    /// The mapping JSON does not parse (serde_json's message has line and column).
    #[error("{file}: bad service mapping JSON: {source}")]
    Json {
        /// The file.
        file: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An `@fwmarks` entry of the mapping JSON is not `"MARK": "VIP"` (mark 1-4294967295).
    #[error("{file}: @fwmarks: '{mark}': '{vip}' is not a firewall mark and a VIP")]
    BadFwmark {
        /// The file.
        file: PathBuf,
        /// The key.
        mark: String,
        /// The value.
        vip: String,
    },
    /// A VIP in the mapping JSON is not an IP address.
    #[error("{file}: balancer {balancer}: '{value}' is not an IP address")]
    BadVip {
        /// The file.
        file: PathBuf,
        /// The balancer whose list holds it.
        balancer: String,
        /// The value.
        value: String,
    },
}

/// A service that could not be mapped (a firewall mark without a VIP); not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The balancer.
    pub balancer: String,
    /// File of the `virtual_server`.
    pub file: PathBuf,
    /// Its line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// The result of [`build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingReport {
    /// Balancer → VIP → ports.
    pub ports: PortMapping,
    /// Services left out.
    pub skipped: Vec<Skipped>,
    /// How many files the wildcard matched.
    pub files: usize,
    /// Firewall mark → its VIP, across every balancer.
    pub fwmarks: FwmarkVips,
}

impl MappingReport {
    /// Balancer → VIPs.
    pub fn vips(&self) -> VipMapping {
        flatten(&self.ports)
    }

    /// The whole mapping: VIPs and firewall marks.
    pub fn mapping(&self) -> ServiceMapping {
        ServiceMapping {
            vips: self.vips(),
            fwmarks: self.fwmarks.clone(),
        }
    }
}

/// Drops the ports: balancer → VIPs.
pub fn flatten(ports: &PortMapping) -> VipMapping {
    ports
        .iter()
        .map(|(b, vips)| (b.clone(), vips.keys().copied().collect()))
        .collect()
}

/// Parses every file `wildcard` matches (with includes) into the mapping. Any unreadable
/// or malformed file, or no file at all ([`MappingError::NoFiles`]), fails the whole
/// build, so a caller keeps its previous mapping rather than publish one with VIPs
/// missing. Log [`MappingReport::skipped`].
pub fn build(wildcard: &MappingWildcard) -> Result<MappingReport, MappingError> {
    let glob_err = |reason: String| MappingError::Glob {
        pattern: wildcard.pattern().to_owned(),
        reason,
    };
    let paths = glob::glob(wildcard.pattern()).map_err(|e| glob_err(e.to_string()))?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| MappingError::Io {
            file: e.path().to_path_buf(),
            source: io::Error::from(e),
        })?;
        if !path.is_file() {
            continue;
        }
        if let Some(balancer) = wildcard.balancer_of(&path) {
            files.push((balancer, path));
        }
    }
    // Balancer → (virtual servers, groups) across all its files, merged in path order so
    // the result and the first error reported do not depend on thread timing.
    let mut per_balancer: BTreeMap<String, (Vec<VirtualServer>, Vec<Group>)> = BTreeMap::new();
    let mut report = MappingReport {
        files: files.len(),
        ..MappingReport::default()
    };
    for ((balancer, _), services) in files.iter().zip(parse_all(&files)) {
        let services = services?;
        let slot = per_balancer.entry(balancer.clone()).or_default();
        slot.0.extend(services.virtual_servers);
        slot.1.extend(services.groups);
    }
    if report.files == 0 {
        return Err(MappingError::NoFiles {
            pattern: wildcard.pattern().to_owned(),
        });
    }
    for (balancer, (servers, groups)) in per_balancer {
        let vips = resolve(
            &balancer,
            &servers,
            &groups,
            &mut report.skipped,
            &mut report.fwmarks,
        )?;
        report.ports.insert(balancer, vips);
    }
    Ok(report)
}

/// Parses `files` on up to [`MAX_THREADS`] threads; results in the order of `files`.
fn parse_all(files: &[(String, PathBuf)]) -> Vec<Result<Services, KeepalivedError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(files.len().div_ceil(MIN_FILES_PER_THREAD).max(1));
    if threads == 1 {
        return files
            .iter()
            .map(|(_, p)| keepalived::load_services(p))
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, p)| keepalived::load_services(p))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| {
                // A panicking parser thread is a bug; report it per file, do not abort.
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|(_, p)| {
                            Err(KeepalivedError::Io {
                                file: p.clone(),
                                source: io::Error::other("parser thread panicked"),
                            })
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// The VIPs and ports of one balancer's services; the fwmarks they name go into `marks`
/// unless a mark already goes with another VIP (then listed in `skipped`).
pub fn resolve(
    balancer: &str,
    servers: &[VirtualServer],
    groups: &[Group],
    skipped: &mut Vec<Skipped>,
    marks: &mut FwmarkVips,
) -> Result<VipPorts, MappingError> {
    let mut by_name: BTreeMap<&str, &Group> = BTreeMap::new();
    for g in groups {
        if let Some(first) = by_name.get(g.name.as_str()) {
            // The same block reached twice through includes is one definition.
            if first.file == g.file && first.line == g.line {
                continue;
            }
            return Err(MappingError::DuplicateGroup {
                file: g.file.to_path_buf(),
                line: g.line,
                name: g.name.clone(),
                first_file: first.file.to_path_buf(),
                first_line: first.line,
            });
        }
        by_name.insert(&g.name, g);
    }
    let mut vips = VipPorts::new();
    let skip = |file: &Arc<Path>, line: usize, reason: String| Skipped {
        balancer: balancer.to_owned(),
        file: file.to_path_buf(),
        line,
        reason,
    };
    for vs in servers {
        match &vs.addr {
            VirtualServerAddr::Ip { addr, port } => {
                vips.entry(*addr).or_default().insert(*port);
            }
            VirtualServerAddr::Fwmark { mark } => match vs.quorum_vip {
                Some(vip) => {
                    vips.entry(vip).or_default().insert(0);
                    if let Some(why) = claim(marks, *mark, vip) {
                        skipped.push(skip(&vs.file, vs.line, why));
                    }
                }
                None => skipped.push(skip(
                    &vs.file,
                    vs.line,
                    format!("fwmark {mark}: no quorum_up/quorum_down argument VIP,b-LP,PORT names its VIP"),
                )),
            },
            VirtualServerAddr::Group { name } => {
                let Some(group) = by_name.get(name.as_str()) else {
                    return Err(MappingError::UnknownGroup {
                        file: vs.file.to_path_buf(),
                        line: vs.line,
                        name: name.clone(),
                        balancer: balancer.to_owned(),
                    });
                };
                for m in &group.members {
                    match m {
                        GroupMember::Ip { port, .. } => {
                            for a in m.addresses() {
                                vips.entry(a).or_default().insert(*port);
                            }
                        }
                        GroupMember::Fwmark(mark) => match vs.quorum_vip {
                            Some(vip) => {
                                vips.entry(vip).or_default().insert(0);
                                if let Some(why) = claim(marks, *mark, vip) {
                                    skipped.push(skip(&group.file, group.line, why));
                                }
                            }
                            None => skipped.push(skip(
                                &group.file,
                                group.line,
                                format!(
                                    "group {name} fwmark {mark}: no quorum_up/quorum_down \
                                     argument VIP,b-LP,PORT in the virtual_server names its VIP"
                                ),
                            )),
                        },
                    }
                }
            }
        }
    }
    Ok(vips)
}

/// Gives `mark` to `vip` unless it goes with another VIP already: then why not.
fn claim(marks: &mut FwmarkVips, mark: u32, vip: IpAddr) -> Option<String> {
    match marks.get(&mark) {
        Some(first) if *first != vip => Some(format!(
            "fwmark {mark}: goes with VIP {first} already (an earlier file); its services are \
             not mirrored with {vip}"
        )),
        Some(_) => None,
        None => {
            marks.insert(mark, vip);
            None
        }
    }
}

/// A whole mapping: balancer → VIPs, and the VIP each firewall mark goes with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMapping {
    /// Balancer → VIPs.
    pub vips: VipMapping,
    /// Firewall mark → VIP.
    pub fwmarks: FwmarkVips,
}

/// The JSON key of the marks (no hostname has an `@`).
pub const FWMARKS_KEY: &str = "@fwmarks";

/// The JSON form: `{"balancer": ["VIP", …], "@fwmarks": {"MARK": "VIP"}}`, VIPs sorted (IPv4
/// first); `@fwmarks` only when there is a mark.
pub fn to_json(mapping: &ServiceMapping) -> String {
    let mut plain: BTreeMap<&str, serde_json::Value> = mapping
        .vips
        .iter()
        .map(|(b, vips)| {
            let list = vips.iter().map(|v| v.to_string().into()).collect();
            (b.as_str(), serde_json::Value::Array(list))
        })
        .collect();
    if !mapping.fwmarks.is_empty() {
        let marks = mapping
            .fwmarks
            .iter()
            .map(|(m, v)| (m.to_string(), v.to_string().into()))
            .collect();
        plain.insert(FWMARKS_KEY, serde_json::Value::Object(marks));
    }
    // Serializing maps of strings cannot fail; fall back to an empty object regardless.
    serde_json::to_string(&plain).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses the JSON form; `file` names the source in errors.
pub fn from_json(text: &str, file: &Path) -> Result<ServiceMapping, MappingError> {
    let json = |source| MappingError::Json {
        file: file.to_path_buf(),
        source,
    };
    let mut plain: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(json)?;
    let mut out = ServiceMapping::default();
    if let Some(marks) = plain.remove(FWMARKS_KEY) {
        let marks: BTreeMap<String, String> = serde_json::from_value(marks).map_err(json)?;
        for (mark, vip) in marks {
            let bad = || MappingError::BadFwmark {
                file: file.to_path_buf(),
                mark: mark.clone(),
                vip: vip.clone(),
            };
            let m: u32 = mark.trim().parse().map_err(|_| bad())?;
            let v: IpAddr = vip.trim().parse().map_err(|_| bad())?;
            if m == 0 {
                return Err(bad());
            }
            out.fwmarks.insert(m, v);
        }
    }
    for (balancer, list) in plain {
        let list: Vec<String> = serde_json::from_value(list).map_err(json)?;
        let mut vips = BTreeSet::new();
        for value in list {
            let vip = value.trim().parse().map_err(|_| MappingError::BadVip {
                file: file.to_path_buf(),
                balancer: balancer.clone(),
                value: value.clone(),
            })?;
            vips.insert(vip);
        }
        out.vips.insert(balancer, vips);
    }
    Ok(out)
}

/// Reads `service_mapping_config`.
pub fn read_json(path: &Path) -> Result<ServiceMapping, MappingError> {
    let io = |source| MappingError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    File::open(path)
        .map_err(io)?
        .take(MAX_JSON_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    from_json(&text, path)
}

/// Writes `service_mapping_config` atomically (see [`write_atomic`]).
pub fn write_json(path: &Path, mapping: &ServiceMapping) -> Result<(), MappingError> {
    let mut text = to_json(mapping);
    text.push('\n');
    write_atomic(path, text.as_bytes()).map_err(|source| MappingError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `bytes` so that readers see the old or the new file, never a part
/// (mode 0644; see [`crate::atomic_file`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic_file::replace(path, bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn json_round_trip_and_shape() {
        let mut m = VipMapping::new();
        m.insert(
            "lb1.example.net".into(),
            [ip("2a02:6b8::2:105"), ip("141.8.146.159")].into(),
        );
        m.insert("lb2".into(), BTreeSet::new());
        let mut m = ServiceMapping {
            vips: m,
            fwmarks: FwmarkVips::new(),
        };
        let text = to_json(&m);
        assert_eq!(
            text,
            r#"{"lb1.example.net":["141.8.146.159","2a02:6b8::2:105"],"lb2":[]}"#
        );
        assert_eq!(from_json(&text, Path::new("m.json")).unwrap(), m);
        m.fwmarks.insert(7, ip("141.8.146.159"));
        let text = to_json(&m);
        assert_eq!(
            text,
            r#"{"@fwmarks":{"7":"141.8.146.159"},"lb1.example.net":["141.8.146.159","2a02:6b8::2:105"],"lb2":[]}"#
        );
        assert_eq!(from_json(&text, Path::new("m.json")).unwrap(), m);
    }

    #[test]
    fn bad_fwmarks_are_reported() {
        for bad in [
            r#"{"@fwmarks": {"x": "192.0.2.1"}}"#,
            r#"{"@fwmarks": {"0": "192.0.2.1"}}"#,
            r#"{"@fwmarks": {"7": "nope"}}"#,
            r#"{"@fwmarks": {"4294967296": "192.0.2.1"}}"#,
        ] {
            let e = from_json(bad, Path::new("m.json")).unwrap_err();
            assert!(matches!(e, MappingError::BadFwmark { .. }), "{bad}: {e}");
        }
        let e = from_json(r#"{"@fwmarks": ["192.0.2.1"]}"#, Path::new("m.json")).unwrap_err();
        assert!(matches!(e, MappingError::Json { .. }), "{e}");
    }

    #[test]
    fn bad_json_is_reported() {
        let e = from_json("{\"lb\": [\"1.2.3.4\",]", Path::new("m.json")).unwrap_err();
        assert!(matches!(e, MappingError::Json { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = from_json(r#"{"lb": ["1.2.3.4", "nope"]}"#, Path::new("m.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.json: balancer lb: 'nope' is not an IP address"
        );
        assert!(from_json(r#"{"lb": "1.2.3.4"}"#, Path::new("m.json")).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("svc_mapping.json");
        let mut m = ServiceMapping::default();
        m.vips.insert("lb".into(), [ip("192.0.2.1")].into());
        write_json(&p, &m).unwrap();
        m.vips.insert("lb".into(), [ip("192.0.2.2")].into());
        write_json(&p, &m).unwrap();
        assert_eq!(read_json(&p).unwrap(), m);
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("svc_mapping.json")]);
        let e = write_json(&d.path().join("no/such/dir.json"), &m).unwrap_err();
        assert!(matches!(e, MappingError::Io { .. }));
    }
}
