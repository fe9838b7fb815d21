//! md raid0: strip zones.
//!
//! Member sizes are rounded down to the chunk size. Zone 0 stripes across
//! every member up to the smallest size; each further zone stripes across
//! the members that are larger than the previous zone's end, starting on
//! them at that end (`dev_start`). Within a zone, chunk `c` (counted from
//! the zone start) lives on the zone's member `c % n` at chunk row
//! `c / n`. Zones after the first depend on the recorded layout: the
//! "alternate" layout counts `c` from the zone start, the "original"
//! layout chooses the member from the chunk number counted from the array
//! start.

use super::{GeometryError, Level, MemberContent, MemberExtent, MemberSector};

/// raid0 multi-zone layout (`layout` field, meaningful with the
/// `RAID0_LAYOUT` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raid0Layout {
    /// 0: not recorded (fine for a single zone).
    Unspecified,
    /// 1: the layout of kernels before 3.14.
    Original,
    /// 2: the layout of kernels 3.14 to 5.3.
    Alternate,
}

/// One strip zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripZone {
    /// First array sector of the zone.
    pub start: u64,
    /// First array sector after the zone.
    pub end: u64,
    /// Member sector where the zone starts on each of its members.
    pub dev_start: u64,
    /// Roles striped over, in role order.
    pub members: Vec<usize>,
}

/// raid0 mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raid0Geometry {
    chunk_sectors: u64,
    chunk_shift: u32,
    layout: Raid0Layout,
    sizes: Vec<u64>,
    zones: Vec<StripZone>,
}

impl Raid0Geometry {
    pub(super) fn new(
        raid_disks: u32,
        chunk_sectors: u32,
        layout: u32,
        member_sectors: &[u64],
    ) -> Result<Raid0Geometry, GeometryError> {
        if member_sectors.len() != raid_disks as usize {
            return Err(GeometryError::MemberCountMismatch {
                expected: raid_disks as usize,
                got: member_sectors.len(),
            });
        }
        let chunk = u64::from(chunk_sectors);
        let sizes: Vec<u64> = member_sectors.iter().map(|&s| s - s % chunk).collect();
        if sizes.contains(&0) {
            return Err(GeometryError::Empty);
        }
        let mut distinct = sizes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut zones = Vec::with_capacity(distinct.len());
        let mut prev = 0u64;
        let mut start = 0u64;
        for &s in &distinct {
            let members: Vec<usize> = (0..sizes.len()).filter(|&m| sizes[m] > prev).collect();
            let len = (s - prev).checked_mul(members.len() as u64).ok_or(GeometryError::Overflow)?;
            let end = start.checked_add(len).ok_or(GeometryError::Overflow)?;
            zones.push(StripZone { start, end, dev_start: prev, members });
            start = end;
            prev = s;
        }
        let layout = match layout {
            0 => Raid0Layout::Unspecified,
            1 => Raid0Layout::Original,
            2 => Raid0Layout::Alternate,
            _ => return Err(GeometryError::UnsupportedLayout { level: Level::Raid0, layout }),
        };
        if zones.len() > 1 && layout == Raid0Layout::Unspecified {
            return Err(GeometryError::Raid0LayoutRequired);
        }
        Ok(Raid0Geometry { chunk_sectors: chunk, chunk_shift: chunk_sectors.trailing_zeros(), layout, sizes, zones })
    }

    /// Members.
    pub fn raid_disks(&self) -> usize {
        self.sizes.len()
    }

    /// Array size.
    pub fn array_sectors(&self) -> u64 {
        self.zones.last().map_or(0, |z| z.end)
    }

    /// Chunk size.
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// The zones.
    pub fn zones(&self) -> &[StripZone] {
        &self.zones
    }

    /// Multi-zone layout.
    pub fn layout(&self) -> Raid0Layout {
        self.layout
    }

    /// Sectors used on `member`.
    pub fn member_sectors(&self, member: usize) -> u64 {
        self.sizes.get(member).copied().unwrap_or(0)
    }

    fn counts_from_array_start(&self, zone_index: usize) -> bool {
        zone_index > 0 && self.layout == Raid0Layout::Original
    }

    /// Maps an in-range `lba`; returns the place and the sectors left in
    /// its chunk.
    pub fn map(&self, lba: u64) -> (MemberSector, u64) {
        let zi = self.zones.partition_point(|z| z.end <= lba).min(self.zones.len().saturating_sub(1));
        let Some(zone) = self.zones.get(zi) else {
            return (MemberSector { member: 0, sector: 0 }, 0);
        };
        let nb = zone.members.len() as u64;
        let zone_off = lba - zone.start;
        let select = if self.counts_from_array_start(zi) { lba } else { zone_off };
        let in_chunk = select & (self.chunk_sectors - 1);
        let idx = ((select >> self.chunk_shift) % nb) as usize;
        let row = zone_off / (nb << self.chunk_shift);
        let member = zone.members.get(idx).copied().unwrap_or(0);
        (
            MemberSector { member, sector: zone.dev_start + (row << self.chunk_shift) + in_chunk },
            self.chunk_sectors - in_chunk,
        )
    }

    pub(super) fn member_extent(&self, member: usize, sector: u64) -> MemberExtent {
        let unused = MemberExtent { content: MemberContent::Unused, sectors: 1 };
        // The zone holding this member sector: the last zone starting at or
        // before it on the member.
        let zi = self.zones.partition_point(|z| z.dev_start <= sector).saturating_sub(1);
        let Some(zone) = self.zones.get(zi) else {
            return unused;
        };
        let Some(j) = zone.members.iter().position(|&m| m == member) else {
            return unused;
        };
        let nb = zone.members.len() as u64;
        let off = sector - zone.dev_start;
        let row = off >> self.chunk_shift;
        let in_chunk = off & (self.chunk_sectors - 1);
        let lba_chunk = if self.counts_from_array_start(zi) {
            let base = (zone.start >> self.chunk_shift) + row * nb;
            base + (j as u64 + nb - base % nb) % nb
        } else {
            (zone.start >> self.chunk_shift) + row * nb + j as u64
        };
        MemberExtent {
            content: MemberContent::Data { lba: (lba_chunk << self.chunk_shift) + in_chunk },
            sectors: self.chunk_sectors - in_chunk,
        }
    }
}
