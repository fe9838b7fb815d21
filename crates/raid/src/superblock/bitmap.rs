//! md's internal write-intent bitmap (`bitmap_super_t` plus the bits).
//!
//! The bitmap lives at `super_offset + bitmap_offset` (sectors, signed
//! offset) on every member. It starts with a 256-byte little-endian header;
//! the bits follow immediately, at byte 256 of the bitmap area. Bit `i`
//! (little-endian bit order: byte `i / 8`, bit `i % 8`) covers the
//! `chunksize`-byte region `i` of the array's *sync range*: for raid10 that
//! is the array address space, for raid1/4/5/6 the per-member address space
//! (a stripe's sectors on each member), `sync_size` sectors long. A set bit
//! means writes may be in flight there, so the region must be resynced
//! after a crash. (Version 3 "host-endian" bitmaps use native bit order,
//! which on little-endian hosts is the same.)

use thiserror::Error;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `BITMAP_MAGIC` ("bitm" little-endian).
pub const BITMAP_MAGIC: u32 = 0x6d74_6962;
/// Size of the bitmap header; the bits start right after it.
pub const BITMAP_SB_BYTES: usize = 256;
/// Oldest supported version: host-endian bits.
pub const BITMAP_MAJOR_HOSTENDIAN: u32 = 3;
/// Little-endian bits (what mdadm writes).
pub const BITMAP_MAJOR_HI: u32 = 4;
/// Clustered md bitmaps.
pub const BITMAP_MAJOR_CLUSTERED: u32 = 5;

/// On-disk image of `bitmap_super_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawBitmapSuper {
    /// `BITMAP_MAGIC`.
    pub magic: U32,
    /// Bitmap major version (3, 4 or 5).
    pub version: U32,
    /// Must match the array's `set_uuid`.
    pub uuid: [u8; 16],
    /// Event count when the bitmap was last written.
    pub events: U64,
    /// Event count when a bit was last cleared.
    pub events_cleared: U64,
    /// Length of the sync range in sectors.
    pub sync_size: U64,
    /// [`BitmapState`] bits.
    pub state: U32,
    /// Bytes of sync range per bit.
    pub chunksize: U32,
    /// Seconds between bitmap flushes.
    pub daemon_sleep: U32,
    /// Outstanding write-behind writes allowed.
    pub write_behind: U32,
    /// Sectors reserved for the bitmap (0 = not recorded).
    pub sectors_reserved: U32,
    /// Cluster nodes (clustered bitmaps only).
    pub nodes: U32,
    /// Cluster name.
    pub cluster_name: [u8; 64],
    /// Zero.
    pub pad: [u8; 120],
}

const _: () = assert!(core::mem::size_of::<RawBitmapSuper>() == BITMAP_SB_BYTES);

/// Bitmap state bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BitmapState(pub u32);

impl BitmapState {
    /// The bitmap is out of date: every bit must be treated as set.
    pub const STALE: u32 = 1 << 1;
    /// A write error happened on the bitmap.
    pub const WRITE_ERROR: u32 = 1 << 2;
    /// Host-endian bit order.
    pub const HOSTENDIAN: u32 = 1 << 15;

    /// Whether the stale bit is set.
    pub fn is_stale(self) -> bool {
        self.0 & Self::STALE != 0
    }
}

/// Errors decoding a bitmap header or using its bits.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BitmapError {
    /// Buffer shorter than the header or the bits.
    #[error("bitmap buffer too short: need {needed} bytes, have {got}")]
    TooShort {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// No bitmap magic.
    #[error("bad bitmap magic {0:#010x}")]
    BadMagic(u32),
    /// Unsupported bitmap version.
    #[error("unsupported bitmap version {0}")]
    UnsupportedVersion(u32),
    /// Chunk size not a power of two of at least 512 bytes.
    #[error("bad bitmap chunk size {0} bytes")]
    BadChunkSize(u32),
    /// Bit number beyond the bitmap.
    #[error("bitmap bit {bit} out of range ({bits} bits)")]
    BitOutOfRange {
        /// Requested bit.
        bit: u64,
        /// Bits in the bitmap.
        bits: u64,
    },
    /// The bitmap belongs to another array.
    #[error("bitmap uuid does not match the array")]
    UuidMismatch,
}

/// A decoded write-intent bitmap header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapSuper {
    /// Major version.
    pub version: u32,
    /// Array UUID.
    pub uuid: [u8; 16],
    /// Event count of the last bitmap write.
    pub events: u64,
    /// Event count when bits were last cleared.
    pub events_cleared: u64,
    /// Sync range in sectors.
    pub sync_size: u64,
    /// State bits.
    pub state: BitmapState,
    /// Bytes per bit.
    pub chunk_bytes: u32,
    /// Flush interval in seconds.
    pub daemon_sleep: u32,
    /// Write-behind limit.
    pub write_behind: u32,
    /// Sectors reserved for the bitmap.
    pub sectors_reserved: u32,
    /// Cluster nodes.
    pub nodes: u32,
    /// Cluster name (raw).
    pub cluster_name: [u8; 64],
}

impl BitmapSuper {
    /// A fresh, clean header as mdadm writes it: version 4, 5 s flush delay.
    pub fn new(uuid: [u8; 16], sync_size: u64, chunk_bytes: u32, events: u64) -> BitmapSuper {
        BitmapSuper {
            version: BITMAP_MAJOR_HI,
            uuid,
            events,
            events_cleared: events,
            sync_size,
            state: BitmapState::default(),
            chunk_bytes,
            daemon_sleep: 5,
            write_behind: 0,
            sectors_reserved: 0,
            nodes: 0,
            cluster_name: [0; 64],
        }
    }

    /// Decodes and checks a header (magic, version, chunk size).
    pub fn parse(bytes: &[u8]) -> Result<BitmapSuper, BitmapError> {
        let (raw, _) = RawBitmapSuper::read_from_prefix(bytes)
            .map_err(|_| BitmapError::TooShort { needed: BITMAP_SB_BYTES, got: bytes.len() })?;
        if raw.magic.get() != BITMAP_MAGIC {
            return Err(BitmapError::BadMagic(raw.magic.get()));
        }
        let version = raw.version.get();
        if !(BITMAP_MAJOR_HOSTENDIAN..=BITMAP_MAJOR_CLUSTERED).contains(&version) {
            return Err(BitmapError::UnsupportedVersion(version));
        }
        let chunk = raw.chunksize.get();
        if chunk < 512 || !chunk.is_power_of_two() {
            return Err(BitmapError::BadChunkSize(chunk));
        }
        Ok(BitmapSuper {
            version,
            uuid: raw.uuid,
            events: raw.events.get(),
            events_cleared: raw.events_cleared.get(),
            sync_size: raw.sync_size.get(),
            state: BitmapState(raw.state.get()),
            chunk_bytes: chunk,
            daemon_sleep: raw.daemon_sleep.get(),
            write_behind: raw.write_behind.get(),
            sectors_reserved: raw.sectors_reserved.get(),
            nodes: raw.nodes.get(),
            cluster_name: raw.cluster_name,
        })
    }

    /// Decodes a header and checks that it belongs to the array `uuid`.
    pub fn parse_for(bytes: &[u8], uuid: &[u8; 16]) -> Result<BitmapSuper, BitmapError> {
        let sb = BitmapSuper::parse(bytes)?;
        if &sb.uuid != uuid {
            return Err(BitmapError::UuidMismatch);
        }
        Ok(sb)
    }

    /// The on-disk image.
    pub fn to_raw(&self) -> RawBitmapSuper {
        RawBitmapSuper {
            magic: U32::new(BITMAP_MAGIC),
            version: U32::new(self.version),
            uuid: self.uuid,
            events: U64::new(self.events),
            events_cleared: U64::new(self.events_cleared),
            sync_size: U64::new(self.sync_size),
            state: U32::new(self.state.0),
            chunksize: U32::new(self.chunk_bytes),
            daemon_sleep: U32::new(self.daemon_sleep),
            write_behind: U32::new(self.write_behind),
            sectors_reserved: U32::new(self.sectors_reserved),
            nodes: U32::new(self.nodes),
            cluster_name: self.cluster_name,
            pad: [0; 120],
        }
    }

    /// Writes the header into the first 256 bytes of `buf`.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<(), BitmapError> {
        let got = buf.len();
        let out = buf.get_mut(..BITMAP_SB_BYTES).ok_or(BitmapError::TooShort { needed: BITMAP_SB_BYTES, got })?;
        out.copy_from_slice(self.to_raw().as_bytes());
        Ok(())
    }

    /// The bit layout this header describes.
    pub fn layout(&self) -> BitmapLayout {
        BitmapLayout::new(self.sync_size, self.chunk_bytes)
    }
}

/// Geometry of the bits: which sync-range sectors each bit covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapLayout {
    /// Sync range in sectors.
    pub sync_sectors: u64,
    /// Sectors per bit (a power of two).
    pub chunk_sectors: u64,
}

impl BitmapLayout {
    /// Layout for a sync range of `sync_sectors` with `chunk_bytes` per bit
    /// (rounded up to at least one sector).
    pub fn new(sync_sectors: u64, chunk_bytes: u32) -> BitmapLayout {
        BitmapLayout { sync_sectors, chunk_sectors: (u64::from(chunk_bytes) / 512).max(1) }
    }

    /// Number of bits.
    pub fn bits(&self) -> u64 {
        self.sync_sectors.div_ceil(self.chunk_sectors)
    }

    /// Bytes of bits (without the header).
    pub fn bit_bytes(&self) -> u64 {
        self.bits().div_ceil(8)
    }

    /// Bytes of header plus bits, rounded up to `align` bytes (mdadm reserves
    /// whole 4 KiB blocks).
    pub fn total_bytes(&self, align: u64) -> u64 {
        let raw = BITMAP_SB_BYTES as u64 + self.bit_bytes();
        raw.div_ceil(align.max(1)) * align.max(1)
    }

    /// The bit covering sync-range sector `sector`.
    pub fn bit_of(&self, sector: u64) -> u64 {
        sector / self.chunk_sectors
    }

    /// Bits covering sync-range sectors `[sector, sector + count)`.
    pub fn bits_of(&self, sector: u64, count: u64) -> core::ops::Range<u64> {
        if count == 0 {
            return 0..0;
        }
        let last = sector.saturating_add(count - 1);
        // Saturating: no bit can have index `u64::MAX` (`bits()` is at most
        // that), so the range still names every bit of the layout it covers.
        self.bit_of(sector)..self.bit_of(last).saturating_add(1)
    }

    /// Sync-range sectors covered by `bit`.
    pub fn sectors_of(&self, bit: u64) -> core::ops::Range<u64> {
        let start = bit.saturating_mul(self.chunk_sectors).min(self.sync_sectors);
        let end = start.saturating_add(self.chunk_sectors).min(self.sync_sectors);
        start..end
    }

    fn locate(&self, bits: &[u8], bit: u64) -> Result<(usize, u8), BitmapError> {
        if bit >= self.bits() {
            return Err(BitmapError::BitOutOfRange { bit, bits: self.bits() });
        }
        let byte = usize::try_from(bit / 8).map_err(|_| BitmapError::BitOutOfRange { bit, bits: self.bits() })?;
        if byte >= bits.len() {
            return Err(BitmapError::TooShort { needed: byte + 1, got: bits.len() });
        }
        Ok((byte, 1u8 << (bit % 8)))
    }

    /// Whether `bit` is set in `bits` (the bytes after the header).
    pub fn test(&self, bits: &[u8], bit: u64) -> Result<bool, BitmapError> {
        let (byte, mask) = self.locate(bits, bit)?;
        Ok(bits.get(byte).is_some_and(|b| b & mask != 0))
    }

    /// Sets or clears `bit` in `bits`.
    pub fn set(&self, bits: &mut [u8], bit: u64, value: bool) -> Result<(), BitmapError> {
        let (byte, mask) = self.locate(bits, bit)?;
        if let Some(b) = bits.get_mut(byte) {
            if value {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
        Ok(())
    }

    /// Iterates the set bits in `bits` (bits beyond the layout are ignored).
    pub fn set_bits<'a>(&self, bits: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        let n = self.bits();
        bits.iter().enumerate().flat_map(move |(i, &b)| {
            (0..8u64).filter_map(move |j| {
                let bit = i as u64 * 8 + j;
                (bit < n && b & (1 << j) != 0).then_some(bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let sb = BitmapSuper::new([7; 16], 61440, 64 << 20, 42);
        let mut buf = [0u8; 512];
        sb.encode_into(&mut buf).unwrap();
        assert_eq!(&buf[0..4], &BITMAP_MAGIC.to_le_bytes());
        assert_eq!(&buf[0..4], b"bitm");
        let back = BitmapSuper::parse_for(&buf, &[7; 16]).unwrap();
        assert_eq!(back, sb);
        assert_eq!(BitmapSuper::parse_for(&buf, &[8; 16]), Err(BitmapError::UuidMismatch));
    }

    #[test]
    fn header_errors() {
        let sb = BitmapSuper::new([1; 16], 100, 4096, 0);
        let mut buf = [0u8; 256];
        sb.encode_into(&mut buf).unwrap();
        assert!(matches!(BitmapSuper::parse(&buf[..100]), Err(BitmapError::TooShort { .. })));
        let mut bad = buf;
        bad[0] ^= 1;
        assert!(matches!(BitmapSuper::parse(&bad), Err(BitmapError::BadMagic(_))));
        let mut bad = buf;
        bad[4] = 9;
        assert_eq!(BitmapSuper::parse(&bad), Err(BitmapError::UnsupportedVersion(9)));
        let mut bad = buf;
        bad[52..56].copy_from_slice(&3000u32.to_le_bytes());
        assert_eq!(BitmapSuper::parse(&bad), Err(BitmapError::BadChunkSize(3000)));
    }

    #[test]
    fn bit_layout() {
        // 1000 sectors, 64 KiB (128 sectors) per bit: 8 bits.
        let l = BitmapLayout::new(1000, 65536);
        assert_eq!(l.bits(), 8);
        assert_eq!(l.bit_bytes(), 1);
        assert_eq!(l.total_bytes(4096), 4096);
        assert_eq!(l.bit_of(127), 0);
        assert_eq!(l.bit_of(128), 1);
        assert_eq!(l.bits_of(100, 200), 0..3);
        assert_eq!(l.bits_of(5, 0), 0..0);
        assert_eq!(l.sectors_of(7), 896..1000);
        let mut bits = [0u8; 1];
        l.set(&mut bits, 3, true).unwrap();
        l.set(&mut bits, 7, true).unwrap();
        assert_eq!(bits[0], 0b1000_1000);
        assert!(l.test(&bits, 3).unwrap());
        assert!(!l.test(&bits, 2).unwrap());
        assert_eq!(l.set_bits(&bits).collect::<Vec<_>>(), vec![3, 7]);
        l.set(&mut bits, 3, false).unwrap();
        assert_eq!(bits[0], 0b1000_0000);
        assert!(matches!(l.test(&bits, 8), Err(BitmapError::BitOutOfRange { .. })));
        assert!(matches!(l.test(&[], 1), Err(BitmapError::TooShort { .. })));
    }

    #[test]
    fn bits_of_a_range_reaching_the_last_sector_does_not_overflow() {
        // 512-byte chunks: one sector per bit, so the last sector's bit is
        // `u64::MAX` (found by the bitmap_parse fuzz target).
        let l = BitmapLayout::new(1000, 512);
        assert_eq!(l.bits_of(1000, u64::MAX - 64), 1000..u64::MAX);
        assert_eq!(l.bits_of(u64::MAX, 1), u64::MAX..u64::MAX);
        assert_eq!(l.bits_of(0, u64::MAX), 0..u64::MAX);
    }
}
