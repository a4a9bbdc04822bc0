//! The IPVS generic netlink codec (`ipvs::packet`) and the model conversions behind it.
//!
//! Input: one netlink datagram as the kernel would deliver it (IPVS family id 0x20, as in
//! ipvs/tests/vectors/ipvsadm-6.1.txt, whose datagrams seed fuzz/seeds/ipvs_nla). Decoding
//! must return `Ok` or `Err`, never panic; what decodes must emit bytes that decode to
//! the same messages; every service, destination, info and daemon attribute list must
//! convert to the model or fail cleanly. Valid UTF-8 input is also fed to the
//! `ipvsadm -Sn` rule parser and the JSON tree parser. The dump path's borrowed decoders
//! (`Frames`, `service_from_payload`, `dest_from_payload`) must accept and refuse what the
//! typed ones do, with the same result.

#![no_main]

use ipvs::model::Family;
use ipvs::packet::{
    dest_from_attrs, dest_from_payload, parse_nlas, service_from_attrs, service_from_payload,
    DaemonState, DestAttr, Frame, Frames, Info, InfoAttr, IpvsAttr, Message, Payload, ServiceAttr,
};
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
    // The dump path's borrowed decoders agree with the typed ones on any attribute stream.
    for fam in [Family::Inet, Family::Inet6] {
        let typed = parse_nlas::<DestAttr>(data).and_then(|a| dest_from_attrs(&a, fam));
        match (typed, dest_from_payload(data, fam)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "dest_from_payload differs"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("typed {a:?} but borrowed {b:?}"),
        }
    }
    match (
        parse_nlas::<ServiceAttr>(data).and_then(|a| service_from_attrs(&a)),
        service_from_payload(data),
    ) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "service_from_payload differs"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("typed {a:?} but borrowed {b:?}"),
    }
    for frame in Frames::new(data, FAMILY).flatten() {
        if let (_, Frame::Ipvs { attrs, .. }) = frame {
            for (_, payload) in attrs.flatten() {
                let _ = service_from_payload(payload);
                let _ = dest_from_payload(payload, Family::Inet);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(tree) = ipvs::Tree::from_ipvsadm_rules(text) {
            let _ = tree.to_ipvsadm_rules();
        }
        let _ = serde_json::from_str::<ipvs::Tree>(text);
    }
});
