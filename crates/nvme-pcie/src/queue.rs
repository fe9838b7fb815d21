//! I/O queue pairs: the lock-free, single-owner hot path.
//!
//! One [`IoQueuePair`] is owned by one thread (`&mut self` everywhere; it is
//! `Send`, not shared). Submission writes entries into the SQ and returns;
//! the SQ tail doorbell is written once per [`IoQueuePair::poll`] (or
//! [`IoQueuePair::flush`]) for everything queued since, completions are
//! found by phase tag, and the CQ head doorbell is written once per poll.
//! With shadow doorbells the MMIO write is skipped when the controller's
//! EventIdx says it is not needed.
//!
//! Every command holds clones of its data buffers until it completes, so
//! DMA memory can never be freed under an in-flight command.
//!
//! Data pointers are PRPs, except for multi-segment requests on a
//! controller that offers SGLs: those get one Data Block descriptor per
//! device-contiguous run, in per-command descriptor list pages.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use nvme_spec::command::{AdminCommand, DsmRange};
use nvme_spec::status::GenericStatus;
use nvme_spec::{DataPointer, IoCommand, Sqe, Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use crate::backing::{DeviceBacking, RegisterIo};
use crate::ctrl::{Shared, GONE, LIVE};
use crate::dma::{self, DmaBuffer, PAGE_SIZE};
use crate::error::{IoError, NvmeError, SubmitError};
use crate::prp::{self, PrpSource};
use crate::sgl::{self, SglAlignment};

const NONE: u16 = u16::MAX;

/// Most buffers one vectored request ([`IoQueuePair::readv`]) may have.
pub const MAX_SEGMENTS: usize = 16;

/// How a data command's memory is described.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DataMode {
    /// PRP1/PRP2 and PRP lists.
    Prp,
    /// An SGL (only when the controller offers SGLs).
    Sgl,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SlotState {
    Free,
    Busy,
    /// Abort was accepted; waiting for the aborted completion.
    AbortSent,
}

struct Slot {
    tag: u64,
    parent: u16,
    state: SlotState,
    /// Already resubmitted once after a timeout-triggered reset.
    retried: bool,
    /// Timed out after its retry: complete with Timeout at recovery.
    expired: bool,
    deadline_ns: u64,
    /// Buffers held until completion (capacity MAX_SEGMENTS, never grown).
    bufs: Vec<DmaBuffer>,
    sqe: Sqe,
}

struct Parent {
    tag: u64,
    remaining: u16,
    error: Option<IoError>,
}

#[derive(Clone, Copy)]
struct NsFmt {
    nsid: u32,
    blocks: u64,
    block: u32,
    /// Metadata in a separate buffer: this driver does not transfer it.
    separate_md: bool,
}

/// Queue pair counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Commands submitted (after splitting).
    pub submitted: u64,
    /// Commands completed.
    pub completed: u64,
    /// SQ tail MMIO doorbell writes.
    pub sq_doorbells: u64,
    /// CQ head MMIO doorbell writes.
    pub cq_doorbells: u64,
    /// Doorbell MMIO writes skipped thanks to shadow doorbells.
    pub doorbells_skipped: u64,
    /// Commands that exceeded the I/O timeout.
    pub timeouts: u64,
    /// Aborts sent for timed-out commands.
    pub aborts: u64,
    /// Controller resets this pair asked for after seeing CSTS.CFS.
    pub fatal_resets: u64,
    /// Times this pair re-created its queues after a controller reset.
    pub recoveries: u64,
    /// Commands submitted with an SGL data pointer.
    pub sgl_commands: u64,
}

/// An I/O submission/completion queue pair.
pub struct IoQueuePair<B: DeviceBacking> {
    shared: Arc<Shared<B>>,
    qid: u16,
    depth: u16,
    sq: DmaBuffer,
    cq: DmaBuffer,
    /// Per-command PRP / SGL descriptor list pages (`list_bytes` each).
    lists: DmaBuffer,
    list_bytes: usize,
    sgl: Option<SglAlignment>,
    sq_tail: u16,
    sq_db_last: u16,
    cq_head: u16,
    cq_db_last: u16,
    phase: bool,
    sq_db: usize,
    cq_db: usize,
    shadow: Option<(DmaBuffer, DmaBuffer)>,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    parents: Box<[Parent]>,
    free_parents: Vec<u16>,
    ns: Vec<NsFmt>,
    max_xfer: usize,
    generation: u64,
    epoch: Instant,
    now_ns: u64,
    next_check_ns: u64,
    check_interval_ns: u64,
    timeout_ns: u64,
    polls: u32,
    outstanding: u16,
    gone: bool,
    stats: QueueStats,
}

impl<B: DeviceBacking> std::fmt::Debug for IoQueuePair<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueuePair")
            .field("qid", &self.qid)
            .field("depth", &self.depth)
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

/// Shadow doorbell rule (NVMe 1.3 "Doorbell Buffer Config"): an MMIO write
/// is needed if the controller's EventIdx lies in [old, new).
#[inline]
fn need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

impl<B: DeviceBacking> IoQueuePair<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>, qid: u16, depth: u16) -> Result<Self, NvmeError> {
        let d = usize::from(depth);
        let sq_len = (d * 64).next_multiple_of(PAGE_SIZE);
        let cq_len = (d * 16).next_multiple_of(PAGE_SIZE);
        let max_xfer = shared.info.max_transfer;
        let sgl = shared.info.sgl.filter(|_| shared.cfg.sgl).map(|c| c.alignment);
        let mut list_pages = prp::list_pages_for(max_xfer);
        if sgl.is_some() {
            list_pages = list_pages.max(sgl::list_pages_for(max_xfer, MAX_SEGMENTS));
        }
        let list_bytes = list_pages * PAGE_SIZE;
        let mem = shared.dev.dma().alloc(sq_len + cq_len + list_bytes * d)?;
        let bad = NvmeError::InvalidArgument("queue memory layout");
        let sq = mem.slice(0, sq_len).ok_or(NvmeError::InvalidArgument("sq"))?;
        let cq = mem.slice(sq_len, cq_len).ok_or(NvmeError::InvalidArgument("cq"))?;
        let lists = mem.slice(sq_len + cq_len, list_bytes * d).ok_or(bad)?;
        let stride = shared.stride;
        let sq_db = 0x1000 + 2 * usize::from(qid) * stride;
        let cq_db = sq_db + stride;
        let shadow = shared.dbbuf.as_ref().map(|d| (d.shadow.clone(), d.eventidx.clone()));
        let slots = (0..depth)
            .map(|_| Slot {
                tag: 0,
                parent: NONE,
                state: SlotState::Free,
                retried: false,
                expired: false,
                deadline_ns: 0,
                bufs: Vec::with_capacity(MAX_SEGMENTS),
                sqe: Sqe::new_zeroed(),
            })
            .collect();
        let parents = (0..depth).map(|_| Parent { tag: 0, remaining: 0, error: None }).collect();
        let ns = shared
            .namespaces
            .iter()
            .map(|n| NsFmt {
                nsid: n.nsid,
                blocks: n.blocks,
                block: n.transfer_block_size(),
                separate_md: n.metadata_size > 0 && !n.extended_lba,
            })
            .collect();
        let generation = shared.generation.load(Ordering::Acquire);
        let timeout_ns = shared.cfg.io_timeout.as_nanos() as u64;
        let mut qp = Self {
            qid,
            depth,
            sq,
            cq,
            lists,
            list_bytes,
            sgl,
            sq_tail: 0,
            sq_db_last: 0,
            cq_head: 0,
            cq_db_last: 0,
            phase: true,
            sq_db,
            cq_db,
            shadow,
            slots,
            // CIDs 0..depth-1: at most depth-1 commands are outstanding, so
            // the SQ can never overflow.
            free: (0..depth - 1).rev().collect(),
            parents,
            free_parents: (0..depth).rev().collect(),
            ns,
            max_xfer,
            generation,
            epoch: Instant::now(),
            now_ns: 0,
            next_check_ns: 0,
            // Removal is noticed within this; timeouts fire within it of
            // their deadline.
            check_interval_ns: (timeout_ns / 8).clamp(100_000, 10_000_000),
            timeout_ns,
            polls: 0,
            outstanding: 0,
            gone: false,
            stats: QueueStats::default(),
            shared,
        };
        qp.create_queues()?;
        Ok(qp)
    }

    fn create_queues(&mut self) -> Result<(), NvmeError> {
        // A queue id may have been used before: its shadow doorbell and
        // EventIdx entries must start from zero like the new queue's
        // indexes, or a stale EventIdx makes us skip a needed MMIO write.
        if let Some((shadow, ev)) = &self.shadow {
            let stride = self.shared.stride;
            for idx in [2 * usize::from(self.qid), 2 * usize::from(self.qid) + 1] {
                shadow.store_u32_release(idx * stride, 0)?;
                ev.store_u32_release(idx * stride, 0)?;
            }
        }
        let qsize = self.depth - 1;
        let mut cq = AdminCommand::CreateIoCq { qid: self.qid, qsize, iv: 0, ien: false, contiguous: true }.to_sqe(0);
        cq.set_data_pointer(DataPointer::Prp { prp1: self.cq.iova(), prp2: 0 });
        self.shared.admin(cq)?;
        let mut sq =
            AdminCommand::CreateIoSq { qid: self.qid, qsize, cqid: self.qid, prio: 0, contiguous: true, nvmsetid: 0 }
                .to_sqe(0);
        sq.set_data_pointer(DataPointer::Prp { prp1: self.sq.iova(), prp2: 0 });
        if let Err(e) = self.shared.admin(sq) {
            let _ = self.shared.admin(AdminCommand::DeleteIoCq { qid: self.qid }.to_sqe(0));
            return Err(e);
        }
        Ok(())
    }

    /// The queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Queue depth in entries (at most depth - 1 commands are in flight).
    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// Commands in flight (after splitting).
    pub fn outstanding(&self) -> usize {
        usize::from(self.outstanding)
    }

    /// Free command slots.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Largest transfer in one command; larger I/O is split.
    pub fn max_transfer(&self) -> usize {
        self.max_xfer
    }

    /// True if multi-segment requests are described with SGLs (the
    /// controller offers them and [`crate::ControllerConfig::sgl`] is set).
    pub fn uses_sgls(&self) -> bool {
        self.sgl.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    #[inline]
    fn check_live(&self) -> Result<(), SubmitError> {
        if self.gone || self.shared.state.load(Ordering::Relaxed) == GONE {
            return Err(SubmitError::DeviceGone);
        }
        Ok(())
    }

    #[inline]
    fn ns_fmt(&self, nsid: u32) -> Result<NsFmt, SubmitError> {
        let ns = self.ns.iter().find(|n| n.nsid == nsid).copied().ok_or(SubmitError::InvalidNamespace(nsid))?;
        if ns.separate_md {
            // The controller would DMA metadata to a null metadata pointer.
            return Err(SubmitError::UnsupportedFormat(nsid));
        }
        Ok(ns)
    }

    /// Queue a Read of `buf.len()` bytes at `lba` into `buf`.
    #[inline]
    pub fn read(&mut self, nsid: u32, lba: u64, buf: &DmaBuffer, tag: u64) -> Result<(), SubmitError> {
        self.rw(false, nsid, lba, buf, tag)
    }

    /// Queue a Write of `buf` at `lba`.
    #[inline]
    pub fn write(&mut self, nsid: u32, lba: u64, buf: &DmaBuffer, tag: u64) -> Result<(), SubmitError> {
        self.rw(true, nsid, lba, buf, tag)
    }

    fn rw(&mut self, write: bool, nsid: u32, lba: u64, buf: &DmaBuffer, tag: u64) -> Result<(), SubmitError> {
        self.rw_src(write, nsid, lba, buf, std::slice::from_ref(buf), DataMode::Prp, tag)
    }

    /// Queue a Read of `sum(segs.len())` bytes at `lba`, scattered into
    /// `segs` in order. With SGLs ([`Self::uses_sgls`]) the segments may have
    /// any addresses and lengths the controller's SGL alignment allows (the
    /// total is a whole number of blocks); with PRPs every segment but the
    /// first must start on a page and every one but the last end on one
    /// (else [`SubmitError::Misaligned`]).
    pub fn readv(&mut self, nsid: u32, lba: u64, segs: &[DmaBuffer], tag: u64) -> Result<(), SubmitError> {
        self.rw_vec(false, nsid, lba, segs, tag)
    }

    /// Queue a Write of `segs`, gathered in order, at `lba` (see
    /// [`Self::readv`]).
    pub fn writev(&mut self, nsid: u32, lba: u64, segs: &[DmaBuffer], tag: u64) -> Result<(), SubmitError> {
        self.rw_vec(true, nsid, lba, segs, tag)
    }

    fn rw_vec(&mut self, write: bool, nsid: u32, lba: u64, segs: &[DmaBuffer], tag: u64) -> Result<(), SubmitError> {
        if segs.len() > MAX_SEGMENTS {
            return Err(SubmitError::TooLarge);
        }
        let src = BufList { bufs: segs, len: segs.iter().map(DmaBuffer::len).sum() };
        let mode = if segs.len() > 1 && self.sgl.is_some() { DataMode::Sgl } else { DataMode::Prp };
        self.rw_src(write, nsid, lba, &src, segs, mode, tag)
    }

    /// Queue a Read (`write == false`) or Write of `src.len()` bytes at
    /// `lba`, with data in memory the caller describes. `keep` is held until
    /// completion; memory not in it must stay allocated and mapped until the
    /// request completes (the caller guarantees that). `mode` Sgl needs
    /// [`Self::uses_sgls`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rw_src<S: PrpSource + ?Sized>(
        &mut self,
        write: bool,
        nsid: u32,
        lba: u64,
        buf: &S,
        keep: &[DmaBuffer],
        mode: DataMode,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_live()?;
        if keep.len() > MAX_SEGMENTS || (mode == DataMode::Sgl && self.sgl.is_none()) {
            return Err(SubmitError::TooLarge);
        }
        let ns = self.ns_fmt(nsid)?;
        let bs = ns.block as usize;
        let len = buf.len();
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(SubmitError::BadLength { len, block: ns.block });
        }
        // Alignment is checked by the PRP / SGL builders (dword for PRPs,
        // the controller's SGL granularity for SGLs).
        let blocks = (len / bs) as u64;
        if lba.checked_add(blocks).is_none_or(|e| e > ns.blocks) {
            return Err(SubmitError::OutOfRange);
        }
        let per_cmd = (self.max_xfer / bs).clamp(1, 1 << 16) as u64;
        let n = blocks.div_ceil(per_cmd);
        if n > self.free.len() as u64 {
            return Err(if n > u64::from(self.depth) - 1 { SubmitError::TooLarge } else { SubmitError::QueueFull });
        }
        let mk = |slba: u64, nb: u64| {
            let nlb = (nb - 1) as u16;
            if write {
                IoCommand::Write { nsid, slba, nlb, fua: false, lr: false }
            } else {
                IoCommand::Read { nsid, slba, nlb, fua: false, lr: false }
            }
        };
        if n == 1 {
            let cid = self.free.pop().ok_or(SubmitError::QueueFull)?;
            return self.queue_data_cmd(cid, mk(lba, blocks), buf, keep, mode, 0, len, tag, NONE);
        }
        // Split: children complete a parent.
        let parent = self.free_parents.pop().ok_or(SubmitError::QueueFull)?;
        let tail_before = self.sq_tail;
        let mut queued: u16 = 0;
        let mut done = 0u64;
        while done < blocks {
            let nb = per_cmd.min(blocks - done);
            let cid = self.free.pop().ok_or(SubmitError::QueueFull)?;
            let off = done as usize * bs;
            let r = self.queue_data_cmd(cid, mk(lba + done, nb), buf, keep, mode, off, nb as usize * bs, tag, parent);
            if let Err(e) = r {
                // Roll back: nothing was made visible to the controller yet
                // (the doorbell is only written by poll/flush).
                self.unqueue(tail_before, queued);
                self.free_parents.push(parent);
                return Err(e);
            }
            queued += 1;
            done += nb;
        }
        if let Some(p) = self.parents.get_mut(usize::from(parent)) {
            p.tag = tag;
            p.remaining = queued;
            p.error = None;
        }
        Ok(())
    }

    /// Undo the last `count` queued (not yet doorbelled) commands.
    fn unqueue(&mut self, tail_before: u16, count: u16) {
        for _ in 0..count {
            self.sq_tail = (self.sq_tail + self.depth - 1) % self.depth;
            let cid = self.sq.read_u32(usize::from(self.sq_tail) * 64).map(|w| (w >> 16) as u16).unwrap_or(NONE);
            if let Some(s) = self.slots.get_mut(usize::from(cid)) {
                s.state = SlotState::Free;
                s.bufs.clear();
                if s.sqe.psdt() != Some(nvme_spec::queue::Psdt::Prp) {
                    self.stats.sgl_commands -= 1;
                }
                self.free.push(cid);
                self.outstanding -= 1;
                self.stats.submitted -= 1;
            }
        }
        debug_assert_eq!(self.sq_tail, tail_before);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn queue_data_cmd<S: PrpSource + ?Sized>(
        &mut self,
        cid: u16,
        cmd: IoCommand,
        buf: &S,
        keep: &[DmaBuffer],
        mode: DataMode,
        off: usize,
        len: usize,
        tag: u64,
        parent: u16,
    ) -> Result<(), SubmitError> {
        let list = self.lists.slice(usize::from(cid) * self.list_bytes, self.list_bytes).ok_or(SubmitError::TooLarge);
        let built = list.and_then(|l| match (mode, self.sgl) {
            (DataMode::Sgl, Some(align)) => sgl::build(buf, off, len, &l, align).map(DataPointer::Sgl),
            (DataMode::Sgl, None) => Err(SubmitError::TooLarge),
            (DataMode::Prp, _) => prp::build(buf, off, len, &l).map(|(prp1, prp2)| DataPointer::Prp { prp1, prp2 }),
        });
        let dp = match built {
            Ok(p) => p,
            Err(e) => {
                self.free.push(cid);
                return Err(e);
            }
        };
        if mode == DataMode::Sgl {
            self.stats.sgl_commands += 1;
        }
        let mut sqe = cmd.to_sqe(cid);
        sqe.set_data_pointer(dp);
        self.push(cid, sqe, keep, tag, parent);
        Ok(())
    }

    /// Write `sqe` into the SQ (no doorbell) and mark `cid` busy.
    #[inline]
    fn push(&mut self, cid: u16, sqe: Sqe, keep: &[DmaBuffer], tag: u64, parent: u16) {
        if let Some(s) = self.slots.get_mut(usize::from(cid)) {
            s.tag = tag;
            s.parent = parent;
            s.state = SlotState::Busy;
            s.retried = false;
            s.expired = false;
            // Stamped by the first health check that sees it (no clock read
            // on the submission path).
            s.deadline_ns = 0;
            s.bufs.clear();
            // No allocation: callers pass at most MAX_SEGMENTS buffers.
            s.bufs.extend(keep.iter().cloned());
            s.sqe = sqe;
        }
        // In bounds: sq_tail < depth and the SQ holds depth entries.
        let _ = self.sq.write_bytes(usize::from(self.sq_tail) * 64, sqe.as_bytes());
        self.sq_tail = (self.sq_tail + 1) % self.depth;
        self.outstanding += 1;
        self.stats.submitted += 1;
    }

    fn simple(&mut self, cmd: IoCommand, tag: u64) -> Result<(), SubmitError> {
        self.check_live()?;
        let cid = self.free.pop().ok_or(SubmitError::QueueFull)?;
        self.push(cid, cmd.to_sqe(cid), &[], tag, NONE);
        Ok(())
    }

    /// Queue any I/O command as given (its CID is replaced). `keep`, if
    /// given, is held until completion; the data pointer must describe
    /// memory mapped for this controller. For vendor commands and for
    /// testing controllers with hand-made data pointers.
    pub fn submit_raw(&mut self, sqe: Sqe, keep: Option<&DmaBuffer>, tag: u64) -> Result<(), SubmitError> {
        self.check_live()?;
        let cid = self.free.pop().ok_or(SubmitError::QueueFull)?;
        let mut sqe = sqe;
        sqe.set_cid(cid);
        self.push(cid, sqe, keep.map(std::slice::from_ref).unwrap_or(&[]), tag, NONE);
        Ok(())
    }

    /// Queue a Flush of namespace `nsid`.
    pub fn flush_ns(&mut self, nsid: u32, tag: u64) -> Result<(), SubmitError> {
        self.ns_fmt(nsid)?;
        self.simple(IoCommand::Flush { nsid }, tag)
    }

    /// Queue a Write Zeroes of `blocks` blocks at `lba` (may be split).
    pub fn write_zeroes(&mut self, nsid: u32, lba: u64, blocks: u32, tag: u64) -> Result<(), SubmitError> {
        let ns = self.ns_fmt(nsid)?;
        if blocks == 0 || blocks > 1 << 16 {
            return Err(SubmitError::TooLarge);
        }
        if lba.checked_add(u64::from(blocks)).is_none_or(|e| e > ns.blocks) {
            return Err(SubmitError::OutOfRange);
        }
        let cmd =
            IoCommand::WriteZeroes { nsid, slba: lba, nlb: (blocks - 1) as u16, deac: false, fua: false, lr: false };
        self.simple(cmd, tag)
    }

    /// Queue a Dataset Management deallocate of `(lba, blocks)` ranges (at
    /// most 256). The range list lives in the command's own PRP page.
    pub fn deallocate(&mut self, nsid: u32, ranges: &[(u64, u32)], tag: u64) -> Result<(), SubmitError> {
        self.check_live()?;
        let ns = self.ns_fmt(nsid)?;
        if ranges.is_empty() || ranges.len() > 256 {
            return Err(SubmitError::TooLarge);
        }
        for &(lba, n) in ranges {
            if lba.checked_add(u64::from(n)).is_none_or(|e| e > ns.blocks) {
                return Err(SubmitError::OutOfRange);
            }
        }
        let cid = self.free.pop().ok_or(SubmitError::QueueFull)?;
        let off = usize::from(cid) * self.list_bytes;
        let page = match self.lists.slice(off, PAGE_SIZE) {
            Some(p) => p,
            None => {
                self.free.push(cid);
                return Err(SubmitError::TooLarge);
            }
        };
        for (i, &(lba, n)) in ranges.iter().enumerate() {
            let _ = page.write_bytes(i * 16, DsmRange::new(lba, n).as_bytes());
        }
        let cmd = IoCommand::DatasetManagement { nsid, nr: (ranges.len() - 1) as u8, ad: true, idw: false, idr: false };
        let mut sqe = cmd.to_sqe(cid);
        sqe.set_data_pointer(DataPointer::Prp { prp1: page.iova(), prp2: 0 });
        self.push(cid, sqe, &[], tag, NONE);
        Ok(())
    }

    #[inline]
    fn ring(&mut self, sq: bool, new: u16) {
        let (mmio, idx) =
            if sq { (self.sq_db, 2 * usize::from(self.qid)) } else { (self.cq_db, 2 * usize::from(self.qid) + 1) };
        let old = if sq { self.sq_db_last } else { self.cq_db_last };
        dma::wmb();
        let mut write = true;
        if let Some((shadow, ev)) = &self.shadow {
            let off = idx * self.shared.stride;
            if shadow.store_u32_release(off, u32::from(new)).is_ok() {
                dma::mb();
                if let Ok(e) = ev.load_u32_acquire(off) {
                    write = need_event(e as u16, new, old);
                }
            }
        }
        if write {
            self.shared.dev.bar0().write32(mmio, u32::from(new));
            if sq {
                self.stats.sq_doorbells += 1;
            } else {
                self.stats.cq_doorbells += 1;
            }
        } else {
            self.stats.doorbells_skipped += 1;
        }
        if sq {
            self.sq_db_last = new;
        } else {
            self.cq_db_last = new;
        }
    }

    /// Write the SQ tail doorbell for everything queued since the last one.
    #[inline]
    pub fn flush(&mut self) {
        if self.sq_tail != self.sq_db_last && self.shared.state.load(Ordering::Relaxed) == LIVE {
            self.ring(true, self.sq_tail);
        }
    }

    /// Ring the doorbell for queued commands and reap completions, calling
    /// `on_complete(tag, result)` once per submitted request. Returns the
    /// number of requests completed. Also drives timeouts (Abort, then
    /// controller reset and resubmission), surprise-removal detection and,
    /// every few thousand polls, the controller's asynchronous events.
    pub fn poll(&mut self, on_complete: &mut impl FnMut(u64, Result<(), IoError>)) -> usize {
        if self.generation != self.shared.generation.load(Ordering::Acquire) {
            self.recover(on_complete);
        }
        self.flush();
        let n = self.reap(on_complete);
        if self.cq_head != self.cq_db_last {
            self.ring(false, self.cq_head);
        }
        self.polls = self.polls.wrapping_add(1);
        if self.outstanding > 0 && ((n == 0 && self.polls.is_multiple_of(32)) || self.polls.is_multiple_of(1024)) {
            self.check_health(on_complete);
        } else if self.outstanding == 0 && self.polls.is_multiple_of(4096) {
            // Idle: asynchronous events still get handled.
            self.shared.try_service_events();
        }
        n
    }

    /// Consume valid CQ entries. Returns requests completed.
    #[inline]
    fn reap(&mut self, cb: &mut impl FnMut(u64, Result<(), IoError>)) -> usize {
        let mut n = 0;
        loop {
            let off = usize::from(self.cq_head) * 16;
            let Ok(w3) = self.cq.load_u32_acquire(off + 12) else {
                break;
            };
            if (w3 >> 16) & 1 != u32::from(self.phase) {
                break;
            }
            self.cq_head += 1;
            if self.cq_head == self.depth {
                self.cq_head = 0;
                self.phase = !self.phase;
            }
            let status = Status::from_raw((w3 >> 16) as u16);
            n += self.complete(w3 as u16, status, cb);
        }
        n
    }

    #[inline]
    fn complete(&mut self, cid: u16, status: Status, cb: &mut impl FnMut(u64, Result<(), IoError>)) -> usize {
        let Some(slot) = self.slots.get_mut(usize::from(cid)) else {
            return 0; // a CID we never issued: ignore
        };
        if slot.state == SlotState::Free {
            return 0; // stale or duplicate completion
        }
        let result = if status.is_success() {
            Ok(())
        } else if slot.state == SlotState::AbortSent
            && status.code == StatusCode::Generic(GenericStatus::AbortRequested)
        {
            Err(IoError::Timeout)
        } else {
            Err(IoError::Status(status))
        };
        slot.state = SlotState::Free;
        slot.bufs.clear();
        let (tag, parent) = (slot.tag, slot.parent);
        self.free.push(cid);
        self.outstanding -= 1;
        self.stats.completed += 1;
        self.finish(tag, parent, result, cb)
    }

    #[inline]
    fn finish(
        &mut self,
        tag: u64,
        parent: u16,
        result: Result<(), IoError>,
        cb: &mut impl FnMut(u64, Result<(), IoError>),
    ) -> usize {
        if parent == NONE {
            cb(tag, result);
            return 1;
        }
        let Some(p) = self.parents.get_mut(usize::from(parent)) else {
            return 0;
        };
        if let Err(e) = result {
            p.error.get_or_insert(e);
        }
        p.remaining = p.remaining.saturating_sub(1);
        if p.remaining > 0 {
            return 0;
        }
        let (tag, r) = (p.tag, p.error.take().map_or(Ok(()), Err));
        self.free_parents.push(parent);
        cb(tag, r);
        1
    }

    /// Fail every in-flight command with `err`.
    fn fail_all(&mut self, err: IoError, cb: &mut impl FnMut(u64, Result<(), IoError>)) {
        for cid in 0..self.depth {
            let Some(slot) = self.slots.get_mut(usize::from(cid)) else {
                continue;
            };
            if slot.state == SlotState::Free {
                continue;
            }
            slot.state = SlotState::Free;
            slot.bufs.clear();
            let (tag, parent) = (slot.tag, slot.parent);
            self.free.push(cid);
            self.outstanding -= 1;
            self.finish(tag, parent, Err(err), cb);
        }
        self.sq_db_last = self.sq_tail;
    }

    /// Slow path, run every few polls while commands are in flight: device
    /// removal, fatal status, per-command timeouts.
    fn check_health(&mut self, cb: &mut impl FnMut(u64, Result<(), IoError>)) {
        self.now_ns = self.epoch.elapsed().as_nanos() as u64;
        // A register read costs about a microsecond on real hardware: look
        // at most every `check_interval` (a clock read is far cheaper).
        if self.now_ns < self.next_check_ns {
            return;
        }
        self.next_check_ns = self.now_ns + self.check_interval_ns;
        let csts = self.shared.dev.bar0().read32(nvme_spec::regs::offset::CSTS as usize);
        if csts == u32::MAX || self.shared.state.load(Ordering::Acquire) == GONE {
            self.shared.mark_gone();
            self.gone = true;
            self.fail_all(IoError::DeviceGone, cb);
            return;
        }
        self.shared.try_service_events();
        let mut need_reset = nvme_spec::regs::Csts(csts).cfs() == 1;
        if need_reset {
            self.stats.fatal_resets += 1;
        }
        let now = self.now_ns;
        for cid in 0..self.depth {
            let (state, deadline, retried) = match self.slots.get(usize::from(cid)) {
                Some(s) => (s.state, s.deadline_ns, s.retried),
                None => continue,
            };
            if state == SlotState::Free || deadline > now {
                continue;
            }
            if deadline == 0 {
                if let Some(s) = self.slots.get_mut(usize::from(cid)) {
                    s.deadline_ns = now + self.timeout_ns;
                }
                continue;
            }
            self.stats.timeouts += 1;
            match state {
                SlotState::Busy => {
                    self.stats.aborts += 1;
                    let abort = AdminCommand::Abort { sqid: self.qid, cid }.to_sqe(0);
                    let aborted = matches!(self.shared.admin(abort), Ok(c) if c.dw0.get() & 1 == 0);
                    if let Some(s) = self.slots.get_mut(usize::from(cid)) {
                        if aborted {
                            s.state = SlotState::AbortSent;
                            s.deadline_ns = now + self.timeout_ns;
                        } else {
                            need_reset = true;
                            if retried {
                                s.expired = true;
                            }
                            s.retried = true;
                        }
                    }
                }
                SlotState::AbortSent => {
                    need_reset = true;
                    if let Some(s) = self.slots.get_mut(usize::from(cid)) {
                        if retried {
                            s.expired = true;
                        }
                        s.retried = true;
                    }
                }
                SlotState::Free => {}
            }
        }
        if need_reset {
            let _ = self.shared.reset(Some(self.generation));
            self.recover(cb);
        }
    }

    /// Reset the controller now and bring this queue pair back at once:
    /// what completed before the reset is reported to `on_complete`, the
    /// queues are re-created and every unfinished command is resubmitted.
    /// Other queue pairs do the same on their next poll. Fails (and the
    /// controller counts as gone) if the controller could not be brought
    /// back.
    pub fn reset_controller(
        &mut self,
        on_complete: &mut impl FnMut(u64, Result<(), IoError>),
    ) -> Result<(), NvmeError> {
        let r = self.shared.reset(None);
        self.recover(on_complete);
        r?;
        if self.gone {
            return Err(NvmeError::DeviceGone(self.shared.name().to_string()));
        }
        Ok(())
    }

    /// After a controller reset: reap what completed, re-create the queues
    /// and resubmit everything unfinished.
    fn recover(&mut self, cb: &mut impl FnMut(u64, Result<(), IoError>)) {
        let gen = self.shared.generation.load(Ordering::Acquire);
        match self.shared.state.load(Ordering::Acquire) {
            GONE => {
                self.generation = gen;
                self.gone = true;
                self.fail_all(IoError::DeviceGone, cb);
                return;
            }
            LIVE => {}
            _ => return, // reset still in progress: try again next poll
        }
        self.stats.recoveries += 1;
        // The controller is re-enabled but our queues do not exist yet, so
        // nothing writes the CQ now: what is valid in it is final.
        self.reap(cb);
        let _ = self.cq.fill(0, self.cq.len(), 0);
        self.sq_tail = 0;
        self.sq_db_last = 0;
        self.cq_head = 0;
        self.cq_db_last = 0;
        self.phase = true;
        self.generation = gen;
        if self.create_queues().is_err() {
            self.gone = true;
            self.fail_all(IoError::DeviceGone, cb);
            return;
        }
        for cid in 0..self.depth {
            let Some(slot) = self.slots.get_mut(usize::from(cid)) else {
                continue;
            };
            if slot.state == SlotState::Free {
                continue;
            }
            if slot.expired {
                slot.state = SlotState::Free;
                slot.bufs.clear();
                let (tag, parent) = (slot.tag, slot.parent);
                self.free.push(cid);
                self.outstanding -= 1;
                self.finish(tag, parent, Err(IoError::Timeout), cb);
                continue;
            }
            slot.state = SlotState::Busy;
            slot.deadline_ns = 0;
            let sqe = slot.sqe;
            let _ = self.sq.write_bytes(usize::from(self.sq_tail) * 64, sqe.as_bytes());
            self.sq_tail = (self.sq_tail + 1) % self.depth;
        }
        self.flush();
    }
}

/// Buffers back to back, as one data source.
struct BufList<'a> {
    bufs: &'a [DmaBuffer],
    len: usize,
}

impl BufList<'_> {
    fn find(&self, mut off: usize) -> Option<(&DmaBuffer, usize)> {
        for b in self.bufs {
            if off < b.len() {
                return Some((b, off));
            }
            off -= b.len();
        }
        None
    }
}

impl PrpSource for BufList<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn iova_at(&self, off: usize) -> Option<u64> {
        let (b, o) = self.find(off)?;
        b.iova_at(o)
    }
    fn contiguous_len(&self, off: usize) -> usize {
        self.find(off).map_or(0, |(b, o)| b.contiguous_len(o))
    }
    fn run_at(&self, off: usize) -> Option<(u64, usize)> {
        let (b, o) = self.find(off)?;
        Some((b.iova_at(o)?, b.contiguous_len(o)))
    }
}

impl<B: DeviceBacking> Drop for IoQueuePair<B> {
    fn drop(&mut self) {
        if !self.gone && self.shared.state.load(Ordering::Acquire) == LIVE {
            // Deleting the SQ makes the controller finish or abort its
            // commands before it completes, so the memory is then unused.
            let _ = self.shared.admin(AdminCommand::DeleteIoSq { qid: self.qid }.to_sqe(0));
            let _ = self.shared.admin(AdminCommand::DeleteIoCq { qid: self.qid }.to_sqe(0));
        }
        self.shared.release_qid(self.qid);
    }
}

#[cfg(test)]
mod tests {
    use super::need_event;

    #[test]
    fn shadow_doorbell_event_rule() {
        assert!(need_event(5, 6, 5));
        assert!(!need_event(4, 6, 5));
        assert!(need_event(0, 1, 65535));
        assert!(!need_event(7, 6, 5));
    }
}
