//! The Linux md version-1 superblock (`struct mdp_superblock_1`).
//!
//! Layout (all fields little-endian, 256 bytes followed by `max_dev` 16-bit
//! device roles):
//!
//! | offset | field |
//! | ---: | --- |
//! | 0 | magic `0xa92b4efc`, major version 1, feature map, pad |
//! | 16 | set UUID (16 bytes), set name (32 bytes) |
//! | 64 | ctime, level, layout, size (sectors per member), chunk size, raid disks, bitmap offset |
//! | 104 | reshape fields: new level, reshape position, delta disks, new layout, new chunk, new offset |
//! | 128 | data offset, data size, super offset, recovery offset, device number, corrected reads |
//! | 168 | device UUID, device flags, bad-block log shift/size/offset |
//! | 192 | utime, events, resync offset, checksum, max_dev, 32 bytes padding |
//! | 256 | `dev_roles[max_dev]` |
//!
//! The checksum is the 32-bit little-endian word sum of the first
//! `256 + 2 * max_dev` bytes (checksum field taken as zero; a trailing
//! 16-bit half word is added as such) with the carry folded back once.
//!
//! Minor versions 1.0, 1.1 and 1.2 differ only in where the superblock sits
//! ([`SuperblockVersion`]); v1.2 (4 KiB from the start of the member) is
//! mdadm's default and what [`crate::create`] writes.

pub mod bitmap;

use thiserror::Error;
use zerocopy::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::geometry::Level;

/// `MD_SB_MAGIC`.
pub const MD_SB_MAGIC: u32 = 0xa92b_4efc;
/// Size of the fixed part of the superblock in bytes.
pub const SB_FIXED_BYTES: usize = 256;
/// Largest `max_dev` the kernel accepts: the superblock plus roles must fit
/// in 4 KiB.
pub const MAX_DEV_LIMIT: u32 = ((4096 - SB_FIXED_BYTES) / 2) as u32;
/// `max_dev` mdadm writes for new arrays.
pub const DEFAULT_MAX_DEV: u32 = 128;
/// "Everything is in sync" value of `resync_offset` / "no recovery" marker.
pub const MAX_SECTOR: u64 = u64::MAX;
/// Sectors are 512 bytes in every md offset field.
pub const SECTOR_BYTES: u64 = 512;

/// Where the superblock of a given minor version lives on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockVersion {
    /// 1.0: at least 8 KiB from the end, 4 KiB aligned.
    V1_0,
    /// 1.1: at the start of the member.
    V1_1,
    /// 1.2: 4 KiB from the start of the member (mdadm's default).
    V1_2,
}

impl SuperblockVersion {
    /// The superblock's sector on a member of `device_sectors` sectors, or
    /// `None` when the member is too small to hold one.
    pub fn super_offset(self, device_sectors: u64) -> Option<u64> {
        match self {
            SuperblockVersion::V1_0 => {
                let s = device_sectors.checked_sub(8 * 2)?;
                Some(s & !(4 * 2 - 1))
            }
            SuperblockVersion::V1_1 => (device_sectors >= 8).then_some(0),
            SuperblockVersion::V1_2 => (device_sectors >= 16).then_some(8),
        }
    }
}

/// On-disk image of the fixed 256-byte part of `struct mdp_superblock_1`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawSuperblock1 {
    /// `MD_SB_MAGIC`.
    pub magic: U32,
    /// Always 1.
    pub major_version: U32,
    /// [`FeatureMap`] bits.
    pub feature_map: U32,
    /// Zero.
    pub pad0: U32,
    /// Array UUID.
    pub set_uuid: [u8; 16],
    /// Array name, NUL padded ("homehost:name" by mdadm convention).
    pub set_name: [u8; 32],
    /// Creation time: low 40 bits seconds, high 24 bits microseconds.
    pub ctime: U64,
    /// RAID level (-1 linear, 0, 1, 4, 5, 6, 10).
    pub level: I32,
    /// Level-specific layout.
    pub layout: U32,
    /// Sectors of each member used by the array.
    pub size: U64,
    /// Chunk size in sectors.
    pub chunksize: U32,
    /// Number of member roles in the array.
    pub raid_disks: U32,
    /// Signed sector offset of the write-intent bitmap from the superblock
    /// (or PPL offset/size when the PPL feature is set).
    pub bitmap_offset: I32,
    /// Reshape: target level.
    pub new_level: U32,
    /// Reshape: next array address to reshape.
    pub reshape_position: U64,
    /// Reshape: change in raid disks (signed).
    pub delta_disks: U32,
    /// Reshape: target layout.
    pub new_layout: U32,
    /// Reshape: target chunk (sectors).
    pub new_chunk: U32,
    /// Reshape: signed change of data offset.
    pub new_offset: U32,
    /// Sector where data starts on this member.
    pub data_offset: U64,
    /// Sectors usable for data on this member.
    pub data_size: U64,
    /// Sector of this superblock.
    pub super_offset: U64,
    /// Sectors (from data offset) already recovered on this member.
    pub recovery_offset: U64,
    /// Permanent index of this member into `dev_roles`.
    pub dev_number: U32,
    /// Read errors corrected by rewriting.
    pub cnt_corrected_read: U32,
    /// UUID of this member.
    pub device_uuid: [u8; 16],
    /// [`DevFlags`] bits.
    pub devflags: u8,
    /// Bad-block log: shift from sectors to block size.
    pub bblog_shift: u8,
    /// Bad-block log: sectors reserved.
    pub bblog_size: U16,
    /// Bad-block log: signed sector offset from the superblock.
    pub bblog_offset: I32,
    /// Update time (same encoding as ctime).
    pub utime: U64,
    /// Event counter, incremented on every superblock update.
    pub events: U64,
    /// Sectors (from data offset) known to be in sync; `MAX_SECTOR` = clean.
    pub resync_offset: U64,
    /// Checksum (see module docs).
    pub sb_csum: U32,
    /// Number of entries in `dev_roles`.
    pub max_dev: U32,
    /// Zero.
    pub pad3: [u8; 32],
}

const _: () = assert!(core::mem::size_of::<RawSuperblock1>() == SB_FIXED_BYTES);
const _: () = assert!(core::mem::offset_of!(RawSuperblock1, data_offset) == 128);
const _: () = assert!(core::mem::offset_of!(RawSuperblock1, utime) == 192);
const CSUM_OFFSET: usize = core::mem::offset_of!(RawSuperblock1, sb_csum);

/// The superblock's feature bits (`MD_FEATURE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureMap(pub u32);

impl FeatureMap {
    /// `bitmap_offset` is meaningful: an internal write-intent bitmap.
    pub const BITMAP_OFFSET: u32 = 1;
    /// `recovery_offset` must be honoured.
    pub const RECOVERY_OFFSET: u32 = 2;
    /// A reshape is in progress.
    pub const RESHAPE_ACTIVE: u32 = 4;
    /// The bad-block log is not empty.
    pub const BAD_BLOCKS: u32 = 8;
    /// This member is replacing the active member with the same role.
    pub const REPLACEMENT: u32 = 16;
    /// The reshape runs backwards.
    pub const RESHAPE_BACKWARDS: u32 = 32;
    /// `new_offset` must be honoured.
    pub const NEW_OFFSET: u32 = 64;
    /// Recovery is guided by the bitmap.
    pub const RECOVERY_BITMAP: u32 = 128;
    /// Clustered md.
    pub const CLUSTERED: u32 = 256;
    /// This member is a raid5 journal.
    pub const JOURNAL: u32 = 512;
    /// Partial parity log.
    pub const PPL: u32 = 1024;
    /// Multiple partial parity logs.
    pub const MULTIPLE_PPLS: u32 = 2048;
    /// `layout` of a multi-zone raid0 is meaningful.
    pub const RAID0_LAYOUT: u32 = 4096;
    /// Every bit the kernel knows.
    pub const ALL: u32 = 0x1fff;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Sets `bits`.
    pub fn insert(&mut self, bits: u32) {
        self.0 |= bits;
    }

    /// Clears `bits`.
    pub fn remove(&mut self, bits: u32) {
        self.0 &= !bits;
    }
}

/// Per-device flags (`devflags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevFlags(pub u8);

impl DevFlags {
    /// Prefer not to read from this member (RAID1).
    pub const WRITE_MOSTLY: u8 = 1;
    /// Fail fast instead of retrying.
    pub const FAIL_FAST: u8 = 2;
}

/// md's 64-bit timestamp: 40 bits of seconds, 24 bits of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MdTime(pub u64);

impl MdTime {
    const SEC_MASK: u64 = (1 << 40) - 1;

    /// Builds a timestamp (microseconds are clamped below 2^24).
    pub fn new(seconds: u64, micros: u32) -> MdTime {
        let micros = u64::from(micros.min((1 << 24) - 1));
        MdTime((seconds & Self::SEC_MASK) | (micros << 40))
    }

    /// The current wall-clock time in whole seconds. Linux and mdadm both
    /// write zero microseconds, and the kernel takes the whole 64-bit
    /// field as seconds when it reports the array's times (mdadm then
    /// sees a ctime mismatch), so the microsecond part stays zero.
    pub fn now() -> MdTime {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        MdTime::new(d.as_secs(), 0)
    }

    /// Seconds since the Unix epoch.
    pub fn seconds(self) -> u64 {
        self.0 & Self::SEC_MASK
    }

    /// Microseconds part.
    pub fn micros(self) -> u32 {
        // Top 24 bits only: always fits.
        u32::try_from(self.0 >> 40).unwrap_or(0)
    }
}

/// Role of the member with a given device number (`dev_roles[]` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevRole {
    /// Active member at this raid-disk slot.
    Active(u16),
    /// Hot spare (`0xffff`), also the value of unused slots.
    Spare,
    /// Failed member (`0xfffe`).
    Faulty,
    /// raid5 journal device (`0xfffd`).
    Journal,
}

impl DevRole {
    /// `MD_DISK_ROLE_SPARE`.
    pub const SPARE: u16 = 0xffff;
    /// `MD_DISK_ROLE_FAULTY`.
    pub const FAULTY: u16 = 0xfffe;
    /// `MD_DISK_ROLE_JOURNAL`.
    pub const JOURNAL: u16 = 0xfffd;
    /// Roles at or above this value are reserved.
    pub const MAX_ACTIVE: u16 = 0xff00;

    /// Decodes an on-disk role.
    pub fn from_raw(v: u16) -> Option<DevRole> {
        match v {
            Self::SPARE => Some(DevRole::Spare),
            Self::FAULTY => Some(DevRole::Faulty),
            Self::JOURNAL => Some(DevRole::Journal),
            v if v < Self::MAX_ACTIVE => Some(DevRole::Active(v)),
            _ => None,
        }
    }

    /// Encodes the role.
    pub fn to_raw(self) -> u16 {
        match self {
            DevRole::Active(v) => v,
            DevRole::Spare => Self::SPARE,
            DevRole::Faulty => Self::FAULTY,
            DevRole::Journal => Self::JOURNAL,
        }
    }
}

/// Reshape bookkeeping fields (meaningful only with
/// [`FeatureMap::RESHAPE_ACTIVE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReshapeInfo {
    /// Target level.
    pub new_level: i32,
    /// Next array address to reshape.
    pub reshape_position: u64,
    /// Change in raid disks.
    pub delta_disks: i32,
    /// Target layout.
    pub new_layout: u32,
    /// Target chunk size in sectors.
    pub new_chunk: u32,
    /// Change of data offset.
    pub new_offset: i32,
}

/// Errors found while decoding or validating a superblock.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SuperblockError {
    /// The buffer cannot hold what the superblock declares.
    #[error("superblock buffer too short: need {needed} bytes, have {got}")]
    TooShort {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Wrong magic number (no md v1 superblock here).
    #[error("bad md superblock magic {0:#010x}")]
    BadMagic(u32),
    /// Major version other than 1.
    #[error("unsupported md superblock major version {0}")]
    BadMajorVersion(u32),
    /// `max_dev` larger than what fits in 4 KiB.
    #[error("max_dev {0} out of range (at most {MAX_DEV_LIMIT})")]
    MaxDevOutOfRange(u32),
    /// Checksum mismatch.
    #[error("superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Value on disk.
        stored: u32,
        /// Value computed over the buffer.
        computed: u32,
    },
    /// Feature bits this implementation does not know.
    #[error("unknown superblock feature bits {0:#x}")]
    UnknownFeatures(u32),
    /// Feature bits this implementation knows but does not support.
    #[error("unsupported superblock features {0:#x}")]
    UnsupportedFeatures(u32),
    /// Padding that must be zero is not.
    #[error("non-zero superblock padding")]
    NonZeroPadding,
    /// Unknown RAID level.
    #[error("unknown raid level {0}")]
    UnknownLevel(i32),
    /// A `dev_roles` entry in the reserved range.
    #[error("dev_roles[{index}] has reserved value {value:#06x}")]
    InvalidRole {
        /// Index in `dev_roles`.
        index: usize,
        /// Raw value.
        value: u16,
    },
    /// `dev_number` not below `max_dev`.
    #[error("dev_number {dev_number} not below max_dev {max_dev}")]
    DevNumberOutOfRange {
        /// This member's device number.
        dev_number: u32,
        /// Size of `dev_roles`.
        max_dev: u32,
    },
    /// The superblock was not found where it says it is.
    #[error("superblock records super_offset {recorded} but was read at sector {actual}")]
    SuperOffsetMismatch {
        /// `super_offset` field.
        recorded: u64,
        /// Sector it was read from.
        actual: u64,
    },
    /// A region ends beyond the member.
    #[error("{region} ends at sector {end}, past the member's {device_sectors} sectors")]
    PastDevice {
        /// Which region.
        region: &'static str,
        /// First sector after the region.
        end: u64,
        /// Member size in sectors.
        device_sectors: u64,
    },
    /// A region overlaps the data area or the superblock.
    #[error("{region} overlaps {other}")]
    Overlap {
        /// Which region.
        region: &'static str,
        /// What it overlaps.
        other: &'static str,
    },
    /// `size` larger than `data_size` on a level that uses `size`.
    #[error("array uses {size} sectors per member but this member has only {data_size}")]
    SizeExceedsData {
        /// `size` field.
        size: u64,
        /// `data_size` field.
        data_size: u64,
    },
    /// The set name is longer than 32 bytes.
    #[error("set name longer than 32 bytes")]
    NameTooLong,
}

/// A decoded, validated md v1 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Feature bits.
    pub feature_map: FeatureMap,
    /// Array UUID.
    pub set_uuid: [u8; 16],
    /// Array name (raw, NUL padded).
    pub set_name: [u8; 32],
    /// Creation time.
    pub ctime: MdTime,
    /// RAID level.
    pub level: Level,
    /// Level-specific layout number.
    pub layout: u32,
    /// Sectors of each member used by the array (`size`).
    pub size: u64,
    /// Chunk size in sectors.
    pub chunk_sectors: u32,
    /// Member roles in the array.
    pub raid_disks: u32,
    /// Bitmap offset in sectors relative to the superblock.
    pub bitmap_offset: i32,
    /// Reshape fields.
    pub reshape: ReshapeInfo,
    /// Data start on this member.
    pub data_offset: u64,
    /// Data sectors on this member.
    pub data_size: u64,
    /// Sector of this superblock.
    pub super_offset: u64,
    /// Recovered sectors of this member.
    pub recovery_offset: u64,
    /// This member's index into `dev_roles`.
    pub dev_number: u32,
    /// Corrected read errors.
    pub cnt_corrected_read: u32,
    /// Member UUID.
    pub device_uuid: [u8; 16],
    /// Device flags.
    pub devflags: DevFlags,
    /// Bad-block log shift.
    pub bblog_shift: u8,
    /// Bad-block log size in sectors.
    pub bblog_size: u16,
    /// Bad-block log offset from the superblock in sectors.
    pub bblog_offset: i32,
    /// Last update time.
    pub utime: MdTime,
    /// Event counter.
    pub events: u64,
    /// In-sync watermark (`MAX_SECTOR` when clean).
    pub resync_offset: u64,
    /// Roles indexed by device number; its length is `max_dev`.
    pub dev_roles: Vec<DevRole>,
}

/// Computes `sb_csum` over an encoded superblock (the stored checksum field
/// is ignored). `bytes` must hold at least `256 + 2 * max_dev` bytes, where
/// `max_dev` is read from the buffer.
pub fn checksum(bytes: &[u8]) -> Result<u32, SuperblockError> {
    let raw = raw_prefix(bytes)?;
    let max_dev = raw.max_dev.get();
    if max_dev > MAX_DEV_LIMIT {
        return Err(SuperblockError::MaxDevOutOfRange(max_dev));
    }
    let len = SB_FIXED_BYTES + 2 * max_dev as usize;
    let region = bytes.get(..len).ok_or(SuperblockError::TooShort { needed: len, got: bytes.len() })?;
    Ok(checksum_region(region))
}

fn checksum_region(region: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let words = region.chunks_exact(4);
    let tail = words.remainder();
    for (i, w) in words.enumerate() {
        if i * 4 == CSUM_OFFSET {
            continue;
        }
        sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    if let [a, b] = tail {
        sum += u64::from(u16::from_le_bytes([*a, *b]));
    }
    // Fold the carry once, truncating like the kernel's 32-bit result.
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

fn raw_prefix(bytes: &[u8]) -> Result<RawSuperblock1, SuperblockError> {
    RawSuperblock1::read_from_prefix(bytes)
        .map(|(raw, _)| raw)
        .map_err(|_| SuperblockError::TooShort { needed: SB_FIXED_BYTES, got: bytes.len() })
}

impl Superblock {
    /// Decodes a superblock from `bytes` (which must start at the
    /// superblock) and checks everything that does not need to know the
    /// member: magic, version, `max_dev`, checksum, feature bits, padding,
    /// level and roles.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let raw = raw_prefix(bytes)?;
        if raw.magic.get() != MD_SB_MAGIC {
            return Err(SuperblockError::BadMagic(raw.magic.get()));
        }
        if raw.major_version.get() != 1 {
            return Err(SuperblockError::BadMajorVersion(raw.major_version.get()));
        }
        let max_dev = raw.max_dev.get();
        if max_dev > MAX_DEV_LIMIT {
            return Err(SuperblockError::MaxDevOutOfRange(max_dev));
        }
        let computed = checksum(bytes)?;
        if computed != raw.sb_csum.get() {
            return Err(SuperblockError::BadChecksum { stored: raw.sb_csum.get(), computed });
        }
        let features = raw.feature_map.get();
        if features & !FeatureMap::ALL != 0 {
            return Err(SuperblockError::UnknownFeatures(features & !FeatureMap::ALL));
        }
        if raw.pad0.get() != 0 || raw.pad3.iter().any(|&b| b != 0) {
            return Err(SuperblockError::NonZeroPadding);
        }
        let level = Level::from_md(raw.level.get()).ok_or(SuperblockError::UnknownLevel(raw.level.get()))?;
        if raw.dev_number.get() >= max_dev {
            return Err(SuperblockError::DevNumberOutOfRange { dev_number: raw.dev_number.get(), max_dev });
        }
        let roles_bytes = bytes
            .get(SB_FIXED_BYTES..SB_FIXED_BYTES + 2 * max_dev as usize)
            .ok_or(SuperblockError::TooShort { needed: SB_FIXED_BYTES + 2 * max_dev as usize, got: bytes.len() })?;
        let mut dev_roles = Vec::with_capacity(max_dev as usize);
        for (index, pair) in roles_bytes.chunks_exact(2).enumerate() {
            let value = u16::from_le_bytes([pair[0], pair[1]]);
            dev_roles.push(DevRole::from_raw(value).ok_or(SuperblockError::InvalidRole { index, value })?);
        }
        Ok(Superblock {
            feature_map: FeatureMap(features),
            set_uuid: raw.set_uuid,
            set_name: raw.set_name,
            ctime: MdTime(raw.ctime.get()),
            level,
            layout: raw.layout.get(),
            size: raw.size.get(),
            chunk_sectors: raw.chunksize.get(),
            raid_disks: raw.raid_disks.get(),
            bitmap_offset: raw.bitmap_offset.get(),
            reshape: ReshapeInfo {
                new_level: raw.new_level.get() as i32,
                reshape_position: raw.reshape_position.get(),
                delta_disks: raw.delta_disks.get() as i32,
                new_layout: raw.new_layout.get(),
                new_chunk: raw.new_chunk.get(),
                new_offset: raw.new_offset.get() as i32,
            },
            data_offset: raw.data_offset.get(),
            data_size: raw.data_size.get(),
            super_offset: raw.super_offset.get(),
            recovery_offset: raw.recovery_offset.get(),
            dev_number: raw.dev_number.get(),
            cnt_corrected_read: raw.cnt_corrected_read.get(),
            device_uuid: raw.device_uuid,
            devflags: DevFlags(raw.devflags),
            bblog_shift: raw.bblog_shift,
            bblog_size: raw.bblog_size.get(),
            bblog_offset: raw.bblog_offset.get(),
            utime: MdTime(raw.utime.get()),
            events: raw.events.get(),
            resync_offset: raw.resync_offset.get(),
            dev_roles,
        })
    }

    /// [`Superblock::parse`] plus the checks that need the member: the
    /// superblock was read at sector `read_at`, and every region it
    /// describes lies within a member of `device_sectors` sectors without
    /// overlapping the data area.
    pub fn parse_on_member(bytes: &[u8], read_at: u64, device_sectors: u64) -> Result<Superblock, SuperblockError> {
        let sb = Superblock::parse(bytes)?;
        sb.validate_on_member(read_at, device_sectors)?;
        Ok(sb)
    }

    /// Checks the regions this superblock describes against a member of
    /// `device_sectors` sectors where it was found at sector `read_at`.
    pub fn validate_on_member(&self, read_at: u64, device_sectors: u64) -> Result<(), SuperblockError> {
        if self.super_offset != read_at {
            return Err(SuperblockError::SuperOffsetMismatch { recorded: self.super_offset, actual: read_at });
        }
        let sb_sectors = self.encoded_sectors();
        let sb_end = end_of("superblock", self.super_offset, sb_sectors, device_sectors)?;
        let data_end = end_of("data area", self.data_offset, self.data_size, device_sectors)?;
        let overlaps = |start: u64, end: u64, s2: u64, e2: u64| start < e2 && s2 < end;
        if self.data_size > 0 && overlaps(self.super_offset, sb_end, self.data_offset, data_end) {
            return Err(SuperblockError::Overlap { region: "superblock", other: "data area" });
        }
        if self.level.uses_size_field() && self.size > self.data_size {
            return Err(SuperblockError::SizeExceedsData { size: self.size, data_size: self.data_size });
        }
        if self.feature_map.contains(FeatureMap::BITMAP_OFFSET) && !self.feature_map.contains(FeatureMap::PPL) {
            let start = self
                .super_offset
                .checked_add_signed(i64::from(self.bitmap_offset))
                .ok_or(SuperblockError::PastDevice { region: "bitmap", end: 0, device_sectors })?;
            // At least the bitmap superblock must fit.
            let end = end_of("bitmap", start, 1, device_sectors)?;
            if overlaps(start, end, self.data_offset, data_end) {
                return Err(SuperblockError::Overlap { region: "bitmap", other: "data area" });
            }
            if overlaps(start, end, self.super_offset, sb_end) {
                return Err(SuperblockError::Overlap { region: "bitmap", other: "superblock" });
            }
        }
        if self.bblog_size > 0 {
            let start = self
                .super_offset
                .checked_add_signed(i64::from(self.bblog_offset))
                .ok_or(SuperblockError::PastDevice { region: "bad-block log", end: 0, device_sectors })?;
            let end = end_of("bad-block log", start, u64::from(self.bblog_size), device_sectors)?;
            if overlaps(start, end, self.data_offset, data_end) {
                return Err(SuperblockError::Overlap { region: "bad-block log", other: "data area" });
            }
        }
        Ok(())
    }

    /// `max_dev`: the number of role slots.
    pub fn max_dev(&self) -> u32 {
        // Bounded by MAX_DEV_LIMIT when parsed; encode checks again.
        u32::try_from(self.dev_roles.len()).unwrap_or(u32::MAX)
    }

    /// Bytes covered by the checksum: `256 + 2 * max_dev`.
    pub fn encoded_len(&self) -> usize {
        SB_FIXED_BYTES + 2 * self.dev_roles.len()
    }

    /// Sectors occupied by the superblock (encoded length rounded up).
    pub fn encoded_sectors(&self) -> u64 {
        (self.encoded_len() as u64).div_ceil(SECTOR_BYTES)
    }

    /// This member's role (`dev_roles[dev_number]`).
    pub fn role(&self) -> Option<DevRole> {
        self.dev_roles.get(self.dev_number as usize).copied()
    }

    /// The set name up to the first NUL, lossily decoded.
    pub fn name(&self) -> String {
        let end = self.set_name.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8_lossy(self.set_name.get(..end).unwrap_or_default()).into_owned()
    }

    /// Sets the name (at most 32 bytes).
    pub fn set_name_str(&mut self, name: &str) -> Result<(), SuperblockError> {
        let b = name.as_bytes();
        if b.len() > 32 {
            return Err(SuperblockError::NameTooLong);
        }
        self.set_name = [0; 32];
        self.set_name[..b.len()].copy_from_slice(b);
        Ok(())
    }

    /// Whether the array was cleanly shut down (`resync_offset` is
    /// `MAX_SECTOR`).
    pub fn is_clean(&self) -> bool {
        self.resync_offset == MAX_SECTOR
    }

    /// The raw on-disk image of the fixed part (checksum included).
    pub fn to_raw(&self) -> RawSuperblock1 {
        let mut raw = RawSuperblock1 {
            magic: U32::new(MD_SB_MAGIC),
            major_version: U32::new(1),
            feature_map: U32::new(self.feature_map.0),
            pad0: U32::new(0),
            set_uuid: self.set_uuid,
            set_name: self.set_name,
            ctime: U64::new(self.ctime.0),
            level: I32::new(self.level.to_md()),
            layout: U32::new(self.layout),
            size: U64::new(self.size),
            chunksize: U32::new(self.chunk_sectors),
            raid_disks: U32::new(self.raid_disks),
            bitmap_offset: I32::new(self.bitmap_offset),
            new_level: U32::new(self.reshape.new_level as u32),
            reshape_position: U64::new(self.reshape.reshape_position),
            delta_disks: U32::new(self.reshape.delta_disks as u32),
            new_layout: U32::new(self.reshape.new_layout),
            new_chunk: U32::new(self.reshape.new_chunk),
            new_offset: U32::new(self.reshape.new_offset as u32),
            data_offset: U64::new(self.data_offset),
            data_size: U64::new(self.data_size),
            super_offset: U64::new(self.super_offset),
            recovery_offset: U64::new(self.recovery_offset),
            dev_number: U32::new(self.dev_number),
            cnt_corrected_read: U32::new(self.cnt_corrected_read),
            device_uuid: self.device_uuid,
            devflags: self.devflags.0,
            bblog_shift: self.bblog_shift,
            bblog_size: U16::new(self.bblog_size),
            bblog_offset: I32::new(self.bblog_offset),
            utime: U64::new(self.utime.0),
            events: U64::new(self.events),
            resync_offset: U64::new(self.resync_offset),
            sb_csum: U32::new(0),
            max_dev: U32::new(self.max_dev()),
            pad3: [0; 32],
        };
        let mut buf = [0u8; SB_FIXED_BYTES];
        buf.copy_from_slice(raw.as_bytes());
        let mut sum_region = Vec::with_capacity(self.encoded_len());
        sum_region.extend_from_slice(&buf);
        for r in &self.dev_roles {
            sum_region.extend_from_slice(&r.to_raw().to_le_bytes());
        }
        raw.sb_csum = U32::new(checksum_region(&sum_region));
        raw
    }

    /// Encodes the superblock (with a correct checksum) into the start of
    /// `buf`, zero-filling the rest of it; returns the encoded length.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, SuperblockError> {
        if self.dev_roles.len() > MAX_DEV_LIMIT as usize {
            return Err(SuperblockError::MaxDevOutOfRange(self.max_dev()));
        }
        let len = self.encoded_len();
        let got = buf.len();
        let out = buf.get_mut(..len).ok_or(SuperblockError::TooShort { needed: len, got })?;
        let (fixed, roles) = out.split_at_mut(SB_FIXED_BYTES);
        fixed.copy_from_slice(self.to_raw().as_bytes());
        for (dst, r) in roles.chunks_exact_mut(2).zip(&self.dev_roles) {
            dst.copy_from_slice(&r.to_raw().to_le_bytes());
        }
        if let Some(rest) = buf.get_mut(len..) {
            rest.fill(0);
        }
        Ok(len)
    }

    /// Encodes into a new buffer of `encoded_len()` rounded up to
    /// `block_bytes` (512 or 4096 for what a member's logical block size
    /// requires).
    pub fn encode(&self, block_bytes: usize) -> Result<Vec<u8>, SuperblockError> {
        let block = block_bytes.max(1);
        let mut buf = vec![0u8; self.encoded_len().div_ceil(block) * block];
        self.encode_into(&mut buf)?;
        Ok(buf)
    }

    /// The array UUID in mdadm's display form (`xxxxxxxx:xxxxxxxx:...`).
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.set_uuid)
    }
}

/// Formats a 16-byte md UUID the way mdadm prints it.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(35);
    for (i, b) in u.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn end_of(region: &'static str, start: u64, len: u64, device_sectors: u64) -> Result<u64, SuperblockError> {
    match start.checked_add(len) {
        Some(end) if end <= device_sectors => Ok(end),
        end => Err(SuperblockError::PastDevice { region, end: end.unwrap_or(u64::MAX), device_sectors }),
    }
}

#[cfg(test)]
mod tests;
