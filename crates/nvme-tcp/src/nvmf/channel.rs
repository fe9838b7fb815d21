//! The per-reactor channel of an nvmf bdev: one I/O queue on its own TCP
//! connection, driven from `poll()` on the reactor thread. After a loss it
//! reconnects in a helper thread (connects block), backing off
//! exponentially; commands outstanding past the IO timeout are aborted and,
//! failing that, their connection is reset.

use super::{io_status, Shared};
use crate::dma::IoBufs;
use crate::host::{DataDir, HostBuffers};
use crate::initiator::{connect_io_queue, Connection, InitError};
use bdev::{IoChannel, IoRequest, IoStatus, IoType, QueueFull};
use nvme_spec::command::DsmRange;
use nvme_spec::command::{Command, IoCommand};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use zerocopy::IntoBytes;

/// Ranges a single Unmap may need (each covers up to 2^32 - 1 blocks).
const MAX_DSM_RANGES: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Slot {
    bufs: IoBufs,
    dsm: [u8; 16 * MAX_DSM_RANGES],
    dsm_len: u32,
}

impl Default for Slot {
    fn default() -> Self {
        Self { bufs: IoBufs::default(), dsm: [0; 16 * MAX_DSM_RANGES], dsm_len: 0 }
    }
}

struct Bufs<'a> {
    slots: &'a mut [Slot],
}

impl HostBuffers for Bufs<'_> {
    fn read_dest(&mut self, tag: u64, at: u32) -> Option<&mut [u8]> {
        self.slots.get_mut(tag as usize)?.bufs.seg_mut(u64::from(at))
    }

    fn write_src(&self, tag: u64, at: u32) -> Option<&[u8]> {
        let s = self.slots.get(tag as usize)?;
        if s.dsm_len > 0 {
            return s.dsm.get(at as usize..s.dsm_len as usize).filter(|b| !b.is_empty());
        }
        s.bufs.seg(u64::from(at))
    }
}

enum Link {
    Up(Box<Connection>),
    Down {
        since: Instant,
        next_try: Instant,
        attempt: Option<Receiver<Result<Connection, InitError>>>,
        /// Failed reconnect attempts so far.
        failures: u32,
    },
}

/// When a command was submitted and when its Abort was asked for (clock
/// ticks; 0: not in flight / not asked).
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    started: u64,
    abort_at: u64,
}

/// IO timeout settings in clock ticks.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    /// Abort a command outstanding this long (0: never).
    io: u64,
    /// Reset the connection when an aborted command is still outstanding
    /// this long after the Abort was asked for.
    abort_wait: u64,
    /// How often outstanding commands are checked.
    period: u64,
}

/// One I/O queue used by one reactor.
pub(crate) struct NvmfChannel {
    shared: Arc<Shared>,
    /// The bdev was unregistered.
    removed: Arc<AtomicBool>,
    nsid: u32,
    bs: u64,
    qid: u16,
    link: Link,
    slots: Box<[Slot]>,
    /// The caller's tag of the IO in each slot.
    tags: Box<[u64]>,
    /// The command ID of the IO in each slot.
    cids: Box<[u16]>,
    timing: Box<[Timing]>,
    timeouts: Timeouts,
    next_check: u64,
    free: Vec<u16>,
    done: VecDeque<(u64, IoStatus)>,
    held: VecDeque<(IoRequest, Instant)>,
}

impl NvmfChannel {
    pub(crate) fn connect(
        shared: Arc<Shared>,
        removed: Arc<AtomicBool>,
        nsid: u32,
        bs: u32,
        qid: u16,
    ) -> Result<Self, InitError> {
        let conn = connect_queue(&shared, qid)?;
        let depth = usize::from(shared.depth);
        let ticks = |d: std::time::Duration| bdev::clock::ns_to_ticks(d.as_nanos().min(u128::from(u64::MAX)) as u64);
        let io = shared.opts.io_timeout;
        let timeouts = Timeouts {
            io: ticks(io),
            abort_wait: ticks(io.min(shared.opts.admin_timeout)).max(1),
            period: ticks((io / 8).clamp(std::time::Duration::from_millis(1), std::time::Duration::from_millis(100))),
        };
        Ok(Self {
            removed,
            nsid,
            bs: u64::from(bs),
            qid,
            link: Link::Up(Box::new(conn)),
            slots: vec![Slot::default(); depth].into_boxed_slice(),
            tags: vec![0; depth].into_boxed_slice(),
            cids: vec![0; depth].into_boxed_slice(),
            timing: vec![Timing::default(); depth].into_boxed_slice(),
            timeouts,
            next_check: 0,
            free: (0..shared.depth).rev().collect(),
            done: VecDeque::with_capacity(depth * 2),
            held: VecDeque::with_capacity(depth),
            shared,
        })
    }

    fn dead(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
            || self.shared.stopped.load(Ordering::Acquire)
            || self.removed.load(Ordering::Acquire)
    }

    /// Builds the command for `io` of namespace `nsid` (block size `bs`),
    /// Unmap ranges into `slot`; `None` if it cannot be expressed.
    fn command(nsid: u32, bs: u64, io: &IoRequest, slot: &mut Slot) -> Option<(IoCommand, DataDir)> {
        let slba = io.offset_blocks;
        let nlb = || u16::try_from(io.num_blocks.checked_sub(1)?).ok();
        let bytes = || u32::try_from(io.num_blocks.checked_mul(bs)?).ok();
        slot.dsm_len = 0;
        Some(match io.io_type {
            IoType::Read => {
                (IoCommand::Read { nsid, slba, nlb: nlb()?, fua: false, lr: false }, DataDir::FromController(bytes()?))
            }
            IoType::Write => {
                (IoCommand::Write { nsid, slba, nlb: nlb()?, fua: false, lr: false }, DataDir::ToController(bytes()?))
            }
            IoType::Flush => (IoCommand::Flush { nsid }, DataDir::None),
            IoType::WriteZeroes => {
                (IoCommand::WriteZeroes { nsid, slba, nlb: nlb()?, deac: false, fua: false, lr: false }, DataDir::None)
            }
            IoType::Unmap => {
                let mut left = io.num_blocks;
                let mut lba = slba;
                let mut n = 0usize;
                while left > 0 {
                    let chunk = left.min(u64::from(u32::MAX));
                    let r = DsmRange::new(lba, chunk as u32);
                    slot.dsm.get_mut(n * 16..n * 16 + 16)?.copy_from_slice(r.as_bytes());
                    n += 1;
                    left -= chunk;
                    lba += chunk;
                }
                if n == 0 {
                    return None;
                }
                slot.dsm_len = (n * 16) as u32;
                (
                    IoCommand::DatasetManagement { nsid, nr: (n - 1) as u8, ad: true, idw: false, idr: false },
                    DataDir::ToController(slot.dsm_len),
                )
            }
            IoType::Reset => return None,
        })
    }

    /// Submits on the live connection; `Err` if the connection failed.
    fn submit_live(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        let Some(idx) = self.free.pop() else { return Err(QueueFull) };
        // The slot is filled in place (its Unmap range buffer is not
        // copied for every IO); a free slot's contents do not matter.
        let built = match self.slots.get_mut(usize::from(idx)) {
            Some(slot) => {
                slot.bufs = IoBufs::new(io.iovs);
                Self::command(self.nsid, self.bs, io, slot)
            }
            None => None,
        };
        let Some((cmd, dir)) = built else {
            self.free.push(idx);
            self.done.push_back((io.tag, IoStatus::Invalid));
            return Ok(());
        };
        let Link::Up(conn) = &mut self.link else {
            self.free.push(idx);
            return Err(QueueFull);
        };
        if let Some(t) = self.tags.get_mut(usize::from(idx)) {
            *t = io.tag;
        }
        match conn.queue_mut().submit(Command::Io(cmd).to_sqe(0), dir, u64::from(idx)) {
            Ok(cid) => {
                if let Some(c) = self.cids.get_mut(usize::from(idx)) {
                    *c = cid;
                }
                if self.timeouts.io > 0 {
                    if let Some(t) = self.timing.get_mut(usize::from(idx)) {
                        *t = Timing { started: bdev::clock::ticks(), abort_at: 0 };
                    }
                }
                Ok(())
            }
            Err(crate::host::SubmitError::Full) => {
                self.free.push(idx);
                Err(QueueFull)
            }
            Err(_) => {
                // The queue failed: answer this IO as a path error and let
                // poll() tear the connection down.
                self.free.push(idx);
                self.done.push_back((io.tag, IoStatus::PathError));
                Ok(())
            }
        }
    }

    /// Tears the connection down: commands whose Abort was asked for
    /// (they timed out) complete with `Timeout`, the others in flight with
    /// `PathError`; reconnection starts after the first backoff delay.
    fn link_lost(&mut self, why: &dyn std::fmt::Debug) {
        log::warn!("nvmf {} qid {}: connection lost: {why:?}", self.shared.name, self.qid);
        if let Link::Up(conn) = &mut self.link {
            conn.flush_termination(&Bufs { slots: &mut self.slots });
            let Self { tags, done, free, timing, .. } = self;
            conn.queue_mut().fail_all(&mut |idx| {
                let i = idx as usize;
                if let Some(&t) = tags.get(i) {
                    let timed_out = timing.get(i).is_some_and(|t| t.abort_at != 0);
                    done.push_back((t, if timed_out { IoStatus::Timeout } else { IoStatus::PathError }));
                    free.push(idx as u16);
                }
            });
            conn.close();
        }
        self.timing.fill(Timing::default());
        self.shared.check_admin_soon();
        let now = Instant::now();
        self.link = Link::Down { since: now, next_try: now + self.shared.opts.backoff(0), attempt: None, failures: 0 };
    }

    /// Asks for an Abort of commands outstanding past the IO timeout and
    /// resets the connection when an aborted command is still outstanding
    /// after the abort wait.
    fn check_timeouts(&mut self, now: u64) {
        let to = self.timeouts;
        let mut reset = false;
        for (i, t) in self.timing.iter_mut().enumerate() {
            if t.started == 0 {
                continue;
            }
            if t.abort_at == 0 {
                if now.saturating_sub(t.started) > to.io {
                    t.abort_at = now;
                    let cid = self.cids.get(i).copied().unwrap_or(0);
                    log::warn!(
                        "nvmf {} qid {}: command {cid} timed out after {:?}, aborting",
                        self.shared.name,
                        self.qid,
                        self.shared.opts.io_timeout
                    );
                    self.shared.request_abort(self.qid, cid);
                }
            } else if now.saturating_sub(t.abort_at) > to.abort_wait {
                reset = true;
            }
        }
        if reset {
            self.link_lost(&"io timeout: command still outstanding after abort");
        }
    }

    /// Drives reconnection; returns true when the link came back up.
    fn poll_down(&mut self) -> bool {
        let dead = self.dead();
        let Link::Down { since, next_try, attempt, failures } = &mut self.link else { return false };
        let now = Instant::now();
        if let Some(rx) = attempt {
            match rx.try_recv() {
                Ok(Ok(conn)) => {
                    log::info!("nvmf {} qid {}: reconnected", self.shared.name, self.qid);
                    self.link = Link::Up(Box::new(conn));
                    return true;
                }
                Ok(Err(e)) => {
                    *failures = failures.saturating_add(1);
                    let wait = self.shared.opts.backoff(*failures);
                    log::warn!(
                        "nvmf {} qid {}: reconnect failed ({e}); next attempt in {wait:?}",
                        self.shared.name,
                        self.qid
                    );
                    *attempt = None;
                    *next_try = now + wait;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    *failures = failures.saturating_add(1);
                    *attempt = None;
                    *next_try = now + self.shared.opts.backoff(*failures);
                }
            }
            return false;
        }
        if dead || now.duration_since(*since) > self.shared.opts.ctrl_loss_timeout {
            return false;
        }
        if now >= *next_try {
            let (tx, rx) = mpsc::channel();
            let shared = self.shared.clone();
            let qid = self.qid;
            let spawned = std::thread::Builder::new().name(format!("nvmf-rc-{qid}")).spawn(move || {
                let _ = tx.send(connect_queue(&shared, qid));
            });
            match spawned {
                Ok(_) => *attempt = Some(rx),
                Err(_) => *next_try = now + self.shared.opts.backoff(*failures),
            }
        }
        false
    }

    /// Fails held IO that waited past the fast-IO-fail timeout (or all of
    /// it when the controller is gone).
    fn expire_held(&mut self) {
        let limit = self.shared.opts.fast_io_fail_timeout;
        let dead = self.dead();
        while let Some((io, t)) = self.held.front() {
            if !dead && t.elapsed() < limit {
                break;
            }
            self.done.push_back((io.tag, IoStatus::PathError));
            self.held.pop_front();
        }
    }
}

/// Connects I/O queue `qid`, re-associating first if needed. A target still
/// tearing down the previous connection of the same queue ID answers
/// Command Sequence Error; that is retried for a few seconds.
fn connect_queue(shared: &Shared, qid: u16) -> Result<Connection, InitError> {
    use nvme_spec::status::{GenericStatus, StatusCode};
    let t0 = Instant::now();
    loop {
        let (cntlid, _) = shared.ensure_admin()?;
        match connect_io_queue(&shared.opts, cntlid, qid, shared.depth, shared.incapsule) {
            Err(InitError::Status { status, .. })
                if status.code == StatusCode::Generic(GenericStatus::CommandSequenceError)
                    && t0.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e @ (InitError::Controller(_) | InitError::Status { .. })) => {
                // Refused: the association may be gone with the admin
                // queue (e.g. the target restarted); have it checked.
                shared.check_admin_soon();
                return Err(e);
            }
            r => return r,
        }
    }
}

impl IoChannel for NvmfChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if self.in_flight() >= self.slots.len() {
            return Err(QueueFull);
        }
        if self.dead() {
            self.done.push_back((io.tag, IoStatus::PathError));
            return Ok(());
        }
        match self.link {
            Link::Up(_) if self.held.is_empty() => self.submit_live(io),
            _ => {
                if self.shared.opts.fast_io_fail_timeout.is_zero() {
                    self.done.push_back((io.tag, IoStatus::PathError));
                } else {
                    self.held.push_back((*io, Instant::now()));
                }
                Ok(())
            }
        }
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let mut err = None;
        if let Link::Up(conn) = &mut self.link {
            let Self { slots, tags, free, done: out, shared, timing, .. } = self;
            let mut completed = |idx: u64, cqe: nvme_spec::Cqe| {
                if let Some(t) = timing.get_mut(idx as usize) {
                    *t = Timing::default();
                }
                if let Some(&t) = tags.get(idx as usize) {
                    let st = cqe.status();
                    if matches!(
                        st.code,
                        nvme_spec::StatusCode::Path(
                            nvme_spec::status::PathStatus::AnaInaccessible
                                | nvme_spec::status::PathStatus::AnaTransition
                                | nvme_spec::status::PathStatus::AnaPersistentLoss
                        )
                    ) {
                        shared.ana_dirty.store(true, Ordering::Release);
                    }
                    out.push_back((t, io_status(st)));
                    free.push(idx as u16);
                }
            };
            if let Err(e) = conn.poll(&mut Bufs { slots }, &mut completed) {
                err = Some(e);
            }
        }
        if let Some(e) = err {
            self.link_lost(&e);
        }
        if self.timeouts.io > 0 && matches!(self.link, Link::Up(_)) {
            let now = bdev::clock::ticks();
            if now >= self.next_check {
                self.next_check = now + self.timeouts.period;
                self.check_timeouts(now);
            }
        }
        if self.dead() {
            if let Link::Up(_) = self.link {
                self.link_lost(&"controller detached or lost");
            }
        }
        if let Link::Down { .. } = self.link {
            self.poll_down();
        }
        // IO held while the link was down (or that found the new queue
        // full) goes out in order once the link is up.
        if let Link::Up(_) = self.link {
            while let Some((io, t)) = self.held.pop_front() {
                if self.submit_live(&io).is_err() {
                    self.held.push_front((io, t));
                    break;
                }
            }
        }
        self.expire_held();
        let mut n = 0;
        while let Some((tag, st)) = self.done.pop_front() {
            done(tag, st);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        (self.slots.len() - self.free.len()) + self.held.len() + self.done.len()
    }
}

impl Drop for NvmfChannel {
    fn drop(&mut self) {
        if let Link::Up(c) = &self.link {
            c.close();
        }
        self.shared.qids.lock().unwrap_or_else(|e| e.into_inner()).push_back(self.qid);
    }
}
