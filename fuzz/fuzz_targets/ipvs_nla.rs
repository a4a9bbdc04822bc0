//! The IPVS generic netlink codec (`ipvs::packet`) and the model conversions behind it.
//!
//! Input: one netlink datagram as the kernel would deliver it (IPVS family id 0x20, as in
//! ipvs/tests/vectors/ipvsadm-6.1.txt, whose datagrams seed fuzz/seeds/ipvs_nla). Decoding
//! must return `Ok` or `Err`, never panic; what decodes must emit bytes that decode to
//! the same messages; every service, destination, info and daemon attribute list must
//! convert to the model or fail cleanly. Valid UTF-8 input is also fed to the
//! `ipvsadm -Sn` rule parser and the JSON tree parser.

#![no_main]

use ipvs::model::Family;
use ipvs::packet::{dest_from_attrs, service_from_attrs, DaemonState, Info, InfoAttr, IpvsAttr, Message, Payload};
use libfuzzer_sys::fuzz_target;

const FAMILY: u16 = 0x20;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = Message::decode_all(data, FAMILY) {
        let mut out = Vec::new();
        for m in &msgs {
            m.emit(&mut out);
        }
        match Message::decode_all(&out, FAMILY) {
            Ok(again) => assert_eq!(again, msgs, "emit(decode(x)) decodes differently"),
            Err(e) => panic!("emitted bytes do not decode: {e}"),
        }
        for m in &msgs {
            let Payload::Ipvs(im) = &m.payload else { continue };
            let mut info = Vec::<InfoAttr>::new();
            for a in &im.attrs {
                match a {
                    IpvsAttr::Service(n) => {
                        if let Ok(svc) = service_from_attrs(&n.attrs) {
                            let _ = svc.key().to_string();
                            let _ = svc.spec.validate();
                        }
                    }
                    IpvsAttr::Dest(n) => {
                        let _ = dest_from_attrs(&n.attrs, Family::Inet);
                        let _ = dest_from_attrs(&n.attrs, Family::Inet6);
                    }
                    IpvsAttr::Daemon(n) => {
                        let _ = DaemonState::from_attrs(&n.attrs);
                    }
                    IpvsAttr::Info(i) => info.push(i.clone()),
                    _ => {}
                }
            }
            let _ = Info::from_attrs(&info);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(tree) = ipvs::Tree::from_ipvsadm_rules(text) {
            let _ = tree.to_ipvsadm_rules();
        }
        let _ = serde_json::from_str::<ipvs::Tree>(text);
    }
});
