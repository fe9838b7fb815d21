//! Data movement for control operations (inflate, decouple, snapshot merge, encryption
//! conversion, thick allocation): synchronous reads of what a volume shows and writes of whole
//! granules into a volume's own clusters. Callers hold the store frozen, so no IO races them.

use crate::codec::{chunk_tweak, decompress_chunk, Cipher};
use crate::core::{Core, CoreError};
use crate::format::SECTOR;
use crate::record::{ChunkLoc, Record, ENT_ENC};
use crate::state::ent_pc;
use crate::sync_io::{SyncIo, SyncIoError};
use crate::view::{resolve, Src, View};
use bdev::IoStatus;
use std::sync::Arc;

fn key_of(view: &View, owner: u32) -> Option<Arc<Cipher>> {
    let mut v = Some(view);
    while let Some(x) = v {
        if x.id == owner {
            return x.key.clone();
        }
        v = x.parent.as_deref();
    }
    None
}

fn locked(owner: u32) -> CoreError {
    CoreError::Setup(format!("volume {owner} is encrypted and its key is not loaded"))
}

fn media(what: &str) -> CoreError {
    CoreError::Io(SyncIoError::Status { op: "decode", offset: 0, len: what.len() as u64, status: IoStatus::MediaError })
}

/// Read a stored chunk and return the plain granule.
pub fn read_chunk(
    core: &Core,
    io: &mut SyncIo,
    key: Option<&Cipher>,
    g: u64,
    loc: ChunkLoc,
) -> Result<Vec<u8>, CoreError> {
    let geo = core.geo;
    let gbytes = (geo.gb * geo.bs) as usize;
    let mut sect = io.read(core.layout.sector_offset(loc.sector), loc.nsect * SECTOR)?;
    if loc.enc {
        let k = key.ok_or_else(|| media("chunk key"))?;
        k.decrypt(&mut sect, SECTOR as usize, chunk_tweak(g, 0));
    }
    let mut out = vec![0u8; gbytes];
    if loc.raw {
        let n = gbytes.min(sect.len());
        out[..n].copy_from_slice(&sect[..n]);
    } else {
        decompress_chunk(&sect, &mut out).map_err(|_| media("chunk"))?;
    }
    Ok(out)
}

/// What `view` shows at blocks `[lba, lba+n)`.
pub fn read_visible(core: &Core, io: &mut SyncIo, view: &View, lba: u64, n: u64) -> Result<Vec<u8>, CoreError> {
    let geo = core.geo;
    let bs = geo.bs as usize;
    let mut out = vec![0u8; n as usize * bs];
    let mut pos = 0;
    while pos < n {
        let at = lba + pos;
        let (src, k) = resolve(view, at, n - pos, &geo);
        let dst = &mut out[pos as usize * bs..(pos + k) as usize * bs];
        match src {
            Src::Zero => dst.fill(0),
            Src::Cluster { owner, pc, enc } => {
                let mut d = io.read(geo.cluster_block(pc, at) * geo.bs, k * geo.bs)?;
                if enc {
                    let key = key_of(view, owner.id).ok_or_else(|| locked(owner.id))?;
                    key.decrypt(&mut d, bs, at as u128);
                }
                dst.copy_from_slice(&d);
            }
            Src::Chunk { owner, g, loc } => {
                let key = if loc.enc { Some(key_of(view, owner.id).ok_or_else(|| locked(owner.id))?) } else { None };
                let plain = read_chunk(core, io, key.as_deref(), g, loc)?;
                let from = ((at - g * geo.gb) * geo.bs) as usize;
                dst.copy_from_slice(&plain[from..from + dst.len()]);
            }
        }
        pos += k;
    }
    Ok(out)
}

/// Whether volume `view` owns data for granule `g` (its own cluster or chunk).
pub fn owns(core: &Core, view: &View, g: u64) -> bool {
    let geo = core.geo;
    let lc = g / geo.gpc;
    view.ext.chunk(g) != 0 || (view.ext.ent(lc) != 0 && view.ext.valid(lc) & (1 << (g % geo.gpc)) != 0)
}

/// Write the plain granule `data` as volume `id`'s own data at granule `g`, in a regular
/// cluster (allocated when needed, encrypted when the cluster is). Returns the record's
/// sequence number (not yet durable).
pub fn write_granule(core: &Core, io: &mut SyncIo, id: u32, g: u64, data: &[u8]) -> Result<u64, CoreError> {
    let geo = core.geo;
    let lc = g / geo.gpc;
    let (view, e) = {
        let mut md = core.lock_md();
        let view = md.views.get(&id).cloned().ok_or_else(|| CoreError::Setup(format!("volume {id} vanished")))?;
        let mut e = view.ext.ent(lc);
        if e == 0 {
            core.reclaim(&mut md);
            let runs = md.st.reserve_clusters(1).ok_or(CoreError::Io(SyncIoError::Status {
                op: "allocate",
                offset: 0,
                len: 0,
                status: IoStatus::NoSpace,
            }))?;
            let flags = if view.enc { ENT_ENC } else { 0 };
            let rec = Record::AllocRuns { id, first_lc: lc, flags, valid: 0, runs: runs.clone() };
            if let Err(err) = core.commit(&mut md, &[rec]) {
                md.st.unreserve_clusters(&runs);
                return Err(err);
            }
            e = view.ext.ent(lc);
        }
        (view, e)
    };
    let pc = ent_pc(e).ok_or_else(|| CoreError::Setup("cluster vanished".into()))?;
    let mut buf = data.to_vec();
    let first = g * geo.gb;
    if e & ENT_ENC != 0 {
        let key = view.key.clone().ok_or_else(|| locked(id))?;
        key.encrypt(&mut buf, geo.bs as usize, first as u128);
    }
    io.write(geo.cluster_block(pc, first) * geo.bs, &buf)?;
    let mut md = core.lock_md();
    core.commit(&mut md, &[Record::SetValid { id, lc, pc, mask: 1 << (g % geo.gpc) }])
}
