//! Always-on mini fuzzing: thousands of random and mutated inputs per decoder, from a
//! fixed seed, must give `Ok` or `Err` — never a panic, never a hang. The real fuzzing
//! is `fuzz/run-all` (cargo-fuzz); this keeps the cheap part in every test run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use config::{keepalived, mapping, AmqpUrl, Config, DescTemplate, MappingWildcard};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters that matter to the grammars, plus some that should not.
const ALPHABET: &[u8] = b"[]{}=:;#!\"' \t\n\r,.-/*?%0123456789abcdefxyzABC@\\\x00\xff";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 => v.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            1 if at < v.len() => {
                v.remove(at);
            }
            2 if at < v.len() => v[at] = ALPHABET[rng.below(ALPHABET.len())],
            3 => {
                // duplicate a slice (repeats lines, braces, keys)
                let len = rng.below(40).min(v.len() - at.min(v.len()));
                let chunk: Vec<u8> = v[at..at + len].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            4 => v.truncate(at),
            _ => {
                let n = rng.below(16);
                for _ in 0..n {
                    v.insert(at.min(v.len()), (rng.next() & 0xff) as u8);
                }
            }
        }
    }
    v
}

fn run(seeds: &[&str], iterations: usize, seed: u64, mut f: impl FnMut(&str)) {
    let mut rng = Rng(seed);
    for i in 0..iterations {
        let input = if i % 10 == 0 {
            (0..rng.below(200))
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect()
        } else {
            mutate(&mut rng, seeds[i % seeds.len()].as_bytes())
        };
        f(&String::from_utf8_lossy(&input));
    }
}

const CONFIG_SEED: &str =
    "[main]\namqp_server = amqp://u@broker:5672/v\nhostname = lb1.example.net\n\
    vip_description_filepath = /run/k-{vip}-d.json\nhttp_listen = [::1]:9180\n\
    service_mapping_wildcard = /etc/keepalived/lbs/*/*/*.conf\n\
    [bgp]\nlocal_as = 65000\nrouter_id = 192.0.2.1\ncommunities = 65000:1 1:2:3\n\
    [bgp.peer.r1]\naddress = 2001:db8::1\nremote_as = 65001\npassword = \"x ;y\"\n\
    [announce]\nfirewall_check = /bin/fw 'a b'\n[client]\nsync_dirs = /a, /b\n";
const SECRET_SEED: &str =
    "[secret]\nnode_key = nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\nbgp_password.r1 = k\namqp_password = p\n";

#[test]
fn config_ini_never_panics() {
    run(&[CONFIG_SEED], 3000, 0x5eed_0001, |text| {
        let _ = Config::from_strs(text, None);
    });
    run(&[SECRET_SEED], 2000, 0x5eed_0002, |text| {
        let _ = Config::from_strs(CONFIG_SEED, Some(text));
    });
}

const KEEPALIVED_SEED: &str = "! c\nvirtual_server_group g {\n 192.0.2.1-9 80\n 2001:db8::a-f 443\n fwmark 7\n}\n\
    virtual_server group g {\n quorum_up \"/q up 192.0.2.1,b-100,80\"\n real_server 198.51.100.1 80 { weight 1 }\n}\n\
    virtual_server fwmark 9\n{\n quorum_down /q down 2001:db8::9,b-1,0\n}\n\
    virtual_server 192.0.2.5 80 { # x\n HTTP_GET { url { path /p } }\n}\ninclude x/*.conf\n";

#[test]
fn keepalived_never_panics() {
    let www = include_str!("fixtures/keepalived/lbs/lb1.example.net/web/www.conf");
    run(&[KEEPALIVED_SEED, www], 4000, 0x5eed_0003, |text| {
        if let Ok(stmts) = keepalived::parse_str(text, Path::new("fuzz.conf")) {
            if let Ok(s) = keepalived::services(&stmts) {
                let mut skipped = Vec::new();
                let _ = mapping::resolve(
                    "lb",
                    &s.virtual_servers,
                    &s.groups,
                    &mut skipped,
                    &mut Default::default(),
                );
            }
        }
    });
}

#[test]
fn small_decoders_never_panic() {
    run(
        &[
            "amqps://u:p@[2001:db8::1]:5671/%2f?x=1",
            "/var/run/keepalived-{vip}-desc.json",
            "/etc/keepalived/lbs/*/*/*.conf",
            r#"{"lb1": ["192.0.2.1", "2001:db8::1"], "lb2": []}"#,
        ],
        4000,
        0x5eed_0004,
        |text| {
            let _ = AmqpUrl::parse(text).map(|u| u.to_url_with(Some("p w")));
            if let Ok(t) = DescTemplate::parse(text) {
                let p = t.path("192.0.2.1".parse().unwrap());
                assert_eq!(t.vip_of(&p), Some("192.0.2.1".parse().unwrap()), "{text:?}");
            }
            if let Ok(w) = MappingWildcard::parse(text) {
                let _ = w.balancer_of(Path::new(text));
            }
            let _ = mapping::from_json(text, Path::new("m.json"));
        },
    );
}
