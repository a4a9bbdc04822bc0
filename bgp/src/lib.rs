//! bgp crate.
