//! The array's control thread (md's `mdX_raidN` thread plus
//! `md_check_recovery`): superblock updates when members fail, hot-spare
//! activation, recovery onto a spare and resync, paced by the sync speed
//! limit and pausable.
//!
//! Recovery and resync work window by window under the same stripe/region
//! locks the channels take for writes, so a window is never rebuilt from
//! data a concurrent write is changing.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::IoStatus;

use crate::geometry::{Geometry, MemberContent, StripeRole};
use crate::offline::{regenerate_parity, solve_stripe};
use crate::superblock::{DevRole, MAX_SECTOR};

use super::meta::SyncIo;
use super::shared::{lock, ControlMsg, FailedDevice, Shared, SlotState};
use super::{MdEvent, SyncKind};

/// Sectors handled per control step (bounded by the window for locking).
const STEP_SECTORS: u64 = 1024;

pub(crate) struct Worker {
    sh: Arc<Shared>,
    ios: Vec<Option<(u64, SyncIo)>>,
}

impl Worker {
    pub(crate) fn new(sh: Arc<Shared>) -> Worker {
        let n = sh.slots.len();
        Worker { sh, ios: (0..2 * n).map(|_| None).collect() }
    }

    fn io(&mut self, m: usize) -> Option<(&mut SyncIo, u64)> {
        let dev = self.sh.slot_any(m)?.device()?;
        let entry = self.ios.get_mut(m)?;
        if entry.as_ref().is_none_or(|(id, _)| *id != dev.id) {
            *entry = SyncIo::open(&dev.desc).ok().map(|io| (dev.id, io));
        }
        entry.as_mut().map(|(_, io)| (io, dev.data_offset))
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.sh.clone()
    }

    pub(super) fn read(&mut self, m: usize, sector: u64, buf: &mut [u8]) -> Result<(), IoStatus> {
        let (io, off) = self.io(m).ok_or(IoStatus::PathError)?;
        io.read_at((off + sector) * 512, buf)
    }

    pub(super) fn write(&mut self, m: usize, sector: u64, buf: &[u8]) -> Result<(), IoStatus> {
        let (io, off) = self.io(m).ok_or(IoStatus::PathError)?;
        io.write_at((off + sector) * 512, buf)
    }

    pub(super) fn readable(&self, m: usize, sector: u64, n: u64) -> bool {
        self.sh.slot(m).is_some_and(|s| s.readable(sector, n))
    }

    /// Rebuilds `[sector, sector + n)` of slot `t` (n inside one window),
    /// or of a replacement (`t` past the slots), which is copied from the
    /// slot it replaces while that one is readable. Returns false when the
    /// data cannot be rebuilt.
    fn recover_range(&mut self, t: usize, sector: u64, n: u64) -> Result<bool, IoStatus> {
        let sh = self.sh.clone();
        let src = sh.source_slot(t);
        // A slot being recovered is not read; a replaced one is.
        let skip = (src == t).then_some(t);
        let ext = sh.geometry.member_extent(src, sector).map_err(|_| IoStatus::Invalid)?;
        let n = n.min(ext.sectors);
        let bytes = (n * 512) as usize;
        match (&sh.geometry, ext.content) {
            (_, MemberContent::Unused) => Ok(true),
            (Geometry::Striped(g), content) => {
                let stripe = match content {
                    MemberContent::Data { lba } => g.map(lba).0.stripe,
                    MemberContent::Parity { stripe } | MemberContent::Syndrome { stripe } => stripe,
                    MemberContent::Unused => return Ok(true),
                };
                let layout = g.stripe_layout(stripe);
                let row = sector - stripe * g.chunk_sectors();
                let key = sh.stripe_key(stripe, row - row % sh.window_sectors);
                sh.locks.lock_blocking(key);
                let result = (|| {
                    let mut blocks: Vec<Option<Vec<u8>>> = Vec::with_capacity(layout.raid_disks());
                    for m in 0..layout.raid_disks() {
                        if Some(m) != skip && self.readable(m, sector, n) {
                            let mut b = vec![0u8; bytes];
                            match self.read(m, sector, &mut b) {
                                Ok(()) => blocks.push(Some(b)),
                                Err(_) => {
                                    sh.fail_member(m);
                                    blocks.push(None);
                                }
                            }
                        } else {
                            blocks.push(None);
                        }
                    }
                    if solve_stripe(&sh.parity, &layout, &mut blocks).is_none() {
                        return Ok(false);
                    }
                    let data = blocks.get(src).and_then(|b| b.as_deref()).ok_or(IoStatus::Invalid)?;
                    self.write(t, sector, data)?;
                    Ok(true)
                })();
                sh.locks.unlock(key);
                result
            }
            (_, MemberContent::Data { lba }) => {
                let w = sh.window_sectors;
                let n = n.min(w - lba % w);
                let bytes = (n * 512) as usize;
                let key = sh.region_key(lba);
                sh.locks.lock_blocking(key);
                let result = (|| {
                    let mut buf = vec![0u8; bytes];
                    let mut sources: Vec<_> = sh.geometry.copies(lba).filter(|c| Some(c.member) != skip).collect();
                    // A replacement copies its own slot first.
                    sources.sort_by_key(|c| c.member != src);
                    let mut got = false;
                    for c in sources {
                        if !self.readable(c.member, c.sector, n) {
                            continue;
                        }
                        match self.read(c.member, c.sector, &mut buf) {
                            Ok(()) => {
                                got = true;
                                break;
                            }
                            Err(_) => {
                                sh.fail_member(c.member);
                            }
                        }
                    }
                    if !got {
                        return Ok(false);
                    }
                    self.write(t, sector, &buf)?;
                    Ok(true)
                })();
                sh.locks.unlock(key);
                result.map(|ok| ok && n > 0)
            }
            _ => Ok(true),
        }
    }

    /// Clamps `n` sync-range sectors at `cursor` to one lock window, runs `f` under that
    /// window's lock with the window and the clamped length, and returns the length with `f`'s
    /// result; `None` for levels without redundancy. Parity levels: `cursor` counts member
    /// sectors and the window is rows of one stripe; mirrors: `cursor` is an array sector.
    pub(super) fn in_sync_window<T>(
        &mut self,
        cursor: u64,
        n: u64,
        f: impl FnOnce(&mut Self, &SyncWindow, u64) -> Result<T, IoStatus>,
    ) -> Option<Result<(u64, T), IoStatus>> {
        let sh = self.sh.clone();
        let w = sh.window_sectors;
        let (window, n, key) = match &sh.geometry {
            Geometry::Striped(g) => {
                let chunk = g.chunk_sectors();
                let stripe = cursor / chunk;
                let row = cursor % chunk;
                let n = n.min(w - row % w).min(chunk - row);
                (SyncWindow::Stripe(g.stripe_layout(stripe)), n, sh.stripe_key(stripe, row - row % w))
            }
            Geometry::Raid1 { .. } | Geometry::Raid10(_) => {
                let chunk = sh.geometry.chunk_sectors();
                let mut n = n.min(w - cursor % w);
                if chunk > 0 {
                    n = n.min(chunk - cursor % chunk);
                }
                (SyncWindow::Mirrored, n, sh.region_key(cursor))
            }
            _ => return None,
        };
        sh.locks.lock_blocking(key);
        let result = f(self, &window, n);
        sh.locks.unlock(key);
        Some(result.map(|r| (n, r)))
    }

    /// Makes `[lba.., n)` (parity: stripe rows of member sectors) consistent.
    fn resync_range(&mut self, cursor: u64, n: u64) -> Result<u64, IoStatus> {
        let sh = self.sh.clone();
        let done = self.in_sync_window(cursor, n, |me, window, n| {
            let bytes = (n * 512) as usize;
            match window {
                SyncWindow::Stripe(layout) => {
                    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(layout.raid_disks());
                    for m in 0..layout.raid_disks() {
                        let mut b = vec![0u8; bytes];
                        if matches!(layout.role_of(m), Some(StripeRole::Data(_))) {
                            if !me.readable(m, cursor, n) {
                                // Degraded: nothing to make consistent here.
                                return Ok(());
                            }
                            me.read(m, cursor, &mut b)?;
                        }
                        blocks.push(b);
                    }
                    regenerate_parity(&sh.parity, layout, &mut blocks).map_err(|_| IoStatus::Invalid)?;
                    for m in [Some(layout.p_member()), layout.q_member()].into_iter().flatten() {
                        if sh.slot(m).is_some_and(|s| s.writable()) {
                            if let Some(b) = blocks.get(m) {
                                me.write(m, cursor, b)?;
                            }
                        }
                    }
                    Ok(())
                }
                SyncWindow::Mirrored => {
                    let copies: Vec<_> = sh.geometry.copies(cursor).collect();
                    let Some(src) = copies.iter().find(|c| me.readable(c.member, c.sector, n)).copied() else {
                        return Ok(());
                    };
                    let mut buf = vec![0u8; bytes];
                    me.read(src.member, src.sector, &mut buf)?;
                    for c in copies {
                        if c != src && sh.slot(c.member).is_some_and(|s| s.writable()) {
                            me.write(c.member, c.sector, &buf)?;
                        }
                    }
                    Ok(())
                }
            }
        });
        done.map_or(Ok(n), |r| r.map(|(n, ())| n))
    }
}

/// The lock window [`Worker::in_sync_window`] hands to a sync or scrub pass.
pub(super) enum SyncWindow {
    /// Rows of one stripe of a parity level, laid out as this.
    Stripe(crate::geometry::StripeLayout),
    /// A region of a mirrored level.
    Mirrored,
}

/// The thread body.
pub(crate) fn run(sh: Arc<Shared>, rx: Receiver<ControlMsg>) {
    let mut w = Worker::new(sh.clone());
    let mut last_sb_write = Instant::now();
    let mut bitmap = BitmapDaemon { last: Vec::new(), pass: Instant::now() };
    loop {
        let busy = sh.sync.kind() != SyncKind::Idle && !sh.sync.paused.load(Ordering::Acquire);
        let idle = sh.intent.as_ref().map_or(200, |wi| wi.daemon_ms.load(Ordering::Acquire).clamp(1, 200));
        let wait = if busy { Duration::ZERO } else { Duration::from_millis(idle) };
        match rx.recv_timeout(wait) {
            Ok(ControlMsg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(ControlMsg::MemberFailed { slot, dev }) => member_failed(&sh, slot, &dev),
            Ok(ControlMsg::Kick) | Err(RecvTimeoutError::Timeout) => {}
        }
        bitmap.run(&sh);
        if sh.sync.kind() == SyncKind::Idle {
            start_recovery_if_possible(&sh);
        }
        if busy {
            step(&sh, &mut w);
            // Record recovery progress now and then, as md does.
            if last_sb_write.elapsed() > Duration::from_secs(5) {
                let mut meta = lock(&sh.meta);
                meta.write_superblocks(&sh);
                last_sb_write = Instant::now();
            }
        }
    }
}

/// Writes the bitmap when writes wait for bits, and clears idle bits
/// every daemon period (md's bitmap daemon).
struct BitmapDaemon {
    /// The image last written.
    last: Vec<u8>,
    /// Time of the last daemon pass.
    pass: Instant,
}

impl BitmapDaemon {
    fn run(&mut self, sh: &Arc<Shared>) {
        let Some(wi) = sh.intent.as_ref() else {
            return;
        };
        if wi.flush_wanted.swap(false, Ordering::AcqRel) {
            lock(&sh.meta).write_bitmap(sh, &mut self.last, false);
        }
        let period = Duration::from_millis(wi.daemon_ms.load(Ordering::Acquire));
        if self.pass.elapsed() < period {
            return;
        }
        self.pass = Instant::now();
        // Bits stay set while the array is degraded (they record what a
        // returning member misses) or has failed.
        let whole = sh.slots.iter().all(|s| s.state() == SlotState::InSync);
        if whole && !sh.failed.load(Ordering::Acquire) && wi.daemon_pass(false) > 0 {
            lock(&sh.meta).write_bitmap(sh, &mut self.last, true);
        }
    }
}

/// The device `failed` of slot `slot` (or of a replacement) failed.
///
/// By now the device may have left (removed, or removed and re-added as a
/// new device): its role was then recorded by the remove, and only the
/// event is still owed.
pub(super) fn member_failed(sh: &Arc<Shared>, slot: usize, failed: &FailedDevice) {
    if let Some(r) = slot.checked_sub(sh.slots.len()) {
        super::replace::failed(sh, r, failed);
        return;
    }
    let in_slot = {
        let mut meta = lock(&sh.meta);
        // The device that failed, by identity: the slot may hold another
        // one by now (a spare activated or a member re-added since).
        let dev_number = meta.devices.iter().find(|r| r.dev.id == failed.id).map(|r| r.sb.dev_number);
        let in_slot = sh.slot(slot).and_then(|s| s.device()).is_some_and(|d| d.id == failed.id);
        if let Some(dev_number) = dev_number {
            if let Some(r) = meta.sb.dev_roles.get_mut(dev_number as usize) {
                *r = DevRole::Faulty;
            }
            if in_slot {
                super::replace::promote(sh, &mut meta, slot);
            }
            for (dev, st) in meta.write_superblocks(sh) {
                log::error!("raid {}: cannot write the superblock of {dev}: {st}", sh.name);
            }
        }
        in_slot
    };
    // A recovery onto the failed device stops (not one onto a device that
    // took the slot since).
    if in_slot && sh.sync.kind() == SyncKind::Recovery && sh.sync.slot.load(Ordering::Acquire) == slot as u64 {
        sh.sync.set_idle();
    }
    super::emit(sh, &MdEvent::DeviceFailed { slot, device: failed.name.clone() });
    let present = sh.in_sync();
    if !crate::assemble::can_run(&sh.geometry, &present) {
        sh.failed.store(true, Ordering::Release);
        super::emit(sh, &MdEvent::ArrayFailed);
    } else if present.iter().any(|&p| !p) {
        super::emit(sh, &MdEvent::Degraded);
    }
}

/// Puts a spare into the first slot without a working device and starts
/// recovery.
pub(crate) fn start_recovery_if_possible(sh: &Arc<Shared>) {
    if !sh.sync.auto.load(Ordering::Acquire) || sh.failed.load(Ordering::Acquire) {
        return;
    }
    if super::replace::resume(sh) {
        return;
    }
    // A slot already recovering resumes.
    if let Some(t) = (0..sh.slots.len()).find(|&i| sh.slot(i).is_some_and(|s| s.state() == SlotState::Recovering)) {
        let from = sh.slot(t).map_or(0, |s| s.recovered());
        sh.sync.begin(SyncKind::Recovery, t as u64, from, sh.geometry.member_used_sectors(t));
        super::emit(sh, &MdEvent::RecoveryStarted { slot: t });
        return;
    }
    let Some(t) = (0..sh.slots.len())
        .find(|&i| sh.slot(i).is_some_and(|s| matches!(s.state(), SlotState::Faulty | SlotState::Empty)))
    else {
        return;
    };
    let mut meta = lock(&sh.meta);
    // A re-add may have filled the slot meanwhile (it does so under the
    // meta lock).
    if !sh.slot(t).is_some_and(|s| matches!(s.state(), SlotState::Faulty | SlotState::Empty)) {
        return;
    }
    let spare =
        meta.devices.iter().position(|d| meta.sb.dev_roles.get(d.sb.dev_number as usize) == Some(&DevRole::Spare));
    let Some(si) = spare else {
        return;
    };
    let (dev, dev_number) = match meta.devices.get(si) {
        Some(r) => (r.dev.clone(), r.sb.dev_number),
        None => return,
    };
    // The failed device stays listed as faulty until removed.
    if let Some(r) = meta.sb.dev_roles.get_mut(dev_number as usize) {
        *r = DevRole::Active(t as u16);
    }
    if let Some(slot) = sh.slot(t) {
        slot.set_recovered(0);
        slot.set_bitmap_sync(false);
        slot.set_state(SlotState::Recovering);
        slot.replace_device(Some(dev.clone()));
    }
    sh.bump_generation();
    meta.write_superblocks(sh);
    drop(meta);
    sh.sync.begin(SyncKind::Recovery, t as u64, 0, sh.geometry.member_used_sectors(t));
    super::emit(sh, &MdEvent::SpareActivated { slot: t, device: dev.name().to_string() });
    super::emit(sh, &MdEvent::RecoveryStarted { slot: t });
}

/// For the bitmap-based recovery of slot `t` (a re-added member) at
/// member sector `pos`: how many of the next `n` sectors lie in one bitmap
/// chunk, and whether that chunk's bit is set (the member missed writes
/// there). `None` when the recovery of `t` is a full one.
fn bitmap_chunk(sh: &Shared, t: usize, pos: u64, n: u64) -> Option<(u64, bool)> {
    let wi = sh.intent.as_ref()?;
    if !sh.slot(t)?.bitmap_sync() {
        return None;
    }
    let layout = wi.layout();
    // The bitmap covers the sync range: stripe rows (parity levels, the
    // member sector itself) or array sectors (mirrors; raid1's equal the
    // member's).
    let (start, n) = match &sh.geometry {
        Geometry::Striped(_) | Geometry::Raid1 { .. } => (pos, n),
        g => match g.member_extent(t, pos) {
            Ok(e) => match e.content {
                MemberContent::Data { lba } => (lba, n.min(e.sectors)),
                _ => return Some((n.min(e.sectors).max(1), false)),
            },
            // Not mappable: rebuild it to be safe.
            Err(_) => return Some((n, true)),
        },
    };
    let bit = layout.bit_of(start);
    if bit >= layout.bits() {
        return Some((n, true));
    }
    let len = n.min(layout.sectors_of(bit).end.saturating_sub(start)).max(1);
    Some((len, wi.is_set(bit)))
}

fn step(sh: &Arc<Shared>, w: &mut Worker) {
    let t0 = Instant::now();
    let kind = sh.sync.kind();
    let pos = sh.sync.position.load(Ordering::Acquire);
    let end = sh.sync.end.load(Ordering::Acquire);
    if pos >= end {
        finish(sh, kind);
        return;
    }
    let n = STEP_SECTORS.min(end - pos);
    let advanced = match kind {
        SyncKind::Recovery => {
            let t = sh.sync.slot.load(Ordering::Acquire) as usize;
            let ext = sh.geometry.member_extent(sh.source_slot(t), pos).map(|e| e.sectors).unwrap_or(n);
            let n = n.min(ext).min(sh.window_sectors - pos % sh.window_sectors).max(1);
            // A re-added member: only the chunks whose bits are set.
            let n = match bitmap_chunk(sh, t, pos, n) {
                Some((len, false)) => {
                    let len = len.min(end - pos);
                    if let Some(slot) = sh.slot(t) {
                        slot.set_recovered(pos + len);
                    }
                    sh.sync.recovery_skipped.fetch_add(len, Ordering::AcqRel);
                    sh.sync.position.store(pos + len, Ordering::Release);
                    sh.sync.done_sectors.fetch_add(len, Ordering::AcqRel);
                    if pos + len >= end {
                        finish(sh, kind);
                    }
                    return;
                }
                Some((len, true)) => len,
                None => n,
            };
            match w.recover_range(t, pos, n) {
                Ok(true) => {
                    if let Some(slot) = sh.slot_any(t) {
                        slot.set_recovered(pos + n);
                    }
                    sh.sync.recovered.fetch_add(n, Ordering::AcqRel);
                    Some(n)
                }
                Ok(false) => {
                    log::error!("raid {}: recovery of slot {t} impossible at sector {pos}", sh.name);
                    sh.sync.set_idle();
                    None
                }
                Err(st) => {
                    log::error!("raid {}: recovery write to slot {t} failed: {st}", sh.name);
                    sh.fail_member(t);
                    sh.sync.set_idle();
                    None
                }
            }
        }
        SyncKind::Resync => {
            // With a bitmap only the chunks whose bits say so are resynced.
            let chunk = sh.intent.as_ref().map(|wi| {
                let bit = wi.layout().bit_of(pos);
                (bit, wi.needed(bit), wi.layout().sectors_of(bit).end)
            });
            match chunk {
                Some((_, false, chunk_end)) => {
                    let skip = chunk_end.min(end).saturating_sub(pos).max(1);
                    sh.sync.skipped.fetch_add(skip, Ordering::AcqRel);
                    sh.sync.position.store(pos + skip, Ordering::Release);
                    if pos + skip >= end {
                        finish(sh, kind);
                    }
                    return;
                }
                _ => match w.resync_range(pos, chunk.map_or(n, |(_, _, e)| n.min(e.saturating_sub(pos).max(1)))) {
                    Ok(done) => {
                        let done = done.max(1);
                        sh.sync.resynced.fetch_add(done, Ordering::AcqRel);
                        if let (Some(wi), Some((bit, _, chunk_end))) = (sh.intent.as_ref(), chunk) {
                            if pos + done >= chunk_end.min(end) {
                                wi.synced(bit);
                            }
                        }
                        Some(done)
                    }
                    Err(st) => {
                        log::error!("raid {}: resync failed at {pos}: {st}", sh.name);
                        sh.sync.set_idle();
                        None
                    }
                },
            }
        }
        SyncKind::Check | SyncKind::Repair => match w.scrub_range(pos, n, kind == SyncKind::Repair) {
            Ok((done, bad)) => {
                sh.sync.mismatches.fetch_add(bad, Ordering::AcqRel);
                Some(done.max(1))
            }
            Err(st) => {
                log::error!("raid {}: {kind:?} failed at {pos}: {st}", sh.name);
                sh.sync.set_idle();
                None
            }
        },
        SyncKind::Idle => None,
    };
    if let Some(n) = advanced {
        sh.sync.position.store(pos + n, Ordering::Release);
        sh.sync.done_sectors.fetch_add(n, Ordering::AcqRel);
        // Pace to the speed limit.
        let limit = sh.sync.speed_kib.load(Ordering::Acquire);
        if limit > 0 {
            let want = Duration::from_secs_f64((n as f64 / 2.0) / limit as f64);
            if let Some(rest) = want.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        if pos + n >= end {
            finish(sh, kind);
        }
    }
}

fn finish(sh: &Arc<Shared>, kind: SyncKind) {
    match kind {
        SyncKind::Recovery => {
            let t = sh.sync.slot.load(Ordering::Acquire) as usize;
            if let Some(r) = t.checked_sub(sh.slots.len()) {
                super::replace::finish(sh, r);
                return;
            }
            if let Some(slot) = sh.slot(t) {
                slot.set_recovered(MAX_SECTOR);
                slot.set_state(SlotState::InSync);
                slot.set_bitmap_sync(false);
            }
            sh.sync.set_idle();
            sh.bump_generation();
            lock(&sh.meta).write_superblocks(sh);
            super::emit(sh, &MdEvent::RecoveryFinished { slot: t });
        }
        SyncKind::Resync => {
            sh.sync.set_idle();
            lock(&sh.meta).write_superblocks(sh);
            super::emit(sh, &MdEvent::ResyncFinished);
        }
        SyncKind::Check | SyncKind::Repair => {
            sh.sync.set_idle();
            let mismatch_sectors = sh.sync.mismatches.load(Ordering::Acquire);
            super::emit(sh, &MdEvent::CheckFinished { repair: kind == SyncKind::Repair, mismatch_sectors });
        }
        SyncKind::Idle => {}
    }
}
