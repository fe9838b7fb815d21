//! The `nvme` bdev backend: one block device per active namespace of an
//! attached controller (`nvme0n1`, `nvme0n2`, ...), one I/O queue pair per
//! channel.
//!
//! I/O buffers come from the block layer's DMA regions (`bdev::dma`). A
//! [`RegionBridge`] registered with `bdev::dma::register_mapper` maps every
//! region into this controller's device view with the controller's own
//! [`DmaMapper`] (VFIO IOVAs of our choosing, physical addresses without an
//! IOMMU, or the emulator's software IOMMU) and keeps a VA -> IOVA table;
//! channels cache that table and translate each request's segments without
//! locks. The block layer's "IOVA = virtual address" convention is not used
//! (an emulated Intel IOMMU has a 39-bit address width, below user VAs).
//! Multi-segment requests are described with SGLs when the controller
//! offers them; without SGLs, segments PRPs cannot describe (a middle
//! segment not page aligned) are bounced through a block-layer DMA buffer.
//!
//! `Reset` is a controller reset (done in the channel's next poll, which
//! blocks until the controller is back): every channel re-creates its
//! queues and resubmits what had not completed; the Reset completes with
//! Success, or PathError if the controller could not be brought back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bdev::dma::{DmaBuf, IoVec};
use bdev::{
    Bdev, BdevError, BdevInfo, IoChannel, IoRequest, IoStatus, IoType, IoTypeSet, NamespaceId, QueueFull, Uuid,
};
use nvme_spec::identify::oncs;
use nvme_spec::status::GenericStatus;
use nvme_spec::StatusCode;

use crate::backing::DeviceBacking;
use crate::ctrl::{Controller, NamespaceInfo};
use crate::dma::{DmaMapper, DmaMapping, PAGE_SIZE};
use crate::error::{IoError, SubmitError};
use crate::prp::PrpSource;
use crate::queue::{DataMode, IoQueuePair};

/// One block-layer region as this controller sees it.
#[derive(Clone, Debug)]
struct Region {
    va: usize,
    len: usize,
    mapping: DmaMapping,
}

/// Maps the block layer's DMA regions for one controller and translates
/// addresses in them.
pub struct RegionBridge {
    name: String,
    mapper: Arc<dyn DmaMapper>,
    regions: Mutex<Vec<Region>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for RegionBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionBridge").field("name", &self.name).finish()
    }
}

impl bdev::dma::DmaMapper for RegionBridge {
    fn name(&self) -> &str {
        &self.name
    }

    fn map(&self, addr: usize, len: usize) -> Result<(), String> {
        let mapping = self.mapper.map(addr, len).map_err(|e| e.to_string())?;
        let mut g = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        g.push(Region { va: addr, len, mapping });
        g.sort_unstable_by_key(|r| r.va);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn unmap(&self, addr: usize, len: usize) {
        let mut g = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = g.iter().position(|r| r.va == addr) {
            let r = g.remove(i);
            self.mapper.unmap(addr, len, &r.mapping);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Unregisters the bridge when the last bdev of the controller goes.
struct BridgeGuard {
    bridge: Arc<RegionBridge>,
}

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        bdev::dma::unregister_mapper(&self.bridge.name);
    }
}

/// Parameters of [`attach`].
#[derive(Debug, Clone)]
pub struct NvmeBdevParams {
    /// Name prefix: bdevs are `{prefix}n{nsid}`.
    pub prefix: String,
    /// Queue depth of each channel's queue pair (clamped to CAP.MQES + 1).
    pub queue_depth: u16,
    /// The controller's address, for `config_params` (e.g. a PCI address).
    pub traddr: String,
}

/// A namespace of an attached controller as a bdev.
pub struct NvmeBdev<B: DeviceBacking> {
    info: BdevInfo,
    nsid: u32,
    depth: u16,
    traddr: String,
    prefix: String,
    ctrl: Arc<Controller<B>>,
    guard: Arc<BridgeGuard>,
}

impl<B: DeviceBacking> std::fmt::Debug for NvmeBdev<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmeBdev").field("name", &self.info.name).field("nsid", &self.nsid).finish()
    }
}

fn nonzero<const N: usize>(b: [u8; N]) -> Option<[u8; N]> {
    (b != [0; N]).then_some(b)
}

/// Open the PCI function `traddr` (explicitly with or without an IOMMU),
/// bring its controller up and create its bdevs (see [`attach`]).
pub fn attach_pci(
    traddr: &str,
    mode: crate::vfio::AccessMode,
    prefix: &str,
    queue_depth: u16,
    cfg: crate::ctrl::ControllerConfig,
) -> Result<Vec<Arc<dyn Bdev>>, BdevError> {
    let dev = crate::vfio::PciDevice::open(traddr, mode).map_err(|e| BdevError::param("traddr", e.to_string()))?;
    let ctrl = Controller::new(dev, cfg).map_err(|e| BdevError::param("traddr", e.to_string()))?;
    let params = NvmeBdevParams { prefix: prefix.to_string(), queue_depth, traddr: traddr.to_string() };
    Ok(attach(ctrl, &params)?.into_iter().map(|b| b as Arc<dyn Bdev>).collect())
}

/// Create one bdev per active namespace of `ctrl` (except namespaces
/// formatted with separate metadata, which the driver cannot serve; not registered: the
/// caller registers them with its `bdev::Registry`). Registers the region
/// bridge, so existing and future block-layer buffers become DMA-able by
/// this controller.
pub fn attach<B: DeviceBacking>(
    ctrl: Controller<B>,
    params: &NvmeBdevParams,
) -> Result<Vec<Arc<NvmeBdev<B>>>, BdevError> {
    let ctrl = Arc::new(ctrl);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let bridge = Arc::new(RegionBridge {
        name: format!("nvme-pcie:{}:{}:{}", params.prefix, ctrl.device().id(), NEXT.fetch_add(1, Ordering::Relaxed)),
        mapper: ctrl.dma().mapper(),
        regions: Mutex::new(Vec::new()),
        generation: AtomicU64::new(1),
    });
    bdev::dma::register_mapper(bridge.clone())?;
    let guard = Arc::new(BridgeGuard { bridge });
    let info = ctrl.info().clone();
    let depth = params.queue_depth.clamp(2, info.max_queue_entries.min(u32::from(u16::MAX)) as u16);
    let mut out = Vec::new();
    for ns in ctrl.namespaces() {
        if ns.metadata_size > 0 && !ns.extended_lba {
            // Separate metadata buffers are not supported by the driver.
            continue;
        }
        let mut supported = IoTypeSet::of(&[IoType::Read, IoType::Write, IoType::Flush, IoType::Reset]);
        if info.oncs & oncs::DATASET_MANAGEMENT != 0 {
            supported = supported.with(IoType::Unmap);
        }
        if info.oncs & oncs::WRITE_ZEROES != 0 {
            supported = supported.with(IoType::WriteZeroes);
        }
        let name = format!("{}n{}", params.prefix, ns.nsid);
        let bs = ns.transfer_block_size();
        let mut bi = BdevInfo::new(&name, "nvme", bs, ns.blocks, supported);
        let uuid = ns.uuid.or(nonzero(ns.nguid)).map(Uuid);
        if let Some(u) = uuid {
            bi.uuid = u;
        }
        bi.required_alignment = 4;
        let per_cmd = (info.max_transfer / bs as usize).clamp(1, 1 << 16);
        bi.max_io_blocks = u32::try_from(per_cmd * (usize::from(depth) - 1)).unwrap_or(u32::MAX);
        // Deallocate is advisory in NVMe: unmapped blocks may keep data.
        bi.unmap_zeroes = false;
        bi.volatile_cache = info.volatile_write_cache;
        bi.ns_id = NamespaceId { nguid: nonzero(ns.nguid), eui64: nonzero(ns.eui64), uuid: ns.uuid.map(Uuid) };
        out.push(Arc::new(NvmeBdev {
            info: bi,
            nsid: ns.nsid,
            depth,
            traddr: params.traddr.clone(),
            prefix: params.prefix.clone(),
            ctrl: ctrl.clone(),
            guard: guard.clone(),
        }));
    }
    Ok(out)
}

impl<B: DeviceBacking> NvmeBdev<B> {
    /// The namespace behind this bdev.
    pub fn namespace(&self) -> Option<&NamespaceInfo> {
        self.ctrl.namespace(self.nsid)
    }

    /// The controller behind this bdev.
    pub fn controller(&self) -> &Controller<B> {
        &self.ctrl
    }
}

impl<B: DeviceBacking> Bdev for NvmeBdev<B> {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        let qp =
            self.ctrl.create_io_queue_pair(self.depth).map_err(|e| BdevError::param("nvme channel", e.to_string()))?;
        let depth = usize::from(self.depth);
        Ok(Box::new(NvmeChannel {
            qp,
            nsid: self.nsid,
            block: self.info.block_size as usize,
            bridge: self.guard.bridge.clone(),
            cache: Vec::new(),
            cache_gen: 0,
            early: VecDeque::with_capacity(depth),
            resets: Vec::with_capacity(depth),
            bounces: (0..depth).map(|_| None).collect(),
            in_flight: 0,
            _guard: self.guard.clone(),
        }))
    }

    fn shutdown(&self) {}

    fn config_params(&self) -> Option<String> {
        Some(format!(
            r#"{{"name":{},"pci_addr":{},"queue_depth":{}}}"#,
            bdev::json_str(&self.prefix),
            bdev::json_str(&self.traddr),
            self.depth
        ))
    }
}

/// A request's segments translated to device addresses.
struct Translated<'a> {
    iovs: &'a [IoVec],
    regions: &'a [Region],
    len: usize,
}

impl Translated<'_> {
    /// The virtual address of byte `off` and the bytes left in its segment.
    fn va_at(&self, mut off: usize) -> Option<(usize, usize)> {
        for v in self.iovs {
            if off < v.len() {
                return Some((v.addr().checked_add(off)?, v.len() - off));
            }
            off -= v.len();
        }
        None
    }
}

/// The region holding `va` and the offset of `va` in it.
fn region_of(regions: &[Region], va: usize) -> Option<(&Region, usize)> {
    let i = regions.partition_point(|r| r.va <= va);
    let r = regions.get(i.checked_sub(1)?)?;
    let off = va - r.va;
    (off < r.len).then_some((r, off))
}

impl PrpSource for Translated<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn iova_at(&self, off: usize) -> Option<u64> {
        let (r, o) = region_of(self.regions, self.va_at(off)?.0)?;
        r.mapping.iova_at(o)
    }
    fn contiguous_len(&self, off: usize) -> usize {
        self.run_at(off).map_or(0, |r| r.1)
    }
    fn run_at(&self, off: usize) -> Option<(u64, usize)> {
        let (va, seg_left) = self.va_at(off)?;
        let (r, o) = region_of(self.regions, va)?;
        let mut n = seg_left.min(r.len - o).min(self.len.saturating_sub(off));
        let shift = r.mapping.granule_shift;
        if shift < usize::BITS - 1 {
            let g = 1usize << shift;
            n = n.min(g - (o & (g - 1)));
        }
        Some((r.mapping.iova_at(o)?, n))
    }
}

/// PRPs can describe the segments directly if every segment boundary
/// inside the transfer falls on a page boundary.
fn prp_compatible(iovs: &[IoVec]) -> bool {
    let n = iovs.len();
    iovs.iter().enumerate().all(|(i, v)| {
        let start_ok = i == 0 || v.addr() % PAGE_SIZE == 0;
        let end_ok = i + 1 == n || (v.addr() + v.len()) % PAGE_SIZE == 0;
        start_ok && end_ok
    })
}

struct Bounce {
    buf: DmaBuf,
    read_into: Option<bdev::IoVecs>,
    tag: u64,
}

/// A channel: one I/O queue pair.
struct NvmeChannel<B: DeviceBacking> {
    qp: IoQueuePair<B>,
    nsid: u32,
    block: usize,
    bridge: Arc<RegionBridge>,
    cache: Vec<Region>,
    cache_gen: u64,
    early: VecDeque<(u64, IoStatus)>,
    /// Tags of Reset requests waiting for the next poll (one controller
    /// reset answers all of them).
    resets: Vec<u64>,
    /// Bounced requests, by internal tag (index); their driver tag has the
    /// top bit set.
    bounces: Vec<Option<Bounce>>,
    in_flight: usize,
    _guard: Arc<BridgeGuard>,
}

const BOUNCE_BIT: u64 = 1 << 63;

fn status_of(r: Result<(), IoError>) -> IoStatus {
    match r {
        Ok(()) => IoStatus::Success,
        Err(IoError::Timeout) => IoStatus::Timeout,
        Err(IoError::DeviceGone) => IoStatus::PathError,
        Err(IoError::Status(s)) => {
            if s.is_path_error() {
                IoStatus::PathError
            } else if s.is_media_error() {
                IoStatus::MediaError
            } else {
                match s.code {
                    StatusCode::Generic(GenericStatus::CapacityExceeded) => IoStatus::NoSpace,
                    StatusCode::Generic(
                        GenericStatus::InvalidField
                        | GenericStatus::InvalidOpcode
                        | GenericStatus::LbaOutOfRange
                        | GenericStatus::InvalidNamespaceOrFormat
                        | GenericStatus::PrpOffsetInvalid
                        | GenericStatus::InvalidSglSegmentDescriptor
                        | GenericStatus::InvalidSglCount
                        | GenericStatus::DataSglLengthInvalid
                        | GenericStatus::SglDescriptorTypeInvalid
                        | GenericStatus::SglOffsetInvalid
                        | GenericStatus::Other(crate::sgl::SGL_DATA_BLOCK_GRANULARITY_INVALID),
                    ) => IoStatus::Invalid,
                    StatusCode::Generic(
                        GenericStatus::AbortRequested
                        | GenericStatus::AbortedSqDeletion
                        | GenericStatus::AbortedPowerLoss,
                    ) => IoStatus::Aborted,
                    _ => IoStatus::MediaError,
                }
            }
        }
    }
}

fn submit_status(e: SubmitError) -> IoStatus {
    match e {
        SubmitError::DeviceGone => IoStatus::PathError,
        _ => IoStatus::Invalid,
    }
}

impl<B: DeviceBacking> NvmeChannel<B> {
    fn refresh(&mut self) {
        let g = self.bridge.generation.load(Ordering::Acquire);
        if g != self.cache_gen {
            self.cache = self.bridge.regions.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.cache_gen = g;
        }
    }

    fn rw(&mut self, io: &IoRequest, write: bool) -> Result<(), SubmitError> {
        let iovs = io.iovs.as_slice();
        let len = io.num_blocks as usize * self.block;
        let t = Translated { iovs, regions: &self.cache, len };
        if t.iova_at(0).is_some() {
            if iovs.len() > 1 && self.qp.uses_sgls() {
                match self.qp.rw_src(write, self.nsid, io.offset_blocks, &t, &[], DataMode::Sgl, io.tag) {
                    // Segments the controller's SGL alignment rules out, or
                    // memory outside the mapped regions: bounce.
                    Err(SubmitError::Misaligned | SubmitError::TooLarge) => {}
                    r => return r,
                }
            } else if prp_compatible(iovs) {
                return self.qp.rw_src(write, self.nsid, io.offset_blocks, &t, &[], DataMode::Prp, io.tag);
            }
        }
        self.rw_bounced(io, write, len)
    }

    /// Slow path: copy through one block-layer buffer (reads copy back at
    /// completion).
    fn rw_bounced(&mut self, io: &IoRequest, write: bool, len: usize) -> Result<(), SubmitError> {
        let Some(slot) = self.bounces.iter().position(Option::is_none) else {
            return Err(SubmitError::QueueFull);
        };
        let mut buf = DmaBuf::alloc(len).map_err(|_| SubmitError::QueueFull)?;
        if write {
            bdev::dma::copy_from_iovs(io.iovs.as_slice(), buf.as_mut_slice());
        }
        // The bounce buffer came from a region the bridge mapped.
        self.refresh();
        let v = buf.iovec();
        let t = Translated { iovs: std::slice::from_ref(&v), regions: &self.cache, len };
        self.qp.rw_src(write, self.nsid, io.offset_blocks, &t, &[], DataMode::Prp, BOUNCE_BIT | slot as u64)?;
        if let Some(s) = self.bounces.get_mut(slot) {
            *s = Some(Bounce { buf, read_into: (!write).then_some(io.iovs), tag: io.tag });
        }
        Ok(())
    }
}

/// Report a driver completion to the block layer (copying bounced reads
/// back first).
fn complete(bounces: &mut [Option<Bounce>], done: &mut dyn FnMut(u64, IoStatus), tag: u64, r: Result<(), IoError>) {
    let st = status_of(r);
    if tag & BOUNCE_BIT == 0 {
        done(tag, st);
        return;
    }
    let Some(b) = bounces.get_mut((tag & !BOUNCE_BIT) as usize).and_then(Option::take) else {
        return;
    };
    if let (IoStatus::Success, Some(iovs)) = (st, b.read_into) {
        bdev::dma::copy_to_iovs(iovs.as_slice(), b.buf.as_slice());
    }
    done(b.tag, st);
}

impl<B: DeviceBacking> IoChannel for NvmeChannel<B> {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.refresh();
        let r = match io.io_type {
            IoType::Read => self.rw(io, false),
            IoType::Write => self.rw(io, true),
            IoType::Flush => self.qp.flush_ns(self.nsid, io.tag),
            IoType::WriteZeroes => match u32::try_from(io.num_blocks) {
                Ok(n) if n <= 1 << 16 => self.qp.write_zeroes(self.nsid, io.offset_blocks, n, io.tag),
                _ => Err(SubmitError::TooLarge),
            },
            IoType::Unmap => match u32::try_from(io.num_blocks) {
                Ok(n) => self.qp.deallocate(self.nsid, &[(io.offset_blocks, n)], io.tag),
                Err(_) => Err(SubmitError::TooLarge),
            },
            IoType::Reset => {
                if self.resets.len() == self.resets.capacity() {
                    return Err(QueueFull);
                }
                self.resets.push(io.tag);
                Ok(())
            }
        };
        match r {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(SubmitError::QueueFull) => Err(QueueFull),
            Err(e) => {
                if self.early.len() >= self.early.capacity().max(1) {
                    return Err(QueueFull);
                }
                self.early.push_back((io.tag, submit_status(e)));
                self.in_flight += 1;
                Ok(())
            }
        }
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let mut n = 0;
        while let Some((tag, st)) = self.early.pop_front() {
            done(tag, st);
            n += 1;
        }
        let bounces = &mut self.bounces;
        if !self.resets.is_empty() {
            // A controller reset (blocking this poll until the controller is
            // back, like timeout recovery): queues are re-created here and
            // unfinished I/O is resubmitted; other channels follow on their
            // next poll.
            let mut reaped = 0;
            let r = self.qp.reset_controller(&mut |tag, r| {
                reaped += 1;
                complete(bounces, done, tag, r);
            });
            let st = if r.is_ok() { IoStatus::Success } else { IoStatus::PathError };
            for tag in self.resets.drain(..) {
                done(tag, st);
                n += 1;
            }
            n += reaped;
        }
        n += self.qp.poll(&mut |tag, r| complete(bounces, done, tag, r));
        self.in_flight -= n.min(self.in_flight);
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl<B: DeviceBacking> Drop for NvmeChannel<B> {
    fn drop(&mut self) {
        // Wait (bounded by the driver's timeouts) for what is in flight, so
        // no DMA can land in buffers after the owner got them back.
        let t0 = Instant::now();
        while self.qp.outstanding() > 0 && t0.elapsed() < Duration::from_secs(60) {
            self.qp.poll(&mut |_, _| {});
        }
    }
}
