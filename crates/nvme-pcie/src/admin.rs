//! The admin queue: synchronous, polled submission of admin commands.
//!
//! Admin commands are rare (bring-up, queue creation, log pages, abort,
//! reset), so the admin queue lives behind the controller's mutex and every
//! command is submitted and waited for in one call.

use std::time::{Duration, Instant};

use nvme_spec::regs::{offset, Csts};
use nvme_spec::{Cqe, Sqe, Status};
use zerocopy::IntoBytes;

use crate::backing::RegisterIo;
use crate::dma::{self, DmaAllocator, DmaBuffer, PAGE_SIZE};
use crate::error::NvmeError;

/// Admin queue depth (entries).
pub const ADMIN_DEPTH: u16 = 32;

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
        })
    }

    /// Forget all state (after a controller disable) and clear the CQ.
    pub(crate) fn reset(&mut self) -> Result<(), NvmeError> {
        self.cq.fill(0, self.cq.len(), 0)?;
        self.tail = 0;
        self.head = 0;
        self.phase = true;
        Ok(())
    }

    /// Submit `sqe` (its CID is overwritten) and wait up to `timeout` for its
    /// completion. An error status is returned as `NvmeError::AdminStatus`.
    pub(crate) fn run<R: RegisterIo>(&mut self, regs: &R, mut sqe: Sqe, timeout: Duration) -> Result<Cqe, NvmeError> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1) & 0x7fff;
        sqe.set_cid(cid);
        let opcode = sqe.opcode();
        self.sq.write_bytes(usize::from(self.tail) * 64, sqe.as_bytes())?;
        self.tail = (self.tail + 1) % ADMIN_DEPTH;
        dma::wmb();
        regs.write32(offset::DOORBELLS as usize, u32::from(self.tail));
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let off = usize::from(self.head) * 16;
            let w3 = self.cq.load_u32_acquire(off + 12)?;
            if (w3 >> 16) & 1 == u32::from(self.phase) {
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
                if cqe.cid.get() != cid {
                    // A stale completion (e.g. of a command that timed out
                    // earlier): skip it.
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
