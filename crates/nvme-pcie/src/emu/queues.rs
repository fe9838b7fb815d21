//! Emulated submission/completion queues, doorbells (MMIO and shadow), and
//! the PRP walker.

use std::sync::atomic::Ordering;
use std::time::Instant;

use nvme_spec::status::GenericStatus;
use nvme_spec::{Cqe, DataPointer, Sqe, Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use super::{lock, Ctl, Fate};

/// An emulated submission queue.
#[derive(Debug)]
pub(crate) struct Sq {
    pub(crate) base: u64,
    pub(crate) size: u16,
    pub(crate) head: u16,
    pub(crate) tail: u16,
    pub(crate) cqid: u16,
}

impl Sq {
    pub(crate) fn new(base: u64, size: u16, cqid: u16) -> Self {
        Self { base, size, head: 0, tail: 0, cqid }
    }
}

/// An emulated completion queue.
#[derive(Debug)]
pub(crate) struct Cq {
    pub(crate) base: u64,
    pub(crate) size: u16,
    pub(crate) head: u16,
    pub(crate) tail: u16,
    pub(crate) phase: bool,
    /// Submission queues posting here.
    pub(crate) sqs: Vec<u16>,
}

impl Cq {
    pub(crate) fn new(base: u64, size: u16, sqs: Vec<u16>) -> Self {
        Self { base, size, head: 0, tail: 0, phase: true, sqs }
    }

    pub(crate) fn full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }
}

/// A completion withheld by fault injection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) sqid: u16,
    pub(crate) cid: u16,
    pub(crate) sqhd: u16,
    pub(crate) dw0: u32,
    pub(crate) status: Status,
    /// None: lost (only Abort or reset ends it).
    pub(crate) release_at: Option<Instant>,
}

/// Result of executing one command.
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) dw0: u32,
    /// No completion now (an Asynchronous Event Request waiting for an
    /// event).
    pub(crate) deferred: bool,
}

impl Outcome {
    pub(crate) fn ok(dw0: u32) -> Self {
        Self { status: Status::SUCCESS, dw0, deferred: false }
    }
    pub(crate) fn err(status: Status) -> Self {
        Self { status, dw0: 0, deferred: false }
    }
    pub(crate) fn deferred() -> Self {
        Self { status: Status::SUCCESS, dw0: 0, deferred: true }
    }
}

/// A generic-status error completion.
pub(crate) fn generic(g: GenericStatus) -> Status {
    Status::new(StatusCode::Generic(g), true)
}

impl Ctl {
    fn shadow_read(&self, idx: u64) -> Option<u32> {
        let base = self.dbbuf_shadow.load(Ordering::Acquire);
        if base == 0 {
            return None;
        }
        let off = idx.checked_mul(self.stride() as u64)?;
        self.iommu.load_u32(base.checked_add(off)?).ok()
    }

    fn eventidx_write(&self, idx: u64, v: u32) {
        let base = self.dbbuf_eventidx.load(Ordering::Acquire);
        if base != 0 {
            if let Some(a) = idx.checked_mul(self.stride() as u64).and_then(|o| base.checked_add(o)) {
                let _ = self.iommu.store_u32(a, v);
            }
        }
    }

    /// A new SQ tail doorbell value for `qid`.
    pub(crate) fn ring_sq(&self, qid: u16, value: u32) {
        let Some(slot) = self.sqs.get(usize::from(qid)) else {
            return;
        };
        let mut g = lock(slot);
        let Some(sq) = g.as_mut() else {
            return;
        };
        // With shadow doorbells the shadow copy is authoritative.
        let value = if qid > 0 { self.shadow_read(2 * u64::from(qid)).unwrap_or(value) } else { value };
        let Ok(tail) = u16::try_from(value) else {
            return;
        };
        if tail >= sq.size {
            // Invalid doorbell write: ignored (hardware raises an async event).
            return;
        }
        sq.tail = tail;
        self.drain_sq(qid, sq);
    }

    /// A new CQ head doorbell value for `qid`.
    pub(crate) fn ring_cq(&self, qid: u16, value: u32) {
        let sqs = {
            let Some(slot) = self.cqs.get(usize::from(qid)) else {
                return;
            };
            let mut g = lock(slot);
            let Some(cq) = g.as_mut() else {
                return;
            };
            let value = if qid > 0 { self.shadow_read(2 * u64::from(qid) + 1).unwrap_or(value) } else { value };
            match u16::try_from(value) {
                Ok(h) if h < cq.size => cq.head = h,
                _ => return,
            }
            cq.sqs.clone()
        };
        // Entries may have waited for room in this CQ.
        for s in sqs {
            if let Some(slot) = self.sqs.get(usize::from(s)) {
                let mut g = lock(slot);
                if let Some(sq) = g.as_mut() {
                    if sq.head != sq.tail {
                        self.drain_sq(s, sq);
                    }
                }
            }
        }
    }

    /// Worker-thread polling of shadow doorbells; true if anything was done.
    pub(crate) fn poll_shadow_doorbells(&self) -> bool {
        let mut work = false;
        for qid in 1..self.sqs.len() as u16 {
            let Some(tail) = self.shadow_read(2 * u64::from(qid)) else {
                return work;
            };
            let pending = self
                .sqs
                .get(usize::from(qid))
                .map(|s| lock(s).as_ref().is_some_and(|sq| u32::from(sq.tail) != tail))
                .unwrap_or(false);
            if pending {
                work = true;
                self.ring_sq(qid, tail);
            }
        }
        work
    }

    /// Execute entries from head to tail while the CQ has room.
    fn drain_sq(&self, qid: u16, sq: &mut Sq) {
        let Some(cq_slot) = self.cqs.get(usize::from(sq.cqid)) else {
            return;
        };
        while sq.head != sq.tail {
            if !self.running_or_admin() {
                return;
            }
            {
                let mut cg = lock(cq_slot);
                let Some(cq) = cg.as_mut() else {
                    return;
                };
                if sq.cqid > 0 {
                    if let Some(h) = self.shadow_read(2 * u64::from(sq.cqid) + 1) {
                        if let Ok(h) = u16::try_from(h) {
                            if h < cq.size {
                                cq.head = h;
                            }
                        }
                    }
                }
                if cq.full() {
                    break;
                }
            }
            let mut sqe = Sqe::new_zeroed();
            let addr = sq.base + u64::from(sq.head) * 64;
            if self.iommu.read(addr, sqe.as_mut_bytes()).is_err() {
                // The host unmapped its queue: nothing sensible to do.
                return;
            }
            sq.head = (sq.head + 1) % sq.size;
            self.commands.fetch_add(1, Ordering::Relaxed);
            let out = if qid == 0 { self.exec_admin(&sqe) } else { self.exec_io(&sqe) };
            let (cid, opc) = (sqe.cid(), sqe.opcode());
            if out.deferred {
                continue; // completed when an event comes
            }
            let fate = self.fate(qid, opc, out.status);
            match fate {
                Fate::Post(status) => {
                    if !status.is_success() {
                        self.log_error(qid, cid, status);
                    }
                    let mut cg = lock(cq_slot);
                    if let Some(cq) = cg.as_mut() {
                        self.post(cq, qid, cid, sq.head, out.dw0, status);
                        if qid == 0 {
                            // A log page read may have unmasked an event.
                            self.deliver_events(cq, sq.head);
                        }
                    }
                }
                Fate::Lose | Fate::Delay(_) => {
                    let release_at = match fate {
                        Fate::Delay(t) => Some(t),
                        _ => None,
                    };
                    lock(&self.held).push(Held {
                        sqid: qid,
                        cid,
                        sqhd: sq.head,
                        dw0: out.dw0,
                        status: out.status,
                        release_at,
                    });
                }
            }
        }
        if qid > 0 {
            self.eventidx_write(2 * u64::from(qid), u32::from(sq.tail));
        }
    }

    fn running_or_admin(&self) -> bool {
        !self.removed.load(Ordering::Acquire) && !self.fatal.load(Ordering::Acquire)
    }

    /// Write one completion entry (phase tag last) and advance the tail.
    pub(crate) fn post(&self, cq: &mut Cq, sqid: u16, cid: u16, sqhd: u16, dw0: u32, st: Status) {
        let mut e = Cqe::new(cid, st);
        e.dw0 = dw0.into();
        e.sqhd = sqhd.into();
        e.sqid = sqid.into();
        e.set_phase(cq.phase);
        let addr = cq.base + u64::from(cq.tail) * 16;
        let bytes = e.as_bytes();
        let (first, last) = bytes.split_at(12);
        let last = u32::from_le_bytes([last[0], last[1], last[2], last[3]]);
        if self.iommu.write(addr, first).is_err() || self.iommu.store_u32(addr + 12, last).is_err() {
            return;
        }
        cq.tail = (cq.tail + 1) % cq.size;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
    }

    /// Post a withheld completion with `status`.
    pub(crate) fn post_held(&self, h: &Held, status: Status) {
        let cqid = match self.sqs.get(usize::from(h.sqid)).map(|s| lock(s).as_ref().map(|q| q.cqid)) {
            Some(Some(c)) => c,
            _ => return,
        };
        if let Some(slot) = self.cqs.get(usize::from(cqid)) {
            if let Some(cq) = lock(slot).as_mut() {
                if !cq.full() {
                    self.post(cq, h.sqid, h.cid, h.sqhd, h.dw0, status);
                }
            }
        }
    }

    /// Gather the (iova, len) segments a PRP data pointer describes for a
    /// `len`-byte transfer.
    pub(crate) fn prp_segments(&self, sqe: &Sqe, len: usize, out: &mut Vec<(u64, usize)>) -> Result<(), Status> {
        out.clear();
        if len == 0 {
            return Ok(());
        }
        let (prp1, prp2) = match sqe.data_pointer() {
            Some(DataPointer::Prp { prp1, prp2 }) => (prp1, prp2),
            // Admin commands always use PRPs on PCIe; I/O commands with
            // SGLs go through `data_segments`.
            _ => return Err(generic(GenericStatus::InvalidField)),
        };
        let page = self.page_size();
        let pmask = page as u64 - 1;
        let bad_offset = generic(GenericStatus::PrpOffsetInvalid);
        if prp1 & 3 != 0 {
            return Err(bad_offset);
        }
        let first = (page - (prp1 & pmask) as usize).min(len);
        out.push((prp1, first));
        let mut remaining = len - first;
        if remaining == 0 {
            return Ok(());
        }
        if remaining <= page {
            if prp2 & pmask != 0 {
                return Err(bad_offset);
            }
            out.push((prp2, remaining));
            return Ok(());
        }
        let mut list = prp2;
        if list & 7 != 0 {
            return Err(bad_offset);
        }
        let xfer = generic(GenericStatus::DataTransferError);
        let mut entries = [0u64; 512];
        loop {
            let in_page = (page - (list & pmask) as usize) / 8;
            let need = remaining.div_ceil(page);
            // If more entries are needed than this list page holds, its last
            // entry chains to the next list page.
            let (n, chained) = if need > in_page { (in_page, true) } else { (need, false) };
            let buf = entries.get_mut(..n).ok_or(xfer)?;
            self.iommu.read(list, buf.as_mut_bytes()).map_err(|_| xfer)?;
            let data_entries = if chained { n - 1 } else { n };
            for &e in buf.iter().take(data_entries) {
                let e = u64::from_le(e);
                if e & pmask != 0 {
                    return Err(bad_offset);
                }
                let take = remaining.min(page);
                out.push((e, take));
                remaining -= take;
            }
            if !chained {
                return Ok(());
            }
            list = u64::from_le(*buf.last().ok_or(xfer)?);
            if list & pmask != 0 {
                return Err(bad_offset);
            }
        }
    }
}
