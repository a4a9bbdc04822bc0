//! config crate.
