//! The blocking handle: one generic netlink socket bound to the `IPVS` family of the
//! network namespace the calling thread was in when it connected.
//!
//! Changes are sent in batches: many requests go out in one `sendmsg`, each flagged
//! `NLM_F_ACK`, and the answers are matched back to requests by sequence number. The
//! kernel handles a generic netlink request inside the `sendmsg` call, so by the time it
//! returns every answer of the batch is queued on the socket; they are read without
//! blocking, and a missing one (lost to a receive-queue overflow) is reported as
//! [`IpvsError::NoAnswer`] instead of hanging. Dumps (`GET_SERVICE`, `GET_DEST`,
//! `GET_DAEMON`) live in `dump/`: they read blocking until `NLMSG_DONE`, the kernel
//! filling later parts as the reader drains them.
//!
//! Async daemons call this from `spawn_blocking`.
//!
//! In a fresh network namespace bring `lo` up first: with `lo` down, Linux 6.1 refuses
//! IPv4 destinations with `EINVAL` (its address-type check of the real server fails).

use std::io;

use neli::consts::socket::{Msg, NlFamily};
use neli::router::synchronous::NlRouter;
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::error::Errno;
use crate::error::{DecodeError, IpvsError, OpKind};
use crate::model::{Dest, DestKey, ServiceKey, ServiceSpec};
use crate::packet::{
    dest_attrs, dest_key_attrs, service_key_attrs, service_spec_attrs, Cmd, Frame, Frames, Info,
    InfoAttr, IpvsAttr, IpvsMessage, Message, Nested, Nla, NlaIter, Payload, NLM_F_ACK,
    NLM_F_REQUEST,
};
use crate::plan::{Op, Plan};

/// Receive buffer, and so the size of the kernel's dump parts: the kernel builds each
/// part in an skb as large as the largest buffer the socket has been read with (at most
/// 32 KiB) and never fills it beyond that, so every datagram fits. 8 KiB less the skb's
/// shared info (320 bytes on 6.1/x86-64) is one order-1 allocation per part and holds a
/// service of 21 destinations; dumping 100,000 destinations under TCG took 0.9–1.1 s of
/// kernel time with it, against 1.1–1.5 s at 8 KiB and 1.9–2.2 s at 32 KiB.
pub(crate) const RECV_BUF: usize = 8192 - 320;
/// Receive buffer of the second socket: the kernel's largest part (32 KiB less the skb's
/// shared info) holds about 90 destinations or 110 services.
pub(crate) const WIDE_BUF: usize = 32768 - 320;
/// Requests per `sendmsg` by default. Each answer takes an skb of ~1 KiB of the socket's
/// receive queue (212 KiB by default), so 128 stays well clear of overflow.
pub const DEFAULT_BATCH: usize = 128;

/// How [`Ipvs::apply_with`] sends a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Requests per `sendmsg`; 1 is one round trip per operation, as `ipvsadm` does.
    pub batch: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            batch: DEFAULT_BATCH,
        }
    }
}

/// An operation of a plan that failed, with why.
#[derive(Debug)]
pub struct OpFailure {
    /// Position in the plan.
    pub index: usize,
    /// The operation.
    pub op: Op,
    /// The typed error (errno and object id when the kernel refused).
    pub error: IpvsError,
}

/// What executing a plan did. Every operation was tried; `failures` lists those that failed.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations tried.
    pub attempted: usize,
    /// Operations that failed, in plan order.
    pub failures: Vec<OpFailure>,
    /// `sendmsg` calls made.
    pub sends: usize,
}

impl ApplyReport {
    /// True when every operation succeeded.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
    /// Operations that succeeded.
    pub fn succeeded(&self) -> usize {
        self.attempted - self.failures.len()
    }
}

/// A request waiting to be sent: what it is for (errors name it) and the message.
struct Request {
    op: OpKind,
    id: String,
    msg: IpvsMessage,
}

/// A connection to the kernel's IPVS.
pub struct Ipvs {
    pub(crate) sock: NlSocket,
    pub(crate) family: u16,
    pub(crate) seq: u32,
    pub(crate) buf: Vec<u8>,
    /// A second socket read with the kernel's largest parts (see `dump/mod.rs`).
    pub(crate) wide: (NlSocket, Vec<u8>),
    /// A second handle whose socket a second thread reads a large table's destination
    /// dumps off while this one decodes them (see `dump/pipeline.rs`); `None` in itself.
    pub(crate) helper: Option<Box<Ipvs>>,
}

impl std::fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipvs")
            .field("family", &self.family)
            .field("seq", &self.seq)
            .finish()
    }
}

/// A datagram longer than the receive buffer (`MSG_TRUNC` gives its real length): the
/// kernel does not build such dump parts, so it is an error rather than a silent loss.
fn truncated(len: usize, buf: usize) -> DecodeError {
    DecodeError::Truncated {
        what: "datagram (longer than the receive buffer)",
        need: len,
        have: buf,
    }
}

/// One blocking read of a datagram; its length, refused if it did not fit (`MSG_TRUNC`
/// gives the real length).
pub(crate) fn recv_datagram(
    sock: &NlSocket,
    buf: &mut [u8],
    op: OpKind,
) -> Result<usize, IpvsError> {
    let (n, _) = sock
        .recv(&mut *buf, Msg::TRUNC)
        .map_err(sock_err("receive"))?;
    if n > buf.len() {
        return Err(IpvsError::Decode {
            op,
            source: truncated(n, buf.len()),
        });
    }
    Ok(n)
}

pub(crate) fn sock_err(context: &'static str) -> impl FnOnce(io::Error) -> IpvsError {
    move |source| IpvsError::Socket { context, source }
}

impl Ipvs {
    /// Opens a generic netlink socket and resolves the `IPVS` family.
    ///
    /// Fails with [`IpvsError::FamilyNotFound`] when `ip_vs` is not loaded.
    pub fn connect() -> Result<Ipvs, IpvsError> {
        let family =
            {
                let (router, _) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
                    .map_err(|e| IpvsError::Socket {
                        context: "connect",
                        source: io::Error::other(e.to_string()),
                    })?;
                match router.resolve_genl_family("IPVS") {
                    Ok(id) => id,
                    // ENOENT from the controller, or no family id in its answer.
                    Err(neli::err::RouterError::Nlmsgerr(_) | neli::err::RouterError::Msg(_)) => {
                        return Err(IpvsError::FamilyNotFound)
                    }
                    Err(e) => {
                        return Err(IpvsError::Socket {
                            context: "resolve family IPVS",
                            source: io::Error::other(e.to_string()),
                        })
                    }
                }
            };
        let mut ipvs = Ipvs::open(family)?;
        ipvs.helper = Some(Box::new(Ipvs::open(family)?));
        Ok(ipvs)
    }

    /// The sockets of a handle, all opened now: a socket belongs to the network
    /// namespace of the thread that opens it, so none is left to open later from
    /// another thread.
    fn open(family: u16) -> Result<Ipvs, IpvsError> {
        let connect = || {
            NlSocket::connect(NlFamily::Generic, None, Groups::empty()).map_err(sock_err("connect"))
        };
        let sock = connect()?;
        // A hint; the kernel caps it at net.core.rmem_max.
        let _ = sock.set_recv_buffer_size(1 << 20);
        Ok(Ipvs {
            sock,
            family,
            seq: 0,
            buf: vec![0; RECV_BUF],
            wide: (connect()?, vec![0; WIDE_BUF]),
            helper: None,
        })
    }

    /// The generic netlink family id the kernel gave `IPVS`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self, dontwait: bool) -> Result<Option<Vec<Message>>, io::Error> {
        let flags = if dontwait {
            Msg::DONTWAIT
        } else {
            Msg::empty()
        };
        match self.sock.recv(&mut self.buf[..], flags | Msg::TRUNC) {
            Ok((n, _)) if n > self.buf.len() => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                truncated(n, self.buf.len()),
            )),
            Ok((n, _)) => Ok(Some(
                Message::decode_all(&self.buf[..n], self.family)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends requests `batch` at a time and returns one result per request, in order.
    fn execute(
        &mut self,
        reqs: &[Request],
        batch: usize,
        sends: &mut usize,
    ) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Result<(), IpvsError>> = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(batch.max(1)) {
            let mut out = Vec::with_capacity(chunk.len() * 128);
            let first = self.seq.wrapping_add(1);
            for req in chunk {
                let seq = self.next_seq();
                Message::request(self.family, NLM_F_REQUEST | NLM_F_ACK, seq, req.msg.clone())
                    .emit(&mut out);
            }
            let mut answers: Vec<Option<i32>> = vec![None; chunk.len()];
            *sends += 1;
            if let Err(e) = self.sock.send(&out, Msg::empty()) {
                // Nothing of the chunk was taken.
                let kind = e.kind();
                for _ in chunk {
                    results.push(Err(IpvsError::Socket {
                        context: "send",
                        source: io::Error::new(kind, e.to_string()),
                    }));
                }
                continue;
            }
            let mut missing = chunk.len();
            while missing > 0 {
                match self.recv(true) {
                    Ok(Some(msgs)) => {
                        for m in msgs {
                            let idx = m.seq.wrapping_sub(first) as usize;
                            if let (Payload::Error { error, .. }, Some(slot)) =
                                (&m.payload, answers.get_mut(idx))
                            {
                                if slot.is_none() {
                                    *slot = Some(*error);
                                    missing -= 1;
                                }
                            }
                        }
                    }
                    // Queue drained (or overflowed): what is missing was lost.
                    Ok(None) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                    Err(_) => break,
                }
            }
            for (req, answer) in chunk.iter().zip(answers) {
                results.push(match answer {
                    Some(0) => Ok(()),
                    Some(err) => Err(IpvsError::Kernel {
                        op: req.op,
                        id: req.id.clone(),
                        errno: crate::Errno(-err),
                    }),
                    None => Err(IpvsError::NoAnswer {
                        op: req.op,
                        id: req.id.clone(),
                    }),
                });
            }
        }
        results
    }

    fn one(&mut self, req: Request) -> Result<(), IpvsError> {
        let mut sends = 0;
        self.execute(std::slice::from_ref(&req), 1, &mut sends)
            .pop()
            .unwrap_or(Err(IpvsError::NoAnswer {
                op: req.op,
                id: req.id,
            }))
    }

    /// Version and connection table size, like the first line of `ipvsadm -L`.
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let msg = IpvsMessage::new(Cmd::GetInfo, vec![]);
        let answer = self.ask(OpKind::Info, msg, |attrs| {
            let attrs = attrs
                .map(|a| a.and_then(|(t, p)| InfoAttr::parse(t, p)))
                .collect::<Result<Vec<_>, _>>()?;
            Info::from_attrs(&attrs)
        })?;
        answer.map_err(|errno| IpvsError::Kernel {
            op: OpKind::Info,
            id: String::new(),
            errno,
        })
    }

    /// Sends one request that is not a dump and reads the IPVS message answering it,
    /// straight from the receive buffer: `read` gets its attributes. The kernel's refusal
    /// comes back as `Ok(Err(errno))`, for the caller to name the object or take it as an
    /// answer (`ESRCH`: no such service).
    pub(crate) fn ask<T>(
        &mut self,
        op: OpKind,
        msg: IpvsMessage,
        read: impl FnOnce(NlaIter<'_>) -> Result<T, DecodeError>,
    ) -> Result<Result<T, Errno>, IpvsError> {
        let seq = self.next_seq();
        let bytes = Message::request(self.family, NLM_F_REQUEST, seq, msg).to_bytes();
        self.sock
            .send(&bytes, Msg::empty())
            .map_err(sock_err("send request"))?;
        let decode = |source| IpvsError::Decode { op, source };
        loop {
            let n = recv_datagram(&self.sock, &mut self.buf, op)?;
            for frame in Frames::new(&self.buf[..n], self.family) {
                match frame.map_err(decode)? {
                    (s, Frame::Ipvs { attrs, .. }) if s == seq => {
                        return read(attrs).map(Ok).map_err(decode)
                    }
                    (s, Frame::Error(error)) if s == seq && error != 0 => {
                        return Ok(Err(Errno(-error)))
                    }
                    _ => {}
                }
            }
        }
    }

    fn request(op: &Op) -> Result<Request, IpvsError> {
        let svc_key = |k: &ServiceKey| IpvsAttr::Service(Nested::new(service_key_attrs(k)));
        let msg = match op {
            Op::AddService { service } | Op::EditService { service } => {
                service.validate()?;
                let cmd = if matches!(op, Op::AddService { .. }) {
                    Cmd::NewService
                } else {
                    Cmd::SetService
                };
                IpvsMessage::new(
                    cmd,
                    vec![IpvsAttr::Service(Nested::new(service_spec_attrs(service)))],
                )
            }
            Op::DelService { service } => IpvsMessage::new(Cmd::DelService, vec![svc_key(service)]),
            Op::AddDest { service, dest } | Op::EditDest { service, dest } => {
                dest.validate(service)?;
                let cmd = if matches!(op, Op::AddDest { .. }) {
                    Cmd::NewDest
                } else {
                    Cmd::SetDest
                };
                IpvsMessage::new(
                    cmd,
                    vec![
                        svc_key(service),
                        IpvsAttr::Dest(Nested::new(dest_attrs(dest))),
                    ],
                )
            }
            Op::DelDest { service, dest } => IpvsMessage::new(
                Cmd::DelDest,
                vec![
                    svc_key(service),
                    IpvsAttr::Dest(Nested::new(dest_key_attrs(dest))),
                ],
            ),
        };
        Ok(Request {
            op: op.kind(),
            id: op.id(),
            msg,
        })
    }

    fn run_op(&mut self, op: Op) -> Result<(), IpvsError> {
        let req = Self::request(&op)?;
        self.one(req)
    }

    /// Adds a service, like `ipvsadm -A -t VIP:PORT -s SCHED [-p T] [-M MASK] [--pe PE]`.
    pub fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        self.run_op(Op::AddService {
            service: spec.clone(),
        })
    }

    /// Changes a service in place, like `ipvsadm -E …`.
    pub fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        self.run_op(Op::EditService {
            service: spec.clone(),
        })
    }

    /// Deletes a service and its destinations, like `ipvsadm -D -t VIP:PORT`.
    pub fn del_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.run_op(Op::DelService { service: *key })
    }

    /// Adds a destination, like `ipvsadm -a -t VIP:PORT -r RIP:PORT -g -w W`.
    pub fn add_dest(&mut self, service: &ServiceKey, dest: &Dest) -> Result<(), IpvsError> {
        self.run_op(Op::AddDest {
            service: *service,
            dest: dest.clone(),
        })
    }

    /// Changes a destination in place, like `ipvsadm -e …`.
    pub fn edit_dest(&mut self, service: &ServiceKey, dest: &Dest) -> Result<(), IpvsError> {
        self.run_op(Op::EditDest {
            service: *service,
            dest: dest.clone(),
        })
    }

    /// Deletes a destination, like `ipvsadm -d -t VIP:PORT -r RIP:PORT`.
    pub fn del_dest(&mut self, service: &ServiceKey, dest: &DestKey) -> Result<(), IpvsError> {
        self.run_op(Op::DelDest {
            service: *service,
            dest: *dest,
        })
    }

    /// Deletes every service, like `ipvsadm -C`.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.one(Request {
            op: OpKind::Flush,
            id: String::new(),
            msg: IpvsMessage::new(Cmd::Flush, vec![]),
        })
    }

    /// Executes a plan in batches of [`DEFAULT_BATCH`]; see [`Ipvs::apply_with`].
    pub fn apply(&mut self, plan: &Plan) -> ApplyReport {
        self.apply_with(plan, ApplyOptions::default())
    }

    /// Executes a plan: every operation is tried, in order, and every failure is reported
    /// with its typed error; nothing stops at the first failure, so applying the diff of
    /// the result again converges.
    pub fn apply_with(&mut self, plan: &Plan, opts: ApplyOptions) -> ApplyReport {
        let mut report = ApplyReport {
            attempted: plan.ops.len(),
            ..ApplyReport::default()
        };
        let mut reqs = Vec::with_capacity(plan.ops.len());
        let mut index_of = Vec::with_capacity(plan.ops.len());
        for (index, op) in plan.ops.iter().enumerate() {
            match Self::request(op) {
                Ok(req) => {
                    reqs.push(req);
                    index_of.push(index);
                }
                Err(error) => report.failures.push(OpFailure {
                    index,
                    op: op.clone(),
                    error,
                }),
            }
        }
        let results = self.execute(&reqs, opts.batch, &mut report.sends);
        for (result, index) in results.into_iter().zip(index_of) {
            if let Err(error) = result {
                report.failures.push(OpFailure {
                    index,
                    op: plan.ops[index].clone(),
                    error,
                });
            }
        }
        report.failures.sort_by_key(|f| f.index);
        report
    }
}
