//! The RAID channel: one per reactor, over one channel per member.
//!
//! A request becomes a *parent*; the parent issues *children* (member IOs)
//! piece by piece as resources allow: linear and raid0 pieces go to one
//! member, mirrored reads to the least busy in-sync copy, mirrored writes
//! to every writable copy (a *group*), parity-level writes and degraded
//! reads through *stripe operations* ([`super::stripe`]). Everything lives
//! in fixed slabs allocated when the channel opens; a request that finds no
//! free entry waits in a queue and continues from the next poll.
//!
//! Write-zeroes and unmap: on linear, raid0, raid1 and raid10 they are
//! split like writes and passed down; a member without write-zeroes gets
//! zeroes written from a zeroed window, and unmap only reaches members that
//! read unmapped blocks back as zeroes (elsewhere it zeroes), so mirrors
//! never diverge. On raid4/5/6 both are stripe writes of zeroes (parity
//! computed over them; data members get write-zeroes or unmap where they
//! take it), so parity stays correct; the array reads unmapped blocks as
//! zeroes on every level.
//!
//! Errors: a path error is retried once on the same member; a media error,
//! or a path error that persists, fails the member (unless the array needs
//! it to run, as md keeps its last devices) and the piece is redone from
//! redundancy.

use std::collections::VecDeque;
use std::sync::Arc;

use bdev::{BdevChannel, DmaBuf, IoChannel, IoRequest, IoStatus, IoType, IoVecs, QueueFull};

use super::intent::write_bits;
use super::shared::{ControlMsg, Shared};
use super::slab::Slab;
use super::stripe::StripeOp;
use crate::geometry::{Geometry, MemberSector, Target};

/// Children per channel.
const CHILDREN: usize = 4096;
/// Mirror write groups per channel.
const GROUPS: usize = 2048;
/// Mirror regions (lock windows) one mirrored write piece may span.
const MIRROR_SPAN: u64 = 8;

pub(super) struct MemberCh {
    dev_id: u64,
    pub ch: BdevChannel,
    data_offset: u64,
    /// Member sectors per member block.
    spb: u64,
    pub outstanding: u32,
    /// The member takes write-zeroes.
    zeroes: bool,
    /// The member takes unmap and reads unmapped blocks as zeroes.
    unmap: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owner {
    Parent(u32),
    Group(u32),
    Op(u32),
}

#[derive(Clone, Copy)]
pub(super) struct Child {
    pub owner: Owner,
    pub slot: usize,
    pub io_type: IoType,
    pub sector: u64,
    pub sectors: u64,
    pub iovs: IoVecs,
    pub retries: u8,
    /// Device the child went to (slots may change devices meanwhile).
    pub dev_id: u64,
    /// Array position of the piece (to redo it elsewhere) and its offset
    /// in the parent, in sectors.
    pub lba: u64,
    pub io_offset: u64,
}

impl Child {
    fn empty() -> Child {
        Child {
            owner: Owner::Parent(0),
            slot: 0,
            io_type: IoType::Read,
            sector: 0,
            sectors: 0,
            iovs: IoVecs::new(),
            retries: 0,
            dev_id: 0,
            lba: 0,
            io_offset: 0,
        }
    }
}

/// A read to redo from redundancy.
#[derive(Clone, Copy)]
struct Redo {
    parent: u32,
    lba: u64,
    sectors: u64,
    io_offset: u64,
    iovs: IoVecs,
    not: usize,
    status: IoStatus,
}

pub(super) struct Group {
    pub parent: u32,
    pub pending: u32,
    pub ok: u32,
    pub status: IoStatus,
    /// Mirror regions held: the first key and how many consecutive ones.
    pub lock: Option<(u64, u32)>,
}

pub(super) struct Parent {
    pub tag: u64,
    pub io_type: IoType,
    pub lba: u64,
    pub sectors: u64,
    pub iovs: IoVecs,
    /// Sectors issued so far (non-parity writes), or stripe/window cursor.
    pub next: u64,
    pub next_window: u64,
    pub outstanding: u32,
    pub status: IoStatus,
    pub issued: bool,
    /// Write-intent state ([`INTENT_NONE`], [`INTENT_WAIT`] or
    /// [`INTENT_READY`]) and the bitmap chunks the request covers.
    pub intent: u8,
    pub intent_bits: (u64, u64),
}

/// The request does not take part in the write-intent bitmap (yet).
pub(super) const INTENT_NONE: u8 = 0;
/// Counted in its chunks; waits for their bits to reach the disks.
pub(super) const INTENT_WAIT: u8 = 1;
/// Counted in its chunks, bits on disk.
pub(super) const INTENT_READY: u8 = 2;

impl Parent {
    fn empty() -> Parent {
        Parent {
            tag: 0,
            io_type: IoType::Read,
            lba: 0,
            sectors: 0,
            iovs: IoVecs::new(),
            next: 0,
            next_window: 0,
            outstanding: 0,
            status: IoStatus::Success,
            issued: false,
            intent: INTENT_NONE,
            intent_bits: (0, 0),
        }
    }

    /// Records a failure (the first one wins).
    pub fn fail(&mut self, st: IoStatus) {
        if self.status.is_ok() {
            self.status = st;
        }
    }
}

/// Outcome of trying to issue more of a parent.
#[derive(PartialEq, Eq)]
pub(super) enum Progress {
    Done,
    Blocked,
}

pub(crate) struct RaidChannel {
    pub sh: Arc<Shared>,
    gen: u64,
    pub members: Vec<Option<MemberCh>>,
    retired: Vec<MemberCh>,
    pub parents: Slab<Parent>,
    pub children: Slab<Child>,
    pub groups: Slab<Group>,
    pub ops: Slab<StripeOp>,
    work: VecDeque<u32>,
    resubmit: VecDeque<u32>,
    pub op_wait: VecDeque<u32>,
    done: VecDeque<(u64, IoStatus)>,
    completions: Vec<(u64, IoStatus)>,
    batch: Vec<(u64, IoStatus)>,
    /// Reads planned by a stripe operation, or the copies a mirrored write
    /// goes to (reused).
    pub plan_buf: Vec<(usize, u64, u64)>,
    /// Round-robin position for mirrored reads.
    rr: usize,
    /// Zeroes (one window) for members without write-zeroes and for
    /// zeroing parity-level stripes.
    pub zero: DmaBuf,
    redo: VecDeque<Redo>,
}

impl RaidChannel {
    pub(crate) fn new(sh: Arc<Shared>, depth: usize, stripe_ops: usize) -> Result<RaidChannel, bdev::BdevError> {
        let n = sh.slots.len();
        let parity = matches!(sh.geometry, Geometry::Striped(_));
        let window_bytes = (sh.window_sectors * 512) as usize;
        let mut op_err = None;
        let ops = Slab::new(if parity { stripe_ops.max(1) } else { 1 }, || {
            StripeOp::new(n, if parity { window_bytes } else { 0 }).unwrap_or_else(|e| {
                op_err = Some(e);
                StripeOp::placeholder(n)
            })
        });
        if let Some(e) = op_err {
            return Err(e.into());
        }
        let mut ch = RaidChannel {
            gen: u64::MAX,
            // Slots, then their replacements.
            members: (0..2 * n).map(|_| None).collect(),
            retired: Vec::new(),
            parents: Slab::new(depth, Parent::empty),
            children: Slab::new(CHILDREN, Child::empty),
            groups: Slab::new(GROUPS, || Group { parent: 0, pending: 0, ok: 0, status: IoStatus::Success, lock: None }),
            ops,
            work: VecDeque::with_capacity(depth),
            resubmit: VecDeque::with_capacity(CHILDREN),
            op_wait: VecDeque::with_capacity(stripe_ops.max(1)),
            done: VecDeque::with_capacity(depth),
            completions: Vec::with_capacity(CHILDREN),
            batch: Vec::with_capacity(CHILDREN),
            plan_buf: Vec::with_capacity(2 * n + 2),
            rr: 0,
            zero: DmaBuf::zeroed(window_bytes)?,
            redo: VecDeque::with_capacity(CHILDREN),
            sh,
        };
        ch.refresh();
        Ok(ch)
    }

    /// Follows device changes of the slots.
    fn refresh(&mut self) {
        let g = self.sh.generation();
        if g == self.gen {
            return;
        }
        self.gen = g;
        for i in 0..self.members.len() {
            let dev = self.sh.slot_any(i).and_then(|s| s.device());
            let cur = self.members.get(i).and_then(|m| m.as_ref()).map(|m| m.dev_id);
            if dev.as_ref().map(|d| d.id) == cur {
                continue;
            }
            let new = dev.and_then(|d| match d.desc.channel() {
                Ok(mut ch) => {
                    // The array measures its own requests' latency; per
                    // member IO it would cost two clock reads nobody uses.
                    ch.set_measure_latency(false);
                    let mspb = (u64::from(d.block_size) / 512).max(1);
                    let info = d.desc.info();
                    let zeroes = info.supported.contains(IoType::WriteZeroes);
                    let unmap = info.supported.contains(IoType::Unmap) && info.unmap_zeroes;
                    Some(MemberCh {
                        dev_id: d.id,
                        ch,
                        data_offset: d.data_offset,
                        spb: mspb,
                        outstanding: 0,
                        zeroes,
                        unmap,
                    })
                }
                Err(e) => {
                    log::error!("raid {}: cannot open a channel to {}: {e}", self.sh.name, d.name());
                    None
                }
            });
            if let Some(slot) = self.members.get_mut(i) {
                if let Some(old) = std::mem::replace(slot, new) {
                    if old.ch.in_flight() > 0 {
                        self.retired.push(old);
                    }
                }
            }
        }
    }

    /// Whether slot `m` has a channel and can serve `[sector, sector+n)`.
    pub(super) fn readable(&self, m: usize, sector: u64, n: u64) -> bool {
        matches!(self.members.get(m), Some(Some(_))) && self.sh.slot(m).is_some_and(|s| s.readable(sector, n))
    }

    pub(super) fn writable(&self, m: usize) -> bool {
        matches!(self.members.get(m), Some(Some(_))) && self.sh.slot_any(m).is_some_and(|s| s.writable())
    }

    /// The replacement of slot `m`, if one is being rebuilt (writes go to
    /// it too).
    pub(super) fn replacement(&self, m: usize) -> Option<usize> {
        let r = m + self.sh.slots.len();
        self.writable(r).then_some(r)
    }

    /// Zeroes for `n` sectors (at most a window).
    pub(super) fn zeroes(&mut self, n: u64) -> Option<IoVecs> {
        self.zero.iovec_range(0, usize::try_from(n * 512).ok()?).map(IoVecs::single)
    }

    /// Whether zeroing `n` sectors on slot `m` must be written from
    /// [`RaidChannel::zeroes`] (so at most a window at a time).
    pub(super) fn zeroes_by_write(&self, m: usize, io_type: IoType) -> bool {
        let Some(Some(mc)) = self.members.get(m) else {
            return false;
        };
        match io_type {
            IoType::Unmap => !mc.unmap && !mc.zeroes,
            IoType::WriteZeroes => !mc.zeroes,
            _ => false,
        }
    }

    /// Issues a write-like child: writes as they are; write-zeroes passed
    /// down, or written from zeroes where the member lacks it; unmap passed
    /// down where the member reads unmapped blocks back as zeroes, else
    /// zeroed, so every copy and every parity stays consistent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue_write(
        &mut self,
        owner: Owner,
        slot: usize,
        io_type: IoType,
        sector: u64,
        sectors: u64,
        iovs: IoVecs,
        lba: u64,
        io_offset: u64,
    ) -> Option<u32> {
        let (zeroes, unmap) = match self.members.get(slot) {
            Some(Some(m)) => (m.zeroes, m.unmap),
            _ => (true, true),
        };
        let (t, iovs) = match io_type {
            IoType::Unmap if unmap => (IoType::Unmap, IoVecs::new()),
            IoType::Unmap | IoType::WriteZeroes if zeroes => (IoType::WriteZeroes, IoVecs::new()),
            IoType::Unmap | IoType::WriteZeroes => (IoType::Write, self.zeroes(sectors)?),
            t => (t, iovs),
        };
        self.issue(owner, slot, t, sector, sectors, iovs, lba, io_offset)
    }

    /// Allocates and submits a child IO; `None` when no child entry is free.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue(
        &mut self,
        owner: Owner,
        slot: usize,
        io_type: IoType,
        sector: u64,
        sectors: u64,
        iovs: IoVecs,
        lba: u64,
        io_offset: u64,
    ) -> Option<u32> {
        let c = self.children.alloc()?;
        let dev_id = self.members.get(slot).and_then(|m| m.as_ref()).map_or(0, |m| m.dev_id);
        if let Some(ch) = self.children.get_mut(c) {
            *ch = Child { owner, slot, io_type, sector, sectors, iovs, retries: 0, dev_id, lba, io_offset };
        }
        self.submit_child(c);
        Some(c)
    }

    fn submit_child(&mut self, c: u32) {
        // Borrowed, not copied: a child is some 200 bytes.
        let RaidChannel { children, members, completions, resubmit, .. } = self;
        let Some(child) = children.get(c) else {
            return;
        };
        let Some(Some(m)) = members.get_mut(child.slot) else {
            // The member went away: answer as a path error.
            completions.push((u64::from(c), IoStatus::PathError));
            return;
        };
        let start = m.data_offset + child.sector;
        // Block sizes are powers of two: shifts rather than divisions.
        let blocks = if m.spb.is_power_of_two() {
            let shift = m.spb.trailing_zeros();
            ((start | child.sectors) & (m.spb - 1) == 0).then_some((start >> shift, child.sectors >> shift))
        } else {
            (start % m.spb == 0 && child.sectors % m.spb == 0).then(|| (start / m.spb, child.sectors / m.spb))
        };
        let Some((offset_blocks, num_blocks)) = blocks else {
            completions.push((u64::from(c), IoStatus::Invalid));
            return;
        };
        let io = if child.io_type == IoType::Flush {
            IoRequest::no_data(IoType::Flush, 0, 0, u64::from(c))
        } else {
            IoRequest { io_type: child.io_type, offset_blocks, num_blocks, iovs: child.iovs, tag: u64::from(c) }
        };
        match m.ch.submit(&io) {
            Ok(()) => m.outstanding += 1,
            Err(QueueFull) => resubmit.push_back(c),
        }
    }

    pub(super) fn finish_parent_part(&mut self, p: u32, st: IoStatus) {
        let complete = match self.parents.get_mut(p) {
            Some(par) => {
                if !st.is_ok() {
                    par.fail(st);
                }
                par.outstanding = par.outstanding.saturating_sub(1);
                par.issued && par.outstanding == 0
            }
            None => false,
        };
        if complete {
            self.complete_parent(p);
        }
    }

    fn complete_parent(&mut self, p: u32) {
        if let Some(par) = self.parents.get(p) {
            if par.intent != INTENT_NONE {
                if let Some(wi) = self.sh.intent.as_ref() {
                    wi.end(par.intent_bits.0..par.intent_bits.1);
                }
            }
            self.done.push_back((par.tag, par.status));
        }
        self.parents.release(p);
    }

    /// Issues as much of parent `p` as resources allow.
    fn advance(&mut self, p: u32) -> Progress {
        let Some(par) = self.parents.get(p) else {
            return Progress::Done;
        };
        let (io_type, lba, sectors) = (par.io_type, par.lba, par.sectors);
        if io_type.is_write_like() && !self.intent_ready(p) {
            return Progress::Blocked;
        }
        let progress = match (io_type, &self.sh.geometry) {
            (IoType::Flush, _) => self.advance_flush(p),
            (IoType::Write | IoType::WriteZeroes | IoType::Unmap, Geometry::Striped(_)) => self.advance_parity_write(p),
            _ => self.advance_pieces(p, io_type, lba, sectors),
        };
        if progress == Progress::Done {
            let complete = match self.parents.get_mut(p) {
                Some(par) => {
                    par.issued = true;
                    par.outstanding == 0
                }
                None => false,
            };
            if complete {
                self.complete_parent(p);
            }
        }
        progress
    }

    /// Counts write `p` in its bitmap chunks (once) and tells whether
    /// their bits are on disk; the first writer to a clear chunk wakes the
    /// control thread to write the bit.
    fn intent_ready(&mut self, p: u32) -> bool {
        let sh = &self.sh;
        let (Some(wi), Some(par)) = (sh.intent.as_ref(), self.parents.get_mut(p)) else {
            return true;
        };
        match par.intent {
            INTENT_READY => true,
            INTENT_WAIT => {
                let ready = wi.ready(par.intent_bits.0..par.intent_bits.1);
                if ready {
                    par.intent = INTENT_READY;
                }
                ready
            }
            _ => {
                let bits = write_bits(&wi.layout(), &sh.geometry, par.lba, par.sectors);
                par.intent_bits = (bits.start, bits.end);
                let started = wi.start(bits);
                par.intent = if started.ready { INTENT_READY } else { INTENT_WAIT };
                if started.flush {
                    sh.notify(ControlMsg::Kick);
                }
                started.ready
            }
        }
    }

    fn advance_flush(&mut self, p: u32) -> Progress {
        if self.children.available() < self.members.len() {
            return Progress::Blocked;
        }
        let Some(g) = self.groups.alloc() else {
            return Progress::Blocked;
        };
        if let Some(grp) = self.groups.get_mut(g) {
            *grp = Group { parent: p, pending: 0, ok: 0, status: IoStatus::Success, lock: None };
        }
        if let Some(par) = self.parents.get_mut(p) {
            par.outstanding += 1;
        }
        let mut n = 0;
        for m in 0..self.members.len() {
            if !self.writable(m) {
                continue;
            }
            if let Some(grp) = self.groups.get_mut(g) {
                grp.pending += 1;
            }
            self.issue(Owner::Group(g), m, IoType::Flush, 0, 0, IoVecs::new(), 0, 0);
            n += 1;
        }
        if n == 0 {
            self.groups.release(g);
            self.finish_parent_part(p, IoStatus::Success);
        }
        Progress::Done
    }

    /// Reads (every level) and writes of the levels without parity.
    fn advance_pieces(&mut self, p: u32, io_type: IoType, lba: u64, sectors: u64) -> Progress {
        loop {
            let Some(par) = self.parents.get(p) else {
                return Progress::Done;
            };
            let next = par.next;
            if next >= sectors {
                return Progress::Done;
            }
            let at = lba + next;
            let Ok((target, run)) = self.sh.geometry.locate(at) else {
                if let Some(par) = self.parents.get_mut(p) {
                    par.fail(IoStatus::Invalid);
                    par.next = sectors;
                }
                return Progress::Done;
            };
            let mut n = run.min(sectors - next);
            if let Target::Stripe(c) = &target {
                // Parity-level pieces stay inside one stripe window.
                let w = self.sh.window_sectors;
                let row = c.data.sector - c.stripe * self.sh.geometry.chunk_sectors();
                n = n.min(w - row % w);
            }
            // Mirrored writes lock their region, so recovery and resync
            // (which copy region by region under the same lock) never copy
            // data a write is changing.
            let mirrored_write = io_type.is_write_like() && matches!(target, Target::Mirrored);
            let zeroing = matches!(io_type, IoType::WriteZeroes | IoType::Unmap);
            if mirrored_write {
                // A write spans up to MIRROR_SPAN regions (one piece, one
                // child per copy); zeroing stays in one, as zeroes by
                // write come from a one-window buffer.
                let w = self.sh.window_sectors;
                let span = if zeroing { 1 } else { MIRROR_SPAN };
                n = n.min(span * w - at % w);
            }
            if self.children.available() < self.sh.slots.len() + 1 {
                return Progress::Blocked;
            }
            let lock = if mirrored_write {
                match self.lock_regions(at, n) {
                    Some((key, count, len)) => {
                        n = len;
                        Some((key, count))
                    }
                    None => return Progress::Blocked,
                }
            } else {
                None
            };
            if let (true, Target::Single(ms)) = (zeroing, &target) {
                if self.zeroes_by_write(ms.member, io_type) {
                    n = n.min(self.sh.window_sectors);
                }
            }
            let iovs = if zeroing {
                Some(IoVecs::new())
            } else if next == 0 && n == sectors {
                // The piece is the whole request: no re-slicing.
                Some(par.iovs)
            } else {
                par.iovs.slice(next * 512, n * 512)
            };
            let iovs = match iovs {
                Some(v) => v,
                None => {
                    if let Some((key, count)) = lock {
                        self.unlock_regions(key, count);
                    }
                    if let Some(par) = self.parents.get_mut(p) {
                        par.fail(IoStatus::Invalid);
                        par.next = sectors;
                    }
                    return Progress::Done;
                }
            };
            let issued = match target {
                Target::Single(ms) => {
                    self.add_outstanding(p);
                    self.issue_write(Owner::Parent(p), ms.member, io_type, ms.sector, n, iovs, at, next);
                    true
                }
                Target::Stripe(c) => {
                    // Only reads get here.
                    if self.readable(c.data.member, c.data.sector, n) {
                        self.add_outstanding(p);
                        self.issue(Owner::Parent(p), c.data.member, io_type, c.data.sector, n, iovs, at, next);
                        true
                    } else {
                        self.start_degraded_read(p, at, n, next)
                    }
                }
                Target::Mirrored if io_type == IoType::Read => {
                    match self.pick_copy(at, n, None) {
                        Some(ms) => {
                            self.add_outstanding(p);
                            self.issue(Owner::Parent(p), ms.member, io_type, ms.sector, n, iovs, at, next);
                        }
                        None => {
                            if let Some(par) = self.parents.get_mut(p) {
                                par.fail(IoStatus::MediaError);
                            }
                        }
                    }
                    true
                }
                Target::Mirrored => self.start_mirror_write(p, io_type, at, n, iovs, next, lock),
            };
            if !issued {
                return Progress::Blocked;
            }
            if let Some(par) = self.parents.get_mut(p) {
                par.next = next + n;
            }
        }
    }

    pub(super) fn add_outstanding(&mut self, p: u32) {
        if let Some(par) = self.parents.get_mut(p) {
            par.outstanding += 1;
        }
    }

    /// The readable copy of `[lba, lba+n)` with the fewest IOs in flight,
    /// skipping slot `not`.
    /// Ties go round-robin, so an idle array spreads reads too.
    fn pick_copy(&mut self, lba: u64, n: u64, not: Option<usize>) -> Option<MemberSector> {
        let members = self.members.len().max(1);
        self.rr = self.rr.wrapping_add(1);
        let mut best: Option<((u32, usize), MemberSector)> = None;
        for c in self.sh.geometry.copies(lba) {
            if Some(c.member) == not || !self.readable(c.member, c.sector, n) {
                continue;
            }
            let load = self.members.get(c.member).and_then(|m| m.as_ref()).map_or(u32::MAX, |m| m.outstanding);
            let key = (load, (c.member + members - self.rr % members) % members);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, c));
            }
        }
        best.map(|(_, c)| c)
    }

    fn child_done(&mut self, c: u32, st: IoStatus) {
        // The common case reads a few fields; a failure copies the child.
        let Some((slot, owner, io_type, dev_id)) =
            self.children.get(c).map(|ch| (ch.slot, ch.owner, ch.io_type, ch.dev_id))
        else {
            return;
        };
        if let Some(Some(m)) = self.members.get_mut(slot) {
            m.outstanding = m.outstanding.saturating_sub(1);
        }
        if st.is_ok() {
            self.children.release(c);
            match owner {
                Owner::Parent(p) => self.finish_parent_part(p, st),
                Owner::Group(g) => self.group_child_done(g, st, false),
                Owner::Op(o) => self.op_child_done(o, slot, io_type, st, false),
            }
            return;
        }
        let Some(child) = self.children.get(c).copied() else {
            return;
        };
        let same_dev = self.members.get(slot).and_then(|m| m.as_ref()).is_some_and(|m| m.dev_id == dev_id);
        if st.is_path_failure() && child.retries == 0 && same_dev && self.writable(slot) {
            if let Some(ch) = self.children.get_mut(c) {
                ch.retries = 1;
            }
            self.submit_child(c);
            return;
        }
        self.children.release(c);
        let failed = st == IoStatus::MediaError || st.is_path_failure();
        // A failing member is taken out unless the array needs it.
        // A device that already left its slot is out.
        let member_out = failed && {
            let current = self.sh.slot_any(child.slot).and_then(|s| s.device()).map(|d| d.id);
            current != Some(child.dev_id) || self.sh.fail_member(child.slot)
        };
        match child.owner {
            Owner::Parent(p) => {
                if !failed || !member_out {
                    self.finish_parent_part(p, st);
                    return;
                }
                self.redo_read(p, &child, st);
            }
            Owner::Group(g) => self.group_child_done(g, st, member_out),
            Owner::Op(o) => self.op_child_done(o, child.slot, child.io_type, st, member_out),
        }
    }

    /// A read child failed and its member left the array: read the piece
    /// from redundancy instead (queued while resources are short; the
    /// parent keeps the piece counted as outstanding meanwhile).
    fn redo_read(&mut self, p: u32, child: &Child, st: IoStatus) {
        let redo = Redo {
            parent: p,
            lba: child.lba,
            sectors: child.sectors,
            io_offset: child.io_offset,
            iovs: child.iovs,
            not: child.slot,
            status: st,
        };
        if !self.try_redo(&redo) {
            self.redo.push_back(redo);
        }
    }

    /// Returns false when it must wait for resources.
    fn try_redo(&mut self, r: &Redo) -> bool {
        match self.sh.geometry.locate(r.lba) {
            Ok((Target::Mirrored, _)) => match self.pick_copy(r.lba, r.sectors, Some(r.not)) {
                Some(ms) => {
                    if self.children.available() == 0 {
                        return false;
                    }
                    self.issue(
                        Owner::Parent(r.parent),
                        ms.member,
                        IoType::Read,
                        ms.sector,
                        r.sectors,
                        r.iovs,
                        r.lba,
                        r.io_offset,
                    );
                    true
                }
                None => {
                    self.finish_parent_part(r.parent, r.status);
                    true
                }
            },
            Ok((Target::Stripe(_), _)) => {
                if !self.start_degraded_read(r.parent, r.lba, r.sectors, r.io_offset) {
                    return false;
                }
                // The operation holds the parent now.
                if let Some(par) = self.parents.get_mut(r.parent) {
                    par.outstanding = par.outstanding.saturating_sub(1);
                }
                true
            }
            _ => {
                self.finish_parent_part(r.parent, r.status);
                true
            }
        }
    }

    fn pump(&mut self) {
        // Pieces to read again from redundancy.
        for _ in 0..self.redo.len() {
            let Some(r) = self.redo.pop_front() else { break };
            if !self.try_redo(&r) {
                self.redo.push_front(r);
                break;
            }
        }
        // Children that found a member queue full.
        for _ in 0..self.resubmit.len() {
            let Some(c) = self.resubmit.pop_front() else { break };
            self.submit_child(c);
        }
        // Stripe operations waiting for their lock.
        for _ in 0..self.op_wait.len() {
            let Some(o) = self.op_wait.pop_front() else { break };
            self.op_try_start(o);
        }
        // Parents with more to issue, in order.
        while let Some(&p) = self.work.front() {
            if self.advance(p) == Progress::Blocked {
                break;
            }
            self.work.pop_front();
        }
    }

    fn collect(&mut self) -> usize {
        let RaidChannel { members, retired, completions, .. } = self;
        let mut n = 0;
        for m in members.iter_mut().flatten() {
            n += m.ch.poll(&mut |tag, st| completions.push((tag, st)));
        }
        for m in retired.iter_mut() {
            n += m.ch.poll(&mut |tag, st| completions.push((tag, st)));
        }
        retired.retain(|m| m.ch.in_flight() > 0);
        n
    }
}

impl IoChannel for RaidChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.refresh();
        let spb = self.sh.spb;
        let early = match io.io_type {
            IoType::Read | IoType::Write | IoType::Flush | IoType::Unmap | IoType::WriteZeroes => None,
            IoType::Reset => Some(IoStatus::Success),
        };
        let early = early.or_else(|| {
            if io.io_type.is_write_like() && self.sh.readonly.load(std::sync::atomic::Ordering::Acquire) {
                Some(IoStatus::Invalid)
            } else if self.sh.failed.load(std::sync::atomic::Ordering::Acquire) {
                Some(IoStatus::MediaError)
            } else {
                None
            }
        });
        if let Some(st) = early {
            if self.done.len() >= self.done.capacity() {
                return Err(QueueFull);
            }
            self.done.push_back((io.tag, st));
            return Ok(());
        }
        let Some(p) = self.parents.alloc() else {
            return Err(QueueFull);
        };
        if let Some(par) = self.parents.get_mut(p) {
            *par = Parent {
                tag: io.tag,
                io_type: io.io_type,
                lba: io.offset_blocks * spb,
                sectors: io.num_blocks * spb,
                iovs: io.iovs,
                next: 0,
                next_window: 0,
                outstanding: 0,
                status: IoStatus::Success,
                issued: false,
                intent: INTENT_NONE,
                intent_bits: (0, 0),
            };
        }
        if self.work.is_empty() {
            if self.advance(p) == Progress::Blocked {
                self.work.push_back(p);
            }
        } else {
            self.work.push_back(p);
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        self.refresh();
        self.collect();
        // Handling completions may queue more (members that went away
        // answer at once); loop until quiet.
        for _ in 0..64 {
            if self.completions.is_empty() {
                break;
            }
            std::mem::swap(&mut self.completions, &mut self.batch);
            for i in 0..self.batch.len() {
                let Some(&(tag, st)) = self.batch.get(i) else { break };
                if let Ok(c) = u32::try_from(tag) {
                    self.child_done(c, st);
                }
            }
            self.batch.clear();
        }
        self.pump();
        let mut n = 0;
        while let Some((tag, st)) = self.done.pop_front() {
            done(tag, st);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.parents.in_use() + self.done.len()
    }
}
