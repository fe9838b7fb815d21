//! The IO channel of a volume bdev: a state machine per request, driven from `submit` and
//! `poll` on the owning thread, over one base channel.
//!
//! - Reads resolve each run of blocks (own cluster, own packed chunk, a parent's, or zeroes),
//!   read it into the caller's buffers and decrypt or decompress as the owner's codec says; a
//!   run whose mapping changed while it was read is read again.
//! - Overwrites of valid granules go straight to the cluster (encrypted through a bounce
//!   buffer when the cluster is). No metadata.
//! - First writes claim the granules they write that are not valid (see [`Md::claims`]),
//!   allocate the cluster if needed, fill the uncovered part of partially written granules
//!   from what the volume shows there (parent, packed chunk or zeroes), write, then journal the
//!   granules' valid bits (dropping the claim) and complete once that record is durable.
//! - On a compressing volume each granule is claimed and rewritten whole: read-modify-write,
//!   compress, write to newly reserved packed sectors, journal the new chunk location.
//! - An op that meets a claimed granule (a write, or a release of it), or an allocation on a
//!   full store while freed space is pending reuse, is parked: retried on poll (claim waiters
//!   once a claim was dropped anywhere, [`Core::claim_gen`]), planning its piece again with
//!   the current reuse epoch. It holds no claim and no bounce set while parked.
//! - A flush completes after the base flush and once every record applied before it is
//!   durable (a write completed before it may rely on another op's valid bits).
//! - Unmap and write-zeroes on a thin volume release the granules they cover whole and that
//!   the volume does not read from a parent: one `Release` record per cluster (and a chunk
//!   removal per compressed granule); a cluster left empty is freed. The rest is written as
//!   zeroes. The request completes once those records are durable.
//! - Reuse safety: each IO is stamped with the store's reuse epoch when admitted; the channel
//!   publishes the oldest epoch of its IO in progress at the end of each submit and poll, and
//!   freed space is reused only after every busy channel moved past the epoch it was freed in
//!   (see [`Core::reclaim`](crate::core::Core::reclaim)). A first write whose cluster was
//!   released meanwhile, or whose granules it relied on being valid were, is redone.
//!
//! Steady state allocates nothing: op slots are fixed; bounce buffer sets are created on first
//! use (at most [`MAX_SETS`]) and reused.

use crate::codec::{chunk_tweak, compress_bound, decompress_chunk};
use crate::core::{Core, Gate, Md};
use crate::dma;
use crate::format::SECTOR;
use crate::record::{ChunkLoc, Record, ENT_ENC};
use crate::state::{ent_pc, Freed};
use crate::view::{resolve, Geo, Src, View};

mod compress;
mod gate;
mod read;
mod write;
use bdev::{BdevChannel, DmaBuf, IoChannel, IoRequest, IoStatus, IoType, IoVecs, QueueFull};
use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests one channel executes at once.
pub const OPS: usize = 512;
/// Bounce buffer sets per channel at most.
pub const MAX_SETS: usize = 32;

struct BounceSet {
    stage: DmaBuf,
    sect: DmaBuf,
    scratch: DmaBuf,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Dest {
    User(usize),
    Stage(usize),
}

#[derive(Copy, Clone, Debug)]
enum Then {
    Finish,
    /// After the head fill of a first write, fill the tail.
    FillTail,
    /// After the fills of a first write, stage the caller's data and write.
    StageWrite,
    /// After the granule read of a compressed write, overlay the caller's data and compress.
    Compress,
}

#[derive(Copy, Clone, Debug)]
struct Rd {
    lba: u64,
    n: u64,
    pos: u64,
    dest: Dest,
    then: Then,
    // In-flight source.
    k: u64,
    fp: (u32, u64, u64),
    owner: u32,
    enc: bool,
    chunk: bool,
    g: u64,
    loc: u64,
}

#[derive(Copy, Clone, Debug)]
enum St {
    Idle,
    Next,
    Read,
    ReadIo,
    WriteIo {
        commit: bool,
    },
    CompressIo,
    Durable,
    FlushIo,
    WaitSet,
    /// Waiting in `parked` for a claimed granule or for space in grace; re-planned on poll.
    Parked,
}

#[derive(Copy, Clone, Debug)]
struct W {
    k: u64,
    lc: u64,
    pc: u64,
    head: u64,
    tail: u64,
    mask: u64,
    enc: bool,
    g: u64,
    sector: u64,
    nsect: u64,
    loc: u64,
    /// Granules of `mask` the write relied on being valid (not filled): they must still be
    /// valid when its valid bits are journaled, else the piece is redone.
    assumed: u64,
}

#[derive(Copy, Clone)]
struct Op {
    tag: u64,
    io_type: IoType,
    lba: u64,
    n: u64,
    iovs: IoVecs,
    /// Write zeroes instead of the caller's data (write-zeroes and unmap).
    zero: bool,
    pos: u64,
    st: St,
    resume: St,
    set: Option<u16>,
    queued: Option<IoRequest>,
    seq: u64,
    rd: Rd,
    w: W,
    /// Reuse epoch at admission.
    ep: u64,
    /// Records were journaled without waiting: wait for `seq` before completing.
    sync_end: bool,
    /// Blocks `[rel.0, rel.1)` are released rather than written (zeroing ops on thin volumes).
    rel: (u64, u64),
    /// Granules of logical cluster `claim_lc` this op claimed in [`Md::claims`].
    claim: u64,
    claim_lc: u64,
    /// Parked for space (else for a claim).
    wait_space: bool,
    /// When the op first found the store full with space still on its way back.
    space_since: Option<Instant>,
}

/// Outcome of claiming the granules of a first write.
enum Claim {
    /// Claimed; the cluster's entry and valid bits (read under the claim).
    Got(u64, u64),
    /// The granules became valid meanwhile: plan again (an overwrite now).
    Replan,
    /// The op is parked or finished.
    Stop,
}

/// Outcome of an allocation.
enum Alloc {
    /// The cluster's entry.
    Ent(u64),
    /// No free cluster, but freed space is pending reuse: wait for it.
    Wait,
    /// Failed with this status.
    Fail(IoStatus),
}

impl Op {
    /// A fresh op for `io`, nothing done yet.
    fn for_request(io: &IoRequest) -> Op {
        Op {
            tag: io.tag,
            io_type: io.io_type,
            lba: io.offset_blocks,
            n: io.num_blocks,
            iovs: io.iovs,
            zero: matches!(io.io_type, IoType::WriteZeroes | IoType::Unmap),
            pos: 0,
            st: St::Idle,
            resume: St::Idle,
            set: None,
            queued: None,
            seq: 0,
            rd: RD0,
            w: W0,
            ep: 0,
            sync_end: false,
            rel: (0, 0),
            claim: 0,
            claim_lc: 0,
            wait_space: false,
            space_since: None,
        }
    }
}

const RD0: Rd = Rd {
    lba: 0,
    n: 0,
    pos: 0,
    dest: Dest::User(0),
    then: Then::Finish,
    k: 0,
    fp: (0, 0, 0),
    owner: 0,
    enc: false,
    chunk: false,
    g: 0,
    loc: 0,
};
const W0: W =
    W { k: 0, lc: 0, pc: 0, head: 0, tail: 0, mask: 0, enc: false, g: 0, sector: 0, nsect: 0, loc: 0, assumed: 0 };

/// A volume's IO channel.
pub struct VolChannel {
    core: Arc<Core>,
    id: u32,
    gen: u64,
    view: Arc<View>,
    gone: bool,
    geo: Geo,
    base: BdevChannel,
    gate: Arc<Gate>,
    busy: u64,
    ops: Box<[Op]>,
    free: Vec<u16>,
    held: VecDeque<u16>,
    retry: VecDeque<u16>,
    durable_wait: Vec<u16>,
    set_wait: VecDeque<u16>,
    ready: Vec<u16>,
    done: VecDeque<(u64, IoStatus)>,
    sets: Vec<BounceSet>,
    free_sets: Vec<u16>,
    tmp: Box<[u8]>,
    stage_len: usize,
    /// Records were queued: wake the metadata thread once, at the end of this submit or poll.
    kick: bool,
    /// Source of write-zeroes and unmap data (created on first use).
    zeros: Option<DmaBuf>,
    /// Reuse epoch of the newest admissions, and how many of those IOs are in progress.
    ep_cur: u64,
    n_cur: u64,
    /// Oldest reuse epoch among older IOs in progress, and how many they are.
    ep_old: u64,
    n_old: u64,
    /// Last value stored in the gate's `oldest`.
    ep_published: u64,
    /// Ops waiting for a claimed granule or for space, and how many of them wait for space.
    parked: VecDeque<u16>,
    n_space_wait: usize,
    /// [`Core::claim_gen`] when the claim waiters last tried (at most: they retry when it moves).
    claim_seen: u64,
}

/// Fill `dst` with the op's data at byte `off` of the request (or zeroes).
fn fill_src(op: &Op, off: usize, dst: &mut [u8]) -> bool {
    if op.zero {
        dst.fill(0);
        true
    } else {
        dma::copy_out(&op.iovs, off, dst)
    }
}

fn mask_of(g0: u64, g1: u64) -> u64 {
    let hi = if g1 >= 63 { u64::MAX } else { (1u64 << (g1 + 1)) - 1 };
    hi & !((1u64 << g0) - 1)
}

impl VolChannel {
    /// A channel for volume `id` of `core`.
    pub fn new(core: Arc<Core>, id: u32) -> Result<VolChannel, bdev::BdevError> {
        let base = core.base.channel()?;
        let (view, gen) = {
            let md = core.lock_md();
            let v = md.views.get(&id).cloned().ok_or_else(|| bdev::BdevError::NotFound(format!("volume {id}")))?;
            (v, core.gen.load(Ordering::Acquire))
        };
        let gate = core.add_gate();
        let geo = core.geo;
        let g = (geo.gb * geo.bs) as usize;
        let empty = Op::for_request(&IoRequest::no_data(IoType::Read, 0, 0, 0));
        Ok(VolChannel {
            id,
            gen,
            view,
            gone: false,
            geo,
            base,
            gate,
            busy: 0,
            ops: vec![empty; OPS].into_boxed_slice(),
            free: (0..OPS as u16).rev().collect(),
            held: VecDeque::with_capacity(OPS),
            retry: VecDeque::with_capacity(OPS),
            durable_wait: Vec::with_capacity(OPS),
            set_wait: VecDeque::with_capacity(OPS),
            ready: Vec::with_capacity(OPS),
            done: VecDeque::with_capacity(OPS),
            sets: Vec::new(),
            free_sets: Vec::new(),
            tmp: vec![0u8; crate::format::MD_BLOCK as usize].into_boxed_slice(),
            stage_len: (128 << 10).max(4 * g),
            kick: false,
            zeros: None,
            ep_cur: 0,
            n_cur: 0,
            ep_old: 0,
            n_old: 0,
            ep_published: 0,
            parked: VecDeque::with_capacity(OPS),
            n_space_wait: 0,
            claim_seen: 0,
            core,
        })
    }

    /// The op's data for `k` blocks at its current position, as segments (the zero buffer for
    /// write-zeroes; `k` is at most the zero buffer's length then).
    fn src_iov(&mut self, i: usize, k: u64) -> Option<IoVecs> {
        let op = self.ops[i];
        let bs = self.geo.bs;
        if op.zero {
            if self.zeros.is_none() {
                self.zeros = DmaBuf::zeroed(self.stage_len).ok();
            }
            let z = self.zeros.as_mut()?;
            return z.iovec_range(0, (k * bs) as usize).map(IoVecs::single);
        }
        op.iovs.slice(op.pos * bs, k * bs)
    }

    /// Copies the caller's data of op `i`'s current piece into its bounce set's stage, at the
    /// piece's place in the planned span; false (the op finished as invalid) when that does not
    /// fit or the request's buffers are shorter than the request.
    fn overlay_piece(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let op = self.ops[i];
        let w = op.w;
        let at = ((op.lba + op.pos - w.head) * geo.bs) as usize;
        let n = (w.k * geo.bs) as usize;
        let s = op.set.unwrap_or(0) as usize;
        let ok = self
            .sets
            .get_mut(s)
            .and_then(|set| set.stage.as_mut_slice().get_mut(at..at + n))
            .is_some_and(|dst| fill_src(&op, (op.pos * geo.bs) as usize, dst));
        if !ok {
            self.finish(i, IoStatus::Invalid);
        }
        ok
    }

    fn finish(&mut self, i: usize, status: IoStatus) {
        self.leave_epoch(i);
        if self.ops[i].claim != 0 {
            let core = self.core.clone();
            let mut md = core.lock_md();
            self.drop_claim(&mut md, i);
        }
        self.put_set(i);
        let op = &mut self.ops[i];
        let tag = op.tag;
        op.st = St::Idle;
        op.queued = None;
        self.done.push_back((tag, status));
        self.free.push(i as u16);
        self.set_busy(-1);
    }

    fn submit_base(&mut self, i: usize, req: IoRequest) {
        let mut r = req;
        r.tag = i as u64;
        if self.base.submit(&r).is_err() {
            self.ops[i].queued = Some(r);
            self.retry.push_back(i as u16);
        }
    }

    /// Take a bounce set for op `i`; false (op parked) when none is free.
    fn want_set(&mut self, i: usize) -> bool {
        if self.ops[i].set.is_some() {
            return true;
        }
        if let Some(s) = self.free_sets.pop() {
            self.ops[i].set = Some(s);
            return true;
        }
        if self.sets.len() < MAX_SETS {
            let g = (self.geo.gb * self.geo.bs) as usize;
            let sect_len = crate::format::round_up(compress_bound(g).max(g) as u64, SECTOR) as usize;
            let mk = |n: usize| DmaBuf::alloc(n);
            if let (Ok(stage), Ok(sect), Ok(scratch)) = (mk(self.stage_len), mk(sect_len), mk(g)) {
                self.sets.push(BounceSet { stage, sect, scratch });
                self.ops[i].set = Some((self.sets.len() - 1) as u16);
                return true;
            }
        }
        self.ops[i].resume = self.ops[i].st;
        self.ops[i].st = St::WaitSet;
        self.set_wait.push_back(i as u16);
        false
    }

    fn owner_key(&self, owner: u32) -> Option<Arc<crate::codec::Cipher>> {
        let mut v = Some(&*self.view);
        while let Some(x) = v {
            if x.id == owner {
                return x.key.clone();
            }
            v = x.parent.as_deref();
        }
        None
    }

    fn start(&mut self, i: usize) {
        if self.gone {
            self.finish(i, IoStatus::PathError);
            return;
        }
        let op = self.ops[i];
        match op.io_type {
            IoType::Read => {
                self.ops[i].rd = Rd { lba: op.lba, n: op.n, dest: Dest::User(0), then: Then::Finish, ..RD0 };
                self.ops[i].st = St::Read;
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap if self.view.snapshot => {
                return self.finish(i, IoStatus::Invalid)
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => {
                self.ops[i].rel = self.release_span(&op);
                self.ops[i].st = St::Next;
            }
            IoType::Flush => {
                // Records applied so far must be durable too when the flush completes.
                self.ops[i].seq = self.core.applied.load(Ordering::Acquire);
                self.ops[i].st = St::FlushIo;
                self.submit_base(i, IoRequest::no_data(IoType::Flush, 0, 0, 0));
                return;
            }
            IoType::Reset => return self.finish(i, IoStatus::Success),
        }
        self.step(i);
    }

    /// Run op `i` until it waits for something or finishes.
    fn step(&mut self, i: usize) {
        loop {
            match self.ops[i].st {
                St::Next => {
                    if !self.write_next(i) {
                        return;
                    }
                }
                St::Read => {
                    if !self.read_step(i) {
                        return;
                    }
                }
                St::Durable => {
                    if self.core.durable.load(Ordering::Acquire) < self.ops[i].seq {
                        if self.core.failed.load(Ordering::Acquire) {
                            return self.finish(i, IoStatus::MediaError);
                        }
                        self.durable_wait.push(i as u16);
                        return;
                    }
                    let k = self.ops[i].w.k;
                    self.ops[i].pos += k;
                    self.ops[i].st = St::Next;
                }
                _ => return,
            }
        }
    }

    fn base_done(&mut self, i: usize, status: IoStatus) {
        let Some(op) = self.ops.get(i).copied() else { return };
        match op.st {
            St::ReadIo => {
                if status != IoStatus::Success {
                    return self.finish(i, status);
                }
                self.read_io_done(i);
            }
            St::WriteIo { commit } => {
                if status != IoStatus::Success {
                    return self.finish(i, status);
                }
                if !commit {
                    self.ops[i].pos += op.w.k;
                    self.ops[i].st = St::Next;
                    return self.step(i);
                }
                let w = op.w;
                let rec = Record::SetValid { id: self.id, lc: w.lc, pc: w.pc, mask: w.mask };
                self.commit_then_wait(i, rec);
            }
            St::CompressIo => {
                let w = op.w;
                if status != IoStatus::Success {
                    self.core.lock_md().st.release(Freed::Sectors(w.sector, w.nsect));
                    return self.finish(i, status);
                }
                let rec = Record::ChunkWrite { id: self.id, chunk: w.g, entry: w.loc };
                self.commit_then_wait(i, rec);
            }
            St::FlushIo => {
                if status != IoStatus::Success {
                    return self.finish(i, status);
                }
                // Wait for the records (then finish: a flush has no blocks to write).
                self.ops[i].w.k = 0;
                self.ops[i].st = St::Durable;
                self.kick = true;
                self.step(i);
            }
            _ => log::error!("volume {}: completion for op {i} in state {:?}", self.id, op.st),
        }
    }

    fn commit_then_wait(&mut self, i: usize, rec: Record) {
        let res = {
            let core = self.core.clone();
            let mut md = core.lock_md();
            // The granules are written: after this record (or the redo) others may write them.
            self.drop_claim(&mut md, i);
            if let Record::SetValid { lc, pc, .. } = rec {
                // A release may have unmapped the cluster written to (it stays unused until
                // this op finishes) or cleared granules this write did not fill: redo the piece.
                let ext = &self.view.ext;
                let assumed = self.ops[i].w.assumed;
                if ent_pc(ext.ent(lc)) != Some(pc) || ext.valid(lc) & assumed != assumed {
                    drop(md);
                    self.ops[i].st = St::Next;
                    return self.step(i);
                }
            }
            let r = core.commit(&mut md, std::slice::from_ref(&rec));
            if r.is_err() {
                if let Record::ChunkWrite { entry, .. } = rec {
                    if let Some(l) = ChunkLoc::decode(entry) {
                        md.st.release(Freed::Sectors(l.sector, l.nsect));
                    }
                }
            }
            r
        };
        match res {
            Ok(seq) => {
                self.ops[i].seq = self.ops[i].seq.max(seq);
                self.kick = true;
                self.ops[i].st = St::Durable;
                self.step(i);
            }
            Err(e) => {
                log::error!("volume {}: metadata commit failed: {e}", self.id);
                self.finish(i, IoStatus::MediaError);
            }
        }
    }
}

impl IoChannel for VolChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        let Some(idx) = self.free.pop() else { return Err(QueueFull) };
        let i = idx as usize;
        self.ops[i] = Op::for_request(io);
        if self.held.is_empty() && self.admit(i) {
            self.start(i);
        } else {
            self.held.push_back(idx);
        }
        self.wake_md();
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        // Device completions.
        let mut comps: [(u64, IoStatus); 64] = [(0, IoStatus::Success); 64];
        loop {
            let mut n = 0;
            self.base.poll(&mut |tag, st| {
                if n < comps.len() {
                    comps[n] = (tag, st);
                    n += 1;
                }
            });
            for &(tag, st) in &comps[..n] {
                self.base_done(tag as usize, st);
            }
            if n < comps.len() {
                break;
            }
        }
        // Resubmissions after a full base queue.
        for _ in 0..self.retry.len() {
            let Some(i) = self.retry.pop_front() else { break };
            if let Some(r) = self.ops[i as usize].queued.take() {
                if self.base.submit(&r).is_err() {
                    self.ops[i as usize].queued = Some(r);
                    self.retry.push_front(i);
                    break;
                }
            }
        }
        // Durability waits.
        if !self.durable_wait.is_empty() {
            let d = self.core.durable.load(Ordering::Acquire);
            let failed = self.core.failed.load(Ordering::Acquire);
            let mut k = 0;
            while k < self.durable_wait.len() {
                let i = self.durable_wait[k];
                if self.ops[i as usize].seq <= d || failed {
                    self.durable_wait.swap_remove(k);
                    self.ready.push(i);
                } else {
                    k += 1;
                }
            }
        }
        // Ops waiting for a claimed granule or for space.
        if !self.parked.is_empty() {
            self.retry_parked();
        }
        // Admission of held requests.
        while let Some(&i) = self.held.front() {
            if !self.admit(i as usize) {
                break;
            }
            self.held.pop_front();
            self.start(i as usize);
        }
        while let Some(i) = self.ready.pop() {
            let i = i as usize;
            if let St::WaitSet = self.ops[i].st {
                self.ops[i].st = self.ops[i].resume;
            }
            self.step(i);
        }
        self.wake_md();
        let mut n = 0;
        while let Some((tag, st)) = self.done.pop_front() {
            done(tag, st);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        OPS - self.free.len() + self.done.len()
    }
}

impl Drop for VolChannel {
    fn drop(&mut self) {
        let t0 = std::time::Instant::now();
        while OPS - self.free.len() > 0 && t0.elapsed() < std::time::Duration::from_secs(30) {
            if self.poll(&mut |_, _| {}) == 0 {
                std::thread::yield_now();
            }
        }
        self.gate.busy.store(0, Ordering::SeqCst);
    }
}
