//! IO views of volumes: an immutable description of a volume (size, parent chain, codecs)
//! over its live, atomically updated maps, and the resolution of a block to where its data is.

use crate::codec::Cipher;
use crate::record::{ChunkLoc, ENT_ENC};
use crate::state::{ent_pc, Extents, MdState};
use std::collections::HashMap;
use std::sync::Arc;

/// Store geometry in blocks.
#[derive(Copy, Clone, Debug)]
pub struct Geo {
    /// Block size in bytes.
    pub bs: u64,
    /// Blocks per cluster.
    pub cb: u64,
    /// Blocks per granule.
    pub gb: u64,
    /// Granules per cluster.
    pub gpc: u64,
    /// Byte offset of cluster 0.
    pub data_offset: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
}

impl Geo {
    /// Geometry of a state.
    pub fn of(s: &MdState) -> Geo {
        let l = &s.layout;
        Geo {
            bs: l.block_size as u64,
            cb: s.cluster_blocks(),
            gb: s.granule_blocks(),
            gpc: l.granules(),
            data_offset: l.data_offset,
            cluster_size: l.cluster_size,
        }
    }

    /// Base block of logical block `lba` inside physical cluster `pc`.
    #[inline]
    pub fn cluster_block(&self, pc: u64, lba: u64) -> u64 {
        (self.data_offset + pc * self.cluster_size) / self.bs + lba % self.cb
    }

    /// Base block of packed sector `s`.
    #[inline]
    pub fn sector_block(&self, s: u64) -> u64 {
        (self.data_offset + s * crate::format::SECTOR) / self.bs
    }
}

/// An immutable view of one volume for IO.
pub struct View {
    /// Volume id.
    pub id: u32,
    /// Size in blocks.
    pub size_blocks: u64,
    /// Blocks below this fall through to the parent.
    pub parent_limit: u64,
    /// Read-only (a snapshot).
    pub snapshot: bool,
    /// Thin provisioned: unmap and write-zeroes release the granules they cover.
    pub thin: bool,
    /// Compression level of new writes (0 off).
    pub comp_level: u8,
    /// New clusters and chunks are encrypted.
    pub enc: bool,
    /// The volume's key, when loaded.
    pub key: Option<Arc<Cipher>>,
    /// Live maps.
    pub ext: Arc<Extents>,
    /// Parent view.
    pub parent: Option<Arc<View>>,
}

/// Where a run of blocks comes from.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// Zeroes.
    Zero,
    /// A regular cluster of `owner`.
    Cluster {
        /// Volume whose map holds it.
        owner: &'a View,
        /// Physical cluster.
        pc: u64,
        /// Encrypted.
        enc: bool,
    },
    /// A packed chunk of `owner` for granule `g`.
    Chunk {
        /// Volume whose map holds it.
        owner: &'a View,
        /// Granule index in the volume.
        g: u64,
        /// Location.
        loc: ChunkLoc,
    },
}

impl Src<'_> {
    /// An identity to compare before and after a read (detects concurrent remapping).
    pub fn fingerprint(&self) -> (u32, u64, u64) {
        match self {
            Src::Zero => (0, 0, 0),
            Src::Cluster { owner, pc, .. } => (owner.id, 1, *pc),
            Src::Chunk { owner, loc, .. } => (owner.id, 2, loc.encode()),
        }
    }
}

/// Resolve block `lba` of `view`: the source and how many blocks (at most `max`, at least 1)
/// share it.
pub fn resolve<'a>(view: &'a View, lba: u64, max: u64, geo: &Geo) -> (Src<'a>, u64) {
    let g_end = (lba / geo.gb + 1) * geo.gb;
    let mut n = max.min(g_end - lba).max(1);
    let mut v = view;
    let mut top = true;
    loop {
        if lba >= v.size_blocks {
            return (Src::Zero, n);
        }
        let g = lba / geo.gb;
        let lc = lba / geo.cb;
        let bit = g % geo.gpc;
        let ce = v.ext.chunk(g);
        if let Some(loc) = ChunkLoc::decode(ce) {
            return (Src::Chunk { owner: v, g, loc }, n);
        }
        let e = v.ext.ent(lc);
        let valid = v.ext.valid(lc);
        if let Some(pc) = ent_pc(e) {
            if valid & (1 << bit) != 0 {
                if top {
                    // Extend over following valid granules of the same cluster.
                    let c_end = (lc + 1) * geo.cb;
                    let mut end = g_end;
                    let mut b = bit + 1;
                    while end < lba + max && end < c_end && valid & (1 << b) != 0 && v.ext.chunk(lc * geo.gpc + b) == 0
                    {
                        end += geo.gb;
                        b += 1;
                    }
                    n = max.min(end - lba);
                }
                return (Src::Cluster { owner: v, pc, enc: e & ENT_ENC != 0 }, n);
            }
        }
        match &v.parent {
            Some(p) if lba < v.parent_limit => {
                n = n.min(v.parent_limit - lba);
                v = p;
                top = false;
            }
            _ => return (Src::Zero, n),
        }
    }
}

/// Build the views of every volume in `s`, with keys from `keys`.
pub fn build_views(s: &MdState, keys: &HashMap<u32, Arc<Cipher>>) -> HashMap<u32, Arc<View>> {
    let mut out: HashMap<u32, Arc<View>> = HashMap::new();
    fn get(
        id: u32,
        s: &MdState,
        keys: &HashMap<u32, Arc<Cipher>>,
        out: &mut HashMap<u32, Arc<View>>,
        depth: usize,
    ) -> Option<Arc<View>> {
        if let Some(v) = out.get(&id) {
            return Some(v.clone());
        }
        let vol = s.vols.get(&id)?;
        let d = &vol.desc;
        let parent = if d.parent != 0 && depth <= s.vols.len() { get(d.parent, s, keys, out, depth + 1) } else { None };
        let v = Arc::new(View {
            id,
            size_blocks: d.size_blocks,
            parent_limit: if parent.is_some() { d.parent_limit } else { 0 },
            snapshot: d.is_snapshot(),
            thin: d.flags & crate::record::VOL_THIN != 0,
            comp_level: d.comp_level,
            enc: d.enc.is_some(),
            key: keys.get(&id).cloned(),
            ext: vol.ext.clone(),
            parent,
        });
        out.insert(id, v.clone());
        Some(v)
    }
    for &id in s.vols.keys() {
        get(id, s, keys, &mut out, 0);
    }
    out
}

/// Whether every encrypted volume this view reads from has its key loaded.
pub fn chain_unlocked(v: &View) -> bool {
    let mut cur = Some(v);
    while let Some(x) = cur {
        if x.enc && x.key.is_none() {
            return false;
        }
        cur = x.parent.as_deref();
    }
    true
}
