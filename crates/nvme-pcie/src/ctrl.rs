//! Controller bring-up, identification, admin commands and reset.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use nvme_spec::command::{AdminCommand, AsyncEvent, Cns, FeatureId, FeatureSelect, LogPageId, NumQueues};
use nvme_spec::identify::{IdentifyController, IdentifyNamespace, NsDescriptor};
use nvme_spec::log::{ErrorLogEntry, FirmwareSlotLog, SmartLog};
use nvme_spec::regs::{offset, Aqa, Cap, Cc, Csts, Vs};
use nvme_spec::{Cqe, DataPointer, Sqe};

use crate::admin::{AdminQueue, ADMIN_DEPTH, AER_CID_BASE, MAX_AERS};
use crate::backing::{DeviceBacking, RegisterIo};
use crate::dma::{DmaBuffer, PAGE_SIZE};
use crate::error::NvmeError;
use crate::events::{self, AsyncEventRecord, EventDetail, EventLog};
use crate::prp;
use crate::queue::IoQueuePair;
use crate::sgl::SglCaps;

/// Opcode of Doorbell Buffer Config (NVMe 1.3 virtualization enhancements).
pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
/// Identify Controller OACS bit: Doorbell Buffer Config supported.
pub const OACS_DOORBELL_BUFFER: u16 = 1 << 8;

/// Driver tunables.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// I/O queue pairs to ask the controller for.
    pub io_queues: u16,
    /// Per-command I/O timeout before Abort is sent.
    pub io_timeout: Duration,
    /// Admin command timeout.
    pub admin_timeout: Duration,
    /// Use shadow doorbells when the controller offers them.
    pub shadow_doorbells: bool,
    /// Upper bound on bytes per command (the controller's MDTS may lower it).
    pub max_transfer: usize,
    /// Describe multi-segment I/O with SGLs when the controller offers
    /// them (PRPs otherwise).
    pub sgl: bool,
    /// Keep Asynchronous Event Requests outstanding and record the events
    /// (see [`Controller::async_events`]).
    pub async_events: bool,
    /// Events the controller's event log keeps (the oldest are dropped).
    pub event_log_len: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            io_queues: 8,
            io_timeout: Duration::from_secs(5),
            admin_timeout: Duration::from_secs(5),
            shadow_doorbells: true,
            max_transfer: 1 << 20,
            sgl: true,
            async_events: true,
            event_log_len: 64,
        }
    }
}

/// What the driver learned about the controller.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    /// PCI vendor id.
    pub vid: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// NVMe version (VS register).
    pub version: (u16, u8, u8),
    /// Maximum queue entries (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// Doorbell stride in bytes.
    pub doorbell_stride: usize,
    /// MDTS in bytes (None: no limit).
    pub mdts_bytes: Option<u64>,
    /// Bytes per command this driver uses (larger I/O is split).
    pub max_transfer: usize,
    /// Optional NVM command support (Identify ONCS).
    pub oncs: u16,
    /// Optional admin command support (Identify OACS).
    pub oacs: u16,
    /// I/O queue pairs granted by Set Features Number of Queues.
    pub io_queues: u16,
    /// Shadow doorbells (Doorbell Buffer Config) in use.
    pub shadow_doorbells: bool,
    /// The controller has a volatile write cache (Identify VWC bit 0).
    pub volatile_write_cache: bool,
    /// SGL support (Identify SGLS; None: PRPs only).
    pub sgl: Option<SglCaps>,
    /// Optional asynchronous events supported (Identify OAES).
    pub oaes: u32,
    /// Asynchronous Event Requests the driver keeps outstanding (0: none).
    pub async_event_requests: u16,
}

/// An active namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace id.
    pub nsid: u32,
    /// Size in logical blocks.
    pub blocks: u64,
    /// Data bytes per logical block.
    pub block_size: u32,
    /// Metadata bytes per block (0: none).
    pub metadata_size: u16,
    /// Metadata is interleaved with data (extended LBA).
    pub extended_lba: bool,
    /// Namespace globally unique identifier (all zero: none).
    pub nguid: [u8; 16],
    /// IEEE EUI-64 (all zero: none).
    pub eui64: [u8; 8],
    /// UUID from the namespace identification descriptors.
    pub uuid: Option<[u8; 16]>,
    /// Deallocate logical block features (Identify Namespace DLFEAT).
    pub dlfeat: u8,
}

impl NamespaceInfo {
    /// Bytes transferred per logical block (data plus interleaved metadata).
    pub fn transfer_block_size(&self) -> u32 {
        if self.extended_lba {
            self.block_size + u32::from(self.metadata_size)
        } else {
            self.block_size
        }
    }
}

pub(crate) const LIVE: u8 = 0;
pub(crate) const RESETTING: u8 = 1;
pub(crate) const GONE: u8 = 2;

/// Shadow doorbell and EventIdx buffers (one page each).
pub(crate) struct DbBuf {
    pub(crate) shadow: DmaBuffer,
    pub(crate) eventidx: DmaBuffer,
}

/// Controller state shared by the handle and its queue pairs.
pub(crate) struct Shared<B: DeviceBacking> {
    pub(crate) dev: B,
    pub(crate) cap: Cap,
    pub(crate) stride: usize,
    pub(crate) cfg: ControllerConfig,
    pub(crate) info: ControllerInfo,
    pub(crate) namespaces: Vec<NamespaceInfo>,
    admin: Mutex<AdminQueue>,
    free_qids: Mutex<Vec<u16>>,
    pub(crate) generation: AtomicU64,
    pub(crate) state: AtomicU8,
    pub(crate) dbbuf: Option<DbBuf>,
    resets: AtomicU64,
    events: Mutex<EventLog>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait until CSTS.RDY == `want`.
fn wait_ready<R: RegisterIo>(regs: &R, name: &str, want: bool, timeout: Duration) -> Result<(), NvmeError> {
    let start = Instant::now();
    loop {
        let raw = regs.read32(offset::CSTS as usize);
        if raw == u32::MAX {
            return Err(NvmeError::DeviceGone(name.to_string()));
        }
        let csts = Csts(raw);
        if want && csts.cfs() == 1 {
            return Err(NvmeError::Fatal(name.to_string()));
        }
        if (csts.rdy() == 1) == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(NvmeError::ReadyTimeout {
                dev: name.to_string(),
                want: if want { "ready" } else { "disabled" },
                ms: timeout.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

impl<B: DeviceBacking> Shared<B> {
    pub(crate) fn name(&self) -> &str {
        self.dev.id()
    }

    fn ready_timeout(cap: Cap) -> Duration {
        Duration::from_millis(cap.timeout_ms().max(500))
    }

    /// Disable, program the admin queue, enable, wait ready.
    fn enable(dev: &B, cap: Cap, admin: &mut AdminQueue) -> Result<(), NvmeError> {
        let regs = dev.bar0();
        let name = dev.id();
        let to = Self::ready_timeout(cap);
        let cc = Cc(regs.read32(offset::CC as usize));
        if cc.0 == u32::MAX {
            return Err(NvmeError::DeviceGone(name.to_string()));
        }
        if cc.en() == 1 {
            // Per the spec, wait for RDY to match EN before clearing it; a
            // controller stuck or failed in that state is disabled anyway.
            let _ = wait_ready(regs, name, true, to);
            regs.write32(offset::CC as usize, cc.with_en(0).with_shn(0).0);
        }
        wait_ready(regs, name, false, to)?;
        admin.reset()?;
        let q = ADMIN_DEPTH - 1;
        regs.write32(offset::AQA as usize, Aqa(0).with_asqs(q).with_acqs(q).0);
        regs.write64(offset::ASQ as usize, admin.sq.iova());
        regs.write64(offset::ACQ as usize, admin.cq.iova());
        regs.write32(offset::CC as usize, Cc::enable_default().0);
        wait_ready(regs, name, true, to)
    }

    fn run(&self, admin: &mut AdminQueue, sqe: Sqe) -> Result<Cqe, NvmeError> {
        admin.run(self.dev.bar0(), sqe, self.cfg.admin_timeout).map_err(|e| self.name_error(e))
    }

    fn name_error(&self, e: NvmeError) -> NvmeError {
        match e {
            NvmeError::DeviceGone(_) => {
                self.state.store(GONE, Ordering::Release);
                NvmeError::DeviceGone(self.name().to_string())
            }
            NvmeError::Fatal(_) => NvmeError::Fatal(self.name().to_string()),
            e => e,
        }
    }

    /// Run an admin command whose data (if any) goes to/from the admin
    /// queue's own data page.
    fn run_with_page(&self, admin: &mut AdminQueue, cmd: AdminCommand) -> Result<(Cqe, [u8; PAGE_SIZE]), NvmeError> {
        let mut sqe = cmd.to_sqe(0);
        sqe.set_data_pointer(DataPointer::Prp { prp1: admin.data.iova(), prp2: 0 });
        admin.data.fill(0, PAGE_SIZE, 0)?;
        let cqe = self.run(admin, sqe)?;
        let mut page = [0u8; PAGE_SIZE];
        admin.data.read_bytes(0, &mut page)?;
        Ok((cqe, page))
    }

    /// Run an admin command (the I/O queue pairs use this for Abort and
    /// queue creation).
    pub(crate) fn admin(&self, sqe: Sqe) -> Result<Cqe, NvmeError> {
        if self.state.load(Ordering::Acquire) == GONE {
            return Err(NvmeError::DeviceGone(self.name().to_string()));
        }
        let mut a = lock(&self.admin);
        let r = self.run(&mut a, sqe);
        self.service_events(&mut a);
        r
    }

    /// Enable the asynchronous events the controller supports and put the
    /// Asynchronous Event Requests out.
    fn arm_events(&self, admin: &mut AdminQueue) {
        let n = self.info.async_event_requests;
        if n == 0 {
            return;
        }
        let aec = events::AEC_SMART_MASK | (self.info.oaes & events::OAES_NOTICES);
        let cmd = AdminCommand::SetFeatures {
            nsid: 0,
            fid: FeatureId::ASYNC_EVENT_CONFIG,
            save: false,
            cdw11: aec,
            cdw12_15: [0; 4],
        };
        // Optional: without it the controller reports its default set.
        let _ = self.run(admin, cmd.to_sqe(0));
        for k in admin.aers..n {
            if admin.submit_aer(self.dev.bar0(), k).is_err() {
                break;
            }
        }
    }

    /// Handle completed Asynchronous Event Requests: decode the event, read
    /// its log page (which lets the controller report that event type
    /// again), record it and put the request out again.
    fn service_events(&self, admin: &mut AdminQueue) {
        if (admin.aers == 0 && admin.aer_done.is_empty()) || self.state.load(Ordering::Acquire) != LIVE {
            return;
        }
        let regs = self.dev.bar0();
        // Reading a log page may let the controller report the next event
        // at once: poll again until nothing is left (bounded, against a
        // controller that never stops reporting).
        for _ in 0..64 {
            if admin.poll(regs).is_err() || admin.aer_done.is_empty() {
                return;
            }
            let cqe = admin.aer_done.remove(0);
            let k = cqe.cid.get().wrapping_sub(AER_CID_BASE);
            if k >= self.info.async_event_requests {
                continue; // not one of ours
            }
            admin.aers = admin.aers.saturating_sub(1);
            if !cqe.status().is_success() {
                // Refused (limit exceeded, unsupported) or aborted: not
                // put out again.
                continue;
            }
            let raw = cqe.dw0.get();
            let ev = AsyncEvent::from_dword(raw);
            let len = EventDetail::log_len(ev.log_page);
            let mut detail = EventDetail::None;
            if len > 0 {
                let cmd = AdminCommand::get_log_page(ev.log_page, u32::MAX, len as u32, 0);
                if let Ok((_, page)) = self.run_with_page(admin, cmd) {
                    detail = EventDetail::from_log(ev.log_page, page.get(..len).unwrap_or(&[]));
                }
            }
            lock(&self.events).push(raw, detail);
            let _ = admin.submit_aer(regs, k);
        }
    }

    /// Handle asynchronous events if the admin queue is free and has a
    /// completion waiting (cheap enough for a polling loop).
    pub(crate) fn try_service_events(&self) {
        let mut a = match self.admin.try_lock() {
            Ok(a) => a,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if a.aers > 0 && (a.has_completion() || !a.aer_done.is_empty()) {
            self.service_events(&mut a);
        }
    }

    fn setup_after_enable(&self, admin: &mut AdminQueue) -> Result<(), NvmeError> {
        let want = self.info.io_queues.max(1) - 1;
        let nq = NumQueues { nsqr: want, ncqr: want };
        self.run(admin, AdminCommand::set_num_queues(nq).to_sqe(0))?;
        if let Some(d) = &self.dbbuf {
            d.shadow.fill(0, PAGE_SIZE, 0)?;
            d.eventidx.fill(0, PAGE_SIZE, 0)?;
            self.run(admin, dbbuf_sqe(d))?;
        }
        self.arm_events(admin);
        Ok(())
    }

    /// Controller reset: disable, re-enable, restore features. I/O queue
    /// pairs notice the new generation and re-create their queues.
    /// `seen` is the generation the caller observed; if another thread has
    /// already reset since, nothing is done.
    pub(crate) fn reset(&self, seen: Option<u64>) -> Result<(), NvmeError> {
        let mut admin = lock(&self.admin);
        if seen.is_some_and(|g| g != self.generation.load(Ordering::Acquire)) {
            return Ok(());
        }
        if self.state.load(Ordering::Acquire) == GONE {
            return Err(NvmeError::DeviceGone(self.name().to_string()));
        }
        self.state.store(RESETTING, Ordering::Release);
        self.resets.fetch_add(1, Ordering::Relaxed);
        let r = Self::enable(&self.dev, self.cap, &mut admin).and_then(|()| self.setup_after_enable(&mut admin));
        match r {
            Ok(()) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.state.store(LIVE, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // A controller that cannot be brought back is treated as gone:
                // its I/O fails with a path error instead of hanging.
                self.state.store(GONE, Ordering::Release);
                self.generation.fetch_add(1, Ordering::AcqRel);
                Err(self.name_error(e))
            }
        }
    }

    pub(crate) fn mark_gone(&self) {
        self.state.store(GONE, Ordering::Release);
    }

    pub(crate) fn release_qid(&self, qid: u16) {
        lock(&self.free_qids).push(qid);
    }
}

fn dbbuf_sqe(d: &DbBuf) -> Sqe {
    let mut sqe = Sqe::new(DOORBELL_BUFFER_CONFIG, 0);
    sqe.set_data_pointer(DataPointer::Prp { prp1: d.shadow.iova(), prp2: d.eventidx.iova() });
    sqe
}

impl<B: DeviceBacking> Drop for Shared<B> {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) == GONE {
            return;
        }
        // Normal shutdown notification, then disable, so no DMA can target
        // memory that is about to be unmapped.
        let regs = self.dev.bar0();
        let cc = Cc(regs.read32(offset::CC as usize));
        if cc.0 == u32::MAX {
            return;
        }
        regs.write32(offset::CC as usize, cc.with_shn(1).0);
        let start = Instant::now();
        while Csts(regs.read32(offset::CSTS as usize)).shst() != 2 && start.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_micros(200));
        }
        regs.write32(offset::CC as usize, cc.with_shn(0).with_en(0).0);
        let _ = wait_ready(regs, self.dev.id(), false, Self::ready_timeout(self.cap));
    }
}

/// An attached NVMe controller. Cheap to share by reference; I/O goes
/// through [`IoQueuePair`]s created from it (one per thread).
pub struct Controller<B: DeviceBacking> {
    pub(crate) shared: Arc<Shared<B>>,
}

impl<B: DeviceBacking> std::fmt::Debug for Controller<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("dev", &self.shared.name()).field("info", &self.shared.info).finish()
    }
}

impl<B: DeviceBacking> Controller<B> {
    /// Bring up the controller behind `dev` and identify it and its
    /// namespaces (NVMe base spec "Initialization").
    pub fn new(dev: B, cfg: ControllerConfig) -> Result<Self, NvmeError> {
        let name = dev.id().to_string();
        let regs = dev.bar0();
        let cap = Cap(regs.read64(offset::CAP as usize));
        if cap.0 == u64::MAX {
            return Err(NvmeError::DeviceGone(name));
        }
        let unsupported = |reason| NvmeError::Unsupported { dev: name.clone(), reason };
        if cap.css() & 1 == 0 {
            return Err(unsupported("nvm command set not supported (cap.css)"));
        }
        if cap.mpsmin() > 0 {
            return Err(unsupported("minimum memory page size above 4 KiB (cap.mpsmin)"));
        }
        if cap.mqes() == 0 {
            return Err(unsupported("cap.mqes is zero"));
        }
        let stride = cap.doorbell_stride() as usize;
        let vs = Vs(regs.read32(offset::VS as usize));
        let mut admin = AdminQueue::new(dev.dma(), stride)?;
        Shared::<B>::enable(&dev, cap, &mut admin)?;

        let event_log_len = cfg.event_log_len;
        // Partially built shared state, so the helpers can be used.
        let mut shared = Shared {
            cap,
            stride,
            info: ControllerInfo {
                vid: 0,
                serial: String::new(),
                model: String::new(),
                firmware: String::new(),
                subnqn: String::new(),
                version: (vs.mjr(), vs.mnr(), vs.ter()),
                max_queue_entries: u32::from(cap.mqes()) + 1,
                doorbell_stride: stride,
                mdts_bytes: None,
                max_transfer: cfg.max_transfer,
                oncs: 0,
                oacs: 0,
                io_queues: cfg.io_queues.max(1),
                shadow_doorbells: false,
                volatile_write_cache: false,
                sgl: None,
                oaes: 0,
                async_event_requests: 0,
            },
            cfg,
            namespaces: Vec::new(),
            admin: Mutex::new(AdminQueue::new(dev.dma(), stride)?),
            free_qids: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            state: AtomicU8::new(LIVE),
            dbbuf: None,
            resets: AtomicU64::new(0),
            events: Mutex::new(EventLog::new(event_log_len)),
            dev,
        };
        let (_, page) = shared.run_with_page(&mut admin, AdminCommand::identify(Cns::Controller, 0))?;
        let id = IdentifyController::parse(&page).map_err(|_| NvmeError::BadData { what: "identify controller" })?;
        shared.fill_info(&id)?;

        // Active namespaces (CNS 02h, from NVMe 1.1), else 1..=NN.
        let mut nsids = Vec::new();
        let mut after = 0u32;
        loop {
            let r = shared.run_with_page(&mut admin, AdminCommand::identify(Cns::ActiveNamespaceList, after));
            match r {
                Ok((_, page)) => {
                    let list = nvme_spec::identify::parse_ns_list(&page);
                    let full = list.len() == PAGE_SIZE / 4;
                    after = list.last().copied().unwrap_or(0);
                    nsids.extend(list);
                    if !full {
                        break;
                    }
                }
                Err(NvmeError::AdminStatus { .. }) if after == 0 => {
                    nsids = (1..=id.nn.get()).collect();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        for nsid in nsids {
            if let Some(ns) = shared.identify_namespace(&mut admin, nsid)? {
                shared.namespaces.push(ns);
            }
        }

        // Queues.
        let want = shared.info.io_queues.max(1) - 1;
        let cqe =
            shared.run(&mut admin, AdminCommand::set_num_queues(NumQueues { nsqr: want, ncqr: want }).to_sqe(0))?;
        let got = NumQueues::from_dword(cqe.dw0.get());
        let granted = (got.nsqr.min(got.ncqr).saturating_add(1)).min(want + 1);
        shared.info.io_queues = granted;
        *lock(&shared.free_qids) = (1..=granted).rev().collect();

        if shared.cfg.shadow_doorbells && shared.info.oacs & OACS_DOORBELL_BUFFER != 0 {
            let d = DbBuf { shadow: shared.dev.dma().alloc(PAGE_SIZE)?, eventidx: shared.dev.dma().alloc(PAGE_SIZE)? };
            // Optional feature: if the controller refuses, go on without it.
            if shared.run(&mut admin, dbbuf_sqe(&d)).is_ok() {
                shared.dbbuf = Some(d);
                shared.info.shadow_doorbells = true;
            }
        }
        shared.arm_events(&mut admin);
        shared.admin = Mutex::new(admin);
        Ok(Self { shared: Arc::new(shared) })
    }

    /// What the driver learned about the controller.
    pub fn info(&self) -> &ControllerInfo {
        &self.shared.info
    }

    /// Active namespaces.
    pub fn namespaces(&self) -> &[NamespaceInfo] {
        &self.shared.namespaces
    }

    /// One namespace by id.
    pub fn namespace(&self, nsid: u32) -> Option<&NamespaceInfo> {
        self.shared.namespaces.iter().find(|n| n.nsid == nsid)
    }

    /// The device behind the controller.
    pub fn device(&self) -> &B {
        &self.shared.dev
    }

    /// The allocator for memory this controller can DMA to (I/O buffers).
    pub fn dma(&self) -> &crate::dma::DmaAllocator {
        self.shared.dev.dma()
    }

    /// True once the controller is gone (removed, or failed to reset).
    pub fn is_gone(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == GONE
    }

    /// Controller resets done so far.
    pub fn reset_count(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// Handle admin completions now: asynchronous events are decoded,
    /// their log pages read, recorded and their requests put out again.
    /// (Queue pairs do this on their own every so often while polling.)
    pub fn poll_admin(&self) -> Result<(), NvmeError> {
        if self.is_gone() {
            return Err(NvmeError::DeviceGone(self.shared.name().to_string()));
        }
        let mut a = lock(&self.shared.admin);
        self.shared.service_events(&mut a);
        Ok(())
    }

    /// The newest asynchronous events (oldest first; at most
    /// [`ControllerConfig::event_log_len`]), after handling any that are
    /// waiting.
    pub fn async_events(&self) -> Vec<AsyncEventRecord> {
        let _ = self.poll_admin();
        lock(&self.shared.events).snapshot()
    }

    /// Asynchronous events recorded so far (including those the bounded
    /// log has dropped).
    pub fn async_event_count(&self) -> u64 {
        lock(&self.shared.events).total()
    }

    /// Reset the controller now. Queue pairs re-create their queues and
    /// resubmit unfinished commands on their next poll.
    pub fn reset(&self) -> Result<(), NvmeError> {
        self.shared.reset(None)
    }

    /// Create an I/O queue pair of `depth` entries (2..=CAP.MQES+1), to be
    /// owned and polled by one thread.
    pub fn create_io_queue_pair(&self, depth: u16) -> Result<IoQueuePair<B>, NvmeError> {
        if depth < 2 || u32::from(depth) > self.shared.info.max_queue_entries {
            return Err(NvmeError::InvalidArgument("queue depth outside 2..=mqes"));
        }
        let qid =
            lock(&self.shared.free_qids).pop().ok_or(NvmeError::NoQueues { granted: self.shared.info.io_queues })?;
        IoQueuePair::new(self.shared.clone(), qid, depth).inspect_err(|_| {
            self.shared.release_qid(qid);
        })
    }

    /// Admin command passthrough. `data`, if given, is the command's data
    /// buffer (PRPs are filled in; any size up to MDTS).
    pub fn admin_command(&self, sqe: Sqe, data: Option<&DmaBuffer>) -> Result<Cqe, NvmeError> {
        let mut sqe = sqe;
        let _list;
        if let Some(buf) = data {
            let list = self.shared.dev.dma().alloc(prp::list_pages_for(buf.len()) * PAGE_SIZE)?;
            let (prp1, prp2) =
                prp::build(buf, 0, buf.len(), &list).map_err(|_| NvmeError::InvalidArgument("admin data buffer"))?;
            sqe.set_data_pointer(DataPointer::Prp { prp1, prp2 });
            _list = list;
        }
        self.shared.admin(sqe)
    }

    /// Get Log Page: `len` bytes of log `lid` for `nsid` (0xffffffff: all).
    pub fn get_log_page(&self, lid: LogPageId, nsid: u32, len: usize) -> Result<Vec<u8>, NvmeError> {
        if len == 0 || len > PAGE_SIZE {
            return Err(NvmeError::InvalidArgument("log page length not in 1..=4096"));
        }
        let mut a = lock(&self.shared.admin);
        let cmd = AdminCommand::get_log_page(lid, nsid, len as u32, 0);
        let r = self.shared.run_with_page(&mut a, cmd);
        self.shared.service_events(&mut a);
        let (_, page) = r?;
        Ok(page.get(..len).unwrap_or(&[]).to_vec())
    }

    /// SMART / health information.
    pub fn smart_log(&self) -> Result<SmartLog, NvmeError> {
        let b = self.get_log_page(LogPageId::SMART, u32::MAX, 512)?;
        SmartLog::parse(&b).map_err(|_| NvmeError::BadData { what: "smart log" })
    }

    /// Error information log (non-empty entries, newest first).
    pub fn error_log(&self) -> Result<Vec<ErrorLogEntry>, NvmeError> {
        let b = self.get_log_page(LogPageId::ERROR, u32::MAX, 64 * 4)?;
        Ok(ErrorLogEntry::parse_all(&b).into_iter().filter(|e| e.error_count.get() != 0).collect())
    }

    /// Firmware slot information.
    pub fn firmware_log(&self) -> Result<FirmwareSlotLog, NvmeError> {
        let b = self.get_log_page(LogPageId::FIRMWARE_SLOT, u32::MAX, 512)?;
        FirmwareSlotLog::parse(&b).map_err(|_| NvmeError::BadData { what: "firmware slot log" })
    }

    /// Get Features (current value): returns completion dword 0.
    pub fn get_features(&self, fid: FeatureId, cdw11: u32) -> Result<u32, NvmeError> {
        let cmd = AdminCommand::GetFeatures { nsid: 0, fid, sel: FeatureSelect::Current, cdw11 };
        Ok(self.shared.admin(cmd.to_sqe(0))?.dw0.get())
    }

    /// Set Features: returns completion dword 0.
    pub fn set_features(&self, fid: FeatureId, cdw11: u32) -> Result<u32, NvmeError> {
        let cmd = AdminCommand::SetFeatures { nsid: 0, fid, save: false, cdw11, cdw12_15: [0; 4] };
        Ok(self.shared.admin(cmd.to_sqe(0))?.dw0.get())
    }

    /// Keep Alive.
    pub fn keep_alive(&self) -> Result<(), NvmeError> {
        self.shared.admin(AdminCommand::KeepAlive.to_sqe(0)).map(|_| ())
    }
}

impl<B: DeviceBacking> Shared<B> {
    fn fill_info(&mut self, id: &IdentifyController) -> Result<(), NvmeError> {
        let s = |o: Option<&str>| o.unwrap_or("").to_string();
        self.info.vid = id.vid.get();
        self.info.serial = s(id.serial());
        self.info.model = s(id.model());
        self.info.firmware = s(id.firmware());
        self.info.subnqn = s(id.subnqn());
        self.info.oncs = id.oncs.get();
        self.info.oacs = id.oacs.get();
        self.info.volatile_write_cache = id.vwc & 1 != 0;
        self.info.sgl = SglCaps::from_sgls(id.sgls.get());
        self.info.oaes = id.oaes.get();
        self.info.async_event_requests = if self.cfg.async_events { (u16::from(id.aerl) + 1).min(MAX_AERS) } else { 0 };
        let min_page = 4096u64 << self.cap.mpsmin();
        self.info.mdts_bytes = id.max_transfer_bytes(min_page);
        let mut max = self.cfg.max_transfer.max(PAGE_SIZE);
        if let Some(m) = self.info.mdts_bytes {
            max = max.min(usize::try_from(m).unwrap_or(usize::MAX));
        }
        self.info.max_transfer = max / PAGE_SIZE * PAGE_SIZE;
        if id.sqes != 0 && (id.sqes & 0xf > 6 || id.cqes & 0xf > 4) {
            return Err(NvmeError::Unsupported {
                dev: self.name().to_string(),
                reason: "controller needs queue entries larger than 64/16 bytes",
            });
        }
        Ok(())
    }

    fn identify_namespace(&self, admin: &mut AdminQueue, nsid: u32) -> Result<Option<NamespaceInfo>, NvmeError> {
        let (_, page) = self.run_with_page(admin, AdminCommand::identify(Cns::Namespace, nsid))?;
        let id = IdentifyNamespace::parse(&page).map_err(|_| NvmeError::BadData { what: "identify namespace" })?;
        if id.nsze.get() == 0 {
            return Ok(None); // allocated but inactive
        }
        let fmt = id.formatted_lba().ok_or(NvmeError::BadData { what: "identify namespace lba format" })?;
        let block_size = id.block_size().ok_or(NvmeError::BadData { what: "identify namespace block size" })?;
        let mut ns = NamespaceInfo {
            nsid,
            blocks: id.nsze.get(),
            block_size,
            metadata_size: fmt.ms.get(),
            extended_lba: id.flbas & 0x10 != 0,
            nguid: id.nguid,
            eui64: id.eui64,
            uuid: None,
            dlfeat: id.dlfeat,
        };
        // Descriptors (NVMe 1.3); older controllers reject CNS 03h.
        if let Ok((_, page)) = self.run_with_page(admin, AdminCommand::identify(Cns::NamespaceDescriptorList, nsid)) {
            if let Ok(descs) = NsDescriptor::parse_list(&page) {
                for d in descs {
                    match d {
                        NsDescriptor::Uuid(u) => ns.uuid = Some(u),
                        NsDescriptor::Nguid(g) if ns.nguid == [0; 16] => ns.nguid = g,
                        NsDescriptor::Eui64(e) if ns.eui64 == [0; 8] => ns.eui64 = e,
                        _ => {}
                    }
                }
            }
        }
        Ok(Some(ns))
    }
}
