//! The admin queue: synchronous, polled submission of admin commands.
//!
//! Admin commands are rare (bring-up, queue creation, log pages, abort,
//! reset), so the admin queue lives behind the controller's mutex and every
//! command is submitted and waited for in one call. The exception are
//! Asynchronous Event Requests: they stay outstanding (CIDs from
//! [`AER_CID_BASE`]) and their completions, whenever they turn up, are set
//! aside for the controller to handle.

use std::time::{Duration, Instant};

use nvme_spec::regs::{offset, Csts};
use nvme_spec::{Cqe, Sqe, Status};
use zerocopy::IntoBytes;

use crate::backing::RegisterIo;
use crate::dma::{self, DmaAllocator, DmaBuffer, PAGE_SIZE};
use crate::error::NvmeError;

/// Admin queue depth (entries).
pub const ADMIN_DEPTH: u16 = 32;

/// CIDs of Asynchronous Event Requests: `AER_CID_BASE + k`; ordinary admin
/// commands use CIDs below it.
pub const AER_CID_BASE: u16 = 0x8000;

/// Asynchronous Event Requests kept outstanding at most (the controller's
/// AERL + 1 may lower it).
pub const MAX_AERS: u16 = 4;

/// The admin submission/completion queue pair.
pub(crate) struct AdminQueue {
    pub(crate) sq: DmaBuffer,
    pub(crate) cq: DmaBuffer,
    /// One page for Identify / log page data.
    pub(crate) data: DmaBuffer,
    tail: u16,
    head: u16,
    phase: bool,
    next_cid: u16,
    stride: usize,
    /// Asynchronous Event Requests outstanding.
    pub(crate) aers: u16,
    /// Completions of Asynchronous Event Requests not handled yet.
    pub(crate) aer_done: Vec<Cqe>,
}

impl AdminQueue {
    pub(crate) fn new(dma: &DmaAllocator, stride: usize) -> Result<Self, NvmeError> {
        Ok(Self {
            sq: dma.alloc(usize::from(ADMIN_DEPTH) * 64)?,
            cq: dma.alloc(usize::from(ADMIN_DEPTH) * 16)?,
            data: dma.alloc(PAGE_SIZE)?,
            tail: 0,
            head: 0,
            phase: true,
            next_cid: 0,
            stride,
            aers: 0,
            aer_done: Vec::with_capacity(usize::from(MAX_AERS)),
        })
    }

    /// Forget all state (after a controller disable) and clear the CQ.
    pub(crate) fn reset(&mut self) -> Result<(), NvmeError> {
        self.cq.fill(0, self.cq.len(), 0)?;
        self.tail = 0;
        self.head = 0;
        self.phase = true;
        // A disabled controller has dropped its Asynchronous Event Requests.
        self.aers = 0;
        self.aer_done.clear();
        Ok(())
    }

    /// Write `sqe` (with its CID as given) and ring the doorbell.
    fn push<R: RegisterIo>(&mut self, regs: &R, sqe: &Sqe) -> Result<(), NvmeError> {
        self.sq.write_bytes(usize::from(self.tail) * 64, sqe.as_bytes())?;
        self.tail = (self.tail + 1) % ADMIN_DEPTH;
        dma::wmb();
        regs.write32(offset::DOORBELLS as usize, u32::from(self.tail));
        Ok(())
    }

    /// Submit an Asynchronous Event Request with CID `AER_CID_BASE + k`
    /// without waiting for it.
    pub(crate) fn submit_aer<R: RegisterIo>(&mut self, regs: &R, k: u16) -> Result<(), NvmeError> {
        let sqe = nvme_spec::AdminCommand::AsyncEventRequest.to_sqe(AER_CID_BASE + k);
        self.push(regs, &sqe)?;
        self.aers += 1;
        Ok(())
    }

    /// The next valid completion, if any (consumed; CQ head doorbell written).
    fn take<R: RegisterIo>(&mut self, regs: &R) -> Result<Option<Cqe>, NvmeError> {
        let off = usize::from(self.head) * 16;
        let w3 = self.cq.load_u32_acquire(off + 12)?;
        if (w3 >> 16) & 1 != u32::from(self.phase) {
            return Ok(None);
        }
        let dw0 = self.cq.read_u32(off)?;
        let dw1 = self.cq.read_u32(off + 4)?;
        let w2 = self.cq.read_u32(off + 8)?;
        self.head = (self.head + 1) % ADMIN_DEPTH;
        if self.head == 0 {
            self.phase = !self.phase;
        }
        regs.write32(offset::DOORBELLS as usize + self.stride, u32::from(self.head));
        let mut cqe = Cqe::new(w3 as u16, Status::from_raw((w3 >> 16) as u16));
        cqe.dw0 = dw0.into();
        cqe.dw1 = dw1.into();
        cqe.sqhd = (w2 as u16).into();
        cqe.sqid = ((w2 >> 16) as u16).into();
        cqe.status = ((w3 >> 16) as u16).into();
        Ok(Some(cqe))
    }

    /// Set an Asynchronous Event Request completion aside (others are
    /// stale: dropped).
    fn keep_if_aer(&mut self, cqe: Cqe) {
        if cqe.cid.get() >= AER_CID_BASE && self.aer_done.len() < self.aer_done.capacity() {
            self.aer_done.push(cqe);
        }
    }

    /// True if a completion is waiting (one memory read).
    pub(crate) fn has_completion(&self) -> bool {
        let off = usize::from(self.head) * 16;
        self.cq.load_u32_acquire(off + 12).is_ok_and(|w3| (w3 >> 16) & 1 == u32::from(self.phase))
    }

    /// Consume every completion that is there without waiting, setting
    /// Asynchronous Event Request completions aside.
    pub(crate) fn poll<R: RegisterIo>(&mut self, regs: &R) -> Result<(), NvmeError> {
        while let Some(cqe) = self.take(regs)? {
            self.keep_if_aer(cqe);
        }
        Ok(())
    }

    /// Submit `sqe` (its CID is overwritten) and wait up to `timeout` for its
    /// completion. An error status is returned as `NvmeError::AdminStatus`.
    pub(crate) fn run<R: RegisterIo>(&mut self, regs: &R, mut sqe: Sqe, timeout: Duration) -> Result<Cqe, NvmeError> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1) % AER_CID_BASE;
        sqe.set_cid(cid);
        let opcode = sqe.opcode();
        self.push(regs, &sqe)?;
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(cqe) = self.take(regs)? {
                if cqe.cid.get() != cid {
                    // An Asynchronous Event Request's completion (kept), or a
                    // stale one (e.g. of a command that timed out earlier).
                    self.keep_if_aer(cqe);
                    continue;
                }
                let st = cqe.status();
                if !st.is_success() {
                    return Err(NvmeError::AdminStatus { opcode, status: st });
                }
                return Ok(cqe);
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                let csts = regs.read32(offset::CSTS as usize);
                if csts == u32::MAX {
                    return Err(NvmeError::DeviceGone(String::new()));
                }
                if Csts(csts).cfs() == 1 {
                    return Err(NvmeError::Fatal(String::new()));
                }
                if start.elapsed() > timeout {
                    return Err(NvmeError::AdminTimeout { opcode });
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}
