//! An NVMe PCIe controller emulated in ordinary memory.
//!
//! [`Emulator`] implements [`DeviceBacking`]: its BAR0 is a register file
//! (CAP, VS, CC, CSTS, AQA/ASQ/ACQ, doorbells) and its "device memory
//! accesses" go through a [`SoftIommu`], so the emulated device can only
//! touch memory the driver mapped, at the IOVAs the driver gave it.
//!
//! # Data pointers
//! PRPs always; SGLs for I/O commands when [`EmuConfig::sgl`] is set (the
//! default: dword granularity), advertised in Identify SGLS and walked
//! strictly: malformed descriptors and segments fail with the status the
//! NVMe base specification gives for them.
//!
//! # When commands run
//! - [`Processing::Inline`] (default): a submission queue tail doorbell write
//!   processes the new entries synchronously, on the writing thread, before
//!   the write returns; completions are therefore visible by the next poll.
//!   Deterministic, good for tests and for measuring driver CPU cost.
//! - [`Processing::Thread`]: doorbell writes only record the value; a worker
//!   thread owned by the emulator polls the recorded doorbells (and shadow
//!   doorbells) and processes commands concurrently with the driver, as real
//!   hardware does. Delayed completions are only released in this mode or by
//!   [`EmuHandle::tick`].
//!
//! Time spent processing (in either mode) is accounted in [`EmuStats`], so a
//! benchmark can report driver cost separately from emulator cost.
//!
//! # Faults
//! [`EmuHandle`] injects faults: chosen error statuses, lost completions
//! (answered only by Abort or reset), delayed completions, controller fatal
//! status (CSTS.CFS), and surprise removal (all registers read all-ones,
//! nothing is processed any more).

mod admin;
mod events;
mod nvm;
mod queues;
mod sgl;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nvme_spec::regs::{offset, Aqa, Cap, Cc, Csts, Vs};
use nvme_spec::Status;

use crate::backing::{DeviceBacking, RegisterIo};
use crate::dma::{DmaAllocator, MemorySource, SoftIommu};
use crate::sgl::SglAlignment;

use queues::{Cq, Held, Sq};

pub use events::EmuEvent;

/// One emulated namespace.
#[derive(Debug, Clone)]
pub struct EmuNamespace {
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// log2 of the logical block size (9 or 12).
    pub lba_shift: u8,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// UUID reported in the namespace identification descriptors.
    pub uuid: Option<[u8; 16]>,
    /// Metadata bytes per block, in a separate buffer (reported in the LBA
    /// format; the emulator transfers no metadata).
    pub metadata_size: u16,
}

impl EmuNamespace {
    /// A namespace of `bytes` bytes with `block` byte blocks and identifiers
    /// derived from `seed`.
    pub fn new(bytes: u64, block: u32, seed: u8) -> Self {
        let lba_shift = block.trailing_zeros() as u8;
        let mut nguid = [0u8; 16];
        for (i, b) in nguid.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        let mut uuid = nguid;
        uuid[6] = 0x40 | (uuid[6] & 0xf);
        uuid[8] = 0x80 | (uuid[8] & 0x3f);
        Self {
            blocks: bytes >> lba_shift,
            lba_shift,
            nguid,
            eui64: [0x00, 0x25, 0x38, seed, 1, 2, 3, 4],
            uuid: Some(uuid),
            metadata_size: 0,
        }
    }
}

/// How the emulator runs commands (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processing {
    /// On the thread that writes the doorbell, before the write returns.
    Inline,
    /// On a worker thread polling the doorbells.
    Thread,
}

/// Emulated controller parameters.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Maximum queue entries (CAP.MQES + 1), at least 2.
    pub max_queue_entries: u16,
    /// Doorbell stride exponent (CAP.DSTRD).
    pub dstrd: u8,
    /// CAP.TO in 500 ms units.
    pub timeout_500ms: u8,
    /// CAP.MPSMIN.
    pub mpsmin: u8,
    /// MDTS as a power of two of the minimum page size (0: no limit).
    pub mdts: u8,
    /// I/O queue pairs the controller offers.
    pub max_io_queues: u16,
    /// Namespaces, NSIDs 1, 2, ... in order.
    pub namespaces: Vec<EmuNamespace>,
    /// Offer Doorbell Buffer Config (shadow doorbells).
    pub doorbell_buffer: bool,
    /// CSTS reads needed after an enable/disable before RDY follows CC.EN
    /// (exercises the driver's ready wait).
    pub ready_delay_reads: u32,
    /// Command processing mode.
    pub processing: Processing,
    /// Serial number string.
    pub serial: String,
    /// SGL support advertised in Identify SGLS (None: PRPs only).
    pub sgl: Option<SglAlignment>,
    /// Accept SGLs describing more data than the command transfers (SGLS
    /// bit 18); without it the data descriptors must add up exactly.
    pub sgl_excess_length: bool,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            max_queue_entries: 1024,
            dstrd: 0,
            timeout_500ms: 2,
            mpsmin: 0,
            mdts: 5,
            max_io_queues: 8,
            namespaces: vec![EmuNamespace::new(16 << 20, 512, 1)],
            doorbell_buffer: true,
            ready_delay_reads: 2,
            processing: Processing::Inline,
            serial: "XBDEVEMU0001".to_string(),
            sgl: Some(SglAlignment::Dword),
            sgl_excess_length: false,
        }
    }
}

/// Emulator time and work counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmuStats {
    /// Nanoseconds spent inside the emulator processing doorbells.
    pub busy_ns: u64,
    /// Commands executed (admin and I/O).
    pub commands: u64,
    /// MMIO doorbell writes received.
    pub doorbell_writes: u64,
    /// I/O commands whose data pointer was an SGL.
    pub sgl_commands: u64,
}

/// Which completions a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultFilter {
    /// Only commands on this submission queue (None: any I/O queue).
    pub sqid: Option<u16>,
    /// Only commands with this opcode (None: any).
    pub opcode: Option<u8>,
}

impl FaultFilter {
    /// Any command on any I/O queue.
    pub const ANY_IO: Self = Self { sqid: None, opcode: None };

    fn matches(&self, sqid: u16, opcode: u8) -> bool {
        match self.sqid {
            Some(q) if q != sqid => return false,
            None if sqid == 0 => return false,
            _ => {}
        }
        self.opcode.is_none_or(|o| o == opcode)
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// (filter, status, remaining count)
    error: Option<(FaultFilter, Status, u32)>,
    /// (filter, remaining count)
    lose: Option<(FaultFilter, u32)>,
    delay: Option<(FaultFilter, Duration)>,
    abort_ineffective: bool,
}

impl Faults {
    fn armed(&self) -> bool {
        self.error.is_some() || self.lose.is_some() || self.delay.is_some()
    }
}

/// What happens to one completion after fault injection.
#[derive(Clone, Copy)]
pub(crate) enum Fate {
    Post(Status),
    Lose,
    Delay(Instant),
}

/// An emulated namespace's data.
pub(crate) struct NsData {
    pub(crate) info: EmuNamespace,
    pub(crate) data: RwLock<Vec<u8>>,
}

/// The controller core shared by the register file, the worker thread and
/// fault handles.
pub(crate) struct Ctl {
    pub(crate) cfg: EmuConfig,
    pub(crate) cap: Cap,
    pub(crate) iommu: Arc<SoftIommu>,
    removed: AtomicBool,
    fatal: AtomicBool,
    cc: AtomicU32,
    csts: AtomicU32,
    aqa: AtomicU32,
    asq: AtomicU64,
    acq: AtomicU64,
    intm: AtomicU32,
    ready_countdown: AtomicU32,
    /// Serialises CC writes (enable/disable/reset) against everything else
    /// that changes the queue tables wholesale.
    cc_lock: Mutex<()>,
    pub(crate) sqs: Box<[Mutex<Option<Sq>>]>,
    pub(crate) cqs: Box<[Mutex<Option<Cq>>]>,
    pub(crate) admin: Mutex<admin::AdminState>,
    pub(crate) aer: Mutex<events::AerState>,
    pub(crate) ns: Box<[NsData]>,
    faults: Mutex<Faults>,
    faults_armed: AtomicBool,
    pub(crate) held: Mutex<Vec<Held>>,
    /// Shadow doorbell and EventIdx buffer IOVAs (0: not configured).
    pub(crate) dbbuf_shadow: AtomicU64,
    pub(crate) dbbuf_eventidx: AtomicU64,
    /// Doorbell values recorded for the worker (Thread mode).
    pending_db: Box<[AtomicU32]>,
    pending_any: AtomicBool,
    stop: AtomicBool,
    busy_ns: AtomicU64,
    pub(crate) commands: AtomicU64,
    doorbell_writes: AtomicU64,
    pub(crate) sgl_commands: AtomicU64,
}

impl Ctl {
    fn new(cfg: EmuConfig, iommu: Arc<SoftIommu>) -> Self {
        let mqes = cfg.max_queue_entries.max(2) - 1;
        let cap = Cap(0)
            .with_mqes(mqes)
            .with_cqr(1)
            .with_to(cfg.timeout_500ms)
            .with_dstrd(cfg.dstrd)
            .with_css(1)
            .with_mpsmin(cfg.mpsmin)
            .with_mpsmax(cfg.mpsmin.max(4));
        let nq = usize::from(cfg.max_io_queues) + 1;
        let ns = cfg
            .namespaces
            .iter()
            .map(|n| NsData { info: n.clone(), data: RwLock::new(vec![0u8; (n.blocks << n.lba_shift) as usize]) })
            .collect();
        Self {
            cap,
            iommu,
            removed: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            cc: AtomicU32::new(0),
            csts: AtomicU32::new(0),
            aqa: AtomicU32::new(0),
            asq: AtomicU64::new(0),
            acq: AtomicU64::new(0),
            intm: AtomicU32::new(0),
            ready_countdown: AtomicU32::new(0),
            cc_lock: Mutex::new(()),
            sqs: (0..nq).map(|_| Mutex::new(None)).collect(),
            cqs: (0..nq).map(|_| Mutex::new(None)).collect(),
            admin: Mutex::new(admin::AdminState::default()),
            aer: Mutex::new(events::AerState::default()),
            ns,
            faults: Mutex::new(Faults::default()),
            faults_armed: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            dbbuf_shadow: AtomicU64::new(0),
            dbbuf_eventidx: AtomicU64::new(0),
            pending_db: (0..nq * 2).map(|_| AtomicU32::new(u32::MAX)).collect(),
            pending_any: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            busy_ns: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            doorbell_writes: AtomicU64::new(0),
            sgl_commands: AtomicU64::new(0),
            cfg,
        }
    }

    pub(crate) fn stride(&self) -> usize {
        4usize << self.cfg.dstrd
    }

    /// Memory page size selected by CC.MPS.
    pub(crate) fn page_size(&self) -> usize {
        4096usize << Cc(self.cc.load(Ordering::Acquire)).mps()
    }

    /// Maximum data transfer in bytes (None: unlimited).
    pub(crate) fn max_transfer(&self) -> Option<usize> {
        (self.cfg.mdts != 0).then(|| (4096usize << self.cfg.mpsmin) << self.cfg.mdts)
    }

    fn running(&self) -> bool {
        !self.removed.load(Ordering::Acquire)
            && !self.fatal.load(Ordering::Acquire)
            && Csts(self.csts.load(Ordering::Acquire)).rdy() == 1
    }

    fn bar_len(&self) -> usize {
        0x1000 + self.pending_db.len() * self.stride()
    }

    fn read_reg32(&self, off: usize) -> u32 {
        if self.removed.load(Ordering::Acquire) {
            return u32::MAX;
        }
        let hi = |v: u64| (v >> 32) as u32;
        match off as u32 {
            offset::CAP => self.cap.0 as u32,
            o if o == offset::CAP + 4 => hi(self.cap.0),
            offset::VS => Vs::new(1, 4, 0).0,
            offset::INTMS | offset::INTMC => self.intm.load(Ordering::Relaxed),
            offset::CC => self.cc.load(Ordering::Acquire),
            offset::CSTS => self.read_csts(),
            offset::AQA => self.aqa.load(Ordering::Acquire),
            offset::ASQ => self.asq.load(Ordering::Acquire) as u32,
            o if o == offset::ASQ + 4 => hi(self.asq.load(Ordering::Acquire)),
            offset::ACQ => self.acq.load(Ordering::Acquire) as u32,
            o if o == offset::ACQ + 4 => hi(self.acq.load(Ordering::Acquire)),
            _ => 0,
        }
    }

    fn read_csts(&self) -> u32 {
        // RDY follows CC.EN after `ready_delay_reads` reads of CSTS.
        let prev = self.ready_countdown.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        if prev == Ok(1) {
            let _g = lock(&self.cc_lock);
            let en = Cc(self.cc.load(Ordering::Acquire)).en();
            if en == 1 && !self.fatal.load(Ordering::Acquire) && self.enable() {
                let cs = Csts(self.csts.load(Ordering::Acquire)).with_rdy(1);
                self.csts.store(cs.0, Ordering::Release);
            }
        }
        let mut cs = Csts(self.csts.load(Ordering::Acquire));
        if self.fatal.load(Ordering::Acquire) {
            cs = cs.with_cfs(1);
        }
        cs.0
    }

    fn write_reg32(&self, off: usize, v: u32) {
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        if off >= 0x1000 {
            self.doorbell_write(off, v);
            return;
        }
        match off as u32 {
            offset::INTMS => {
                self.intm.fetch_or(v, Ordering::Relaxed);
            }
            offset::INTMC => {
                self.intm.fetch_and(!v, Ordering::Relaxed);
            }
            offset::CC => self.write_cc(v),
            offset::AQA => self.aqa.store(v, Ordering::Release),
            o if o == offset::ASQ => low32(&self.asq, v),
            o if o == offset::ASQ + 4 => high32(&self.asq, v),
            o if o == offset::ACQ => low32(&self.acq, v),
            o if o == offset::ACQ + 4 => high32(&self.acq, v),
            _ => {}
        }
    }

    fn write_cc(&self, v: u32) {
        let _g = lock(&self.cc_lock);
        let old = Cc(self.cc.swap(v, Ordering::AcqRel));
        let new = Cc(v);
        if new.shn() != 0 && old.shn() == 0 {
            let cs = Csts(self.csts.load(Ordering::Acquire)).with_shst(2);
            self.csts.store(cs.0, Ordering::Release);
        }
        if old.en() == 1 && new.en() == 0 {
            // Controller reset: everything goes, including a fatal status.
            self.reset_queues();
            self.fatal.store(false, Ordering::Release);
            self.csts.store(0, Ordering::Release);
            self.ready_countdown.store(0, Ordering::Release);
        } else if old.en() == 0 && new.en() == 1 {
            if self.cfg.ready_delay_reads == 0 {
                if self.enable() {
                    let cs = Csts(self.csts.load(Ordering::Acquire)).with_rdy(1);
                    self.csts.store(cs.0, Ordering::Release);
                }
            } else {
                self.ready_countdown.store(self.cfg.ready_delay_reads, Ordering::Release);
            }
        }
    }

    /// Bring up the admin queue from AQA/ASQ/ACQ. On bad values the
    /// controller reports a fatal status, as hardware does.
    fn enable(&self) -> bool {
        let cc = Cc(self.cc.load(Ordering::Acquire));
        let aqa = Aqa(self.aqa.load(Ordering::Acquire));
        let asq = self.asq.load(Ordering::Acquire);
        let acq = self.acq.load(Ordering::Acquire);
        let ok = cc.iosqes() == 6
            && cc.iocqes() == 4
            && cc.css() == 0
            && cc.mps() >= self.cap.mpsmin()
            && cc.mps() <= self.cap.mpsmax()
            && aqa.asqs() >= 1
            && aqa.acqs() >= 1
            && asq.is_multiple_of(4096)
            && acq.is_multiple_of(4096)
            && asq != 0
            && acq != 0;
        if !ok {
            self.fatal.store(true, Ordering::Release);
            return false;
        }
        self.reset_queues();
        if let (Some(sq), Some(cq)) = (self.sqs.first(), self.cqs.first()) {
            *lock(cq) = Some(Cq::new(acq, aqa.acqs() + 1, vec![0]));
            *lock(sq) = Some(Sq::new(asq, aqa.asqs() + 1, 0));
        }
        true
    }

    fn reset_queues(&self) {
        for q in self.sqs.iter() {
            *lock(q) = None;
        }
        for q in self.cqs.iter() {
            *lock(q) = None;
        }
        lock(&self.held).clear();
        *lock(&self.admin) = admin::AdminState::default();
        lock(&self.aer).reset();
        self.dbbuf_shadow.store(0, Ordering::Release);
        self.dbbuf_eventidx.store(0, Ordering::Release);
        for d in self.pending_db.iter() {
            d.store(u32::MAX, Ordering::Relaxed);
        }
    }

    fn doorbell_write(&self, off: usize, v: u32) {
        self.doorbell_writes.fetch_add(1, Ordering::Relaxed);
        let stride = self.stride();
        let rel = off - 0x1000;
        if !rel.is_multiple_of(stride) {
            return;
        }
        let idx = rel / stride;
        if self.cfg.processing == Processing::Thread {
            if let Some(d) = self.pending_db.get(idx) {
                d.store(v, Ordering::Release);
                self.pending_any.store(true, Ordering::Release);
            }
            return;
        }
        let t0 = Instant::now();
        self.handle_doorbell(idx, v);
        self.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn handle_doorbell(&self, idx: usize, v: u32) {
        if !self.running() {
            return;
        }
        let Ok(qid) = u16::try_from(idx / 2) else {
            return;
        };
        if idx.is_multiple_of(2) {
            self.ring_sq(qid, v);
        } else {
            self.ring_cq(qid, v);
        }
    }

    /// Decide what happens to a completion (fault injection).
    pub(crate) fn fate(&self, sqid: u16, opcode: u8, status: Status) -> Fate {
        if !self.faults_armed.load(Ordering::Relaxed) {
            return Fate::Post(status);
        }
        let mut f = lock(&self.faults);
        let mut fate = Fate::Post(status);
        if let Some((flt, st, n)) = &mut f.error {
            if flt.matches(sqid, opcode) && *n > 0 {
                *n -= 1;
                fate = Fate::Post(*st);
                if *n == 0 {
                    f.error = None;
                }
            }
        }
        if let Some((flt, n)) = &mut f.lose {
            if flt.matches(sqid, opcode) && *n > 0 {
                *n -= 1;
                fate = Fate::Lose;
                if *n == 0 {
                    f.lose = None;
                }
            }
        }
        if let (Fate::Post(_), Some((flt, d))) = (&fate, &f.delay) {
            if flt.matches(sqid, opcode) {
                fate = Fate::Delay(Instant::now() + *d);
            }
        }
        self.faults_armed.store(f.armed(), Ordering::Relaxed);
        fate
    }

    pub(crate) fn abort_ineffective(&self) -> bool {
        lock(&self.faults).abort_ineffective
    }

    /// Post completions whose delay has passed.
    fn release_delayed(&self) {
        let now = Instant::now();
        let due: Vec<Held> = {
            let mut h = lock(&self.held);
            if h.is_empty() {
                return;
            }
            let (due, keep) = h.drain(..).partition(|x| x.release_at.is_some_and(|t| t <= now));
            *h = keep;
            due
        };
        for h in due {
            self.post_held(&h, h.status);
        }
    }

    fn worker_loop(self: Arc<Self>) {
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let t0 = Instant::now();
            let mut work = false;
            if self.pending_any.swap(false, Ordering::AcqRel) {
                for (i, d) in self.pending_db.iter().enumerate() {
                    let v = d.swap(u32::MAX, Ordering::AcqRel);
                    if v != u32::MAX {
                        work = true;
                        self.handle_doorbell(i, v);
                    }
                }
            }
            if self.running() && self.dbbuf_shadow.load(Ordering::Acquire) != 0 {
                work |= self.poll_shadow_doorbells();
            }
            self.release_delayed();
            if work {
                idle = 0;
                self.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            } else {
                idle = idle.saturating_add(1);
                if idle > 64 {
                    std::thread::sleep(Duration::from_micros(20));
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

fn low32(a: &AtomicU64, v: u32) {
    let old = a.load(Ordering::Acquire);
    a.store((old & !0xffff_ffff) | u64::from(v), Ordering::Release);
}

fn high32(a: &AtomicU64, v: u32) {
    let old = a.load(Ordering::Acquire);
    a.store((old & 0xffff_ffff) | (u64::from(v) << 32), Ordering::Release);
}

/// Lock a mutex, recovering the data if a thread panicked while holding it
/// (the emulator's state stays usable; tests then fail on their own terms).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// BAR0 of the emulated controller.
pub struct EmuRegisters {
    ctl: Arc<Ctl>,
}

impl std::fmt::Debug for EmuRegisters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmuRegisters")
    }
}

impl RegisterIo for EmuRegisters {
    fn len(&self) -> usize {
        self.ctl.bar_len()
    }

    fn read32(&self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || offset + 4 > self.len() {
            return u32::MAX;
        }
        self.ctl.read_reg32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        if !offset.is_multiple_of(4) || offset + 4 > self.len() {
            return;
        }
        self.ctl.write_reg32(offset, value);
    }

    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// An emulated NVMe controller (see the module documentation).
pub struct Emulator {
    name: String,
    regs: EmuRegisters,
    dma: DmaAllocator,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("name", &self.name).finish()
    }
}

impl Emulator {
    /// A new controller, disabled (CC.EN = 0), with zero-filled namespaces.
    pub fn new(name: &str, cfg: EmuConfig) -> Self {
        let iommu = Arc::new(SoftIommu::default());
        let processing = cfg.processing;
        let ctl = Arc::new(Ctl::new(cfg, iommu.clone()));
        let worker = (processing == Processing::Thread).then(|| {
            let c = ctl.clone();
            std::thread::spawn(move || c.worker_loop())
        });
        Self {
            name: name.to_string(),
            regs: EmuRegisters { ctl },
            dma: DmaAllocator::new(iommu, MemorySource::Heap),
            worker,
        }
    }

    /// A handle for fault injection, statistics and inspection.
    pub fn handle(&self) -> EmuHandle {
        EmuHandle { ctl: self.regs.ctl.clone() }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.regs.ctl.stop.store(true, Ordering::Release);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl DeviceBacking for Emulator {
    type Registers = EmuRegisters;
    fn id(&self) -> &str {
        &self.name
    }
    fn bar0(&self) -> &EmuRegisters {
        &self.regs
    }
    fn dma(&self) -> &DmaAllocator {
        &self.dma
    }
}

/// Fault injection and inspection of an [`Emulator`] (cloneable; stays
/// valid after the emulator is given to a driver).
#[derive(Clone)]
pub struct EmuHandle {
    ctl: Arc<Ctl>,
}

impl std::fmt::Debug for EmuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmuHandle")
    }
}

impl EmuHandle {
    fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        let mut g = lock(&self.ctl.faults);
        f(&mut g);
        self.ctl.faults_armed.store(g.armed(), Ordering::Relaxed);
    }

    /// Complete the next `count` matching commands with `status` instead.
    pub fn inject_status(&self, filter: FaultFilter, status: Status, count: u32) {
        self.set_faults(|f| f.error = (count > 0).then_some((filter, status, count)));
    }

    /// Never post the completions of the next `count` matching commands
    /// (they are still executed; Abort or a reset answers them).
    pub fn lose_completions(&self, filter: FaultFilter, count: u32) {
        self.set_faults(|f| f.lose = (count > 0).then_some((filter, count)));
    }

    /// Post matching completions `delay` late (None: stop delaying).
    pub fn delay_completions(&self, filter: FaultFilter, delay: Option<Duration>) {
        self.set_faults(|f| f.delay = delay.map(|d| (filter, d)));
    }

    /// Make Abort report "not aborted" for every command.
    pub fn set_abort_ineffective(&self, on: bool) {
        self.set_faults(|f| f.abort_ineffective = on);
    }

    /// Raise controller fatal status (CSTS.CFS); processing stops until the
    /// host resets the controller.
    pub fn set_fatal(&self) {
        self.ctl.fatal.store(true, Ordering::Release);
    }

    /// Surprise removal: every register reads all-ones, writes and DMA stop.
    pub fn remove(&self) {
        self.ctl.removed.store(true, Ordering::Release);
    }

    /// Raise an asynchronous event: a waiting Asynchronous Event Request
    /// completes with it (or the next one the host sends). False if the
    /// host has not enabled that event or 16 events are already waiting.
    pub fn inject_event(&self, event: EmuEvent) -> bool {
        self.ctl.raise(event)
    }

    /// (events raised but not reported yet, Asynchronous Event Requests
    /// waiting for an event).
    pub fn event_counts(&self) -> (usize, usize) {
        self.ctl.event_counts()
    }

    /// Release due delayed completions now (Inline mode has no clock).
    pub fn tick(&self) {
        if self.ctl.running() {
            self.ctl.release_delayed();
        }
    }

    /// Commands executed whose completions are being withheld.
    pub fn held_completions(&self) -> usize {
        lock(&self.ctl.held).len()
    }

    /// Time and work counters.
    pub fn stats(&self) -> EmuStats {
        EmuStats {
            busy_ns: self.ctl.busy_ns.load(Ordering::Relaxed),
            commands: self.ctl.commands.load(Ordering::Relaxed),
            doorbell_writes: self.ctl.doorbell_writes.load(Ordering::Relaxed),
            sgl_commands: self.ctl.sgl_commands.load(Ordering::Relaxed),
        }
    }

    /// Read `buf.len()` bytes of namespace `nsid` at byte offset `offset`
    /// (out-of-range parts are left untouched; returns false then).
    pub fn read_namespace(&self, nsid: u32, offset: u64, buf: &mut [u8]) -> bool {
        let Some(ns) = nsid.checked_sub(1).and_then(|i| self.ctl.ns.get(i as usize)) else {
            return false;
        };
        let d = ns.data.read().unwrap_or_else(|e| e.into_inner());
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match d.get(start..start.saturating_add(buf.len())) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }

    /// Number of live IOMMU mappings (detach must bring this back to zero).
    pub fn dma_mappings(&self) -> usize {
        self.ctl.iommu.mapping_count()
    }

    /// True if CC.EN is set and CSTS.RDY reached.
    pub fn is_enabled(&self) -> bool {
        self.ctl.running()
    }

    /// Number of I/O submission queues currently created.
    pub fn io_queue_count(&self) -> usize {
        self.ctl.sqs.iter().skip(1).filter(|q| lock(q).is_some()).count()
    }
}
