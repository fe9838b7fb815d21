//! Synchronous access to md arrays stored on plain files or memory: examine
//! members, assemble, create, read and write the array (degraded too),
//! rebuild a member. This is the reference implementation of the on-disk
//! format that the interoperability tests against Linux md use, and a
//! model for the asynchronous RAID bdev.

use std::io;

use thiserror::Error;

use crate::assemble::{self, AssembleError, AssemblyPlan};
use crate::create::{self, CreateError, CreateParams};
use crate::geometry::{Geometry, GeometryError, MemberContent, StripeLayout, StripeRole, Target};
use crate::parity::{Parity, ParityError};
use crate::superblock::bitmap::{BitmapError, BitmapSuper, BITMAP_SB_BYTES};
use crate::superblock::{FeatureMap, Superblock, SuperblockError, SuperblockVersion, SECTOR_BYTES};

const SECTOR: usize = SECTOR_BYTES as usize;

/// A member device accessed synchronously.
pub trait MemberIo {
    /// Size in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len()` bytes at byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at byte `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
}

impl MemberIo for std::fs::File {
    fn sectors(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len() / SECTOR_BYTES)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

impl MemberIo for Vec<u8> {
    fn sectors(&self) -> u64 {
        self.len() as u64 / SECTOR_BYTES
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let src =
            start.checked_add(buf.len()).and_then(|end| self.get(start..end)).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let dst = start
            .checked_add(buf.len())
            .and_then(|end| self.get_mut(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// Errors of offline array access.
#[derive(Debug, Error)]
pub enum OfflineError {
    /// Member IO failed.
    #[error("member {member}: io error")]
    Io {
        /// Member (device index or slot).
        member: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No md superblock on a device.
    #[error("device {0} has no md superblock")]
    NoSuperblock(usize),
    /// A superblock that does not decode or validate.
    #[error("device {member}: bad superblock")]
    Superblock {
        /// Device index.
        member: usize,
        /// Cause.
        #[source]
        source: SuperblockError,
    },
    /// A bad bitmap.
    #[error("device {member}: bad bitmap")]
    Bitmap {
        /// Device index.
        member: usize,
        /// Cause.
        #[source]
        source: BitmapError,
    },
    /// Assembly refused.
    #[error("cannot assemble")]
    Assemble(#[from] AssembleError),
    /// Creation refused.
    #[error("cannot create")]
    Create(#[from] CreateError),
    /// Address outside the array.
    #[error("bad address")]
    Geometry(#[from] GeometryError),
    /// Parity arithmetic refused its arguments.
    #[error("parity")]
    Parity(#[from] ParityError),
    /// Buffer not a whole number of sectors.
    #[error("buffer of {0} bytes is not a multiple of 512")]
    BufferSize(usize),
    /// Too many members missing to read or write this sector.
    #[error("array sector {0} is unavailable: too many members missing")]
    Unavailable(u64),
    /// Device list does not fit the array.
    #[error("expected {expected} members, got {got}")]
    MemberCount {
        /// Slots.
        expected: usize,
        /// Given.
        got: usize,
    },
}

/// What `examine` finds on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// Superblock minor version (where it was found).
    pub version: SuperblockVersion,
    /// The superblock.
    pub superblock: Superblock,
    /// The bitmap header, when the array has an internal bitmap.
    pub bitmap: Option<BitmapSuper>,
}

fn io_err(member: usize) -> impl FnOnce(io::Error) -> OfflineError {
    move |source| OfflineError::Io { member, source }
}

/// Reads and validates the md superblock of device `index` (md_examine):
/// v1.2, then v1.1, then v1.0 locations.
pub fn examine<M: MemberIo>(index: usize, dev: &M) -> Result<Examined, OfflineError> {
    let sectors = dev.sectors();
    let mut first_err = None;
    for version in [SuperblockVersion::V1_2, SuperblockVersion::V1_1, SuperblockVersion::V1_0] {
        let Some(at) = version.super_offset(sectors) else {
            continue;
        };
        let mut buf = vec![0u8; 4096.min((sectors - at) as usize * SECTOR)];
        dev.read_at(at * SECTOR_BYTES, &mut buf).map_err(io_err(index))?;
        match Superblock::parse_on_member(&buf, at, sectors) {
            Ok(superblock) => {
                let bitmap = read_bitmap(index, dev, &superblock)?;
                return Ok(Examined { version, superblock, bitmap });
            }
            Err(SuperblockError::BadMagic(_)) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(source) => Err(OfflineError::Superblock { member: index, source }),
        None => Err(OfflineError::NoSuperblock(index)),
    }
}

fn read_bitmap<M: MemberIo>(index: usize, dev: &M, sb: &Superblock) -> Result<Option<BitmapSuper>, OfflineError> {
    if !sb.feature_map.contains(FeatureMap::BITMAP_OFFSET) || sb.feature_map.contains(FeatureMap::PPL) {
        return Ok(None);
    }
    // validate_on_member checked the bitmap's first sector is on the device.
    let at = sb.super_offset.checked_add_signed(i64::from(sb.bitmap_offset)).unwrap_or(0);
    let mut buf = [0u8; BITMAP_SB_BYTES];
    dev.read_at(at * SECTOR_BYTES, &mut buf).map_err(io_err(index))?;
    BitmapSuper::parse_for(&buf, &sb.set_uuid)
        .map(Some)
        .map_err(|source| OfflineError::Bitmap { member: index, source })
}

/// Writes a superblock (and the bitmap image, if any) to a device.
pub fn write_metadata<M: MemberIo>(
    index: usize,
    dev: &mut M,
    sb: &Superblock,
    bitmap_image: Option<&[u8]>,
) -> Result<(), OfflineError> {
    let bytes = sb.encode(4096).map_err(|source| OfflineError::Superblock { member: index, source })?;
    dev.write_at(sb.super_offset * SECTOR_BYTES, &bytes).map_err(io_err(index))?;
    if let Some(img) = bitmap_image {
        let at = sb.super_offset.checked_add_signed(i64::from(sb.bitmap_offset)).unwrap_or(0);
        dev.write_at(at * SECTOR_BYTES, img).map_err(io_err(index))?;
    }
    Ok(())
}

struct Member<M> {
    io: M,
    data_offset: u64,
    /// Sectors valid from the data offset (`None`: all).
    valid_to: Option<u64>,
}

/// An md array over synchronously accessed members.
pub struct OfflineArray<M> {
    geometry: Geometry,
    members: Vec<Option<Member<M>>>,
    parity: Parity,
}

/// Result of [`OfflineArray::assemble`].
pub struct Assembled<M> {
    /// The running array.
    pub array: OfflineArray<M>,
    /// The plan md would make.
    pub plan: AssemblyPlan,
    /// What each device holds (`None`: no superblock).
    pub examined: Vec<Option<Examined>>,
    /// Devices not used as active members (spares, stale, faulty, or
    /// without superblock), handed back.
    pub unused: Vec<(usize, M)>,
}

impl<M: MemberIo> OfflineArray<M> {
    /// An array over `members` (by slot: device and its data offset).
    pub fn new(geometry: Geometry, members: Vec<Option<(M, u64)>>) -> Result<Self, OfflineError> {
        if members.len() != geometry.raid_disks() {
            return Err(OfflineError::MemberCount { expected: geometry.raid_disks(), got: members.len() });
        }
        Ok(OfflineArray {
            geometry,
            members: members
                .into_iter()
                .map(|m| m.map(|(io, data_offset)| Member { io, data_offset, valid_to: None }))
                .collect(),
            parity: Parity::new(),
        })
    }

    /// Examines `devices` and assembles the array they form (md_assemble).
    /// Devices without a superblock are skipped.
    pub fn assemble(devices: Vec<M>) -> Result<Assembled<M>, OfflineError> {
        let mut examined = Vec::with_capacity(devices.len());
        let mut candidates = Vec::new();
        let mut candidate_dev = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            match examine(i, d) {
                Ok(e) => {
                    candidates.push(e.superblock.clone());
                    candidate_dev.push(i);
                    examined.push(Some(e));
                }
                Err(OfflineError::NoSuperblock(_)) => examined.push(None),
                Err(e) => return Err(e),
            }
        }
        let plan = assemble::plan(&candidates)?;
        let mut devs: Vec<Option<M>> = devices.into_iter().map(Some).collect();
        let mut members = Vec::with_capacity(plan.slots.len());
        for slot in &plan.slots {
            let m = slot.and_then(|s| {
                let dev_index = *candidate_dev.get(s.index)?;
                let io = devs.get_mut(dev_index)?.take()?;
                let data_offset = candidates.get(s.index)?.data_offset;
                Some(Member { io, data_offset, valid_to: s.recovered_to })
            });
            members.push(m);
        }
        let unused = devs.into_iter().enumerate().filter_map(|(i, d)| d.map(|d| (i, d))).collect();
        Ok(Assembled {
            array: OfflineArray { geometry: plan.geometry.clone(), members, parity: Parity::new() },
            plan,
            examined,
            unused,
        })
    }

    /// Writes new-array metadata to `devices` (active members first, then
    /// spares) and returns the array over the active ones plus the spares.
    pub fn create(
        params: &CreateParams,
        mut devices: Vec<M>,
    ) -> Result<(Self, create::CreatedArray, Vec<M>), OfflineError> {
        let sizes: Vec<u64> = devices.iter().map(MemberIo::sectors).collect();
        let created = create::create(params, &sizes)?;
        let image = created.bitmap_image();
        for (i, (dev, sb)) in devices.iter_mut().zip(&created.superblocks).enumerate() {
            write_metadata(i, dev, sb, image.as_deref())?;
        }
        let spares = devices.split_off(params.raid_disks as usize);
        let members = devices.into_iter().zip(&created.superblocks).map(|(d, sb)| Some((d, sb.data_offset))).collect();
        let array = OfflineArray::new(created.geometry.clone(), members)?;
        Ok((array, created, spares))
    }

    /// The mapping.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Array size in sectors.
    pub fn sectors(&self) -> u64 {
        self.geometry.array_sectors()
    }

    /// Hands the members back, by slot.
    pub fn into_members(self) -> Vec<Option<M>> {
        self.members.into_iter().map(|m| m.map(|m| m.io)).collect()
    }

    /// Removes the member of `slot` (as if it failed).
    pub fn take_member(&mut self, slot: usize) -> Option<M> {
        self.members.get_mut(slot)?.take().map(|m| m.io)
    }

    /// Whether slot `slot` can serve member sectors `[sector, sector + n)`.
    fn readable(&self, slot: usize, sector: u64, n: u64) -> bool {
        matches!(self.members.get(slot), Some(Some(m)) if m.valid_to.is_none_or(|v| sector + n <= v))
    }

    fn read_member(&self, slot: usize, sector: u64, buf: &mut [u8]) -> Result<bool, OfflineError> {
        if !self.readable(slot, sector, (buf.len() / SECTOR) as u64) {
            return Ok(false);
        }
        let Some(Some(m)) = self.members.get(slot) else {
            return Ok(false);
        };
        m.io.read_at((m.data_offset + sector) * SECTOR_BYTES, buf).map_err(io_err(slot))?;
        Ok(true)
    }

    fn write_member(&mut self, slot: usize, sector: u64, buf: &[u8]) -> Result<bool, OfflineError> {
        let Some(Some(m)) = self.members.get_mut(slot) else {
            return Ok(false);
        };
        m.io.write_at((m.data_offset + sector) * SECTOR_BYTES, buf).map_err(io_err(slot))?;
        Ok(true)
    }

    /// Reads the rows `[sector, sector + n)` of every member of a stripe,
    /// rebuilding what is missing. Returns the blocks by member.
    fn read_stripe(&self, layout: &StripeLayout, sector: u64, n: u64, lba: u64) -> Result<Vec<Vec<u8>>, OfflineError> {
        let len = n as usize * SECTOR;
        let mut blocks: Vec<Option<Vec<u8>>> = Vec::with_capacity(layout.raid_disks());
        for m in 0..layout.raid_disks() {
            let mut b = vec![0u8; len];
            blocks.push(self.read_member(m, sector, &mut b)?.then_some(b));
        }
        solve_stripe(&self.parity, layout, &mut blocks).ok_or(OfflineError::Unavailable(lba))?;
        Ok(blocks.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Reads array sectors starting at `lba` into `buf`, reconstructing
    /// from redundancy where members are missing.
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), OfflineError> {
        if !buf.len().is_multiple_of(SECTOR) {
            return Err(OfflineError::BufferSize(buf.len()));
        }
        for piece in self.geometry.split(lba, (buf.len() / SECTOR) as u64)? {
            let off = piece.io_offset as usize * SECTOR;
            let len = piece.sectors as usize * SECTOR;
            let out = buf.get_mut(off..off + len).ok_or(OfflineError::BufferSize(len))?;
            let ok = match piece.target {
                Target::Single(ms) => self.read_member(ms.member, ms.sector, out)?,
                Target::Mirrored => {
                    let mut ok = false;
                    for c in self.geometry.copies(piece.lba) {
                        if self.read_member(c.member, c.sector, out)? {
                            ok = true;
                            break;
                        }
                    }
                    ok
                }
                Target::Stripe(c) => {
                    if self.read_member(c.data.member, c.data.sector, out)? {
                        true
                    } else {
                        let blocks = self.read_stripe(&c.layout, c.data.sector, piece.sectors, piece.lba)?;
                        match blocks.get(c.data.member) {
                            Some(b) if b.len() == out.len() => {
                                out.copy_from_slice(b);
                                true
                            }
                            _ => false,
                        }
                    }
                }
            };
            if !ok {
                return Err(OfflineError::Unavailable(piece.lba));
            }
        }
        Ok(())
    }

    /// Writes `buf` at array sector `lba`, keeping mirrors and parity
    /// consistent (writes to missing members are skipped, as md does when
    /// degraded).
    pub fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), OfflineError> {
        if !buf.len().is_multiple_of(SECTOR) {
            return Err(OfflineError::BufferSize(buf.len()));
        }
        let pieces: Vec<_> = self.geometry.split(lba, (buf.len() / SECTOR) as u64)?.collect();
        for piece in pieces {
            let off = piece.io_offset as usize * SECTOR;
            let len = piece.sectors as usize * SECTOR;
            let data = buf.get(off..off + len).ok_or(OfflineError::BufferSize(len))?;
            let wrote = match piece.target {
                Target::Single(ms) => self.write_member(ms.member, ms.sector, data)?,
                Target::Mirrored => {
                    let copies: Vec<_> = self.geometry.copies(piece.lba).collect();
                    let mut any = false;
                    for c in copies {
                        any |= self.write_member(c.member, c.sector, data)?;
                    }
                    any
                }
                Target::Stripe(c) => {
                    let mut blocks = self.read_stripe(&c.layout, c.data.sector, piece.sectors, piece.lba)?;
                    if let Some(b) = blocks.get_mut(c.data.member) {
                        b.copy_from_slice(data);
                    }
                    regenerate_parity(&self.parity, &c.layout, &mut blocks)?;
                    let mut any = false;
                    for m in [Some(c.data.member), Some(c.layout.p_member()), c.layout.q_member()].into_iter().flatten()
                    {
                        if let Some(b) = blocks.get(m) {
                            any |= self.write_member(m, c.data.sector, b)?;
                        }
                    }
                    any
                }
            };
            if !wrote {
                return Err(OfflineError::Unavailable(piece.lba));
            }
        }
        Ok(())
    }

    /// Rebuilds slot `slot` from the other members (after a replacement
    /// device was put there with [`OfflineArray::replace_member`]).
    pub fn rebuild(&mut self, slot: usize) -> Result<(), OfflineError> {
        let used = self.geometry.member_used_sectors(slot);
        let mut sector = 0;
        while sector < used {
            let ext = self.geometry.member_extent(slot, sector)?;
            let n = ext.sectors.min(used - sector).min(2048);
            let mut buf = vec![0u8; n as usize * SECTOR];
            match ext.content {
                MemberContent::Data { lba } => {
                    self.read(lba, &mut buf)?;
                }
                MemberContent::Parity { stripe } | MemberContent::Syndrome { stripe } => {
                    let Geometry::Striped(g) = &self.geometry else {
                        return Err(OfflineError::Unavailable(0));
                    };
                    let layout = g.stripe_layout(stripe);
                    let blocks = self.read_stripe(&layout, sector, n, g.lba_of(stripe, 0, 0))?;
                    if let Some(b) = blocks.get(slot) {
                        buf.copy_from_slice(b);
                    }
                }
                MemberContent::Unused => {}
            }
            if let Some(Some(m)) = self.members.get_mut(slot) {
                m.io.write_at((m.data_offset + sector) * SECTOR_BYTES, &buf).map_err(io_err(slot))?;
                m.valid_to = Some(sector + n);
            }
            sector += n;
        }
        if let Some(Some(m)) = self.members.get_mut(slot) {
            m.valid_to = None;
        }
        Ok(())
    }

    /// Puts a device in slot `slot` whose contents are not yet valid
    /// (reads avoid it until [`OfflineArray::rebuild`] has run).
    pub fn replace_member(&mut self, slot: usize, io: M, data_offset: u64) -> Option<M> {
        let old = self.members.get_mut(slot)?.replace(Member { io, data_offset, valid_to: Some(0) });
        old.map(|m| m.io)
    }
}

/// Fills in the missing blocks (`None`) of one stripe row range from the
/// others; returns `None` when too many are missing.
pub fn solve_stripe(parity: &Parity, layout: &StripeLayout, blocks: &mut [Option<Vec<u8>>]) -> Option<()> {
    let len = blocks.iter().flatten().map(Vec::len).next()?;
    let missing: Vec<usize> = (0..layout.raid_disks()).filter(|&m| blocks.get(m).is_none_or(Option::is_none)).collect();
    if missing.is_empty() {
        return Some(());
    }
    let p_member = layout.p_member();
    let q_member = layout.q_member();
    let order: Vec<usize> = layout.syndrome_members().collect();
    let lost_data: Vec<usize> =
        missing.iter().filter(|&&m| matches!(layout.role_of(m), Some(StripeRole::Data(_)))).copied().collect();
    let p_lost = missing.contains(&p_member);
    let q_lost = q_member.is_some_and(|q| missing.contains(&q));
    let slot_of = |m: usize| order.iter().position(|&x| x == m);
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    {
        let empty: &[u8] = &[];
        let data: Vec<&[u8]> =
            order.iter().map(|&m| blocks.get(m).and_then(|b| b.as_deref()).unwrap_or(empty)).collect();
        let get = |m: usize| blocks.get(m).and_then(|b| b.as_deref());
        match (lost_data.as_slice(), p_lost, q_lost) {
            ([], _, _) => {}
            ([x], false, _) => {
                let mut dx = vec![0u8; len];
                parity.recover_data_from_p(&data, slot_of(*x)?, get(p_member)?, &mut dx).ok()?;
                out.push((*x, dx));
            }
            ([x], true, false) => {
                let mut dx = vec![0u8; len];
                let mut p = vec![0u8; len];
                parity.recover_data_from_q(&data, slot_of(*x)?, get(q_member?)?, &mut dx, &mut p).ok()?;
                out.push((*x, dx));
            }
            ([x, y], false, false) => {
                let mut dx = vec![0u8; len];
                let mut dy = vec![0u8; len];
                parity
                    .recover_two_data(
                        &data,
                        slot_of(*x)?,
                        slot_of(*y)?,
                        get(p_member)?,
                        get(q_member?)?,
                        &mut dx,
                        &mut dy,
                    )
                    .ok()?;
                out.push((*x, dx));
                out.push((*y, dy));
            }
            _ => return None,
        }
    }
    for (m, b) in out {
        *blocks.get_mut(m)? = Some(b);
    }
    // Every data block is present now; regenerate lost parity.
    if p_lost || q_lost {
        let mut full: Vec<Vec<u8>> = blocks.iter().map(|b| b.clone().unwrap_or_default()).collect();
        regenerate_parity(parity, layout, &mut full).ok()?;
        for m in [Some(p_member), q_member].into_iter().flatten() {
            if let (Some(slot), Some(b)) = (blocks.get_mut(m), full.get_mut(m)) {
                *slot = Some(std::mem::take(b));
            }
        }
    }
    Some(())
}

/// Recomputes P (and Q) of a stripe from its data blocks (by member).
pub fn regenerate_parity(parity: &Parity, layout: &StripeLayout, blocks: &mut [Vec<u8>]) -> Result<(), OfflineError> {
    let (p, q) = {
        let data: Vec<&[u8]> = layout.syndrome_members().filter_map(|m| blocks.get(m).map(Vec::as_slice)).collect();
        let len = data.first().map_or(0, |d| d.len());
        let mut p = vec![0u8; len];
        let mut q = vec![0u8; len];
        match layout.q_member() {
            Some(_) => parity.gen_pq(&data, &mut p, &mut q)?,
            None => parity.xor(&mut p, &data)?,
        }
        (p, q)
    };
    if let Some(b) = blocks.get_mut(layout.p_member()) {
        *b = p;
    }
    if let Some(b) = layout.q_member().and_then(|m| blocks.get_mut(m)) {
        *b = q;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
