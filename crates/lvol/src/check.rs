//! `check`: validate every invariant of a loaded store, on disk and in memory.

use crate::core::Core;
use crate::format::{Layout, MD_BLOCK};
use crate::record::{ChunkLoc, ENT_ENC, ENT_PC_MASK};
use crate::state::{ent_pc, Bitmap};
use crate::store::Store;
use crate::sync_io::SyncIo;
use std::collections::{BTreeMap, HashSet};

/// What `check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lvol store check found {} problem(s): {}", problems.len(), problems.join("; "))]
pub struct CheckError {
    /// One line per violated invariant.
    pub problems: Vec<String>,
}

/// Summary of a clean store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Volumes (snapshots included).
    pub volumes: usize,
    /// Regular clusters mapped.
    pub mapped_clusters: u64,
    /// Clusters holding packed chunks.
    pub packed_clusters: u64,
    /// Clusters free.
    pub free_clusters: u64,
    /// Compressed chunks.
    pub chunks: u64,
    /// Clusters freed (by unmaps, shrinks, deletes...) not yet reusable: their record is not
    /// durable yet, or IO that looked up the old mapping may still be in progress.
    pub releasing_clusters: u64,
    /// Granules claimed by writes in progress (first writes, compressed rewrites); 0 when no
    /// IO is in progress.
    pub claimed_granules: u64,
}

/// Check a store: the super blocks and the current checkpoint on disk, then the volume table,
/// parent graph, cluster maps, chunk maps, packed sectors and the allocation bitmap.
pub fn check(store: &Store) -> Result<CheckReport, CheckError> {
    let core = store.core();
    let mut p: Vec<String> = Vec::new();
    check_disk(core, &mut p);
    let md = core.lock_md();
    let st = &md.st;
    let l: &Layout = &st.layout;
    let gpc = l.granules();
    let g_all = if gpc == 64 { u64::MAX } else { (1u64 << gpc) - 1 };
    let gb = st.granule_blocks();
    // Volumes and the parent graph.
    let mut names = HashSet::new();
    for (id, v) in &st.vols {
        let d = &v.desc;
        if *id != d.id || d.id == 0 || d.id >= st.next_id {
            p.push(format!("volume {} has id {} (next id {})", d.name, d.id, st.next_id));
        }
        if !names.insert(d.name.clone()) {
            p.push(format!("duplicate volume name {}", d.name));
        }
        if d.size_blocks == 0 || d.size_blocks % gb != 0 {
            p.push(format!("volume {} size {} is not a positive granule multiple", d.name, d.size_blocks));
        }
        if v.ext.nclusters() != st.nclusters_for(d.size_blocks) {
            p.push(format!("volume {} map has {} clusters for size {}", d.name, v.ext.nclusters(), d.size_blocks));
        }
        if !v.ext.chunks.is_empty() && v.ext.chunks.len() as u64 != v.ext.nclusters() * gpc {
            p.push(format!("volume {} chunk map length {}", d.name, v.ext.chunks.len()));
        }
        if d.parent != 0 {
            match st.vols.get(&d.parent) {
                Some(pv) if pv.desc.is_snapshot() => {}
                _ => p.push(format!("volume {} has parent {} which is not a snapshot", d.name, d.parent)),
            }
            if d.parent_limit > d.size_blocks {
                p.push(format!("volume {} parent limit {} past its size", d.name, d.parent_limit));
            }
        }
        let mut seen = HashSet::new();
        let mut cur = d.parent;
        while cur != 0 {
            if !seen.insert(cur) || cur == d.id {
                p.push(format!("volume {} has a parent cycle", d.name));
                break;
            }
            cur = st.vols.get(&cur).map_or(0, |x| x.desc.parent);
        }
    }
    // Cluster maps.
    let mut owner: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut mapped = 0u64;
    let mut chunks = 0u64;
    let spc = l.sectors_per_cluster();
    let mut sector_use: BTreeMap<u64, Bitmap> = BTreeMap::new();
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    for v in st.vols.values() {
        let d = &v.desc;
        let size_g = d.size_blocks / gb;
        for lc in 0..v.ext.nclusters() {
            let e = v.ext.ent(lc);
            let valid = v.ext.valid(lc);
            if e == 0 {
                if valid != 0 {
                    p.push(format!("volume {} cluster {lc} unmapped with valid bits {valid:#x}", d.name));
                }
                continue;
            }
            mapped += 1;
            if e & !(ENT_PC_MASK | ENT_ENC) != 0 {
                p.push(format!("volume {} cluster {lc} entry has unknown flags {e:#x}", d.name));
            }
            let Some(pc) = ent_pc(e) else { continue };
            if pc >= l.total_clusters {
                p.push(format!("volume {} cluster {lc} maps to {pc} past the end", d.name));
                continue;
            }
            if let Some((o, olc)) = owner.insert(pc, (d.id, lc)) {
                p.push(format!("cluster {pc} mapped twice: volume {o} cluster {olc} and {} cluster {lc}", d.name));
            }
            if valid & !g_all != 0 {
                p.push(format!("volume {} cluster {lc} valid mask {valid:#x} has bits past the cluster", d.name));
            }
            for b in 0..gpc {
                let g = lc * gpc + b;
                if valid & (1 << b) != 0 && g >= size_g {
                    p.push(format!("volume {} granule {g} valid past the end", d.name));
                }
                if valid & (1 << b) != 0 && v.ext.chunk(g) != 0 {
                    p.push(format!("volume {} granule {g} is both in a cluster and a chunk", d.name));
                }
            }
        }
        for g in 0..v.ext.chunks.len() as u64 {
            let e = v.ext.chunk(g);
            let Some(loc) = ChunkLoc::decode(e) else { continue };
            chunks += 1;
            if g >= size_g {
                p.push(format!("volume {} chunk {g} past the end", d.name));
            }
            let pc = loc.sector / spc;
            if loc.nsect == 0 || pc >= l.total_clusters || loc.sector % spc + loc.nsect > spc {
                p.push(format!("volume {} chunk {g} sectors {}+{} out of range", d.name, loc.sector, loc.nsect));
                continue;
            }
            let m = sector_use.entry(pc).or_insert_with(|| Bitmap::new(spc));
            for s in loc.sector % spc..loc.sector % spc + loc.nsect {
                if m.get(s) {
                    p.push(format!("packed sector {} used twice (volume {} chunk {g})", pc * spc + s, d.name));
                }
                m.set(s, true);
            }
            *live.entry(pc).or_default() += loc.nsect;
        }
    }
    // Packed clusters.
    for (pc, n) in &live {
        if owner.contains_key(pc) {
            p.push(format!("cluster {pc} is both a regular and a packed cluster"));
        }
        match st.packed.get(pc) {
            Some(pk) if pk.live == *n => {}
            Some(pk) => p.push(format!("packed cluster {pc} counts {} live sectors, maps use {n}", pk.live)),
            None => p.push(format!("packed cluster {pc} used by chunks but not tracked")),
        }
    }
    for (pc, pk) in &st.packed {
        if pk.live > 0 && !live.contains_key(pc) {
            p.push(format!("packed cluster {pc} counts {} live sectors but no chunk uses it", pk.live));
        }
    }
    // Allocation bitmap = mapped clusters + packed clusters with live sectors.
    for pc in 0..l.total_clusters {
        let want = owner.contains_key(&pc) || live.contains_key(&pc);
        if st.alloc.get(pc) != want {
            p.push(format!(
                "allocation bitmap says cluster {pc} is {}",
                if want { "free but it is used" } else { "used but it is free" }
            ));
        }
        if want && !st.inuse.get(pc) {
            p.push(format!("cluster {pc} is used but the allocator may hand it out"));
        }
    }
    // Space waiting for reuse: free in the bitmap, not mapped, and held from the allocator.
    let mut releasing = 0u64;
    for f in md.pending_frees() {
        if let crate::state::Freed::Cluster(pc) = f {
            releasing += 1;
            if pc >= l.total_clusters || st.alloc.get(pc) || owner.contains_key(&pc) || live.contains_key(&pc) {
                p.push(format!("cluster {pc} waits for reuse but is in use"));
            } else if !st.inuse.get(pc) {
                p.push(format!("cluster {pc} waits for reuse but the allocator may hand it out"));
            }
        }
    }
    let free = l.total_clusters - st.alloc.count();
    if p.is_empty() {
        Ok(CheckReport {
            volumes: st.vols.len(),
            mapped_clusters: mapped,
            packed_clusters: live.len() as u64,
            free_clusters: free,
            chunks,
            releasing_clusters: releasing,
            claimed_granules: md.claims.values().map(|m| m.count_ones() as u64).sum(),
        })
    } else {
        Err(CheckError { problems: p })
    }
}

fn check_disk(core: &Core, p: &mut Vec<String>) {
    let ch = match core.base.channel_with_depth(8) {
        Ok(c) => c,
        Err(e) => {
            p.push(format!("cannot open base channel: {e}"));
            return;
        }
    };
    let mut io = SyncIo::new(ch, core.base.info().max_io_blocks);
    let sb = match Core::read_super(&mut io) {
        Ok(sb) => sb,
        Err(e) => {
            p.push(format!("super block: {e}"));
            return;
        }
    };
    if sb.uuid != core.uuid {
        p.push("super block belongs to another store".into());
    }
    if let Err(e) = Layout::from_super(&sb, core.base.info().size_bytes()) {
        p.push(format!("super block layout: {e}"));
        return;
    }
    let l = &core.layout;
    let off = l.ckpt_offset[sb.active_ckpt.get() as usize % 2];
    let len = sb.ckpt_len.get();
    if len % MD_BLOCK != 0 || len > l.ckpt_capacity {
        p.push(format!("checkpoint length {len} invalid"));
        return;
    }
    match io.read(off, len) {
        Ok(b) if crc32c::crc32c(&b) == sb.ckpt_crc.get() => {}
        Ok(_) => p.push("current checkpoint fails its crc".into()),
        Err(e) => p.push(format!("checkpoint read: {e}")),
    }
}
