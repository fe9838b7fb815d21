//! The compressing write path of a volume channel: each granule is rewritten whole
//! (read-modify-write), compressed with lz4, written to newly reserved packed sectors and
//! journaled as the chunk's new location; when no packed space is left the granule goes to a
//! regular cluster instead.

use super::{Alloc, BounceSet, Dest, Rd, St, Then, VolChannel, RD0, W, W0};
use crate::codec::{chunk_tweak, compress_chunk};
use crate::format::SECTOR;
use crate::record::{ChunkLoc, ENT_ENC};
use crate::state::ent_pc;
use bdev::{IoRequest, IoStatus, IoVecs};
use std::sync::atomic::Ordering;

impl VolChannel {
    pub(super) fn compressed_piece(&mut self, i: usize) -> bool {
        if !self.want_set(i) {
            return false;
        }
        let geo = self.geo;
        let op = self.ops[i];
        let lba = op.lba + op.pos;
        let g = lba / geo.gb;
        let gs = g * geo.gb;
        let k = (op.n - op.pos).min(gs + geo.gb - lba);
        // Claim the granule: every write of it rewrites it whole, so two at once (or a release
        // between this one's read and its record) would lose data.
        let (lc, bit) = (lba / geo.cb, 1u64 << (g % geo.gpc));
        {
            let core = self.core.clone();
            let mut md = core.lock_md();
            let c = md.claims.entry((self.id, lc)).or_insert(0);
            if *c & bit != 0 {
                let g = core.claim_gen.load(Ordering::Acquire);
                drop(md);
                self.park(i, false, g);
                return false;
            }
            *c |= bit;
            self.ops[i].claim = bit;
            self.ops[i].claim_lc = lc;
        }
        self.ops[i].w = W { k, g, lc: lba / geo.cb, head: gs, tail: gs + geo.gb, mask: 1 << (g % geo.gpc), ..W0 };
        if k == geo.gb {
            return self.compress(i);
        }
        self.ops[i].rd = Rd { lba: gs, n: geo.gb, dest: Dest::Stage(0), then: Then::Compress, ..RD0 };
        self.ops[i].st = St::Read;
        true
    }

    /// The granule is in the stage (old contents); overlay, compress, reserve, write.
    pub(super) fn compress(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let op = self.ops[i];
        let w = op.w;
        let gbytes = (geo.gb * geo.bs) as usize;
        let s = op.set.unwrap_or(0) as usize;
        let view = self.view.clone();
        if !self.overlay_piece(i) {
            return false;
        }
        let Some(set) = self.sets.get_mut(s) else { return false };
        let BounceSet { stage, sect, .. } = set;
        let (nsect, raw) = match compress_chunk(&stage.as_slice()[..gbytes], sect.as_mut_slice()) {
            Some(ns) => (ns, false),
            None => {
                sect.as_mut_slice()[..gbytes].copy_from_slice(&stage.as_slice()[..gbytes]);
                (gbytes as u64 / SECTOR, true)
            }
        };
        if view.enc {
            let Some(key) = view.key.clone() else {
                self.finish(i, IoStatus::MediaError);
                return false;
            };
            key.encrypt(&mut sect.as_mut_slice()[..(nsect * SECTOR) as usize], SECTOR as usize, chunk_tweak(w.g, 0));
        }
        let sector = self.core.lock_md().st.reserve_sectors(nsect);
        let Some(sector) = sector else {
            // No packed space: store the granule as a regular cluster instead.
            return self.fallback_regular(i);
        };
        let loc = ChunkLoc { sector, nsect, raw, enc: view.enc };
        self.ops[i].w.sector = sector;
        self.ops[i].w.nsect = nsect;
        self.ops[i].w.loc = loc.encode();
        let Some(iov) = self.sets.get_mut(s).and_then(|set| set.sect.iovec_range(0, (nsect * SECTOR) as usize)) else {
            return false;
        };
        self.ops[i].st = St::CompressIo;
        self.submit_base(
            i,
            IoRequest::write(geo.sector_block(sector), nsect * SECTOR / geo.bs, IoVecs::single(iov), 0),
        );
        false
    }

    fn fallback_regular(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let w = self.ops[i].w;
        let view = self.view.clone();
        let e = {
            let core = self.core.clone();
            let mut md = core.lock_md();
            match self.alloc_locked(&mut md, i, w.lc) {
                Alloc::Ent(e) => e,
                Alloc::Wait => {
                    // Plan the granule again once space is back (it may change meanwhile).
                    self.drop_claim(&mut md, i);
                    drop(md);
                    self.park(i, true, 0);
                    return false;
                }
                Alloc::Fail(st) => {
                    drop(md);
                    self.finish(i, st);
                    return false;
                }
            }
        };
        let pc = ent_pc(e).unwrap_or(0);
        let enc = e & ENT_ENC != 0;
        let gbytes = (geo.gb * geo.bs) as usize;
        let s = self.ops[i].set.unwrap_or(0) as usize;
        let Some(set) = self.sets.get_mut(s) else { return false };
        if enc {
            let Some(key) = view.key.clone() else {
                self.finish(i, IoStatus::MediaError);
                return false;
            };
            key.encrypt(&mut set.stage.as_mut_slice()[..gbytes], geo.bs as usize, w.head as u128);
        }
        let Some(iov) = set.stage.iovec_range(0, gbytes) else { return false };
        self.ops[i].w.pc = pc;
        self.ops[i].w.enc = enc;
        self.ops[i].st = St::WriteIo { commit: true };
        self.submit_base(i, IoRequest::write(geo.cluster_block(pc, w.head), geo.gb, IoVecs::single(iov), 0));
        false
    }
}
