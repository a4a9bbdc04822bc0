//! The BGP message decoder (`bgp::packet::Message::decode`).
//!
//! Input: raw bytes as read from a peer (one message, header included). Decoding must return
//! `Ok` or `Err`, never panic, under both 2- and 4-octet AS contexts; whatever decodes must
//! re-encode to at most 4096 bytes that decode again. The framing helper must never panic
//! either. Seeds: messages gobgpd sent (bgp/testdata/capture.sh), in fuzz/seeds/bgp_decode/.

#![no_main]

use bgp::packet::{message_len, DecodeCtx, EncodeCtx, Message, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = message_len(data);
    for four_octet_as in [true, false] {
        let dctx = DecodeCtx { four_octet_as };
        if let Ok(m) = Message::decode(data, &dctx) {
            let bytes = m.encode(&EncodeCtx { four_octet_as });
            assert!(bytes.len() <= MAX_MESSAGE_LEN, "re-encoded to {} bytes", bytes.len());
            assert!(
                Message::decode(&bytes, &dctx).is_ok(),
                "our own encoding does not decode: {m:?}"
            );
        }
        if let Err(e) = Message::decode(data, &dctx) {
            let n = bgp::packet::Notification::from(&e);
            let _ = Message::Notification(n).encode(&EncodeCtx::default());
            let _ = e.action();
        }
    }
});
