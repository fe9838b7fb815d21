//! The multipath IO channel: one per reactor, holding a channel to every member path.
//!
//! - **Submit** picks a path among the usable paths of the best tier with the current policy
//!   and passes the request down with the slot index as tag. Reset goes to every usable path.
//! - **Path errors** (`PathError`, `Timeout`, `Aborted`) fail the path and put the IO back in
//!   the re-drive queue; only the path's own answer ends an IO's stay on it, so no buffer is
//!   ever used by two paths at once and nothing completes twice. Other errors go to the caller.
//! - **No usable path**: the IO waits up to `no_path_timeout`, then fails with `PathError`.
//! - **Time-based work** runs from `poll` when its deadline passed: probes of failed paths,
//!   ANA refresh and statistics reset (group-wide deadlines claimed by one channel with a
//!   compare-exchange), stall detection (per channel).
//! - **Membership and options** are re-read when the group's generation changes.

use crate::config::{MultipathOptions, Policy, MAX_PATHS};
use crate::event::PathEventKind;
use crate::group::Group;
use crate::path::{ana_to_u8, Path, PathCounters};
use crate::select::{self, PathView, SelectState};
use crate::window::WindowSums;
use bdev::{clock, BdevChannel, BdevError, DmaBuf, IoChannel, IoRequest, IoStatus, IoType, IoVecs, QueueFull};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tags with this bit are probe reads (the low bits name the channel path).
const PROBE_TAG: u64 = 1 << 63;
/// Period of the per-channel housekeeping check.
const HOUSEKEEPING_NS: u64 = 500_000;
/// Longest a dropped channel waits for its paths to answer.
const DROP_DRAIN: Duration = Duration::from_secs(5);

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum SlotState {
    Free,
    /// Waiting for (re-)dispatch or for a usable path.
    Queued,
    /// On one path.
    OnPath,
    /// A reset sent to several paths.
    FanOut,
}

#[derive(Copy, Clone)]
struct Slot {
    io: IoRequest,
    state: SlotState,
    path: u16,
    epoch: u32,
    /// Ticks at submission to the path (or at queueing).
    start: u64,
    /// Ticks after which a queued IO fails for lack of a path.
    deadline: u64,
    children: u16,
    fan_ok: bool,
    fan_err: Option<IoStatus>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        io: IoRequest { io_type: IoType::Read, offset_blocks: 0, num_blocks: 0, iovs: IoVecs::new(), tag: 0 },
        state: SlotState::Free,
        path: 0,
        epoch: 0,
        start: 0,
        deadline: 0,
        children: 0,
        fan_ok: false,
        fan_err: None,
    };
}

/// This channel's view of one member path.
struct ChanPath {
    // Declared before `probe_buf`: dropped (and drained) first.
    ch: BdevChannel,
    path: Arc<Path>,
    counters: Arc<PathCounters>,
    /// Left the group: no new IO; dropped once its IO is answered.
    removed: bool,
    probing: bool,
    /// This channel's IOs on the path and their bytes (given back on drop).
    outstanding: u64,
    outstanding_bytes: u64,
    probe_buf: DmaBuf,
}

/// Option values converted to ticks.
#[derive(Copy, Clone)]
struct Cfg {
    policy: Policy,
    window: u32,
    use_windows: bool,
    probe_ticks: u64,
    no_path_ticks: Option<u64>,
    stall_ticks: Option<u64>,
    reset_ticks: u64,
    ana_ticks: u64,
}

impl Cfg {
    fn from(o: &MultipathOptions) -> Cfg {
        let t = |d: Duration| clock::ns_to_ticks(d.as_nanos().min(u64::MAX as u128) as u64);
        Cfg {
            policy: o.policy,
            window: o.window_ios,
            use_windows: o.policy.uses_windows(),
            probe_ticks: t(o.probe_interval),
            no_path_ticks: o.no_path_timeout.map(t),
            stall_ticks: o.stall_timeout.map(t),
            reset_ticks: t(o.stats_reset_interval),
            ana_ticks: t(o.ana_check_interval),
        }
    }
}

/// Stand-in for a missing candidate (never chosen by a sane policy).
struct Unavailable;

impl PathView for Unavailable {
    fn in_flight(&self) -> u64 {
        u64::MAX
    }
    fn in_flight_bytes(&self) -> u64 {
        u64::MAX
    }
    fn window(&self, _dir: usize) -> WindowSums {
        WindowSums { count: 1, lat_ns: u64::MAX / 2, bytes: 0 }
    }
    fn weight(&self) -> u32 {
        0
    }
    fn hash_id(&self) -> u64 {
        0
    }
}

static UNAVAILABLE: Unavailable = Unavailable;

enum Dispatch {
    Sent,
    /// Every candidate's queue is full.
    Busy,
    NoPath,
}

#[inline]
fn data_bytes(io: &IoRequest, bs: u64) -> u64 {
    if io.io_type.has_data() {
        io.num_blocks.saturating_mul(bs)
    } else {
        0
    }
}

/// Claim a group-wide periodic deadline: true for the one caller that moves it on.
fn claim(deadline: &AtomicU64, now: u64, period: u64) -> bool {
    let d = deadline.load(Relaxed);
    now >= d && deadline.compare_exchange(d, now.saturating_add(period), Relaxed, Relaxed).is_ok()
}

/// A multipath channel (see the module documentation).
pub(crate) struct MpChannel {
    paths: Vec<Option<ChanPath>>,
    group: Arc<Group>,
    generation: u64,
    cfg: Cfg,
    slots: Box<[Slot]>,
    free: Vec<u32>,
    redrive: VecDeque<u32>,
    waiting: VecDeque<u32>,
    cands: Vec<u16>,
    sel: SelectState,
    bs: u64,
    depth: usize,
    next_tick: u64,
    tick: u64,
    next_stall_scan: u64,
}

impl MpChannel {
    pub(crate) fn new(group: Arc<Group>) -> Result<MpChannel, BdevError> {
        let opts = group.options();
        let depth = opts.queue_depth.max(1) as usize;
        let bs = group.info.block_size as u64;
        let mut ch = MpChannel {
            paths: Vec::with_capacity(MAX_PATHS),
            cfg: Cfg::from(&opts),
            group,
            generation: 0,
            slots: vec![Slot::EMPTY; depth].into_boxed_slice(),
            free: (0..depth as u32).rev().collect(),
            redrive: VecDeque::with_capacity(depth),
            waiting: VecDeque::with_capacity(depth),
            cands: Vec::with_capacity(MAX_PATHS),
            sel: SelectState::new(bdev::rand::seed()),
            bs,
            depth,
            next_tick: 0,
            tick: clock::ns_to_ticks(HOUSEKEEPING_NS),
            next_stall_scan: 0,
        };
        ch.refresh();
        Ok(ch)
    }

    fn open_path(&self, p: &Arc<Path>) -> Result<ChanPath, BdevError> {
        let ch = p.desc.channel_with_depth(self.depth + 1)?;
        let probe_buf = DmaBuf::alloc(self.bs as usize)?;
        Ok(ChanPath {
            ch,
            path: p.clone(),
            counters: p.new_counters(),
            removed: false,
            probing: false,
            outstanding: 0,
            outstanding_bytes: 0,
            probe_buf,
        })
    }

    /// Re-read membership and options when the group changed.
    #[inline]
    fn refresh(&mut self) {
        let g = self.group.generation.load(std::sync::atomic::Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.resync();
        }
    }

    #[cold]
    fn resync(&mut self) {
        let (paths, opts) = self.group.snapshot();
        self.cfg = Cfg::from(&opts);
        for e in self.paths.iter_mut().flatten() {
            if !paths.iter().any(|p| Arc::ptr_eq(p, &e.path)) {
                e.removed = true;
            }
        }
        for p in &paths {
            if self.paths.iter().flatten().any(|e| Arc::ptr_eq(&e.path, p)) {
                continue;
            }
            match self.open_path(p) {
                Ok(cp) => match self.paths.iter_mut().find(|e| e.is_none()) {
                    Some(slot) => *slot = Some(cp),
                    None => self.paths.push(Some(cp)),
                },
                Err(e) => log::warn!("multipath {}: cannot open a channel to path {}: {e}", self.group.name(), p.name),
            }
        }
    }

    /// Fill `cands` with the usable paths of the best tier.
    #[inline]
    fn build_cands(&mut self) {
        self.cands.clear();
        let mut best = u16::MAX;
        for (i, e) in self.paths.iter().enumerate() {
            let Some(e) = e else { continue };
            if e.removed || !e.path.usable() {
                continue;
            }
            let t = e.path.tier();
            if t < best {
                best = t;
                self.cands.clear();
            }
            if t == best {
                self.cands.push(i as u16);
            }
        }
    }

    /// Send slot `idx` down a path.
    #[inline]
    fn dispatch(&mut self, idx: u32, now: u64) -> Dispatch {
        self.build_cands();
        if self.cands.is_empty() {
            return Dispatch::NoPath;
        }
        let Some(io) = self.slots.get(idx as usize).map(|s| s.io) else { return Dispatch::Busy };
        if io.io_type == IoType::Reset {
            return self.fan_out(idx, now);
        }
        let bytes = data_bytes(&io, self.bs);
        let mut sub = io;
        sub.tag = idx as u64;
        loop {
            let MpChannel { paths, cands, sel, cfg, .. } = self;
            let view = |i: u16| -> &dyn PathView {
                match paths.get(i as usize) {
                    Some(Some(e)) => &*e.path,
                    _ => &UNAVAILABLE,
                }
            };
            let Some(pos) = select::select(&cfg.policy, &io, bytes, cands, view, sel) else { return Dispatch::Busy };
            let p = cands.get(pos).copied().unwrap_or(u16::MAX);
            let Some(Some(e)) = paths.get_mut(p as usize) else {
                cands.remove(pos);
                continue;
            };
            let epoch = e.path.epoch();
            if e.ch.submit(&sub).is_ok() {
                e.path.in_flight.fetch_add(1, Relaxed);
                e.path.in_flight_bytes.fetch_add(bytes, Relaxed);
                e.outstanding += 1;
                e.outstanding_bytes += bytes;
                if let Some(s) = self.slots.get_mut(idx as usize) {
                    s.state = SlotState::OnPath;
                    s.path = p;
                    s.epoch = epoch;
                    s.start = now;
                }
                return Dispatch::Sent;
            }
            cands.remove(pos);
            if cands.is_empty() {
                return Dispatch::Busy;
            }
        }
    }

    /// Send a reset to every candidate path.
    fn fan_out(&mut self, idx: u32, now: u64) -> Dispatch {
        let mut sub = match self.slots.get(idx as usize) {
            Some(s) => s.io,
            None => return Dispatch::Busy,
        };
        sub.tag = idx as u64;
        let mut n = 0u16;
        for &p in &self.cands {
            let Some(Some(e)) = self.paths.get_mut(p as usize) else { continue };
            if e.ch.submit(&sub).is_ok() {
                e.path.in_flight.fetch_add(1, Relaxed);
                e.outstanding += 1;
                n += 1;
            }
        }
        if n == 0 {
            return Dispatch::Busy;
        }
        if let Some(s) = self.slots.get_mut(idx as usize) {
            s.state = SlotState::FanOut;
            s.children = n;
            s.fan_ok = false;
            s.fan_err = None;
            s.start = now;
        }
        Dispatch::Sent
    }

    /// Queue slot `idx` until a path is usable or its no-path deadline passes.
    fn park(&mut self, idx: u32, now: u64) {
        let deadline = match self.cfg.no_path_ticks {
            Some(t) => now.saturating_add(t),
            None => u64::MAX,
        };
        if let Some(s) = self.slots.get_mut(idx as usize) {
            s.state = SlotState::Queued;
            s.deadline = deadline;
        }
        self.waiting.push_back(idx);
    }

    fn release(&mut self, idx: u32) -> u64 {
        let tag = match self.slots.get_mut(idx as usize) {
            Some(s) => {
                s.state = SlotState::Free;
                s.io.tag
            }
            None => 0,
        };
        self.free.push(idx);
        tag
    }

    /// Poll every path channel and handle what they answer; returns completions delivered.
    fn poll_paths(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let MpChannel { paths, slots, free, redrive, group, cfg, bs, .. } = self;
        let (cfg, bs) = (*cfg, *bs);
        let mut delivered = 0;
        for e in paths.iter_mut().flatten() {
            let ChanPath { ch, path, counters, probing, outstanding, outstanding_bytes, .. } = e;
            // An idle channel of a path that cannot take IO is polled all the same: transports
            // such as NVMe/TCP reconnect from their poll, and the path only comes back once
            // they have.
            if ch.in_flight() == 0 && path.usable() {
                continue;
            }
            let now = clock::ticks();
            ch.poll(&mut |tag, st| {
                if tag & PROBE_TAG != 0 {
                    *probing = false;
                    on_probe(group, path, st, now, cfg.probe_ticks);
                    return;
                }
                let Some(slot) = slots.get_mut(tag as usize) else {
                    log::error!("multipath {}: path {} answered unknown tag {tag}", group.name(), path.name);
                    return;
                };
                path.in_flight.fetch_sub(1, Relaxed);
                *outstanding = outstanding.saturating_sub(1);
                if slot.state == SlotState::FanOut {
                    slot.children = slot.children.saturating_sub(1);
                    if st.is_ok() {
                        slot.fan_ok = true;
                        counters.ok(2, 0, clock::ticks_to_ns(now.saturating_sub(slot.start)));
                    } else if st.is_path_failure() {
                        counters.path_error();
                        fail_path(group, path, path.epoch(), st, now, cfg.probe_ticks);
                    } else {
                        counters.io_error();
                        slot.fan_err.get_or_insert(st);
                    }
                    if slot.children == 0 {
                        let result = match (slot.fan_err, slot.fan_ok) {
                            (Some(err), _) => Some(err),
                            (None, true) => Some(IoStatus::Success),
                            (None, false) => None,
                        };
                        match result {
                            Some(r) => {
                                slot.state = SlotState::Free;
                                free.push(tag as u32);
                                done(slot.io.tag, r);
                                delivered += 1;
                            }
                            None => {
                                slot.state = SlotState::Queued;
                                redrive.push_back(tag as u32);
                            }
                        }
                    }
                    return;
                }
                let bytes = data_bytes(&slot.io, bs);
                path.in_flight_bytes.fetch_sub(bytes, Relaxed);
                *outstanding_bytes = outstanding_bytes.saturating_sub(bytes);
                if st.is_ok() {
                    let lat = clock::ticks_to_ns(now.saturating_sub(slot.start));
                    let dir = match slot.io.io_type {
                        IoType::Read => 0,
                        IoType::Write => 1,
                        _ => 2,
                    };
                    counters.ok(dir, bytes, lat);
                    if cfg.use_windows && dir < 2 {
                        let sample = if cfg.policy == Policy::HistoricalServiceTime {
                            // Service time: IOs overlapping on the path count as served one
                            // after the other, so the wait behind earlier IOs is not counted
                            // twice (the estimate multiplies by what is queued).
                            let prev = path.last_finish.fetch_max(now, Relaxed);
                            clock::ticks_to_ns(now.saturating_sub(slot.start.max(prev)))
                        } else {
                            lat
                        };
                        if let Some(w) = path.windows.get(dir) {
                            w.record(cfg.window, sample, bytes);
                        }
                    }
                    slot.state = SlotState::Free;
                    free.push(tag as u32);
                    done(slot.io.tag, st);
                    delivered += 1;
                } else if st.is_path_failure() {
                    counters.path_error();
                    fail_path(group, path, slot.epoch, st, now, cfg.probe_ticks);
                    slot.state = SlotState::Queued;
                    redrive.push_back(tag as u32);
                } else {
                    counters.io_error();
                    slot.state = SlotState::Free;
                    free.push(tag as u32);
                    done(slot.io.tag, st);
                    delivered += 1;
                }
            });
        }
        delivered
    }

    /// Re-dispatch IO whose path failed, and IO waiting for a path.
    fn drive_queues(&mut self, now: u64, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let mut delivered = 0;
        for _ in 0..self.redrive.len() {
            let Some(idx) = self.redrive.pop_front() else { break };
            match self.dispatch(idx, now) {
                Dispatch::Sent => {}
                Dispatch::Busy => self.redrive.push_back(idx),
                Dispatch::NoPath => self.park(idx, now),
            }
        }
        if self.waiting.is_empty() {
            return 0;
        }
        let shut = self.group.shut.load(Relaxed);
        // Look for a usable path once, not once per waiting IO.
        self.build_cands();
        let try_paths = !shut && !self.cands.is_empty();
        for _ in 0..self.waiting.len() {
            let Some(idx) = self.waiting.pop_front() else { break };
            let deadline = self.slots.get(idx as usize).map_or(0, |s| s.deadline);
            if !shut && !try_paths && now < deadline {
                self.waiting.push_back(idx);
                continue;
            }
            if try_paths {
                match self.dispatch(idx, now) {
                    Dispatch::Sent => continue,
                    Dispatch::Busy => {
                        self.redrive.push_back(idx);
                        continue;
                    }
                    Dispatch::NoPath if now < deadline => {
                        self.waiting.push_back(idx);
                        continue;
                    }
                    Dispatch::NoPath => {}
                }
            }
            let tag = self.release(idx);
            done(tag, IoStatus::PathError);
            delivered += 1;
        }
        delivered
    }

    /// Periodic work, when its time has come.
    #[cold]
    fn housekeeping(&mut self, now: u64) {
        self.next_tick = now.saturating_add(self.tick);
        let cfg = self.cfg;
        let group = &self.group;
        // Probes of failed paths.
        for (pi, e) in self.paths.iter_mut().enumerate() {
            let Some(e) = e else { continue };
            if e.removed || e.probing || !e.path.start_probe(now) {
                continue;
            }
            let probe = IoRequest::read(0, 1, IoVecs::single(e.probe_buf.iovec()), PROBE_TAG | pi as u64);
            if e.ch.submit(&probe).is_ok() {
                e.probing = true;
            } else {
                e.path.probe_failed(now, cfg.probe_ticks);
            }
        }
        // ANA states, once per interval for the whole group.
        if claim(&group.next_ana_check, now, cfg.ana_ticks) {
            for e in self.paths.iter().flatten().filter(|e| !e.removed) {
                if let Some(s) = e.path.refresh_ana() {
                    if ana_to_u8(s) <= 2 {
                        // Accessible again: a path failed meanwhile is probed at once.
                        e.path.probe_soon();
                    }
                    group.emit(&e.path.name, PathEventKind::AnaChanged(s));
                }
            }
        }
        // Statistics windows, once per interval for the whole group.
        if cfg.reset_ticks > 0 && claim(&group.next_stats_reset, now, cfg.reset_ticks) {
            for e in self.paths.iter().flatten() {
                e.path.reset_windows();
            }
        }
        // Stalls: a path whose IO has waited too long gets no new IO.
        if let Some(stall) = cfg.stall_ticks {
            if now >= self.next_stall_scan {
                self.next_stall_scan = now.saturating_add((stall / 4).max(self.tick));
                for s in self.slots.iter().filter(|s| s.state == SlotState::OnPath) {
                    if now.saturating_sub(s.start) <= stall {
                        continue;
                    }
                    if let Some(Some(e)) = self.paths.get(s.path as usize) {
                        fail_path(group, &e.path, s.epoch, IoStatus::Timeout, now, cfg.probe_ticks);
                    }
                }
            }
        }
        // Channels to paths that left the group, once their IO is answered.
        for entry in self.paths.iter_mut() {
            if matches!(entry, Some(e) if e.removed && !e.probing && e.ch.in_flight() == 0) {
                *entry = None;
            }
        }
    }
}

/// Fail `path` because an IO sent at `epoch` ended with `st`; report it when this did it.
fn fail_path(group: &Group, path: &Path, epoch: u32, st: IoStatus, now: u64, probe_ticks: u64) {
    if let Some(s) = path.refresh_ana() {
        group.emit(&path.name, PathEventKind::AnaChanged(s));
    }
    if path.fail(epoch, now, probe_ticks) {
        group.emit(&path.name, PathEventKind::Failed(st));
    }
}

/// A probe read answered.
fn on_probe(group: &Group, path: &Path, st: IoStatus, now: u64, probe_ticks: u64) {
    if !st.is_ok() {
        path.probe_failed(now, probe_ticks);
        return;
    }
    if let Some(s) = path.refresh_ana() {
        group.emit(&path.name, PathEventKind::AnaChanged(s));
    }
    if path.restore() {
        group.emit(&path.name, PathEventKind::Restored);
    }
}

impl IoChannel for MpChannel {
    #[inline]
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.refresh();
        let Some(idx) = self.free.pop() else { return Err(QueueFull) };
        let now = clock::ticks();
        if let Some(s) = self.slots.get_mut(idx as usize) {
            s.io = *io;
            s.state = SlotState::Queued;
        }
        match self.dispatch(idx, now) {
            Dispatch::Sent => Ok(()),
            Dispatch::Busy => {
                self.release(idx);
                Err(QueueFull)
            }
            Dispatch::NoPath => {
                self.park(idx, now);
                Ok(())
            }
        }
    }

    #[inline]
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        self.refresh();
        let mut n = self.poll_paths(done);
        let now = clock::ticks();
        if now >= self.next_tick {
            self.housekeeping(now);
        }
        if !self.redrive.is_empty() || !self.waiting.is_empty() {
            n += self.drive_queues(now, done);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.depth - self.free.len()
    }
}

impl Drop for MpChannel {
    fn drop(&mut self) {
        // Wait for every path to give the callers' buffers back; completions go nowhere now,
        // but the shared counters and probe states are settled.
        let t0 = Instant::now();
        let probe_ticks = self.cfg.probe_ticks;
        let bs = self.bs;
        loop {
            let mut busy = false;
            for e in self.paths.iter_mut().flatten() {
                if e.ch.in_flight() == 0 {
                    continue;
                }
                busy = true;
                let ChanPath { ch, path, probing, outstanding, outstanding_bytes, .. } = e;
                let slots = &self.slots;
                ch.poll(&mut |tag, st| {
                    if tag & PROBE_TAG != 0 {
                        *probing = false;
                        // Whatever the answer, another channel probes again: at once after a
                        // success, after the interval otherwise.
                        path.probe_failed(clock::ticks(), if st.is_ok() { 0 } else { probe_ticks });
                        return;
                    }
                    let bytes = slots.get(tag as usize).map_or(0, |s| {
                        if s.state == SlotState::FanOut {
                            0
                        } else {
                            data_bytes(&s.io, bs)
                        }
                    });
                    path.in_flight.fetch_sub(1, Relaxed);
                    path.in_flight_bytes.fetch_sub(bytes, Relaxed);
                    *outstanding = outstanding.saturating_sub(1);
                    *outstanding_bytes = outstanding_bytes.saturating_sub(bytes);
                });
            }
            if !busy || t0.elapsed() > DROP_DRAIN {
                break;
            }
            std::thread::yield_now();
        }
        for e in self.paths.iter().flatten() {
            e.path.in_flight.fetch_sub(e.outstanding, Relaxed);
            e.path.in_flight_bytes.fetch_sub(e.outstanding_bytes, Relaxed);
            if e.probing {
                e.path.probe_failed(clock::ticks(), 0);
            }
        }
    }
}
