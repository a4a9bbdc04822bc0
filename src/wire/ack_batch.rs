//! Several `ack_announce` in one message, for a peer that reads them
//! ([`FEATURE_ACK_BATCH`](super::messages::FEATURE_ACK_BATCH)).
//!
//! A cold start of a balancer owning 10,000 VIPs used to send 10,000 "prepared" acks one way
//! and 10,000 go's the other, each signed, routed by the broker, verified and handed to a
//! loop on its own. The outbox's sender now folds the acks it finds queued behind one another
//! for the same peer into one message ([`absorb`]); nothing waits to be folded, so an ack
//! alone goes out as fast as before. The receiver takes a batch apart and handles each VIP as
//! if it had come alone.

use super::messages::{AckGo, AckGoBatch, AckPrepared, AckPreparedBatch, Message};

/// The most VIPs a sender folds into one `ack_announce` (a receiver accepts up to
/// [`MAX_ACK_BATCH`](super::messages::MAX_ACK_BATCH)).
pub const FOLD_MAX: usize = 256;

/// Folds `next` into `head` when both are acks of the same kind and `next`'s VIP is not in
/// `head` yet (a second word on a VIP keeps its own message, so the receiver's order of words
/// per VIP stays as sent); gives `next` back otherwise.
// `next` comes back whole, by move: boxing it would cost an allocation per ack.
#[allow(clippy::result_large_err)]
pub fn absorb(head: &mut Message, next: Message) -> Result<(), Message> {
    match (&mut *head, next) {
        (Message::AckPrepared(a), Message::AckPrepared(b)) if a.vip != b.vip => {
            *head = Message::AckPreparedBatch(AckPreparedBatch {
                vips: vec![a.vip, b.vip],
            });
            Ok(())
        }
        (Message::AckPreparedBatch(a), Message::AckPrepared(b))
            if a.vips.len() < FOLD_MAX && !a.vips.contains(&b.vip) =>
        {
            a.vips.push(b.vip);
            Ok(())
        }
        (Message::AckGo(a), Message::AckGo(b)) if a.vip != b.vip => {
            let a = AckGo {
                communities: std::mem::take(&mut a.communities),
                ..*a
            };
            *head = Message::AckGoBatch(AckGoBatch { go: vec![a, b] });
            Ok(())
        }
        (Message::AckGoBatch(a), Message::AckGo(b))
            if a.go.len() < FOLD_MAX && !a.go.iter().any(|g| g.vip == b.vip) =>
        {
            a.go.push(b);
            Ok(())
        }
        (_, next) => Err(next),
    }
}

/// A batch taken apart: the messages it stands for, in order (any other message alone).
pub fn split(m: Message) -> Vec<Message> {
    match m {
        Message::AckPreparedBatch(b) => b
            .vips
            .into_iter()
            .map(|vip| Message::AckPrepared(AckPrepared { vip }))
            .collect(),
        Message::AckGoBatch(b) => b.go.into_iter().map(Message::AckGo).collect(),
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::messages::FinAnnounce;
    use std::net::IpAddr;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from([192, 0, 2, u8::try_from(i).unwrap()])
    }

    fn prepared(i: u32) -> Message {
        Message::AckPrepared(AckPrepared { vip: ip(i) })
    }

    fn go(i: u32, lp: u32) -> Message {
        Message::AckGo(AckGo {
            vip: ip(i),
            local_preference: lp,
            communities: if i.is_multiple_of(2) {
                vec!["65000:1".into()]
            } else {
                Vec::new()
            },
        })
    }

    /// Folds `ms` as the outbox does: into the head while it takes them, else a new head.
    fn fold(ms: Vec<Message>) -> Vec<Message> {
        let mut out: Vec<Message> = Vec::new();
        for m in ms {
            let m = match out.last_mut() {
                Some(head) => match absorb(head, m) {
                    Ok(()) => continue,
                    Err(m) => m,
                },
                None => m,
            };
            out.push(m);
        }
        out
    }

    fn unfold(ms: Vec<Message>) -> Vec<Message> {
        ms.into_iter().flat_map(split).collect()
    }

    #[test]
    fn acks_of_one_kind_fold_into_one_message_and_split_back_in_order() {
        let gos: Vec<Message> = (1..=5).map(|i| go(i, 100 + i)).collect();
        let folded = fold(gos.clone());
        assert_eq!(folded.len(), 1);
        assert!(matches!(&folded[0], Message::AckGoBatch(b) if b.go.len() == 5));
        assert_eq!(unfold(folded), gos);

        let preps: Vec<Message> = (1..=3).map(prepared).collect();
        let folded = fold(preps.clone());
        assert_eq!(
            folded,
            vec![Message::AckPreparedBatch(AckPreparedBatch {
                vips: vec![ip(1), ip(2), ip(3)]
            })]
        );
        assert_eq!(unfold(folded), preps);
    }

    #[test]
    fn a_second_word_on_a_vip_or_another_kind_starts_a_new_message() {
        let fin = Message::FinAnnounce(FinAnnounce { vips: vec![ip(9)] });
        let ms = vec![
            go(1, 100),
            go(2, 100),
            go(1, 200), // the same VIP again: a new message, after the first
            go(5, 100),
            fin.clone(),
            go(3, 100),
            prepared(4),
        ];
        let folded = fold(ms.clone());
        assert_eq!(folded.len(), 5, "{folded:?}");
        assert!(matches!(&folded[0], Message::AckGoBatch(b) if b.go.len() == 2));
        assert!(matches!(&folded[1], Message::AckGoBatch(b) if b.go.len() == 2));
        assert_eq!(folded[2], fin);
        assert_eq!(folded[3], go(3, 100));
        assert_eq!(folded[4], prepared(4));
        assert_eq!(unfold(folded), ms);
    }

    #[test]
    fn a_batch_stops_at_the_fold_limit() {
        let n = u32::try_from(FOLD_MAX).unwrap();
        let ms: Vec<Message> = (0..n + 3)
            .map(|i| {
                Message::AckPrepared(AckPrepared {
                    vip: IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                })
            })
            .collect();
        let folded = fold(ms.clone());
        assert_eq!(folded.len(), 2);
        assert!(matches!(&folded[0], Message::AckPreparedBatch(b) if b.vips.len() == FOLD_MAX));
        assert_eq!(unfold(folded), ms);
    }

    #[test]
    fn a_fold_is_a_message_its_receiver_decodes_again() {
        use crate::wire::messages::Direction;
        for (ms, dir) in [
            (
                (1..=4).map(|i| go(i, 100)).collect::<Vec<_>>(),
                Direction::ToClient,
            ),
            ((1..=4).map(prepared).collect(), Direction::ToServer),
        ] {
            let folded = fold(ms.clone());
            let m = &folded[0];
            assert!(m.travels(dir));
            let body = m.encode_body().unwrap();
            let back = Message::decode(m.kind().as_str(), dir, &body).unwrap();
            assert_eq!(&back, m);
            assert_eq!(unfold(vec![back]), ms);
        }
    }
}
