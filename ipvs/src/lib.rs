//! ipvs crate.
