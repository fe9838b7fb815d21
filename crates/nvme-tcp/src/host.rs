//! Host (initiator) side of one NVMe/TCP queue pair, sans-IO.
//!
//! The queue sends ICReq on creation, negotiates digests and alignment from
//! ICResp, assigns command IDs, puts write data in the capsule when it fits
//! the in-capsule size and otherwise answers R2Ts with H2CData PDUs no
//! larger than MAXH2CDATA (at most MAXR2T + 1 R2Ts in flight per command),
//! places C2HData straight into the read buffers and completes commands on
//! CapsuleResp or on C2HData with the SUCCESS flag.
//!
//! Bytes move through [`HostQueue::receive`] / [`HostQueue::poll_receive`]
//! and [`HostQueue::transmit`]; data buffers are reached through
//! [`HostBuffers`] by the tag given at submission.

#![forbid(unsafe_code)]

use crate::pdu::{DataPdu, Fes, IcReq, Pdu, Role, RxConfig, TermReq, TxConfig};
use crate::recv::{DataSink, PlacementError, RecvError, StagedReceiver};
use crate::tx::{DataRef, Release, TxData, TxError, TxQueue};
use nvme_spec::status::Status;
use nvme_spec::{Cqe, DataPointer, SglDescriptor, Sqe};
use std::io::{Read, Write};
use thiserror::Error;

/// Settings of a host queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Maximum commands in flight (command IDs are `0..depth`).
    pub depth: u16,
    /// Request header digests.
    pub hdgst: bool,
    /// Request data digests.
    pub ddgst: bool,
    /// Host PDU data alignment to ask for (0's based dwords).
    pub hpda: u8,
    /// Maximum outstanding R2Ts per command we accept, 0's based.
    pub maxr2t: u32,
    /// Largest C2HData data part accepted.
    pub max_c2h_data: u32,
    /// Largest write sent in the capsule (admin queue: 8192; I/O queues:
    /// IOCCSZ * 16 - 64; 0 disables in-capsule data).
    pub incapsule_max: u32,
    /// Receive staging buffer size.
    pub stage_len: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            depth: 128,
            hdgst: false,
            ddgst: false,
            hpda: 0,
            maxr2t: 0,
            max_c2h_data: 16 << 20,
            incapsule_max: 8192,
            stage_len: 64 << 10,
        }
    }
}

/// Direction and length of a command's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// No data.
    None,
    /// Host to controller (writes): bytes read from [`HostBuffers::write_src`].
    ToController(u32),
    /// Controller to host (reads): bytes placed via [`HostBuffers::read_dest`].
    FromController(u32),
}

/// Access to the data buffers of submitted commands, by submission tag.
pub trait HostBuffers {
    /// Contiguous destination at byte `at` of the read buffer of `tag`
    /// (may be shorter than the rest, never empty inside the buffer).
    fn read_dest(&mut self, tag: u64, at: u32) -> Option<&mut [u8]>;
    /// Contiguous source at byte `at` of the write buffer of `tag`.
    fn write_src(&self, tag: u64, at: u32) -> Option<&[u8]>;
}

/// Why a command cannot be submitted.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The IC exchange has not finished.
    #[error("queue not connected yet")]
    NotReady,
    /// All command IDs are in use.
    #[error("queue full")]
    Full,
    /// The queue failed; reconnect.
    #[error("queue failed")]
    Failed,
}

/// Fatal queue errors: the connection must be dropped and outstanding
/// commands failed with [`HostQueue::fail_all`].
#[derive(Debug, Error)]
pub enum HostError {
    /// Receiving failed (malformed PDU, misplaced data, socket).
    #[error("receive failed")]
    Recv(#[from] RecvError),
    /// Sending failed.
    #[error("transmit failed")]
    Tx(#[from] TxError),
    /// The controller broke the protocol.
    #[error("protocol violation: {what} (command {cid:#06x})")]
    Protocol {
        /// What happened.
        what: &'static str,
        /// Command concerned (0 if none).
        cid: u16,
    },
    /// The controller terminated the connection.
    #[error("controller terminated the connection: {fes:?} fei {fei:#x}")]
    TermReq {
        /// Fatal error status.
        fes: Fes,
        /// Fatal error information.
        fei: u32,
    },
    /// The queue failed earlier.
    #[error("queue failed earlier")]
    Failed,
}

/// Negotiated connection parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Header digests on.
    pub hdgst: bool,
    /// Data digests on.
    pub ddgst: bool,
    /// Controller PDU data alignment (0's based dwords).
    pub cpda: u8,
    /// Maximum H2CData data length.
    pub maxh2cdata: u32,
}

/// In-capsule data every queue accepts for Fabrics commands (the admin
/// queue's 8 KiB).
pub const FABRICS_INCAPSULE: u32 = 8192;

const REL_DATA: u8 = 0;
const REL_R2T_DONE: u8 = 1;

#[derive(Clone, Copy, Debug)]
struct Slot {
    active: bool,
    tag: u64,
    dir: DataDir,
    incapsule: u32,
    received: u32,
    /// Read data arrived with a data digest error.
    data_error: bool,
}

const IDLE: Slot = Slot { active: false, tag: 0, dir: DataDir::None, incapsule: 0, received: 0, data_error: false };

/// The status of a command whose data was corrupted on the wire.
fn transport_error() -> Status {
    use nvme_spec::status::{GenericStatus, StatusCode};
    Status::new(StatusCode::Generic(GenericStatus::TransientTransportError), false)
}

/// Per-command counts the transmit path updates.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Queued PDUs that send this command's data.
    tx_refs: u32,
    /// R2Ts whose data is not completely sent.
    r2t_active: u32,
}

/// One host queue pair.
#[derive(Debug)]
pub struct HostQueue {
    cfg: HostConfig,
    neg: Option<Negotiated>,
    failed: bool,
    /// A termination request is queued after a fatal error.
    terminating: bool,
    rx: StagedReceiver,
    tx: TxQueue,
    slots: Box<[Slot]>,
    counts: Box<[Counts]>,
    free: Vec<u16>,
}

struct Sink<'a> {
    slots: &'a [Slot],
    bufs: &'a mut dyn HostBuffers,
}

impl DataSink for Sink<'_> {
    fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError> {
        let Pdu::C2HData(d) = pdu else {
            return Err(PlacementError::WrongDirection(0));
        };
        let slot =
            self.slots.get(usize::from(d.cccid)).filter(|s| s.active).ok_or(PlacementError::UnknownCommand(d.cccid))?;
        let DataDir::FromController(len) = slot.dir else {
            return Err(PlacementError::WrongDirection(d.cccid));
        };
        if d.offset != slot.received {
            return Err(PlacementError::OutOfOrder { cid: d.cccid, offset: d.offset, expected: slot.received });
        }
        let range = PlacementError::OutOfRange { cid: d.cccid, offset: d.offset, len: d.length, size: len };
        if d.offset.checked_add(d.length).is_none_or(|end| end > len) {
            return Err(range);
        }
        let at = u32::try_from(at).map_err(|_| range)?;
        self.bufs.read_dest(slot.tag, d.offset + at).ok_or(range)
    }
}

struct Src<'a> {
    slots: &'a [Slot],
    bufs: &'a dyn HostBuffers,
}

impl TxData for Src<'_> {
    fn tx_data(&self, key: u16, at: u32) -> Option<&[u8]> {
        let s = self.slots.get(usize::from(key)).filter(|s| s.active)?;
        self.bufs.write_src(s.tag, at)
    }
}

impl HostQueue {
    /// A queue that starts by sending ICReq.
    pub fn new(cfg: HostConfig) -> Self {
        let depth = cfg.depth.max(1);
        let mut tx = TxQueue::new(usize::from(depth) * 2 + 4);
        let icreq = Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: cfg.hpda.min(31),
            hdgst: cfg.hdgst,
            ddgst: cfg.ddgst,
            maxr2t: cfg.maxr2t,
        });
        // ICReq has no data and the initial configuration is valid.
        let failed = tx.push(&icreq, None, None).is_err();
        Self {
            rx: StagedReceiver::new(RxConfig::initial(Role::Host, 0), cfg.stage_len),
            cfg,
            neg: None,
            failed,
            terminating: false,
            tx,
            slots: vec![IDLE; usize::from(depth)].into_boxed_slice(),
            counts: vec![Counts::default(); usize::from(depth)].into_boxed_slice(),
            free: (0..depth).rev().collect(),
        }
    }

    /// Negotiated parameters once ICResp arrived.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.neg
    }

    /// Whether commands can be submitted.
    pub fn is_ready(&self) -> bool {
        self.neg.is_some() && !self.failed
    }

    /// Whether the queue failed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Free command slots.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Sets the in-capsule data limit (after Identify Controller).
    pub fn set_incapsule_max(&mut self, bytes: u32) {
        self.cfg.incapsule_max = bytes;
    }

    /// Whether PDUs are waiting to be written.
    pub fn wants_transmit(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Submits a command; the command ID and data pointer of `sqe` are
    /// set here. Returns the command ID.
    pub fn submit(&mut self, mut sqe: Sqe, dir: DataDir, tag: u64) -> Result<u16, SubmitError> {
        if self.failed {
            return Err(SubmitError::Failed);
        }
        if self.neg.is_none() {
            return Err(SubmitError::NotReady);
        }
        let cid = self.free.pop().ok_or(SubmitError::Full)?;
        sqe.set_cid(cid);
        // Fabrics commands (Connect) always carry their data in the capsule:
        // targets cannot solicit it with R2T before the queue exists.
        let incapsule_max = if sqe.opcode() == nvme_spec::command::opcode::FABRICS {
            self.cfg.incapsule_max.max(FABRICS_INCAPSULE)
        } else {
            self.cfg.incapsule_max
        };
        let (sgl, incapsule) = match dir {
            DataDir::None => (SglDescriptor::transport(0), 0),
            DataDir::ToController(len) if len > 0 && len <= incapsule_max => (SglDescriptor::in_capsule(0, len), len),
            DataDir::ToController(len) | DataDir::FromController(len) => (SglDescriptor::transport(len), 0),
        };
        sqe.set_data_pointer(DataPointer::Sgl(sgl));
        let pdu = Pdu::CapsuleCmd { sqe, data_len: incapsule };
        let (data, release) = if incapsule > 0 {
            (Some(DataRef { key: cid, offset: 0, len: incapsule }), Some(Release { key: cid, kind: REL_DATA }))
        } else {
            (None, None)
        };
        if self.tx.push(&pdu, data, release).is_err() {
            self.free.push(cid);
            return Err(SubmitError::Failed);
        }
        if let Some(s) = self.slots.get_mut(usize::from(cid)) {
            *s = Slot { active: true, tag, dir, incapsule, received: 0, data_error: false };
        }
        if let Some(c) = self.counts.get_mut(usize::from(cid)) {
            *c = Counts { tx_refs: u32::from(incapsule > 0), r2t_active: 0 };
        }
        Ok(cid)
    }

    /// Writes queued PDUs to `w` until it would block. Returns bytes
    /// written.
    pub fn transmit<W: Write + ?Sized>(&mut self, w: &mut W, bufs: &dyn HostBuffers) -> Result<usize, HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let Self { tx, slots, counts, .. } = self;
        let src = Src { slots: &slots[..], bufs };
        let r = tx.write_to(w, &src, &mut |r| {
            if let Some(c) = counts.get_mut(usize::from(r.key)) {
                c.tx_refs = c.tx_refs.saturating_sub(1);
                if r.kind == REL_R2T_DONE {
                    c.r2t_active = c.r2t_active.saturating_sub(1);
                }
            }
        });
        match r {
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = true;
                Err(e.into())
            }
        }
    }

    /// Processes received bytes (sans-IO). Completions are delivered to
    /// `done(tag, cqe)`. Returns when all of `input` is consumed.
    pub fn receive(
        &mut self,
        input: &[u8],
        bufs: &mut dyn HostBuffers,
        done: &mut dyn FnMut(u64, Cqe),
    ) -> Result<(), HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let mut used = 0;
        while used < input.len() {
            let r = {
                let Self { rx, slots, .. } = self;
                let mut sink = Sink { slots: &slots[..], bufs };
                rx.inner_mut().feed(input.get(used..).unwrap_or(&[]), &mut sink)
            };
            match r {
                Ok((n, p)) => {
                    used += n;
                    if let Some(p) = p {
                        let bad = self.rx.inner_mut().take_digest_error().is_some();
                        if let Err(e) = self.handle(p, bad, done) {
                            return Err(self.fail(e));
                        }
                    }
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        Ok(())
    }

    /// Reads from `r` until it would block, processing every PDU. Returns
    /// the number of PDUs processed.
    pub fn poll_receive<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        bufs: &mut dyn HostBuffers,
        done: &mut dyn FnMut(u64, Cqe),
    ) -> Result<usize, HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let mut count = 0;
        loop {
            let res = {
                let Self { rx, slots, .. } = self;
                let mut sink = Sink { slots: &slots[..], bufs };
                let mut rd = ReadAdapter(r);
                rx.poll(&mut rd, &mut sink)
            };
            match res {
                Ok(Some(p)) => {
                    count += 1;
                    let bad = self.rx.inner_mut().take_digest_error().is_some();
                    if let Err(e) = self.handle(p, bad, done) {
                        return Err(self.fail(e));
                    }
                }
                Ok(None) => return Ok(count),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    /// Marks the queue failed after `e`; for errors in what the controller
    /// sent, queues a termination request (H2CTermReq) naming the error
    /// and carrying the offending header, to be written with
    /// [`HostQueue::transmit_termination`].
    fn fail(&mut self, e: HostError) -> HostError {
        self.failed = true;
        let term = match &e {
            HostError::Recv(r) => r.term_req(),
            HostError::Protocol { .. } => Some(TermReq { fes: Fes::SequenceError, fei: 0 }),
            _ => None,
        };
        if let Some(t) = term {
            if let Ok(h) = crate::pdu::encode_term_req(Role::Host, t, self.rx.inner().partial_header()) {
                self.tx.terminate(h);
                self.terminating = true;
            }
        }
        e
    }

    /// Whether a termination request is waiting to be written.
    pub fn is_terminating(&self) -> bool {
        self.terminating
    }

    /// After a fatal error: writes what is left of a partly sent PDU and
    /// the termination request. Returns true once all is written (or
    /// there is nothing to write); the caller then closes the connection.
    pub fn transmit_termination<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        bufs: &dyn HostBuffers,
    ) -> Result<bool, HostError> {
        if !self.terminating {
            return Ok(true);
        }
        let Self { tx, slots, .. } = self;
        let src = Src { slots: &slots[..], bufs };
        tx.write_to(w, &src, &mut |_| {})?;
        if tx.is_empty() {
            self.terminating = false;
        }
        Ok(!self.terminating)
    }

    /// Fails the queue and ends every outstanding command: `aborted(tag)`
    /// is called for each (the caller reports a path error).
    pub fn fail_all(&mut self, aborted: &mut dyn FnMut(u64)) {
        self.failed = true;
        self.terminating = false;
        self.tx = TxQueue::new(0);
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.active {
                let tag = s.tag;
                *s = IDLE;
                self.free.push(i as u16);
                aborted(tag);
            }
        }
    }

    fn protocol(what: &'static str, cid: u16) -> HostError {
        HostError::Protocol { what, cid }
    }

    /// Handles one received PDU; `bad_data` tells that its data failed
    /// the data digest check.
    #[inline(always)]
    fn handle(&mut self, pdu: Pdu, bad_data: bool, done: &mut dyn FnMut(u64, Cqe)) -> Result<(), HostError> {
        if let Pdu::C2HTermReq(t) = pdu {
            return Err(HostError::TermReq { fes: t.fes, fei: t.fei });
        }
        let Some(neg) = self.neg else {
            let Pdu::IcResp(r) = pdu else {
                return Err(Self::protocol("pdu before icresp", 0));
            };
            if (r.hdgst && !self.cfg.hdgst) || (r.ddgst && !self.cfg.ddgst) {
                return Err(Self::protocol("controller enabled an unrequested digest", 0));
            }
            let neg = Negotiated { hdgst: r.hdgst, ddgst: r.ddgst, cpda: r.cpda, maxh2cdata: r.maxh2cdata };
            self.rx.inner_mut().set_config(RxConfig {
                role: Role::Host,
                hdgst: r.hdgst,
                ddgst: r.ddgst,
                align: (u32::from(self.cfg.hpda.min(31)) + 1) * 4,
                max_data: self.cfg.max_c2h_data,
                max_incapsule: 0,
            });
            self.tx.set_config(TxConfig { hdgst: r.hdgst, ddgst: r.ddgst, align: (u32::from(r.cpda) + 1) * 4 });
            self.neg = Some(neg);
            return Ok(());
        };
        match pdu {
            Pdu::CapsuleResp { cqe } => {
                let cid = cqe.cid.get();
                self.active(cid)?;
                if self.counts.get(usize::from(cid)).is_some_and(|c| c.tx_refs > 0) {
                    return Err(Self::protocol("response before data was sent", cid));
                }
                let corrupt = self.slots.get(usize::from(cid)).is_some_and(|s| s.data_error);
                let cqe = if corrupt && cqe.status().is_success() { Cqe::new(cid, transport_error()) } else { cqe };
                self.finish(cid, cqe, done);
                Ok(())
            }
            Pdu::C2HData(d) => {
                let slot = self.active(d.cccid)?;
                if !matches!(slot.dir, DataDir::FromController(_)) || d.length == 0 {
                    return Err(Self::protocol("unexpected c2h data", d.cccid));
                }
                if let Some(s) = self.slots.get_mut(usize::from(d.cccid)) {
                    s.received += d.length;
                    s.data_error |= bad_data;
                }
                if d.success {
                    if !d.last {
                        return Err(Self::protocol("success flag without last pdu", d.cccid));
                    }
                    let DataDir::FromController(len) = slot.dir else {
                        return Err(Self::protocol("unexpected c2h data", d.cccid));
                    };
                    if slot.received + d.length != len {
                        return Err(Self::protocol("success before all data", d.cccid));
                    }
                    let st = if slot.data_error || bad_data { transport_error() } else { Status::SUCCESS };
                    self.finish(d.cccid, Cqe::new(d.cccid, st), done);
                }
                Ok(())
            }
            Pdu::R2T(d) => self.on_r2t(d, neg),
            Pdu::IcResp(_) => Err(Self::protocol("second icresp", 0)),
            _ => Err(Self::protocol("pdu not valid towards the host", 0)),
        }
    }

    fn active(&self, cid: u16) -> Result<Slot, HostError> {
        self.slots.get(usize::from(cid)).copied().filter(|s| s.active).ok_or(Self::protocol("unknown command id", cid))
    }

    fn on_r2t(&mut self, d: DataPdu, neg: Negotiated) -> Result<(), HostError> {
        let slot = self.active(d.cccid)?;
        let DataDir::ToController(len) = slot.dir else {
            return Err(Self::protocol("r2t for a command without write data", d.cccid));
        };
        if d.offset < slot.incapsule || d.offset.checked_add(d.length).is_none_or(|e| e > len) {
            return Err(Self::protocol("r2t outside the write data", d.cccid));
        }
        let counts = self.counts.get(usize::from(d.cccid)).copied().unwrap_or_default();
        if counts.r2t_active > self.cfg.maxr2t {
            return Err(Self::protocol("more r2ts than maxr2t", d.cccid));
        }
        let chunk = neg.maxh2cdata.max(4096);
        let mut off = 0u32;
        let mut pushed = 0u32;
        while off < d.length {
            let n = chunk.min(d.length - off);
            let last = off + n == d.length;
            let pdu = Pdu::H2CData(DataPdu {
                cccid: d.cccid,
                ttag: d.ttag,
                offset: d.offset + off,
                length: n,
                last,
                success: false,
            });
            self.tx
                .push(
                    &pdu,
                    Some(DataRef { key: d.cccid, offset: d.offset + off, len: n }),
                    Some(Release { key: d.cccid, kind: if last { REL_R2T_DONE } else { REL_DATA } }),
                )
                .map_err(|_| Self::protocol("r2t length not encodable", d.cccid))?;
            pushed += 1;
            off += n;
        }
        if let Some(c) = self.counts.get_mut(usize::from(d.cccid)) {
            c.r2t_active += 1;
            c.tx_refs += pushed;
        }
        Ok(())
    }

    fn finish(&mut self, cid: u16, cqe: Cqe, done: &mut dyn FnMut(u64, Cqe)) {
        if let Some(s) = self.slots.get_mut(usize::from(cid)) {
            let tag = s.tag;
            *s = IDLE;
            self.free.push(cid);
            done(tag, cqe);
        }
    }
}

/// Lets `StagedReceiver::poll` take a `?Sized` reader.
struct ReadAdapter<'a, R: Read + ?Sized>(&'a mut R);

impl<R: Read + ?Sized> Read for ReadAdapter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }

    // Forwarded so a socket's vectored read (data into the IO buffer and
    // the following headers into the stage, in one call) is kept.
    fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
        self.0.read_vectored(bufs)
    }
}
