//! ipvs-sync: control plane for fleets of Linux IPVS load balancers.
//!
//! The library holds the CLI, the two daemons (`server`, the arbiter; `client`, each
//! balancer), the AMQP transport and the wiring of tasks; the protocol and kernel work lives
//! in the workspace crates `bgp`, `ipvs`, `announce` and `config`. The `ipvs-sync` binary is
//! `src/main.rs`, a few lines over [`cli`] and [`cmd`]; fuzz targets, benches and tests use
//! this crate directly.

pub mod cli;
pub mod client;
pub mod cmd;
pub mod daemon;
pub mod logging;
pub mod server;
pub mod wire;
