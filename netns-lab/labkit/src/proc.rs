//! What /proc says of a process — CPU time and memory — for the benches' figures.

use std::sync::OnceLock;

/// CPU time of a process (user + system, all threads) in clock ticks (`utime` + `stime`
/// of `/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces and parentheses)
    // start at `state`, field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of [`cpu_ticks`] (`getconf CLK_TCK`; 100 if that fails, which is
/// what Linux reports on every architecture the lab runs on).
pub fn ticks_per_sec() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time of a process (user + system, all threads) in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    Some(cpu_ticks(pid)? as f64 / ticks_per_sec())
}

/// The first number of a line of `/proc/PID/status`, by its key with the colon
/// (`"VmRSS:"`, `"VmHWM:"` in kB, `"Uid:"` the real uid).
pub fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A kB line of `/proc/PID/status` (`"VmRSS:"`, `"VmHWM:"`) in MB.
pub fn status_mb(pid: u32, key: &str) -> Option<f64> {
    Some(status_field(pid, key)? as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        // Burn a little CPU so the count is not zero (black_box: an optimised build would
        // otherwise compute the loop's result at compile time).
        let mut x = 0u64;
        for i in 0..100_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(x != 1);
        assert!(cpu_secs(me).unwrap() > 0.0);
        assert!(status_mb(me, "VmRSS:").unwrap() > 0.1);
        assert!(status_mb(me, "VmHWM:").unwrap() >= status_mb(me, "VmRSS:").unwrap() * 0.5);
        assert_eq!(
            status_field(me, "Uid:"),
            Some(u64::from(nix::unistd::getuid().as_raw()))
        );
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
