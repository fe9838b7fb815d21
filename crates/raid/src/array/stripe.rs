//! Stripe operations of raid4/5/6: parity-consistent writes and degraded
//! reads, one stripe *window* (a range of chunk rows, at most
//! `window_sectors`) at a time, under the window's lock.
//!
//! A write chooses, like md, between
//! * **full**: every data chunk of the window is overwritten: no reads;
//! * **read-modify-write**: read the old data being replaced and the old
//!   parity, apply the difference (`P ^= old ^ new`, `Q ^= g^i (old ^ new)`);
//! * **reconstruct-write**: read the data not being written, compute the
//!   parity from scratch;
//! * **reconstruct**: when a data chunk needed by the other two is on a
//!   missing member, read everything readable, rebuild what is missing from
//!   parity, then proceed as a reconstruct-write.
//!
//! RMW and reconstruct-write are compared by the number of sectors they
//! read. Data is written from the caller's buffers; parity from the
//! operation's buffers. A read error fails the member and replans the
//! operation; a write error fails the member and the operation goes on
//! degraded.

use bdev::dma::DmaError;
use bdev::dma::{copy_from_iovs, copy_to_iovs, with_iov_slices};
use bdev::{DmaBuf, IoStatus, IoType, IoVec, IoVecs};

use super::channel::{Owner, Progress, RaidChannel};
use crate::geometry::{Geometry, StripeLayout};
use crate::parity::{Parity, MAX_SYNDROME_DATA};

/// Part of a write (or the read) inside one window: rows `[a, b)` of data
/// chunk `k`, at sector `io_off` of the parent request.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Span {
    pub k: usize,
    pub a: u64,
    pub b: u64,
    pub io_off: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Full,
    Rmw,
    Rcw,
    Reconstruct,
    Read,
}

pub(crate) struct StripeOp {
    parent: u32,
    read: bool,
    stripe: u64,
    r0: u64,
    r1: u64,
    spans: Vec<Span>,
    layout: Option<StripeLayout>,
    bufs: Vec<Option<DmaBuf>>,
    scratch: Option<DmaBuf>,
    have: Vec<bool>,
    mode: Mode,
    pending: u32,
    status: IoStatus,
    restart: bool,
    key: u64,
    locked: bool,
    writing: bool,
}

impl StripeOp {
    /// An operation with buffers of `window_bytes` for `n` members (none
    /// when `window_bytes` is 0: levels without parity).
    pub(super) fn new(n: usize, window_bytes: usize) -> Result<StripeOp, DmaError> {
        let mut op = StripeOp::placeholder(n);
        if window_bytes > 0 {
            for b in op.bufs.iter_mut() {
                *b = Some(DmaBuf::alloc(window_bytes)?);
            }
            op.scratch = Some(DmaBuf::alloc(window_bytes)?);
        }
        Ok(op)
    }

    pub(super) fn placeholder(n: usize) -> StripeOp {
        StripeOp {
            parent: 0,
            read: false,
            stripe: 0,
            r0: 0,
            r1: 0,
            spans: Vec::with_capacity(n),
            layout: None,
            bufs: (0..n).map(|_| None).collect(),
            scratch: None,
            have: vec![false; n],
            mode: Mode::Full,
            pending: 0,
            status: IoStatus::Success,
            restart: false,
            key: 0,
            locked: false,
            writing: false,
        }
    }
}

fn slice(buf: &Option<DmaBuf>, off: usize, len: usize) -> &[u8] {
    buf.as_ref().and_then(|b| b.as_slice().get(off..off + len)).unwrap_or_default()
}

fn slice_mut(buf: &mut Option<DmaBuf>, off: usize, len: usize) -> Option<&mut [u8]> {
    buf.as_mut().and_then(|b| b.as_mut_slice().get_mut(off..off + len))
}

/// Rebuilds the data members not in `have` from the others and P/Q
/// (bytes `[0, len)` of each buffer). Returns false when too much is
/// missing.
pub(super) fn solve(
    parity: &Parity,
    layout: &StripeLayout,
    bufs: &mut [Option<DmaBuf>],
    have: &mut [bool],
    len: usize,
) -> bool {
    let p = layout.p_member();
    let q = layout.q_member();
    let mut lost = [usize::MAX; 2];
    let mut nlost = 0;
    let mut slot_of = [0usize; 2];
    for (slot, m) in layout.syndrome_members().enumerate() {
        if !have.get(m).copied().unwrap_or(false) {
            if nlost >= 2 {
                return false;
            }
            lost[nlost] = m;
            slot_of[nlost] = slot;
            nlost += 1;
        }
    }
    if nlost == 0 {
        return true;
    }
    let hp = have.get(p).copied().unwrap_or(false);
    let hq = q.is_some_and(|q| have.get(q).copied().unwrap_or(false));
    let take = |bufs: &mut [Option<DmaBuf>], m: usize| bufs.get_mut(m).and_then(Option::take);
    let mut ok = false;
    match (nlost, hp, hq) {
        (1, true, _) => {
            let mut dx = take(bufs, lost[0]);
            if let Some(dxs) = slice_mut(&mut dx, 0, len) {
                let (refs, count) = data_refs(layout, bufs, len);
                ok = parity
                    .recover_data_from_p(
                        &refs[..count],
                        slot_of[0],
                        bufs.get(p).map_or(&[][..], |b| slice(b, 0, len)),
                        dxs,
                    )
                    .is_ok();
            }
            put(bufs, lost[0], dx);
        }
        (1, false, true) => {
            let qm = q.unwrap_or(0);
            let mut dx = take(bufs, lost[0]);
            let mut pb = take(bufs, p);
            if let (Some(dxs), Some(ps)) = (slice_mut(&mut dx, 0, len), slice_mut(&mut pb, 0, len)) {
                let (refs, count) = data_refs(layout, bufs, len);
                let qs = bufs.get(qm).map_or(&[][..], |b| slice(b, 0, len));
                ok = parity.recover_data_from_q(&refs[..count], slot_of[0], qs, dxs, ps).is_ok();
            }
            put(bufs, lost[0], dx);
            put(bufs, p, pb);
            if ok {
                if let Some(h) = have.get_mut(p) {
                    *h = true;
                }
            }
        }
        (2, true, true) => {
            let qm = q.unwrap_or(0);
            let mut dx = take(bufs, lost[0]);
            let mut dy = take(bufs, lost[1]);
            if let (Some(xs), Some(ys)) = (slice_mut(&mut dx, 0, len), slice_mut(&mut dy, 0, len)) {
                let (refs, count) = data_refs(layout, bufs, len);
                let ps = bufs.get(p).map_or(&[][..], |b| slice(b, 0, len));
                let qs = bufs.get(qm).map_or(&[][..], |b| slice(b, 0, len));
                ok = parity.recover_two_data(&refs[..count], slot_of[0], slot_of[1], ps, qs, xs, ys).is_ok();
            }
            put(bufs, lost[0], dx);
            put(bufs, lost[1], dy);
        }
        _ => {}
    }
    if ok {
        for &m in lost.iter().take(nlost) {
            if let Some(h) = have.get_mut(m) {
                *h = true;
            }
        }
    }
    ok
}

fn put(bufs: &mut [Option<DmaBuf>], m: usize, b: Option<DmaBuf>) {
    if let Some(slot) = bufs.get_mut(m) {
        *slot = b;
    }
}

/// Data buffers in syndrome order (taken-out ones are empty slices).
fn data_refs<'a>(
    layout: &StripeLayout,
    bufs: &'a [Option<DmaBuf>],
    len: usize,
) -> ([&'a [u8]; MAX_SYNDROME_DATA], usize) {
    let mut refs: [&[u8]; MAX_SYNDROME_DATA] = [&[]; MAX_SYNDROME_DATA];
    let mut n = 0;
    for m in layout.syndrome_members() {
        if let (Some(r), Some(b)) = (refs.get_mut(n), bufs.get(m)) {
            *r = slice(b, 0, len);
            n += 1;
        }
    }
    (refs, n)
}

/// Regenerates P (and Q) over `[0, len)` from the data buffers.
fn gen_parity(parity: &Parity, layout: &StripeLayout, bufs: &mut [Option<DmaBuf>], len: usize) -> bool {
    let p = layout.p_member();
    let mut pb = bufs.get_mut(p).and_then(Option::take);
    let mut qb = layout.q_member().and_then(|q| bufs.get_mut(q).and_then(Option::take));
    let ok = {
        let (refs, count) = data_refs(layout, bufs, len);
        match (slice_mut(&mut pb, 0, len), layout.q_member()) {
            (Some(ps), Some(_)) => match slice_mut(&mut qb, 0, len) {
                Some(qs) => parity.gen_pq(&refs[..count], ps, qs).is_ok(),
                None => false,
            },
            (Some(ps), None) => parity.xor(ps, &refs[..count]).is_ok(),
            (None, _) => false,
        }
    };
    put(bufs, p, pb);
    if let Some(q) = layout.q_member() {
        put(bufs, q, qb);
    }
    ok
}

impl RaidChannel {
    fn striped(&self) -> Option<(u64, usize)> {
        match &self.sh.geometry {
            Geometry::Striped(g) => Some((g.chunk_sectors(), g.data_disks())),
            _ => None,
        }
    }

    /// Issues the stripe operations of a raid4/5/6 write.
    pub(super) fn advance_parity_write(&mut self, p: u32) -> Progress {
        let Some((chunk, d)) = self.striped() else {
            return Progress::Done;
        };
        let w = self.sh.window_sectors;
        let stripe_len = chunk * d as u64;
        loop {
            let Some(par) = self.parents.get(p) else {
                return Progress::Done;
            };
            let (l, n) = (par.lba, par.sectors);
            if n == 0 {
                return Progress::Done;
            }
            let first = l / stripe_len;
            let last = (l + n - 1) / stripe_len;
            let stripe = first + par.next;
            if stripe > last {
                return Progress::Done;
            }
            let win = par.next_window;
            if win * w >= chunk {
                if let Some(par) = self.parents.get_mut(p) {
                    par.next += 1;
                    par.next_window = 0;
                }
                continue;
            }
            let w0 = win * w;
            let mut any = false;
            let (mut r0, mut r1) = (u64::MAX, 0);
            for k in 0..d {
                let ck = stripe * stripe_len + k as u64 * chunk;
                let lo = l.max(ck + w0);
                let hi = (l + n).min(ck + w0 + w);
                if lo < hi {
                    any = true;
                    r0 = r0.min(lo - ck);
                    r1 = r1.max(hi - ck);
                }
            }
            if !any {
                if let Some(par) = self.parents.get_mut(p) {
                    par.next_window += 1;
                }
                continue;
            }
            let Some(o) = self.ops.alloc() else {
                return Progress::Blocked;
            };
            let key = self.sh.stripe_key(stripe, w0);
            if let Some(op) = self.ops.get_mut(o) {
                op.parent = p;
                op.read = false;
                op.stripe = stripe;
                op.r0 = r0;
                op.r1 = r1;
                op.spans.clear();
                for k in 0..d {
                    let ck = stripe * stripe_len + k as u64 * chunk;
                    let lo = l.max(ck + w0);
                    let hi = (l + n).min(ck + w0 + w);
                    if lo < hi {
                        op.spans.push(Span { k, a: lo - ck, b: hi - ck, io_off: lo - l });
                    }
                }
                op.status = IoStatus::Success;
                op.restart = false;
                op.key = key;
                op.locked = false;
                op.writing = false;
                op.pending = 0;
            }
            self.add_outstanding(p);
            if let Some(par) = self.parents.get_mut(p) {
                par.next_window += 1;
            }
            self.op_try_start(o);
        }
    }

    /// Starts a degraded read of `n` sectors at array sector `at` (inside
    /// one window). Returns false when no operation is free.
    pub(super) fn start_degraded_read(&mut self, p: u32, at: u64, n: u64, io_off: u64) -> bool {
        let Geometry::Striped(g) = &self.sh.geometry else {
            return false;
        };
        let (c, _) = g.map(at);
        let chunk = g.chunk_sectors();
        let a = c.data.sector - c.stripe * chunk;
        let w = self.sh.window_sectors;
        let key = self.sh.stripe_key(c.stripe, a - a % w);
        let Some(o) = self.ops.alloc() else {
            return false;
        };
        if let Some(op) = self.ops.get_mut(o) {
            op.parent = p;
            op.read = true;
            op.stripe = c.stripe;
            op.r0 = a;
            op.r1 = a + n;
            op.spans.clear();
            op.spans.push(Span { k: c.data_index, a, b: a + n, io_off });
            op.status = IoStatus::Success;
            op.restart = false;
            op.key = key;
            op.locked = false;
            op.writing = false;
            op.pending = 0;
        }
        self.add_outstanding(p);
        self.op_try_start(o);
        true
    }

    /// Takes the operation's lock (or queues it) and plans it.
    pub(super) fn op_try_start(&mut self, o: u32) {
        let Some(op) = self.ops.get(o) else {
            return;
        };
        let (locked, key) = (op.locked, op.key);
        if !locked {
            if !self.sh.locks.try_lock(key) {
                self.op_wait.push_back(o);
                return;
            }
            if let Some(op) = self.ops.get_mut(o) {
                op.locked = true;
            }
        }
        // Reads and writes of one operation need at most one child per
        // member each phase.
        if self.children.available() < self.members.len() {
            self.op_wait.push_back(o);
            return;
        }
        self.op_plan(o);
    }

    fn op_plan(&mut self, o: u32) {
        let sh = self.sh.clone();
        let Geometry::Striped(g) = &sh.geometry else {
            return;
        };
        let chunk = g.chunk_sectors();
        let Some(op) = self.ops.get(o) else {
            return;
        };
        let layout = g.stripe_layout(op.stripe);
        let (r0, r1, read) = (op.r0, op.r1, op.read);
        let base = op.stripe * chunk;
        let len = r1 - r0;
        let n = layout.raid_disks();
        let d = layout.data_disks();
        // What to read: (member, rows a..b).
        let mut plan = std::mem::take(&mut self.plan_buf);
        plan.clear();
        let Some(op) = self.ops.get(o) else {
            self.plan_buf = plan;
            return;
        };
        let rd = |m: usize, a: u64, b: u64| self.readable(m, base + a, b - a);
        let mode;
        if read {
            mode = Mode::Read;
            let target = op.spans.first().map(|s| layout.data_member(s.k));
            for m in 0..n {
                if Some(m) != target && rd(m, r0, r1) {
                    plan.push((m, r0, r1));
                }
            }
        } else {
            let covers = |k: usize| op.spans.iter().any(|s| s.k == k && s.a == r0 && s.b == r1);
            let full = (0..d).all(covers);
            let pm = layout.p_member();
            let qm = layout.q_member();
            let parity_ok = rd(pm, r0, r1) && qm.is_none_or(|q| rd(q, r0, r1));
            let rmw_ok = parity_ok && op.spans.iter().all(|s| rd(layout.data_member(s.k), s.a, s.b));
            let rcw_ok = (0..d).all(|k| covers(k) || rd(layout.data_member(k), r0, r1));
            let parity_members = 1 + u64::from(qm.is_some());
            let rmw_cost: u64 = op.spans.iter().map(|s| s.b - s.a).sum::<u64>() + parity_members * len;
            let rcw_cost: u64 = (0..d).filter(|&k| !covers(k)).count() as u64 * len;
            mode = if full {
                Mode::Full
            } else if rmw_ok && (!rcw_ok || rmw_cost < rcw_cost) {
                Mode::Rmw
            } else if rcw_ok {
                Mode::Rcw
            } else {
                Mode::Reconstruct
            };
            match mode {
                Mode::Rmw => {
                    for s in &op.spans {
                        plan.push((layout.data_member(s.k), s.a, s.b));
                    }
                    plan.push((pm, r0, r1));
                    if let Some(q) = qm {
                        plan.push((q, r0, r1));
                    }
                }
                Mode::Rcw => {
                    for k in 0..d {
                        if !covers(k) {
                            plan.push((layout.data_member(k), r0, r1));
                        }
                    }
                }
                Mode::Reconstruct => {
                    for m in 0..n {
                        if rd(m, r0, r1) {
                            plan.push((m, r0, r1));
                        }
                    }
                }
                _ => {}
            }
        }
        let counter = match mode {
            Mode::Full => &sh.stats.full,
            Mode::Rmw => &sh.stats.rmw,
            Mode::Rcw => &sh.stats.rcw,
            Mode::Reconstruct => &sh.stats.reconstruct,
            Mode::Read => &sh.stats.degraded_reads,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(op) = self.ops.get_mut(o) {
            op.mode = mode;
            op.layout = Some(layout);
            op.have.fill(false);
            op.pending = 0;
            op.writing = false;
        }
        for i in 0..plan.len() {
            let Some(&(m, a, b)) = plan.get(i) else { break };
            let off = ((a - r0) * 512) as usize;
            let bytes = ((b - a) * 512) as usize;
            let iov = self.ops.get_mut(o).and_then(|op| op.bufs.get_mut(m)?.as_mut()?.iovec_range(off, bytes));
            let Some(iov) = iov else { continue };
            if let Some(op) = self.ops.get_mut(o) {
                op.pending += 1;
                // Only whole-window reads make a buffer usable for solving.
                if a == r0 && b == r1 {
                    if let Some(h) = op.have.get_mut(m) {
                        *h = true;
                    }
                }
            }
            self.issue(Owner::Op(o), m, IoType::Read, base + a, b - a, IoVecs::single(iov), 0, 0);
        }
        self.plan_buf = plan;
        if self.ops.get(o).is_some_and(|op| op.pending == 0) {
            self.op_compute(o);
        }
    }

    /// A child of operation `o` finished.
    pub(super) fn op_child_done(&mut self, o: u32, slot: usize, io_type: IoType, st: IoStatus, member_out: bool) {
        let Some(op) = self.ops.get_mut(o) else {
            return;
        };
        op.pending = op.pending.saturating_sub(1);
        if !st.is_ok() {
            if member_out {
                if io_type == IoType::Read {
                    op.restart = true;
                    if let Some(h) = op.have.get_mut(slot) {
                        *h = false;
                    }
                }
            } else if op.status.is_ok() {
                op.status = st;
            }
        }
        if op.pending > 0 {
            return;
        }
        if op.writing || !op.status.is_ok() {
            self.op_finish(o);
        } else if op.restart {
            op.restart = false;
            if self.children.available() < self.members.len() {
                self.op_wait.push_back(o);
            } else {
                self.op_plan(o);
            }
        } else {
            self.op_compute(o);
        }
    }

    fn op_finish(&mut self, o: u32) {
        let Some(op) = self.ops.get(o) else {
            return;
        };
        let (p, st, locked, key) = (op.parent, op.status, op.locked, op.key);
        if locked {
            self.sh.locks.unlock(key);
        }
        self.ops.release(o);
        self.finish_parent_part(p, st);
    }

    fn fail_op(&mut self, o: u32, st: IoStatus) {
        if let Some(op) = self.ops.get_mut(o) {
            if op.status.is_ok() {
                op.status = st;
            }
        }
        self.op_finish(o);
    }

    /// All reads are in: compute, then write (or deliver a degraded read).
    fn op_compute(&mut self, o: u32) {
        let sh = self.sh.clone();
        let Geometry::Striped(g) = &sh.geometry else {
            return;
        };
        let chunk = g.chunk_sectors();
        let Some(op) = self.ops.get(o) else {
            return;
        };
        let Some((parent_iovs, io_type)) = self.parents.get(op.parent).map(|par| (par.iovs, par.io_type)) else {
            return self.fail_op(o, IoStatus::Aborted);
        };
        let Some(layout) = op.layout else {
            return self.fail_op(o, IoStatus::Invalid);
        };
        let (r0, r1) = (op.r0, op.r1);
        let base = op.stripe * chunk;
        let parent_iovs = if matches!(io_type, IoType::WriteZeroes | IoType::Unmap) {
            match self.zeroes(sh.window_sectors) {
                Some(z) => Source::Zeroes(z),
                None => return self.fail_op(o, IoStatus::Invalid),
            }
        } else {
            Source::Iovs(parent_iovs)
        };
        let len = ((r1 - r0) * 512) as usize;
        let outcome = match self.ops.get_mut(o) {
            Some(op) => compute(&sh.parity, &layout, op, parent_iovs, len),
            None => return,
        };
        match outcome {
            Err(st) => return self.fail_op(o, st),
            Ok(true) => return self.op_finish(o),
            Ok(false) => {}
        }
        // Writes: data from the caller, parity from the buffers.
        let nspans = match self.ops.get_mut(o) {
            Some(op) => {
                op.writing = true;
                op.pending = 0;
                op.spans.len()
            }
            None => return,
        };
        for i in 0..nspans {
            let Some(s) = self.ops.get(o).and_then(|op| op.spans.get(i).copied()) else { break };
            let m = layout.data_member(s.k);
            if !self.writable(m) {
                continue;
            }
            let Some(iovs) = parent_iovs.slice(s.io_off * 512, (s.b - s.a) * 512) else { continue };
            for t in [Some(m), self.replacement(m)].into_iter().flatten() {
                if let Some(op) = self.ops.get_mut(o) {
                    op.pending += 1;
                }
                self.issue_write(Owner::Op(o), t, io_type, base + s.a, s.b - s.a, iovs, 0, 0);
            }
        }
        for m in [Some(layout.p_member()), layout.q_member()].into_iter().flatten() {
            if !self.writable(m) {
                continue;
            }
            let iov = self.ops.get_mut(o).and_then(|op| op.bufs.get_mut(m)?.as_mut()?.iovec_range(0, len));
            let Some(iov) = iov else { continue };
            for t in [Some(m), self.replacement(m)].into_iter().flatten() {
                if let Some(op) = self.ops.get_mut(o) {
                    op.pending += 1;
                }
                self.issue(Owner::Op(o), t, IoType::Write, base + r0, r1 - r0, IoVecs::single(iov), 0, 0);
            }
        }
        if self.ops.get(o).is_some_and(|op| op.pending == 0) {
            self.op_finish(o);
        }
    }
}

/// Where the new data of a write comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The request's buffers.
    Iovs(IoVecs),
    /// Zeroes (write-zeroes and unmap), at least a window long.
    Zeroes(IoVecs),
}

impl Source {
    /// `len` bytes at byte `off` of the request.
    fn slice(&self, off: u64, len: u64) -> Option<IoVecs> {
        match self {
            Source::Iovs(v) => v.slice(off, len),
            Source::Zeroes(z) => z.slice(0, len),
        }
    }
}

/// Full-stripe writes from single-segment data: P (and Q) computed straight
/// from the caller's buffers, without copying the data into the operation's
/// buffers first. False (nothing done) when the data is not laid out so.
fn parity_in_place(
    parity: &Parity,
    layout: &StripeLayout,
    spans: &[Span],
    bufs: &mut [Option<DmaBuf>],
    src: Source,
    len: usize,
) -> bool {
    let Source::Iovs(iovs) = src else {
        return false;
    };
    let mut segs = [IoVec::EMPTY; MAX_SYNDROME_DATA];
    let mut count = 0;
    for m in layout.syndrome_members() {
        let Some(s) = spans.iter().find(|s| layout.data_member(s.k) == m) else {
            return false;
        };
        let one = iovs.slice(s.io_off * 512, len as u64).and_then(|v| (v.len() == 1).then(|| v.as_slice()[0]));
        match (one, segs.get_mut(count)) {
            (Some(v), Some(slot)) if v.len() == len => *slot = v,
            _ => return false,
        }
        count += 1;
    }
    let pm = layout.p_member();
    let mut pb = bufs.get_mut(pm).and_then(Option::take);
    let mut qb = layout.q_member().and_then(|q| bufs.get_mut(q).and_then(Option::take));
    let ok = with_iov_slices(&segs[..count], |data| match (slice_mut(&mut pb, 0, len), layout.q_member()) {
        (Some(ps), Some(_)) => match slice_mut(&mut qb, 0, len) {
            Some(qs) => parity.gen_pq(data, ps, qs).is_ok(),
            None => false,
        },
        (Some(ps), None) => parity.xor(ps, data).is_ok(),
        (None, _) => false,
    })
    .unwrap_or(false);
    put(bufs, pm, pb);
    if let Some(q) = layout.q_member() {
        put(bufs, q, qb);
    }
    ok
}

/// The computing step of an operation whose reads are done: a degraded
/// read is delivered (returns true); a write gets its new data and parity
/// into the buffers (returns false: write next).
fn compute(
    parity: &Parity,
    layout: &StripeLayout,
    op: &mut StripeOp,
    parent_iovs: Source,
    len: usize,
) -> Result<bool, IoStatus> {
    let r0 = op.r0;
    let StripeOp { spans, bufs, scratch, have, mode, .. } = op;
    match *mode {
        Mode::Read => {
            let s = spans.first().copied().ok_or(IoStatus::Invalid)?;
            let target = layout.data_member(s.k);
            if !have.get(target).copied().unwrap_or(false) && !solve(parity, layout, bufs, have, len) {
                return Err(IoStatus::MediaError);
            }
            let dst = parent_iovs.slice(s.io_off * 512, (s.b - s.a) * 512).ok_or(IoStatus::Invalid)?;
            let src = bufs.get(target).map_or(&[][..], |b| slice(b, 0, len));
            if copy_to_iovs(dst.as_slice(), src) != src.len() {
                return Err(IoStatus::Invalid);
            }
            Ok(true)
        }
        Mode::Rmw => {
            let pm = layout.p_member();
            let qm = layout.q_member();
            for s in spans.iter() {
                let m = layout.data_member(s.k);
                let off = ((s.a - r0) * 512) as usize;
                let bytes = ((s.b - s.a) * 512) as usize;
                let new = slice_mut(scratch, 0, bytes).ok_or(IoStatus::Invalid)?;
                let copied =
                    parent_iovs.slice(s.io_off * 512, bytes as u64).map_or(0, |v| copy_from_iovs(v.as_slice(), new));
                if copied != bytes {
                    return Err(IoStatus::Invalid);
                }
                let new = slice(scratch, 0, bytes);
                // old ^= new: the delta.
                let old = bufs.get_mut(m).and_then(|b| slice_mut(b, off, bytes)).ok_or(IoStatus::Invalid)?;
                parity.xor_into(old, new).map_err(|_| IoStatus::Invalid)?;
                let slot = layout.syndrome_slot(m).unwrap_or(0);
                let mut pb = bufs.get_mut(pm).and_then(Option::take);
                let mut qb = qm.and_then(|q| bufs.get_mut(q).and_then(Option::take));
                let delta = bufs.get(m).map_or(&[][..], |b| slice(b, off, bytes));
                let ok = match (slice_mut(&mut pb, off, bytes), qm) {
                    (Some(ps), Some(_)) => match slice_mut(&mut qb, off, bytes) {
                        Some(qs) => parity.update_pq(slot, delta, ps, qs).is_ok(),
                        None => false,
                    },
                    (Some(ps), None) => parity.xor_into(ps, delta).is_ok(),
                    (None, _) => false,
                };
                put(bufs, pm, pb);
                if let Some(q) = qm {
                    put(bufs, q, qb);
                }
                if !ok {
                    return Err(IoStatus::Invalid);
                }
            }
            Ok(false)
        }
        Mode::Full if parity_in_place(parity, layout, spans, bufs, parent_iovs, len) => Ok(false),
        Mode::Full | Mode::Rcw | Mode::Reconstruct => {
            if *mode == Mode::Reconstruct && !solve(parity, layout, bufs, have, len) {
                return Err(IoStatus::MediaError);
            }
            for s in spans.iter() {
                let m = layout.data_member(s.k);
                let off = ((s.a - r0) * 512) as usize;
                let bytes = ((s.b - s.a) * 512) as usize;
                let dst = bufs.get_mut(m).and_then(|b| slice_mut(b, off, bytes)).ok_or(IoStatus::Invalid)?;
                let copied =
                    parent_iovs.slice(s.io_off * 512, bytes as u64).map_or(0, |v| copy_from_iovs(v.as_slice(), dst));
                if copied != bytes {
                    return Err(IoStatus::Invalid);
                }
            }
            if !gen_parity(parity, layout, bufs, len) {
                return Err(IoStatus::Invalid);
            }
            Ok(false)
        }
    }
}
