//! Reading the destinations of many services in a pipeline: one thread reads each
//! service's dump off a socket, undecoded, while the caller's thread decodes the one
//! before.
//!
//! The kernel builds dump parts for one reader at a time (under `__ip_vs_mutex`), but
//! decoding is user time that need not wait for it. Measured on 5,000 services × 20
//! destinations under TCG (`ipvs/examples/dump_cost.rs`): read and decoded on one
//! thread, 1.49–1.63 s (0.9–1.0 s of it kernel); two sockets on two threads, half the
//! services each, 1.34–1.39 s, the second reader spinning on the mutex (kernel time
//! 1.6 s); this pipeline, 1.16–1.19 s, against 0.88–0.89 s for the kernel's part alone
//! (the dumps read raw, nothing decoded). Handing the dumps over one by one instead of
//! [`CHUNK`] at a time cost ~0.2 s of wake-ups.
//!
//! A service whose first read took several parts or repeated a destination is settled
//! afterwards on the caller's sockets, as [`Ipvs::service_dests`] does for one service.

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;

use neli::consts::socket::Msg;

use super::dests_request;
use super::fold::{ends_dump, DestsFold, Progress, Read};
use crate::error::{DecodeError, IpvsError, OpKind};
use crate::handle::{recv_datagram, sock_err, Ipvs};
use crate::model::{Dest, DestKey, ServiceKey};
use crate::packet::{Message, NLM_F_DUMP, NLM_F_REQUEST};

/// From this many services on, [`Ipvs::dump`] reads destinations in a pipeline.
pub const PIPELINE_AT: usize = 64;

/// Services handed from the reader to the decoder at once: one wake-up per chunk, not
/// per service.
const CHUNK: usize = 16;

/// Chunks read ahead of the decoder at most (a service of 20 destinations is ~8 KiB).
const PIPELINE_DEPTH: usize = 8;

/// One service's destination dump as read: its sequence number and datagrams.
struct RawDump {
    seq: u32,
    grams: Vec<Vec<u8>>,
}

type Dests = BTreeMap<DestKey, Dest>;

impl Ipvs {
    /// The destinations of each of `keys`, in order: read on `helper`'s socket by a
    /// second thread, decoded (and settled when needed) on this one.
    pub(super) fn dests_pipelined(
        &mut self,
        helper: &mut Ipvs,
        keys: &[ServiceKey],
    ) -> Result<Vec<(ServiceKey, Dests)>, IpvsError> {
        let (tx, rx) = sync_channel::<Result<Vec<RawDump>, IpvsError>>(PIPELINE_DEPTH);
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("ipvs-dump".into())
                .spawn_scoped(scope, move || {
                    for chunk in keys.chunks(CHUNK) {
                        let read: Result<Vec<RawDump>, IpvsError> =
                            chunk.iter().map(|key| helper.read_dests_raw(key)).collect();
                        let failed = read.is_err();
                        // A closed channel: the decoder stopped on an error.
                        if tx.send(read).is_err() || failed {
                            return;
                        }
                    }
                });
            if reader.is_err() {
                // No thread to be had (a process or memory limit): read them here.
                return keys
                    .iter()
                    .map(|key| Ok((*key, self.service_dests(key)?)))
                    .collect();
            }
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(CHUNK) {
                let raws = rx.recv().map_err(|_| IpvsError::Socket {
                    context: "dump reader",
                    source: std::io::Error::other("the reading thread stopped"),
                })??;
                for (key, raw) in chunk.iter().zip(raws) {
                    let read = self.decode_dests(key, &raw)?;
                    out.push((*key, self.settle_dests(key, read)?));
                }
            }
            Ok(out)
        })
    }

    /// Decodes a service's dump as [`Ipvs::read_dests`] would have read it.
    fn decode_dests(
        &self,
        key: &ServiceKey,
        raw: &RawDump,
    ) -> Result<Read<Dests, DestKey>, IpvsError> {
        let mut fold = DestsFold::new(key.family());
        let mut progress = Progress::new(raw.seq);
        for gram in &raw.grams {
            let end = progress.take(OpKind::Dump, self.family, gram, &mut |k, p| fold.take(k, p));
            if let Some(parts) = end {
                return Ok(fold.finish(parts?));
            }
        }
        Err(IpvsError::Decode {
            op: OpKind::Dump,
            source: DecodeError::Missing {
                what: "destination dump",
                attr: "NLMSG_DONE",
            },
        })
    }

    /// Reads the destination dump of `key` off the small-parts socket without decoding
    /// it, for [`Ipvs::dests_pipelined`]: up to the datagram that ends it (`NLMSG_DONE`,
    /// an error, or a malformed header, which the decoder then meets in turn).
    fn read_dests_raw(&mut self, key: &ServiceKey) -> Result<RawDump, IpvsError> {
        let seq = self.next_seq();
        let family = self.family;
        let bytes = Message::request(family, NLM_F_REQUEST | NLM_F_DUMP, seq, dests_request(key))
            .to_bytes();
        self.sock
            .send(&bytes, Msg::empty())
            .map_err(sock_err("send dump request"))?;
        let mut grams = Vec::new();
        loop {
            let n = recv_datagram(&self.sock, &mut self.buf, OpKind::Dump)?;
            let gram = self.buf[..n].to_vec();
            let end = ends_dump(&gram, seq, family);
            grams.push(gram);
            if end {
                return Ok(RawDump { seq, grams });
            }
        }
    }
}
