//! Metadata records: the logical changes the journal carries and the checkpoint is made of,
//! with their wire encoding (see `FORMAT.md`, "Records").

use crate::format::{FormatError, Reader, Writer, MAX_NAME, MAX_XATTRS, MAX_XATTR_BYTES};

/// Volume flag: thin provisioned (clusters allocated on first write).
pub const VOL_THIN: u32 = 1;
/// Volume flag: a snapshot (read-only).
pub const VOL_SNAPSHOT: u32 = 2;
/// All known volume flags.
pub const VOL_FLAGS: u32 = VOL_THIN | VOL_SNAPSHOT;

/// Cluster-map entry flag: the cluster's data is encrypted (with the owning volume's key).
pub const ENT_ENC: u64 = 1 << 63;
/// Mask of the physical-cluster part of a cluster-map entry (cluster number + 1).
pub const ENT_PC_MASK: u64 = (1 << 48) - 1;

/// Chunk-map entry flag: stored uncompressed.
pub const CHUNK_RAW: u64 = 1 << 62;
/// Chunk-map entry flag: encrypted.
pub const CHUNK_ENC: u64 = 1 << 63;
const CHUNK_SECTOR_BITS: u32 = 44;
const CHUNK_NSECT_MASK: u64 = (1 << 14) - 1;

/// Bytes of a record's header (`kind u16, len u32`): the least a record takes.
pub const RECORD_HEADER_BYTES: usize = 6;

/// A decoded chunk-map entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// First sector.
    pub sector: u64,
    /// Sectors used.
    pub nsect: u64,
    /// Stored uncompressed.
    pub raw: bool,
    /// Encrypted.
    pub enc: bool,
}

impl ChunkLoc {
    /// Encode (0 is "no entry").
    pub fn encode(&self) -> u64 {
        (self.sector + 1)
            | ((self.nsect & CHUNK_NSECT_MASK) << CHUNK_SECTOR_BITS)
            | if self.raw { CHUNK_RAW } else { 0 }
            | if self.enc { CHUNK_ENC } else { 0 }
    }

    /// Decode; `None` for "no entry".
    pub fn decode(v: u64) -> Option<ChunkLoc> {
        let s = v & ((1 << CHUNK_SECTOR_BITS) - 1);
        if s == 0 {
            return None;
        }
        Some(ChunkLoc {
            sector: s - 1,
            nsect: (v >> CHUNK_SECTOR_BITS) & CHUNK_NSECT_MASK,
            raw: v & CHUNK_RAW != 0,
            enc: v & CHUNK_ENC != 0,
        })
    }
}

/// Reference to an encryption key: never the key itself.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// Random nonce the check value was computed over.
    pub nonce: [u8; 16],
    /// AES-XTS encryption of the nonce (twice) under the key: proves a key is the right one.
    pub check: [u8; 16],
}

/// A volume's persistent description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolDesc {
    /// Store-unique id (never reused; 0 means none).
    pub id: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Name inside the store.
    pub name: String,
    /// `VOL_*` flags.
    pub flags: u32,
    /// Size in store blocks.
    pub size_blocks: u64,
    /// Parent (snapshot) id, 0 for none.
    pub parent: u32,
    /// Blocks at and past this read zeroes instead of falling through to the parent.
    pub parent_limit: u64,
    /// For snapshots: the volume the snapshot was taken of (0 when none).
    pub origin: u32,
    /// Compression level for new writes, 0 when off.
    pub comp_level: u8,
    /// Encryption key reference, when encryption is on.
    pub enc: Option<KeyRef>,
    /// Extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl VolDesc {
    /// A new volume: no parent, origin, codec or attributes.
    pub fn new(id: u32, uuid: [u8; 16], name: &str, flags: u32, size_blocks: u64) -> VolDesc {
        VolDesc {
            id,
            uuid,
            name: name.to_string(),
            flags,
            size_blocks,
            parent: 0,
            parent_limit: 0,
            origin: 0,
            comp_level: 0,
            enc: None,
            xattrs: Vec::new(),
        }
    }

    /// Whether the volume is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.flags & VOL_SNAPSHOT != 0
    }

    fn encode(&self, w: &mut Writer) {
        w.u32(self.id);
        w.bytes(&self.uuid);
        w.u32(self.flags);
        w.u64(self.size_blocks);
        w.u32(self.parent);
        w.u64(self.parent_limit);
        w.u32(self.origin);
        w.u8(self.comp_level);
        match &self.enc {
            Some(k) => {
                w.u8(1);
                w.bytes(&k.nonce);
                w.bytes(&k.check);
            }
            None => w.u8(0),
        }
        w.blob(self.name.as_bytes());
        w.u16(self.xattrs.len() as u16);
        for (k, v) in &self.xattrs {
            w.blob(k.as_bytes());
            w.blob(v);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<VolDesc, FormatError> {
        let id = r.u32()?;
        let uuid = r.b16()?;
        let flags = r.u32()?;
        if flags & !VOL_FLAGS != 0 {
            return Err(FormatError::BadValue { what: "volume flags", value: flags as u64 });
        }
        let size_blocks = r.u64()?;
        let parent = r.u32()?;
        let parent_limit = r.u64()?;
        let origin = r.u32()?;
        let comp_level = r.u8()?;
        let enc = match r.u8()? {
            0 => None,
            1 => Some(KeyRef { nonce: r.b16()?, check: r.b16()? }),
            v => return Err(FormatError::BadValue { what: "encryption flag", value: v as u64 }),
        };
        let name = r.text("volume name")?;
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(FormatError::BadValue { what: "volume name length", value: name.len() as u64 });
        }
        let n = r.u16()? as usize;
        if n > MAX_XATTRS {
            return Err(FormatError::BadValue { what: "xattr count", value: n as u64 });
        }
        let mut xattrs = Vec::with_capacity(n);
        let mut total = 0;
        for _ in 0..n {
            let k = r.text("xattr key")?;
            let v = r.blob()?.to_vec();
            total += k.len() + v.len();
            xattrs.push((k, v));
        }
        if total > MAX_XATTR_BYTES {
            return Err(FormatError::BadValue { what: "xattr bytes", value: total as u64 });
        }
        if id == 0 {
            return Err(FormatError::BadValue { what: "volume id", value: 0 });
        }
        Ok(VolDesc { id, uuid, name, flags, size_blocks, parent, parent_limit, origin, comp_level, enc, xattrs })
    }
}

/// One logical metadata change (journal) or one piece of state (checkpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Create a volume (a thick volume's clusters follow in an `AllocRuns` of the same transaction).
    CreateVolume(VolDesc),
    /// Delete a volume and free its clusters and sectors.
    DeleteVolume {
        /// Volume.
        id: u32,
    },
    /// Rename a volume.
    Rename {
        /// Volume.
        id: u32,
        /// New name.
        name: String,
    },
    /// Set (`Some`) or remove (`None`) an extended attribute.
    SetXattr {
        /// Volume.
        id: u32,
        /// Key.
        key: String,
        /// Value.
        value: Option<Vec<u8>>,
    },
    /// Change a volume's size; shrinking frees what lies past the end.
    Resize {
        /// Volume.
        id: u32,
        /// New size in blocks.
        size_blocks: u64,
    },
    /// Take a snapshot: the new snapshot takes over the origin's clusters, the origin becomes
    /// an empty clone of it.
    Snapshot {
        /// Volume snapshotted.
        origin: u32,
        /// The snapshot's description.
        snap: VolDesc,
    },
    /// Revert a volume to a snapshot: drop its own data, make it an empty clone of `snap`.
    Restore {
        /// Volume.
        id: u32,
        /// Snapshot.
        snap: u32,
    },
    /// Change a volume's parent (after inflate or decouple copied what it needed).
    SetParent {
        /// Volume.
        id: u32,
        /// New parent, 0 for none.
        parent: u32,
        /// New parent limit.
        parent_limit: u64,
    },
    /// Delete snapshot `snap` whose only child is `child`: clusters the child lacks move to it.
    MergeDelete {
        /// Snapshot.
        snap: u32,
        /// Its only child.
        child: u32,
    },
    /// Set the codec settings for new writes.
    SetCodec {
        /// Volume.
        id: u32,
        /// Compression level (0 off).
        comp_level: u8,
        /// Key reference (None: not encrypted).
        enc: Option<KeyRef>,
    },
    /// Map runs of physical clusters to consecutive logical clusters starting at `first_lc`.
    AllocRuns {
        /// Volume.
        id: u32,
        /// First logical cluster.
        first_lc: u64,
        /// Entry flags (`ENT_ENC`).
        flags: u64,
        /// Initial valid mask of each cluster.
        valid: u64,
        /// (first physical cluster, count).
        runs: Vec<(u64, u32)>,
    },
    /// Mark granules valid in the cluster mapped at `lc` (which must be `pc`).
    SetValid {
        /// Volume.
        id: u32,
        /// Logical cluster.
        lc: u64,
        /// Physical cluster expected there.
        pc: u64,
        /// Granule bits to set.
        mask: u64,
    },
    /// Replace the cluster at `lc` by `pc` (freeing the old one).
    Remap {
        /// Volume.
        id: u32,
        /// Logical cluster.
        lc: u64,
        /// New physical cluster.
        pc: u64,
        /// Entry flags.
        flags: u64,
        /// Valid mask.
        valid: u64,
    },
    /// Point a chunk at new packed sectors (`entry` 0: remove), freeing the old sectors and
    /// clearing the chunk's granules in the cluster map.
    ChunkWrite {
        /// Volume.
        id: u32,
        /// Chunk index.
        chunk: u64,
        /// Encoded [`ChunkLoc`], or 0.
        entry: u64,
    },
    /// Release granules of the cluster mapped at `lc` (which must be `pc`): clear their valid
    /// bits so they read as zeroes; a cluster left with no valid bit is unmapped and freed.
    /// Only granules the volume does not read from a parent (at or past `parent_limit`).
    Release {
        /// Volume.
        id: u32,
        /// Logical cluster.
        lc: u64,
        /// Physical cluster expected there.
        pc: u64,
        /// Granule bits to clear (each must be set).
        mask: u64,
    },
    /// Checkpoint: a volume.
    PutVolume(VolDesc),
    /// Checkpoint: cluster-map entries (logical cluster, entry, valid mask).
    PutClusters {
        /// Volume.
        id: u32,
        /// Entries.
        entries: Vec<(u64, u64, u64)>,
    },
    /// Checkpoint: chunk-map entries (chunk, entry).
    PutChunks {
        /// Volume.
        id: u32,
        /// Entries.
        entries: Vec<(u64, u64)>,
    },
    /// Checkpoint: the cluster allocation bitmap.
    PutBitmap {
        /// Bits.
        nbits: u64,
        /// Little-endian bit order, bit `i` in byte `i / 8`.
        bytes: Vec<u8>,
    },
}

impl Record {
    fn kind(&self) -> u16 {
        match self {
            Record::CreateVolume(_) => 1,
            Record::DeleteVolume { .. } => 2,
            Record::Rename { .. } => 3,
            Record::SetXattr { .. } => 4,
            Record::Resize { .. } => 5,
            Record::Snapshot { .. } => 6,
            Record::Restore { .. } => 7,
            Record::SetParent { .. } => 8,
            Record::MergeDelete { .. } => 9,
            Record::SetCodec { .. } => 10,
            Record::AllocRuns { .. } => 11,
            Record::SetValid { .. } => 12,
            Record::Remap { .. } => 13,
            Record::ChunkWrite { .. } => 14,
            Record::Release { .. } => 15,
            Record::PutVolume(_) => 20,
            Record::PutClusters { .. } => 21,
            Record::PutChunks { .. } => 22,
            Record::PutBitmap { .. } => 23,
        }
    }

    /// Append the record (`kind u16, len u32, payload`) to `w`.
    pub fn encode(&self, w: &mut Writer) {
        let mut p = Writer::default();
        match self {
            Record::CreateVolume(d) | Record::PutVolume(d) => d.encode(&mut p),
            Record::DeleteVolume { id } => p.u32(*id),
            Record::Rename { id, name } => {
                p.u32(*id);
                p.blob(name.as_bytes());
            }
            Record::SetXattr { id, key, value } => {
                p.u32(*id);
                p.blob(key.as_bytes());
                match value {
                    Some(v) => {
                        p.u8(1);
                        p.blob(v);
                    }
                    None => p.u8(0),
                }
            }
            Record::Resize { id, size_blocks } => {
                p.u32(*id);
                p.u64(*size_blocks);
            }
            Record::Snapshot { origin, snap } => {
                p.u32(*origin);
                snap.encode(&mut p);
            }
            Record::Restore { id, snap } => {
                p.u32(*id);
                p.u32(*snap);
            }
            Record::SetParent { id, parent, parent_limit } => {
                p.u32(*id);
                p.u32(*parent);
                p.u64(*parent_limit);
            }
            Record::MergeDelete { snap, child } => {
                p.u32(*snap);
                p.u32(*child);
            }
            Record::SetCodec { id, comp_level, enc } => {
                p.u32(*id);
                p.u8(*comp_level);
                match enc {
                    Some(k) => {
                        p.u8(1);
                        p.bytes(&k.nonce);
                        p.bytes(&k.check);
                    }
                    None => p.u8(0),
                }
            }
            Record::AllocRuns { id, first_lc, flags, valid, runs } => {
                p.u32(*id);
                p.u64(*first_lc);
                p.u64(*flags);
                p.u64(*valid);
                p.u32(runs.len() as u32);
                for (pc, n) in runs {
                    p.u64(*pc);
                    p.u32(*n);
                }
            }
            Record::SetValid { id, lc, pc, mask } | Record::Release { id, lc, pc, mask } => {
                p.u32(*id);
                p.u64(*lc);
                p.u64(*pc);
                p.u64(*mask);
            }
            Record::Remap { id, lc, pc, flags, valid } => {
                p.u32(*id);
                p.u64(*lc);
                p.u64(*pc);
                p.u64(*flags);
                p.u64(*valid);
            }
            Record::ChunkWrite { id, chunk, entry } => {
                p.u32(*id);
                p.u64(*chunk);
                p.u64(*entry);
            }
            Record::PutClusters { id, entries } => {
                p.u32(*id);
                p.u32(entries.len() as u32);
                for (lc, e, v) in entries {
                    p.u64(*lc);
                    p.u64(*e);
                    p.u64(*v);
                }
            }
            Record::PutChunks { id, entries } => {
                p.u32(*id);
                p.u32(entries.len() as u32);
                for (c, e) in entries {
                    p.u64(*c);
                    p.u64(*e);
                }
            }
            Record::PutBitmap { nbits, bytes } => {
                p.u64(*nbits);
                p.u32(bytes.len() as u32);
                p.bytes(bytes);
            }
        }
        w.u16(self.kind());
        w.u32(p.buf.len() as u32);
        w.bytes(&p.buf);
    }

    /// Decode one record from `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Record, FormatError> {
        let kind = r.u16()?;
        let len = r.u32()? as usize;
        let payload = r.take(len)?;
        let mut p = Reader::new(payload, "record");
        let rec = match kind {
            1 => Record::CreateVolume(VolDesc::decode(&mut p)?),
            2 => Record::DeleteVolume { id: p.u32()? },
            3 => Record::Rename { id: p.u32()?, name: p.text("volume name")? },
            4 => {
                let id = p.u32()?;
                let key = p.text("xattr key")?;
                let value = match p.u8()? {
                    0 => None,
                    1 => Some(p.blob()?.to_vec()),
                    v => return Err(FormatError::BadValue { what: "xattr presence", value: v as u64 }),
                };
                Record::SetXattr { id, key, value }
            }
            5 => Record::Resize { id: p.u32()?, size_blocks: p.u64()? },
            6 => {
                let origin = p.u32()?;
                Record::Snapshot { origin, snap: VolDesc::decode(&mut p)? }
            }
            7 => Record::Restore { id: p.u32()?, snap: p.u32()? },
            8 => Record::SetParent { id: p.u32()?, parent: p.u32()?, parent_limit: p.u64()? },
            9 => Record::MergeDelete { snap: p.u32()?, child: p.u32()? },
            10 => {
                let id = p.u32()?;
                let comp_level = p.u8()?;
                let enc = match p.u8()? {
                    0 => None,
                    1 => Some(KeyRef { nonce: p.b16()?, check: p.b16()? }),
                    v => return Err(FormatError::BadValue { what: "encryption flag", value: v as u64 }),
                };
                Record::SetCodec { id, comp_level, enc }
            }
            11 => {
                let id = p.u32()?;
                let first_lc = p.u64()?;
                let flags = p.u64()?;
                let valid = p.u64()?;
                let n = p.u32()? as usize;
                if n > p.remaining() / 12 {
                    return Err(FormatError::BadValue { what: "run count", value: n as u64 });
                }
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    runs.push((p.u64()?, p.u32()?));
                }
                Record::AllocRuns { id, first_lc, flags, valid, runs }
            }
            12 => Record::SetValid { id: p.u32()?, lc: p.u64()?, pc: p.u64()?, mask: p.u64()? },
            13 => Record::Remap { id: p.u32()?, lc: p.u64()?, pc: p.u64()?, flags: p.u64()?, valid: p.u64()? },
            14 => Record::ChunkWrite { id: p.u32()?, chunk: p.u64()?, entry: p.u64()? },
            15 => Record::Release { id: p.u32()?, lc: p.u64()?, pc: p.u64()?, mask: p.u64()? },
            20 => Record::PutVolume(VolDesc::decode(&mut p)?),
            21 => {
                let id = p.u32()?;
                let n = p.u32()? as usize;
                if n > p.remaining() / 24 {
                    return Err(FormatError::BadValue { what: "cluster entry count", value: n as u64 });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((p.u64()?, p.u64()?, p.u64()?));
                }
                Record::PutClusters { id, entries }
            }
            22 => {
                let id = p.u32()?;
                let n = p.u32()? as usize;
                if n > p.remaining() / 16 {
                    return Err(FormatError::BadValue { what: "chunk entry count", value: n as u64 });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((p.u64()?, p.u64()?));
                }
                Record::PutChunks { id, entries }
            }
            23 => {
                let nbits = p.u64()?;
                let n = p.u32()? as usize;
                Record::PutBitmap { nbits, bytes: p.take(n)?.to_vec() }
            }
            k => return Err(FormatError::UnknownRecord(k)),
        };
        if p.remaining() != 0 {
            return Err(FormatError::BadValue { what: "record trailing bytes", value: p.remaining() as u64 });
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> VolDesc {
        VolDesc {
            id: 3,
            uuid: [7; 16],
            name: "vol".into(),
            flags: VOL_THIN,
            size_blocks: 1000,
            parent: 1,
            parent_limit: 900,
            origin: 0,
            comp_level: 2,
            enc: Some(KeyRef { nonce: [1; 16], check: [2; 16] }),
            xattrs: vec![("k".into(), b"v".to_vec())],
        }
    }

    #[test]
    fn every_record_roundtrips() {
        let recs = vec![
            Record::CreateVolume(desc()),
            Record::DeleteVolume { id: 4 },
            Record::Rename { id: 4, name: "x".into() },
            Record::SetXattr { id: 4, key: "a".into(), value: Some(vec![1, 2]) },
            Record::SetXattr { id: 4, key: "a".into(), value: None },
            Record::Resize { id: 4, size_blocks: 99 },
            Record::Snapshot { origin: 2, snap: desc() },
            Record::Restore { id: 2, snap: 3 },
            Record::SetParent { id: 2, parent: 0, parent_limit: 0 },
            Record::MergeDelete { snap: 3, child: 2 },
            Record::SetCodec { id: 2, comp_level: 0, enc: None },
            Record::AllocRuns { id: 2, first_lc: 5, flags: ENT_ENC, valid: u64::MAX, runs: vec![(1, 2), (9, 1)] },
            Record::SetValid { id: 2, lc: 1, pc: 4, mask: 0b101 },
            Record::Remap { id: 2, lc: 1, pc: 5, flags: 0, valid: 1 },
            Record::ChunkWrite { id: 2, chunk: 8, entry: 77 },
            Record::Release { id: 2, lc: 3, pc: 9, mask: 0b110 },
            Record::PutVolume(desc()),
            Record::PutClusters { id: 2, entries: vec![(0, 1, 2)] },
            Record::PutChunks { id: 2, entries: vec![(0, 1)] },
            Record::PutBitmap { nbits: 9, bytes: vec![0xff, 1] },
        ];
        let mut w = Writer::default();
        for r in &recs {
            r.encode(&mut w);
        }
        let mut rd = Reader::new(&w.buf, "t");
        for r in &recs {
            assert_eq!(&Record::decode(&mut rd).unwrap(), r);
        }
        assert_eq!(rd.remaining(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut w = Writer::default();
        Record::AllocRuns { id: 1, first_lc: 0, flags: 0, valid: 0, runs: vec![(1, 1)] }.encode(&mut w);
        for cut in 0..w.buf.len() {
            assert!(Record::decode(&mut Reader::new(&w.buf[..cut], "t")).is_err());
        }
        let mut bad = w.buf.clone();
        bad[0] = 99;
        assert!(matches!(Record::decode(&mut Reader::new(&bad, "t")), Err(FormatError::UnknownRecord(99))));
    }

    #[test]
    fn release_has_its_own_kind_and_layout() {
        let mut w = Writer::default();
        Record::Release { id: 7, lc: 0x0102, pc: 0x0304, mask: 0x8000_0000_0000_0001 }.encode(&mut w);
        // kind 15, payload of 28 bytes: id u32, lc u64, pc u64, mask u64.
        assert_eq!(&w.buf[..6], &[15, 0, 28, 0, 0, 0]);
        assert_eq!(&w.buf[6..10], &7u32.to_le_bytes());
        assert_eq!(&w.buf[10..18], &0x0102u64.to_le_bytes());
        assert_eq!(&w.buf[18..26], &0x0304u64.to_le_bytes());
        assert_eq!(&w.buf[26..34], &0x8000_0000_0000_0001u64.to_le_bytes());
        for cut in 0..w.buf.len() {
            assert!(Record::decode(&mut Reader::new(&w.buf[..cut], "t")).is_err());
        }
        // A longer payload than the kind defines is refused.
        let mut long = w.buf.clone();
        long[2] = 29;
        long.push(0);
        assert!(Record::decode(&mut Reader::new(&long, "t")).is_err());
    }

    #[test]
    fn chunk_loc_roundtrip() {
        let l = ChunkLoc { sector: 12345, nsect: 16, raw: true, enc: false };
        assert_eq!(ChunkLoc::decode(l.encode()), Some(l));
        assert_eq!(ChunkLoc::decode(0), None);
    }
}
