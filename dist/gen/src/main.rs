//! `ipvs-sync-gen OUT [DATE]`: the man pages and shell completions of `ipvs-sync`, made from the
//! clap definitions in `ipvs_sync::cli`, so they say what the binary parses.
//!
//! ```text
//! OUT/man/ipvs-sync.8               the program, its global options, FILES, EXIT STATUS
//! OUT/man/ipvs-sync-SUB.8           one page per subcommand (ipvs-sync-ipvs-dump.8, …)
//! OUT/completions/ipvs-sync.bash    bash   → /usr/share/bash-completion/completions/ipvs-sync
//! OUT/completions/_ipvs-sync        zsh    → /usr/share/zsh/vendor-completions/_ipvs-sync
//! OUT/completions/ipvs-sync.fish    fish   → /usr/share/fish/vendor_completions.d/ipvs-sync.fish
//! ```
//!
//! DATE goes in the pages' header (`scripts/package` gives the last commit's date, so two
//! builds of one commit make the same pages). `scripts/package` runs it and puts the files
//! where the Debian package installs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use ipvs_sync::cli::{Cli, DEFAULT_CONFIG};

/// Section 8: system administration commands (the daemons run as root).
const SECTION: &str = "8";

/// What the main page adds to clap's sections.
fn main_page_extra() -> String {
    format!(
        r#".SH FILES
.TP
\fI{DEFAULT_CONFIG}\fR
The configuration (or \fB\-c\fR, \fB$IPVS_SYNC_CONFIG\fR).
.TP
\fI/etc/ipvs\-sync/secret.ini\fR
Secrets, next to the configuration; mode 0600, owned by root.
.TP
\fI/usr/share/doc/ipvs\-sync/examples/\fR
config.ini.example and secret.ini.example, every key with its default.
.TP
\fI/lib/systemd/system/ipvs\-sync\-server.service\fR, \fIipvs\-sync\-client.service\fR
The daemons' units.
.SH EXIT STATUS
0 success; 1 the command ran and failed (a daemon that stopped without SIGTERM or SIGINT, a
partial \fBipvs apply\fR); 2 it could not start (bad arguments, configuration or kernel).
\fBmonitor\fR: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
.SH SEE ALSO
{see_also}, \fBkeepalived.conf\fR(5), \fBipvsadm\fR(8), \fBsystemctl\fR(1)
.PP
/usr/share/doc/ipvs\-sync/README.md and /usr/share/doc/ipvs\-sync/operations.md
"#,
        see_also = subcommand_pages(&built())
            .iter()
            .map(|(name, _)| format!("\\fB{}\\fR({SECTION})", name.replace('-', "\\-")))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The command with its globals propagated and display names set (`ipvs-sync-client`, …).
fn built() -> Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every visible subcommand, depth first, with its page name (its display name once built:
/// `ipvs-sync-ipvs-dump`).
fn subcommand_pages(cmd: &Command) -> Vec<(String, Command)> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub
            .get_display_name()
            .map_or_else(|| sub.get_name().to_owned(), str::to_owned);
        out.push((name, sub.clone()));
        out.extend(subcommand_pages(sub));
    }
    out
}

/// Writes `NAME.8` for `cmd`, clap's sections and then `extra` (roff).
fn write_page(dir: &Path, cmd: Command, date: &str, extra: &str) -> std::io::Result<PathBuf> {
    let source = format!("ipvs-sync {}", built().get_version().unwrap_or_default());
    let man = clap_mangen::Man::new(cmd)
        .section(SECTION)
        .date(date)
        .source(source)
        .manual("ipvs-sync");
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(extra.as_bytes());
    let path = dir.join(man.get_filename());
    std::fs::File::create(&path)?.write_all(&page)?;
    Ok(path)
}

fn generate(out: &Path, date: &str) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = built();
    let mut written = vec![write_page(&man, cmd.clone(), date, &main_page_extra())?];
    let see_also = format!(".SH SEE ALSO\n\\fBipvs\\-sync\\fR({SECTION})\n");
    for (_, sub) in subcommand_pages(&cmd) {
        written.push(write_page(&man, sub, date, &see_also)?);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path =
            clap_complete::generate_to(shell, &mut Cli::command(), "ipvs-sync", &completions)?;
        if shell == Shell::Bash {
            mend_bash(&path)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// clap_complete 4.6 spells a subcommand's state two ways in its bash script when the binary's
/// name has a hyphen (clap-rs/clap#6421): the loop that reads the words builds
/// `ipvs__sync__subcmd__ipvs`, the `case` arms say `ipvs__subcmd__sync__subcmd__ipvs`, so
/// nothing after a subcommand completes (`ipvs-sync ipvs <TAB>` offered file names). The arms
/// are given the loop's spelling.
fn mend_bash(path: &Path) -> std::io::Result<()> {
    let script = std::fs::read_to_string(path)?;
    std::fs::write(path, script.replace("ipvs__subcmd__sync", "ipvs__sync"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, date) = match args.as_slice() {
        [out] => (out, ""),
        [out, date] => (out, date.as_str()),
        _ => {
            eprintln!("usage: ipvs-sync-gen OUT_DIR [DATE]");
            return ExitCode::from(2);
        }
    };
    match generate(Path::new(out), date) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipvs-sync-gen: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn one_page_per_subcommand_and_three_completions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = generate(dir, "2026-01-02").unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "ipvs-sync.8",
            "ipvs-sync-server.8",
            "ipvs-sync-client.8",
            "ipvs-sync-quorum.8",
            "ipvs-sync-monitor.8",
            "ipvs-sync-status.8",
            "ipvs-sync-ipvs.8",
            "ipvs-sync-ipvs-dump.8",
            "ipvs-sync-ipvs-apply.8",
            "ipvs-sync.bash",
            "_ipvs-sync",
            "ipvs-sync.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let main = std::fs::read_to_string(dir.join("man/ipvs-sync.8")).unwrap();
        assert!(
            main.contains(".TH ipvs-sync 8 2026-01-02 \"ipvs-sync "),
            "{main}"
        );
        assert!(main.contains(".SH FILES"), "{main}");
        let client = std::fs::read_to_string(dir.join("man/ipvs-sync-client.8")).unwrap();
        assert!(client.contains("ipvs\\-sync\\-client"), "{client}");
        let bash = std::fs::read_to_string(dir.join("completions/ipvs-sync.bash")).unwrap();
        assert!(bash.contains("complete -F _ipvs__sync"), "{bash}");
    }

    /// What bash offers for the words before the cursor, from the generated script.
    fn bash_completes(script: &Path, words: &[&str]) -> String {
        let line = format!("{} ", words.join(" "));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({} ''); COMP_CWORD={n}; COMP_LINE='{line}'; \
                 COMP_POINT=${{#COMP_LINE}}; _ipvs__sync ipvs-sync '' {}; echo \"${{COMPREPLY[*]}}\"",
                script.display(),
                words.join(" "),
                words[words.len() - 1],
                n = words.len(),
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn bash_completes_subcommands_of_subcommands() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        generate(dir, "").unwrap();
        let script = dir.join("completions/ipvs-sync.bash");
        let top = bash_completes(&script, &["ipvs-sync"]);
        assert!(top.contains("client") && top.contains("quorum"), "{top}");
        let ipvs = bash_completes(&script, &["ipvs-sync", "ipvs"]);
        assert!(ipvs.contains("dump") && ipvs.contains("apply"), "{ipvs}");
        let dump = bash_completes(&script, &["ipvs-sync", "ipvs", "dump"]);
        assert!(dump.contains("--json"), "{dump}");
    }
}
