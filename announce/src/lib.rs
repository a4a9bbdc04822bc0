//! announce crate.
