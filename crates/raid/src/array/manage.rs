//! md_detail and md_manage of a running array.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::assemble::{readd_slot, ReAddRefusal};
use crate::superblock::{format_uuid, DevRole};
use crate::{create, offline};

use super::meta::{BdevMember, DevRecord, Meta};
use super::replace;
use super::shared::{lock, ControlMsg, MemberDev, Shared, SlotState};
use super::{
    emit, member_dev, open_member, ArrayState, BitmapDetail, DiskDetail, DiskState, ManageCmd, MdArray, MdDetail,
    MdError, MdEvent, SyncKind,
};

impl MdArray {
    /// The array's state and members (md_detail).
    pub fn detail(&self) -> MdDetail {
        let meta = lock(&self.sh.meta);
        let sh = &self.sh;
        let mut disks = Vec::new();
        let mut failed = 0;
        let mut spares = 0;
        for rec in &meta.devices {
            let role = meta.sb.dev_roles.get(rec.sb.dev_number as usize).copied();
            let (state, role_text) = match role {
                Some(DevRole::Active(s)) if rec.replacing => (DiskState::Sync, format!("replacement {s}")),
                Some(DevRole::Active(s)) => match sh.slot(s as usize).map(|x| x.state()) {
                    Some(SlotState::InSync) => (DiskState::Active, format!("active {s}")),
                    Some(SlotState::Recovering) => (DiskState::Sync, format!("rebuilding {s}")),
                    _ => (DiskState::Faulty, "faulty".to_string()),
                },
                Some(DevRole::Faulty) => (DiskState::Faulty, "faulty".to_string()),
                _ => (DiskState::Spare, "spare".to_string()),
            };
            match state {
                DiskState::Faulty => failed += 1,
                DiskState::Spare => spares += 1,
                _ => {}
            }
            disks.push(DiskDetail {
                number: rec.sb.dev_number,
                name: rec.dev.name().to_string(),
                state,
                size_kib: rec.sb.data_size / 2,
                role: role_text,
            });
        }
        for (i, slot) in sh.slots.iter().enumerate() {
            if slot.device().is_none() {
                disks.push(DiskDetail {
                    number: u32::MAX,
                    name: String::new(),
                    state: DiskState::Removed,
                    size_kib: 0,
                    role: format!("removed {i}"),
                });
            }
        }
        let active = sh.slots.iter().filter(|s| s.state() == SlotState::InSync).count();
        let working =
            disks.iter().filter(|d| matches!(d.state, DiskState::Active | DiskState::Sync | DiskState::Spare)).count();
        let kind = sh.sync.kind();
        let paused = sh.sync.paused.load(Ordering::Acquire);
        let (pos, end) = (sh.sync.position.load(Ordering::Acquire), sh.sync.end.load(Ordering::Acquire));
        let progress = if kind == SyncKind::Idle || end == 0 { 0.0 } else { (pos as f64 * 100.0 / end as f64) as f32 };
        let speed = match *lock(&sh.sync.started) {
            Some(t) if kind != SyncKind::Idle => {
                let secs = t.elapsed().as_secs_f64().max(1e-3);
                (sh.sync.done_sectors.load(Ordering::Acquire) as f64 / 2.0 / secs) as u64
            }
            _ => 0,
        };
        let degraded = active < sh.slots.len();
        let state = if sh.failed.load(Ordering::Acquire) {
            ArrayState::Failed
        } else if sh.readonly.load(Ordering::Acquire) {
            ArrayState::Readonly
        } else if kind == SyncKind::Recovery {
            ArrayState::Recovering
        } else if kind == SyncKind::Resync {
            ArrayState::Resyncing
        } else if degraded {
            ArrayState::Degraded
        } else if self.is_running() {
            ArrayState::Active
        } else {
            ArrayState::Clean
        };
        let status = match kind {
            SyncKind::Idle => "idle",
            SyncKind::Resync => "resync",
            SyncKind::Recovery => "recovery",
            SyncKind::Check => "check",
            SyncKind::Repair => "repair",
        };
        MdDetail {
            level: sh.geometry.level(),
            raid_disks: sh.slots.len(),
            active_disks: active,
            working_disks: working,
            failed_disks: failed,
            spare_disks: spares,
            size_kib: sh.geometry.array_sectors() / 2,
            chunk_kib: sh.geometry.chunk_sectors() / 2,
            state,
            uuid: format_uuid(&meta.sb.set_uuid),
            degraded,
            resync_status: if paused && kind != SyncKind::Idle { format!("{status} (paused)") } else { status.into() },
            resync_progress: progress,
            resync_speed: speed,
            events: meta.sb.events,
            mismatch_cnt: sh.sync.mismatches.load(Ordering::Acquire),
            disks,
            bitmap: sh.intent.as_ref().map(|wi| BitmapDetail {
                chunk_kib: wi.layout().chunk_sectors / 2,
                bits: wi.layout().bits(),
                dirty: wi.dirty_bits(),
                daemon_ms: wi.daemon_ms.load(Ordering::Acquire),
            }),
        }
    }

    fn slot_of(&self, name: &str) -> Option<usize> {
        self.sh.slots.iter().position(|s| s.device().is_some_and(|d| d.name() == name))
    }

    /// Runs a management command (md_manage).
    pub fn manage(&self, cmd: ManageCmd) -> Result<(), MdError> {
        let sh = &self.sh;
        match cmd {
            ManageCmd::AddDisk(dev) => {
                match self.readd(&dev) {
                    Ok(()) => {}
                    // md's add falls back to a new device when a re-add
                    // cannot be proven safe.
                    Err(MdError::NotReAddable { reason, .. }) => {
                        log::info!("raid {}: '{dev}' added as a new device: {reason}", sh.name);
                        self.add_device(&dev, None)?;
                    }
                    Err(e) => return Err(e),
                }
                sh.notify(ControlMsg::Kick);
                Ok(())
            }
            ManageCmd::ReAdd(dev) => {
                self.readd(&dev)?;
                sh.notify(ControlMsg::Kick);
                Ok(())
            }
            ManageCmd::AddSpare(dev) => {
                self.add_device(&dev, None)?;
                sh.notify(ControlMsg::Kick);
                Ok(())
            }
            ManageCmd::RemoveDisk(dev) | ManageCmd::RemoveSpare(dev) => self.remove(&dev),
            ManageCmd::ReplaceDisk { old, new } => {
                let slot = self.slot_of(&old).ok_or_else(|| MdError::NoSuchDevice(old.clone()))?;
                if sh.geometry.level().redundancy() == 0 {
                    return Err(MdError::Busy(format!("{} has no redundancy to rebuild from", sh.geometry.level())));
                }
                if sh.slot(slot).is_none_or(|s| s.state() != SlotState::InSync) {
                    return Err(MdError::Busy(format!("'{old}' is not an in-sync member")));
                }
                self.add_device(&new, Some(slot))
            }
            ManageCmd::SetFaulty(dev) => {
                let slot = self.slot_of(&dev).ok_or_else(|| MdError::NoSuchDevice(dev.clone()))?;
                if sh.fail_member(slot) {
                    Ok(())
                } else {
                    Err(MdError::Busy(format!("'{dev}' cannot be failed: the array needs it")))
                }
            }
            ManageCmd::SetReadonly => {
                sh.readonly.store(true, Ordering::Release);
                Ok(())
            }
            ManageCmd::SetReadwrite => {
                sh.readonly.store(false, Ordering::Release);
                Ok(())
            }
            ManageCmd::StartRebuild => {
                sh.sync.paused.store(false, Ordering::Release);
                sh.sync.auto.store(true, Ordering::Release);
                sh.notify(ControlMsg::Kick);
                Ok(())
            }
            ManageCmd::StopRebuild => {
                sh.sync.paused.store(true, Ordering::Release);
                Ok(())
            }
            ManageCmd::SetSyncSpeed(kib) => {
                sh.sync.speed_kib.store(kib, Ordering::Release);
                Ok(())
            }
            ManageCmd::Check => self.scrub(SyncKind::Check),
            ManageCmd::Repair => self.scrub(SyncKind::Repair),
        }
    }

    /// Starts a check or repair over the whole sync range.
    fn scrub(&self, kind: SyncKind) -> Result<(), MdError> {
        let sh = &self.sh;
        if sh.geometry.level().redundancy() == 0 {
            return Err(MdError::Busy(format!("{} has no redundancy to check", sh.geometry.level())));
        }
        // The meta lock orders this against the control thread starting a
        // recovery.
        let _meta = lock(&sh.meta);
        if sh.sync.kind() != SyncKind::Idle {
            return Err(MdError::Busy("a resync or recovery is running".into()));
        }
        if sh.slots.iter().any(|s| s.state() != SlotState::InSync) {
            return Err(MdError::Busy("the array is degraded".into()));
        }
        sh.sync.mismatches.store(0, Ordering::Release);
        sh.sync.begin(kind, 0, 0, sh.geometry.resync_sectors());
        sh.notify(ControlMsg::Kick);
        Ok(())
    }

    /// Puts `dev`, a former member, back into its old slot with a recovery
    /// driven by the write-intent bitmap (md's re-add: the kernel keeps
    /// the device's role as `saved_raid_disk` when its events are not
    /// older than the bitmap's `events_cleared`). The device keeps its
    /// device number and UUID.
    fn readd(&self, dev: &str) -> Result<(), MdError> {
        let sh = &self.sh;
        let refused = |reason| MdError::NotReAddable { device: dev.to_string(), reason };
        if lock(&sh.meta).devices.iter().any(|d| d.dev.name() == dev) {
            return Err(MdError::Busy(format!("'{dev}' is still in the array; remove it first")));
        }
        let desc = open_member(&self.registry, dev, &sh.name)?;
        let dev_sb = match BdevMember::open(&desc).map(|m| offline::examine(0, &m)) {
            Ok(Ok(e)) => e.superblock,
            _ => return Err(refused(ReAddRefusal::NoSuperblock)),
        };
        let mut meta = lock(&sh.meta);
        let events_cleared = meta.bitmap.as_ref().filter(|_| sh.intent.is_some()).map(|b| b.events_cleared);
        let slot = readd_slot(&meta.sb, events_cleared, &dev_sb).map_err(refused)?;
        let s = sh.slot(slot).ok_or(refused(ReAddRefusal::NotActive))?;
        if s.state() != SlotState::Empty || s.device().is_some() || replace::active(sh, slot) {
            return Err(refused(ReAddRefusal::RoleTaken(slot)));
        }
        let number = dev_sb.dev_number;
        if number >= meta.sb.max_dev() || meta.devices.iter().any(|d| d.sb.dev_number == number) {
            return Err(refused(ReAddRefusal::DeviceNumberInUse(number)));
        }
        let need = sh.geometry.member_used_sectors(slot);
        let have = (desc.info().size_bytes() / 512).saturating_sub(dev_sb.data_offset).min(dev_sb.data_size);
        if have < need {
            return Err(refused(ReAddRefusal::TooSmall { have, need }));
        }
        let member = joining_member(sh, &mut meta, desc, dev_sb.data_offset, dev)?;
        if let Some(r) = meta.sb.dev_roles.get_mut(number as usize) {
            *r = DevRole::Active(slot as u16);
        }
        meta.devices.push(DevRecord { dev: member.clone(), sb: dev_sb, replacing: false });
        // A recovery of the slot's previous device stops: this one starts
        // from the beginning.
        if sh.sync.kind() == SyncKind::Recovery && sh.sync.slot.load(Ordering::Acquire) == slot as u64 {
            sh.sync.set_idle();
        }
        s.set_recovered(0);
        s.set_bitmap_sync(true);
        s.replace_device(Some(member));
        s.set_state(SlotState::Recovering);
        sh.bump_generation();
        let errors = meta.write_superblocks(sh);
        drop(meta);
        emit(sh, &MdEvent::DeviceAdded { device: dev.to_string() });
        match errors.into_iter().next() {
            Some((device, status)) => Err(MdError::SuperblockWrite { device, status }),
            None => Ok(()),
        }
    }

    /// Adds `dev` as a spare, or as the replacement of slot `replace`.
    fn add_device(&self, dev: &str, replace: Option<usize>) -> Result<(), MdError> {
        let sh = &self.sh;
        let desc = open_member(&self.registry, dev, &sh.name)?;
        let mut meta = lock(&sh.meta);
        if replace.is_some() {
            // Checked under the lock the control thread takes to start work.
            if sh.sync.kind() != SyncKind::Idle {
                return Err(MdError::Busy("a resync or recovery is running".into()));
            }
            if (0..sh.slots.len()).any(|i| replace::active(sh, i)) {
                return Err(MdError::Busy("a replacement is running".into()));
            }
        }
        let dev_number = meta.free_dev_number().ok_or_else(|| MdError::Busy("no free device number".into()))?;
        let mut sb = meta.sb.clone();
        let sectors = desc.info().size_bytes() / 512;
        sb.dev_number = dev_number;
        sb.device_uuid = create::random_uuid();
        sb.data_size = sectors.saturating_sub(sb.data_offset);
        sb.recovery_offset = 0;
        let need = sh.geometry.member_used_sectors(0);
        if sb.data_size < need {
            return Err(MdError::Busy(format!("'{dev}' is too small ({} < {need} sectors)", sb.data_size)));
        }
        let member = joining_member(sh, &mut meta, desc, sb.data_offset, dev)?;
        let rec = DevRecord { dev: member, sb, replacing: false };
        if let Some(slot) = replace {
            replace::start(sh, &mut meta, slot, rec);
            drop(meta);
            emit(sh, &MdEvent::DeviceAdded { device: dev.to_string() });
            emit(sh, &MdEvent::RecoveryStarted { slot });
            return Ok(());
        }
        if let Some(r) = meta.sb.dev_roles.get_mut(dev_number as usize) {
            *r = DevRole::Spare;
        }
        meta.devices.push(rec);
        if let Some((device, status)) = meta.write_superblocks(sh).into_iter().next() {
            return Err(MdError::SuperblockWrite { device, status });
        }
        drop(meta);
        emit(sh, &MdEvent::DeviceAdded { device: dev.to_string() });
        Ok(())
    }

    fn remove(&self, dev: &str) -> Result<(), MdError> {
        let sh = &self.sh;
        let mut meta = lock(&sh.meta);
        let idx =
            meta.devices.iter().position(|d| d.dev.name() == dev).ok_or_else(|| MdError::NoSuchDevice(dev.into()))?;
        let dev_number = meta.devices.get(idx).map_or(0, |d| d.sb.dev_number);
        let role = meta.sb.dev_roles.get(dev_number as usize).copied();
        let slot = self.slot_of(dev);
        let removable = match role {
            Some(DevRole::Spare) | Some(DevRole::Faulty) => true,
            Some(DevRole::Active(_)) => slot.and_then(|s| sh.slot(s)).is_some_and(|s| s.state() == SlotState::Faulty),
            _ => false,
        };
        if !removable {
            return Err(MdError::Busy(format!("'{dev}' is an active member; fail it first")));
        }
        if let Some((i, s)) = slot.and_then(|i| sh.slot(i).map(|s| (i, s))) {
            s.replace_device(None);
            s.set_state(SlotState::Empty);
            sh.bump_generation();
            if sh.sync.kind() == SyncKind::Recovery && sh.sync.slot.load(Ordering::Acquire) == i as u64 {
                sh.sync.set_idle();
            }
        }
        if let Some(r) = meta.sb.dev_roles.get_mut(dev_number as usize) {
            *r = DevRole::Spare;
        }
        meta.devices.remove(idx);
        let errors = meta.write_superblocks(sh);
        drop(meta);
        emit(sh, &MdEvent::DeviceRemoved { device: dev.to_string() });
        match errors.into_iter().next() {
            Some((device, status)) => Err(MdError::SuperblockWrite { device, status }),
            None => Ok(()),
        }
    }
}

/// The device `dev` (open as `desc`) joining the running array: the next
/// device id, and the array's block size (a device may not change it).
fn joining_member(
    sh: &Shared,
    meta: &mut Meta,
    desc: bdev::Desc,
    data_offset: u64,
    dev: &str,
) -> Result<Arc<MemberDev>, MdError> {
    let mut bs = sh.block_size;
    let id = meta.next_dev_id;
    meta.next_dev_id += 1;
    let member = member_dev(desc, id, data_offset, &mut bs)?;
    if bs != sh.block_size {
        return Err(MdError::BlockSize(dev.to_string()));
    }
    Ok(member)
}
