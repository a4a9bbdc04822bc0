//! `[announce]`, `[client]`, `[server]` and `[messages]`: the small daemon sections.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::value::{self, Fields, Invalid, ValueResult};

/// A Linux interface name: 1..=15 bytes, no `/`, `:`, whitespace, not `.` or `..`
/// (the kernel's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Checks `s` as the kernel would.
    pub fn parse(s: &str) -> Option<InterfaceName> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        ok.then(|| InterfaceName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the loopback `lo` (otherwise a dummy link, created if missing).
    pub fn is_loopback(&self) -> bool {
        self.0 == "lo"
    }
}

/// `[announce]`: where VIPs are put and how they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// `interface` (`lo`): `lo` or a dummy link name.
    pub interface: InterfaceName,
    /// `firewall_check`: a command (absolute program path, then arguments) run with the
    /// VIP appended as the last argument before a VIP is prepared; exit 0 = ok.
    pub firewall_check: Option<Vec<String>>,
    /// `remove_vips_on_stop` (false): remove VIP addresses when the daemon stops
    /// (BGP withdraws happen regardless).
    pub remove_vips_on_stop: bool,
    /// `withdraw_grace` (2 s, 0 allowed): after a VIP's BGP withdraw is on the wire to every
    /// Established peer, wait this long before removing its address (and its IPVS services
    /// when it left the mapping), so the routers stop sending before the address goes.
    pub withdraw_grace: Duration,
    /// `drain_min` (5 s): a drained VIP stays announced with GRACEFUL_SHUTDOWN at least this
    /// long before it may be withdrawn.
    pub drain_min: Duration,
    /// `drain_conns` (0): a draining VIP is withdrawn once its IPVS active + inactive
    /// connections on this balancer are at most this many.
    pub drain_conns: u64,
    /// `drain_timeout` (300 s): ... or once this long has passed.
    pub drain_timeout: Duration,
    /// `stop` (`cease`): what SIGTERM does: `cease` (every session closed at once, routers
    /// withdraw) or `drain` (every VIP drained first, bounded by `drain_timeout`).
    pub stop: StopMode,
}

/// `[announce] stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Cease to every router at once.
    Cease,
    /// Drain every VIP, then Cease.
    Drain,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            interface: InterfaceName("lo".to_owned()),
            firewall_check: None,
            remove_vips_on_stop: false,
            withdraw_grace: Duration::from_secs(2),
            drain_min: Duration::from_secs(5),
            drain_conns: 0,
            drain_timeout: Duration::from_secs(300),
            stop: StopMode::Cease,
        }
    }
}

impl AnnounceConfig {
    /// The keys of `[announce]`.
    pub const KEYS: &'static [&'static str] = &[
        "interface",
        "firewall_check",
        "remove_vips_on_stop",
        "withdraw_grace",
        "drain_min",
        "drain_conns",
        "drain_timeout",
        "stop",
    ];

    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<AnnounceConfig, ConfigError> {
        Ok(AnnounceConfig {
            interface: f.get("interface", AnnounceConfig::default().interface, |v| {
                InterfaceName::parse(v).ok_or(Invalid::Expected(Cow::Borrowed(
                    "`lo` or an interface name of 1..15 characters without '/', ':' or spaces",
                )))
            })?,
            firewall_check: f.opt("firewall_check", command_line)?,
            remove_vips_on_stop: f.get("remove_vips_on_stop", false, value::boolean)?,
            withdraw_grace: f.get(
                "withdraw_grace",
                AnnounceConfig::default().withdraw_grace,
                value::seconds_or_zero,
            )?,
            drain_min: f.get(
                "drain_min",
                AnnounceConfig::default().drain_min,
                value::seconds_or_zero,
            )?,
            drain_conns: f.get("drain_conns", 0, |v| {
                value::int_in(v, 0, u64::MAX, "a number of connections")
            })?,
            drain_timeout: f.get(
                "drain_timeout",
                AnnounceConfig::default().drain_timeout,
                value::seconds,
            )?,
            stop: f.get("stop", StopMode::Cease, |v| match v {
                "cease" => Ok(StopMode::Cease),
                "drain" => Ok(StopMode::Drain),
                _ => Err(Invalid::Expected(Cow::Borrowed("cease or drain"))),
            })?,
        })
    }
}

/// Splits a command line into words: whitespace separates, `'…'` and `"…"` group
/// (no escapes inside); the first word must be an absolute path.
pub(crate) fn command_line(v: &str) -> ValueResult<Vec<String>> {
    const WHAT: &str = "a command line starting with an absolute program path";
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in v.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Invalid::Expected(Cow::Borrowed(
            "a command line with balanced quotes",
        )));
    }
    if in_word {
        words.push(cur);
    }
    match words.first() {
        Some(p) if p.starts_with('/') => Ok(words),
        _ => Err(Invalid::Expected(Cow::Borrowed(WHAT))),
    }
}

/// One argument pattern of an `execute.NAME` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// This exact word.
    Literal(String),
    /// `{ip}`: an IPv4 or IPv6 address.
    Ip,
    /// `{int}`: a decimal number 0..=4294967295 without sign or leading zeros.
    Int,
    /// `{name}`: 1 to 64 letters, digits, `.`, `_`, `-`, not starting with `-` (so it can
    /// never be taken as an option).
    Name,
}

impl ArgPattern {
    fn parse(word: &str) -> ArgPattern {
        match word {
            "{ip}" => ArgPattern::Ip,
            "{int}" => ArgPattern::Int,
            "{name}" => ArgPattern::Name,
            w => ArgPattern::Literal(w.to_owned()),
        }
    }

    /// Whether `arg` fits.
    pub fn matches(&self, arg: &str) -> bool {
        match self {
            ArgPattern::Literal(w) => w == arg,
            ArgPattern::Ip => arg.parse::<std::net::IpAddr>().is_ok(),
            ArgPattern::Int => {
                arg.parse::<u32>().is_ok()
                    && (arg == "0" || !arg.starts_with('0'))
                    && arg.bytes().all(|b| b.is_ascii_digit())
            }
            ArgPattern::Name => {
                (1..=64).contains(&arg.len())
                    && !arg.starts_with('-')
                    && arg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            }
        }
    }
}

/// `execute.NAME = PROGRAM ARG…`: one whole command line an `execute` message may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRule {
    /// NAME, for the log.
    pub name: String,
    /// The program, an absolute path, compared exactly.
    pub program: PathBuf,
    /// One pattern per argument; the argument count must match too.
    pub args: Vec<ArgPattern>,
}

impl ExecRule {
    /// Whether `argv` (program first) is exactly this rule.
    pub fn matches(&self, argv: &[String]) -> bool {
        let Some((prog, args)) = argv.split_first() else {
            return false;
        };
        Path::new(prog) == self.program
            && args.len() == self.args.len()
            && self.args.iter().zip(args).all(|(p, a)| p.matches(a))
    }
}

/// `[client]`: what the arbiter may make a balancer do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `sync_dirs`: directories a `sync` message may write under (the arbiter serves the same
    /// directories from its `[server] sync_dirs`); empty = `sync` refused.
    pub sync_dirs: Vec<PathBuf>,
    /// `execute.NAME`: the command lines an `execute` message may run; none = `execute` off.
    pub execute: Vec<ExecRule>,
    /// `execute_timeout` (10 s): an executed command (its whole process group) is killed
    /// after this.
    pub execute_timeout: Duration,
    /// `fallback_after` (60 s; 0 = never): this long without a word from the arbiter (no
    /// heartbeat, or the broker unreachable) and the balancer hands IPVS and its announces to
    /// its own keepalived.
    pub fallback_after: Option<Duration>,
    /// `fallback_recover` (30 s): the arbiter answers this long before the balancer takes
    /// IPVS and its announces back from keepalived.
    pub fallback_recover: Duration,
    /// `keepalived` (`/usr/sbin/keepalived`): the program run in fallback.
    pub keepalived: PathBuf,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            sync_dirs: Vec::new(),
            execute: Vec::new(),
            execute_timeout: Duration::from_secs(10),
            fallback_after: Some(Duration::from_secs(60)),
            fallback_recover: Duration::from_secs(30),
            keepalived: PathBuf::from("/usr/sbin/keepalived"),
        }
    }
}

/// Why `execute_allow` (a list of programs run with any arguments) is refused now.
const EXECUTE_ALLOW_GONE: &str = "execute_allow (programs with any arguments) is replaced by \
     whole command lines: write one `execute.NAME = /path/to/program ARG…` per command, with \
     {ip}, {int} or {name} where an argument may vary (see config.ini.example)";

fn exec_rule(name: &str, v: &str) -> ValueResult<ExecRule> {
    if !(1..=64).contains(&name.len())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(Invalid::Refused(Cow::Borrowed(
            "the NAME of execute.NAME is 1..64 letters, digits, '-', '_'",
        )));
    }
    let words = command_line(v)?;
    let Some((program, args)) = words.split_first() else {
        return Err(Invalid::Expected(Cow::Borrowed("a command line")));
    };
    Ok(ExecRule {
        name: name.to_owned(),
        program: PathBuf::from(program),
        args: args.iter().map(|a| ArgPattern::parse(a)).collect(),
    })
}

impl ClientConfig {
    /// The fixed keys of `[client]`.
    pub const KEYS: &'static [&'static str] = &[
        "sync_dirs",
        "execute_allow",
        "execute_timeout",
        "fallback_after",
        "fallback_recover",
        "keepalived",
    ];
    /// The key prefixes of `[client]`.
    pub const PREFIXES: &'static [&'static str] = &["execute."];

    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<ClientConfig, ConfigError> {
        if let Some(e) = f.entry("execute_allow") {
            if !e.value.is_empty() {
                return Err(f.error(
                    e,
                    Invalid::Refused(Cow::Borrowed(EXECUTE_ALLOW_GONE)),
                    false,
                ));
            }
        }
        let mut execute = Vec::new();
        for e in f.prefixed("execute.") {
            let name = e.key.strip_prefix("execute.").unwrap_or_default();
            execute.push(exec_rule(name, &e.value).map_err(|i| f.error(e, i, false))?);
        }
        Ok(ClientConfig {
            sync_dirs: f.get("sync_dirs", Vec::new(), value::abs_path_list)?,
            execute,
            execute_timeout: f.get("execute_timeout", Duration::from_secs(10), value::seconds)?,
            fallback_after: Some(f.get(
                "fallback_after",
                Duration::from_secs(60),
                value::seconds_or_zero,
            )?)
            .filter(|d| !d.is_zero()),
            fallback_recover: f.get("fallback_recover", Duration::from_secs(30), value::seconds)?,
            keepalived: f.get(
                "keepalived",
                PathBuf::from("/usr/sbin/keepalived"),
                value::abs_path,
            )?,
        })
    }

    /// Whether a `sync` may write `path`: absolute, no `.`/`..` components, strictly
    /// under one of `sync_dirs`. Symlinks are the writer's concern (open with
    /// `O_NOFOLLOW` or resolve first).
    pub fn sync_allowed(&self, path: &Path) -> bool {
        path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && self
                .sync_dirs
                .iter()
                .any(|d| path.starts_with(d) && path != d.as_path())
    }

    /// The `execute.NAME` rule `argv` matches, if any.
    pub fn execute_rule(&self, argv: &[String]) -> Option<&ExecRule> {
        self.execute.iter().find(|r| r.matches(argv))
    }
}

/// `[server]`: the arbiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `balancer_keys_dir` (`/etc/ipvs-sync/balancers`): one `HOSTNAME.pub` per balancer
    /// (the public key its `ipvs-sync keygen` printed); a balancer without one is not heard.
    /// Read at start and on SIGHUP.
    pub balancer_keys_dir: PathBuf,
    /// `sync_dirs` (none): the directories whose files a balancer's `sync` request may get
    /// (regular files only, no symlinks followed); empty = `sync` answered with nothing.
    pub sync_dirs: Vec<PathBuf>,
    /// `quorum_socket` (`/run/ipvs-sync/quorum.sock`): where `ipvs-sync quorum` hands
    /// announces to the running arbiter.
    pub quorum_socket: PathBuf,
    /// `startup_hold` (10 s; 0 = off): after it starts, the arbiter answers no balancer
    /// for this long, so keepalived can fill IPVS and report quorum first. Desc files
    /// usually live on a tmpfs; after a reboot a VIP without its desc yet would otherwise
    /// be withdrawn fleet-wide and an empty IPVS table mirrored. Balancers keep what they
    /// have meanwhile (fail-static), as when the arbiter is unreachable.
    pub startup_hold: Duration,
    /// `withdraw_limit` (off): at most this many withdrawals (a count, or `N%` of the VIPs
    /// that had quorum) per `withdraw_window`; past it, VIPs that lose quorum stay announced
    /// ("held") until `ipvs-sync release`.
    pub withdraw_limit: Option<WithdrawLimit>,
    /// `withdraw_window` (60 s): the window of `withdraw_limit`.
    pub withdraw_window: Duration,
    /// `ipvs_dump_share` (50%): at most this share of the arbiter's time goes to dumping its
    /// IPVS table. It dumps every second; a dump longer than this share of a second is
    /// followed by a pause that keeps the share (100% = dump again at once, as fast as the
    /// table can be read).
    pub ipvs_dump_share: u32,
}

/// `withdraw_limit`: a count, or a percentage of the VIPs that had quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawLimit {
    /// At most this many.
    Count(u32),
    /// At most this percentage (1–100) of the VIPs with quorum.
    Percent(u32),
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            balancer_keys_dir: PathBuf::from("/etc/ipvs-sync/balancers"),
            sync_dirs: Vec::new(),
            quorum_socket: PathBuf::from("/run/ipvs-sync/quorum.sock"),
            startup_hold: Duration::from_secs(10),
            withdraw_limit: None,
            withdraw_window: Duration::from_secs(60),
            ipvs_dump_share: 50,
        }
    }
}

impl ServerConfig {
    /// The keys of `[server]`.
    pub const KEYS: &'static [&'static str] = &[
        "quorum_socket",
        "startup_hold",
        "balancer_keys_dir",
        "sync_dirs",
        "withdraw_limit",
        "withdraw_window",
        "ipvs_dump_share",
    ];

    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::default();
        Ok(ServerConfig {
            balancer_keys_dir: f.get("balancer_keys_dir", d.balancer_keys_dir, value::abs_path)?,
            sync_dirs: f.get("sync_dirs", d.sync_dirs, value::abs_path_list)?,
            quorum_socket: f.get("quorum_socket", d.quorum_socket, value::abs_path)?,
            startup_hold: f.get("startup_hold", d.startup_hold, value::seconds_or_zero)?,
            withdraw_limit: f.opt("withdraw_limit", withdraw_limit)?,
            withdraw_window: f.get("withdraw_window", d.withdraw_window, value::seconds)?,
            ipvs_dump_share: f.get("ipvs_dump_share", d.ipvs_dump_share, percent)?,
        })
    }
}

fn percent(v: &str) -> ValueResult<u32> {
    match v.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
        Some(Ok(n)) if (1..=100).contains(&n) => Ok(n),
        _ => Err(Invalid::Expected(Cow::Borrowed(
            "a percentage from 1% to 100%",
        ))),
    }
}

fn withdraw_limit(v: &str) -> ValueResult<WithdrawLimit> {
    const WHAT: &str = "a count of VIPs (1 or more) or a percentage like 50%";
    let bad = || Invalid::Expected(Cow::Borrowed(WHAT));
    match v.strip_suffix('%') {
        Some(p) => match p.trim().parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(WithdrawLimit::Percent(n)),
            _ => Err(bad()),
        },
        None => match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(WithdrawLimit::Count(n)),
            _ => Err(bad()),
        },
    }
}

/// `[messages]`: message sizes and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesConfig {
    /// `max_age` (30 s): how long a message may wait in the broker. It is the per-message TTL
    /// of every queue (`x-message-ttl`, counted by RabbitMQ's clock), so a message that waited
    /// longer reaches nobody; no host's clock is compared with another's. A change needs the
    /// queues declared again (the daemon's error on start says how).
    pub max_age: Duration,
    /// `max_bytes` (16 MiB): the largest message sent or accepted (a tree of 5,000 services
    /// × 20 real servers is about 6 MB). Sends above it fail and are counted; receipts above
    /// it are dropped.
    pub max_bytes: usize,
    /// `queue_max_length` (50,000): a balancer's broker queue holds at most this many
    /// messages, the oldest dropped first, so a balancer that is gone costs the broker a
    /// bounded amount.
    pub queue_max_length: u32,
    /// `queue_expires` (1 day): the broker deletes a balancer's queue that had no consumer
    /// for this long.
    pub queue_expires: Duration,
}

/// Default of `max_bytes`: 16 MiB.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_age: Duration::from_secs(30),
            max_bytes: DEFAULT_MAX_BYTES,
            queue_max_length: 50_000,
            queue_expires: Duration::from_secs(24 * 3600),
        }
    }
}

impl MessagesConfig {
    /// The keys of `[messages]`.
    pub const KEYS: &'static [&'static str] =
        &["max_age", "max_bytes", "queue_max_length", "queue_expires"];

    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<MessagesConfig, ConfigError> {
        let d = MessagesConfig::default();
        Ok(MessagesConfig {
            max_age: f.get("max_age", d.max_age, value::seconds)?,
            max_bytes: f.get("max_bytes", d.max_bytes, |v| {
                value::int_in(v, 4096, 256 << 20, "a size in bytes, 4096..268435456")
            })?,
            queue_max_length: f.get("queue_max_length", d.queue_max_length, |v| {
                value::int_in(v, 1, u32::MAX, "a queue length of at least 1")
            })?,
            queue_expires: f.get("queue_expires", d.queue_expires, value::positive_seconds)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(InterfaceName::parse("lo").unwrap().is_loopback());
        assert!(!InterfaceName::parse("vip0").unwrap().is_loopback());
        assert!(InterfaceName::parse("dummy-vips12345").is_some());
        for bad in ["", "dummy-vips123456", "a/b", "a:b", "a b", ".", ".."] {
            assert!(InterfaceName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            command_line("/usr/sbin/check-fw --table 'vip list' \"\" x").unwrap(),
            vec!["/usr/sbin/check-fw", "--table", "vip list", "", "x"]
        );
        assert!(command_line("check-fw").is_err());
        assert!(command_line("/bin/x 'open").is_err());
    }

    /// A command line, split at spaces.
    fn argv(line: &str) -> Vec<String> {
        line.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn execute_rules_match_whole_command_lines() {
        let rule = exec_rule(
            "drain",
            "/usr/local/sbin/drain --vip {ip} --weight {int} {name}",
        )
        .unwrap();
        let ok = [
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight 0 web",
            "/usr/local/sbin/drain --vip 2001:db8::1 --weight 250 a.b_c-d",
        ];
        for a in ok {
            assert!(rule.matches(&argv(a)), "{a}");
        }
        let bad = [
            "/usr/local/sbin/drain",
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight 0",
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight 0 web x",
            "/usr/local/sbin/drain --vip host --weight 0 web",
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight -1 web",
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight 01 web",
            "/usr/local/sbin/drain --vip 192.0.2.1 --weight 0 --exec=x",
            "/usr/local/sbin/drain --VIP 192.0.2.1 --weight 0 web",
            "drain --vip 192.0.2.1 --weight 0 web",
            "/usr/local/sbin/drain2 --vip 192.0.2.1 --weight 0 web",
            "",
        ];
        for a in bad {
            assert!(!rule.matches(&argv(a)), "{a}");
        }
        // An argument with a space never matches {name}.
        let mut spaced = argv("/usr/local/sbin/drain --vip 192.0.2.1 --weight 0");
        spaced.push("a b".into());
        assert!(!rule.matches(&spaced));
        assert!(exec_rule("x y", "/bin/true").is_err());
        assert!(exec_rule("x", "true").is_err());
        let c = ClientConfig {
            execute: vec![
                rule,
                exec_rule("reload", "/usr/sbin/service keepalived reload").unwrap(),
            ],
            ..ClientConfig::default()
        };
        assert_eq!(
            c.execute_rule(&argv("/usr/sbin/service keepalived reload"))
                .map(|r| r.name.as_str()),
            Some("reload")
        );
        assert!(c
            .execute_rule(&argv("/usr/sbin/service keepalived stop"))
            .is_none());
    }

    #[test]
    fn sync_dirs() {
        let c = ClientConfig {
            sync_dirs: vec![PathBuf::from("/etc/keepalived")],
            ..ClientConfig::default()
        };
        assert!(c.sync_allowed(Path::new("/etc/keepalived/lbs/a.conf")));
        assert!(!c.sync_allowed(Path::new("/etc/keepalived")));
        assert!(!c.sync_allowed(Path::new("/etc/keepalived/../passwd")));
        assert!(!c.sync_allowed(Path::new("/etc/keepalivedX/a")));
        assert!(!c.sync_allowed(Path::new("etc/keepalived/a")));
        assert!(!ClientConfig::default().sync_allowed(Path::new("/tmp/x")));
    }
}
