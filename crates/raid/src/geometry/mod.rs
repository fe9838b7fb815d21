//! Pure address mapping, exactly as Linux md lays data out.
//!
//! A [`Geometry`] maps an array sector (`lba`) to member sectors, where a
//! member sector is relative to that member's `data_offset`, and members
//! are identified by their *role* (raid-disk slot). Nothing here does IO.
//!
//! * linear: members concatenated in role order.
//! * raid0: md's strip zones (equal-size members give a single zone).
//! * raid1: every member holds the whole array.
//! * raid4/5/6: md's `raid5_compute_sector` for every md algorithm number
//!   0–5, including where Q sits and the data order that the Q syndrome
//!   uses.
//! * raid10: md's near/far/offset layouts (`layout` = near copies in bits
//!   0–7, far copies in bits 8–15, bit 16 "offset", bits 17–18 far-set
//!   variant).
//!
//! [`Geometry::split`] cuts an array IO into pieces that each map to one
//! place (one member extent, one stripe chunk or one mirrored chunk);
//! [`Geometry::member_extent`] maps member sectors back, which is what a
//! rebuild walks.

mod linear;
mod raid0;
mod raid10;
mod striped;

pub use linear::LinearGeometry;
pub use raid0::{Raid0Geometry, Raid0Layout, StripZone};
pub use raid10::{FarSets, Raid10Copies, Raid10Geometry, Raid10Layout};
pub use striped::{ParityAlgorithm, StripeLayout, StripeRole, StripedGeometry};

use thiserror::Error;

/// An md RAID level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Concatenation (md level -1).
    Linear,
    /// Striping without redundancy.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striping with a dedicated parity member.
    Raid4,
    /// Striping with rotating parity.
    Raid5,
    /// Striping with rotating P and Q syndromes.
    Raid6,
    /// Mirrored striping (near/far/offset copies).
    Raid10,
}

impl Level {
    /// Decodes md's level number.
    pub fn from_md(level: i32) -> Option<Level> {
        Some(match level {
            -1 => Level::Linear,
            0 => Level::Raid0,
            1 => Level::Raid1,
            4 => Level::Raid4,
            5 => Level::Raid5,
            6 => Level::Raid6,
            10 => Level::Raid10,
            _ => return None,
        })
    }

    /// md's level number.
    pub fn to_md(self) -> i32 {
        match self {
            Level::Linear => -1,
            Level::Raid0 => 0,
            Level::Raid1 => 1,
            Level::Raid4 => 4,
            Level::Raid5 => 5,
            Level::Raid6 => 6,
            Level::Raid10 => 10,
        }
    }

    /// md's name for the level ("raid5", "linear", ...).
    pub fn name(self) -> &'static str {
        match self {
            Level::Linear => "linear",
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid4 => "raid4",
            Level::Raid5 => "raid5",
            Level::Raid6 => "raid6",
            Level::Raid10 => "raid10",
        }
    }

    /// Whether the array size is derived from the superblock's per-member
    /// `size` (true) or from each member's own `data_size` (linear, raid0).
    pub fn uses_size_field(self) -> bool {
        !matches!(self, Level::Linear | Level::Raid0)
    }

    /// How many members may fail without data loss (raid10: at least one).
    pub fn redundancy(self) -> usize {
        match self {
            Level::Linear | Level::Raid0 => 0,
            Level::Raid1 | Level::Raid4 | Level::Raid5 | Level::Raid10 => 1,
            Level::Raid6 => 2,
        }
    }
}

impl core::fmt::Display for Level {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors building a geometry or mapping an address.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GeometryError {
    /// Chunk size unusable for the level.
    #[error("bad chunk size of {chunk_sectors} sectors for {level}")]
    BadChunk {
        /// The level.
        level: Level,
        /// Chunk size in sectors.
        chunk_sectors: u32,
    },
    /// Not enough members for the level.
    #[error("{level} needs at least {min} members, got {raid_disks}")]
    TooFewDisks {
        /// The level.
        level: Level,
        /// Members given.
        raid_disks: u32,
        /// Minimum.
        min: u32,
    },
    /// Too many members.
    #[error("{raid_disks} members is more than the supported {max}")]
    TooManyDisks {
        /// Members given.
        raid_disks: u32,
        /// Maximum.
        max: u32,
    },
    /// Layout number unknown or unsupported for the level.
    #[error("unsupported {level} layout {layout:#x}")]
    UnsupportedLayout {
        /// The level.
        level: Level,
        /// Layout number.
        layout: u32,
    },
    /// Member sizes list does not match `raid_disks`.
    #[error("expected sizes for {expected} members, got {got}")]
    MemberCountMismatch {
        /// raid_disks.
        expected: usize,
        /// Sizes given.
        got: usize,
    },
    /// A multi-zone raid0 without a recorded layout (the kernel refuses it).
    #[error("raid0 with members of different sizes needs a layout (original or alternate)")]
    Raid0LayoutRequired,
    /// Members too small to hold a single chunk.
    #[error("array would be empty")]
    Empty,
    /// An address outside the array.
    #[error("sectors {lba}+{sectors} outside the array of {array_sectors} sectors")]
    OutOfRange {
        /// Start sector.
        lba: u64,
        /// Length.
        sectors: u64,
        /// Array size.
        array_sectors: u64,
    },
    /// A member role outside the array.
    #[error("no member with role {member} (raid disks {raid_disks})")]
    NoSuchMember {
        /// Role asked for.
        member: usize,
        /// raid_disks.
        raid_disks: usize,
    },
    /// Arithmetic overflow (absurd sizes).
    #[error("geometry arithmetic overflow")]
    Overflow,
}

/// Most members a geometry accepts (md's 1.x limit is 1920 roles).
pub const MAX_RAID_DISKS: u32 = 1920;

/// Parameters of an array, as recorded in its superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayParams {
    /// Level.
    pub level: Level,
    /// Level-specific layout number.
    pub layout: u32,
    /// Chunk size in sectors (0 for raid1, 0 or a rounding for linear).
    pub chunk_sectors: u32,
    /// Members (roles).
    pub raid_disks: u32,
    /// Per-member sectors used by the array (`size`; ignored by linear and
    /// raid0).
    pub dev_sectors: u64,
    /// Data sectors of each role (`data_size`), needed by linear and raid0;
    /// may be empty for the other levels.
    pub member_sectors: Vec<u64>,
}

/// A place on a member: role and sector relative to its data offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberSector {
    /// Member role (raid-disk slot).
    pub member: usize,
    /// Sector from the member's data offset.
    pub sector: u64,
}

/// A data chunk of a parity stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeChunk {
    /// Stripe number (the member sector of the stripe's first row is
    /// `stripe * chunk_sectors`).
    pub stripe: u64,
    /// Logical data index within the stripe (0..data_disks).
    pub data_index: usize,
    /// Where the data is.
    pub data: MemberSector,
    /// Parity layout of the stripe.
    pub layout: StripeLayout,
}

/// Where an array extent lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On exactly one member (linear, raid0).
    Single(MemberSector),
    /// On every copy returned by [`Geometry::copies`] for this lba (raid1,
    /// raid10).
    Mirrored,
    /// A data chunk of a parity stripe (raid4/5/6).
    Stripe(StripeChunk),
}

/// One piece of a split IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First array sector.
    pub lba: u64,
    /// Sectors in the piece.
    pub sectors: u64,
    /// Offset of the piece in the original IO, in sectors.
    pub io_offset: u64,
    /// Where it lives.
    pub target: Target,
}

/// What a member holds at some sector (the reverse mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberContent {
    /// Array data at `lba`.
    Data {
        /// Array sector.
        lba: u64,
    },
    /// The P (XOR) parity of a stripe.
    Parity {
        /// Stripe number.
        stripe: u64,
    },
    /// The Q syndrome of a raid6 stripe.
    Syndrome {
        /// Stripe number.
        stripe: u64,
    },
    /// Not used by the array.
    Unused,
}

/// A run of member sectors with uniform content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberExtent {
    /// What the first sector holds; following sectors continue it
    /// (consecutive lbas or rows of the same stripe).
    pub content: MemberContent,
    /// Length of the run in sectors.
    pub sectors: u64,
}

/// A level's address mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Geometry {
    /// Concatenation.
    Linear(LinearGeometry),
    /// Striping.
    Raid0(Raid0Geometry),
    /// Mirroring: `raid_disks` copies at the same sector.
    Raid1 {
        /// Members.
        raid_disks: usize,
        /// Sectors per member (= array size).
        dev_sectors: u64,
    },
    /// raid4/5/6.
    Striped(StripedGeometry),
    /// raid10.
    Raid10(Raid10Geometry),
}

fn check_disks(level: Level, raid_disks: u32, min: u32) -> Result<(), GeometryError> {
    if raid_disks < min {
        return Err(GeometryError::TooFewDisks { level, raid_disks, min });
    }
    if raid_disks > MAX_RAID_DISKS {
        return Err(GeometryError::TooManyDisks { raid_disks, max: MAX_RAID_DISKS });
    }
    Ok(())
}

/// md's chunk rule for striped levels: a power of two of at least 4 KiB.
fn check_pow2_chunk(level: Level, chunk_sectors: u32) -> Result<(), GeometryError> {
    if chunk_sectors < 8 || !chunk_sectors.is_power_of_two() {
        return Err(GeometryError::BadChunk { level, chunk_sectors });
    }
    Ok(())
}

impl Geometry {
    /// Builds the mapping for `p`.
    pub fn new(p: &ArrayParams) -> Result<Geometry, GeometryError> {
        match p.level {
            Level::Linear => {
                check_disks(p.level, p.raid_disks, 1)?;
                Ok(Geometry::Linear(LinearGeometry::new(p.raid_disks, p.chunk_sectors, &p.member_sectors)?))
            }
            Level::Raid0 => {
                check_disks(p.level, p.raid_disks, 1)?;
                check_pow2_chunk(p.level, p.chunk_sectors)?;
                Ok(Geometry::Raid0(Raid0Geometry::new(p.raid_disks, p.chunk_sectors, p.layout, &p.member_sectors)?))
            }
            Level::Raid1 => {
                check_disks(p.level, p.raid_disks, 1)?;
                if p.dev_sectors == 0 {
                    return Err(GeometryError::Empty);
                }
                Ok(Geometry::Raid1 { raid_disks: p.raid_disks as usize, dev_sectors: p.dev_sectors })
            }
            Level::Raid4 | Level::Raid5 | Level::Raid6 => {
                let min = if p.level == Level::Raid6 { 4 } else { 2 };
                check_disks(p.level, p.raid_disks, min)?;
                check_pow2_chunk(p.level, p.chunk_sectors)?;
                Ok(Geometry::Striped(StripedGeometry::new(
                    p.level,
                    p.layout,
                    p.raid_disks,
                    p.chunk_sectors,
                    p.dev_sectors,
                )?))
            }
            Level::Raid10 => {
                check_disks(p.level, p.raid_disks, 2)?;
                check_pow2_chunk(p.level, p.chunk_sectors)?;
                Ok(Geometry::Raid10(Raid10Geometry::new(p.layout, p.raid_disks, p.chunk_sectors, p.dev_sectors)?))
            }
        }
    }

    /// The level.
    pub fn level(&self) -> Level {
        match self {
            Geometry::Linear(_) => Level::Linear,
            Geometry::Raid0(_) => Level::Raid0,
            Geometry::Raid1 { .. } => Level::Raid1,
            Geometry::Striped(s) => s.level(),
            Geometry::Raid10(_) => Level::Raid10,
        }
    }

    /// Number of member roles.
    pub fn raid_disks(&self) -> usize {
        match self {
            Geometry::Linear(g) => g.raid_disks(),
            Geometry::Raid0(g) => g.raid_disks(),
            Geometry::Raid1 { raid_disks, .. } => *raid_disks,
            Geometry::Striped(g) => g.raid_disks(),
            Geometry::Raid10(g) => g.raid_disks(),
        }
    }

    /// Array size in sectors.
    pub fn array_sectors(&self) -> u64 {
        match self {
            Geometry::Linear(g) => g.array_sectors(),
            Geometry::Raid0(g) => g.array_sectors(),
            Geometry::Raid1 { dev_sectors, .. } => *dev_sectors,
            Geometry::Striped(g) => g.array_sectors(),
            Geometry::Raid10(g) => g.array_sectors(),
        }
    }

    /// Chunk size in sectors (0 when the level has none).
    pub fn chunk_sectors(&self) -> u64 {
        match self {
            Geometry::Linear(g) => g.chunk_sectors(),
            Geometry::Raid0(g) => g.chunk_sectors(),
            Geometry::Raid1 { .. } => 0,
            Geometry::Striped(g) => g.chunk_sectors(),
            Geometry::Raid10(g) => g.chunk_sectors(),
        }
    }

    /// Sectors of member `member` that the array uses (from its data
    /// offset); what a rebuild must cover.
    pub fn member_used_sectors(&self, member: usize) -> u64 {
        match self {
            Geometry::Linear(g) => g.member_sectors(member),
            Geometry::Raid0(g) => g.member_sectors(member),
            Geometry::Raid1 { dev_sectors, raid_disks } => {
                if member < *raid_disks {
                    *dev_sectors
                } else {
                    0
                }
            }
            Geometry::Striped(g) => {
                if member < g.raid_disks() {
                    g.member_used_sectors()
                } else {
                    0
                }
            }
            Geometry::Raid10(g) => {
                if member < g.raid_disks() {
                    g.dev_sectors()
                } else {
                    0
                }
            }
        }
    }

    /// Length of the md resync range, which is also what each write-intent
    /// bitmap bit counts in: array sectors for raid10, member sectors for
    /// raid1/4/5/6 (0 for levels without redundancy).
    pub fn resync_sectors(&self) -> u64 {
        match self {
            Geometry::Linear(_) | Geometry::Raid0(_) => 0,
            Geometry::Raid1 { dev_sectors, .. } => *dev_sectors,
            Geometry::Striped(g) => g.member_used_sectors(),
            Geometry::Raid10(g) => g.array_sectors(),
        }
    }

    /// Checks that `[lba, lba + sectors)` lies in the array.
    pub fn check_range(&self, lba: u64, sectors: u64) -> Result<(), GeometryError> {
        let array_sectors = self.array_sectors();
        match lba.checked_add(sectors) {
            Some(end) if end <= array_sectors => Ok(()),
            _ => Err(GeometryError::OutOfRange { lba, sectors, array_sectors }),
        }
    }

    /// Maps one sector and says how many following sectors map the same way
    /// (to the end of the chunk or member). `lba` must be inside the array.
    pub fn locate(&self, lba: u64) -> Result<(Target, u64), GeometryError> {
        self.check_range(lba, 1)?;
        Ok(match self {
            Geometry::Linear(g) => {
                let (ms, run) = g.map(lba);
                (Target::Single(ms), run)
            }
            Geometry::Raid0(g) => {
                let (ms, run) = g.map(lba);
                (Target::Single(ms), run)
            }
            Geometry::Raid1 { dev_sectors, .. } => (Target::Mirrored, dev_sectors - lba),
            Geometry::Striped(g) => {
                let (chunk, run) = g.map(lba);
                (Target::Stripe(chunk), run)
            }
            Geometry::Raid10(g) => (Target::Mirrored, g.run_from(lba)),
        })
    }

    /// Every copy of array sector `lba` for raid1/raid10 (empty for other
    /// levels). Copies keep md's order: md reads the first in-sync one when
    /// it cannot balance.
    pub fn copies(&self, lba: u64) -> Copies<'_> {
        match self {
            Geometry::Raid1 { raid_disks, .. } => Copies::Raid1 { next: 0, raid_disks: *raid_disks, sector: lba },
            Geometry::Raid10(g) => Copies::Raid10(g.copies(lba)),
            _ => Copies::None,
        }
    }

    /// Cuts `[lba, lba + sectors)` into pieces with one [`Target`] each.
    pub fn split(&self, lba: u64, sectors: u64) -> Result<Split<'_>, GeometryError> {
        self.check_range(lba, sectors)?;
        Ok(Split { geo: self, lba, end: lba + sectors, start: lba })
    }

    /// What member `member` holds at `sector` (from its data offset), and
    /// for how many sectors that continues.
    pub fn member_extent(&self, member: usize, sector: u64) -> Result<MemberExtent, GeometryError> {
        let raid_disks = self.raid_disks();
        if member >= raid_disks {
            return Err(GeometryError::NoSuchMember { member, raid_disks });
        }
        let used = self.member_used_sectors(member);
        if sector >= used {
            return Ok(MemberExtent { content: MemberContent::Unused, sectors: u64::MAX - sector });
        }
        Ok(match self {
            Geometry::Linear(g) => g.member_extent(member, sector),
            Geometry::Raid0(g) => g.member_extent(member, sector),
            Geometry::Raid1 { dev_sectors, .. } => {
                MemberExtent { content: MemberContent::Data { lba: sector }, sectors: dev_sectors - sector }
            }
            Geometry::Striped(g) => g.member_extent(member, sector),
            Geometry::Raid10(g) => g.member_extent(member, sector),
        })
    }
}

/// Iterator over the copies of one array sector.
#[derive(Debug, Clone)]
pub enum Copies<'a> {
    /// Not a mirrored level.
    None,
    /// raid1: every member at the same sector.
    Raid1 {
        /// Next member.
        next: usize,
        /// Members.
        raid_disks: usize,
        /// The sector.
        sector: u64,
    },
    /// raid10.
    Raid10(Raid10Copies<'a>),
}

impl Iterator for Copies<'_> {
    type Item = MemberSector;

    fn next(&mut self) -> Option<MemberSector> {
        match self {
            Copies::None => None,
            Copies::Raid1 { next, raid_disks, sector } => {
                if *next >= *raid_disks {
                    return None;
                }
                let m = MemberSector { member: *next, sector: *sector };
                *next += 1;
                Some(m)
            }
            Copies::Raid10(c) => c.next(),
        }
    }
}

/// Iterator produced by [`Geometry::split`].
#[derive(Debug, Clone)]
pub struct Split<'a> {
    geo: &'a Geometry,
    start: u64,
    lba: u64,
    end: u64,
}

impl Iterator for Split<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.lba >= self.end {
            return None;
        }
        // The range was checked when the iterator was made.
        let (target, run) = self.geo.locate(self.lba).ok()?;
        let sectors = run.min(self.end - self.lba).max(1);
        let piece = Piece { lba: self.lba, sectors, io_offset: self.lba - self.start, target };
        self.lba += sectors;
        Some(piece)
    }
}

#[cfg(test)]
mod tests;
