//! Control-plane IO and bookkeeping: synchronous member IO from a
//! non-reactor thread, and the superblocks of an array's devices.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::{BdevChannel, BdevError, Desc, DmaBuf, IoRequest, IoStatus, IoVecs};

use crate::offline::MemberIo;
use crate::superblock::bitmap::{BitmapSuper, BITMAP_SB_BYTES};
use crate::superblock::{DevRole, FeatureMap, MdTime, Superblock};

use super::shared::{MemberDev, Shared, SlotState};

/// How long one synchronous IO may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Synchronous IO on one device from the calling thread.
pub(crate) struct SyncIo {
    ch: BdevChannel,
    bs: u64,
}

impl SyncIo {
    pub(crate) fn open(desc: &Desc) -> Result<SyncIo, BdevError> {
        let ch = desc.channel_with_depth(64)?;
        let bs = u64::from(desc.info().block_size);
        Ok(SyncIo { ch, bs })
    }

    /// Device size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.ch.num_blocks() * self.bs
    }

    fn run(&mut self, io: IoRequest) -> IoStatus {
        let t0 = Instant::now();
        while self.ch.submit(&io).is_err() {
            self.ch.poll(&mut |_, _| {});
            if t0.elapsed() > SYNC_TIMEOUT {
                return IoStatus::Timeout;
            }
        }
        let mut status = None;
        while status.is_none() {
            self.ch.poll(&mut |tag, st| {
                if tag == io.tag {
                    status = Some(st);
                }
            });
            if status.is_none() {
                if t0.elapsed() > SYNC_TIMEOUT {
                    return IoStatus::Timeout;
                }
                std::thread::yield_now();
            }
        }
        status.unwrap_or(IoStatus::Timeout)
    }

    /// Whole blocks around `[off, off + len)`.
    fn span(&self, off: u64, len: usize) -> (u64, u64) {
        let start = off / self.bs * self.bs;
        let end = (off + len as u64).div_ceil(self.bs) * self.bs;
        (start, end)
    }

    pub(crate) fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), IoStatus> {
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = self.span(off, buf.len());
        let mut b = DmaBuf::alloc((end - start) as usize).map_err(|_| IoStatus::NoSpace)?;
        let io = IoRequest::read(start / self.bs, (end - start) / self.bs, IoVecs::single(b.iovec()), 1);
        match self.run(io) {
            IoStatus::Success => {}
            st => return Err(st),
        }
        let skip = (off - start) as usize;
        let src = b.as_slice().get(skip..skip + buf.len()).ok_or(IoStatus::Invalid)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    pub(crate) fn write_at(&mut self, off: u64, buf: &[u8]) -> Result<(), IoStatus> {
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = self.span(off, buf.len());
        let mut b = DmaBuf::alloc((end - start) as usize).map_err(|_| IoStatus::NoSpace)?;
        if start != off || end != off + buf.len() as u64 {
            let io = IoRequest::read(start / self.bs, (end - start) / self.bs, IoVecs::single(b.iovec()), 1);
            match self.run(io) {
                IoStatus::Success => {}
                st => return Err(st),
            }
        }
        let skip = (off - start) as usize;
        b.as_mut_slice().get_mut(skip..skip + buf.len()).ok_or(IoStatus::Invalid)?.copy_from_slice(buf);
        let io = IoRequest::write(start / self.bs, (end - start) / self.bs, IoVecs::single(b.iovec()), 2);
        match self.run(io) {
            IoStatus::Success => Ok(()),
            st => Err(st),
        }
    }

    pub(crate) fn flush(&mut self) -> IoStatus {
        self.run(IoRequest::no_data(bdev::IoType::Flush, 0, 0, 3))
    }
}

/// A bdev as a synchronous member for [`crate::offline`].
pub(crate) struct BdevMember {
    io: RefCell<SyncIo>,
}

impl BdevMember {
    pub(crate) fn open(desc: &Desc) -> Result<BdevMember, BdevError> {
        Ok(BdevMember { io: RefCell::new(SyncIo::open(desc)?) })
    }
}

fn status_err(st: IoStatus) -> std::io::Error {
    std::io::Error::other(format!("member io {st}"))
}

impl MemberIo for BdevMember {
    fn sectors(&self) -> u64 {
        self.io.borrow().size() / 512
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.io.borrow_mut().read_at(offset, buf).map_err(status_err)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.io.get_mut().write_at(offset, buf).map_err(status_err)
    }
}

/// A device of the array and its own superblock fields.
pub(crate) struct DevRecord {
    pub dev: Arc<MemberDev>,
    /// The superblock last written to this device (its per-device fields
    /// are authoritative: dev_number, device_uuid, data offset and size).
    pub sb: Superblock,
    /// Being rebuilt as the replacement of the slot its role names.
    pub replacing: bool,
}

/// Control-plane state of an array.
pub(crate) struct Meta {
    /// Array-wide superblock fields and roles.
    pub sb: Superblock,
    pub devices: Vec<DevRecord>,
    pub bitmap: Option<BitmapSuper>,
    pub next_dev_id: u64,
}

impl Meta {
    /// The record of the device in slot `slot`.
    pub(crate) fn slot_device(&self, slot: usize) -> Option<&DevRecord> {
        self.devices.iter().find(|d| {
            !d.replacing && self.sb.dev_roles.get(d.sb.dev_number as usize) == Some(&DevRole::Active(slot as u16))
        })
    }

    /// The bits of the bitmap as stored on the first in-sync member.
    pub(crate) fn read_bitmap_bits(&self, sh: &Shared) -> Option<Vec<u8>> {
        let b = self.bitmap.as_ref()?;
        let len = usize::try_from(b.layout().bit_bytes()).ok()?;
        let rec = (0..sh.slots.len())
            .filter(|&i| sh.slot(i).is_some_and(|s| s.state() == SlotState::InSync))
            .find_map(|i| self.slot_device(i))?;
        if !rec.sb.feature_map.contains(FeatureMap::BITMAP_OFFSET) {
            return None;
        }
        let at = rec.sb.super_offset.checked_add_signed(i64::from(rec.sb.bitmap_offset))?;
        let mut io = SyncIo::open(&rec.dev.desc).ok()?;
        let mut bits = vec![0u8; len];
        io.read_at(at * 512 + BITMAP_SB_BYTES as u64, &mut bits).ok()?;
        Some(bits)
    }

    /// A free device number.
    pub(crate) fn free_dev_number(&self) -> Option<u32> {
        (0..self.sb.max_dev()).find(|n| !self.devices.iter().any(|d| d.sb.dev_number == *n))
    }

    /// Bumps the event count and writes every working device's superblock
    /// (and the bitmap). Devices that cannot be written are reported in
    /// the result.
    pub(crate) fn write_superblocks(&mut self, sh: &Shared) -> Vec<(String, IoStatus)> {
        self.sb.events += 1;
        self.sb.utime = MdTime::now();
        let events = self.sb.events;
        if let Some(b) = self.bitmap.as_mut() {
            b.events = events;
            if b.events_cleared == 0 {
                b.events_cleared = events;
            }
        }
        let (image, pending) = self.bitmap_image(sh);
        let self_has_bitmap = self.bitmap.is_some();
        let mut errors = Vec::new();
        let Meta { sb: template, devices, .. } = self;
        for (rec, role) in working(devices, &template.dev_roles, sh) {
            let mut sb = template.clone();
            sb.dev_number = rec.sb.dev_number;
            sb.device_uuid = rec.sb.device_uuid;
            sb.data_offset = rec.sb.data_offset;
            sb.data_size = rec.sb.data_size;
            sb.super_offset = rec.sb.super_offset;
            sb.devflags = rec.sb.devflags;
            sb.bblog_shift = rec.sb.bblog_shift;
            sb.bblog_size = rec.sb.bblog_size;
            sb.bblog_offset = rec.sb.bblog_offset;
            sb.cnt_corrected_read = rec.sb.cnt_corrected_read;
            sb.feature_map.remove(FeatureMap::RECOVERY_OFFSET);
            sb.feature_map.remove(FeatureMap::REPLACEMENT);
            sb.feature_map.remove(FeatureMap::RECOVERY_BITMAP);
            sb.recovery_offset = 0;
            if rec.replacing {
                // md's replacement: the slot's role, the replacement flag
                // and how far the copy got.
                sb.feature_map.insert(FeatureMap::REPLACEMENT);
                if let Some(DevRole::Active(s)) = role {
                    sb.feature_map.insert(FeatureMap::RECOVERY_OFFSET);
                    sb.recovery_offset = sh.repl.get(s as usize).map_or(0, |r| r.recovered());
                }
            } else if let Some(DevRole::Active(s)) = role {
                if let Some(slot) = sh.slot(s as usize) {
                    if slot.state() == SlotState::Recovering {
                        sb.feature_map.insert(FeatureMap::RECOVERY_OFFSET);
                        sb.recovery_offset = slot.recovered();
                        // md's saved_raid_disk with a bitmap: the recovery
                        // resumes driven by the bitmap.
                        if slot.bitmap_sync() && self_has_bitmap {
                            sb.feature_map.insert(FeatureMap::RECOVERY_BITMAP);
                        }
                    }
                }
            }
            let result = write_device_metadata(&rec.dev.desc, &sb, image.as_deref());
            match result {
                Ok(()) => rec.sb = sb,
                Err(st) => errors.push((rec.dev.name().to_string(), st)),
            }
        }
        if errors.is_empty() {
            if let Some(wi) = sh.intent.as_ref() {
                wi.commit(&pending);
            }
        }
        errors
    }

    /// The whole bitmap (header and bits, whole 4 KiB blocks) as the
    /// write-intent state says, and the bits it turns from pending to set.
    fn bitmap_image(&self, sh: &Shared) -> (Option<Vec<u8>>, Vec<u64>) {
        let Some(b) = self.bitmap.as_ref() else {
            return (None, Vec::new());
        };
        let layout = b.layout();
        let Ok(total) = usize::try_from(layout.total_bytes(4096)) else {
            return (None, Vec::new());
        };
        let mut img = vec![0u8; total];
        if b.encode_into(&mut img).is_err() {
            return (None, Vec::new());
        }
        let pending = match (sh.intent.as_ref(), img.get_mut(BITMAP_SB_BYTES..)) {
            (Some(wi), Some(bits)) => wi.image(bits),
            _ => Vec::new(),
        };
        (Some(img), pending)
    }

    /// Writes the bitmap (header and the 4 KiB pages whose bits differ
    /// from `last`, which is updated) to every working device; with
    /// `flush_first`, members are flushed before, so data written before
    /// bits are cleared is durable when the cleared bits are.
    pub(crate) fn write_bitmap(&mut self, sh: &Shared, last: &mut Vec<u8>, flush_first: bool) -> bool {
        let events = self.sb.events;
        if let Some(b) = self.bitmap.as_mut() {
            b.events = events;
            if flush_first {
                b.events_cleared = events;
            }
        }
        let (Some(img), pending) = self.bitmap_image(sh) else {
            return true;
        };
        let mut ok = true;
        for (rec, _) in working(&mut self.devices, &self.sb.dev_roles, sh) {
            if !rec.sb.feature_map.contains(FeatureMap::BITMAP_OFFSET) {
                continue;
            }
            let result = (|| {
                let mut io = SyncIo::open(&rec.dev.desc).map_err(|_| IoStatus::PathError)?;
                if flush_first {
                    flushed(io.flush())?;
                }
                let at = rec.sb.super_offset.checked_add_signed(i64::from(rec.sb.bitmap_offset));
                let at = at.ok_or(IoStatus::Invalid)? * 512;
                for (i, page) in img.chunks(4096).enumerate() {
                    let old = last.get(i * 4096..(i * 4096 + page.len()));
                    if i == 0 || old != Some(page) {
                        io.write_at(at + (i * 4096) as u64, page)?;
                    }
                }
                flushed(io.flush())
            })();
            if let Err(st) = result {
                log::error!("raid {}: cannot write the bitmap of {}: {st}", sh.name, rec.dev.name());
                ok = false;
            }
        }
        if ok {
            if let Some(wi) = sh.intent.as_ref() {
                wi.commit(&pending);
            }
            *last = img;
        }
        ok
    }
}

/// The devices that get metadata (not failed), with their roles.
fn working<'a>(
    devices: &'a mut [DevRecord],
    roles: &'a [DevRole],
    sh: &'a Shared,
) -> impl Iterator<Item = (&'a mut DevRecord, Option<DevRole>)> + 'a {
    devices.iter_mut().filter_map(move |rec| {
        let role = roles.get(rec.sb.dev_number as usize).copied();
        let failed = match role {
            Some(DevRole::Faulty) => true,
            Some(DevRole::Active(s)) if rec.replacing => {
                sh.repl.get(s as usize).is_some_and(|x| x.state() == SlotState::Faulty)
            }
            Some(DevRole::Active(s)) => sh.slot(s as usize).is_some_and(|x| x.state() == SlotState::Faulty),
            _ => false,
        };
        (!failed).then_some((rec, role))
    })
}

fn flushed(st: IoStatus) -> Result<(), IoStatus> {
    match st {
        // Devices without a write cache may not take flushes.
        IoStatus::Success | IoStatus::Invalid => Ok(()),
        st => Err(st),
    }
}

/// Writes a superblock to one device, and the bitmap image (header and
/// bits) when the array has one.
pub(crate) fn write_device_metadata(desc: &Desc, sb: &Superblock, bitmap: Option<&[u8]>) -> Result<(), IoStatus> {
    let mut io = SyncIo::open(desc).map_err(|_| IoStatus::PathError)?;
    let bytes = sb.encode(4096).map_err(|_| IoStatus::Invalid)?;
    io.write_at(sb.super_offset * 512, &bytes)?;
    if let (Some(img), true) = (bitmap, sb.feature_map.contains(FeatureMap::BITMAP_OFFSET)) {
        let at = sb.super_offset.checked_add_signed(i64::from(sb.bitmap_offset)).ok_or(IoStatus::Invalid)?;
        io.write_at(at * 512, img)?;
    }
    flushed(io.flush())
}
