//! `config.ini` + `secret.ini` and the small decoders of the config crate.
//!
//! Input: UTF-8 text; a NUL splits it into config.ini (before) and secret.ini (after).
//! Every decoder must return `Ok` or `Err`, never panic.

#![no_main]

use std::net::IpAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cfg, secret) = match text.split_once('\0') {
        Some((c, s)) => (c, Some(s)),
        None => (text, None),
    };
    if let Ok(c) = config::Config::from_strs(cfg, secret) {
        let _ = c.amqp_url();
        let _ = c.desc_path(IpAddr::from([192, 0, 2, 1]));
    }
    let _ = config::ini::Ini::parse(text, Path::new("fuzz.ini"));
    if let Ok(u) = config::AmqpUrl::parse(text) {
        let _ = u.to_url_with(Some("p w"));
    }
    if let Ok(t) = config::DescTemplate::parse(text) {
        let vip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        assert_eq!(t.vip_of(&t.path(vip)), Some(vip));
    }
    if let Ok(w) = config::MappingWildcard::parse(text) {
        let _ = w.balancer_of(Path::new(text));
    }
    let _ = config::mapping::from_json(text, Path::new("svc_mapping.json"));
});
