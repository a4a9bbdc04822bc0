//! The typed sections of `config.ini`.

pub mod bfd;
pub mod bgp;
pub mod daemon;
pub mod main;
