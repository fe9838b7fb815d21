//! The write path of a volume channel (uncompressed): releases of whole thin granules, plans
//! of each piece (overwrite, or first write with claim, allocation and fill), staging.

use super::*;

impl VolChannel {
    /// The blocks a zeroing op releases instead of writing: whole granules inside the op, on
    /// a thin volume, at or past the parent limit. `(0, 0)` when none.
    pub(super) fn release_span(&self, op: &Op) -> (u64, u64) {
        let v = &self.view;
        if !op.zero || !v.thin || v.snapshot {
            return (0, 0);
        }
        let gb = self.geo.gb;
        let mut start = op.lba.div_ceil(gb) * gb;
        if v.parent.is_some() {
            start = start.max(v.parent_limit.div_ceil(gb) * gb);
        }
        let end = ((op.lba + op.n) / gb * gb).min(v.size_blocks);
        if start < end {
            (start, end)
        } else {
            (0, 0)
        }
    }

    /// Release the granules of the release span from the op's position to the end of the
    /// span or of the cluster: remove their chunks, clear their valid bits (freeing a cluster
    /// left empty). Journaled without waiting; the op waits once at its end.
    pub(super) fn release_piece(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let op = self.ops[i];
        let lba = op.lba + op.pos;
        let lc = lba / geo.cb;
        let end = op.rel.1.min((lc + 1) * geo.cb);
        let (b0, b1) = ((lba % geo.cb) / geo.gb, ((end - 1) % geo.cb) / geo.gb);
        let view = self.view.clone();
        let core = self.core.clone();
        let mut seq = 0;
        let res = {
            let mut md = core.lock_md();
            // A write of these granules in progress (it may have read what is released here, and
            // would write it back): let it finish first.
            if md.claims.get(&(self.id, lc)).is_some_and(|&c| c & mask_of(b0, b1) != 0) {
                let g = core.claim_gen.load(Ordering::Acquire);
                drop(md);
                self.park(i, false, g);
                return false;
            }
            // The maps only change under this lock: what is read here is what the records apply to.
            let mut res = Ok(());
            if !view.ext.chunks.is_empty() {
                for b in b0..=b1 {
                    let g = lc * geo.gpc + b;
                    if view.ext.chunk(g) != 0 && res.is_ok() {
                        res = core
                            .commit(&mut md, &[Record::ChunkWrite { id: self.id, chunk: g, entry: 0 }])
                            .map(|s| seq = s);
                    }
                }
            }
            let m = view.ext.valid(lc) & mask_of(b0, b1);
            if let (Some(pc), true, true) = (ent_pc(view.ext.ent(lc)), m != 0, res.is_ok()) {
                res = core.commit(&mut md, &[Record::Release { id: self.id, lc, pc, mask: m }]).map(|s| seq = s);
            }
            res
        };
        if seq != 0 {
            self.ops[i].seq = self.ops[i].seq.max(seq);
            self.ops[i].sync_end = true;
            self.kick = true;
        }
        if let Err(e) = res {
            log::error!("volume {}: release failed: {e}", self.id);
            self.finish(i, IoStatus::MediaError);
            return false;
        }
        self.ops[i].pos += end - lba;
        true
    }

    /// Plan the next piece of a write. True to keep stepping.
    pub(super) fn write_next(&mut self, i: usize) -> bool {
        let op = self.ops[i];
        if op.pos >= op.n {
            if op.sync_end && self.core.durable.load(Ordering::Acquire) < op.seq {
                self.ops[i].w.k = 0;
                self.ops[i].st = St::Durable;
                return true;
            }
            self.finish(i, IoStatus::Success);
            return false;
        }
        let geo = self.geo;
        let lba = op.lba + op.pos;
        if lba >= op.rel.0 && lba < op.rel.1 {
            return self.release_piece(i);
        }
        let view = self.view.clone();
        if view.comp_level > 0 {
            // Pieces are single granules: one before the release span ends before it.
            return self.compressed_piece(i);
        }
        let lc = lba / geo.cb;
        let c_end = (lc + 1) * geo.cb;
        let mut k = (op.n - op.pos).min(c_end - lba);
        if lba < op.rel.0 {
            k = k.min(op.rel.0 - lba);
        }
        if op.zero {
            k = k.min(self.stage_len as u64 / geo.bs);
        }
        let mut e = view.ext.ent(lc);
        let valid = view.ext.valid(lc);
        let g0 = (lba % geo.cb) / geo.gb;
        let g1 = ((lba + k - 1) % geo.cb) / geo.gb;
        let mask = mask_of(g0, g1);
        let has_chunks = !view.ext.chunks.is_empty() && (g0..=g1).any(|b| view.ext.chunk(lc * geo.gpc + b) != 0);
        if e != 0 && valid & mask == mask && !has_chunks {
            // Overwrite.
            let pc = ent_pc(e).unwrap_or(0);
            if e & ENT_ENC == 0 {
                let Some(iov) = self.src_iov(i, k) else {
                    self.finish(i, IoStatus::Invalid);
                    return false;
                };
                self.ops[i].w = W { k, ..W0 };
                self.ops[i].st = St::WriteIo { commit: false };
                self.submit_base(i, IoRequest::write(geo.cluster_block(pc, lba), k, iov, 0));
                return false;
            }
            if !self.want_set(i) {
                return false;
            }
            k = k.min(self.stage_len as u64 / geo.bs);
            let Some(key) = view.key.clone() else {
                self.finish(i, IoStatus::MediaError);
                return false;
            };
            let s = self.ops[i].set.unwrap_or(0) as usize;
            let n = (k * geo.bs) as usize;
            let Some(set) = self.sets.get_mut(s) else { return false };
            let stage = &mut set.stage.as_mut_slice()[..n];
            if !fill_src(&op, (op.pos * geo.bs) as usize, stage) {
                self.finish(i, IoStatus::Invalid);
                return false;
            }
            key.encrypt(stage, geo.bs as usize, lba as u128);
            let Some(iov) = set.stage.iovec_range(0, n) else { return false };
            self.ops[i].w = W { k, ..W0 };
            self.ops[i].st = St::WriteIo { commit: false };
            self.submit_base(i, IoRequest::write(geo.cluster_block(pc, lba), k, IoVecs::single(iov), 0));
            return false;
        }
        // First write: claim the granules it writes that are not valid (it may fill them).
        let valid = match self.claim_first(i, lc, mask) {
            Claim::Got(ent, valid) => {
                e = ent;
                valid
            }
            Claim::Replan => return true,
            Claim::Stop => return false,
        };
        let pc = ent_pc(e).unwrap_or(0);
        let enc = e & ENT_ENC != 0;
        let direct = |k: u64| {
            let g0 = (lba % geo.cb) / geo.gb;
            let g1 = ((lba + k - 1) % geo.cb) / geo.gb;
            let head = if valid & (1 << g0) == 0 { lba - (lba % geo.gb) } else { lba };
            let end = lba + k;
            let tail = if valid & (1 << g1) == 0 { end.div_ceil(geo.gb) * geo.gb } else { end };
            (head, tail, mask_of(g0, g1))
        };
        let (mut head, mut tail, mut m) = direct(k);
        if head == lba && tail == lba + k && !enc {
            let Some(iov) = self.src_iov(i, k) else {
                self.finish(i, IoStatus::Invalid);
                return false;
            };
            self.ops[i].w = W { k, lc, pc, head, tail, mask: m, enc, assumed: valid & m, ..W0 };
            self.ops[i].st = St::WriteIo { commit: true };
            self.submit_base(i, IoRequest::write(geo.cluster_block(pc, lba), k, iov, 0));
            return false;
        }
        if !self.want_set(i) {
            return false;
        }
        let max_span = self.stage_len as u64 / geo.bs;
        while tail - head > max_span && k > 1 {
            k = (max_span - 2 * geo.gb).max(1).min(k - 1);
            (head, tail, m) = direct(k);
        }
        self.ops[i].w = W { k, lc, pc, head, tail, mask: m, enc, assumed: valid & m, ..W0 };
        if head < lba {
            self.ops[i].rd = Rd { lba: head, n: lba - head, dest: Dest::Stage(0), then: Then::FillTail, ..RD0 };
            self.ops[i].st = St::Read;
            return true;
        }
        self.ops[i].rd = Rd { then: Then::FillTail, ..RD0 };
        self.ops[i].st = St::Read;
        true
    }

    /// Claim for op `i` the granules of `mask` in logical cluster `lc` that are not valid
    /// (or hold a chunk), allocating the cluster if needed. A first write of a granule fills
    /// what it does not cover and writes the granule whole: two at once would overwrite each
    /// other's data with fill. A conflicting claim parks the op until it is dropped.
    pub(super) fn claim_first(&mut self, i: usize, lc: u64, mask: u64) -> Claim {
        let core = self.core.clone();
        let view = self.view.clone();
        let geo = self.geo;
        let mut md = core.lock_md();
        // Valid bits and chunks change only under this lock; granules this op claims stay as
        // read here until it drops the claim (releases wait for claims too).
        let valid = view.ext.valid(lc);
        let mut need = mask & !valid;
        if !view.ext.chunks.is_empty() {
            for b in 0..geo.gpc.min(64) {
                if mask & (1 << b) != 0 && view.ext.chunk(lc * geo.gpc + b) != 0 {
                    need |= 1 << b;
                }
            }
        }
        // Its own claim, when it planned this piece before and waited for a bounce set.
        let own = if self.ops[i].claim_lc == lc { self.ops[i].claim } else { 0 };
        if need == 0 && view.ext.ent(lc) != 0 {
            self.drop_claim(&mut md, i);
            return Claim::Replan;
        }
        if md.claims.get(&(self.id, lc)).is_some_and(|&c| c & !own & need != 0) {
            // Wait holding nothing (two ops must not hold what the other waits for).
            self.drop_claim(&mut md, i);
            let g = core.claim_gen.load(Ordering::Acquire);
            drop(md);
            self.park(i, false, g);
            return Claim::Stop;
        }
        let e = match self.alloc_locked(&mut md, i, lc) {
            Alloc::Ent(e) => e,
            Alloc::Wait => {
                self.drop_claim(&mut md, i);
                drop(md);
                self.park(i, true, 0);
                return Claim::Stop;
            }
            Alloc::Fail(st) => {
                drop(md);
                self.finish(i, st);
                return Claim::Stop;
            }
        };
        let c = md.claims.entry((self.id, lc)).or_insert(0);
        *c = (*c & !own) | need;
        self.ops[i].claim = need;
        self.ops[i].claim_lc = lc;
        Claim::Got(e, valid)
    }

    /// Allocate logical cluster `lc` (or find it allocated meanwhile), under the metadata lock.
    pub(super) fn alloc_locked(&mut self, md: &mut Md, i: usize, lc: u64) -> Alloc {
        let core = &self.core;
        let view = &self.view;
        let e = view.ext.ent(lc);
        if e != 0 {
            return Alloc::Ent(e);
        }
        let mut runs = md.st.reserve_clusters(1);
        if runs.is_none() {
            // Space released by unmaps may be waiting for channels to move on.
            core.reclaim(md);
            runs = md.st.reserve_clusters(1);
        }
        let Some(runs) = runs else {
            // Space still on its way back: wait for it rather than fail, for a while.
            return if md.space_pending() && !space_wait_expired(core, &mut self.ops[i]) {
                Alloc::Wait
            } else {
                Alloc::Fail(IoStatus::NoSpace)
            };
        };
        self.ops[i].space_since = None;
        let flags = if view.enc { ENT_ENC } else { 0 };
        let rec = Record::AllocRuns { id: self.id, first_lc: lc, flags, valid: 0, runs: runs.clone() };
        match core.commit(md, &[rec]) {
            Ok(seq) => {
                self.ops[i].seq = self.ops[i].seq.max(seq);
                Alloc::Ent(view.ext.ent(lc))
            }
            Err(e) => {
                md.st.unreserve_clusters(&runs);
                log::error!("volume {}: cluster allocation failed: {e}", self.id);
                Alloc::Fail(IoStatus::MediaError)
            }
        }
    }

    /// Fills done: put the caller's data into the stage, encrypt, write the span.
    pub(super) fn stage_write(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let op = self.ops[i];
        let w = op.w;
        let s = op.set.unwrap_or(0) as usize;
        let span = ((w.tail - w.head) * geo.bs) as usize;
        let key = if w.enc { self.view.key.clone() } else { None };
        if w.enc && key.is_none() {
            self.finish(i, IoStatus::MediaError);
            return false;
        }
        if !self.overlay_piece(i) {
            return false;
        }
        let Some(set) = self.sets.get_mut(s) else { return false };
        if let Some(k) = key {
            k.encrypt(&mut set.stage.as_mut_slice()[..span], geo.bs as usize, w.head as u128);
        }
        let Some(iov) = set.stage.iovec_range(0, span) else { return false };
        self.ops[i].st = St::WriteIo { commit: true };
        self.submit_base(i, IoRequest::write(geo.cluster_block(w.pc, w.head), w.tail - w.head, IoVecs::single(iov), 0));
        false
    }
}

/// Whether `op` has waited for space longer than the store's no-space timeout (its wait
/// starts at the first call).
fn space_wait_expired(core: &Core, op: &mut Op) -> bool {
    let limit = Duration::from_millis(core.no_space_timeout_ms.load(Ordering::Relaxed));
    let now = Instant::now();
    let since = *op.space_since.get_or_insert(now);
    now.duration_since(since) >= limit
}
