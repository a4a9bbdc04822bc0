//! The `ipvsadm -Sn` rule text: printing it exactly as `ipvsadm` 1.31 does, and parsing it
//! (`-A`/`-a` lines, plus the `-x`/`-y` thresholds `ipvsadm -R` also takes).
//!
//! ```text
//! -A -t 192.0.2.1:80 -s wrr -p 300 -M 255.255.255.0
//! -a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 1
//! -A -f 7 -6 -s sh -b sh-fallback,sh-port
//! -a -f 7 -6 -r [2001:db8::7]:0 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
//! ```
//!
//! What `ipvsadm -Sn` does not print, and so does not survive a round trip through its
//! text: destination thresholds (`-x`, `-y`), the timeout and netmask of a service that is
//! not persistent. Order is the canonical order of [`ServiceKey`], which is `ipvsadm`'s
//! (`ipvs_cmp_services`) unless two IPv4 addresses differ by 2³¹ or more: its comparator
//! subtracts and wraps, so `ipvsadm -Sn` lists 192.0.2.200 before 10.0.0.1 (seen on 1.31).
//! Parsing follows `ipvsadm -a`: with `-g` or `-i` on an address service the real
//! server's port is forced to the service's, and `-p` alone means 360 s.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::model::{
    Dest, DestKey, Family, FwdMethod, Protocol, Service, ServiceFlags, ServiceKey, ServiceSpec,
    Tree, TunFlags, TunType,
};

/// A line of rule text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct RulesError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// `-t 192.0.2.1:80`, `-u [2001:db8::1]:53`, `--sctp-service …`, `-f 7`, `-f 7 -6`.
pub fn service_selector(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            let opt = match protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
                Protocol::Sctp => "--sctp-service",
                // What ipvsadm prints for a protocol it does not know.
                Protocol::Other(_) => "--xxx-service",
            };
            format!("{opt} {}", SocketAddr::new(*addr, *port))
        }
        ServiceKey::Fwmark {
            af: Family::Inet,
            mark,
        } => format!("-f {mark}"),
        ServiceKey::Fwmark {
            af: Family::Inet6,
            mark,
        } => format!("-f {mark} -6"),
    }
}

fn sched_flag_names(scheduler: &str, flags: ServiceFlags) -> Vec<&'static str> {
    let (one, two) = match scheduler {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let mut out = Vec::new();
    if flags.contains(ServiceFlags::SCHED1) {
        out.push(one);
    }
    if flags.contains(ServiceFlags::SCHED2) {
        out.push(two);
    }
    if flags.contains(ServiceFlags::SCHED3) {
        out.push("flag-3");
    }
    out
}

/// Everything after `-A`: selector, scheduler, persistence, engine, one-packet, sched flags.
pub fn service_args(spec: &ServiceSpec) -> String {
    let mut s = format!("{} -s {}", service_selector(&spec.key), spec.scheduler);
    if spec.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(s, " -p {}", spec.timeout);
        match spec.key.family() {
            Family::Inet if spec.netmask != 32 => {
                let mask = if spec.netmask == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(spec.netmask.min(32)))
                };
                let _ = write!(s, " -M {}", Ipv4Addr::from(mask));
            }
            Family::Inet6 if spec.netmask != 128 => {
                let _ = write!(s, " -M {}", spec.netmask);
            }
            _ => {}
        }
    }
    if let Some(pe) = &spec.pe_name {
        let _ = write!(s, " --pe {pe}");
    }
    if spec.flags.contains(ServiceFlags::ONE_PACKET) {
        s.push_str(" -o");
    }
    let sched = sched_flag_names(&spec.scheduler, spec.flags);
    if !sched.is_empty() {
        let _ = write!(s, " -b {}", sched.join(","));
    }
    s
}

/// A destination address as `ipvsadm` prints it: `198.51.100.5:80`, `[2001:db8::5]:80`.
pub fn dest_addr(key: &DestKey) -> String {
    SocketAddr::new(key.addr, key.port).to_string()
}

fn fwd_switch(fwd: FwdMethod) -> &'static str {
    match fwd {
        FwdMethod::Masq => "-m",
        FwdMethod::Tunnel => "-i",
        FwdMethod::Route | FwdMethod::Local => "-g",
        _ => "?",
    }
}

fn tun_flags_opt(flags: TunFlags) -> String {
    match flags.name() {
        Some(name) => format!("--tun-{name}"),
        None => format!("--tun-flags-{}", flags.bits()),
    }
}

/// Everything after `-a`: service, real server, method, weight, tunnel settings; with
/// `thresholds`, also `-x`/`-y` when set (`ipvsadm -S` never prints them).
pub fn dest_args(service: &ServiceKey, dest: &Dest, thresholds: bool) -> String {
    let mut s = format!(
        "{} -r {} {} -w {}",
        service_selector(service),
        dest_addr(&dest.key),
        fwd_switch(dest.fwd),
        dest.weight
    );
    if dest.fwd == FwdMethod::Tunnel {
        match dest.tun_type {
            TunType::Gue => {
                let _ = write!(
                    s,
                    " --tun-type gue --tun-port {} {}",
                    dest.tun_port,
                    tun_flags_opt(dest.tun_flags)
                );
            }
            TunType::Gre => {
                let _ = write!(s, " --tun-type gre {}", tun_flags_opt(dest.tun_flags));
            }
            TunType::Ipip => s.push_str(" --tun-type ipip"),
            TunType::Other(n) => {
                let _ = write!(s, " --tun-type {n}");
            }
        }
    }
    if thresholds {
        if dest.u_threshold != 0 {
            let _ = write!(s, " -x {}", dest.u_threshold);
        }
        if dest.l_threshold != 0 {
            let _ = write!(s, " -y {}", dest.l_threshold);
        }
    }
    s
}

impl Tree {
    /// The rules exactly as `ipvsadm -Sn` prints them.
    pub fn to_ipvsadm_rules(&self) -> String {
        let mut out = String::new();
        for svc in self.services() {
            let _ = writeln!(out, "-A {}", service_args(&svc.spec));
            for dest in svc.dests.values() {
                let _ = writeln!(out, "-a {}", dest_args(svc.key(), dest, false));
            }
        }
        out
    }

    /// Parses `ipvsadm -Sn` output (`-A` and `-a` lines; blank lines and `#` comments are
    /// skipped). Destinations take `ipvsadm`'s defaults: port of the service, `-g`, `-w 1`.
    pub fn from_ipvsadm_rules(text: &str) -> Result<Tree, RulesError> {
        let mut tree = Tree::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| RulesError {
                line: i + 1,
                text: raw.to_string(),
                reason,
            };
            let rule = parse_rule(line).map_err(err)?;
            match rule {
                Rule::Service(spec) => {
                    let key = spec.key;
                    if tree.insert(Service::new(spec)).is_some() {
                        return Err(err(format!("duplicate service {key}")));
                    }
                }
                Rule::Dest(key, dest) => {
                    let svc = tree
                        .get_mut(&key)
                        .ok_or_else(|| err(format!("destination before its service {key}")))?;
                    if svc.dests.contains_key(&dest.key) {
                        return Err(err(format!("duplicate destination {}", dest.key)));
                    }
                    svc.insert_dest(dest);
                }
            }
        }
        Ok(tree)
    }
}

enum Rule {
    Service(ServiceSpec),
    Dest(ServiceKey, Dest),
}

fn parse_addr_port(s: &str, default_port: u16) -> Result<(IpAddr, u16), String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), sa.port()));
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|a| (a, default_port))
        .map_err(|_| format!("bad address {s:?}"))
}

fn num<T: std::str::FromStr>(opt: &str, v: Option<&str>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value"))?;
    v.parse().map_err(|_| format!("bad value {v:?} for {opt}"))
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let mut it = line.split_whitespace().peekable();
    let cmd = it.next().ok_or("empty line")?;
    let (mut protocol, mut addr, mut fwmark, mut v6) = (None, None, None, false);
    let (mut sched, mut timeout, mut persistent, mut mask, mut pe) =
        (None, 0u32, false, None::<String>, None);
    let mut flags = ServiceFlags::empty();
    let (mut real, mut fwd, mut weight, mut ux, mut ly) =
        (None, FwdMethod::Route, 1u32, 0u32, 0u32);
    let (mut tun_type, mut tun_port, mut tun_flags) = (None, 0u16, TunFlags::NOCSUM);
    while let Some(opt) = it.next() {
        match opt {
            "-t" | "--tcp-service" => (protocol, addr) = (Some(Protocol::Tcp), it.next()),
            "-u" | "--udp-service" => (protocol, addr) = (Some(Protocol::Udp), it.next()),
            "--sctp-service" => (protocol, addr) = (Some(Protocol::Sctp), it.next()),
            "-f" | "--fwmark-service" => fwmark = Some(num::<u32>(opt, it.next())?),
            "-6" | "--ipv6" => v6 = true,
            "-s" | "--scheduler" => {
                sched = Some(it.next().ok_or("-s needs a scheduler")?.to_string())
            }
            "-p" | "--persistent" => {
                persistent = true;
                // The timeout is optional; ipvsadm 1.31's default is 360 s.
                timeout = match it.peek() {
                    Some(v) if v.parse::<u32>().is_ok() => num(opt, it.next())?,
                    _ => 360,
                };
            }
            "-M" | "--netmask" => mask = Some(it.next().ok_or("-M needs a netmask")?.to_string()),
            "--pe" => pe = Some(it.next().ok_or("--pe needs an engine")?.to_string()),
            "-o" | "--ops" => flags |= ServiceFlags::ONE_PACKET,
            "-b" | "--sched-flags" => {
                flags |= it
                    .next()
                    .ok_or("-b needs flags")?
                    .parse::<ServiceFlags>()
                    .map_err(|e| e.to_string())?
            }
            "-r" | "--real-server" => real = Some(it.next().ok_or("-r needs an address")?),
            "-g" | "--gatewaying" => fwd = FwdMethod::Route,
            "-i" | "--ipip" => fwd = FwdMethod::Tunnel,
            "-m" | "--masquerading" => fwd = FwdMethod::Masq,
            "-w" | "--weight" => weight = num(opt, it.next())?,
            "-x" | "--u-threshold" => ux = num(opt, it.next())?,
            "-y" | "--l-threshold" => ly = num(opt, it.next())?,
            "--tun-type" => {
                let t = it.next().ok_or("--tun-type needs a type")?;
                tun_type = Some(
                    TunType::from_name(t).ok_or_else(|| format!("unknown tunnel type {t:?}"))?,
                );
            }
            "--tun-port" => tun_port = num(opt, it.next())?,
            "--tun-nocsum" => tun_flags = TunFlags::NOCSUM,
            "--tun-csum" => tun_flags = TunFlags::CSUM,
            "--tun-remcsum" => tun_flags = TunFlags::REMCSUM,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let key = match (fwmark, protocol, addr) {
        (Some(0), _, _) => return Err("fwmark 0".into()),
        (Some(mark), None, _) => ServiceKey::Fwmark {
            af: if v6 { Family::Inet6 } else { Family::Inet },
            mark,
        },
        (None, Some(protocol), Some(a)) => {
            let (addr, port) = parse_addr_port(a, 0)?;
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            }
        }
        _ => return Err("needs one of -t, -u, --sctp-service, -f".into()),
    };
    match cmd {
        "-A" | "--add-service" => {
            let mut spec = ServiceSpec::new(key, sched.unwrap_or_else(|| "wlc".into()));
            spec.flags = flags;
            spec.pe_name = pe;
            if persistent {
                spec.flags |= ServiceFlags::PERSISTENT;
                spec.timeout = timeout;
            }
            if let Some(m) = mask {
                spec.netmask = match key.family() {
                    Family::Inet => {
                        let m: Ipv4Addr = m.parse().map_err(|_| format!("bad netmask {m:?}"))?;
                        let bits = u32::from(m);
                        if bits.checked_shl(bits.leading_ones()).unwrap_or(0) != 0 {
                            return Err(format!("non-contiguous netmask {m}"));
                        }
                        u8::try_from(bits.leading_ones()).map_err(|_| "netmask".to_string())?
                    }
                    Family::Inet6 => m.parse().map_err(|_| format!("bad prefix length {m:?}"))?,
                };
            }
            spec.validate().map_err(|e| e.to_string())?;
            Ok(Rule::Service(spec))
        }
        "-a" | "--add-server" => {
            let default_port = match key {
                ServiceKey::Addr { port, .. } => port,
                ServiceKey::Fwmark { .. } => 0,
            };
            let (addr, mut port) = parse_addr_port(real.ok_or("-a needs -r")?, default_port)?;
            // As ipvsadm does: direct routing and tunnels cannot change the port, so the
            // real server of an address service gets the service's port.
            if matches!(key, ServiceKey::Addr { .. })
                && matches!(fwd, FwdMethod::Route | FwdMethod::Tunnel)
            {
                port = default_port;
            }
            let mut dest = Dest::new(addr, port).fwd(fwd).weight(weight);
            dest.u_threshold = ux;
            dest.l_threshold = ly;
            dest.tun_type = tun_type.unwrap_or_default();
            dest.tun_port = tun_port;
            dest.tun_flags = tun_flags;
            Ok(Rule::Dest(key, dest))
        }
        other => Err(format!("unsupported command {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    // Printed by ipvsadm 1.31 `-Sn` on Debian's 6.1 kernel in the VM lane
    // (netns-lab/vm-run), after the ipvsadm commands of tests/vectors/ipvsadm-6.1.txt.
    const IPVSADM_SN: &str = "\
-A -t 192.0.2.1:80 -s rr
-a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3
-a -t 192.0.2.1:80 -r 198.51.100.6:8080 -m -w 5
-A -u 192.0.2.3:5060 -s rr -p 60 -M 255.255.255.0 --pe sip
-A -u 192.0.2.4:514 -s rr -o
-A --sctp-service 192.0.2.2:9 -s mh -b mh-port
-A -u [2001:db8::1]:53 -s rr -p 300 -M 64
-a -u [2001:db8::1]:53 -r [2001:db8:1::5]:53 -g -w 2
-A -f 7 -s sh -b sh-fallback,sh-port
-a -f 7 -r 198.51.100.7:0 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-A -f 8 -6 -s wrr -p 360
-a -f 8 -6 -r [2001:db8:2::7]:0 -i -w 0 --tun-type gre --tun-nocsum
";

    #[test]
    fn ipvsadm_text_round_trips_exactly() {
        let tree = Tree::from_ipvsadm_rules(IPVSADM_SN).unwrap();
        assert_eq!(tree.len(), 7);
        assert_eq!(tree.dest_count(), 5);
        let gue = tree
            .get(&"fwmark:v4:7".parse().unwrap())
            .unwrap()
            .dests
            .values()
            .next()
            .unwrap();
        assert_eq!(
            (gue.fwd, gue.tun_type, gue.tun_port, gue.tun_flags),
            (FwdMethod::Tunnel, TunType::Gue, 6080, TunFlags::CSUM)
        );
        let sip = tree.get(&"udp:192.0.2.3:5060".parse().unwrap()).unwrap();
        assert_eq!(
            (
                sip.spec.netmask,
                sip.spec.timeout,
                sip.spec.pe_name.as_deref()
            ),
            (24, 60, Some("sip"))
        );
        assert_eq!(tree.to_ipvsadm_rules(), IPVSADM_SN);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = Tree::from_ipvsadm_rules(
            "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.9:80 -r 198.51.100.1\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("before its service"));
        assert!(Tree::from_ipvsadm_rules("-A -t 192.0.2.1:80 --bogus").is_err());
        assert!(Tree::from_ipvsadm_rules("-A -t 192.0.2.1:80 -s rr -p 5 -M 255.0.255.0").is_err());
    }
}
