//! State shared by an array's channels and its control thread.
//!
//! The IO path reads only atomics: each slot's state and recovery point, a
//! generation counter that changes whenever a slot gets another device, and
//! the read-only flag. Everything else (superblocks, spares, rebuild
//! bookkeeping) sits behind a mutex that only the control plane takes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bdev::Desc;

use crate::assemble::can_run;
use crate::geometry::Geometry;
use crate::parity::Parity;

use super::locks::StripeLocks;
use super::meta::Meta;

/// State of one slot (raid-disk role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Holds current data everywhere.
    InSync = 0,
    /// Being rebuilt: valid below the recovery point, written everywhere.
    Recovering = 1,
    /// Failed: neither read nor written.
    Faulty = 2,
    /// No device.
    Empty = 3,
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            0 => SlotState::InSync,
            1 => SlotState::Recovering,
            2 => SlotState::Faulty,
            _ => SlotState::Empty,
        }
    }
}

/// A member device in a slot.
pub(crate) struct MemberDev {
    /// Unique among the array's devices ever used.
    pub id: u64,
    /// Open, claimed descriptor.
    pub desc: Desc,
    /// Data offset in 512-byte sectors.
    pub data_offset: u64,
    /// Device block size in bytes.
    pub block_size: u32,
}

impl MemberDev {
    pub(crate) fn name(&self) -> &str {
        &self.desc.info().name
    }
}

/// One slot.
pub(crate) struct Slot {
    state: AtomicU8,
    /// Member sectors (from the data offset) valid on a recovering device.
    recovered: AtomicU64,
    /// A recovering device that was a member before (md's saved_raid_disk
    /// with a bitmap): only the chunks the write-intent bitmap has set
    /// are rebuilt.
    bitmap_sync: AtomicBool,
    dev: Mutex<Option<Arc<MemberDev>>>,
}

impl Slot {
    pub(crate) fn new(dev: Option<Arc<MemberDev>>, state: SlotState, recovered: u64) -> Slot {
        Slot {
            state: AtomicU8::new(state as u8),
            recovered: AtomicU64::new(recovered),
            bitmap_sync: AtomicBool::new(false),
            dev: Mutex::new(dev),
        }
    }

    /// Whether the recovery of this slot is driven by the bitmap.
    pub(crate) fn bitmap_sync(&self) -> bool {
        self.bitmap_sync.load(Ordering::Acquire)
    }

    pub(crate) fn set_bitmap_sync(&self, v: bool) {
        self.bitmap_sync.store(v, Ordering::Release);
    }

    pub(crate) fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub(crate) fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Acquire)
    }

    pub(crate) fn set_recovered(&self, v: u64) {
        self.recovered.store(v, Ordering::Release);
    }

    pub(crate) fn device(&self) -> Option<Arc<MemberDev>> {
        lock(&self.dev).clone()
    }

    pub(crate) fn replace_device(&self, dev: Option<Arc<MemberDev>>) -> Option<Arc<MemberDev>> {
        std::mem::replace(&mut *lock(&self.dev), dev)
    }

    /// Whether member sectors `[sector, sector + n)` can be read.
    pub(crate) fn readable(&self, sector: u64, n: u64) -> bool {
        match self.state() {
            SlotState::InSync => true,
            SlotState::Recovering => sector.saturating_add(n) <= self.recovered(),
            _ => false,
        }
    }

    /// Whether writes go to this slot.
    pub(crate) fn writable(&self) -> bool {
        matches!(self.state(), SlotState::InSync | SlotState::Recovering)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Progress of the background resync or recovery.
pub(crate) struct SyncState {
    kind: AtomicU8,
    /// Slot being recovered.
    pub slot: AtomicU64,
    /// Next sector to process (member sectors for recovery and parity
    /// resync, array sectors for mirror resync).
    pub position: AtomicU64,
    /// End of the range.
    pub end: AtomicU64,
    /// Sectors processed since the start (for the speed).
    pub done_sectors: AtomicU64,
    pub started: Mutex<Option<std::time::Instant>>,
    /// Limit in KiB/s (0: none).
    pub speed_kib: AtomicU64,
    pub paused: AtomicBool,
    /// Activate spares and recover automatically.
    pub auto: AtomicBool,
    /// Sectors resynced since the array was built.
    pub resynced: AtomicU64,
    /// Sectors a resync skipped because their bitmap bits were clear.
    pub skipped: AtomicU64,
    /// Member sectors rebuilt by recoveries since the array was built.
    pub recovered: AtomicU64,
    /// Member sectors a bitmap-based recovery skipped (bits clear).
    pub recovery_skipped: AtomicU64,
    /// Mismatched sectors found by the last check or repair (md's
    /// mismatch_cnt).
    pub mismatches: AtomicU64,
}

impl SyncState {
    pub(crate) fn new() -> SyncState {
        SyncState {
            kind: AtomicU8::new(0),
            slot: AtomicU64::new(0),
            position: AtomicU64::new(0),
            end: AtomicU64::new(0),
            done_sectors: AtomicU64::new(0),
            started: Mutex::new(None),
            speed_kib: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            auto: AtomicBool::new(true),
            resynced: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            recovery_skipped: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
        }
    }

    pub(crate) fn kind(&self) -> super::SyncKind {
        match self.kind.load(Ordering::Acquire) {
            1 => super::SyncKind::Resync,
            2 => super::SyncKind::Recovery,
            3 => super::SyncKind::Check,
            4 => super::SyncKind::Repair,
            _ => super::SyncKind::Idle,
        }
    }

    pub(crate) fn begin(&self, kind: super::SyncKind, slot: u64, from: u64, end: u64) {
        self.slot.store(slot, Ordering::Release);
        self.position.store(from, Ordering::Release);
        self.end.store(end, Ordering::Release);
        self.done_sectors.store(0, Ordering::Release);
        *lock(&self.started) = Some(std::time::Instant::now());
        let k = match kind {
            super::SyncKind::Idle => 0,
            super::SyncKind::Resync => 1,
            super::SyncKind::Recovery => 2,
            super::SyncKind::Check => 3,
            super::SyncKind::Repair => 4,
        };
        self.kind.store(k, Ordering::Release);
    }

    pub(crate) fn set_idle(&self) {
        self.kind.store(0, Ordering::Release);
        *lock(&self.started) = None;
    }
}

/// How stripe operations were carried out (counters).
#[derive(Default)]
pub(crate) struct OpStats {
    pub full: AtomicU64,
    pub rmw: AtomicU64,
    pub rcw: AtomicU64,
    pub reconstruct: AtomicU64,
    pub degraded_reads: AtomicU64,
}

/// Who failed, for the control thread.
pub(crate) struct FailedDevice {
    /// [`MemberDev::id`].
    pub id: u64,
    /// The bdev's name, for the event.
    pub name: String,
}

impl FailedDevice {
    fn of(dev: Option<Arc<MemberDev>>) -> Option<FailedDevice> {
        dev.map(|d| FailedDevice { id: d.id, name: d.name().to_string() })
    }
}

/// Messages to the control thread.
pub(crate) enum ControlMsg {
    /// The device of a slot (or of a replacement, `slot >= slots.len()`)
    /// failed during IO. Its identity travels with the message (not the
    /// device, which would stay claimed): by the time the control thread
    /// handles it, the device may have been removed, or removed and added
    /// back as a new device.
    MemberFailed { slot: usize, dev: FailedDevice },
    /// Re-examine what to do (spares, rebuild).
    Kick,
    /// Leave.
    Stop,
}

/// Everything an array's channels share.
pub(crate) struct Shared {
    pub name: String,
    pub geometry: Geometry,
    /// Array block size in bytes.
    pub block_size: u32,
    /// 512-byte sectors per array block.
    pub spb: u64,
    pub slots: Vec<Slot>,
    /// Replacements being rebuilt (md's want_replacement), one per slot;
    /// in IO and sync code they are members `slots.len() + slot`.
    pub repl: Vec<Slot>,
    /// Changes whenever a slot gets a different device.
    pub generation: AtomicU64,
    pub locks: StripeLocks,
    pub readonly: AtomicBool,
    /// Set once the array lost too many members.
    pub failed: AtomicBool,
    pub parity: Parity,
    /// Rows per stripe operation (sectors), a power of two dividing the
    /// chunk.
    pub window_sectors: u64,
    pub meta: Mutex<Meta>,
    pub control: Mutex<Option<std::sync::mpsc::Sender<ControlMsg>>>,
    pub sync: SyncState,
    pub monitors: Mutex<Vec<super::Monitor>>,
    pub stats: OpStats,
    /// The write-intent bitmap, when the array has one.
    pub intent: Option<super::intent::WriteIntent>,
}

impl Shared {
    pub(crate) fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i)
    }

    /// A slot (`i < slots.len()`) or the replacement of slot
    /// `i - slots.len()`.
    pub(crate) fn slot_any(&self, i: usize) -> Option<&Slot> {
        match i.checked_sub(self.slots.len()) {
            None => self.slots.get(i),
            Some(r) => self.repl.get(r),
        }
    }

    /// The slot whose data member `i` holds (itself, or the slot a
    /// replacement replaces).
    pub(crate) fn source_slot(&self, i: usize) -> usize {
        i.checked_sub(self.slots.len()).unwrap_or(i)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn notify(&self, msg: ControlMsg) {
        if let Some(tx) = lock(&self.control).as_ref() {
            let _ = tx.send(msg);
        }
    }

    /// Slots whose devices hold complete data.
    pub(crate) fn in_sync(&self) -> Vec<bool> {
        self.slots.iter().map(|s| s.state() == SlotState::InSync).collect()
    }

    /// Marks slot `i` faulty after an IO error. Refuses (returns false)
    /// when the array could not run without it, as md keeps its last
    /// working devices.
    pub(crate) fn fail_member(&self, i: usize) -> bool {
        if i >= self.slots.len() {
            // A replacement that fails leaves; the array never needs it.
            let Some(r) = self.slot_any(i) else {
                return false;
            };
            let prev = r.state();
            if prev == SlotState::Recovering
                && r.state
                    .compare_exchange(prev as u8, SlotState::Faulty as u8, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                log::warn!("raid {}: replacement for slot {} failed", self.name, i - self.slots.len());
                self.bump_generation();
                if let Some(dev) = FailedDevice::of(r.device()) {
                    self.notify(ControlMsg::MemberFailed { slot: i, dev });
                }
            }
            return true;
        }
        let Some(slot) = self.slot(i) else {
            return false;
        };
        let prev = slot.state();
        if !matches!(prev, SlotState::InSync | SlotState::Recovering) {
            return true;
        }
        if prev == SlotState::InSync {
            let mut present = self.in_sync();
            if let Some(p) = present.get_mut(i) {
                *p = false;
            }
            if !can_run(&self.geometry, &present) {
                return false;
            }
        }
        if slot.state.compare_exchange(prev as u8, SlotState::Faulty as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            log::warn!("raid {}: member in slot {i} failed", self.name);
            self.bump_generation();
            if let Some(dev) = FailedDevice::of(slot.device()) {
                self.notify(ControlMsg::MemberFailed { slot: i, dev });
            }
        }
        true
    }

    /// Lock key of a parity stripe window.
    pub(crate) fn stripe_key(&self, stripe: u64, window_start: u64) -> u64 {
        let per = (self.geometry.chunk_sectors() / self.window_sectors).max(1);
        stripe.wrapping_mul(per).wrapping_add(window_start / self.window_sectors)
    }

    /// Lock key of a mirror region (array sectors).
    pub(crate) fn region_key(&self, lba: u64) -> u64 {
        lba / self.window_sectors
    }
}
