//! Controller (target) side of one NVMe/TCP queue pair, sans-IO.
//!
//! The queue answers ICReq, parses command capsules (in-capsule data lands
//! in the buffer the application names through [`CtrlBuffers`]), asks the
//! host for write data with one R2T per command when the application is
//! ready for it, places H2CData, and sends read data as C2HData PDUs
//! followed by a CapsuleResp (or with the SUCCESS flag when enabled).
//! A command's slot is released, and reported through `released`, only
//! when everything referring to its buffer has been written.

#![forbid(unsafe_code)]

use crate::pdu::{DataPdu, Fes, IcResp, Pdu, Role, RxConfig, TermReq, TxConfig};
use crate::recv::{DataSink, PlacementError, RecvError, StagedReceiver};
use crate::tx::{DataRef, Release, TxData, TxError, TxQueue};
use nvme_spec::command::opcode;
use nvme_spec::fabrics::fctype;
use nvme_spec::status::Status;
use nvme_spec::{Cqe, DataPointer, SglDescriptor, Sqe};
use std::io::{Read, Write};
use thiserror::Error;

/// Settings of a controller queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtrlConfig {
    /// Maximum commands in flight.
    pub depth: u16,
    /// Grant header digests if the host asks.
    pub allow_hdgst: bool,
    /// Grant data digests if the host asks.
    pub allow_ddgst: bool,
    /// Controller PDU data alignment (0's based dwords).
    pub cpda: u8,
    /// Maximum H2CData data length (at least 4096, a multiple of 4).
    pub maxh2cdata: u32,
    /// Largest in-capsule data accepted.
    pub incapsule_max: u32,
    /// Largest C2HData PDU sent.
    pub max_c2h_pdu: u32,
    /// Receive staging buffer size.
    pub stage_len: usize,
}

impl Default for CtrlConfig {
    fn default() -> Self {
        Self {
            depth: 128,
            allow_hdgst: true,
            allow_ddgst: true,
            cpda: 0,
            maxh2cdata: 128 << 10,
            incapsule_max: 8192,
            max_c2h_pdu: 128 << 10,
            stage_len: 64 << 10,
        }
    }
}

/// Data of a received command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdData {
    /// None.
    None,
    /// Write data already in the slot's buffer.
    InCapsule(u32),
    /// Write data still at the host: call [`CtrlQueue::request_data`] once
    /// the buffer is ready; [`CtrlEvent::DataReady`] follows.
    ToController(u32),
    /// Read data: fill the buffer and pass the length to
    /// [`CtrlQueue::complete`].
    FromController(u32),
    /// The data pointer is not a descriptor this transport supports;
    /// complete the command with an SGL error status.
    BadSgl,
}

/// What the application must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlEvent {
    /// A new command.
    Command {
        /// Slot (command handle).
        slot: u16,
        /// The submission queue entry.
        sqe: Sqe,
        /// Its data.
        data: CmdData,
    },
    /// All write data of the command in `slot` has arrived.
    DataReady {
        /// Slot.
        slot: u16,
    },
}

/// Access to per-command data buffers, by slot.
pub trait CtrlBuffers {
    /// Contiguous destination at byte `at` of the buffer of `slot`, whose
    /// data is `len` bytes (allocate it on first use).
    fn dest(&mut self, slot: u16, len: u32, at: u32) -> Option<&mut [u8]>;
    /// Contiguous source at byte `at` of the buffer of `slot`.
    fn src(&self, slot: u16, at: u32) -> Option<&[u8]>;
}

/// Fatal queue errors.
#[derive(Debug, Error)]
pub enum CtrlError {
    /// Receiving failed.
    #[error("receive failed")]
    Recv(#[from] RecvError),
    /// Sending failed.
    #[error("transmit failed")]
    Tx(#[from] TxError),
    /// The host broke the protocol.
    #[error("protocol violation: {what} (command {cid:#06x})")]
    Protocol {
        /// What happened.
        what: &'static str,
        /// Command concerned.
        cid: u16,
    },
    /// The host terminated the connection.
    #[error("host terminated the connection: {fes:?} fei {fei:#x}")]
    TermReq {
        /// Fatal error status.
        fes: Fes,
        /// Fatal error information.
        fei: u32,
    },
    /// A slot the application named is not in the right state.
    #[error("slot {0} is not in a state for this call")]
    BadSlot(u16),
    /// The queue failed earlier.
    #[error("queue failed earlier")]
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// In-capsule data being received.
    Capsule,
    /// With the application.
    Executing,
    /// Waiting for the application to request write data.
    NeedData,
    /// R2T sent, H2CData arriving.
    Receiving,
    /// Completion queued; waiting for the writes to finish.
    Sending,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    state: SlotState,
    cid: u16,
    len: u32,
    received: u32,
    /// Write data arrived with a data digest error.
    data_error: bool,
    /// Aborted while waiting for its write data: completes with Command
    /// Abort Requested once the data is in, without running.
    aborted: bool,
}

const FREE: Slot = Slot { state: SlotState::Free, cid: 0, len: 0, received: 0, data_error: false, aborted: false };

/// The status of a command whose data was corrupted on the wire.
fn transport_error() -> Status {
    use nvme_spec::status::{GenericStatus, StatusCode};
    Status::new(StatusCode::Generic(GenericStatus::TransientTransportError), false)
}

/// The status of a command ended by an Abort command (Command Abort
/// Requested).
pub fn abort_requested() -> Status {
    use nvme_spec::status::{GenericStatus, StatusCode};
    Status::new(StatusCode::Generic(GenericStatus::AbortRequested), false)
}

/// Command IDs of the commands a queue holds (a bitmap over all 65536).
#[derive(Debug)]
struct CidSet(Box<[u64]>);

impl CidSet {
    fn new() -> Self {
        Self(vec![0; 1024].into_boxed_slice())
    }

    fn contains(&self, cid: u16) -> bool {
        self.0.get(usize::from(cid >> 6)).is_some_and(|w| w & (1 << (cid & 63)) != 0)
    }

    fn insert(&mut self, cid: u16) {
        if let Some(w) = self.0.get_mut(usize::from(cid >> 6)) {
            *w |= 1 << (cid & 63);
        }
    }

    fn remove(&mut self, cid: u16) {
        if let Some(w) = self.0.get_mut(usize::from(cid >> 6)) {
            *w &= !(1 << (cid & 63));
        }
    }
}

/// One controller queue pair.
#[derive(Debug)]
pub struct CtrlQueue {
    cfg: CtrlConfig,
    ready: bool,
    failed: bool,
    /// A termination request is queued after a fatal error.
    terminating: bool,
    success_flag: bool,
    rx: StagedReceiver,
    tx: TxQueue,
    slots: Box<[Slot]>,
    tx_refs: Box<[u32]>,
    free: Vec<u16>,
    cids: CidSet,
    capsule_slot: Option<u16>,
}

struct Sink<'a> {
    slots: &'a mut [Slot],
    free: &'a mut Vec<u16>,
    cids: &'a mut CidSet,
    capsule_slot: &'a mut Option<u16>,
    bufs: &'a mut dyn CtrlBuffers,
}

impl DataSink for Sink<'_> {
    fn data_buffer(&mut self, pdu: &Pdu, at: usize) -> Result<&mut [u8], PlacementError> {
        match pdu {
            Pdu::CapsuleCmd { sqe, data_len } => {
                let cid = sqe.cid();
                let slot = match *self.capsule_slot {
                    Some(s) => s,
                    None => {
                        if self.cids.contains(cid) {
                            return Err(PlacementError::UnknownCommand(cid));
                        }
                        let s = self.free.pop().ok_or(PlacementError::UnknownCommand(cid))?;
                        self.cids.insert(cid);
                        if let Some(sl) = self.slots.get_mut(usize::from(s)) {
                            *sl = Slot { state: SlotState::Capsule, cid, len: *data_len, ..FREE };
                        }
                        *self.capsule_slot = Some(s);
                        s
                    }
                };
                let at = u32::try_from(at).map_err(|_| PlacementError::WrongDirection(cid))?;
                self.bufs.dest(slot, *data_len, at).ok_or(PlacementError::OutOfRange {
                    cid,
                    offset: at,
                    len: *data_len,
                    size: 0,
                })
            }
            Pdu::H2CData(d) => {
                let s = self
                    .slots
                    .get(usize::from(d.ttag))
                    .filter(|s| s.state == SlotState::Receiving && s.cid == d.cccid)
                    .ok_or(PlacementError::UnknownTag { cid: d.cccid, ttag: d.ttag })?;
                if d.offset != s.received {
                    return Err(PlacementError::OutOfOrder { cid: d.cccid, offset: d.offset, expected: s.received });
                }
                let range = PlacementError::OutOfRange { cid: d.cccid, offset: d.offset, len: d.length, size: s.len };
                if d.offset.checked_add(d.length).is_none_or(|e| e > s.len) {
                    return Err(range);
                }
                let at = u32::try_from(at).map_err(|_| range)?;
                self.bufs.dest(d.ttag, s.len, d.offset + at).ok_or(range)
            }
            _ => Err(PlacementError::WrongDirection(0)),
        }
    }
}

struct Src<'a>(&'a dyn CtrlBuffers);

impl TxData for Src<'_> {
    fn tx_data(&self, key: u16, at: u32) -> Option<&[u8]> {
        self.0.src(key, at)
    }
}

impl CtrlQueue {
    /// A queue waiting for ICReq.
    pub fn new(cfg: CtrlConfig) -> Self {
        let depth = cfg.depth.max(1);
        Self {
            rx: StagedReceiver::new(RxConfig::initial(Role::Controller, 0), cfg.stage_len),
            tx: TxQueue::new(usize::from(depth) * 2 + 4),
            cfg,
            ready: false,
            failed: false,
            terminating: false,
            success_flag: false,
            slots: vec![FREE; usize::from(depth)].into_boxed_slice(),
            tx_refs: vec![0; usize::from(depth)].into_boxed_slice(),
            free: (0..depth).rev().collect(),
            cids: CidSet::new(),
            capsule_slot: None,
        }
    }

    /// Whether the IC exchange is done.
    pub fn is_ready(&self) -> bool {
        self.ready && !self.failed
    }

    /// Sends successful reads with the C2HData SUCCESS flag instead of a
    /// CapsuleResp (allowed when the host disabled SQ flow control).
    pub fn set_success_flag(&mut self, on: bool) {
        self.success_flag = on;
    }

    /// Sets the in-capsule data limit (e.g. 8192 on the admin queue).
    pub fn set_incapsule_max(&mut self, bytes: u32) {
        self.cfg.incapsule_max = bytes;
        let mut c = *self.rx.inner().config();
        c.max_incapsule = bytes.max(crate::host::FABRICS_INCAPSULE);
        self.rx.inner_mut().set_config(c);
    }

    /// Commands held by the queue.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether PDUs are waiting to be written.
    pub fn wants_transmit(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Processes received bytes; events go to `ev`.
    pub fn receive(
        &mut self,
        input: &[u8],
        bufs: &mut dyn CtrlBuffers,
        ev: &mut dyn FnMut(CtrlEvent),
    ) -> Result<(), CtrlError> {
        if self.failed {
            return Err(CtrlError::Failed);
        }
        let mut used = 0;
        while used < input.len() {
            let r = {
                let Self { rx, slots, free, cids, capsule_slot, .. } = self;
                let mut sink = Sink { slots, free, cids, capsule_slot, bufs };
                rx.inner_mut().feed(input.get(used..).unwrap_or(&[]), &mut sink)
            };
            match r {
                Ok((n, p)) => {
                    used += n;
                    if let Some(p) = p {
                        let bad = self.rx.inner_mut().take_digest_error().is_some();
                        if let Err(e) = self.handle(p, bad, ev) {
                            return Err(self.fail(e));
                        }
                    }
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        Ok(())
    }

    /// Reads from `r` until it would block; returns PDUs processed.
    pub fn poll_receive<R: Read>(
        &mut self,
        r: &mut R,
        bufs: &mut dyn CtrlBuffers,
        ev: &mut dyn FnMut(CtrlEvent),
    ) -> Result<usize, CtrlError> {
        if self.failed {
            return Err(CtrlError::Failed);
        }
        let mut count = 0;
        loop {
            let res = {
                let Self { rx, slots, free, cids, capsule_slot, .. } = self;
                let mut sink = Sink { slots, free, cids, capsule_slot, bufs };
                rx.poll(r, &mut sink)
            };
            match res {
                Ok(Some(p)) => {
                    count += 1;
                    let bad = self.rx.inner_mut().take_digest_error().is_some();
                    if let Err(e) = self.handle(p, bad, ev) {
                        return Err(self.fail(e));
                    }
                }
                Ok(None) => return Ok(count),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    /// Marks the queue failed after `e`; for errors in what the host sent,
    /// queues a termination request (C2HTermReq) naming the error and
    /// carrying the offending header, to be written with
    /// [`CtrlQueue::transmit_termination`].
    fn fail(&mut self, e: CtrlError) -> CtrlError {
        self.failed = true;
        let term = match &e {
            CtrlError::Recv(r) => r.term_req(),
            CtrlError::Protocol { .. } => Some(TermReq { fes: Fes::SequenceError, fei: 0 }),
            _ => None,
        };
        if let Some(t) = term {
            if let Ok(h) = crate::pdu::encode_term_req(Role::Controller, t, self.rx.inner().partial_header()) {
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
    /// the termination request. Returns true once all is written (or there
    /// is nothing to write); the caller then closes the connection.
    pub fn transmit_termination<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        bufs: &dyn CtrlBuffers,
    ) -> Result<bool, CtrlError> {
        if !self.terminating {
            return Ok(true);
        }
        self.tx.write_to(w, &Src(bufs), &mut |_| {})?;
        if self.tx.is_empty() {
            self.terminating = false;
        }
        Ok(!self.terminating)
    }

    /// Writes queued PDUs until `w` would block; `released(slot)` is called
    /// for each slot whose completion and data have been written.
    pub fn transmit<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        bufs: &dyn CtrlBuffers,
        released: &mut dyn FnMut(u16),
    ) -> Result<usize, CtrlError> {
        if self.failed {
            return Err(CtrlError::Failed);
        }
        let Self { tx, tx_refs, slots, free, cids, .. } = self;
        let r = tx.write_to(w, &Src(bufs), &mut |r| {
            let k = usize::from(r.key);
            if let Some(c) = tx_refs.get_mut(k) {
                *c = c.saturating_sub(1);
                let done = *c == 0;
                if let Some(s) = slots.get_mut(k).filter(|s| s.state == SlotState::Sending) {
                    if done {
                        cids.remove(s.cid);
                        *s = FREE;
                        free.push(r.key);
                        released(r.key);
                    }
                }
            }
        });
        r.map_err(|e| {
            self.failed = true;
            e.into()
        })
    }

    /// Sends an R2T for the write data of `slot` (after
    /// [`CmdData::ToController`]). A command aborted meanwhile
    /// ([`CtrlQueue::abort_waiting_for_data`]) completes instead.
    pub fn request_data(&mut self, slot: u16) -> Result<(), CtrlError> {
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .filter(|s| s.state == SlotState::NeedData)
            .ok_or(CtrlError::BadSlot(slot))?;
        if s.aborted {
            return self.complete(slot, Cqe::new(0, abort_requested()), 0);
        }
        s.state = SlotState::Receiving;
        s.received = 0;
        let pdu = Pdu::R2T(DataPdu { cccid: s.cid, ttag: slot, offset: 0, length: s.len, last: false, success: false });
        self.tx.push(&pdu, None, None).map_err(|_| CtrlError::BadSlot(slot))
    }

    /// Completes the command in `slot`: sends `data_len` bytes of its buffer
    /// as C2HData (0 for none), then the completion. The command ID of
    /// `cqe` is filled in here.
    pub fn complete(&mut self, slot: u16, mut cqe: Cqe, data_len: u32) -> Result<(), CtrlError> {
        let s = *self
            .slots
            .get(usize::from(slot))
            .filter(|s| matches!(s.state, SlotState::Executing | SlotState::NeedData | SlotState::Receiving))
            .ok_or(CtrlError::BadSlot(slot))?;
        if s.state == SlotState::Receiving && s.received != s.len {
            // The host is still sending data we asked for.
            return Err(CtrlError::BadSlot(slot));
        }
        cqe.cid = s.cid.into();
        let success = self.success_flag && cqe.status().is_success();
        let mut pushed = 0u32;
        let mut off = 0u32;
        let chunk = self.cfg.max_c2h_pdu.max(4096);
        while off < data_len {
            let n = chunk.min(data_len - off);
            let last = off + n == data_len;
            let pdu =
                Pdu::C2HData(DataPdu { cccid: s.cid, ttag: 0, offset: off, length: n, last, success: last && success });
            self.tx
                .push(&pdu, Some(DataRef { key: slot, offset: off, len: n }), Some(Release { key: slot, kind: 0 }))
                .map_err(|_| CtrlError::BadSlot(slot))?;
            pushed += 1;
            off += n;
        }
        if !(success && data_len > 0) {
            self.tx
                .push(&Pdu::CapsuleResp { cqe }, None, Some(Release { key: slot, kind: 0 }))
                .map_err(|_| CtrlError::BadSlot(slot))?;
            pushed += 1;
        }
        if let Some(c) = self.tx_refs.get_mut(usize::from(slot)) {
            *c = pushed;
        }
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            s.state = SlotState::Sending;
        }
        Ok(())
    }

    /// The slot of command `cid` while the application runs it (after
    /// [`CtrlEvent::Command`] without write data to fetch, or after
    /// [`CtrlEvent::DataReady`], until [`CtrlQueue::complete`]).
    pub fn executing_slot(&self, cid: u16) -> Option<u16> {
        if !self.cids.contains(cid) {
            return None;
        }
        let i = self.slots.iter().position(|s| s.cid == cid && s.state == SlotState::Executing)?;
        u16::try_from(i).ok()
    }

    /// Aborts command `cid` if it waits for its write data (no R2T sent
    /// yet, or data still arriving): it never reaches the application
    /// (no [`CtrlEvent::DataReady`]); data already asked for is received
    /// and dropped, then the command completes with Command Abort
    /// Requested. Returns whether the command was aborted.
    pub fn abort_waiting_for_data(&mut self, cid: u16) -> bool {
        if !self.cids.contains(cid) {
            return false;
        }
        let waiting = |s: &Slot| s.cid == cid && matches!(s.state, SlotState::NeedData | SlotState::Receiving);
        match self.slots.iter_mut().find(|s| waiting(s)) {
            Some(s) => {
                s.aborted = true;
                true
            }
            None => false,
        }
    }

    /// Ends the queue: returns the slots the application still holds so it
    /// can release their buffers.
    pub fn shutdown(&mut self, released: &mut dyn FnMut(u16)) {
        self.failed = true;
        self.terminating = false;
        self.tx = TxQueue::new(0);
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.state != SlotState::Free {
                self.cids.remove(s.cid);
                *s = FREE;
                self.free.push(i as u16);
                released(i as u16);
            }
        }
    }

    fn protocol(what: &'static str, cid: u16) -> CtrlError {
        CtrlError::Protocol { what, cid }
    }

    /// Handles one received PDU; `bad_data` tells that its data failed
    /// the data digest check.
    #[inline(always)]
    fn handle(&mut self, pdu: Pdu, bad_data: bool, ev: &mut dyn FnMut(CtrlEvent)) -> Result<(), CtrlError> {
        if let Pdu::H2CTermReq(t) = pdu {
            return Err(CtrlError::TermReq { fes: t.fes, fei: t.fei });
        }
        if !self.ready {
            let Pdu::IcReq(r) = pdu else {
                return Err(Self::protocol("pdu before icreq", 0));
            };
            let hdgst = r.hdgst && self.cfg.allow_hdgst;
            let ddgst = r.ddgst && self.cfg.allow_ddgst;
            let maxh2cdata = (self.cfg.maxh2cdata.max(4096) / 4) * 4;
            let resp = Pdu::IcResp(IcResp { pfv: 0, cpda: self.cfg.cpda.min(31), hdgst, ddgst, maxh2cdata });
            self.tx.push(&resp, None, None).map_err(|_| Self::protocol("icresp not encodable", 0))?;
            self.tx.set_config(TxConfig { hdgst, ddgst, align: (u32::from(r.hpda) + 1) * 4 });
            self.rx.inner_mut().set_config(RxConfig {
                role: Role::Controller,
                hdgst,
                ddgst,
                align: (u32::from(self.cfg.cpda.min(31)) + 1) * 4,
                max_data: maxh2cdata,
                // Fabrics commands (Connect) may come with up to 8 KiB in
                // the capsule on any queue.
                max_incapsule: self.cfg.incapsule_max.max(crate::host::FABRICS_INCAPSULE),
            });
            self.ready = true;
            return Ok(());
        }
        match pdu {
            Pdu::CapsuleCmd { sqe, data_len } => self.on_capsule(sqe, data_len, bad_data, ev),
            Pdu::H2CData(d) => {
                let s = self
                    .slots
                    .get_mut(usize::from(d.ttag))
                    .filter(|s| s.state == SlotState::Receiving && s.cid == d.cccid)
                    .ok_or(Self::protocol("h2c data with unknown transfer tag", d.cccid))?;
                if d.length == 0 {
                    return Err(Self::protocol("empty h2c data", d.cccid));
                }
                s.received += d.length;
                s.data_error |= bad_data;
                if s.received == s.len {
                    s.state = SlotState::Executing;
                    if s.aborted {
                        return self.complete(d.ttag, Cqe::new(0, abort_requested()), 0);
                    }
                    if s.data_error {
                        // Corrupt write data: the command is not run.
                        return self.complete(d.ttag, Cqe::new(0, transport_error()), 0);
                    }
                    ev(CtrlEvent::DataReady { slot: d.ttag });
                }
                Ok(())
            }
            Pdu::IcReq(_) => Err(Self::protocol("second icreq", 0)),
            _ => Err(Self::protocol("pdu not valid towards the controller", 0)),
        }
    }

    #[inline(always)]
    fn on_capsule(
        &mut self,
        sqe: Sqe,
        data_len: u32,
        bad_data: bool,
        ev: &mut dyn FnMut(CtrlEvent),
    ) -> Result<(), CtrlError> {
        let cid = sqe.cid();
        let slot = match self.capsule_slot.take() {
            Some(s) => s,
            None => {
                if self.cids.contains(cid) {
                    return Err(Self::protocol("command id in use", cid));
                }
                let s = self.free.pop().ok_or(Self::protocol("more commands than the queue depth", cid))?;
                self.cids.insert(cid);
                s
            }
        };
        let data = if data_len > 0 {
            match sqe.data_pointer() {
                Some(DataPointer::Sgl(d))
                    if d.id == SglDescriptor::ID_DATA_BLOCK_OFFSET
                        && d.length.get() == data_len
                        && d.addr.get() == 0 =>
                {
                    CmdData::InCapsule(data_len)
                }
                _ => CmdData::BadSgl,
            }
        } else {
            match sqe.data_pointer() {
                Some(DataPointer::Sgl(d)) if d.id == SglDescriptor::ID_TRANSPORT_DATA_BLOCK => {
                    let len = d.length.get();
                    if len == 0 {
                        CmdData::None
                    } else if to_controller(&sqe) {
                        CmdData::ToController(len)
                    } else {
                        CmdData::FromController(len)
                    }
                }
                Some(DataPointer::Sgl(d)) if d.id == SglDescriptor::ID_DATA_BLOCK_OFFSET && d.length.get() == 0 => {
                    CmdData::None
                }
                _ => CmdData::BadSgl,
            }
        };
        let (state, len) = match data {
            CmdData::ToController(n) => (SlotState::NeedData, n),
            CmdData::InCapsule(n) | CmdData::FromController(n) => (SlotState::Executing, n),
            CmdData::None | CmdData::BadSgl => (SlotState::Executing, 0),
        };
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Slot { state, cid, len, ..FREE };
        }
        if bad_data {
            // Corrupt in-capsule data: the command is not run.
            return self.complete(slot, Cqe::new(0, transport_error()), 0);
        }
        ev(CtrlEvent::Command { slot, sqe, data });
        Ok(())
    }
}

/// Whether the command's data moves from host to controller.
fn to_controller(sqe: &Sqe) -> bool {
    if sqe.opcode() == opcode::FABRICS {
        let t = sqe.nsid.get() as u8;
        return t == fctype::CONNECT || t == fctype::AUTH_SEND;
    }
    sqe.opcode() & 1 != 0
}

/// A completion status for [`CmdData::BadSgl`].
pub fn bad_sgl_status() -> Status {
    use nvme_spec::status::{GenericStatus, StatusCode};
    Status::new(StatusCode::Generic(GenericStatus::SglDescriptorTypeInvalid), true)
}
