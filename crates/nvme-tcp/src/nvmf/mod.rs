//! The `nvmf` backend: a remote NVMe/TCP controller whose namespaces become
//! bdevs named `<name>n<nsid>`, each reactor channel with its own I/O queue
//! (its own TCP connection, driven from the channel's `poll()`).
//!
//! A background thread sends Keep Alive on the admin queue at half the
//! KATO, sends the Aborts channels ask for, refreshes the ANA log and
//! re-establishes the association when the admin connection is lost.
//! Channels that lose their connection fail the IO in flight with
//! `PathError`, hold new IO up to the fast-IO-fail timeout, and reconnect
//! (in a helper thread, so the reactor never blocks), waiting
//! `reconnect_delay` doubled after each failure up to
//! `reconnect_delay_max`, until the controller-loss timeout, after which
//! all IO fails. A command outstanding past `io_timeout` is aborted; if it
//! is still outstanding after the abort wait, its connection is reset (it
//! completes with `Timeout`).

mod channel;
mod status;

pub use status::io_status;

use crate::initiator::{AdminQueue, ConnectOpts, InitError, NamespaceData, SyncData};
use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoType, IoTypeSet, NamespaceId, Uuid};
use nvme_spec::command::LogPageId;
use nvme_spec::command::{AdminCommand, Command};
use nvme_spec::identify::{oncs, IdentifyController, NsDescriptor};
use nvme_spec::log::{AnaLog, AnaState as SpecAna};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Asynchronous event configuration bit (and OAES bit) of ANA change
/// notices.
const AEC_ANA_CHANGE: u32 = 1 << 11;

/// The live association with the controller.
#[derive(Debug)]
struct Association {
    admin: Option<AdminQueue>,
    cntlid: u16,
    generation: u64,
}

/// State shared by a controller's bdevs, channels and keep-alive thread.
#[derive(Debug)]
pub(crate) struct Shared {
    name: String,
    opts: ConnectOpts,
    assoc: Mutex<Association>,
    /// Free I/O queue IDs, least recently used first.
    qids: Mutex<std::collections::VecDeque<u16>>,
    /// Generation of the current association (bumped on re-association).
    generation: AtomicU64,
    /// The controller-loss timeout expired: fail everything.
    lost: AtomicBool,
    /// Detached or shut down.
    stopped: AtomicBool,
    depth: u16,
    incapsule: u32,
    max_transfer: u32,
    /// ANA reporting supported (CMIC bit 3).
    ana_supported: bool,
    /// ANA change notices supported (OAES bit 11): an Asynchronous Event
    /// Request is kept outstanding and an ANA change refreshes the states
    /// at once.
    ana_events: bool,
    /// Asynchronous events received.
    events: AtomicU64,
    /// ANA state per namespace (the raw state value, 0 = unknown).
    ana: Mutex<HashMap<u32, Arc<AtomicU8>>>,
    /// Set when an IO failed with an ANA status: refresh the log soon.
    ana_dirty: AtomicBool,
    /// Commands (queue ID, command ID) of timed-out IO to abort.
    aborts: Mutex<Vec<(u16, u16)>>,
    /// `aborts` is not empty.
    abort_pending: AtomicBool,
    /// An I/O queue was lost or refused: check the admin queue now rather
    /// than at the next keep-alive.
    check_admin: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Association> {
        self.assoc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller ID of a working association, re-associating first
    /// if the admin queue is down. Blocks (call from helper threads only).
    fn ensure_admin(&self) -> Result<(u16, u64), InitError> {
        let mut a = self.lock();
        if a.admin.is_none() {
            let mut q = AdminQueue::connect(&self.opts, &self.opts.subnqn)?;
            let want = self.opts.io_queues.max(1);
            q.set_num_queues(want)?;
            self.arm_events(&mut q);
            // States may have changed while the association was down.
            self.ana_dirty.store(true, Ordering::Release);
            a.cntlid = q.cntlid;
            a.admin = Some(q);
            a.generation += 1;
            self.generation.store(a.generation, Ordering::Release);
            log::info!("nvmf {}: re-associated as controller {}", self.name, a.cntlid);
        }
        Ok((a.cntlid, a.generation))
    }

    /// Enables ANA change notices on a new admin queue (when supported).
    fn arm_events(&self, q: &mut AdminQueue) {
        if self.ana_events {
            if let Err(e) = q.enable_async_events(AEC_ANA_CHANGE) {
                log::warn!("nvmf {}: enabling ANA change notices: {e}", self.name);
            }
        }
    }

    /// Collects asynchronous events; an ANA change notice marks the ANA
    /// states for a refresh. An error means the admin queue failed.
    fn poll_events(&self) -> Result<(), InitError> {
        if !self.ana_events {
            return Ok(());
        }
        let events = {
            let mut a = self.lock();
            let Some(q) = a.admin.as_mut() else { return Ok(()) };
            q.take_async_events()?
        };
        for dw0 in events {
            self.events.fetch_add(1, Ordering::AcqRel);
            // Notice (type 2) of an ANA change (information 3).
            if dw0 & 7 == 2 && (dw0 >> 8) & 0xff == 3 {
                log::info!("nvmf {}: ANA change notice", self.name);
                self.ana_dirty.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Reads the ANA log page and updates the namespaces' states.
    fn refresh_ana(&self) -> Result<(), InitError> {
        if !self.ana_supported {
            return Ok(());
        }
        let cells = self.ana.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut buf = vec![0u8; 4096 + 4 * cells.len()];
        {
            let mut a = self.lock();
            let Some(q) = a.admin.as_mut() else { return Ok(()) };
            q.get_log_page(LogPageId::ANA, 0xffff_ffff, 0, &mut buf)?;
        }
        let log = AnaLog::parse(&buf).map_err(|e| InitError::Controller(e.to_string()))?;
        for (nsid, cell) in &cells {
            let st = log.state_of(*nsid).map_or(0, SpecAna::to_raw);
            cell.store(st, Ordering::Release);
        }
        Ok(())
    }

    /// Has the keep-alive thread check the admin queue (and re-associate
    /// if it is gone) without waiting for the next keep-alive.
    pub(crate) fn check_admin_soon(&self) {
        self.check_admin.store(true, Ordering::Release);
    }

    /// Asks for an Abort of command `cid` of I/O queue `qid` (sent from
    /// the keep-alive thread; the reactor never waits for the admin queue).
    pub(crate) fn request_abort(&self, qid: u16, cid: u16) {
        self.aborts.lock().unwrap_or_else(|e| e.into_inner()).push((qid, cid));
        self.abort_pending.store(true, Ordering::Release);
    }

    /// Sends the Aborts asked for. An error means the admin queue failed.
    fn send_aborts(&self) -> Result<(), InitError> {
        let list = std::mem::take(&mut *self.aborts.lock().unwrap_or_else(|e| e.into_inner()));
        let mut a = self.lock();
        let Some(q) = a.admin.as_mut() else { return Ok(()) };
        for (sqid, cid) in list {
            match q.exec("abort", Command::Admin(AdminCommand::Abort { sqid, cid }), SyncData::None) {
                Ok(c) => log::info!(
                    "nvmf {}: abort of qid {sqid} cid {cid}: {}",
                    self.name,
                    if c.dw0.get() & 1 == 0 { "aborted" } else { "not aborted" }
                ),
                Err(InitError::Status { status, .. }) => {
                    log::warn!("nvmf {}: abort of qid {sqid} cid {cid} failed: {status}", self.name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn keep_alive_loop(self: Arc<Self>) {
        let kato = Duration::from_millis(u64::from(self.opts.kato_ms));
        let period = if kato.is_zero() { Duration::from_secs(1) } else { (kato / 2).max(Duration::from_millis(100)) };
        let mut next = Instant::now() + period;
        let mut down_since: Option<Instant> = None;
        // Failed re-association attempts since the admin queue was lost.
        let mut failures = 0u32;
        let mut next_ana = Instant::now();
        while !self.stopped.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20).min(period));
            if down_since.is_none() {
                let r = if self.abort_pending.swap(false, Ordering::AcqRel) { self.send_aborts() } else { Ok(()) };
                if let Err(e) = r.and_then(|_| self.poll_events()) {
                    log::warn!("nvmf {}: admin queue failed: {e}", self.name);
                    if let Some(q) = self.lock().admin.take() {
                        q.close();
                    }
                    down_since = Some(Instant::now());
                    failures = 0;
                    next = Instant::now() + self.opts.backoff(0);
                    continue;
                }
            }
            if self.ana_supported
                && down_since.is_none()
                && (self.ana_dirty.swap(false, Ordering::AcqRel) || Instant::now() >= next_ana)
            {
                next_ana = Instant::now() + Duration::from_secs(1);
                if let Err(e) = self.refresh_ana() {
                    log::warn!("nvmf {}: reading the ANA log: {e}", self.name);
                }
            }
            if Instant::now() < next && !self.check_admin.swap(false, Ordering::AcqRel) {
                continue;
            }
            next = Instant::now() + period;
            if let Some(t0) = down_since {
                if t0.elapsed() > self.opts.ctrl_loss_timeout {
                    log::error!("nvmf {}: controller lost after {:?}", self.name, self.opts.ctrl_loss_timeout);
                    self.lost.store(true, Ordering::Release);
                    return;
                }
                match self.ensure_admin() {
                    Ok(_) => {
                        down_since = None;
                        failures = 0;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let wait = self.opts.backoff(failures);
                        log::warn!("nvmf {}: reconnect failed ({e}); next attempt in {wait:?}", self.name);
                        next = Instant::now() + wait;
                    }
                }
                continue;
            }
            if kato.is_zero() {
                continue;
            }
            let mut a = self.lock();
            let ok = match a.admin.as_mut() {
                Some(q) => q.keep_alive().map_err(|e| log::warn!("nvmf {}: keep alive failed: {e}", self.name)).is_ok(),
                None => false,
            };
            if !ok {
                if let Some(q) = a.admin.take() {
                    q.close();
                }
                down_since = Some(Instant::now());
                failures = 0;
                next = Instant::now() + self.opts.backoff(0);
            }
        }
    }
}

/// A connected remote controller.
#[derive(Debug)]
pub struct NvmfController {
    shared: Arc<Shared>,
    ctrl: IdentifyController,
    namespaces: Vec<NamespaceData>,
    keep_alive: Mutex<Option<JoinHandle<()>>>,
}

impl NvmfController {
    /// Connects the admin queue, identifies the controller and its active
    /// namespaces, and asks for `opts.io_queues` I/O queues.
    pub fn connect(name: &str, opts: ConnectOpts) -> Result<Arc<Self>, InitError> {
        let mut admin = AdminQueue::connect(&opts, &opts.subnqn)?;
        let ctrl = admin.identify_controller()?;
        let granted = admin.set_num_queues(opts.io_queues.max(1))?;
        let mut namespaces = Vec::new();
        for nsid in admin.active_namespaces()? {
            let ns = admin.identify_namespace(nsid)?;
            if ns.id.nsze.get() > 0 {
                namespaces.push(ns);
            }
        }
        let min_page = 4096u64 << admin.cap.mpsmin();
        let max_transfer =
            ctrl.max_transfer_bytes(min_page).unwrap_or(u64::from(u32::MAX)).min(u64::from(u32::MAX)) as u32;
        let mut depth = opts.io_queue_depth.clamp(2, admin.cap.mqes().saturating_add(1).max(2));
        if ctrl.maxcmd.get() >= 2 {
            depth = depth.min(ctrl.maxcmd.get());
        }
        let incapsule = (ctrl.ioccsz.get().saturating_mul(16)).saturating_sub(64);
        let ana_supported = ctrl.cmic & 0x08 != 0;
        let ana_events = ana_supported && ctrl.oaes.get() & AEC_ANA_CHANGE != 0;
        if ana_events {
            if let Err(e) = admin.enable_async_events(AEC_ANA_CHANGE) {
                log::warn!("nvmf {name}: enabling ANA change notices: {e}");
            }
        }
        let cntlid = admin.cntlid;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            opts,
            assoc: Mutex::new(Association { admin: Some(admin), cntlid, generation: 1 }),
            qids: Mutex::new((1..=granted).collect()),
            generation: AtomicU64::new(1),
            lost: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            depth,
            incapsule,
            max_transfer,
            ana_supported,
            ana_events,
            events: AtomicU64::new(0),
            ana: Mutex::new(namespaces.iter().map(|n| (n.nsid, Arc::new(AtomicU8::new(0)))).collect()),
            ana_dirty: AtomicBool::new(false),
            aborts: Mutex::new(Vec::new()),
            abort_pending: AtomicBool::new(false),
            check_admin: AtomicBool::new(false),
        });
        if let Err(e) = shared.refresh_ana() {
            log::warn!("nvmf {name}: reading the ANA log: {e}");
        }
        let ka = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("nvmf-ka-{name}"))
                .spawn(move || s.keep_alive_loop())
                .map_err(|e| InitError::io("spawn keep-alive thread", e))?
        };
        Ok(Arc::new(Self { shared, ctrl, namespaces, keep_alive: Mutex::new(Some(ka)) }))
    }

    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.ctrl
    }

    /// The active namespaces found at connect time.
    pub fn namespaces(&self) -> &[NamespaceData] {
        &self.namespaces
    }

    /// Number of I/O queues (channels) available.
    pub fn io_queues_free(&self) -> usize {
        self.shared.qids.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Asynchronous events received from the controller (ANA change
    /// notices, when it sends them).
    pub fn async_events(&self) -> u64 {
        self.shared.events.load(Ordering::Acquire)
    }

    /// Whether the controller-loss timeout expired.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
    }

    /// One bdev per namespace, named `<name>n<nsid>`.
    pub fn bdevs(self: &Arc<Self>) -> Vec<Arc<NvmfBdev>> {
        self.namespaces.iter().filter_map(|ns| NvmfBdev::new(self.clone(), ns).ok()).map(Arc::new).collect()
    }

    /// Stops the keep-alive thread and shuts the controller down (CC.SHN).
    /// Channels still open fail their IO with `PathError`.
    pub fn detach(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        if let Some(h) = self.keep_alive.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        let admin = self.shared.lock().admin.take();
        if let Some(q) = admin {
            if let Err(e) = q.shutdown() {
                log::warn!("nvmf {}: shutdown: {e}", self.shared.name);
            }
        }
    }
}

impl Drop for NvmfController {
    fn drop(&mut self) {
        self.detach();
    }
}

/// One namespace of a remote controller as a bdev.
#[derive(Debug)]
pub struct NvmfBdev {
    info: BdevInfo,
    removed: Arc<AtomicBool>,
    ana: Option<Arc<AtomicU8>>,
    ctrlr: Arc<NvmfController>,
    nsid: u32,
}

fn nonzero<const N: usize>(b: [u8; N]) -> Option<[u8; N]> {
    (b != [0; N]).then_some(b)
}

impl NvmfBdev {
    fn new(ctrlr: Arc<NvmfController>, ns: &NamespaceData) -> Result<Self, BdevError> {
        let bs = ns.id.block_size().ok_or_else(|| BdevError::param("namespace", "unsupported lba format"))?;
        let c = &ctrlr.ctrl;
        let mut supported = IoTypeSet::of(&[IoType::Read, IoType::Write, IoType::Flush]);
        let oncs_bits = c.oncs.get();
        if oncs_bits & oncs::DATASET_MANAGEMENT != 0 {
            supported = supported.with(IoType::Unmap);
        }
        if oncs_bits & oncs::WRITE_ZEROES != 0 {
            supported = supported.with(IoType::WriteZeroes);
        }
        let name = format!("{}n{}", ctrlr.shared.name, ns.nsid);
        let mut info = BdevInfo::new(&name, "nvmf", bs, ns.id.nsze.get(), supported);
        let mut uuid = None;
        let mut nguid = nonzero(ns.id.nguid);
        let mut eui64 = nonzero(ns.id.eui64);
        for d in &ns.descriptors {
            match *d {
                NsDescriptor::Uuid(u) => uuid = nonzero(u).map(Uuid),
                NsDescriptor::Nguid(g) => nguid = nguid.or(nonzero(g)),
                NsDescriptor::Eui64(e) => eui64 = eui64.or(nonzero(e)),
                _ => {}
            }
        }
        if let Some(u) = uuid {
            info.uuid = u;
        }
        info.ns_id = NamespaceId { nguid, eui64, uuid };
        let max_blocks = (ctrlr.shared.max_transfer / bs).clamp(1, 65536);
        info.max_io_blocks = max_blocks;
        info.volatile_cache = c.vwc & 1 != 0;
        // DLFEAT bits 2:0 = 1: deallocated blocks read as zeroes.
        info.unmap_zeroes = ns.id.dlfeat & 7 == 1;
        let ana = if ctrlr.shared.ana_supported {
            ctrlr.shared.ana.lock().unwrap_or_else(|e| e.into_inner()).get(&ns.nsid).cloned()
        } else {
            None
        };
        Ok(Self { info, removed: Arc::new(AtomicBool::new(false)), ana, nsid: ns.nsid, ctrlr })
    }

    /// Namespace ID.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<NvmfController> {
        &self.ctrlr
    }
}

impl Bdev for NvmfBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        let s = &self.ctrlr.shared;
        let qid = s.qids.lock().unwrap_or_else(|e| e.into_inner()).pop_front().ok_or_else(|| {
            BdevError::io("open nvmf channel", std::io::Error::other("all granted io queues are in use"))
        })?;
        if self.removed.load(Ordering::Acquire) {
            s.qids.lock().unwrap_or_else(|e| e.into_inner()).push_back(qid);
            return Err(BdevError::Removed(self.info.name.clone()));
        }
        match channel::NvmfChannel::connect(s.clone(), self.removed.clone(), self.nsid, self.info.block_size, qid) {
            Ok(c) => Ok(Box::new(c)),
            Err(e) => {
                s.qids.lock().unwrap_or_else(|e| e.into_inner()).push_back(qid);
                Err(BdevError::io("connect nvmf io queue", std::io::Error::other(e.to_string())))
            }
        }
    }

    fn ana_state(&self) -> Option<bdev::AnaState> {
        let raw = self.ana.as_ref()?.load(Ordering::Acquire);
        Some(match SpecAna::from_raw(raw) {
            SpecAna::Optimized => bdev::AnaState::Optimized,
            SpecAna::NonOptimized => bdev::AnaState::NonOptimized,
            SpecAna::Inaccessible => bdev::AnaState::Inaccessible,
            SpecAna::PersistentLoss => bdev::AnaState::PersistentLoss,
            SpecAna::Change => bdev::AnaState::Change,
            SpecAna::Reserved(_) => return None,
        })
    }

    fn shutdown(&self) {
        // Only this namespace: the controller's other bdevs keep working.
        self.removed.store(true, Ordering::Release);
    }

    fn config_params(&self) -> Option<String> {
        let o = &self.ctrlr.shared.opts;
        let hostid: String = o.host.id.iter().map(|b| format!("{b:02x}")).collect();
        // The JSON config's `nvmf` params (seed `xbdev_config_nvmf`).
        Some(format!(
            r#"{{"name":{},"addr":{},"port":{},"nqn":{},"hostnqn":{},"hostid":{},"hdgst":{},"ddgst":{},"queue_depth":{},"io_queues":{},"kato_ms":{},"reconnect_delay_ms":{},"ctrl_loss_timeout_ms":{},"fast_io_fail_timeout_ms":{},"reconnect_delay_max_ms":{},"io_timeout_ms":{}}}"#,
            bdev::json_str(&self.ctrlr.shared.name),
            bdev::json_str(&o.addr.ip().to_string()),
            o.addr.port(),
            bdev::json_str(&o.subnqn),
            bdev::json_str(&o.host.nqn),
            bdev::json_str(&hostid),
            o.hdgst,
            o.ddgst,
            o.io_queue_depth,
            o.io_queues,
            o.kato_ms,
            o.reconnect_delay.as_millis(),
            o.ctrl_loss_timeout.as_millis(),
            o.fast_io_fail_timeout.as_millis(),
            o.reconnect_delay_max.as_millis(),
            o.io_timeout.as_millis()
        ))
    }
}
