//! Decoding a dump datagram by datagram, apart from reading it, so that the same code
//! serves a dump read and decoded on one thread ([`Ipvs::dump_each`](super::Ipvs)) and
//! one read on another ([`super::pipeline`]).

use std::collections::BTreeMap;

use crate::error::{DecodeError, Errno, IpvsError, OpKind};
use crate::model::{Dest, DestKey, Family};
use crate::packet::{dest_from_payload, Frame, Frames, IPVS_CMD_ATTR_DEST, NLA_TYPE_MASK};

/// What one read of a dump gave: the objects, their keys (`None` when a key came twice,
/// a sure sign of a shifted part), and the number of parts.
pub(super) struct Read<T, K> {
    pub items: T,
    pub keys: Option<Vec<K>>,
    pub parts: usize,
}

/// One dump being read: its sequence number, the parts that carried its messages so
/// far, and the first error met.
pub(super) struct Progress {
    seq: u32,
    parts: usize,
    failed: Option<DecodeError>,
}

impl Progress {
    pub fn new(seq: u32) -> Self {
        Self {
            seq,
            parts: 0,
            failed: None,
        }
    }

    /// Takes the next datagram, handing `each` the top-level attributes of its IPVS
    /// messages as (type without flags, payload). `Some` once the dump has ended: the
    /// number of parts that carried messages, or the first error. After an attribute or
    /// `each` failed, later messages are skipped but the dump is followed to its
    /// `NLMSG_DONE`; a malformed message header ends it at once.
    pub fn take(
        &mut self,
        op: OpKind,
        family: u16,
        gram: &[u8],
        each: &mut impl FnMut(u16, &[u8]) -> Result<(), DecodeError>,
    ) -> Option<Result<usize, IpvsError>> {
        let mut carried = false;
        for frame in Frames::new(gram, family) {
            let (seq, frame) = match frame {
                Ok(f) => f,
                Err(source) => return Some(Err(IpvsError::Decode { op, source })),
            };
            if seq != self.seq {
                continue;
            }
            match frame {
                Frame::Ipvs { attrs, .. } if self.failed.is_none() => {
                    carried = true;
                    for attr in attrs {
                        if let Err(e) = attr.and_then(|(t, p)| each(t & NLA_TYPE_MASK, p)) {
                            self.failed = Some(e);
                            break;
                        }
                    }
                }
                Frame::Done => {
                    let parts = self.parts + usize::from(carried);
                    return Some(match self.failed.take() {
                        None => Ok(parts),
                        Some(source) => Err(IpvsError::Decode { op, source }),
                    });
                }
                Frame::Error(error) if error != 0 => {
                    return Some(Err(IpvsError::Kernel {
                        op,
                        id: String::new(),
                        errno: Errno(-error),
                    }))
                }
                _ => {}
            }
        }
        self.parts += usize::from(carried);
        None
    }
}

/// Whether `gram` ends the dump of sequence number `seq`, as [`Progress::take`] would
/// find: its `NLMSG_DONE`, an error, or a malformed message header.
pub(super) fn ends_dump(gram: &[u8], seq: u32, family: u16) -> bool {
    Frames::new(gram, family).any(|frame| match frame {
        Ok((s, Frame::Done)) => s == seq,
        Ok((s, Frame::Error(e))) => s == seq && e != 0,
        Ok(_) => false,
        Err(_) => true,
    })
}

/// A service's destinations built from its dump's attributes.
pub(super) struct DestsFold {
    family: Family,
    dests: BTreeMap<DestKey, Dest>,
    twice: bool,
}

impl DestsFold {
    /// For a service of address family `family` (a destination without its own
    /// `ADDR_FAMILY` has the service's).
    pub fn new(family: Family) -> Self {
        Self {
            family,
            dests: BTreeMap::new(),
            twice: false,
        }
    }

    /// One top-level attribute of a destination dump message.
    pub fn take(&mut self, kind: u16, payload: &[u8]) -> Result<(), DecodeError> {
        if kind == IPVS_CMD_ATTR_DEST {
            let dest = dest_from_payload(payload, self.family)?;
            self.twice |= self.dests.insert(dest.key, dest).is_some();
        }
        Ok(())
    }

    pub fn finish(self, parts: usize) -> Read<BTreeMap<DestKey, Dest>, DestKey> {
        let keys = (!self.twice).then(|| self.dests.keys().copied().collect());
        Read {
            items: self.dests,
            keys,
            parts,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::packet::{
        dest_attrs, Cmd, DestAttr, IpvsAttr, IpvsMessage, Message, Nested, Payload, NLM_F_MULTI,
    };
    use proptest::prelude::*;
    use std::net::IpAddr;

    const FAMILY: u16 = 0x20;

    fn dest(i: u8) -> Dest {
        Dest::new(IpAddr::from([198, 51, 100, i]), 80).weight(u32::from(i))
    }

    fn dest_msg(seq: u32, attrs: Vec<DestAttr>) -> Vec<u8> {
        let msg = IpvsMessage::new(Cmd::NewDest, vec![IpvsAttr::Dest(Nested::new(attrs))]);
        Message {
            kind: FAMILY,
            flags: NLM_F_MULTI,
            seq,
            pid: 0,
            payload: Payload::Ipvs(msg),
        }
        .to_bytes()
    }

    fn end_msg(seq: u32, payload: Payload) -> Vec<u8> {
        let kind = match payload {
            Payload::Done(_) => 3,
            _ => 2,
        };
        Message {
            kind,
            flags: NLM_F_MULTI,
            seq,
            pid: 0,
            payload,
        }
        .to_bytes()
    }

    fn done(seq: u32) -> Vec<u8> {
        end_msg(seq, Payload::Done(0i32.to_ne_bytes().to_vec()))
    }

    /// Where a dump ended (datagram index) and how.
    type Ended = Option<(usize, Result<usize, IpvsError>)>;

    /// Feeds datagrams to a fold until the dump ends.
    fn run(grams: &[Vec<u8>], seq: u32) -> (Ended, DestsFold) {
        let mut fold = DestsFold::new(Family::Inet);
        let mut progress = Progress::new(seq);
        for (i, gram) in grams.iter().enumerate() {
            if let Some(end) =
                progress.take(OpKind::Dump, FAMILY, gram, &mut |k, p| fold.take(k, p))
            {
                return (Some((i, end)), fold);
            }
        }
        (None, fold)
    }

    #[test]
    fn parts_count_only_datagrams_that_carried_this_dumps_messages() {
        let seq = 7;
        let part1 = [
            dest_msg(seq, dest_attrs(&dest(1))),
            dest_msg(seq, dest_attrs(&dest(2))),
        ]
        .concat();
        // A stray answer to another request, then the second part and the end in one.
        let part2 = [
            dest_msg(seq + 1, dest_attrs(&dest(9))),
            dest_msg(seq, dest_attrs(&dest(3))),
            done(seq),
        ]
        .concat();
        let (end, fold) = run(&[part1, part2], seq);
        let (at, parts) = end.unwrap();
        assert_eq!((at, parts.unwrap()), (1, 2));
        let read = fold.finish(2);
        assert_eq!(read.items.len(), 3);
        assert_eq!(
            read.items.values().map(|d| d.weight).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(read.keys.is_some());
        // DONE alone in its datagram: that datagram carried nothing.
        let (end, _) = run(&[dest_msg(seq, dest_attrs(&dest(1))), done(seq)], seq);
        assert_eq!(end.unwrap().1.unwrap(), 1);
    }

    #[test]
    fn a_destination_read_twice_leaves_no_key_list() {
        let seq = 1;
        let gram = [
            dest_msg(seq, dest_attrs(&dest(1))),
            dest_msg(seq, dest_attrs(&dest(1))),
            done(seq),
        ]
        .concat();
        let (end, fold) = run(&[gram], seq);
        let parts = end.unwrap().1.unwrap();
        let read = fold.finish(parts);
        assert_eq!(read.items.len(), 1);
        assert!(read.keys.is_none());
    }

    #[test]
    fn a_bad_attribute_is_reported_only_once_the_dump_is_read_to_its_end() {
        let seq = 3;
        // A destination without its address.
        let bad = dest_msg(seq, vec![DestAttr::Port(80)]);
        let (end, _) = run(&[bad.clone(), dest_msg(seq, dest_attrs(&dest(2)))], seq);
        assert!(end.is_none(), "stopped before NLMSG_DONE");
        let (end, _) = run(&[bad, done(seq)], seq);
        let (at, res) = end.unwrap();
        assert_eq!(at, 1);
        assert!(matches!(res, Err(IpvsError::Decode { .. })), "{res:?}");
    }

    #[test]
    fn a_kernel_error_ends_the_dump_with_its_errno() {
        let seq = 4;
        let err = end_msg(
            seq,
            Payload::Error {
                error: -22,
                echo: vec![0; 16],
            },
        );
        let (end, _) = run(&[err], seq);
        match end.unwrap().1 {
            Err(IpvsError::Kernel { errno, .. }) => assert_eq!(errno, Errno(22)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_header_ends_the_dump_at_once() {
        let mut gram = dest_msg(5, dest_attrs(&dest(1)));
        gram[0] = 0xff; // nlmsg_len beyond the datagram
        let (end, _) = run(&[gram.clone(), done(5)], 5);
        let (at, res) = end.unwrap();
        assert_eq!(at, 0);
        assert!(matches!(res, Err(IpvsError::Decode { .. })), "{res:?}");
        assert!(ends_dump(&gram, 5, FAMILY));
    }

    proptest! {
        /// The pipeline's reader stops at the datagram the decoder then ends at: for any
        /// run of datagrams, `ends_dump` is true exactly where `Progress::take` returns.
        #[test]
        fn the_reader_and_the_decoder_agree_on_where_a_dump_ends(
            grams in prop::collection::vec(
                prop::collection::vec((0u8..6, 1u8..200, prop::bool::weighted(0.9)), 0..4),
                1..8,
            ),
        ) {
            let seq = 9;
            let grams: Vec<Vec<u8>> = grams
                .iter()
                .map(|msgs| {
                    msgs.iter()
                        .map(|&(kind, i, ours)| {
                            let s = if ours { seq } else { seq + 1 };
                            match kind {
                                0 => done(s),
                                1 => end_msg(s, Payload::Error { error: -2, echo: vec![0; 16] }),
                                2 => end_msg(s, Payload::Error { error: 0, echo: vec![0; 16] }),
                                _ => dest_msg(s, dest_attrs(&dest(i))),
                            }
                        })
                        .collect::<Vec<_>>()
                        .concat()
                })
                .collect();
            let mut progress = Progress::new(seq);
            let mut fold = DestsFold::new(Family::Inet);
            for gram in &grams {
                let ended = progress
                    .take(OpKind::Dump, FAMILY, gram, &mut |k, p| fold.take(k, p))
                    .is_some();
                prop_assert_eq!(ended, ends_dump(gram, seq, FAMILY));
                if ended {
                    break;
                }
            }
        }
    }
}
