//! The order of the arbiter's word on each VIP.
//!
//! `syn_announce`, `ack_announce` and `fin_announce` travel on the announce lane, numbered by
//! the arbiter in the order it decided them. A message whose publisher confirm was lost (a
//! broker node died, or nacked it) is published again with its first id, and can then arrive
//! after the arbiter's next word on the same VIP: a `fin_announce` sent again behind the
//! `syn_announce` that followed it would withdraw a VIP that has quorum until the arbiter's
//! syn repair noticed. So a VIP keeps the id of the last of these messages acted on for it,
//! and a message older than that says nothing more about the VIP. The replay window has
//! already dropped exact copies; an arbiter restart opens a higher epoch, so its messages are
//! always newer.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::wire::{Message, MessageId};

/// The id of the last announce message acted on, per VIP.
#[derive(Debug, Default)]
pub struct AnnounceOrder {
    last: HashMap<IpAddr, MessageId>,
}

impl AnnounceOrder {
    /// Keeps of `msg` the VIPs no newer announce message spoke of, and records `id` for them;
    /// returns what is left (`None`: nothing) and the VIPs taken out. Other messages pass.
    pub fn admit(&mut self, id: MessageId, msg: Message) -> (Option<Message>, Vec<IpAddr>) {
        let mut late = Vec::new();
        let kept = match msg {
            Message::SynAnnounce(mut syn) => {
                syn.vips.retain(|vip, _| self.take(id, *vip, &mut late));
                (!syn.vips.is_empty()).then_some(Message::SynAnnounce(syn))
            }
            Message::FinAnnounce(mut fin) => {
                fin.vips.retain(|vip| self.take(id, *vip, &mut late));
                (!fin.vips.is_empty()).then_some(Message::FinAnnounce(fin))
            }
            Message::AckGo(go) => self
                .take(id, go.vip, &mut late)
                .then_some(Message::AckGo(go)),
            other => Some(other),
        };
        (kept, late)
    }

    /// Whether `id` is newer than the last word on `vip` (then it is the last).
    fn take(&mut self, id: MessageId, vip: IpAddr, late: &mut Vec<IpAddr>) -> bool {
        match self.last.get(&vip) {
            Some(last) if *last >= id => {
                late.push(vip);
                false
            }
            _ => {
                self.last.insert(vip, id);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{AckGo, AnnounceSpec, FinAnnounce, SynAnnounce};

    fn id(seq: u64) -> MessageId {
        MessageId { epoch: 7, seq }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn syn(vips: &[&str]) -> Message {
        Message::SynAnnounce(SynAnnounce {
            vips: vips
                .iter()
                .map(|v| {
                    let spec = AnnounceSpec {
                        tree: ipvs::Tree::default(),
                        serial: None,
                        local_preference: 100,
                        communities: Vec::new(),
                    };
                    (ip(v), spec)
                })
                .collect(),
        })
    }

    fn fin(vips: &[&str]) -> Message {
        Message::FinAnnounce(FinAnnounce {
            vips: vips.iter().map(|v| ip(v)).collect(),
        })
    }

    #[test]
    fn a_fin_sent_again_after_the_next_syn_says_nothing() {
        let mut o = AnnounceOrder::default();
        // fin (seq 10) lost its confirm; the syn (seq 11) arrives first, the fin's copy after.
        let (kept, late) = o.admit(id(11), syn(&["192.0.2.10"]));
        assert!(kept.is_some() && late.is_empty());
        let (kept, late) = o.admit(id(10), fin(&["192.0.2.10"]));
        assert_eq!(kept, None);
        assert_eq!(late, vec![ip("192.0.2.10")]);
    }

    #[test]
    fn only_the_vips_with_a_newer_word_are_taken_out() {
        let mut o = AnnounceOrder::default();
        o.admit(id(11), syn(&["192.0.2.10"]));
        let (kept, late) = o.admit(id(10), fin(&["192.0.2.10", "192.0.2.11"]));
        assert_eq!(kept, Some(fin(&["192.0.2.11"])));
        assert_eq!(late, vec![ip("192.0.2.10")]);
        // The fin of 192.0.2.11 is now its last word: an older syn of it is late too.
        let (kept, _) = o.admit(id(9), syn(&["192.0.2.11"]));
        assert_eq!(kept, None);
    }

    #[test]
    fn in_order_everything_passes_and_a_new_epoch_is_newer() {
        let mut o = AnnounceOrder::default();
        for (seq, m) in [(1, syn(&["192.0.2.10"])), (2, fin(&["192.0.2.10"]))] {
            assert!(o.admit(id(seq), m).0.is_some());
        }
        let go = Message::AckGo(AckGo {
            vip: ip("192.0.2.10"),
            local_preference: 100,
            communities: Vec::new(),
        });
        assert!(o.admit(id(3), go.clone()).0.is_some());
        assert_eq!(o.admit(id(3), go.clone()).0, None, "the same id twice");
        let restarted = MessageId { epoch: 8, seq: 1 };
        assert!(o.admit(restarted, syn(&["192.0.2.10"])).0.is_some());
        assert!(o.admit(id(1), Message::TreeRequest).0.is_some());
    }
}
