//! The client's loop and the fallback: feeds [`Fallback`] the arbiter's heartbeats, the broker
//! state and time; performs its acts on the core ([`ClientState`](super::state::ClientState)),
//! keepalived and the metrics; takes keepalived's quorum calls from the control socket.
//!
//! ```text
//!  Enter ──────────▶ core.enter_local (no mirroring), keepalived started on this balancer's configs
//!  quorum up/down ─▶ core.local_quorum ─▶ prepare / announce / withdraw, as for the arbiter
//!  HandBack ───────▶ core.hand_back: mapping, tree, announces asked; the tree applied in full
//!  TakenBack ──────▶ Fallback::taken_back ─▶ Leave: keepalived stopped (IPVS left), then a verify
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::fallback::{Act, Fallback, FallbackSettings, Phase};
use super::keepalived::{self, Keepalived};
use super::{Client, Done};
use crate::daemon::control::Reply;
use crate::daemon::status::FallbackRow;

/// A keepalived that exited by itself in fallback is started again this long after.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// The fallback's decision and its keepalived.
pub(super) struct Link {
    fsm: Fallback,
    keepalived: Keepalived,
    /// When keepalived is due to be started again after it exited.
    restart_at: Option<Instant>,
    entered: u64,
}

impl Link {
    /// `None` with `fallback_after = 0`. Says at start when there is nothing to fall back to.
    pub(super) fn new(cfg: &config::Config, now: Instant) -> Option<Link> {
        let after = cfg.client.fallback_after?;
        let files = configs(cfg);
        if files.is_empty() {
            warn!(
                pattern = ?cfg.main.service_mapping_wildcard.for_balancer(&cfg.main.hostname),
                "no keepalived config for this balancer: if the arbiter is lost it stays fail-static"
            );
        } else {
            info!(
                files = files.len(),
                after_s = after.as_secs_f64(),
                "fallback to this balancer's keepalived when the arbiter is silent"
            );
        }
        Some(Link {
            fsm: Fallback::new(settings(cfg), now, !files.is_empty()),
            keepalived: Keepalived::new(
                &cfg.client.keepalived,
                &cfg.main.state_dir,
                &cfg.main.hostname,
            ),
            restart_at: None,
            entered: 0,
        })
    }
}

fn settings(cfg: &config::Config) -> FallbackSettings {
    FallbackSettings {
        after: cfg.client.fallback_after,
        recover: cfg.client.fallback_recover,
        gap: 3 * cfg.main.heartbeat_interval,
    }
}

fn configs(cfg: &config::Config) -> Vec<PathBuf> {
    keepalived::balancer_configs(&cfg.main.service_mapping_wildcard, &cfg.main.hostname)
}

impl Client {
    /// The earliest time the core or the fallback has something to do.
    pub(super) fn next_deadline(&self) -> Instant {
        let core = self.core.next_deadline();
        let fb = self.fallback.as_ref().and_then(|l| {
            let k = l.restart_at;
            match (l.fsm.next_deadline(), k) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        fb.map_or(core, |t| core.min(t))
    }

    /// An arbiter heartbeat arrived.
    pub(super) fn fallback_heard(&mut self, now: Instant) {
        if let Some(l) = self.fallback.as_mut() {
            let acts = l.fsm.heard(now);
            self.fallback_acts(now, acts);
        }
    }

    /// The broker connection changed.
    pub(super) fn fallback_connected(&mut self, now: Instant, up: bool) {
        if let Some(l) = self.fallback.as_mut() {
            let acts = l.fsm.connected(now, up);
            self.fallback_acts(now, acts);
        }
    }

    /// Time passed: the decision, and a keepalived that exited by itself.
    pub(super) fn fallback_tick(&mut self, now: Instant) {
        let Some(l) = self.fallback.as_mut() else {
            return;
        };
        if l.fsm.phase() == Phase::Normal && !l.fsm.configs() {
            l.fsm.set_configs(!configs(&self.cfg).is_empty());
        }
        if l.fsm.active() {
            if let Some(why) = l.keepalived.exited() {
                error!(status = %why, "keepalived exited in fallback: starting it again in {} s", RESTART_AFTER.as_secs());
                l.restart_at = Some(now + RESTART_AFTER);
            }
            if l.restart_at.is_some_and(|t| t <= now) {
                l.restart_at = None;
                self.start_keepalived(now);
            }
        }
        let Some(l) = self.fallback.as_mut() else {
            return;
        };
        let acts = l.fsm.tick(now);
        self.fallback_acts(now, acts);
    }

    fn start_keepalived(&mut self, now: Instant) {
        let files = configs(&self.cfg);
        let Some(l) = self.fallback.as_mut() else {
            return;
        };
        if let Err(e) = l.keepalived.start(&files) {
            error!(error = %e, "keepalived could not be started: trying again in {} s", RESTART_AFTER.as_secs());
            l.restart_at = Some(now + RESTART_AFTER);
        }
    }

    fn fallback_acts(&mut self, now: Instant, acts: Vec<Act>) {
        for act in acts {
            match act {
                Act::Enter { silent } => {
                    warn!(
                        silent_s = silent.as_secs_f64(),
                        "arbiter silent: falling back to this balancer's keepalived (it checks the real servers, programs IPVS and decides announces)"
                    );
                    self.metrics.fallback_entered.inc();
                    self.metrics.fallback_active.set(1);
                    if let Some(l) = self.fallback.as_mut() {
                        l.entered += 1;
                    }
                    self.core.enter_local();
                    self.start_keepalived(now);
                }
                Act::Unavailable { silent } => {
                    error!(
                        silent_s = silent.as_secs_f64(),
                        "arbiter silent, but no keepalived config for this balancer: staying fail-static"
                    );
                    self.metrics.fallback_unavailable.inc();
                }
                Act::RecoverReset => {
                    info!("arbiter silent again: the fallback goes on")
                }
                Act::HandBack => {
                    info!("arbiter answering: re-reading its tree and announces to take IPVS back from keepalived");
                    let out = self.core.hand_back(now);
                    self.perform(out);
                }
                Act::HandBackTimedOut => {
                    warn!("taking IPVS back did not finish: keepalived keeps it, trying again");
                    self.core.enter_local();
                }
                Act::Leave { lasted } => {
                    info!(
                        lasted_s = lasted.as_secs_f64(),
                        "fallback over: the arbiter decides again; stopping keepalived (IPVS left as it is)"
                    );
                    self.metrics.fallback_left.inc();
                    self.metrics.fallback_active.set(0);
                    self.stop_keepalived_then_verify();
                }
            }
        }
    }

    /// The core took IPVS back.
    pub(super) fn taken_back(&mut self) {
        let now = Instant::now();
        if let Some(l) = self.fallback.as_mut() {
            let acts = l.fsm.taken_back(now);
            self.fallback_acts(now, acts);
        }
    }

    fn stop_keepalived_then_verify(&mut self) {
        let Some(l) = self.fallback.as_mut() else {
            return;
        };
        l.restart_at = None;
        let mut k = std::mem::replace(
            &mut l.keepalived,
            Keepalived::new(
                &self.cfg.client.keepalived,
                &self.cfg.main.state_dir,
                &self.cfg.main.hostname,
            ),
        );
        let done = self.done.clone();
        tokio::spawn(async move {
            k.stop().await;
            let _ = done.send(Done::KeepalivedStopped);
        });
    }

    /// A quorum call of the balancer's keepalived (the control socket).
    pub(super) fn local_quorum(
        &mut self,
        now: Instant,
        vip: std::net::IpAddr,
        announce: bool,
        local_pref: Option<u32>,
    ) -> Reply {
        match self.core.local_quorum(now, vip, announce, local_pref) {
            Ok(out) => {
                info!(%vip, announce, "fallback: keepalived's quorum call taken");
                self.metrics.fallback_quorum_calls.inc();
                self.perform(out);
                Reply::ok(if announce {
                    format!("{vip}: announcing")
                } else {
                    format!("{vip}: withdrawing")
                })
            }
            Err(e) => Reply::refused(e.to_string()),
        }
    }

    /// The fallback's row of `status`.
    pub(super) fn fallback_row(&self, now: Instant) -> Option<FallbackRow> {
        let l = self.fallback.as_ref()?;
        Some(FallbackRow {
            phase: l.fsm.phase().name().to_owned(),
            since_s: l
                .fsm
                .entered()
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            configs: l.fsm.configs(),
            keepalived_pid: l.keepalived.pid(),
            entered: l.entered,
        })
    }

    /// The daemon stops: keepalived goes too (IPVS left as it is).
    pub(super) async fn fallback_stop(&mut self) {
        if let Some(l) = self.fallback.as_mut() {
            l.keepalived.stop().await;
        }
    }

    /// A reload: new timings (turning the fallback on or off waits for a restart).
    pub(super) fn fallback_reconfigure(&mut self) {
        if let Some(l) = self.fallback.as_mut() {
            l.fsm.reconfigure(settings(&self.cfg));
        }
    }
}
