//! The announce crate's decoders: desc files and the quorum argument.
//!
//! Input: bytes; parsed as a desc file, and (when UTF-8) as a quorum argument.
//! Each must return `Ok` or `Err`, never panic; a parsed desc must survive a
//! round trip, and a recount must keep `announce == (active == total)`.

#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut d) = announce::Desc::parse(data, Path::new("fuzz.json")) {
        assert!(d.active <= d.total);
        let bytes = d.to_bytes().expect("a parsed desc encodes");
        let again = announce::Desc::parse(&bytes, Path::new("fuzz.json")).expect("round trip");
        assert_eq!(again, d);
        d.recount(&BTreeSet::from([80, 443]));
        assert_eq!(d.announce, d.active == d.total);
        assert!(d.active <= d.total);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(arg) = announce::parse_arg(text) {
            assert!(announce::addr_plan::is_vip_candidate(arg.vip));
        }
    }
});
