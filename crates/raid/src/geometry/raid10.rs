//! md raid10: near, far and offset copies.
//!
//! Virtual chunk `v` is first placed raid0-style on "device chunk"
//! `v * near`: member `(v * near) % raid_disks`, row `(v * near) /
//! raid_disks`; the other near copies go to the following members
//! (wrapping to the next row). With far copies, each copy is repeated
//! `stride` sectors further down on a member shifted by `near` within its
//! far set; with the offset flag, the stride is one chunk and rows are
//! spaced `far` apart.

use super::{GeometryError, Level, MemberContent, MemberExtent, MemberSector};

/// How far copies choose their member (`layout` bits 17-18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarSets {
    /// 0: one far set spanning every member (mdadm's default).
    Whole,
    /// 1: `raid_disks / far` members per set (a short-lived variant).
    DivFar,
    /// 2: `near * far` members per set.
    NearTimesFar,
}

/// A decoded raid10 layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raid10Layout {
    /// Near copies (bits 0-7).
    pub near: u32,
    /// Far copies (bits 8-15).
    pub far: u32,
    /// Offset layout (bit 16).
    pub offset: bool,
    /// Far-set variant (bits 17-18).
    pub far_sets: FarSets,
}

impl Raid10Layout {
    /// The md default, `n2`.
    pub const NEAR2: Raid10Layout = Raid10Layout { near: 2, far: 1, offset: false, far_sets: FarSets::Whole };

    /// Decodes md's layout number.
    pub fn from_md(layout: u32) -> Option<Raid10Layout> {
        if layout >> 19 != 0 {
            return None;
        }
        let near = layout & 0xff;
        let far = (layout >> 8) & 0xff;
        if near == 0 || far == 0 {
            return None;
        }
        let far_sets = match layout >> 17 {
            0 => FarSets::Whole,
            1 => FarSets::DivFar,
            2 => FarSets::NearTimesFar,
            _ => return None,
        };
        Some(Raid10Layout { near, far, offset: layout & (1 << 16) != 0, far_sets })
    }

    /// md's layout number.
    pub fn to_md(self) -> u32 {
        let sets = match self.far_sets {
            FarSets::Whole => 0,
            FarSets::DivFar => 1,
            FarSets::NearTimesFar => 2,
        };
        (self.near & 0xff) | ((self.far & 0xff) << 8) | (u32::from(self.offset) << 16) | (sets << 17)
    }

    /// Copies of each chunk.
    pub fn copies(self) -> u32 {
        self.near * self.far
    }
}

/// raid10 mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raid10Geometry {
    layout: Raid10Layout,
    raid_disks: u64,
    near: u64,
    far: u64,
    far_set_size: u64,
    chunk_sectors: u64,
    chunk_shift: u32,
    stride: u64,
    dev_sectors: u64,
    array_sectors: u64,
}

impl Raid10Geometry {
    pub(super) fn new(
        layout: u32,
        raid_disks: u32,
        chunk_sectors: u32,
        size: u64,
    ) -> Result<Raid10Geometry, GeometryError> {
        let unsupported = GeometryError::UnsupportedLayout { level: Level::Raid10, layout };
        let l = Raid10Layout::from_md(layout).ok_or(unsupported.clone())?;
        let copies = l.copies();
        if copies < 2 || copies > raid_disks {
            return Err(unsupported);
        }
        // With the offset flag, near copies that wrap to the next row land
        // on the row holding the previous chunk's offset copy: md's own
        // mapping puts two chunks on one sector there. Refuse it.
        if l.offset && l.near > 1 && !raid_disks.is_multiple_of(l.near) {
            return Err(unsupported);
        }
        let disks = u64::from(raid_disks);
        let near = u64::from(l.near);
        let far = u64::from(l.far);
        let far_set_size = match l.far_sets {
            FarSets::Whole => disks,
            FarSets::DivFar => disks / far,
            FarSets::NearTimesFar => near * far,
        };
        if far_set_size == 0 {
            return Err(unsupported);
        }
        let shift = chunk_sectors.trailing_zeros();
        let chunk = u64::from(chunk_sectors);
        // md's calc_sectors(): chunks in the array, then used chunks per
        // member rounded up.
        let wide = |v: u64| u128::from(v);
        let narrow = |v: u128| u64::try_from(v).map_err(|_| GeometryError::Overflow);
        let array_chunks = wide(size >> shift) / wide(far) * wide(disks) / wide(near);
        let used = narrow((array_chunks * u128::from(copies)).div_ceil(wide(disks)))?;
        let dev_sectors = narrow(wide(used) << shift)?;
        let stride = if l.offset { chunk } else { (used / far) << shift };
        // md's raid10_size() on the resulting dev_sectors.
        let array_sectors = narrow((wide(dev_sectors >> shift) / wide(far) * wide(disks) / wide(near)) << shift)?;
        if array_sectors == 0 {
            return Err(GeometryError::Empty);
        }
        Ok(Raid10Geometry {
            layout: l,
            raid_disks: disks,
            near,
            far,
            far_set_size,
            chunk_sectors: chunk,
            chunk_shift: shift,
            stride,
            dev_sectors,
            array_sectors,
        })
    }

    /// The layout.
    pub fn layout(&self) -> Raid10Layout {
        self.layout
    }

    /// Members.
    pub fn raid_disks(&self) -> usize {
        self.raid_disks as usize
    }

    /// Chunk size.
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Sectors used on each member.
    pub fn dev_sectors(&self) -> u64 {
        self.dev_sectors
    }

    /// Array size.
    pub fn array_sectors(&self) -> u64 {
        self.array_sectors
    }

    /// Distance between far copies on a member.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// Copies per chunk.
    pub fn copies_per_chunk(&self) -> usize {
        (self.near * self.far) as usize
    }

    /// Sectors from `lba` to the end of its chunk.
    pub fn run_from(&self, lba: u64) -> u64 {
        self.chunk_sectors - (lba & (self.chunk_sectors - 1))
    }

    /// The copies of array sector `lba`, in md's order.
    pub fn copies(&self, lba: u64) -> Raid10Copies<'_> {
        let chunk = (lba >> self.chunk_shift) * self.near;
        let in_chunk = lba & (self.chunk_sectors - 1);
        let mut stripe = chunk / self.raid_disks;
        let dev = chunk % self.raid_disks;
        if self.layout.offset {
            stripe *= self.far;
        }
        let sector = in_chunk + (stripe << self.chunk_shift);
        Raid10Copies { geo: self, n: 0, f: 0, dev, sector, d: dev, s: sector }
    }

    fn next_far(&self, d: u64) -> u64 {
        let disks = self.raid_disks;
        let fss = self.far_set_size;
        let last_set_start = (disks / fss).saturating_sub(1) * fss;
        let last_set_size = fss + disks % fss;
        let set = d / fss;
        let d = d + self.near;
        if !disks.is_multiple_of(fss) && d > last_set_start {
            (d - last_set_start) % last_set_size + last_set_start
        } else {
            d % fss + fss * set
        }
    }

    /// md's `raid10_find_virt`: the array sector stored at `sector` of
    /// member `dev`, if any.
    pub fn find_virt(&self, dev: usize, sector: u64) -> Option<u64> {
        if sector >= self.dev_sectors || dev as u64 >= self.raid_disks {
            return None;
        }
        let disks = self.raid_disks as i64;
        let fss = self.far_set_size as i64;
        let near = self.near as i64;
        let mut dev = dev as i64;
        let mut far_set_start = (dev / fss) * fss;
        let mut far_set_size = fss;
        if disks % fss != 0 {
            let last_start = (disks / fss - 1) * fss;
            if dev >= last_start {
                far_set_size = fss + disks % fss;
                far_set_start = last_start;
            }
        }
        let offset = sector & (self.chunk_sectors - 1);
        let chunk;
        if self.layout.offset {
            let c = sector >> self.chunk_shift;
            let fc = (c % self.far) as i64;
            chunk = c / self.far;
            dev -= fc * near;
            if dev < far_set_start {
                dev += far_set_size;
            }
        } else {
            if sector >= self.stride.checked_mul(self.far)? {
                return None;
            }
            let mut s = sector;
            while s >= self.stride {
                s -= self.stride;
                if dev < near + far_set_start {
                    dev += far_set_size - near;
                } else {
                    dev -= near;
                }
            }
            chunk = s >> self.chunk_shift;
        }
        let vchunk = (chunk * self.raid_disks + u64::try_from(dev).ok()?) / self.near;
        let lba = (vchunk << self.chunk_shift) + offset;
        (lba < self.array_sectors).then_some(lba)
    }

    pub(super) fn member_extent(&self, member: usize, sector: u64) -> MemberExtent {
        let run = self.chunk_sectors - (sector & (self.chunk_sectors - 1));
        let content = match self.find_virt(member, sector) {
            // Near copies share a device chunk row; confirm this member
            // really holds a copy (it always does unless the row is slack).
            Some(lba) if self.copies(lba).any(|c| c.member == member && c.sector == sector) => {
                MemberContent::Data { lba }
            }
            _ => MemberContent::Unused,
        };
        MemberExtent { content, sectors: run }
    }
}

/// Iterator over the copies of one raid10 sector (md's
/// `__raid10_find_phys`).
#[derive(Debug, Clone)]
pub struct Raid10Copies<'a> {
    geo: &'a Raid10Geometry,
    n: u64,
    f: u64,
    dev: u64,
    sector: u64,
    d: u64,
    s: u64,
}

impl Iterator for Raid10Copies<'_> {
    type Item = MemberSector;

    fn next(&mut self) -> Option<MemberSector> {
        let g = self.geo;
        if self.n >= g.near {
            return None;
        }
        if self.f == 0 {
            self.d = self.dev;
            self.s = self.sector;
        } else {
            self.d = g.next_far(self.d);
            self.s += g.stride;
        }
        let out = MemberSector { member: self.d as usize, sector: self.s };
        self.f += 1;
        if self.f == g.far {
            self.f = 0;
            self.n += 1;
            self.dev += 1;
            if self.dev >= g.raid_disks {
                self.dev = 0;
                self.sector += g.chunk_sectors;
            }
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = ((self.geo.near - self.n) * self.geo.far - self.f) as usize;
        (left, Some(left))
    }
}
