//! A running xbdev instance: reactors, registry, handles, and the synchronous IO API.

use crate::client::{ClientReq, Ring, Server};
use crate::config::{BaseDevice, Config, ReactorSettings};
use crate::error::XbdevError;
use crate::queue::IoQueue;
use bdev::backends::aio::AioBdev;
use bdev::backends::malloc::MallocBdev;
use bdev::backends::null::NullBdev;
use bdev::{Bdev, BdevChannel, BdevInfo, Desc, DmaBuf, IoRequest, IoStatus, IoType, IoVec, IoVecs, Registry};
use reactor::{ReactorHandle, Reactors};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On reactor threads: the client server of each instance.
    static SERVERS: RefCell<Vec<(u64, Rc<RefCell<Server>>)>> = const { RefCell::new(Vec::new()) };
    /// On client threads: the synchronous-API ring of each instance.
    static SYNC_RINGS: RefCell<Vec<(u64, Arc<Ring>, ReactorHandle)>> = const { RefCell::new(Vec::new()) };
    /// On client threads: a bounce buffer for memory that is not DMA-capable.
    static BOUNCE: RefCell<Option<DmaBuf>> = const { RefCell::new(None) };
}

pub(crate) fn with_server<R>(id: u64, f: impl FnOnce(&mut Server) -> R) -> Option<R> {
    SERVERS.with(|s| {
        let s = s.borrow();
        let srv = s.iter().find(|(i, _)| *i == id)?.1.clone();
        drop(s);
        let mut g = srv.borrow_mut();
        Some(f(&mut g))
    })
}

/// Shared state of one open device handle.
pub(crate) struct HandleShared {
    pub slot: u32,
    pub generation: u32,
    pub desc: Desc,
    pub closed: AtomicBool,
}

/// The handle slots of an instance.
#[derive(Default)]
pub(crate) struct HandleTable {
    slots: Mutex<Vec<(u32, Option<Arc<HandleShared>>)>>,
}

impl HandleTable {
    fn insert(&self, desc: Desc) -> Arc<HandleShared> {
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let idx = match g.iter().position(|(_, h)| h.is_none()) {
            Some(i) => i,
            None => {
                g.push((0, None));
                g.len() - 1
            }
        };
        let generation = g[idx].0.wrapping_add(1);
        let h = Arc::new(HandleShared { slot: idx as u32, generation, desc, closed: AtomicBool::new(false) });
        g[idx] = (generation, Some(h.clone()));
        h
    }

    fn remove(&self, slot: u32) {
        let mut g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.get_mut(slot as usize) {
            e.1 = None;
        }
    }

    /// A channel for the calling reactor, if the handle is still open at that generation.
    pub fn open_channel(&self, slot: u32, generation: u32) -> Option<BdevChannel> {
        let h = {
            let g = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            g.get(slot as usize)?.1.clone()?
        };
        if h.generation != generation || h.closed.load(Ordering::Acquire) {
            return None;
        }
        h.desc.channel().ok()
    }
}

pub(crate) struct Inner {
    pub id: u64,
    pub registry: Arc<Registry>,
    multipath: Arc<multipath::MultipathModule>,
    lvol: Arc<lvol::Lvol>,
    arrays: Mutex<Vec<Arc<raid::array::MdArray>>>,
    reactors: Mutex<Option<Reactors>>,
    pub handles: Vec<ReactorHandle>,
    pub table: Arc<HandleTable>,
    settings: ReactorSettings,
    next_reactor: AtomicUsize,
    stopped: AtomicBool,
}

impl Inner {
    pub fn check_running(&self) -> Result<(), XbdevError> {
        if self.stopped.load(Ordering::Acquire) {
            Err(XbdevError::NotInitialized)
        } else {
            Ok(())
        }
    }

    /// Register a new client ring with the next reactor (round robin).
    pub fn new_ring(&self, depth: usize) -> Result<(Arc<Ring>, ReactorHandle), XbdevError> {
        self.check_running()?;
        let i = self.next_reactor.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let r = self.handles[i].clone();
        let ring = Ring::new(depth);
        let ring2 = ring.clone();
        let id = self.id;
        r.call(move |_| with_server(id, |s| s.add_ring(ring2)))?;
        Ok((ring, r))
    }
}

/// A running xbdev: reactors, devices and the handles opened on them.
pub struct Xbdev {
    inner: Arc<Inner>,
}

impl Xbdev {
    /// Start reactors and create the configured devices.
    pub fn start(cfg: &Config) -> Result<Xbdev, XbdevError> {
        let reactors = Reactors::start(&cfg.reactor.to_reactor_config())?;
        let registry = Registry::new();
        let table = Arc::new(HandleTable::default());
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let t2 = table.clone();
        reactors.call_all(move |ctx| {
            let srv = Rc::new(RefCell::new(Server::new(t2.clone())));
            SERVERS.with(|s| s.borrow_mut().push((id, srv.clone())));
            ctx.add_poller("xbdev-clients", move |_| srv.borrow_mut().poll());
        })?;
        // NVMe namespaces (local or remote) reached over several paths group automatically.
        let multipath = multipath::MultipathModule::new(multipath::AutoAssemble {
            products: vec!["nvme".into(), "nvmf".into(), "rbd".into()],
            ..Default::default()
        });
        registry.add_examiner(multipath.clone());
        // md arrays whose members carry superblocks assemble by themselves.
        registry.add_examiner(raid::array::MdExaminer::new(&registry));
        // Logical volume stores found on any bdev load by themselves.
        let lvol = lvol::Lvol::new(&registry);
        let inner = Arc::new(Inner {
            id,
            lvol,
            arrays: Mutex::new(Vec::new()),
            multipath,
            registry,
            handles: reactors.handles().to_vec(),
            reactors: Mutex::new(Some(reactors)),
            table,
            settings: cfg.reactor.clone(),
            next_reactor: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let xb = Xbdev { inner };
        let created = (|| {
            for d in &cfg.base_devices {
                xb.create_base_device(d)?;
            }
            for (i, r) in cfg.raid_devices.iter().enumerate() {
                if xb.inner.registry.lookup(&r.name).is_some() {
                    continue; // assembled from its members' superblocks
                }
                let members: Vec<&str> = r.base_bdevs.iter().chain(&r.spares).map(String::as_str).collect();
                let a =
                    raid::array::md_create(&xb.inner.registry, &r.name, r.level, &members, &r.cfg).map_err(|e| {
                        crate::config::ConfigError::Invalid {
                            path: format!("raid_devices[{i}]"),
                            message: e.to_string(),
                        }
                    })?;
                for f in &r.faulty {
                    a.manage(raid::array::ManageCmd::SetFaulty(f.clone())).map_err(|e| {
                        crate::config::ConfigError::Invalid {
                            path: format!("raid_devices[{i}].params.faulty"),
                            message: format!("cannot fail '{f}': {e}"),
                        }
                    })?;
                }
                xb.inner.arrays.lock().unwrap_or_else(|e| e.into_inner()).push(a);
            }
            crate::config_stack::apply_lvol(&xb.inner.lvol, &cfg.lvol)?;
            for m in &cfg.multipath_devices {
                xb.inner.multipath.create(&xb.inner.registry, m.clone())?;
            }
            Ok::<(), XbdevError>(())
        })();
        if let Err(e) = created {
            xb.stop();
            return Err(e);
        }
        Ok(xb)
    }

    /// Create one base device and register it.
    pub fn create_base_device(&self, d: &BaseDevice) -> Result<(), XbdevError> {
        self.inner.check_running()?;
        let bdevs: Vec<Arc<dyn Bdev>> = match d {
            BaseDevice::Malloc(p) => vec![Arc::new(MallocBdev::new(p.clone())?)],
            BaseDevice::Null(p) => vec![Arc::new(NullBdev::new(p.clone())?)],
            BaseDevice::Aio(p) => vec![Arc::new(AioBdev::new(p.clone())?)],
            BaseDevice::Nvme(p) => {
                let cfg = nvme_pcie::ControllerConfig { io_queues: p.io_queues, ..Default::default() };
                nvme_pcie::nvme_bdev::attach_pci(&p.pci_addr, p.mode, &p.name, p.queue_depth, cfg)?
            }
            BaseDevice::Nvmf(p) => {
                let c = nvme_tcp::nvmf::NvmfController::connect(&p.name, p.opts.clone()).map_err(|e| {
                    XbdevError::Bdev(bdev::BdevError::param("nvmf", format!("cannot attach '{}': {e}", p.name)))
                })?;
                c.bdevs().into_iter().map(|b| b as Arc<dyn Bdev>).collect()
            }
        };
        for b in bdevs {
            self.inner.registry.register(b)?;
        }
        Ok(())
    }

    /// The device registry (for modules stacking new bdevs, and for listing).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The multipath module: devices, paths, policies, events.
    pub fn multipath(&self) -> &Arc<multipath::MultipathModule> {
        &self.inner.multipath
    }

    /// The logical volume module: stores, volumes, snapshots, clones, compression, encryption.
    pub fn lvol(&self) -> &Arc<lvol::Lvol> {
        &self.inner.lvol
    }

    /// md arrays created from the config (arrays assembled from superblocks are in the registry
    /// too, and reachable with `raid::array` functions).
    pub fn arrays(&self) -> Vec<Arc<raid::array::MdArray>> {
        self.inner.arrays.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The reactors.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.inner.handles
    }

    /// Descriptions of the devices users see.
    pub fn devices(&self) -> Vec<BdevInfo> {
        self.inner.registry.list()
    }

    /// Open a device by name or alias, for reading (and writing when `writable`).
    pub fn open(&self, name: &str, writable: bool) -> Result<Handle, XbdevError> {
        self.inner.check_running()?;
        let desc = self.inner.registry.open(name, writable).map_err(|e| match e {
            bdev::BdevError::NotFound(n) => XbdevError::UnknownDevice(n),
            e => XbdevError::Bdev(e),
        })?;
        let shared = self.inner.table.insert(desc);
        Ok(Handle { inner: self.inner.clone(), shared })
    }

    /// An asynchronous IO queue for the calling thread.
    pub fn io_queue(&self, depth: usize) -> Result<IoQueue, XbdevError> {
        IoQueue::new(self.inner.clone(), depth)
    }

    /// The configuration that recreates this instance's devices, as JSON text.
    pub fn save_config(&self) -> String {
        let devs: Vec<(String, String)> = self
            .inner
            .registry
            .list_all()
            .into_iter()
            .filter_map(|(info, _)| {
                let b = self.inner.registry.lookup(&info.name)?;
                Some((info.product.clone(), b.config_params()?))
            })
            .collect();
        let mut v = crate::config::save_value(&self.inner.settings, &devs);
        crate::config::save_lvol(&mut v, &self.inner.lvol.save_config());
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Stop reactors and release every device. Handles still open fail with `NotInitialized`.
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // Arrays stop first: their superblocks are marked clean.
        for a in self.inner.arrays.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            if let Err(e) = a.stop() {
                log::warn!("stopping an md array: {e}");
            }
        }
        let id = self.inner.id;
        let reactors = self.inner.reactors.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut r) = reactors {
            let _ = r.call_all(move |_| SERVERS.with(|s| s.borrow_mut().retain(|(i, _)| *i != id)));
            r.stop();
        }
        for info in self.inner.registry.list_all() {
            let _ = self.inner.registry.unregister(&info.0.name);
        }
    }
}

impl Drop for Xbdev {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An open device. IO methods take byte offsets and lengths, which must be multiples of the
/// block size. Any thread may use a handle; each thread's requests go through its own queue.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
    shared: Arc<HandleShared>,
}

/// A caller's buffer for a synchronous transfer.
pub(crate) enum UserBuf<'a> {
    /// Destination of a read.
    Read(&'a mut [u8]),
    /// Source of a write.
    Write(&'a [u8]),
}

/// Lower-case operation name, for error messages.
fn op_name(t: IoType) -> &'static str {
    match t {
        IoType::Read => "read",
        IoType::Write => "write",
        IoType::Flush => "flush",
        IoType::Unmap => "unmap",
        IoType::WriteZeroes => "write_zeroes",
        IoType::Reset => "reset",
    }
}

impl Handle {
    /// The device's description.
    pub fn info(&self) -> &BdevInfo {
        self.shared.desc.info()
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.info().name
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.info().block_size
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.info().num_blocks
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.info().size_bytes()
    }

    /// Whether the handle may write.
    pub fn writable(&self) -> bool {
        self.shared.desc.writable()
    }

    /// The handle's slot number (the C ABI's descriptor).
    pub fn slot(&self) -> u32 {
        self.shared.slot
    }

    /// Statistics of the device.
    pub fn stats(&self) -> bdev::StatsSnapshot {
        self.shared.desc.stats()
    }

    pub(crate) fn generation(&self) -> u32 {
        self.shared.generation
    }

    pub(crate) fn instance_id(&self) -> u64 {
        self.inner.id
    }

    /// Check an IO and convert it to blocks: `(offset_blocks, num_blocks)`.
    pub(crate) fn check(&self, op: IoType, offset: u64, len: u64) -> Result<(u64, u64), XbdevError> {
        self.inner.check_running()?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(XbdevError::Closed(self.shared.slot as i32));
        }
        if op.is_write_like() && !self.writable() {
            return Err(XbdevError::ReadOnly(self.name().to_string()));
        }
        if matches!(op, IoType::Flush | IoType::Reset) {
            return Ok((0, 0));
        }
        let bs = self.block_size() as u64;
        if len == 0 {
            return Err(XbdevError::ZeroLength(op_name(op)));
        }
        if !offset.is_multiple_of(bs) {
            return Err(XbdevError::Misaligned {
                what: "offset",
                value: offset,
                block_size: bs as u32,
                remainder: offset % bs,
            });
        }
        if !len.is_multiple_of(bs) {
            return Err(XbdevError::Misaligned {
                what: "length",
                value: len,
                block_size: bs as u32,
                remainder: len % bs,
            });
        }
        let size = self.size_bytes();
        let end = offset.saturating_add(len);
        if end > size {
            return Err(XbdevError::OutOfRange {
                device: self.name().to_string(),
                offset,
                length: len,
                size,
                past: end - size,
            });
        }
        Ok((offset / bs, len / bs))
    }

    fn sync_ring(&self) -> Result<(Arc<Ring>, ReactorHandle), XbdevError> {
        let id = self.inner.id;
        if let Some(r) = SYNC_RINGS.with(|s| s.borrow().iter().find(|e| e.0 == id).map(|e| (e.1.clone(), e.2.clone())))
        {
            return Ok(r);
        }
        let (ring, reactor) = self.inner.new_ring(8)?;
        SYNC_RINGS.with(|s| s.borrow_mut().push((id, ring.clone(), reactor.clone())));
        Ok((ring, reactor))
    }

    /// Run one request synchronously.
    fn run(&self, io: IoRequest, offset: u64) -> Result<(), XbdevError> {
        let (ring, reactor) = self.sync_ring()?;
        let req = ClientReq { handle: self.shared.slot, generation: self.shared.generation, io };
        while ring.req.push(req).is_err() {
            std::thread::yield_now();
        }
        reactor.notify();
        // Every IO is answered (backends time out themselves), and the buffer must not be
        // released before that, so this waits without a deadline.
        loop {
            if let Some(c) = ring.cpl.pop() {
                return match c.status {
                    IoStatus::Success => Ok(()),
                    status => {
                        Err(XbdevError::Io { device: self.name().to_string(), op: op_name(io.io_type), offset, status })
                    }
                };
            }
            ring.wait(Duration::from_secs(1));
        }
    }

    fn data_io(&self, mut buf: UserBuf<'_>, offset: u64) -> Result<(), XbdevError> {
        let (op, ptr, len) = match &mut buf {
            UserBuf::Read(b) => (IoType::Read, b.as_mut_ptr(), b.len()),
            UserBuf::Write(b) => (IoType::Write, b.as_ptr().cast_mut(), b.len()),
        };
        let (ob, nb) = self.check(op, offset, len as u64)?;
        let align = self.info().required_alignment.max(1) as usize;
        if bdev::dma::is_dma_memory(ptr as usize, len) && (ptr as usize).is_multiple_of(align) {
            let iov = crate::dma::slice_iovec(&mut buf);
            let io = IoRequest { io_type: op, offset_blocks: ob, num_blocks: nb, iovs: IoVecs::single(iov), tag: 0 };
            return self.run(io, offset);
        }
        BOUNCE.with(|b| {
            let mut b = b.borrow_mut();
            if b.as_ref().is_none_or(|x| x.len() < len) {
                *b = Some(DmaBuf::alloc(len.next_power_of_two()).map_err(bdev::BdevError::from)?);
            }
            let Some(bounce) = b.as_mut() else { return Err(XbdevError::InvalidBuffer("no bounce buffer".into())) };
            if let UserBuf::Write(src) = &buf {
                bounce.as_mut_slice()[..len].copy_from_slice(src);
            }
            let iov: IoVec = bounce
                .iovec_range(0, len)
                .ok_or_else(|| XbdevError::InvalidBuffer("bounce buffer too small".into()))?;
            let io = IoRequest { io_type: op, offset_blocks: ob, num_blocks: nb, iovs: IoVecs::single(iov), tag: 0 };
            self.run(io, offset)?;
            if let UserBuf::Read(dst) = &mut buf {
                dst.copy_from_slice(&bounce.as_slice()[..len]);
            }
            Ok(())
        })
    }

    /// Read `buf.len()` bytes at byte `offset` (both multiples of the block size).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize, XbdevError> {
        let n = buf.len();
        self.data_io(UserBuf::Read(buf), offset)?;
        Ok(n)
    }

    /// Write `buf` at byte `offset` (both multiples of the block size).
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<usize, XbdevError> {
        self.data_io(UserBuf::Write(buf), offset)?;
        Ok(buf.len())
    }

    /// Make every completed write durable.
    pub fn flush(&self) -> Result<(), XbdevError> {
        self.check(IoType::Flush, 0, 0)?;
        self.run(IoRequest::no_data(IoType::Flush, 0, 0, 0), 0)
    }

    /// Deallocate `[offset, offset+len)`.
    pub fn unmap(&self, offset: u64, len: u64) -> Result<(), XbdevError> {
        let (ob, nb) = self.check(IoType::Unmap, offset, len)?;
        self.run(IoRequest::no_data(IoType::Unmap, ob, nb, 0), offset)
    }

    /// Write zeroes over `[offset, offset+len)`.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), XbdevError> {
        let (ob, nb) = self.check(IoType::WriteZeroes, offset, len)?;
        self.run(IoRequest::no_data(IoType::WriteZeroes, ob, nb, 0), offset)
    }

    /// Close the handle: every reactor answers its in-flight IO and drops its channel.
    /// A second close fails with [`XbdevError::Closed`].
    pub fn close(&self) -> Result<(), XbdevError> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(XbdevError::Closed(self.shared.slot as i32));
        }
        let id = self.inner.id;
        let slot = self.shared.slot;
        if !self.inner.stopped.load(Ordering::Acquire) {
            for r in &self.inner.handles {
                let _ = r.call(move |_| with_server(id, |s| s.close_handle(slot)));
            }
        }
        self.inner.table.remove(slot);
        Ok(())
    }

    /// Whether the handle was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({}, slot {})", self.name(), self.shared.slot)
    }
}
