//! md linear: members concatenated in role order.

use super::{GeometryError, MemberContent, MemberExtent, MemberSector};

/// Concatenation of members. With a non-zero chunk ("rounding") each
/// member's size is rounded down to a multiple of it, as md does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearGeometry {
    chunk_sectors: u64,
    /// Sectors used on each member.
    sizes: Vec<u64>,
    /// `ends[i]` = first array sector after member `i`.
    ends: Vec<u64>,
}

impl LinearGeometry {
    pub(super) fn new(
        raid_disks: u32,
        chunk_sectors: u32,
        member_sectors: &[u64],
    ) -> Result<LinearGeometry, GeometryError> {
        if member_sectors.len() != raid_disks as usize {
            return Err(GeometryError::MemberCountMismatch {
                expected: raid_disks as usize,
                got: member_sectors.len(),
            });
        }
        let chunk = u64::from(chunk_sectors);
        let mut sizes = Vec::with_capacity(member_sectors.len());
        let mut ends = Vec::with_capacity(member_sectors.len());
        let mut total: u64 = 0;
        for &s in member_sectors {
            let s = if chunk > 0 { s - s % chunk } else { s };
            total = total.checked_add(s).ok_or(GeometryError::Overflow)?;
            sizes.push(s);
            ends.push(total);
        }
        if total == 0 {
            return Err(GeometryError::Empty);
        }
        Ok(LinearGeometry { chunk_sectors: chunk, sizes, ends })
    }

    /// Members.
    pub fn raid_disks(&self) -> usize {
        self.sizes.len()
    }

    /// Array size.
    pub fn array_sectors(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Rounding (0 = none).
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Sectors used on `member`.
    pub fn member_sectors(&self, member: usize) -> u64 {
        self.sizes.get(member).copied().unwrap_or(0)
    }

    fn start_of(&self, member: usize) -> u64 {
        match member.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Maps an in-range `lba`; returns the place and the sectors left on
    /// that member.
    pub fn map(&self, lba: u64) -> (MemberSector, u64) {
        // First member whose end is beyond lba (zero-size members skipped).
        let member = self.ends.partition_point(|&e| e <= lba);
        let start = self.start_of(member);
        let end = self.ends.get(member).copied().unwrap_or(start);
        (MemberSector { member, sector: lba - start }, end.saturating_sub(lba))
    }

    pub(super) fn member_extent(&self, member: usize, sector: u64) -> MemberExtent {
        let size = self.member_sectors(member);
        MemberExtent {
            content: MemberContent::Data { lba: self.start_of(member) + sector },
            sectors: size.saturating_sub(sector),
        }
    }
}
