//! keepalived configuration text → statements → services → one balancer's VIP ports.
//!
//! `include` lines are not followed here (no file system); the include loader is covered
//! by the crate's tests. Must return `Ok` or `Err`, never panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(statements) = config::keepalived::parse_str(text, Path::new("fuzz.conf")) else {
        return;
    };
    let Ok(services) = config::keepalived::services(&statements) else {
        return;
    };
    let mut skipped = Vec::new();
    let _ = config::mapping::resolve(
        "lb.example.net",
        &services.virtual_servers,
        &services.groups,
        &mut skipped,
        &mut Default::default(),
    );
});
