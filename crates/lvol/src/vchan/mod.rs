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
use bdev::{BdevChannel, DmaBuf, IoChannel, IoRequest, IoStatus, IoType, IoVecs, QueueFull};
use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

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
        let empty = Op {
            tag: 0,
            io_type: IoType::Read,
            lba: 0,
            n: 0,
            iovs: IoVecs::new(),
            zero: false,
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
        };
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

    /// End of a submit or poll: wake the metadata thread if records were queued, and publish
    /// the oldest reuse epoch of the IO in progress (only ever moves forward while busy; an
    /// idle channel is recognized by its `busy` count).
    fn wake_md(&mut self) {
        if self.kick {
            self.kick = false;
            self.core.kick();
        }
        self.publish_oldest();
    }

    /// Publish the oldest reuse epoch of the IO in progress in the gate.
    fn publish_oldest(&mut self) {
        let oldest = if self.n_old > 0 {
            self.ep_old
        } else if self.n_cur > 0 {
            self.ep_cur
        } else {
            return;
        };
        if oldest != self.ep_published {
            self.ep_published = oldest;
            self.gate.oldest.store(oldest, Ordering::SeqCst);
        }
    }

    fn set_busy(&mut self, delta: i64) {
        self.busy = (self.busy as i64 + delta) as u64;
        self.gate.busy.store(self.busy, Ordering::SeqCst);
    }

    /// Admit op `i` past the freeze gate and stamp it with the reuse epoch; false when the
    /// store is frozen.
    fn admit(&mut self, i: usize) -> bool {
        self.set_busy(1);
        fence(Ordering::SeqCst);
        if self.core.frozen.load(Ordering::SeqCst) {
            self.set_busy(-1);
            return false;
        }
        // After the busy store and fence: see `Core::reclaim`.
        // Two generations: new IO joins the newest one; it moves to the epoch just read only
        // once the older generation drained, so the oldest generation always drains (a stamp
        // older than the epoch read is only more careful).
        self.join_epoch(i);
        let g = self.core.gen.load(Ordering::Acquire);
        if g != self.gen {
            let md = self.core.lock_md();
            match md.views.get(&self.id) {
                Some(v) => self.view = v.clone(),
                None => self.gone = true,
            }
            self.gen = g;
        }
        true
    }

    /// Stamp op `i` with the reuse epoch (the channel is busy and fenced: see `admit`).
    fn join_epoch(&mut self, i: usize) {
        let e = self.core.epoch.load(Ordering::SeqCst);
        if e != self.ep_cur && self.n_old == 0 {
            self.ep_old = self.ep_cur;
            self.n_old = self.n_cur;
            self.n_cur = 0;
            self.ep_cur = e;
        }
        self.n_cur += 1;
        self.ops[i].ep = self.ep_cur;
    }

    /// Op `i` no longer counts in its reuse epoch generation.
    fn leave_epoch(&mut self, i: usize) {
        if self.ops[i].ep == self.ep_cur && self.n_cur > 0 {
            self.n_cur -= 1;
        } else {
            self.n_old = self.n_old.saturating_sub(1);
        }
    }

    /// Drop op `i`'s granule claim (under the metadata lock) and wake its waiters.
    fn drop_claim(&mut self, md: &mut Md, i: usize) {
        let op = &mut self.ops[i];
        if op.claim == 0 {
            return;
        }
        let key = (self.id, op.claim_lc);
        if let Some(m) = md.claims.get_mut(&key) {
            *m &= !op.claim;
            if *m == 0 {
                md.claims.remove(&key);
            }
        }
        op.claim = 0;
        self.core.claim_gen.fetch_add(1, Ordering::Release);
    }

    /// Give op `i`'s bounce set back (to an op waiting for one).
    fn put_set(&mut self, i: usize) {
        if let Some(s) = self.ops[i].set.take() {
            self.free_sets.push(s);
            if let Some(w) = self.set_wait.pop_front() {
                self.ready.push(w);
            }
        }
    }

    /// Park op `i` until a claim is dropped (`space` false; read `claim_gen` under the
    /// metadata lock that saw the claim) or space may have come back (`space`).
    fn park(&mut self, i: usize, space: bool, claim_gen: u64) {
        if space {
            self.n_space_wait += 1;
            self.kick = true;
        } else if !self.parked.iter().any(|&p| !self.ops[p as usize].wait_space) {
            self.claim_seen = claim_gen;
        } else {
            self.claim_seen = self.claim_seen.min(claim_gen);
        }
        // It plans its piece again when it retries: the bounce set may serve an op meanwhile
        // (perhaps the one holding the claim it waits for).
        self.put_set(i);
        self.ops[i].wait_space = space;
        self.ops[i].st = St::Parked;
        self.parked.push_back(i as u16);
    }

    /// Retry parked ops: claim waiters once a claim was dropped, space waiters each poll (the
    /// first that finds no space again ends the round). A retried op holds no mapping it
    /// looked up before (it waits between pieces), so it takes the current reuse epoch: the
    /// space it waits for may be in grace behind its own old stamp.
    fn retry_parked(&mut self) {
        let g = self.core.claim_gen.load(Ordering::Acquire);
        let claims_moved = g != self.claim_seen;
        if !claims_moved && self.n_space_wait == 0 {
            return;
        }
        self.claim_seen = g;
        let mut space_ok = true;
        let mut take = [0u16; 64];
        let mut n = 0;
        for _ in 0..self.parked.len() {
            let Some(p) = self.parked.pop_front() else { break };
            let space = self.ops[p as usize].wait_space;
            if n < take.len() && ((space && space_ok) || (!space && claims_moved)) {
                if space {
                    self.n_space_wait -= 1;
                    space_ok = false;
                }
                take[n] = p;
                n += 1;
            } else {
                self.parked.push_back(p);
            }
        }
        for &p in &take[..n] {
            self.leave_epoch(p as usize);
            self.join_epoch(p as usize);
        }
        self.publish_oldest();
        for &p in &take[..n] {
            let i = p as usize;
            self.ops[i].st = St::Next;
            self.step(i);
        }
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

    /// Read cursor: resolve and read runs until one needs the device. Returns true when the
    /// op moved on to another state (and should keep stepping).
    fn read_step(&mut self, i: usize) -> bool {
        let view = self.view.clone();
        let geo = self.geo;
        let bs = geo.bs as usize;
        loop {
            let rd = self.ops[i].rd;
            if rd.pos >= rd.n {
                return self.read_done(i);
            }
            let lba = rd.lba + rd.pos;
            let (src, k) = resolve(&view, lba, rd.n - rd.pos, &geo);
            let off = rd.pos as usize * bs;
            match src {
                Src::Zero => {
                    let ok = match rd.dest {
                        Dest::User(base) => dma::zero(&self.ops[i].iovs, base + off, k as usize * bs),
                        Dest::Stage(base) => {
                            let s = self.ops[i].set.map(|s| s as usize);
                            match s.and_then(|s| self.sets.get_mut(s)) {
                                Some(set) => {
                                    set.stage.as_mut_slice()[base + off..base + off + k as usize * bs].fill(0);
                                    true
                                }
                                None => false,
                            }
                        }
                    };
                    if !ok {
                        self.finish(i, IoStatus::Invalid);
                        return false;
                    }
                    self.ops[i].rd.pos += k;
                }
                Src::Cluster { owner, pc, enc } => {
                    let fp = src.fingerprint();
                    let iov = match rd.dest {
                        Dest::User(base) => self.ops[i].iovs.slice((base + off) as u64, k * geo.bs),
                        Dest::Stage(base) => {
                            let s = self.ops[i].set.unwrap_or(0) as usize;
                            self.sets
                                .get_mut(s)
                                .and_then(|set| set.stage.iovec_range(base + off, k as usize * bs))
                                .map(IoVecs::single)
                        }
                    };
                    let Some(iov) = iov else {
                        self.finish(i, IoStatus::Invalid);
                        return false;
                    };
                    let r = &mut self.ops[i].rd;
                    r.k = k;
                    r.fp = fp;
                    r.owner = owner.id;
                    r.enc = enc;
                    r.chunk = false;
                    self.ops[i].st = St::ReadIo;
                    self.submit_base(i, IoRequest::read(geo.cluster_block(pc, lba), k, iov, 0));
                    return false;
                }
                Src::Chunk { owner, g, loc } => {
                    if !self.want_set(i) {
                        return false;
                    }
                    let fp = src.fingerprint();
                    let s = self.ops[i].set.unwrap_or(0) as usize;
                    let len = (loc.nsect * SECTOR) as usize;
                    let Some(iov) = self.sets.get_mut(s).and_then(|set| set.sect.iovec_range(0, len)) else {
                        self.finish(i, IoStatus::MediaError);
                        return false;
                    };
                    let r = &mut self.ops[i].rd;
                    r.k = k;
                    r.fp = fp;
                    r.owner = owner.id;
                    r.enc = loc.enc;
                    r.chunk = true;
                    r.g = g;
                    r.loc = loc.encode();
                    self.ops[i].st = St::ReadIo;
                    self.submit_base(
                        i,
                        IoRequest::read(geo.sector_block(loc.sector), len as u64 / geo.bs, IoVecs::single(iov), 0),
                    );
                    return false;
                }
            }
        }
    }

    /// A run of the read cursor came back from the device.
    fn read_io_done(&mut self, i: usize) {
        let geo = self.geo;
        let bs = geo.bs as usize;
        let rd = self.ops[i].rd;
        let lba = rd.lba + rd.pos;
        let off = rd.pos as usize * bs;
        let key = if rd.enc {
            match self.owner_key(rd.owner) {
                Some(k) => Some(k),
                None => return self.finish(i, IoStatus::MediaError),
            }
        } else {
            None
        };
        if rd.chunk {
            let Some(loc) = ChunkLoc::decode(rd.loc) else { return self.finish(i, IoStatus::MediaError) };
            let s = self.ops[i].set.unwrap_or(0) as usize;
            let Some(set) = self.sets.get_mut(s) else { return self.finish(i, IoStatus::MediaError) };
            let len = (loc.nsect * SECTOR) as usize;
            let gbytes = (geo.gb * geo.bs) as usize;
            {
                let sect = &mut set.sect.as_mut_slice()[..len];
                if let Some(k) = &key {
                    k.decrypt(sect, SECTOR as usize, chunk_tweak(rd.g, 0));
                }
            }
            let scratch = &mut set.scratch.as_mut_slice()[..gbytes];
            if loc.raw {
                scratch.copy_from_slice(&set.sect.as_slice()[..gbytes.min(len)]);
            } else if decompress_chunk(&set.sect.as_slice()[..len], scratch).is_err() {
                return self.finish(i, IoStatus::MediaError);
            }
            let from = ((lba - rd.g * geo.gb) * geo.bs) as usize;
            let n = rd.k as usize * bs;
            let ok = match rd.dest {
                Dest::User(base) => {
                    dma::copy_in(&self.ops[i].iovs, base + off, &set.scratch.as_slice()[from..from + n])
                }
                Dest::Stage(base) => {
                    let BounceSet { stage, scratch, .. } = set;
                    stage.as_mut_slice()[base + off..base + off + n]
                        .copy_from_slice(&scratch.as_slice()[from..from + n]);
                    true
                }
            };
            if !ok {
                return self.finish(i, IoStatus::Invalid);
            }
        } else if let Some(k) = &key {
            let n = rd.k as usize * bs;
            match rd.dest {
                Dest::User(base) => {
                    let iovs = self.ops[i].iovs;
                    if !dma::for_each_unit_mut(&iovs, base + off, n, bs, &mut self.tmp, |u, b| {
                        k.decrypt(b, bs, (lba + u as u64) as u128)
                    }) {
                        return self.finish(i, IoStatus::Invalid);
                    }
                }
                Dest::Stage(base) => {
                    let s = self.ops[i].set.unwrap_or(0) as usize;
                    if let Some(set) = self.sets.get_mut(s) {
                        k.decrypt(&mut set.stage.as_mut_slice()[base + off..base + off + n], bs, lba as u128);
                    }
                }
            }
        }
        // Validate: the run must still resolve to the same place, else read it again.
        let view = self.view.clone();
        let (src, _) = resolve(&view, lba, rd.k, &geo);
        if src.fingerprint() == rd.fp {
            self.ops[i].rd.pos += rd.k;
        }
        self.ops[i].st = St::Read;
        self.step(i);
    }

    fn read_done(&mut self, i: usize) -> bool {
        let then = self.ops[i].rd.then;
        match then {
            Then::Finish => {
                self.finish(i, IoStatus::Success);
                false
            }
            Then::FillTail => {
                let w = self.ops[i].w;
                let op = self.ops[i];
                let data_end = op.lba + op.pos + w.k;
                if w.tail > data_end {
                    let off = ((data_end - w.head) * self.geo.bs) as usize;
                    self.ops[i].rd = Rd {
                        lba: data_end,
                        n: w.tail - data_end,
                        dest: Dest::Stage(off),
                        then: Then::StageWrite,
                        ..RD0
                    };
                    return true;
                }
                self.stage_write(i)
            }
            Then::StageWrite => self.stage_write(i),
            Then::Compress => self.compress(i),
        }
    }

    /// The blocks a zeroing op releases instead of writing: whole granules inside the op, on
    /// a thin volume, at or past the parent limit. `(0, 0)` when none.
    fn release_span(&self, op: &Op) -> (u64, u64) {
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
    fn release_piece(&mut self, i: usize) -> bool {
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
    fn write_next(&mut self, i: usize) -> bool {
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
    fn claim_first(&mut self, i: usize, lc: u64, mask: u64) -> Claim {
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
    fn alloc_locked(&mut self, md: &mut Md, i: usize, lc: u64) -> Alloc {
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
            // Space still on its way back: wait for it rather than fail.
            return if md.space_pending() { Alloc::Wait } else { Alloc::Fail(IoStatus::NoSpace) };
        };
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
    fn stage_write(&mut self, i: usize) -> bool {
        let geo = self.geo;
        let op = self.ops[i];
        let w = op.w;
        let lba = op.lba + op.pos;
        let s = op.set.unwrap_or(0) as usize;
        let span = ((w.tail - w.head) * geo.bs) as usize;
        let key = if w.enc { self.view.key.clone() } else { None };
        if w.enc && key.is_none() {
            self.finish(i, IoStatus::MediaError);
            return false;
        }
        let Some(set) = self.sets.get_mut(s) else { return false };
        let at = ((lba - w.head) * geo.bs) as usize;
        let n = (w.k * geo.bs) as usize;
        if !fill_src(&op, (op.pos * geo.bs) as usize, &mut set.stage.as_mut_slice()[at..at + n]) {
            self.finish(i, IoStatus::Invalid);
            return false;
        }
        if let Some(k) = key {
            k.encrypt(&mut set.stage.as_mut_slice()[..span], geo.bs as usize, w.head as u128);
        }
        let Some(iov) = set.stage.iovec_range(0, span) else { return false };
        self.ops[i].st = St::WriteIo { commit: true };
        self.submit_base(i, IoRequest::write(geo.cluster_block(w.pc, w.head), w.tail - w.head, IoVecs::single(iov), 0));
        false
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
        self.ops[i] = Op {
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
        };
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
