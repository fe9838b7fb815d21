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
//! read; on a tie (a 4 KiB write to raid5 over 4 members) RMW wins, as it
//! reads the very blocks it overwrites next (still in cache, on RAM disks
//! as in the devices' own) where a reconstruct-write touches others. Data
//! is written from the caller's buffers; parity from the operation's
//! buffers. A read error fails the member and replans the
//! operation; a write error fails the member and the operation goes on
//! degraded.

mod compute;

use bdev::dma::DmaError;
use bdev::{DmaBuf, IoStatus, IoType, IoVecs};

use super::channel::{Owner, Progress, RaidChannel};
use crate::geometry::{Geometry, StripeLayout};
use compute::{compute, Source};

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
        let Geometry::Striped(g) = &self.sh.geometry else {
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
            } else if rmw_ok && (!rcw_ok || rmw_cost <= rcw_cost) {
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
        let stats = &self.sh.stats;
        let counter = match mode {
            Mode::Full => &stats.full,
            Mode::Rmw => &stats.rmw,
            Mode::Rcw => &stats.rcw,
            Mode::Reconstruct => &stats.reconstruct,
            Mode::Read => &stats.degraded_reads,
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
        let chunk = self.sh.geometry.chunk_sectors();
        let parity = self.sh.parity;
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
            match self.zeroes(self.sh.window_sectors) {
                Some(z) => Source::Zeroes(z),
                None => return self.fail_op(o, IoStatus::Invalid),
            }
        } else {
            Source::Iovs(parent_iovs)
        };
        let len = ((r1 - r0) * 512) as usize;
        let RaidChannel { ops, zero, .. } = self;
        let outcome = match ops.get_mut(o) {
            Some(op) => compute(&parity, &layout, op, parent_iovs, zero.as_slice(), len),
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
