//! The JSON (wire) form of services and trees.
//!
//! ```json
//! {"services": [
//!   {"protocol": "tcp", "addr": "192.0.2.1", "port": 80, "scheduler": "wrr",
//!    "flags": ["persistent"], "timeout": 300, "netmask": 32,
//!    "dests": [{"addr": "198.51.100.5", "port": 80, "fwd": "dr", "weight": 1}]},
//!   {"fwmark": 7, "af": "inet", "scheduler": "sh", "flags": ["flag-1", "flag-2"],
//!    "dests": [{"addr": "198.51.100.7", "port": 0, "fwd": "tunnel", "weight": 1,
//!               "tun_type": "gue", "tun_port": 6080, "tun_flags": "csum"}]}
//! ]}
//! ```
//! Services are written in canonical order, destinations sorted; on reading, order does
//! not matter but a duplicate service or destination is an error. `scheduler` defaults to
//! `wlc` (as with `ipvsadm`), `netmask` to the full length, `weight` to 1, `fwd` to `dr`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Dest, Family, Protocol, Service, ServiceFlags, ServiceKey, ServiceSpec, Stats, Tree};

/// The JSON object of a service: `SpecJson<Vec<Dest>, Option<Stats>>` for a [`Service`],
/// `SpecJson<NoExtra, NoExtra>` for a bare [`ServiceSpec`]. One flat struct rather than
/// a spec `#[serde(flatten)]`ed into a service: flatten buffers each service object,
/// destinations included, before reading it, and loading a tree of 100,000
/// destinations spent most of its time there.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "D: Serialize + Extra, S: Serialize + Extra"))]
pub(super) struct SpecJson<D, S> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fwmark: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    af: Option<Family>,
    #[serde(default = "default_scheduler")]
    scheduler: String,
    #[serde(default, skip_serializing_if = "no_flags")]
    flags: ServiceFlags,
    #[serde(default, skip_serializing_if = "is_zero")]
    timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netmask: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pe_name: Option<String>,
    #[serde(default, skip_serializing_if = "Extra::absent")]
    dests: D,
    #[serde(default, skip_serializing_if = "Extra::absent")]
    stats: S,
}

/// Whether an optional part of [`SpecJson`] is left out when writing.
trait Extra {
    fn absent(&self) -> bool;
}

/// `dests` and `stats` of a bare spec: never written, ignored when read.
#[derive(Default)]
pub(super) struct NoExtra;

impl Extra for NoExtra {
    fn absent(&self) -> bool {
        true
    }
}

/// A service writes `dests` even when it has none (owned when read, borrowed when
/// written).
impl<T> Extra for Vec<T> {
    fn absent(&self) -> bool {
        false
    }
}

impl Extra for Option<Stats> {
    fn absent(&self) -> bool {
        self.is_none()
    }
}

impl Serialize for NoExtra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoExtra {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoExtra)
    }
}

fn default_scheduler() -> String {
    "wlc".to_string()
}
fn no_flags(f: &ServiceFlags) -> bool {
    f.is_empty()
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl<D, S> SpecJson<D, S> {
    fn new(spec: &ServiceSpec, dests: D, stats: S) -> Self {
        let (protocol, addr, port, fwmark, af) = match spec.key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => (Some(protocol), Some(addr), Some(port), None, None),
            ServiceKey::Fwmark { af, mark } => (None, None, None, Some(mark), Some(af)),
        };
        let full = spec.key.family().max_prefix();
        Self {
            protocol,
            addr,
            port,
            fwmark,
            af,
            scheduler: spec.scheduler.clone(),
            flags: spec.flags,
            timeout: spec.timeout,
            netmask: (spec.netmask != full).then_some(spec.netmask),
            pe_name: spec.pe_name.clone(),
            dests,
            stats,
        }
    }
}

impl ServiceSpec {
    /// The spec of a JSON service object, validated; its `dests` and `stats` are left.
    fn from_json<D, S>(j: SpecJson<D, S>) -> Result<(Self, D, S), String> {
        let key = match (j.protocol, j.addr, j.port, j.fwmark, j.af) {
            (Some(protocol), Some(addr), Some(port), None, None) => ServiceKey::Addr {
                protocol,
                addr,
                port,
            },
            (None, None, None, Some(mark), af) => ServiceKey::Fwmark {
                af: af.unwrap_or(Family::Inet),
                mark,
            },
            _ => {
                return Err(
                    "a service needs either protocol, addr and port, or fwmark (and af)"
                        .to_string(),
                );
            }
        };
        let spec = ServiceSpec {
            key,
            scheduler: j.scheduler,
            flags: j.flags.without(ServiceFlags::HASHED),
            timeout: j.timeout,
            netmask: j.netmask.unwrap_or(key.family().max_prefix()),
            pe_name: j.pe_name,
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok((spec, j.dests, j.stats))
    }
}

impl Serialize for ServiceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SpecJson::new(self, NoExtra, NoExtra).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ServiceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = SpecJson::<NoExtra, NoExtra>::deserialize(d)?;
        ServiceSpec::from_json(j)
            .map(|(spec, _, _)| spec)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dests: Vec<&Dest> = self.dests.values().collect();
        SpecJson::new(&self.spec, dests, self.stats).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = SpecJson::<Vec<Dest>, Option<Stats>>::deserialize(d)?;
        let (spec, list, stats) = ServiceSpec::from_json(j).map_err(serde::de::Error::custom)?;
        let mut dests = BTreeMap::new();
        for dest in list {
            if let Some(old) = dests.insert(dest.key, dest) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate destination {} in service {}",
                    old.key, spec.key
                )));
            }
        }
        Ok(Service { spec, dests, stats })
    }
}

#[derive(Serialize, Deserialize)]
struct TreeJson {
    services: Vec<Service>,
}

impl Serialize for Tree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Tree", 1)?;
        st.serialize_field("services", &ServicesInOrder(self))?;
        st.end()
    }
}

struct ServicesInOrder<'a>(&'a Tree);

impl Serialize for ServicesInOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.services())
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = TreeJson::deserialize(d)?;
        let mut tree = Tree::new();
        for svc in j.services {
            let key = *svc.key();
            if tree.insert(svc).is_some() {
                return Err(serde::de::Error::custom(format!("duplicate service {key}")));
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{FwdMethod, TunFlags, TunType};

    #[test]
    fn json_round_trip_and_defaults() {
        let text = r#"{"services": [
            {"fwmark": 7, "scheduler": "sh", "flags": ["sh-fallback", "sh-port"],
             "dests": [{"addr": "198.51.100.7", "port": 0, "fwd": "tunnel",
                        "tun_type": "gue", "tun_port": 6080, "tun_flags": "csum"}]},
            {"protocol": "tcp", "addr": "192.0.2.1", "port": 80,
             "dests": [{"addr": "198.51.100.6", "port": 80, "weight": 0},
                       {"addr": "198.51.100.5", "port": 80, "fwd": "masq"}]}
        ]}"#;
        let tree: Tree = serde_json::from_str(text).unwrap();
        let ids: Vec<String> = tree.services().map(|s| s.key().to_string()).collect();
        assert_eq!(ids, ["tcp:192.0.2.1:80", "fwmark:v4:7"]);
        let tcp = tree.services().next().unwrap();
        assert_eq!(tcp.spec.scheduler, "wlc");
        assert_eq!(tcp.spec.netmask, 32);
        let d: Vec<_> = tcp.dests.values().collect();
        assert_eq!(
            (d[0].key.to_string().as_str(), d[0].fwd, d[0].weight),
            ("198.51.100.5:80", FwdMethod::Masq, 1)
        );
        assert_eq!((d[1].fwd, d[1].weight), (FwdMethod::Route, 0));
        let fw = tree.services().nth(1).unwrap();
        assert_eq!(fw.spec.flags.bits(), 0x18);
        let gue = fw.dests.values().next().unwrap();
        assert_eq!(
            (gue.tun_type, gue.tun_port, gue.tun_flags),
            (TunType::Gue, 6080, TunFlags::CSUM)
        );

        let again: Tree = serde_json::from_str(&serde_json::to_string(&tree).unwrap()).unwrap();
        assert_eq!(again, tree);
    }

    #[test]
    fn dump_counters_survive_the_json_form() {
        use crate::model::{Dest, DestStats, Service, ServiceKey, ServiceSpec, Stats};
        let mut svc = Service::new(ServiceSpec::new(
            ServiceKey::tcp("192.0.2.1".parse().unwrap(), 80),
            "wrr",
        ));
        let mut dest = Dest::new("198.51.100.5".parse().unwrap(), 80).weight(3);
        dest.stats = Some(DestStats {
            active_conns: 7,
            inact_conns: 2,
            persist_conns: 1,
            traffic: Stats {
                conns: 40,
                inbytes: 12_345,
                outpps: 9,
                ..Stats::default()
            },
        });
        svc.insert_dest(dest.clone());
        let tree: Tree = [svc].into_iter().collect();
        let text = serde_json::to_string(&tree).unwrap();
        assert!(text.contains(r#""inbytes":12345"#), "{text}");
        let back: Tree = serde_json::from_str(&text).unwrap();
        let read = back
            .services()
            .next()
            .unwrap()
            .dests
            .values()
            .next()
            .unwrap();
        assert_eq!(read, &dest);
        assert_eq!(read.stats, dest.stats);
        // Fields this version does not know are ignored, as they always were.
        let newer = text.replace(r#""weight":3"#, r#""weight":3,"future":{"x":[1]}"#);
        assert_ne!(newer, text);
        assert_eq!(serde_json::from_str::<Tree>(&newer).unwrap(), tree);
    }

    #[test]
    fn json_rejects_duplicates_and_half_keys() {
        let dup = r#"{"services": [{"fwmark": 1}, {"fwmark": 1}]}"#;
        assert!(serde_json::from_str::<Tree>(dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate service fwmark:v4:1"));
        let half = r#"{"services": [{"protocol": "tcp", "port": 80}]}"#;
        assert!(serde_json::from_str::<Tree>(half).is_err());
        let dd = r#"{"services": [{"fwmark": 1, "dests": [{"addr": "192.0.2.1", "port": 0}, {"addr": "192.0.2.1", "port": 0}]}]}"#;
        assert!(serde_json::from_str::<Tree>(dd)
            .unwrap_err()
            .to_string()
            .contains("duplicate destination"));
        let long = r#"{"services": [{"fwmark": 1, "scheduler": "a-very-long-scheduler"}]}"#;
        assert!(serde_json::from_str::<Tree>(long).is_err());
    }
}
