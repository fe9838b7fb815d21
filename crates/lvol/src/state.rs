//! The in-memory metadata state of a store and the one function that changes it:
//! [`MdState::apply`]. The journal replays records through it at load and the running store
//! applies each record through it when it is made, so the two cannot diverge.
//!
//! Maps are arrays of atomics so IO channels read them without a lock; only `apply` (under the
//! store's metadata mutex) writes them.

use crate::format::{FormatError, Layout};
use crate::record::{ChunkLoc, Record, VolDesc, ENT_ENC, ENT_PC_MASK, VOL_SNAPSHOT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Why a record could not be applied (corrupt journal/checkpoint, or a bug in a planner).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The record names a volume that does not exist.
    #[error("record {what} names unknown volume {id}")]
    NoVolume {
        /// Record kind.
        what: &'static str,
        /// Volume id.
        id: u32,
    },
    /// The record contradicts the state.
    #[error("record {what} is inconsistent with the state: {why}")]
    Inconsistent {
        /// Record kind.
        what: &'static str,
        /// Explanation.
        why: String,
    },
    /// Bytes could not be decoded.
    #[error("undecodable metadata")]
    Format(#[from] FormatError),
}

fn bad(what: &'static str, why: impl Into<String>) -> ApplyError {
    ApplyError::Inconsistent { what, why: why.into() }
}

/// A plain bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
}

impl Bitmap {
    /// `bits` clear bits.
    pub fn new(bits: u64) -> Bitmap {
        Bitmap { words: vec![0; bits.div_ceil(64) as usize], bits }
    }
    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.bits
    }
    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }
    /// Bit `i` (false when out of range).
    pub fn get(&self, i: u64) -> bool {
        i < self.bits && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Set bit `i` to `v` (ignored when out of range).
    pub fn set(&mut self, i: u64, v: bool) {
        if i < self.bits {
            let w = &mut self.words[(i / 64) as usize];
            if v {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }
    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }
    /// First clear bit at or after `from`, wrapping around.
    pub fn find_clear(&self, from: u64) -> Option<u64> {
        let n = self.bits;
        if n == 0 {
            return None;
        }
        let from = from % n;
        (from..n).chain(0..from).find(|&i| !self.get(i))
    }
    /// Bytes, bit `i` in byte `i / 8` at position `i % 8`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.bits.div_ceil(8) as usize];
        for (i, b) in out.iter_mut().enumerate() {
            let w = self.words[i / 8];
            *b = (w >> ((i % 8) * 8)) as u8;
        }
        out
    }
    /// Inverse of [`Bitmap::to_bytes`].
    pub fn from_bytes(bits: u64, bytes: &[u8]) -> Option<Bitmap> {
        if bytes.len() as u64 != bits.div_ceil(8) {
            return None;
        }
        let mut m = Bitmap::new(bits);
        for (i, b) in bytes.iter().enumerate() {
            m.words[i / 8] |= (*b as u64) << ((i % 8) * 8);
        }
        // Bits past the end must be zero.
        if !bits.is_multiple_of(64) {
            if let Some(last) = m.words.last() {
                if last >> (bits % 64) != 0 {
                    return None;
                }
            }
        }
        Some(m)
    }
}

/// A volume's maps: one cluster entry and one valid mask per logical cluster, and one chunk
/// entry per granule when the volume ever held compressed data.
pub struct Extents {
    /// `0` or `(physical cluster + 1) | flags`.
    pub ents: Box<[AtomicU64]>,
    /// Granule valid bits of each logical cluster.
    pub valid: Box<[AtomicU64]>,
    /// Encoded [`ChunkLoc`] per granule (empty when the volume has no chunk map).
    pub chunks: Box<[AtomicU64]>,
}

fn atomics(n: u64) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Extents {
    /// Empty maps for `nclusters` clusters (`granules` per cluster when a chunk map is wanted).
    pub fn new(nclusters: u64, chunk_granules: Option<u64>) -> Extents {
        Extents {
            ents: atomics(nclusters),
            valid: atomics(nclusters),
            chunks: atomics(chunk_granules.map_or(0, |g| nclusters * g)),
        }
    }

    /// Logical clusters.
    pub fn nclusters(&self) -> u64 {
        self.ents.len() as u64
    }

    /// The entry of a logical cluster (0 when out of range).
    #[inline]
    pub fn ent(&self, lc: u64) -> u64 {
        self.ents.get(lc as usize).map_or(0, |a| a.load(Relaxed))
    }

    /// The valid mask of a logical cluster.
    #[inline]
    pub fn valid(&self, lc: u64) -> u64 {
        self.valid.get(lc as usize).map_or(0, |a| a.load(Relaxed))
    }

    /// The chunk entry of a granule (0 when none or no chunk map).
    #[inline]
    pub fn chunk(&self, g: u64) -> u64 {
        self.chunks.get(g as usize).map_or(0, |a| a.load(Relaxed))
    }

    fn set_ent(&self, lc: u64, v: u64) {
        if let Some(a) = self.ents.get(lc as usize) {
            a.store(v, Relaxed);
        }
    }
    fn set_valid(&self, lc: u64, v: u64) {
        if let Some(a) = self.valid.get(lc as usize) {
            a.store(v, Relaxed);
        }
    }
    fn set_chunk(&self, g: u64, v: u64) {
        if let Some(a) = self.chunks.get(g as usize) {
            a.store(v, Relaxed);
        }
    }

    /// A copy resized to `nclusters` (entries past the end are dropped, not freed).
    fn resized(&self, nclusters: u64, granules: u64, want_chunks: bool) -> Extents {
        let e = Extents::new(nclusters, (want_chunks || !self.chunks.is_empty()).then_some(granules));
        for lc in 0..nclusters.min(self.nclusters()) {
            e.set_ent(lc, self.ent(lc));
            e.set_valid(lc, self.valid(lc));
        }
        for g in 0..(e.chunks.len().min(self.chunks.len()) as u64) {
            e.set_chunk(g, self.chunk(g));
        }
        e
    }
}

/// Physical cluster of an entry.
#[inline]
pub fn ent_pc(e: u64) -> Option<u64> {
    let v = e & ENT_PC_MASK;
    (v != 0).then(|| v - 1)
}

/// A volume in the state.
pub struct Vol {
    /// Description.
    pub desc: VolDesc,
    /// Maps.
    pub ext: Arc<Extents>,
}

/// A cluster holding packed (compressed) sectors.
#[derive(Clone, Debug)]
pub struct Packed {
    /// Sectors referenced by chunk entries.
    pub live: u64,
    /// Sectors not available: referenced, reserved by writes in flight, or freed but not yet durable.
    pub busy: Bitmap,
}

/// Space freed by a record, reusable once the record is durable.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Freed {
    /// A whole cluster.
    Cluster(u64),
    /// Packed sectors.
    Sectors(u64, u64),
}

/// What applying a record did, beyond the state change.
#[derive(Default)]
pub struct Effects {
    /// Volumes' shapes, parents or codecs changed: IO views must be rebuilt.
    pub structural: bool,
    /// Space freed.
    pub freed: Vec<Freed>,
}

/// The whole metadata state of a store.
pub struct MdState {
    /// Geometry.
    pub layout: Layout,
    /// Volumes by id.
    pub vols: BTreeMap<u32, Vol>,
    /// Next volume id.
    pub next_id: u32,
    /// Persistently allocated clusters (mapped by a volume or holding live packed sectors).
    pub alloc: Bitmap,
    /// Clusters not available to the allocator (`alloc` plus reserved and not-yet-durable frees).
    pub inuse: Bitmap,
    /// Packed clusters.
    pub packed: BTreeMap<u64, Packed>,
    /// Sequence number of the last applied record.
    pub seq: u64,
    cursor: u64,
}

impl MdState {
    /// An empty store state.
    pub fn new(layout: Layout) -> MdState {
        MdState {
            layout,
            vols: BTreeMap::new(),
            next_id: 1,
            alloc: Bitmap::new(layout.total_clusters),
            inuse: Bitmap::new(layout.total_clusters),
            packed: BTreeMap::new(),
            seq: 0,
            cursor: 0,
        }
    }

    /// Blocks per cluster.
    pub fn cluster_blocks(&self) -> u64 {
        self.layout.cluster_size / self.layout.block_size as u64
    }

    /// Blocks per granule.
    pub fn granule_blocks(&self) -> u64 {
        self.layout.granule_size / self.layout.block_size as u64
    }

    /// Logical clusters of a volume of `size_blocks`.
    pub fn nclusters_for(&self, size_blocks: u64) -> u64 {
        size_blocks.div_ceil(self.cluster_blocks())
    }

    /// Logical clusters of a volume of `size_blocks` a record asks for, refused past what
    /// the API allows (64 times the store's clusters): the maps are allocated from it.
    fn nclusters_checked(&self, size_blocks: u64, what: &'static str) -> Result<u64, ApplyError> {
        let n = self.nclusters_for(size_blocks);
        if n > self.layout.total_clusters.saturating_mul(64) {
            return Err(bad(what, format!("size of {size_blocks} blocks is more than 64 times the store's capacity")));
        }
        Ok(n)
    }

    /// A volume, or an error naming the record.
    pub fn vol(&self, id: u32, what: &'static str) -> Result<&Vol, ApplyError> {
        self.vols.get(&id).ok_or(ApplyError::NoVolume { what, id })
    }

    /// Volume by name.
    pub fn by_name(&self, name: &str) -> Option<&Vol> {
        self.vols.values().find(|v| v.desc.name == name)
    }

    /// Ids of the volumes whose parent is `id`.
    pub fn children(&self, id: u32) -> Vec<u32> {
        self.vols.values().filter(|v| v.desc.parent == id).map(|v| v.desc.id).collect()
    }

    /// Clusters a volume owns (regular clusters mapped in its own maps).
    pub fn owned_clusters(&self, id: u32) -> u64 {
        self.vols.get(&id).map_or(0, |v| (0..v.ext.nclusters()).filter(|&lc| v.ext.ent(lc) != 0).count() as u64)
    }

    /// Packed sectors a volume's chunks use, and the number of chunks.
    pub fn owned_sectors(&self, id: u32) -> (u64, u64) {
        let Some(v) = self.vols.get(&id) else { return (0, 0) };
        let mut s = 0;
        let mut n = 0;
        for g in 0..v.ext.chunks.len() as u64 {
            if let Some(l) = ChunkLoc::decode(v.ext.chunk(g)) {
                s += l.nsect;
                n += 1;
            }
        }
        (s, n)
    }

    /// Pick `n` free clusters for allocation (runs, lowest address first from the cursor)
    /// and mark them in use. `None` (and nothing marked) when there are not enough.
    pub fn reserve_clusters(&mut self, n: u64) -> Option<Vec<(u64, u32)>> {
        if self.layout.total_clusters - self.inuse.count() < n {
            return None;
        }
        let mut runs: Vec<(u64, u32)> = Vec::new();
        let mut left = n;
        let mut at = self.cursor;
        while left > 0 {
            let pc = self.inuse.find_clear(at)?;
            self.inuse.set(pc, true);
            match runs.last_mut() {
                Some((start, cnt)) if *start + *cnt as u64 == pc && *cnt < u32::MAX => *cnt += 1,
                _ => runs.push((pc, 1)),
            }
            left -= 1;
            at = pc + 1;
        }
        self.cursor = at;
        Some(runs)
    }

    /// Undo [`MdState::reserve_clusters`] for clusters that were never recorded.
    pub fn unreserve_clusters(&mut self, runs: &[(u64, u32)]) {
        for &(pc, n) in runs {
            for c in pc..pc + n as u64 {
                if !self.alloc.get(c) {
                    self.inuse.set(c, false);
                }
            }
        }
    }

    /// Reserve `nsect` consecutive packed sectors (opening a new packed cluster when needed and
    /// `packed_limit` allows). Returns the first sector.
    pub fn reserve_sectors(&mut self, nsect: u64) -> Option<u64> {
        let spc = self.layout.sectors_per_cluster();
        if nsect == 0 || nsect > spc {
            return None;
        }
        let mut pick = None;
        for (&pc, p) in self.packed.iter() {
            let mut run = 0;
            for s in 0..spc {
                if p.busy.get(s) {
                    run = 0;
                } else {
                    run += 1;
                    if run == nsect {
                        pick = Some((pc, s + 1 - nsect));
                        break;
                    }
                }
            }
            if pick.is_some() {
                break;
            }
        }
        if pick.is_none() && (self.packed.len() as u64) < self.layout.packed_limit {
            let runs = self.reserve_clusters(1)?;
            let pc = runs.first()?.0;
            self.packed.insert(pc, Packed { live: 0, busy: Bitmap::new(spc) });
            pick = Some((pc, 0));
        }
        let (pc, first) = pick?;
        let p = self.packed.get_mut(&pc)?;
        for s in first..first + nsect {
            p.busy.set(s, true);
        }
        Some(pc * spc + first)
    }

    /// Release space: clusters and sectors freed by durable records, or reservations abandoned.
    pub fn release(&mut self, f: Freed) {
        match f {
            Freed::Cluster(pc) => {
                if !self.alloc.get(pc) && !self.packed.contains_key(&pc) {
                    self.inuse.set(pc, false);
                }
            }
            Freed::Sectors(s, n) => {
                let spc = self.layout.sectors_per_cluster();
                let pc = s / spc;
                let mut drop_it = false;
                if let Some(p) = self.packed.get_mut(&pc) {
                    for i in s % spc..(s % spc + n).min(spc) {
                        p.busy.set(i, false);
                    }
                    drop_it = p.live == 0 && p.busy.count() == 0;
                }
                if drop_it {
                    self.packed.remove(&pc);
                    if !self.alloc.get(pc) {
                        self.inuse.set(pc, false);
                    }
                }
            }
        }
    }

    fn free_cluster(&mut self, pc: u64, fx: &mut Effects) {
        self.alloc.set(pc, false);
        fx.freed.push(Freed::Cluster(pc));
    }

    fn free_chunk(&mut self, entry: u64, fx: &mut Effects) {
        let Some(l) = ChunkLoc::decode(entry) else { return };
        let spc = self.layout.sectors_per_cluster();
        let pc = l.sector / spc;
        if let Some(p) = self.packed.get_mut(&pc) {
            p.live = p.live.saturating_sub(l.nsect);
            if p.live == 0 {
                self.alloc.set(pc, false);
            }
        }
        fx.freed.push(Freed::Sectors(l.sector, l.nsect));
    }

    /// Free everything a volume's maps hold from logical cluster `from_lc` and granule `from_g` on.
    fn free_maps_from(&mut self, ext: &Extents, from_lc: u64, from_g: u64, fx: &mut Effects) {
        for lc in from_lc..ext.nclusters() {
            if let Some(pc) = ent_pc(ext.ent(lc)) {
                self.free_cluster(pc, fx);
            }
            ext.set_ent(lc, 0);
            ext.set_valid(lc, 0);
        }
        for g in from_g..ext.chunks.len() as u64 {
            let e = ext.chunk(g);
            if e != 0 {
                self.free_chunk(e, fx);
                ext.set_chunk(g, 0);
            }
        }
    }

    fn check_new_id(&mut self, id: u32, what: &'static str) -> Result<(), ApplyError> {
        if id < self.next_id || self.vols.contains_key(&id) {
            return Err(bad(what, format!("volume id {id} reused (next id {})", self.next_id)));
        }
        if self.vols.len() >= self.layout.max_volumes as usize {
            return Err(bad(what, "too many volumes"));
        }
        self.next_id = id.checked_add(1).ok_or_else(|| bad(what, "volume ids exhausted"))?;
        Ok(())
    }

    fn check_name(&self, name: &str, except: u32, what: &'static str) -> Result<(), ApplyError> {
        if self.vols.values().any(|v| v.desc.name == name && v.desc.id != except) {
            return Err(bad(what, format!("duplicate volume name {name}")));
        }
        Ok(())
    }

    fn check_parent(&self, id: u32, parent: u32, what: &'static str) -> Result<(), ApplyError> {
        if parent == 0 {
            return Ok(());
        }
        let mut p = parent;
        let mut hops = 0;
        while p != 0 {
            let v = self.vol(p, what)?;
            if p == id || !v.desc.is_snapshot() {
                return Err(bad(what, format!("parent {parent} of {id} is not a snapshot chain without cycles")));
            }
            p = v.desc.parent;
            hops += 1;
            if hops > self.vols.len() {
                return Err(bad(what, "parent cycle"));
            }
        }
        Ok(())
    }

    fn chunk_map_wanted(&self, d: &VolDesc) -> Option<u64> {
        (d.comp_level > 0).then(|| self.layout.granules())
    }

    /// Apply one record. On error the state is unchanged except where noted in the record's
    /// documentation (records are validated before they change anything).
    pub fn apply(&mut self, rec: &Record) -> Result<Effects, ApplyError> {
        let mut fx = Effects::default();
        let gpc = self.layout.granules();
        let g_all = if gpc == 64 { u64::MAX } else { (1u64 << gpc) - 1 };
        match rec {
            Record::CreateVolume(d) | Record::PutVolume(d) => {
                let what = "create volume";
                self.check_name(&d.name, d.id, what)?;
                self.check_parent(d.id, d.parent, what)?;
                let n = self.nclusters_checked(d.size_blocks, what)?;
                if matches!(rec, Record::PutVolume(_)) {
                    if d.id == 0 || self.vols.contains_key(&d.id) || self.vols.len() >= self.layout.max_volumes as usize
                    {
                        return Err(bad(what, format!("volume id {} duplicated or too many volumes", d.id)));
                    }
                    self.next_id = self.next_id.max(d.id.saturating_add(1));
                } else {
                    self.check_new_id(d.id, what)?;
                }
                let ext = Arc::new(Extents::new(n, self.chunk_map_wanted(d)));
                self.vols.insert(d.id, Vol { desc: d.clone(), ext });
                fx.structural = true;
            }
            Record::DeleteVolume { id } => {
                let v = self.vol(*id, "delete volume")?;
                if !self.children(*id).is_empty() {
                    return Err(bad("delete volume", format!("volume {id} has children")));
                }
                let ext = v.ext.clone();
                self.free_maps_from(&ext, 0, 0, &mut fx);
                self.vols.remove(id);
                fx.structural = true;
            }
            Record::Rename { id, name } => {
                self.vol(*id, "rename")?;
                self.check_name(name, *id, "rename")?;
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.name = name.clone();
                }
                fx.structural = true;
            }
            Record::SetXattr { id, key, value } => {
                self.vol(*id, "set xattr")?;
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.xattrs.retain(|(k, _)| k != key);
                    if let Some(val) = value {
                        v.desc.xattrs.push((key.clone(), val.clone()));
                    }
                }
            }
            Record::Resize { id, size_blocks } => {
                let v = self.vol(*id, "resize")?;
                if *size_blocks == 0 || size_blocks % self.granule_blocks() != 0 {
                    return Err(bad("resize", format!("size {size_blocks} is not a positive granule multiple")));
                }
                let old = v.ext.clone();
                let n = self.nclusters_checked(*size_blocks, "resize")?;
                let want = v.desc.comp_level > 0;
                // Free what lies past the new end.
                let gb = self.granule_blocks();
                let end_g = size_blocks / gb; // first granule past the end (global granule index)
                if n < old.nclusters() || end_g < old.nclusters() * gpc {
                    self.free_maps_from(&old, n, end_g, &mut fx);
                    // The last cluster may be partially past the end.
                    let part = end_g % gpc;
                    if part != 0 && n > 0 {
                        let lc = n - 1;
                        let keep = (1u64 << part) - 1;
                        let nv = old.valid(lc) & keep;
                        old.set_valid(lc, nv);
                    }
                }
                let ext = Arc::new(old.resized(n, gpc, want));
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.size_blocks = *size_blocks;
                    v.desc.parent_limit = v.desc.parent_limit.min(*size_blocks);
                    v.ext = ext;
                }
                fx.structural = true;
            }
            Record::Snapshot { origin, snap } => {
                let o = self.vol(*origin, "snapshot")?;
                if o.desc.is_snapshot() {
                    return Err(bad("snapshot", "origin is a snapshot"));
                }
                let od = o.desc.clone();
                let old_ext = o.ext.clone();
                self.check_name(&snap.name, 0, "snapshot")?;
                self.check_new_id(snap.id, "snapshot")?;
                let mut sd = snap.clone();
                sd.flags = VOL_SNAPSHOT;
                sd.size_blocks = od.size_blocks;
                sd.parent = od.parent;
                sd.parent_limit = od.parent_limit;
                sd.origin = od.id;
                sd.comp_level = od.comp_level;
                sd.enc = od.enc;
                let n = old_ext.nclusters();
                let new_ext = Arc::new(Extents::new(n, self.chunk_map_wanted(&od)));
                self.vols.insert(sd.id, Vol { desc: sd.clone(), ext: old_ext });
                if let Some(v) = self.vols.get_mut(origin) {
                    v.desc.parent = sd.id;
                    v.desc.parent_limit = od.size_blocks;
                    v.ext = new_ext;
                }
                fx.structural = true;
            }
            Record::Restore { id, snap } => {
                let v = self.vol(*id, "restore")?;
                if v.desc.is_snapshot() {
                    return Err(bad("restore", "target is a snapshot"));
                }
                let s = self.vol(*snap, "restore")?;
                if !s.desc.is_snapshot() {
                    return Err(bad("restore", "source is not a snapshot"));
                }
                let size = s.desc.size_blocks;
                let ext = v.ext.clone();
                let want = self.chunk_map_wanted(&v.desc);
                self.free_maps_from(&ext, 0, 0, &mut fx);
                let n = self.nclusters_for(size);
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.parent = *snap;
                    v.desc.parent_limit = size;
                    v.desc.size_blocks = size;
                    v.ext = Arc::new(Extents::new(n, want));
                }
                fx.structural = true;
            }
            Record::SetParent { id, parent, parent_limit } => {
                self.vol(*id, "set parent")?;
                self.check_parent(*id, *parent, "set parent")?;
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.parent = *parent;
                    v.desc.parent_limit = if *parent == 0 { 0 } else { (*parent_limit).min(v.desc.size_blocks) };
                }
                fx.structural = true;
            }
            Record::MergeDelete { snap, child } => self.merge_delete(*snap, *child, &mut fx)?,
            Record::SetCodec { id, comp_level, enc } => {
                let v = self.vol(*id, "set codec")?;
                let old = v.ext.clone();
                let want = *comp_level > 0;
                let ext =
                    if want && old.chunks.is_empty() { Arc::new(old.resized(old.nclusters(), gpc, true)) } else { old };
                if let Some(v) = self.vols.get_mut(id) {
                    v.desc.comp_level = *comp_level;
                    v.desc.enc = *enc;
                    v.ext = ext;
                }
                fx.structural = true;
            }
            Record::AllocRuns { id, first_lc, flags, valid, runs } => {
                let v = self.vol(*id, "alloc")?;
                let ext = v.ext.clone();
                if flags & !ENT_ENC != 0 || valid & !g_all != 0 {
                    return Err(bad("alloc", "bad flags or valid mask"));
                }
                let total: u64 = runs.iter().map(|r| r.1 as u64).sum();
                let end = first_lc.checked_add(total).filter(|&e| e <= ext.nclusters());
                if end.is_none() {
                    return Err(bad("alloc", "logical clusters past the volume's end"));
                }
                let mut lc = *first_lc;
                for &(pc, n) in runs {
                    let pend = pc.checked_add(n as u64).filter(|&e| e <= self.layout.total_clusters);
                    if pend.is_none() {
                        return Err(bad("alloc", "physical cluster out of range"));
                    }
                    for c in pc..pc + n as u64 {
                        if self.alloc.get(c) || self.packed.get(&c).is_some_and(|p| p.live > 0) {
                            return Err(bad("alloc", format!("cluster {c} is already allocated")));
                        }
                        if ext.ent(lc) != 0 {
                            return Err(bad("alloc", format!("logical cluster {lc} already mapped")));
                        }
                        lc += 1;
                    }
                }
                let mut lc = *first_lc;
                for &(pc, n) in runs {
                    for c in pc..pc + n as u64 {
                        self.alloc.set(c, true);
                        self.inuse.set(c, true);
                        ext.set_ent(lc, (c + 1) | flags);
                        ext.set_valid(lc, *valid);
                        lc += 1;
                    }
                }
            }
            Record::SetValid { id, lc, pc, mask } => {
                let v = self.vol(*id, "set valid")?;
                let ext = v.ext.clone();
                if ent_pc(ext.ent(*lc)) != Some(*pc) || mask & !g_all != 0 {
                    return Err(bad("set valid", format!("cluster {lc} is not mapped to {pc}")));
                }
                ext.set_valid(*lc, ext.valid(*lc) | mask);
                if !ext.chunks.is_empty() {
                    for b in 0..gpc {
                        if mask & (1 << b) != 0 {
                            let g = lc * gpc + b;
                            let e = ext.chunk(g);
                            if e != 0 {
                                self.free_chunk(e, &mut fx);
                                ext.set_chunk(g, 0);
                            }
                        }
                    }
                }
            }
            Record::Release { id, lc, pc, mask } => {
                let what = "release";
                let v = self.vol(*id, what)?;
                if v.desc.is_snapshot() {
                    return Err(bad(what, format!("volume {id} is a snapshot")));
                }
                let ext = v.ext.clone();
                let valid = ext.valid(*lc);
                if ent_pc(ext.ent(*lc)) != Some(*pc) {
                    return Err(bad(what, format!("cluster {lc} is not mapped to {pc}")));
                }
                if *mask == 0 || mask & !g_all != 0 || mask & !valid != 0 {
                    return Err(bad(what, format!("mask {mask:#x} is not a subset of valid bits {valid:#x}")));
                }
                // Granules read from the parent must keep their data: clearing them would show
                // the parent's data instead of the volume's.
                if v.desc.parent != 0 {
                    let lowest = lc * gpc + mask.trailing_zeros() as u64;
                    if lowest * self.granule_blocks() < v.desc.parent_limit {
                        return Err(bad(what, format!("granule {lowest} is below the parent limit")));
                    }
                }
                let nv = valid & !mask;
                ext.set_valid(*lc, nv);
                if nv == 0 {
                    self.free_cluster(*pc, &mut fx);
                    ext.set_ent(*lc, 0);
                }
            }
            Record::Remap { id, lc, pc, flags, valid } => {
                let v = self.vol(*id, "remap")?;
                let ext = v.ext.clone();
                if *lc >= ext.nclusters() || *pc >= self.layout.total_clusters || self.alloc.get(*pc) {
                    return Err(bad("remap", format!("cluster {pc} not free or {lc} out of range")));
                }
                if flags & !ENT_ENC != 0 || valid & !g_all != 0 {
                    return Err(bad("remap", "bad flags or valid mask"));
                }
                if let Some(old) = ent_pc(ext.ent(*lc)) {
                    self.free_cluster(old, &mut fx);
                }
                self.alloc.set(*pc, true);
                self.inuse.set(*pc, true);
                ext.set_ent(*lc, (pc + 1) | flags);
                ext.set_valid(*lc, *valid);
            }
            Record::ChunkWrite { id, chunk, entry } => {
                let v = self.vol(*id, "chunk write")?;
                let mut ext = v.ext.clone();
                if *chunk >= ext.nclusters() * gpc {
                    return Err(bad("chunk write", "chunk past the volume's end"));
                }
                if ext.chunks.is_empty() {
                    let e = Arc::new(ext.resized(ext.nclusters(), gpc, true));
                    if let Some(v) = self.vols.get_mut(id) {
                        v.ext = e.clone();
                    }
                    ext = e;
                    fx.structural = true;
                }
                if let Some(l) = ChunkLoc::decode(*entry) {
                    self.check_sectors(&l)?;
                }
                let old = ext.chunk(*chunk);
                if old != 0 {
                    self.free_chunk(old, &mut fx);
                }
                if let Some(l) = ChunkLoc::decode(*entry) {
                    let spc = self.layout.sectors_per_cluster();
                    let pc = l.sector / spc;
                    let p = self.packed.entry(pc).or_insert_with(|| Packed { live: 0, busy: Bitmap::new(spc) });
                    p.live += l.nsect;
                    for s in l.sector % spc..l.sector % spc + l.nsect {
                        p.busy.set(s, true);
                    }
                    self.alloc.set(pc, true);
                    self.inuse.set(pc, true);
                }
                ext.set_chunk(*chunk, *entry);
                // The chunk's granule no longer comes from the cluster map.
                let lc = chunk / gpc;
                let bit = 1u64 << (chunk % gpc);
                let nv = ext.valid(lc) & !bit;
                ext.set_valid(lc, nv);
                if nv == 0 {
                    if let Some(pc) = ent_pc(ext.ent(lc)) {
                        self.free_cluster(pc, &mut fx);
                        ext.set_ent(lc, 0);
                    }
                }
            }
            Record::PutClusters { id, entries } => {
                let v = self.vol(*id, "checkpoint clusters")?;
                let ext = v.ext.clone();
                for &(lc, e, valid) in entries {
                    let pc = ent_pc(e).ok_or_else(|| bad("checkpoint clusters", "empty entry"))?;
                    if lc >= ext.nclusters() || pc >= self.layout.total_clusters || e & !(ENT_PC_MASK | ENT_ENC) != 0 {
                        return Err(bad("checkpoint clusters", format!("entry {lc}->{pc} out of range")));
                    }
                    if valid & !g_all != 0 || ext.ent(lc) != 0 {
                        return Err(bad("checkpoint clusters", format!("entry {lc} duplicated or bad mask")));
                    }
                    ext.set_ent(lc, e);
                    ext.set_valid(lc, valid);
                    self.inuse.set(pc, true);
                }
            }
            Record::PutChunks { id, entries } => {
                let v = self.vol(*id, "checkpoint chunks")?;
                let mut ext = v.ext.clone();
                if ext.chunks.is_empty() {
                    ext = Arc::new(ext.resized(ext.nclusters(), gpc, true));
                    if let Some(v) = self.vols.get_mut(id) {
                        v.ext = ext.clone();
                    }
                }
                let spc = self.layout.sectors_per_cluster();
                for &(g, e) in entries {
                    let l = ChunkLoc::decode(e).ok_or_else(|| bad("checkpoint chunks", "empty entry"))?;
                    if g >= ext.chunks.len() as u64 || ext.chunk(g) != 0 {
                        return Err(bad("checkpoint chunks", format!("chunk {g} out of range or duplicated")));
                    }
                    self.check_sectors(&l)?;
                    let pc = l.sector / spc;
                    let p = self.packed.entry(pc).or_insert_with(|| Packed { live: 0, busy: Bitmap::new(spc) });
                    p.live += l.nsect;
                    for s in l.sector % spc..l.sector % spc + l.nsect {
                        p.busy.set(s, true);
                    }
                    self.inuse.set(pc, true);
                    ext.set_chunk(g, e);
                }
            }
            Record::PutBitmap { nbits, bytes } => {
                if *nbits != self.layout.total_clusters {
                    return Err(bad(
                        "checkpoint bitmap",
                        format!("{nbits} bits for {} clusters", self.layout.total_clusters),
                    ));
                }
                let m = Bitmap::from_bytes(*nbits, bytes).ok_or_else(|| bad("checkpoint bitmap", "bad length"))?;
                for pc in 0..*nbits {
                    if m.get(pc) {
                        self.inuse.set(pc, true);
                    }
                }
                self.alloc = m;
            }
        }
        Ok(fx)
    }

    fn check_sectors(&self, l: &ChunkLoc) -> Result<(), ApplyError> {
        let spc = self.layout.sectors_per_cluster();
        let pc = l.sector / spc;
        if l.nsect == 0 || pc >= self.layout.total_clusters || l.sector % spc + l.nsect > spc {
            return Err(bad("chunk", format!("sectors {}+{} out of range", l.sector, l.nsect)));
        }
        if self.alloc.get(pc) && !self.packed.contains_key(&pc) {
            return Err(bad("chunk", format!("cluster {pc} is a regular cluster")));
        }
        Ok(())
    }

    fn merge_delete(&mut self, snap: u32, child: u32, fx: &mut Effects) -> Result<(), ApplyError> {
        let what = "merge delete";
        let s = self.vol(snap, what)?;
        let c = self.vol(child, what)?;
        if !s.desc.is_snapshot() || c.desc.parent != snap || self.children(snap) != vec![child] {
            return Err(bad(what, format!("{child} is not the only child of snapshot {snap}")));
        }
        let (sext, cext) = (s.ext.clone(), c.ext.clone());
        let (sdesc, cdesc) = (s.desc.clone(), c.desc.clone());
        let gpc = self.layout.granules();
        let gb = self.granule_blocks();
        let limit_g = cdesc.parent_limit / gb; // granules below the child's parent limit
        let n = cext.nclusters().min(sext.nclusters());
        for lc in 0..n {
            let se = sext.ent(lc);
            if se == 0 || cext.ent(lc) != 0 || cext.valid(lc) != 0 {
                continue;
            }
            let first_g = lc * gpc;
            if first_g + gpc > limit_g {
                continue;
            }
            // Only when the child has no chunk over these granules either.
            if (0..gpc).any(|b| cext.chunk(first_g + b) != 0) {
                continue;
            }
            cext.set_ent(lc, se);
            cext.set_valid(lc, sext.valid(lc));
            sext.set_ent(lc, 0);
            sext.set_valid(lc, 0);
        }
        if !sext.chunks.is_empty() {
            let mut cext2 = cext.clone();
            if cext2.chunks.is_empty() {
                cext2 = Arc::new(cext.resized(cext.nclusters(), gpc, true));
                if let Some(v) = self.vols.get_mut(&child) {
                    v.ext = cext2.clone();
                }
            }
            let ng = (cext2.chunks.len().min(sext.chunks.len()) as u64).min(limit_g);
            for g in 0..ng {
                let se = sext.chunk(g);
                let lc = g / gpc;
                let own = cext2.chunk(g) != 0 || cext2.valid(lc) & (1 << (g % gpc)) != 0;
                if se != 0 && !own {
                    cext2.set_chunk(g, se);
                    sext.set_chunk(g, 0);
                }
            }
        }
        self.free_maps_from(&sext, 0, 0, fx);
        self.vols.remove(&snap);
        if let Some(v) = self.vols.get_mut(&child) {
            v.desc.parent = sdesc.parent;
            v.desc.parent_limit = if sdesc.parent == 0 { 0 } else { cdesc.parent_limit.min(sdesc.parent_limit) };
        }
        fx.structural = true;
        Ok(())
    }

    /// The checkpoint records describing this state.
    pub fn checkpoint_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        // Parents before children: ids grow with creation, and a parent always exists before
        // its children, except after merges and restores; order by depth to be safe.
        let mut order: Vec<u32> = self.vols.keys().copied().collect();
        let depth = |mut id: u32| {
            let mut d = 0;
            while let Some(v) = self.vols.get(&id) {
                if v.desc.parent == 0 || d > self.vols.len() {
                    break;
                }
                id = v.desc.parent;
                d += 1;
            }
            d
        };
        order.sort_by_key(|&id| (depth(id), id));
        for id in &order {
            if let Some(v) = self.vols.get(id) {
                out.push(Record::PutVolume(v.desc.clone()));
            }
        }
        for id in &order {
            let Some(v) = self.vols.get(id) else { continue };
            let mut entries = Vec::new();
            for lc in 0..v.ext.nclusters() {
                let e = v.ext.ent(lc);
                if e != 0 {
                    entries.push((lc, e, v.ext.valid(lc)));
                }
                if entries.len() >= 65536 {
                    out.push(Record::PutClusters { id: *id, entries: std::mem::take(&mut entries) });
                }
            }
            if !entries.is_empty() {
                out.push(Record::PutClusters { id: *id, entries });
            }
            let mut chunks = Vec::new();
            for g in 0..v.ext.chunks.len() as u64 {
                let e = v.ext.chunk(g);
                if e != 0 {
                    chunks.push((g, e));
                }
                if chunks.len() >= 65536 {
                    out.push(Record::PutChunks { id: *id, entries: std::mem::take(&mut chunks) });
                }
            }
            if !chunks.is_empty() {
                out.push(Record::PutChunks { id: *id, entries: chunks });
            }
        }
        out.push(Record::PutBitmap { nbits: self.alloc.len(), bytes: self.alloc.to_bytes() });
        out
    }

    /// Whether a volume's descriptor says it is a snapshot.
    pub fn is_snapshot(&self, id: u32) -> bool {
        self.vols.get(&id).is_some_and(|v| v.desc.is_snapshot())
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
