//! md arrays as xbdev block devices, with the md-style management API:
//! [`md_create`], [`md_assemble`], [`MdArray::run`], [`MdArray::stop`],
//! [`md_examine`], [`MdArray::detail`], [`MdArray::monitor`] and
//! [`MdArray::manage`] with [`ManageCmd`].
//!
//! An array is registered in the bdev registry under its name; its members
//! are opened and claimed (`raid:<name>`). The IO path
//! ([`channel`](self) per reactor) uses one channel per member and no
//! locks besides the per-stripe atomic locks; a control thread per array
//! writes superblocks, activates spares and runs recovery and resync.
//!
//! Dirty tracking: while an array runs its superblocks say "dirty"; a
//! clean stop records it clean. With an internal bitmap ([`intent`](self))
//! a write first sets its chunks' bits on every member, bits of chunks
//! without writes are cleared lazily, and after a crash only the chunks
//! whose bits are set are resynced; without one the whole array is.
//!
//! Re-add: a member that dropped out and comes back (`ManageCmd::AddDisk`
//! or `ManageCmd::ReAdd`, or a stale member at [`md_assemble`]) returns to
//! its old slot when the bitmap covers what it missed (its events are not
//! older than the bitmap's `events_cleared`); its recovery then rebuilds
//! only the chunks whose bits are set, and its superblock records the
//! recovery as md does (`RECOVERY_OFFSET` with `RECOVERY_BITMAP`).

mod channel;
mod control;
mod examine;
mod intent;
mod locks;
mod manage;
mod meta;
mod mirror;
mod replace;
mod scrub;
mod shared;
mod shortcuts;
mod slab;
mod stripe;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bitmap;
#[cfg(test)]
mod tests_fast;
#[cfg(test)]
mod tests_readd;
#[cfg(test)]
mod tests_replace;
#[cfg(test)]
mod tests_scrub;
#[cfg(test)]
mod tests_zero;
mod types;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use self::examine::MdExaminer;
pub use self::shortcuts::{
    md_create_linear, md_create_raid0, md_create_raid1, md_create_raid10, md_create_raid5, md_detail, md_manage,
    md_monitor, md_run, md_stop,
};
pub use self::types::{
    ArrayState, AssembleOptions, BitmapDetail, DiskDetail, DiskState, ManageCmd, MdConfig, MdDetail, MdError, MdEvent,
    Monitor, StripeStats, SyncKind, SyncStats,
};

use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoType, IoTypeSet, Registry, Uuid};

use crate::assemble;
use crate::create::{self, CreateParams};
use crate::geometry::{Geometry, Level};
use crate::offline::{self, Examined};
use crate::parity::Parity;
use crate::superblock::{DevRole, FeatureMap, MAX_SECTOR};

use self::intent::WriteIntent;
use self::locks::StripeLocks;
use self::meta::{BdevMember, DevRecord, Meta};
use self::shared::{lock, ControlMsg, MemberDev, Shared, Slot, SlotState, SyncState};

/// The RAID bdev.
pub struct RaidBdev {
    info: BdevInfo,
    sh: Arc<Shared>,
    stripe_cache: usize,
}

/// Requests in flight per RAID channel.
const CHANNEL_DEPTH: usize = 1024;

impl Bdev for RaidBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(channel::RaidChannel::new(self.sh.clone(), CHANNEL_DEPTH, self.stripe_cache)?))
    }

    /// `{"name", "level", "members", "chunk_kib", "layout"}`: enough to
    /// assemble the array again (`md_assemble` with these members).
    fn config_params(&self) -> Option<String> {
        let meta = lock(&self.sh.meta);
        let members: Vec<String> = self
            .sh
            .slots
            .iter()
            .filter_map(|s| s.device())
            .map(|d| bdev::json_str(d.name()))
            .chain(
                meta.devices
                    .iter()
                    .filter(|r| meta.sb.dev_roles.get(r.sb.dev_number as usize) == Some(&DevRole::Spare))
                    .map(|r| bdev::json_str(r.dev.name())),
            )
            .collect();
        Some(format!(
            r#"{{"name":{},"level":{},"members":[{}],"chunk_kib":{},"layout":{}}}"#,
            bdev::json_str(&self.sh.name),
            bdev::json_str(self.sh.geometry.level().name()),
            members.join(","),
            self.sh.geometry.chunk_sectors() / 2,
            meta.sb.layout
        ))
    }
}

/// A running (or assembled) md array.
pub struct MdArray {
    sh: Arc<Shared>,
    registry: Arc<Registry>,
    bdev: Arc<RaidBdev>,
    running: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Callback receiving every array's events with the array name (the
/// seed's process-wide `xbdev_md_monitor`).
pub type GlobalMonitor = Arc<dyn Fn(&str, &MdEvent) + Send + Sync>;

static GLOBAL_MONITORS: Mutex<Vec<GlobalMonitor>> = Mutex::new(Vec::new());

/// Adds a callback for the events of every array of the process.
pub fn md_monitor_all(cb: GlobalMonitor) {
    lock(&GLOBAL_MONITORS).push(cb);
}

pub(crate) fn emit(sh: &Shared, ev: &MdEvent) {
    let monitors: Vec<Monitor> = lock(&sh.monitors).clone();
    for m in monitors {
        m(ev);
    }
    let global: Vec<GlobalMonitor> = lock(&GLOBAL_MONITORS).clone();
    for m in global {
        m(&sh.name, ev);
    }
}

fn open_member(registry: &Registry, name: &str, array: &str) -> Result<bdev::Desc, MdError> {
    let desc = registry.open(name, true)?;
    desc.claim(&format!("raid:{array}"))?;
    Ok(desc)
}

struct Built {
    shared: Arc<Shared>,
    block_size: u32,
    num_blocks: u64,
}

fn build(name: &str, geometry: Geometry, slots: Vec<Slot>, meta: Meta, block_size: u32) -> Result<Built, MdError> {
    let spb = u64::from(block_size / 512).max(1);
    let chunk = geometry.chunk_sectors();
    let window = if chunk > 0 { chunk.min(128) } else { 128 };
    if !window.is_multiple_of(spb) {
        return Err(MdError::BlockSize(name.to_string()));
    }
    let num_blocks = geometry.array_sectors() / spb;
    let intent = match meta.bitmap.as_ref() {
        Some(b) if geometry.level().redundancy() > 0 => Some(WriteIntent::new(b.layout(), b.daemon_sleep)),
        _ => None,
    };
    let shared = Arc::new(Shared {
        name: name.to_string(),
        geometry,
        block_size,
        spb,
        repl: (0..slots.len()).map(|_| Slot::new(None, SlotState::Empty, 0)).collect(),
        slots,
        generation: AtomicU64::new(1),
        locks: StripeLocks::new(),
        readonly: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        parity: Parity::new(),
        window_sectors: window,
        meta: Mutex::new(meta),
        control: Mutex::new(None),
        sync: SyncState::new(),
        monitors: Mutex::new(Vec::new()),
        stats: shared::OpStats::default(),
        intent,
    });
    Ok(Built { shared, block_size, num_blocks })
}

fn member_dev(desc: bdev::Desc, id: u64, data_offset: u64, array_bs: &mut u32) -> Result<Arc<MemberDev>, MdError> {
    let bs = desc.info().block_size;
    if !(data_offset * 512).is_multiple_of(u64::from(bs)) {
        return Err(MdError::BlockSize(desc.info().name.clone()));
    }
    *array_bs = (*array_bs).max(bs);
    Ok(Arc::new(MemberDev { id, desc, data_offset, block_size: bs }))
}

/// Creates an array over the bdevs `members` (the last `cfg.spares` of
/// them become hot spares), writes md superblocks and starts it as bdev
/// `name` (md_create).
pub fn md_create(
    registry: &Arc<Registry>,
    name: &str,
    level: Level,
    members: &[&str],
    cfg: &MdConfig,
) -> Result<Arc<MdArray>, MdError> {
    let descs: Vec<bdev::Desc> = members.iter().map(|m| open_member(registry, m, name)).collect::<Result<_, _>>()?;
    let sizes: Vec<u64> = descs.iter().map(|d| d.info().size_bytes() / 512).collect();
    let raid_disks = members.len().saturating_sub(cfg.spares);
    let mut p = CreateParams::new(level, u32::try_from(raid_disks).unwrap_or(u32::MAX));
    p.spares = u32::try_from(cfg.spares).unwrap_or(u32::MAX);
    p.layout = cfg.layout;
    if cfg.chunk_kib > 0 {
        p.chunk_sectors = cfg.chunk_kib.saturating_mul(2);
    }
    if let Some(off) = cfg.data_offset_kib {
        p.data_offset = off * 2;
    }
    p.bitmap_chunk = cfg.bitmap_chunk_kib.map(|k| k.saturating_mul(1024));
    p.name = format!("xbdev:{name}");
    let mut created = create::create(&p, &sizes)?;
    for sb in &mut created.superblocks {
        // Running: dirty until a clean stop; not yet in sync unless the
        // caller vouches for the contents.
        sb.resync_offset = 0;
    }
    let mut template = created.superblocks.first().cloned().ok_or(MdError::Busy("no members".into()))?;
    template.dev_number = 0;
    let mut array_bs = 512;
    let mut devices = Vec::with_capacity(descs.len());
    let mut slots = Vec::with_capacity(raid_disks);
    for (i, (desc, sb)) in descs.into_iter().zip(&created.superblocks).enumerate() {
        let dev = member_dev(desc, i as u64 + 1, sb.data_offset, &mut array_bs)?;
        if i < raid_disks {
            slots.push(Slot::new(Some(dev.clone()), SlotState::InSync, MAX_SECTOR));
        }
        devices.push(DevRecord { dev, sb: sb.clone(), replacing: false });
    }
    let meta = Meta { sb: template, devices, bitmap: created.bitmap.clone(), next_dev_id: members.len() as u64 + 1 };
    let built = build(name, created.geometry.clone(), slots, meta, array_bs)?;
    let array = MdArray::new(registry, name, built, cfg.stripe_cache);
    if let (Some(wi), false) = (array.sh.intent.as_ref(), cfg.assume_clean) {
        // Nothing is consistent yet: every chunk needs the initial resync.
        wi.mark_all_needed();
    }
    array.run()?;
    if !cfg.assume_clean && level.redundancy() > 0 {
        array.start_resync(0);
    } else {
        array.mark_in_sync();
    }
    Ok(array)
}

/// Reads the md superblock of a bdev (md_examine).
pub fn md_examine(registry: &Registry, bdev_name: &str) -> Result<Examined, MdError> {
    let desc = registry.open(bdev_name, false)?;
    let m = BdevMember::open(&desc)?;
    Ok(offline::examine(0, &m)?)
}

/// Assembles the array whose members are the bdevs `members` as bdev
/// `name` (md_assemble). A complete array starts at once; a degraded one
/// only with `opts.run_degraded`, otherwise it is returned stopped (start
/// it with [`MdArray::run`]).
pub fn md_assemble(
    registry: &Arc<Registry>,
    name: &str,
    members: &[&str],
    opts: &AssembleOptions,
) -> Result<Arc<MdArray>, MdError> {
    let mut examined = Vec::with_capacity(members.len());
    for m in members {
        examined.push(md_examine(registry, m)?);
    }
    let sbs: Vec<_> = examined.iter().map(|e| e.superblock.clone()).collect();
    let plan = assemble::plan(&sbs)?;
    // Stale members the bitmap (as a fresh member has it) still covers
    // return to their slots with a bitmap-based recovery, as md does.
    let events_cleared = examined
        .iter()
        .find(|e| e.superblock.events == plan.events)
        .and_then(|e| e.bitmap.as_ref())
        .filter(|_| plan.geometry.level().redundancy() > 0)
        .map(|b| b.events_cleared);
    let readds = plan.bitmap_readds(&sbs, events_cleared);
    let mut array_bs = 512;
    let mut devices = Vec::new();
    let mut slot_devs: Vec<Option<(Arc<MemberDev>, Option<u64>)>> = vec![None; plan.slots.len()];
    let mut repl_devs: Vec<(usize, Arc<MemberDev>, u64)> = Vec::new();
    let mut next_id = 1u64;
    let mut bitmap_slots = Vec::new();
    for (i, (m, e)) in members.iter().zip(&examined).enumerate() {
        let readd = readds.iter().find(|&&(_, x)| x == i).map(|&(slot, _)| slot);
        let in_slot = plan.slots.iter().position(|s| s.is_some_and(|s| s.index == i)).or(readd);
        let replacing = plan.replacements.iter().position(|s| s.is_some_and(|s| s.index == i));
        let spare = plan.spares.contains(&i);
        if in_slot.is_none() && replacing.is_none() && !spare {
            continue; // stale or faulty: left alone
        }
        let desc = open_member(registry, m, name)?;
        let dev = member_dev(desc, next_id, e.superblock.data_offset, &mut array_bs)?;
        next_id += 1;
        if let Some(s) = in_slot {
            let recovered = match readd {
                Some(_) => Some(0),
                None => plan.slots.get(s).and_then(|x| x.and_then(|x| x.recovered_to)),
            };
            // A recovery recorded as bitmap-based (md's
            // MD_FEATURE_RECOVERY_BITMAP) or a stale member taken back.
            let bitmap_sync = readd.is_some()
                || (recovered.is_some() && e.superblock.feature_map.contains(FeatureMap::RECOVERY_BITMAP));
            if bitmap_sync {
                bitmap_slots.push(s);
            }
            if let Some(sd) = slot_devs.get_mut(s) {
                *sd = Some((dev.clone(), recovered));
            }
        }
        if let Some(s) = replacing {
            let recovered = plan.replacements.get(s).and_then(|x| x.and_then(|x| x.recovered_to));
            repl_devs.push((s, dev.clone(), recovered.unwrap_or(MAX_SECTOR)));
        }
        devices.push(DevRecord { dev, sb: e.superblock.clone(), replacing: replacing.is_some() });
    }
    let slots: Vec<Slot> = slot_devs
        .into_iter()
        .map(|sd| match sd {
            Some((dev, None)) => Slot::new(Some(dev), SlotState::InSync, MAX_SECTOR),
            Some((dev, Some(r))) => Slot::new(Some(dev), SlotState::Recovering, r),
            None => Slot::new(None, SlotState::Empty, 0),
        })
        .collect();
    let mut template = plan.superblock.clone();
    // Roles of devices we did not take (stale ones) no longer count.
    for (i, sb) in sbs.iter().enumerate() {
        if let Some(r) = template.dev_roles.get_mut(sb.dev_number as usize) {
            if let Some(&(slot, _)) = readds.iter().find(|&&(_, x)| x == i) {
                *r = DevRole::Active(slot as u16);
            } else if plan.stale.contains(&i) {
                *r = DevRole::Faulty;
            }
        }
    }
    let resync_from = template.resync_offset;
    // The bitmap header as a fresh member has it (a stale one's is old).
    let bitmap = examined
        .iter()
        .find(|e| e.superblock.events == plan.events)
        .and_then(|e| e.bitmap.clone())
        .or_else(|| examined.iter().find_map(|e| e.bitmap.clone()));
    let meta = Meta { sb: template, devices, bitmap, next_dev_id: next_id };
    let built = build(name, plan.geometry.clone(), slots, meta, array_bs)?;
    for s in bitmap_slots {
        if let (Some(slot), true) = (built.shared.slot(s), built.shared.intent.is_some()) {
            slot.set_bitmap_sync(true);
        }
    }
    // Replacements interrupted by a stop resume where their copy got to
    // (the control thread picks them up when the array runs).
    for (s, dev, recovered) in repl_devs {
        if let Some(r) = built.shared.repl.get(s) {
            r.replace_device(Some(dev));
            r.set_recovered(recovered.min(built.shared.geometry.member_used_sectors(s)));
            r.set_state(SlotState::Recovering);
        }
    }
    built.shared.bump_generation();
    let array = MdArray::new(registry, name, built, opts.stripe_cache);
    array.load_bitmap(resync_from != MAX_SECTOR);
    // Members coming back through the bitmap count as present for the
    // start decision (md starts them in their roles).
    if plan.degraded() > readds.len() && !opts.run_degraded {
        return Ok(array);
    }
    array.run()?;
    if resync_from != MAX_SECTOR && plan.geometry.level().redundancy() > 0 {
        array.start_resync(resync_from);
    }
    Ok(array)
}

impl MdArray {
    fn new(registry: &Arc<Registry>, name: &str, built: Built, stripe_cache: usize) -> Arc<MdArray> {
        let mut info = BdevInfo::new(
            name,
            "raid",
            built.block_size,
            built.num_blocks,
            IoTypeSet::of(&[
                IoType::Read,
                IoType::Write,
                IoType::Flush,
                IoType::Reset,
                IoType::WriteZeroes,
                IoType::Unmap,
            ]),
        );
        // Unmapped blocks read back as zeroes on every level: unmap goes
        // down only to members that guarantee it and is zeroing elsewhere
        // (always on raid4/5/6, where parity must cover it).
        info.unmap_zeroes = true;
        {
            let meta = lock(&built.shared.meta);
            info.uuid = Uuid(meta.sb.set_uuid);
            info.ns_id.uuid = Some(info.uuid);
            info.volatile_cache = meta.devices.iter().any(|d| d.dev.desc.info().volatile_cache);
        }
        if let Geometry::Raid0(_) | Geometry::Striped(_) | Geometry::Raid10(_) = built.shared.geometry {
            info.optimal_io_boundary =
                u32::try_from(built.shared.geometry.chunk_sectors() / built.shared.spb).unwrap_or(0);
        }
        let bdev = Arc::new(RaidBdev { info, sh: built.shared.clone(), stripe_cache: stripe_cache.max(1) });
        Arc::new(MdArray {
            sh: built.shared,
            registry: registry.clone(),
            bdev,
            running: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// The array (and bdev) name.
    pub fn name(&self) -> &str {
        &self.sh.name
    }

    /// The RAID bdev.
    pub fn bdev(&self) -> Arc<dyn Bdev> {
        self.bdev.clone()
    }

    /// Whether the array runs.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Starts an assembled array: marks it dirty on its members, registers
    /// the bdev and starts the control thread (md_run).
    pub fn run(&self) -> Result<(), MdError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let present = self.sh.in_sync();
        if !assemble::can_run(&self.sh.geometry, &present) {
            self.running.store(false, Ordering::Release);
            return Err(MdError::Busy("too many members missing to run".into()));
        }
        {
            let mut meta = lock(&self.sh.meta);
            if meta.sb.resync_offset == MAX_SECTOR {
                meta.sb.resync_offset = 0;
            }
            if let Some((device, status)) = meta.write_superblocks(&self.sh).into_iter().next() {
                self.running.store(false, Ordering::Release);
                return Err(MdError::SuperblockWrite { device, status });
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        *lock(&self.sh.control) = Some(tx);
        let sh = self.sh.clone();
        let handle = std::thread::Builder::new()
            .name(format!("md-{}", self.sh.name))
            .spawn(move || control::run(sh, rx))
            .map_err(|e| MdError::Bdev(BdevError::io("spawn the raid control thread", e)))?;
        *lock(&self.thread) = Some(handle);
        if let Err(e) = self.registry.register(self.bdev.clone()) {
            self.shutdown_thread();
            self.running.store(false, Ordering::Release);
            return Err(e.into());
        }
        Ok(())
    }

    fn shutdown_thread(&self) {
        self.sh.notify(ControlMsg::Stop);
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
        *lock(&self.sh.control) = None;
    }

    fn start_resync(&self, from: u64) {
        let end = self.sh.geometry.resync_sectors();
        lock(&self.sh.meta).sb.resync_offset = from.min(end);
        self.sh.sync.begin(SyncKind::Resync, 0, from.min(end), end);
        emit(&self.sh, &MdEvent::ResyncStarted);
        self.sh.notify(ControlMsg::Kick);
    }

    fn mark_in_sync(&self) {
        // Nothing to resync: the superblock stays dirty only while running.
    }

    /// Stops the array: unregisters the bdev, stops background work,
    /// records a clean shutdown on the members and releases them
    /// (md_stop).
    pub fn stop(&self) -> Result<(), MdError> {
        if !self.running.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let _ = self.registry.unregister(&self.sh.name);
        self.shutdown_thread();
        let mut meta = lock(&self.sh.meta);
        let resync_pending = self.sh.sync.kind() == SyncKind::Resync;
        meta.sb.resync_offset = if resync_pending { self.sh.sync.position.load(Ordering::Acquire) } else { MAX_SECTOR };
        self.sh.sync.set_idle();
        if let Some(wi) = self.sh.intent.as_ref() {
            // md clears the bitmap on a clean stop of a whole array: the
            // members are flushed, then the clear bits written.
            let whole = self.sh.slots.iter().all(|s| s.state() == SlotState::InSync);
            if whole && !resync_pending {
                wi.daemon_pass(true);
                meta.write_bitmap(&self.sh, &mut Vec::new(), true);
            }
        }
        // A replacement in progress keeps its role, flag and recovery
        // offset on disk (md's want_replacement survives a stop): the next
        // assembly resumes the copy.
        let errors = meta.write_superblocks(&self.sh);
        for slot in self.sh.slots.iter().chain(&self.sh.repl) {
            slot.replace_device(None);
        }
        meta.devices.clear();
        self.sh.bump_generation();
        match errors.into_iter().next() {
            Some((device, status)) => Err(MdError::SuperblockWrite { device, status }),
            None => Ok(()),
        }
    }

    /// Leaves like a crash: no superblock or bitmap is written, the
    /// members are released as they are.
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        if !self.running.swap(false, Ordering::AcqRel) {
            return;
        }
        let _ = self.registry.unregister(&self.sh.name);
        self.shutdown_thread();
        self.sh.sync.set_idle();
        let mut meta = lock(&self.sh.meta);
        for slot in &self.sh.slots {
            slot.replace_device(None);
        }
        meta.devices.clear();
        self.sh.bump_generation();
    }

    /// Loads the bits of the bitmap from the members: after an unclean
    /// stop (`dirty`) the regions they cover need a resync; a stale bitmap
    /// or one that cannot be read means every region does.
    fn load_bitmap(&self, dirty: bool) {
        let Some(wi) = self.sh.intent.as_ref() else {
            return;
        };
        let meta = lock(&self.sh.meta);
        let stale = meta.bitmap.as_ref().is_some_and(|b| b.state.is_stale());
        match meta.read_bitmap_bits(&self.sh) {
            Some(bits) if !stale => {
                for bit in wi.layout().set_bits(&bits) {
                    if dirty {
                        wi.mark_needed(bit);
                    } else {
                        wi.mark_ondisk(bit);
                    }
                }
            }
            _ if dirty || stale => wi.mark_all_needed(),
            _ => {}
        }
    }

    /// Sets the bitmap daemon period (md's bitmap `time_base`, the
    /// header's `daemon_sleep`): bits of regions without writes are
    /// cleared after one to two periods.
    pub fn set_bitmap_daemon_sleep(&self, period: std::time::Duration) {
        if let Some(wi) = self.sh.intent.as_ref() {
            let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
            wi.daemon_ms.store(ms, Ordering::Release);
            self.sh.notify(ControlMsg::Kick);
        }
    }

    /// Counters of the background synchronisation since the array was
    /// built.
    pub fn sync_stats(&self) -> SyncStats {
        let s = &self.sh.sync;
        SyncStats {
            resynced_sectors: s.resynced.load(Ordering::Acquire),
            skipped_sectors: s.skipped.load(Ordering::Acquire),
            recovered_sectors: s.recovered.load(Ordering::Acquire),
            recovery_skipped_sectors: s.recovery_skipped.load(Ordering::Acquire),
        }
    }

    /// Stripe operation counters (raid4/5/6).
    pub fn stripe_stats(&self) -> StripeStats {
        let s = &self.sh.stats;
        StripeStats {
            full: s.full.load(Ordering::Relaxed),
            rmw: s.rmw.load(Ordering::Relaxed),
            rcw: s.rcw.load(Ordering::Relaxed),
            reconstruct: s.reconstruct.load(Ordering::Relaxed),
            degraded_reads: s.degraded_reads.load(Ordering::Relaxed),
        }
    }

    /// Adds an event callback (md_monitor).
    pub fn monitor(&self, cb: Monitor) {
        lock(&self.sh.monitors).push(cb);
    }
}

impl Drop for MdArray {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop();
        }
    }
}
