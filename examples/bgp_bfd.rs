//! The balancer's BGP side alone, for lab measurements of failure detection: the speaker and
//! its peers from a `config.ini` (as `ipvs-sync client` builds them, `client::bgp_cfg`), BFD
//! beside BGP for the peers with `bfd = true` (`client::bfd_link`), the given prefixes
//! announced; runs until SIGTERM or SIGINT, then sends Cease.
//!
//! ```text
//! bgp_bfd CONFIG.INI PREFIX...
//! ```

use std::path::Path;

use ipvs_sync::client::{bfd_link::BfdLink, bgp_cfg, edges::route_attrs};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, prefixes)) = args.split_first() else {
        return Err("usage: bgp_bfd CONFIG.INI PREFIX...".into());
    };
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let cfg = config::Config::load(Path::new(path))?;
    let (speaker, _events) = bgp_cfg::start_speaker(&cfg, false)?;
    let bfd = BfdLink::start(&cfg, speaker.clone()).await?;
    for p in prefixes {
        speaker.announce(p.parse()?, route_attrs(100, false, &[]));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if let Some(b) = bfd {
        b.shutdown().await;
    }
    speaker.shutdown("bgp_bfd stopping").await;
    Ok(())
}
