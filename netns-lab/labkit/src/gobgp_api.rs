//! Reading a gobgpd router through its `gobgp` CLI: sessions, RIB, paths.

use std::io;
use std::process::Command;
use std::time::Duration;

use crate::{run_checked, wait_until};

/// A handle on a running gobgpd's API: `gobgp --target TARGET …`. Cheap to make; used by
/// [`crate::Gobgpd`] for routers a test starts and by [`crate::Lab`] for the lab's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobgpApi {
    target: String,
}

/// One path of the global RIB, as the router holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibPath {
    /// The prefix, e.g. `198.51.100.1/32`.
    pub prefix: String,
    /// The peer it was learned from (`neighbor-ip`); `None` for a local route.
    pub neighbor: Option<String>,
    /// NEXT_HOP, or MP_REACH_NLRI's next hop.
    pub nexthop: Option<String>,
    /// AS_PATH, flattened over its segments.
    pub as_path: Vec<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// Whether the router chose it as best.
    pub best: bool,
}

impl GobgpApi {
    /// A handle for `--target` (`unix:///…/api.sock` or `HOST:PORT`).
    pub fn new(target: &str) -> GobgpApi {
        GobgpApi {
            target: target.to_owned(),
        }
    }

    /// The `--target`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `gobgp ARGS…` against the router and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        run_checked(
            Command::new("gobgp")
                .arg("--target")
                .arg(&self.target)
                .args(args),
        )
    }

    /// The global RIB of a family (`"ipv4"` or `"ipv6"`) as `gobgp global rib -a F -j`
    /// prints it: an object keyed by prefix, each a list of paths.
    pub fn rib(&self, family: &str) -> io::Result<serde_json::Value> {
        parse_json(&self.cli(&["global", "rib", "-a", family, "-j"])?)
    }

    /// The prefixes in the global RIB of a family, sorted.
    pub fn rib_prefixes(&self, family: &str) -> io::Result<Vec<String>> {
        let rib = self.rib(family)?;
        let mut prefixes: Vec<String> = rib
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        prefixes.sort();
        Ok(prefixes)
    }

    /// Every path of the family's global RIB, sorted by prefix and neighbor.
    pub fn paths(&self, family: &str) -> io::Result<Vec<RibPath>> {
        Ok(rib_paths(&self.rib(family)?))
    }

    /// The paths for one prefix (empty when the router has none).
    pub fn paths_for(&self, prefix: &str) -> io::Result<Vec<RibPath>> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        Ok(self
            .paths(family)?
            .into_iter()
            .filter(|p| p.prefix == prefix)
            .collect())
    }

    /// The BGP session state with a neighbor, in lower case as RFC 4271 names it:
    /// `"idle"`, `"connect"`, `"active"`, `"opensent"`, `"openconfirm"`, `"established"`.
    pub fn neighbor_state(&self, addr: &str) -> io::Result<String> {
        let out = self.cli(&["neighbor", addr, "-j"])?;
        let v = parse_json(&out)?;
        let state = &v["state"]["session_state"];
        // gobgp 3.x prints the protobuf enum as a number; other builds print its name.
        let name = match state {
            serde_json::Value::Number(n) => n.as_u64().and_then(session_state_name),
            serde_json::Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        name.map(|s| s.trim_start_matches("SESSION_STATE_").to_ascii_lowercase())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "no session_state in `gobgp neighbor {addr} -j`: {out}"
                ))
            })
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.neighbor_state(addr).is_ok_and(|s| s == "established")
        })
    }
}

/// The paths of a `gobgp global rib -j` object, sorted by prefix and neighbor.
pub fn rib_paths(rib: &serde_json::Value) -> Vec<RibPath> {
    let mut out = Vec::new();
    let Some(map) = rib.as_object() else {
        return out;
    };
    for (prefix, paths) in map {
        for p in paths.as_array().into_iter().flatten() {
            out.push(rib_path(prefix, p));
        }
    }
    out.sort_by(|a, b| (&a.prefix, &a.neighbor).cmp(&(&b.prefix, &b.neighbor)));
    out
}

/// One path object of gobgp's JSON (`global rib -j`, `monitor … -j`) for `prefix`; path
/// attribute type codes per RFC 4271 §5 / RFC 4760.
pub fn rib_path(prefix: &str, p: &serde_json::Value) -> RibPath {
    let as_u32 = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let mut path = RibPath {
        prefix: prefix.to_owned(),
        neighbor: p["neighbor-ip"].as_str().map(str::to_owned),
        nexthop: None,
        as_path: Vec::new(),
        local_pref: None,
        med: None,
        best: p["best"].as_bool().unwrap_or(false),
    };
    for a in p["attrs"].as_array().into_iter().flatten() {
        match a["type"].as_u64() {
            // AS_PATH
            Some(2) => {
                for seg in a["as_paths"].as_array().into_iter().flatten() {
                    path.as_path.extend(
                        seg["asns"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(as_u32),
                    );
                }
            }
            // NEXT_HOP, MP_REACH_NLRI
            Some(3 | 14) => {
                if let Some(nh) = a["nexthop"].as_str() {
                    path.nexthop = Some(nh.to_owned());
                }
            }
            // MULTI_EXIT_DISC
            Some(4) => path.med = as_u32(&a["metric"]),
            // LOCAL_PREF
            Some(5) => path.local_pref = as_u32(&a["value"]),
            _ => {}
        }
    }
    path
}

/// Parses the CLI's JSON output.
pub(crate) fn parse_json(out: &str) -> io::Result<serde_json::Value> {
    serde_json::from_str(out.trim()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("gobgp printed no JSON ({e}): {out}"),
        )
    })
}

/// The name of gobgp's numeric `session_state` (`apipb.PeerState.SessionState`).
pub fn session_state_name(n: u64) -> Option<&'static str> {
    Some(match n {
        0 => "unknown",
        1 => "idle",
        2 => "connect",
        3 => "active",
        4 => "opensent",
        5 => "openconfirm",
        6 => "established",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from gobgpd 3.10 in the lab (`gobgp global rib -a … -j`), ages trimmed:
    // r1 (iBGP) holding an IPv6 VIP from lb1 over an IPv4 session (MP_REACH next hop),
    const R1_V6: &str = r#"{"2001:db8:f00::2/128":[{"nlri":{"prefix":"2001:db8:f00::2/128"},"age":1,"best":true,"attrs":[{"type":1,"value":0},{"type":2,"as_paths":[]},{"type":5,"value":150},{"type":14,"nexthop":"2001:db8::31","afi":2,"safi":1,"value":[{"prefix":"2001:db8:f00::2/128"}]}],"stale":false,"source-id":"192.0.2.31","neighbor-ip":"192.0.2.31"}]}"#;
    // r2 (eBGP) holding an IPv4 VIP with MED and the balancers' AS,
    const R2_V4: &str = r#"{"198.51.100.1/32":[{"nlri":{"prefix":"198.51.100.1/32"},"age":1,"best":true,"attrs":[{"type":1,"value":0},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[65000]}]},{"type":3,"nexthop":"192.0.2.31"},{"type":4,"metric":900}],"stale":false,"source-id":"192.0.2.31","neighbor-ip":"2001:db8::31"}]}"#;
    // and a local route added with `gobgp global rib add` (no neighbor).
    const LOCAL: &str = r#"{"198.51.100.1/32":[{"nlri":{"prefix":"198.51.100.1/32"},"age":1,"best":true,"attrs":[{"type":1,"value":2},{"type":3,"nexthop":"0.0.0.0"}],"stale":false}]}"#;

    #[test]
    fn ibgp_v6_path_has_mp_reach_nexthop_and_local_pref() {
        let paths = rib_paths(&serde_json::from_str(R1_V6).unwrap());
        assert_eq!(
            paths,
            vec![RibPath {
                prefix: "2001:db8:f00::2/128".into(),
                neighbor: Some("192.0.2.31".into()),
                nexthop: Some("2001:db8::31".into()),
                as_path: vec![],
                local_pref: Some(150),
                med: None,
                best: true,
            }]
        );
    }

    #[test]
    fn ebgp_path_has_as_path_and_med() {
        let paths = rib_paths(&serde_json::from_str(R2_V4).unwrap());
        assert_eq!(paths.len(), 1);
        let p = &paths[0];
        assert_eq!(p.as_path, vec![65000]);
        assert_eq!((p.med, p.local_pref), (Some(900), None));
        assert_eq!(p.neighbor.as_deref(), Some("2001:db8::31"));
        assert_eq!(p.nexthop.as_deref(), Some("192.0.2.31"));
    }

    #[test]
    fn local_path_has_no_neighbor() {
        let paths = rib_paths(&serde_json::from_str(LOCAL).unwrap());
        assert_eq!(paths[0].neighbor, None);
        assert_eq!(paths[0].nexthop.as_deref(), Some("0.0.0.0"));
    }

    #[test]
    fn empty_or_odd_ribs_give_no_paths() {
        assert!(rib_paths(&serde_json::json!({})).is_empty());
        assert!(rib_paths(&serde_json::json!([])).is_empty());
        assert!(rib_paths(&serde_json::json!({"x": 1})).is_empty());
    }

    #[test]
    fn session_states_follow_gobgp_enum() {
        assert_eq!(session_state_name(1), Some("idle"));
        assert_eq!(session_state_name(3), Some("active"));
        assert_eq!(session_state_name(6), Some("established"));
        assert_eq!(session_state_name(7), None);
    }

    #[test]
    fn cli_output_that_is_not_json_is_an_error() {
        let err = parse_json("rpc error: connection refused").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("connection refused"));
        assert_eq!(parse_json("{}\n").unwrap(), serde_json::json!({}));
    }
}
