//! A small standalone speaker: announces the given prefixes to one peer and runs until
//! SIGTERM/SIGINT, then sends Cease / Administrative Shutdown ("ipvs-sync shutting down").
//! Used by the lab tests (SIGKILL → routes gone after the hold time; SIGTERM → at once).
//!
//! ```text
//! speaker --local-as 65010 --router-id 192.0.2.11 --peer 192.0.2.1 --remote-as 65000 \
//!         [--hold 3] [--passive] [--password KEY] [--local-pref 100] \
//!         [--graceful-restart SECS [--restarting] [--defer-eor]] PREFIX...
//! ```
//! Prints `established` on stdout when the session comes up. SIGUSR2 closes the session
//! without a NOTIFICATION for a graceful restart, prints `closed for restart` and exits 0;
//! SIGUSR1 releases a deferred End-of-RIB and prints `end-of-rib released`.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use bgp::{EbgpPreference, PeerConfig, PeerEvent, RouteAttrs, Speaker, SpeakerConfig};
use ipnet::IpNet;

struct Args {
    local_as: u32,
    router_id: Ipv4Addr,
    peer: IpAddr,
    remote_as: u32,
    hold: u16,
    passive: bool,
    password: Option<String>,
    local_pref: u32,
    graceful_restart: Option<u16>,
    restarting: bool,
    defer_eor: bool,
    prefixes: Vec<IpNet>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        local_as: 0,
        router_id: Ipv4Addr::UNSPECIFIED,
        peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        remote_as: 0,
        hold: 90,
        passive: false,
        password: None,
        local_pref: 100,
        graceful_restart: None,
        restarting: false,
        defer_eor: false,
        prefixes: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let bad = |name: &str| format!("bad value for {name}");
        match arg.as_str() {
            "--local-as" => a.local_as = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--router-id" => a.router_id = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--peer" => a.peer = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--remote-as" => a.remote_as = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--hold" => a.hold = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--local-pref" => a.local_pref = val(&arg)?.parse().map_err(|_| bad(&arg))?,
            "--password" => a.password = Some(val(&arg)?),
            "--passive" => a.passive = true,
            "--graceful-restart" => {
                a.graceful_restart = Some(val(&arg)?.parse().map_err(|_| bad(&arg))?)
            }
            "--restarting" => a.restarting = true,
            "--defer-eor" => a.defer_eor = true,
            p => a
                .prefixes
                .push(p.parse().map_err(|_| format!("bad prefix {p}"))?),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("speaker: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = SpeakerConfig {
        hold_time: args.hold,
        connect_retry: Duration::from_secs(1),
        graceful_restart: args.graceful_restart,
        restarting: args.restarting,
        defer_end_of_rib: args.defer_eor,
        ebgp_preference: EbgpPreference::Med { base: 1000 },
        ..SpeakerConfig::new(args.local_as, args.router_id)
    };
    let (speaker, mut events) = match Speaker::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("speaker: {e}");
            return ExitCode::from(1);
        }
    };
    for p in &args.prefixes {
        speaker.announce(
            *p,
            RouteAttrs {
                local_pref: Some(args.local_pref),
                ..RouteAttrs::default()
            },
        );
    }
    let peer = PeerConfig {
        passive: args.passive,
        password: args.password.map(String::into_bytes),
        ..PeerConfig::new("peer", args.peer, args.remote_as)
    };
    if let Err(e) = speaker.add_peer(peer) {
        eprintln!("speaker: {e}");
        return ExitCode::from(1);
    }
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        eprintln!("speaker: cannot install the signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(PeerEvent::Up { .. }) => println!("established"),
                Some(PeerEvent::Down { reason, .. }) => println!("down: {reason}"),
                None => break,
            },
            _ = usr1.recv() => {
                speaker.release_end_of_rib();
                println!("end-of-rib released");
            }
            _ = usr2.recv() => {
                speaker.shutdown_for_restart().await;
                println!("closed for restart");
                return ExitCode::SUCCESS;
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    speaker.shutdown("ipvs-sync shutting down").await;
    ExitCode::SUCCESS
}
