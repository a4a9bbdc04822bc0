//! [`Ipvs::dump`]: the kernel's table read whole, and made to read right although the
//! kernel's dumps are not atomic.
//!
//! A dump comes in parts, one per read; each part is built under the kernel's lock, but
//! the next one resumes by *position*: the service dump counts entries of one hash table
//! shared by every network namespace of the host, the destination dump counts the
//! service's list. A service added or removed anywhere on the host between two parts
//! (a destination of the same service, for destination dumps) shifts the rest, and one
//! entry is skipped or read twice. `ipvsadm -Sn` has the same flaw. On an arbiter, whose
//! dump becomes every balancer's table, a skipped real server would be withdrawn from the
//! whole fleet for a cycle. So:
//!
//! - a dump read in one part is consistent as it stands;
//! - the service list, when it took several parts, is read again, alternately in parts
//!   of another size (a second socket read with the kernel's largest parts) so that the
//!   part boundaries, where entries go missing, fall on other services, until two reads
//!   in a row agree or after [`DUMP_TRIES`] reads; a service that some read saw and the
//!   last one lacks is looked up by key (`GET_SERVICE`, exact and atomic): kept if it
//!   still exists, dropped if it went away in between. Only a service skipped by every
//!   read, at part boundaries of both sizes, can still be missed;
//! - a service's destinations, when they took several parts, are read again in the
//!   largest parts (one part up to about 90 destinations); if that still takes several,
//!   until two reads in a row agree, or [`IpvsError::Unsettled`] after [`DUMP_TRIES`].
//!
//! Each dump decodes straight from the datagrams it read (`Frames`,
//! [`service_from_payload`], `dest_from_payload`): 100,000 destinations, no allocation per
//! attribute. From [`PIPELINE_AT`] services on, the destination dumps are read on one
//! thread and decoded on another (`pipeline.rs`); `fold.rs` is the decoding both share.

use std::collections::{BTreeMap, BTreeSet};

use neli::consts::socket::Msg;

use crate::error::{DecodeError, Errno, IpvsError, OpKind};
use crate::handle::{recv_datagram, sock_err, Ipvs};
use crate::model::{Dest, DestKey, Service, ServiceKey, Tree};
use crate::packet::{
    parse_nlas, service_from_payload, service_key_attrs, Cmd, DaemonState, IpvsAttr, IpvsMessage,
    Message, Nested, IPVS_CMD_ATTR_DAEMON, IPVS_CMD_ATTR_SERVICE, NLA_TYPE_MASK, NLM_F_DUMP,
    NLM_F_REQUEST,
};

/// How many times a multi-part dump that keeps changing is read.
pub const DUMP_TRIES: usize = 5;

mod fold;
mod pipeline;

use fold::{DestsFold, Progress, Read};
pub use pipeline::PIPELINE_AT;

/// `ESRCH`: no such service.
const ESRCH: i32 = 3;

/// Which of the handle's sockets a dump is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    /// The main socket: small, fast parts.
    Small,
    /// The second socket: the kernel's largest parts.
    Wide,
}

impl Ipvs {
    /// The whole table with counters, like `ipvsadm -Sn` (one dump of services, then one
    /// dump of destinations per service), checked as the module says.
    ///
    /// From [`PIPELINE_AT`] services on, the destinations are read in a pipeline: a
    /// second thread reads the dumps off the helper handle's socket while this one
    /// decodes them (see `dump/pipeline.rs`).
    pub fn dump(&mut self) -> Result<Tree, IpvsError> {
        let mut tree = self.service_list()?;
        let keys: Vec<ServiceKey> = tree.services().map(|s| *s.key()).collect();
        let read = match self.helper.take() {
            Some(mut helper) if keys.len() >= PIPELINE_AT => {
                let read = self.dests_pipelined(&mut helper, &keys);
                self.helper = Some(helper);
                read?
            }
            helper => {
                self.helper = helper;
                keys.iter()
                    .map(|key| Ok((*key, self.service_dests(key)?)))
                    .collect::<Result<Vec<_>, IpvsError>>()?
            }
        };
        for (key, dests) in read {
            if let Some(svc) = tree.get_mut(&key) {
                svc.dests = dests;
            }
        }
        Ok(tree)
    }

    /// The services of `vips` with their destinations and counters: one dump of the services,
    /// then one of destinations for each service of those VIPs only (like `ipvsadm -Ln -t
    /// VIP:PORT` for each of them). Fwmark services are in when `marks` gives their mark one
    /// of `vips`.
    pub fn dump_vips(
        &mut self,
        vips: &BTreeSet<std::net::IpAddr>,
        marks: &crate::FwmarkVips,
    ) -> Result<Tree, IpvsError> {
        let mut tree = self.service_list()?.filter_vips(vips, marks);
        let keys: Vec<ServiceKey> = tree.services().map(|s| *s.key()).collect();
        for key in keys {
            let dests = self.service_dests(&key)?;
            if let Some(svc) = tree.get_mut(&key) {
                svc.dests = dests;
            }
        }
        Ok(tree)
    }

    /// The connection-sync daemons, like `ipvsadm -L --daemon`.
    pub fn daemons(&mut self) -> Result<Vec<DaemonState>, IpvsError> {
        let mut out = Vec::new();
        let msg = IpvsMessage::new(Cmd::GetDaemon, vec![]);
        self.dump_each(OpKind::Daemons, Parts::Small, msg, |kind, payload| {
            if kind == IPVS_CMD_ATTR_DAEMON {
                out.push(DaemonState::from_attrs(&parse_nlas(payload)?)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// A service by key (`GET_SERVICE` without dump), without its destinations; `None`
    /// when this namespace has no such service.
    pub fn get_service(&mut self, key: &ServiceKey) -> Result<Option<Service>, IpvsError> {
        let msg = IpvsMessage::new(
            Cmd::GetService,
            vec![IpvsAttr::Service(Nested::new(service_key_attrs(key)))],
        );
        let answer = self.ask(OpKind::Dump, msg, |mut attrs| {
            attrs
                .find_map(|a| match a {
                    Ok((t, p)) if t & NLA_TYPE_MASK == IPVS_CMD_ATTR_SERVICE => {
                        Some(service_from_payload(p))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .unwrap_or(Err(DecodeError::Missing {
                    what: "GET_SERVICE answer",
                    attr: "IPVS_CMD_ATTR_SERVICE",
                }))
        })?;
        match answer {
            Ok(svc) => Ok(Some(svc)),
            Err(Errno(ESRCH)) => Ok(None),
            Err(errno) => Err(IpvsError::Kernel {
                op: OpKind::Dump,
                id: key.to_string(),
                errno,
            }),
        }
    }

    fn service_list(&mut self) -> Result<Tree, IpvsError> {
        let mut read = self.read_services(Parts::Small)?;
        if read.parts <= 1 && read.keys.is_some() {
            return Ok(read.items);
        }
        let mut seen: BTreeSet<ServiceKey> = read.items.services().map(|s| *s.key()).collect();
        for n in 1..DUMP_TRIES {
            let parts = if n % 2 == 1 {
                Parts::Wide
            } else {
                Parts::Small
            };
            let again = self.read_services(parts)?;
            let agree = matches!((&read.keys, &again.keys), (Some(a), Some(b)) if a == b);
            seen.extend(again.items.services().map(|s| *s.key()));
            read = again;
            if agree {
                break;
            }
        }
        // A service some read saw but the last did not: skipped by it, or gone since.
        let mut tree = read.items;
        for key in seen {
            if tree.get(&key).is_none() {
                if let Some(svc) = self.get_service(&key)? {
                    tree.insert(svc);
                }
            }
        }
        Ok(tree)
    }

    /// A service's destinations, read in small parts and, when that took several,
    /// settled in wide ones.
    fn service_dests(&mut self, key: &ServiceKey) -> Result<BTreeMap<DestKey, Dest>, IpvsError> {
        let read = self.read_dests(Parts::Small, key)?;
        self.settle_dests(key, read)
    }

    /// Given a first read in small parts: kept if it took one part and no destination
    /// came twice; else read again in the largest parts until that takes one part or
    /// two reads in a row agree.
    fn settle_dests(
        &mut self,
        key: &ServiceKey,
        mut read: Read<BTreeMap<DestKey, Dest>, DestKey>,
    ) -> Result<BTreeMap<DestKey, Dest>, IpvsError> {
        if read.parts <= 1 && read.keys.is_some() {
            return Ok(read.items);
        }
        read = self.read_dests(Parts::Wide, key)?;
        if read.parts <= 1 && read.keys.is_some() {
            return Ok(read.items);
        }
        for _ in 2..DUMP_TRIES {
            let again = self.read_dests(Parts::Wide, key)?;
            if matches!((&read.keys, &again.keys), (Some(a), Some(b)) if a == b) {
                return Ok(again.items);
            }
            read = again;
        }
        Err(IpvsError::Unsettled {
            op: OpKind::Dump,
            id: key.to_string(),
            tries: DUMP_TRIES,
        })
    }

    fn read_services(&mut self, parts: Parts) -> Result<Read<Tree, ServiceKey>, IpvsError> {
        let mut tree = Tree::new();
        let mut twice = false;
        let msg = IpvsMessage::new(Cmd::GetService, vec![]);
        let parts = self.dump_each(OpKind::Dump, parts, msg, |kind, payload| {
            if kind == IPVS_CMD_ATTR_SERVICE {
                twice |= tree.insert(service_from_payload(payload)?).is_some();
            }
            Ok(())
        })?;
        let keys = (!twice).then(|| tree.services().map(|s| *s.key()).collect());
        Ok(Read {
            items: tree,
            keys,
            parts,
        })
    }

    fn read_dests(
        &mut self,
        parts: Parts,
        key: &ServiceKey,
    ) -> Result<Read<BTreeMap<DestKey, Dest>, DestKey>, IpvsError> {
        let msg = dests_request(key);
        let mut fold = DestsFold::new(key.family());
        let parts = self.dump_each(OpKind::Dump, parts, msg, |kind, payload| {
            fold.take(kind, payload)
        })?;
        Ok(fold.finish(parts))
    }

    /// Runs a dump on one of the sockets and hands `each` the top-level attributes of
    /// every IPVS message of it as (type without flags, payload), borrowed from the
    /// receive buffer. Returns how many parts carried its messages.
    ///
    /// When an attribute or `each` fails, the rest of the dump is still read (to its
    /// `NLMSG_DONE`), so the socket is left ready for the next request, and the first
    /// error is returned. A malformed message header returns at once: where the dump
    /// ends can no longer be known.
    fn dump_each(
        &mut self,
        op: OpKind,
        parts: Parts,
        msg: IpvsMessage,
        mut each: impl FnMut(u16, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<usize, IpvsError> {
        let seq = self.next_seq();
        let family = self.family;
        let bytes = Message::request(family, NLM_F_REQUEST | NLM_F_DUMP, seq, msg).to_bytes();
        let (sock, buf) = match parts {
            Parts::Small => (&self.sock, &mut self.buf),
            Parts::Wide => (&self.wide.0, &mut self.wide.1),
        };
        sock.send(&bytes, Msg::empty())
            .map_err(sock_err("send dump request"))?;
        let mut progress = Progress::new(seq);
        loop {
            let n = recv_datagram(sock, buf, op)?;
            if let Some(end) = progress.take(op, family, &buf[..n], &mut each) {
                return end;
            }
        }
    }
}

/// The request for one service's destination dump.
fn dests_request(key: &ServiceKey) -> IpvsMessage {
    IpvsMessage::new(
        Cmd::GetDest,
        vec![IpvsAttr::Service(Nested::new(service_key_attrs(key)))],
    )
}
