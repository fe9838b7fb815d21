//! md's want_replacement: a new device is rebuilt for a slot while the
//! device in it keeps serving reads and taking writes, so the array keeps
//! its redundancy throughout. Writes go to both; the rebuild copies the
//! slot's own data (from the old device, or from redundancy where it
//! cannot be read). When the copy is complete the new device takes the
//! slot and the old one is failed and released.
//!
//! On disk, as md records it: the replacement has the slot's role, the
//! `REPLACEMENT` feature bit and a recovery offset in its own superblock.
//! If the old device fails during the copy the replacement simply becomes
//! the slot's recovering device; if the replacement fails it leaves as a
//! faulty device. A stop leaves a replacement in progress recorded so
//! (role, flag, recovery offset); assembling the array again resumes the
//! copy from there, as md does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::superblock::{DevRole, MAX_SECTOR};

use super::meta::{DevRecord, Meta};
use super::shared::{lock, FailedDevice, Shared, SlotState};
use super::{MdEvent, SyncKind};

/// Makes `rec` (a newly opened device) the replacement of slot `slot` and
/// starts copying. The caller holds the meta lock, checked that the slot
/// is in sync, nothing syncs and no replacement runs, and reports the
/// start once it released the lock.
pub(crate) fn start(sh: &Arc<Shared>, meta: &mut Meta, slot: usize, rec: DevRecord) {
    let dev = rec.dev.clone();
    if let Some(r) = meta.sb.dev_roles.get_mut(rec.sb.dev_number as usize) {
        *r = DevRole::Active(slot as u16);
    }
    meta.devices.push(DevRecord { replacing: true, ..rec });
    if let Some(r) = sh.repl.get(slot) {
        r.set_recovered(0);
        r.replace_device(Some(dev));
        r.set_state(SlotState::Recovering);
    }
    sh.bump_generation();
    for (dev, st) in meta.write_superblocks(sh) {
        log::error!("raid {}: cannot write the superblock of {dev}: {st}", sh.name);
    }
    let n = sh.slots.len();
    sh.sync.begin(SyncKind::Recovery, (n + slot) as u64, 0, sh.geometry.member_used_sectors(slot));
    sh.notify(super::shared::ControlMsg::Kick);
}

/// Whether slot `slot` has a replacement being rebuilt.
pub(crate) fn active(sh: &Shared, slot: usize) -> bool {
    sh.repl.get(slot).is_some_and(|r| r.state() == SlotState::Recovering)
}

/// The replacement copy finished: it takes the slot; the old device is
/// failed and released.
pub(crate) fn finish(sh: &Arc<Shared>, slot: usize) {
    let (Some(s), Some(r)) = (sh.slot(slot), sh.repl.get(slot)) else {
        return;
    };
    let mut meta = lock(&sh.meta);
    let new = r.replace_device(None);
    r.set_state(SlotState::Empty);
    let Some(new) = new else {
        return;
    };
    let new_id = new.id;
    let old = s.replace_device(Some(new));
    s.set_recovered(MAX_SECTOR);
    s.set_state(SlotState::InSync);
    sh.bump_generation();
    let old_name = old.as_ref().map(|d| d.name().to_string());
    if let Some(i) = old.and_then(|o| meta.devices.iter().position(|d| d.dev.id == o.id)) {
        let rec = meta.devices.remove(i);
        // md records a device that left the array as faulty.
        if let Some(role) = meta.sb.dev_roles.get_mut(rec.sb.dev_number as usize) {
            *role = DevRole::Faulty;
        }
    }
    if let Some(rec) = meta.devices.iter_mut().find(|d| d.dev.id == new_id) {
        rec.replacing = false;
    }
    sh.sync.set_idle();
    for (dev, st) in meta.write_superblocks(sh) {
        log::error!("raid {}: cannot write the superblock of {dev}: {st}", sh.name);
    }
    drop(meta);
    super::emit(sh, &MdEvent::RecoveryFinished { slot });
    if let Some(device) = old_name {
        super::emit(sh, &MdEvent::DeviceRemoved { device });
    }
}

/// The replacement `failed` of `slot` failed: it leaves as a faulty
/// device (unless it left already, when only the event is owed).
pub(crate) fn failed(sh: &Arc<Shared>, slot: usize, failed: &FailedDevice) {
    let Some(r) = sh.repl.get(slot) else {
        return;
    };
    let mut meta = lock(&sh.meta);
    if r.device().is_none_or(|d| d.id != failed.id) {
        drop(meta);
        super::emit(sh, &MdEvent::DeviceFailed { slot, device: failed.name.clone() });
        return;
    }
    let dev = r.replace_device(None);
    r.set_state(SlotState::Empty);
    sh.bump_generation();
    let Some(dev) = dev else {
        return;
    };
    if let Some(rec) = meta.devices.iter_mut().find(|d| d.dev.id == dev.id) {
        rec.replacing = false;
        let n = rec.sb.dev_number as usize;
        if let Some(role) = meta.sb.dev_roles.get_mut(n) {
            *role = DevRole::Faulty;
        }
    }
    let n = sh.slots.len();
    if sh.sync.kind() == SyncKind::Recovery && sh.sync.slot.load(Ordering::Acquire) == (n + slot) as u64 {
        sh.sync.set_idle();
    }
    for (d, st) in meta.write_superblocks(sh) {
        log::error!("raid {}: cannot write the superblock of {d}: {st}", sh.name);
    }
    drop(meta);
    super::emit(sh, &MdEvent::DeviceFailed { slot, device: dev.name().to_string() });
}

/// The old device of `slot` failed while a replacement was being built:
/// the replacement becomes the slot's recovering device and the copy goes
/// on as a recovery. The caller holds the meta lock and already marked
/// the old device faulty. Returns whether there was a replacement.
pub(crate) fn promote(sh: &Arc<Shared>, meta: &mut Meta, slot: usize) -> bool {
    let (Some(s), Some(r)) = (sh.slot(slot), sh.repl.get(slot)) else {
        return false;
    };
    if r.state() != SlotState::Recovering {
        return false;
    }
    let Some(new) = r.replace_device(None) else {
        return false;
    };
    r.set_state(SlotState::Empty);
    let new_id = new.id;
    s.set_recovered(r.recovered());
    s.replace_device(Some(new));
    s.set_state(SlotState::Recovering);
    sh.bump_generation();
    if let Some(rec) = meta.devices.iter_mut().find(|d| d.dev.id == new_id) {
        rec.replacing = false;
    }
    let n = sh.slots.len();
    if sh.sync.kind() == SyncKind::Recovery && sh.sync.slot.load(Ordering::Acquire) == (n + slot) as u64 {
        sh.sync.slot.store(slot as u64, Ordering::Release);
    }
    true
}

/// Resumes a replacement whose copy stopped (after an error or a pause).
/// Returns whether one was resumed.
pub(crate) fn resume(sh: &Arc<Shared>) -> bool {
    let n = sh.slots.len();
    let Some(slot) = (0..n).find(|&i| active(sh, i)) else {
        return false;
    };
    let from = sh.repl.get(slot).map_or(0, |r| r.recovered());
    sh.sync.begin(SyncKind::Recovery, (n + slot) as u64, from, sh.geometry.member_used_sectors(slot));
    super::emit(sh, &MdEvent::RecoveryStarted { slot });
    true
}
