//! The on-disk format: super block, journal transaction header, checkpoint header, the layout
//! of a store on its base bdev, and the little-endian wire encoding of metadata records.
//!
//! `FORMAT.md` beside `Cargo.toml` is the reference for every byte here. This module holds no
//! unsafe code: fixed structures go through zerocopy, variable records through [`Writer`] and
//! [`Reader`], which fail with a typed [`FormatError`] instead of panicking.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of every metadata block (super block, journal and checkpoint granularity).
pub const MD_BLOCK: u64 = 4096;
/// Size of a compressed-data sector (the allocation unit of packed clusters).
pub const SECTOR: u64 = 4096;
/// Format version written and understood.
pub const VERSION: u32 = 1;
/// Super block magic.
pub const SB_MAGIC: [u8; 8] = *b"XBDLVS01";
/// Journal transaction magic.
pub const TXN_MAGIC: [u8; 4] = *b"XJTX";
/// Checkpoint magic.
pub const CKPT_MAGIC: [u8; 8] = *b"XBDCKPT1";
/// Longest store or volume name in bytes.
pub const MAX_NAME: usize = 63;
/// Most extended attributes per volume.
pub const MAX_XATTRS: usize = 16;
/// Largest total of xattr keys and values per volume, in bytes.
pub const MAX_XATTR_BYTES: usize = 1024;
/// Granules per cluster at most (one bit each in a `u64`).
pub const MAX_GRANULES: u64 = 64;

/// Errors decoding on-disk bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Input ended early.
    #[error("{what}: truncated at byte {at} (need {need} more)")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Offset reached.
        at: usize,
        /// Bytes missing.
        need: usize,
    },
    /// Wrong magic number.
    #[error("{0}: bad magic")]
    BadMagic(&'static str),
    /// Unsupported version.
    #[error("{what}: unsupported version {version}")]
    BadVersion {
        /// Structure.
        what: &'static str,
        /// Version found.
        version: u32,
    },
    /// Checksum mismatch.
    #[error("{what}: crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc {
        /// Structure.
        what: &'static str,
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// An unknown record type.
    #[error("unknown record kind {0}")]
    UnknownRecord(u16),
    /// A field holds a value out of its domain.
    #[error("{what}: invalid value {value}")]
    BadValue {
        /// Field.
        what: &'static str,
        /// Value found.
        value: u64,
    },
    /// Text that is not valid UTF-8.
    #[error("{0}: not utf-8")]
    BadText(&'static str),
}

/// The super block, stored twice (blocks 0 and 1); the valid copy with the higher generation wins.
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SuperBlock {
    /// [`SB_MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: U32,
    /// crc32c of this structure with this field zero.
    pub crc: U32,
    /// Incremented at each super block write.
    pub generation: U64,
    /// Store UUID.
    pub uuid: [u8; 16],
    /// Store name length.
    pub name_len: U16,
    /// Reserved, zero.
    pub _pad0: [u8; 6],
    /// Store name bytes, zero padded.
    pub name: [u8; 64],
    /// Block size of the base bdev when the store was created.
    pub block_size: U32,
    /// Granule size in bytes (valid-bit and copy-on-write unit).
    pub granule_size: U32,
    /// Cluster size in bytes.
    pub cluster_size: U64,
    /// Data clusters.
    pub total_clusters: U64,
    /// Base bdev size in blocks at creation.
    pub base_blocks: U64,
    /// Byte offset of cluster 0.
    pub data_offset: U64,
    /// Byte offset of the journal region.
    pub journal_offset: U64,
    /// Bytes in the journal region.
    pub journal_size: U64,
    /// Byte offsets of the two checkpoint areas.
    pub ckpt_offset: [U64; 2],
    /// Bytes in each checkpoint area.
    pub ckpt_capacity: U64,
    /// Which checkpoint area is current (0 or 1).
    pub active_ckpt: U32,
    /// crc32c of the current checkpoint's bytes.
    pub ckpt_crc: U32,
    /// Bytes of the current checkpoint.
    pub ckpt_len: U64,
    /// Sequence number of the last record the checkpoint contains.
    pub ckpt_seq: U64,
    /// Byte offset inside the journal region of the first transaction to replay.
    pub journal_tail: U64,
    /// Most volumes the store may hold.
    pub max_volumes: U32,
    /// Reserved flags, zero.
    pub flags: U32,
    /// Most clusters that may hold packed (compressed) sectors.
    pub packed_limit: U64,
    /// Reserved, zero.
    pub _reserved: [u8; 64],
}
const _: () = assert!(core::mem::size_of::<SuperBlock>() == 304);

/// Header of one journal transaction; the transaction starts on a [`MD_BLOCK`] boundary of
/// the journal region and spans `total_len` bytes (header, body, zero padding).
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TxnHeader {
    /// [`TXN_MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`] (16 bits).
    pub version: U16,
    /// Reserved, zero.
    pub flags: U16,
    /// UUID of the store that wrote it (stale transactions of an earlier store are refused).
    pub store_uuid: [u8; 16],
    /// Sequence number of the first record.
    pub first_seq: U64,
    /// Records in the body.
    pub nrecords: U32,
    /// Bytes of the body.
    pub body_len: U32,
    /// Bytes from the header start to the next transaction (multiple of [`MD_BLOCK`]).
    pub total_len: U32,
    /// crc32c of header (this field zero) and body.
    pub crc: U32,
    /// Reserved, zero.
    pub _reserved: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<TxnHeader>() == 64);

/// Header of a checkpoint; followed by `body_len` bytes of records.
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CkptHeader {
    /// [`CKPT_MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: U32,
    /// Records in the body.
    pub nrecords: U32,
    /// UUID of the store.
    pub store_uuid: [u8; 16],
    /// Sequence number of the last record the checkpoint includes.
    pub seq: U64,
    /// Bytes of the body.
    pub body_len: U64,
    /// Next volume id to hand out.
    pub next_id: U32,
    /// Reserved, zero.
    pub _reserved: [u8; 20],
}
const _: () = assert!(core::mem::size_of::<CkptHeader>() == 72);

/// crc32c of a structure's bytes with its crc field (at `crc_at`, 4 bytes) taken as zero.
pub fn crc_with_hole(bytes: &[u8], crc_at: usize) -> u32 {
    let (a, rest) = bytes.split_at(crc_at.min(bytes.len()));
    let b = rest.get(4..).unwrap_or(&[]);
    let c = crc32c::crc32c(a);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, b)
}

/// Offset of `crc` inside [`SuperBlock`].
pub const SB_CRC_AT: usize = 12;
/// Offset of `crc` inside [`TxnHeader`].
pub const TXN_CRC_AT: usize = 44;

impl SuperBlock {
    /// Serialize into a full metadata block with the crc filled in.
    pub fn to_block(&self) -> Vec<u8> {
        let mut sb = self.clone();
        sb.crc = U32::new(0);
        let crc = crc_with_hole(sb.as_bytes(), SB_CRC_AT);
        sb.crc = U32::new(crc);
        let mut out = vec![0u8; MD_BLOCK as usize];
        out[..core::mem::size_of::<SuperBlock>()].copy_from_slice(sb.as_bytes());
        out
    }

    /// Parse and verify a super block from the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<SuperBlock, FormatError> {
        let n = core::mem::size_of::<SuperBlock>();
        let raw = bytes.get(..n).ok_or(FormatError::Truncated { what: "super block", at: bytes.len(), need: n })?;
        let sb = SuperBlock::read_from_bytes(raw).map_err(|_| FormatError::Truncated {
            what: "super block",
            at: 0,
            need: n,
        })?;
        if sb.magic != SB_MAGIC {
            return Err(FormatError::BadMagic("super block"));
        }
        if sb.version.get() != VERSION {
            return Err(FormatError::BadVersion { what: "super block", version: sb.version.get() });
        }
        let computed = crc_with_hole(raw, SB_CRC_AT);
        if computed != sb.crc.get() {
            return Err(FormatError::BadCrc { what: "super block", stored: sb.crc.get(), computed });
        }
        Ok(sb)
    }

    /// The store name: 1 to [`MAX_NAME`] bytes of letters, digits, `_`, `-` and `.`, the
    /// names a store can be created with (a damaged name is an error, not a name with NULs).
    pub fn name(&self) -> Result<String, FormatError> {
        let len = self.name_len.get() as usize;
        if len == 0 || len > MAX_NAME {
            return Err(FormatError::BadValue { what: "store name length", value: len as u64 });
        }
        let b = self.name.get(..len).unwrap_or(&[]);
        if !b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')) {
            return Err(FormatError::BadText("store name"));
        }
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadText("store name"))
    }
}

/// The byte layout of a store on its base bdev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Base block size.
    pub block_size: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Granule size in bytes.
    pub granule_size: u64,
    /// Journal region offset.
    pub journal_offset: u64,
    /// Journal region size.
    pub journal_size: u64,
    /// Checkpoint area offsets.
    pub ckpt_offset: [u64; 2],
    /// Checkpoint area size.
    pub ckpt_capacity: u64,
    /// First data byte (cluster aligned).
    pub data_offset: u64,
    /// Data clusters.
    pub total_clusters: u64,
    /// Volume limit.
    pub max_volumes: u32,
    /// Packed cluster limit.
    pub packed_limit: u64,
}

/// Bytes one volume descriptor may take in a checkpoint, at most.
pub const VOL_RECORD_MAX: u64 = 64 + MAX_NAME as u64 + MAX_XATTR_BYTES as u64 + 4 * MAX_XATTRS as u64 + 64;
/// Bytes per cluster-map entry in a checkpoint.
pub const CLUSTER_ENTRY_BYTES: u64 = 24;
/// Bytes per chunk-map entry in a checkpoint.
pub const CHUNK_ENTRY_BYTES: u64 = 16;

/// Round `v` up to a multiple of `to` (a power of two).
pub fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Granule size for a cluster size: `cluster / 64`, at least 4 KiB and at most the cluster.
pub fn granule_for(cluster_size: u64) -> u64 {
    (cluster_size / MAX_GRANULES).max(MD_BLOCK).min(cluster_size)
}

/// Checkpoint bytes needed in the worst case for a store of these dimensions.
pub fn ckpt_bytes_needed(total_clusters: u64, max_volumes: u32, packed_limit: u64, cluster_size: u64) -> u64 {
    let per_vol = VOL_RECORD_MAX + 2 * 16; // descriptor + cluster and chunk record headers
    let sectors_per_cluster = cluster_size / SECTOR;
    let body = max_volumes as u64 * per_vol
        + total_clusters * CLUSTER_ENTRY_BYTES
        + packed_limit * sectors_per_cluster * CHUNK_ENTRY_BYTES
        + total_clusters.div_ceil(8)
        + 64;
    round_up(MD_BLOCK + body, MD_BLOCK)
}

impl Layout {
    /// Compute the layout for a base of `base_bytes` bytes. `journal_size` 0 picks the default.
    pub fn compute(
        base_bytes: u64,
        block_size: u32,
        cluster_size: u64,
        journal_size: u64,
        max_volumes: u32,
    ) -> Option<Layout> {
        let granule_size = granule_for(cluster_size);
        let journal_offset = 2 * MD_BLOCK;
        // Upper bound of clusters, ignoring metadata.
        let raw_clusters = base_bytes / cluster_size;
        let journal_size = if journal_size == 0 {
            round_up((raw_clusters * 16).clamp(1 << 20, 256 << 20), MD_BLOCK)
        } else {
            round_up(journal_size.max(16 * MD_BLOCK), MD_BLOCK)
        };
        let packed_limit = (raw_clusters / 8).max(2);
        let ckpt_capacity = ckpt_bytes_needed(raw_clusters, max_volumes, packed_limit, cluster_size);
        let ckpt0 = journal_offset + journal_size;
        let ckpt1 = ckpt0 + ckpt_capacity;
        let data_offset = round_up(ckpt1 + ckpt_capacity, cluster_size);
        let total_clusters = base_bytes.checked_sub(data_offset)? / cluster_size;
        if total_clusters == 0 {
            return None;
        }
        Some(Layout {
            block_size,
            cluster_size,
            granule_size,
            journal_offset,
            journal_size,
            ckpt_offset: [ckpt0, ckpt1],
            ckpt_capacity,
            data_offset,
            total_clusters,
            max_volumes,
            packed_limit: packed_limit.min(total_clusters),
        })
    }

    /// The layout a super block describes, validated against the base's size.
    pub fn from_super(sb: &SuperBlock, base_bytes: u64) -> Result<Layout, FormatError> {
        let cluster_size = sb.cluster_size.get();
        if !cluster_size.is_power_of_two() || cluster_size < MD_BLOCK {
            return Err(FormatError::BadValue { what: "cluster_size", value: cluster_size });
        }
        let granule_size = sb.granule_size.get() as u64;
        if granule_size != granule_for(cluster_size) {
            return Err(FormatError::BadValue { what: "granule_size", value: granule_size });
        }
        let l = Layout {
            block_size: sb.block_size.get(),
            cluster_size,
            granule_size,
            journal_offset: sb.journal_offset.get(),
            journal_size: sb.journal_size.get(),
            ckpt_offset: [sb.ckpt_offset[0].get(), sb.ckpt_offset[1].get()],
            ckpt_capacity: sb.ckpt_capacity.get(),
            data_offset: sb.data_offset.get(),
            total_clusters: sb.total_clusters.get(),
            max_volumes: sb.max_volumes.get(),
            packed_limit: sb.packed_limit.get(),
        };
        let bad = |what, value| Err(FormatError::BadValue { what, value });
        if !l.block_size.is_power_of_two() || !(512..=4096).contains(&l.block_size) {
            return bad("block_size", l.block_size as u64);
        }
        if l.journal_size < 16 * MD_BLOCK
            || !l.journal_size.is_multiple_of(MD_BLOCK)
            || l.journal_offset != 2 * MD_BLOCK
        {
            return bad("journal", l.journal_size);
        }
        let jend = l.journal_offset.checked_add(l.journal_size);
        let c0end = l.ckpt_offset[0].checked_add(l.ckpt_capacity);
        let c1end = l.ckpt_offset[1].checked_add(l.ckpt_capacity);
        let data_bytes = l.total_clusters.checked_mul(cluster_size);
        let data_end = data_bytes.and_then(|b| b.checked_add(l.data_offset));
        match (jend, c0end, c1end, data_end) {
            (Some(j), Some(c0), Some(c1), Some(d))
                if l.ckpt_offset[0] >= j
                    && l.ckpt_offset[1] >= c0
                    && l.data_offset >= c1
                    && l.data_offset.is_multiple_of(cluster_size)
                    && d <= base_bytes
                    && l.ckpt_capacity.is_multiple_of(MD_BLOCK) => {}
            _ => return bad("region layout", l.data_offset),
        }
        let ta = sb.journal_tail.get();
        if !ta.is_multiple_of(MD_BLOCK) || ta >= l.journal_size {
            return bad("journal_tail", ta);
        }
        if sb.active_ckpt.get() > 1 || sb.ckpt_len.get() > l.ckpt_capacity {
            return bad("active checkpoint", sb.ckpt_len.get());
        }
        if l.packed_limit > l.total_clusters {
            return bad("packed_limit", l.packed_limit);
        }
        Ok(l)
    }

    /// Granules per cluster.
    pub fn granules(&self) -> u64 {
        self.cluster_size / self.granule_size
    }

    /// Sectors per cluster.
    pub fn sectors_per_cluster(&self) -> u64 {
        self.cluster_size / SECTOR
    }

    /// Byte offset of a cluster.
    pub fn cluster_offset(&self, pc: u64) -> u64 {
        self.data_offset + pc * self.cluster_size
    }

    /// Byte offset of a packed sector (sectors are numbered across the data region).
    pub fn sector_offset(&self, s: u64) -> u64 {
        self.data_offset + s * SECTOR
    }
}

/// Little-endian writer for records.
#[derive(Default)]
pub struct Writer {
    /// The bytes written.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Append a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Append a u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Append a u16-length-prefixed byte string.
    pub fn blob(&mut self, b: &[u8]) {
        self.u16(b.len().min(u16::MAX as usize) as u16);
        self.buf.extend_from_slice(b.get(..b.len().min(u16::MAX as usize)).unwrap_or(&[]));
    }
}

/// Little-endian reader with typed errors.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Read `b`, naming errors after `what`.
    pub fn new(b: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { b, at: 0, what }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    /// Take `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(FormatError::Truncated {
            what: self.what,
            at: self.at,
            need: n.saturating_sub(self.remaining()),
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    /// Read a byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    /// Read a u16.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    /// Read a u32.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    /// Read a u64.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// Read 16 bytes.
    pub fn b16(&mut self) -> Result<[u8; 16], FormatError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
    /// Read a u16-length-prefixed byte string.
    pub fn blob(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    /// Read a u16-length-prefixed UTF-8 string.
    pub fn text(&mut self, what: &'static str) -> Result<String, FormatError> {
        let b = self.blob()?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadText(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn super_block_roundtrip_and_crc() {
        let mut sb = SuperBlock::new_zeroed();
        sb.magic = SB_MAGIC;
        sb.version = U32::new(VERSION);
        sb.generation = U64::new(7);
        let blk = sb.to_block();
        let back = SuperBlock::parse(&blk).unwrap();
        assert_eq!(back.generation.get(), 7);
        let mut bad = blk.clone();
        bad[100] ^= 1;
        assert!(matches!(SuperBlock::parse(&bad), Err(FormatError::BadCrc { .. })));
        assert!(matches!(SuperBlock::parse(&blk[..10]), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn layout_is_ordered_and_cluster_aligned() {
        let l = Layout::compute(64 << 20, 512, 1 << 20, 0, 64).unwrap();
        assert!(l.ckpt_offset[0] >= l.journal_offset + l.journal_size);
        assert_eq!(l.data_offset % l.cluster_size, 0);
        assert!(l.data_offset + l.total_clusters * l.cluster_size <= 64 << 20);
        assert_eq!(l.granule_size, 16384);
        assert!(Layout::compute(1 << 20, 512, 1 << 20, 0, 64).is_none());
    }

    #[test]
    fn store_name_with_nul_or_bad_length_is_an_error() {
        let mut sb = SuperBlock::new_zeroed();
        sb.name[..3].copy_from_slice(b"lvs");
        sb.name_len = U16::new(3);
        assert_eq!(sb.name().unwrap(), "lvs");
        // Found by the store_open fuzz target: NULs in the name panicked naming the
        // metadata thread at load.
        sb.name_len = U16::new(10);
        assert!(matches!(sb.name(), Err(FormatError::BadText(_))));
        sb.name_len = U16::new(0);
        assert!(matches!(sb.name(), Err(FormatError::BadValue { .. })));
        sb.name_len = U16::new(64);
        assert!(matches!(sb.name(), Err(FormatError::BadValue { .. })));
    }

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(&[1, 2, 3], "t");
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(matches!(r.u32(), Err(FormatError::Truncated { .. })));
    }
}
