//! One fio job's engine state: its devices, its IO path, the completions reaped by the last
//! `getevents`, and the IO memory fio carves its buffers from.
//!
//! Two IO paths ([`Mode`]):
//! - **inline** (default): the job's thread owns one bdev channel per open device, submits to
//!   it in `queue`, rings the doorbells in `commit` and polls it in `getevents`:
//!   run-to-completion on fio's own thread, no hand-off to another core;
//! - **reactor**: requests go through an xbdev [`IoQueue`] to a reactor core, which owns the
//!   channels; `getevents` polls the queue's completion ring.
//!
//! Everything here runs on the job's own thread (fio calls one job's hooks from one thread),
//! so nothing is locked on the IO path.

use crate::error::EngineError;
use crate::instances::{self, Lease};
use crate::spec::{JobSpec, Mode};
use bdev::{BdevChannel, Desc, DmaBuf, IoRequest, IoStatus, IoType, IoVec, IoVecs};
use reactor::IdlePolicy;
use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};
use xbdev::{Handle, IoQueue, Xbdev};

/// An IO operation as the shim names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Read into the buffer.
    Read = 0,
    /// Write from the buffer.
    Write = 1,
    /// fsync / fdatasync / sync_file_range: a device flush.
    Flush = 2,
    /// trim: unmap the range.
    Unmap = 3,
}

impl Op {
    /// Decode the shim's operation code.
    pub fn from_code(c: u8) -> Result<Op, EngineError> {
        match c {
            0 => Ok(Op::Read),
            1 => Ok(Op::Write),
            2 => Ok(Op::Flush),
            3 => Ok(Op::Unmap),
            other => Err(EngineError::BadOp(other)),
        }
    }

    /// The bdev IO type.
    pub fn io_type(self) -> IoType {
        match self {
            Op::Read => IoType::Read,
            Op::Write => IoType::Write,
            Op::Flush => IoType::Flush,
            Op::Unmap => IoType::Unmap,
        }
    }

    /// Whether the operation moves data through a buffer.
    pub fn has_data(self) -> bool {
        matches!(self, Op::Read | Op::Write)
    }
}

/// What `queue` did with a request.
#[derive(Debug)]
pub enum QueueOutcome {
    /// Queued; it completes through `getevents`.
    Queued,
    /// No room now: fio should commit and reap, then retry.
    Busy,
    /// Refused; fio completes it with this error.
    Failed(EngineError),
}

/// Longest single wait of one reactor-queue poll inside `getevents`.
const WAIT_SLICE: Duration = Duration::from_millis(500);
/// How long `cleanup` waits for in-flight IO before giving up on it.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Longest sleep on one device while others have IO in flight too.
const MULTI_WAIT: Duration = Duration::from_micros(200);
/// Inline polling checks the clock once per this many empty polls.
const CLOCK_EVERY: u32 = 64;
/// With the adaptive idle policy, how long an inline `getevents` spins on an idle device
/// before sleeping in the device's wait (with `poll` it never sleeps).
const INLINE_SPIN: Duration = Duration::from_micros(20);

/// A far-away instant (spin "forever").
fn d_far(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

/// A device opened for the inline path.
struct InlineFile {
    ch: BdevChannel,
    /// log2 of the block size (a power of two).
    block_shift: u32,
    size: u64,
    name: String,
    // Dropped after the channel: closing the descriptor releases the device.
    _desc: Desc,
}

/// The job's IO path and its open devices.
enum Path {
    Inline { files: Vec<Option<InlineFile>>, ready: VecDeque<(u64, IoStatus)> },
    Reactor { queue: Option<IoQueue>, files: Vec<Option<Handle>> },
}

/// Check a byte range against a device of `1 << shift`-byte blocks:
/// `(offset_blocks, num_blocks)`.
#[inline]
fn to_blocks(name: &str, shift: u32, size: u64, op: Op, offset: u64, len: u64) -> Result<(u64, u64), EngineError> {
    let mask = (1u64 << shift) - 1;
    if (offset | len) & mask == 0 && len != 0 && offset.checked_add(len).is_some_and(|end| end <= size) {
        return Ok((offset >> shift, len >> shift));
    }
    let bs = 1u64 << shift;
    let reason = if offset & mask != 0 {
        format!("offset is not a multiple of the block size {bs}")
    } else if len & mask != 0 || len == 0 {
        format!("length is not a non-zero multiple of the block size {bs}")
    } else {
        format!("range ends past the device's {size} bytes")
    };
    Err(EngineError::Range { op: op.io_type().name(), device: name.to_string(), offset, len, reason })
}

fn first_free<T>(v: &mut Vec<Option<T>>, item: T) -> u32 {
    match v.iter().position(Option::is_none) {
        Some(i) => {
            v[i] = Some(item);
            i as u32
        }
        None => {
            v.push(Some(item));
            (v.len() - 1) as u32
        }
    }
}

/// One fio job.
pub struct Job {
    path: Path,
    depth: usize,
    events: Vec<(u64, IoStatus)>,
    iomem: Option<DmaBuf>,
    last_error: CString,
    /// How long `getevents` spins on an idle device before sleeping in its wait.
    spin: Duration,
    lease: Lease,
}

impl Job {
    /// Start (or join) this process's instance for `spec` and set up the job's IO path for
    /// `iodepth` requests in flight. `start` creates an instance when none runs yet; `keep`
    /// (fio's thread mode) keeps the instance after the last job (see [`instances`]).
    pub fn new(
        spec: &JobSpec,
        iodepth: usize,
        keep: bool,
        start: impl FnOnce(&xbdev::Config) -> Result<Xbdev, xbdev::XbdevError>,
    ) -> Result<Job, EngineError> {
        let lease = instances::acquire(spec, keep, start)?;
        let depth = iodepth.max(1);
        let path = match spec.mode {
            Mode::Inline => Path::Inline { files: Vec::new(), ready: VecDeque::with_capacity(depth) },
            Mode::Reactor => Path::Reactor {
                queue: Some(lease.xbdev().io_queue(depth).map_err(|e| EngineError::Queue(Box::new(e)))?),
                files: Vec::new(),
            },
        };
        Ok(Job {
            path,
            depth,
            events: Vec::with_capacity(depth + 1),
            iomem: None,
            last_error: CString::default(),
            spin: match lease.idle() {
                IdlePolicy::AlwaysPoll => Duration::MAX,
                IdlePolicy::Adaptive { .. } => std::env::var("XBDEV_FIO_SPIN_US")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_micros)
                    .unwrap_or(INLINE_SPIN),
            },
            lease,
        })
    }

    /// The instance this job uses.
    pub fn xbdev(&self) -> &Xbdev {
        self.lease.xbdev()
    }

    /// The job's IO path.
    pub fn mode(&self) -> Mode {
        match self.path {
            Path::Inline { .. } => Mode::Inline,
            Path::Reactor { .. } => Mode::Reactor,
        }
    }

    /// Open device `name`; returns the file id and the size in bytes.
    pub fn open(&mut self, name: &str, writable: bool) -> Result<(u32, u64), EngineError> {
        let open_err =
            |source: xbdev::XbdevError| EngineError::Open { name: name.to_string(), source: Box::new(source) };
        match &mut self.path {
            Path::Inline { files, .. } => {
                let desc = self.lease.xbdev().registry().open(name, writable).map_err(|e| {
                    open_err(match e {
                        bdev::BdevError::NotFound(n) => xbdev::XbdevError::UnknownDevice(n),
                        e => xbdev::XbdevError::Bdev(e),
                    })
                })?;
                // Room for fio's requests plus its verify and sync requests.
                let mut ch =
                    desc.channel_with_depth(self.depth + 8).map_err(|e| open_err(xbdev::XbdevError::Bdev(e)))?;
                // fio measures latency itself; the channel's clock reads would only add cost.
                ch.set_measure_latency(false);
                let info = desc.info();
                let size = info.size_bytes();
                let block_shift = info.block_size.max(1).trailing_zeros();
                let f = InlineFile { ch, block_shift, size, name: name.to_string(), _desc: desc };
                Ok((first_free(files, f), size))
            }
            Path::Reactor { files, .. } => {
                let h = self.lease.xbdev().open(name, writable).map_err(open_err)?;
                let size = h.size_bytes();
                Ok((first_free(files, h), size))
            }
        }
    }

    /// Close a file id (fio closes a file only when none of its IO is in flight).
    pub fn close(&mut self, id: u32) -> Result<(), EngineError> {
        match &mut self.path {
            Path::Inline { files, ready } => {
                let mut f = files.get_mut(id as usize).and_then(Option::take).ok_or(EngineError::BadFile(id))?;
                if f.ch.in_flight() > 0 && !f.ch.drain(DRAIN_LIMIT, &mut |t, s| ready.push_back((t, s))) {
                    log::error!("{}: IO still in flight at close after {DRAIN_LIMIT:?}", f.name);
                    // The device may still access fio's buffers: never release the channel.
                    std::mem::forget(f);
                }
                Ok(())
            }
            Path::Reactor { files, .. } => {
                let h = files.get_mut(id as usize).and_then(Option::take).ok_or(EngineError::BadFile(id))?;
                h.close().map_err(|source| EngineError::Open { name: h.name().to_string(), source: Box::new(source) })
            }
        }
    }

    /// Whether `addr..addr+len` lies inside this job's IO memory.
    pub fn in_iomem(&self, addr: usize, len: u64) -> bool {
        let Some(m) = &self.iomem else { return false };
        let start = m.as_ptr() as usize;
        let Ok(len) = usize::try_from(len) else { return false };
        addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + m.len())
    }

    /// Queue one request. `buf` is the data segment of reads and writes, checked by the
    /// caller to lie in DMA-capable memory that stays untouched until the completion.
    #[inline]
    pub fn queue(&mut self, file: u32, op: Op, offset: u64, len: u64, buf: Option<IoVec>, user: u64) -> QueueOutcome {
        match &mut self.path {
            Path::Inline { files, .. } => {
                let Some(Some(f)) = files.get_mut(file as usize) else {
                    return QueueOutcome::Failed(EngineError::BadFile(file));
                };
                let io = match op {
                    Op::Flush => IoRequest::no_data(IoType::Flush, 0, 0, user),
                    _ => {
                        let (ob, nb) = match to_blocks(&f.name, f.block_shift, f.size, op, offset, len) {
                            Ok(x) => x,
                            Err(e) => return QueueOutcome::Failed(e),
                        };
                        match (op, buf) {
                            (Op::Unmap, _) => IoRequest::no_data(IoType::Unmap, ob, nb, user),
                            (_, Some(v)) => IoRequest {
                                io_type: op.io_type(),
                                offset_blocks: ob,
                                num_blocks: nb,
                                iovs: IoVecs::single(v),
                                tag: user,
                            },
                            (_, None) => return QueueOutcome::Failed(EngineError::ForeignBuffer { addr: 0, len }),
                        }
                    }
                };
                match f.ch.submit(&io) {
                    Ok(()) => QueueOutcome::Queued,
                    Err(_) => QueueOutcome::Busy,
                }
            }
            Path::Reactor { queue, files } => {
                let (Some(Some(h)), Some(q)) = (files.get(file as usize), queue.as_mut()) else {
                    return QueueOutcome::Failed(EngineError::BadFile(file));
                };
                if q.in_flight() >= q.depth() {
                    return QueueOutcome::Busy;
                }
                let (offset, len) = if op == Op::Flush { (0, 0) } else { (offset, len) };
                match q.queue_io(h, op.io_type(), offset, len, if op.has_data() { buf } else { None }, user) {
                    Ok(()) => QueueOutcome::Queued,
                    Err(xbdev::XbdevError::QueueFull(_)) => QueueOutcome::Busy,
                    Err(source) => QueueOutcome::Failed(EngineError::Io {
                        op: op.io_type().name(),
                        offset,
                        len,
                        source: Box::new(source),
                    }),
                }
            }
        }
    }

    /// Push queued requests to the devices (inline: ring the doorbells and keep whatever
    /// completed for the next `getevents`; reactor: hand the batch to the reactor).
    #[inline]
    pub fn commit(&mut self) {
        match &mut self.path {
            Path::Inline { files, ready } => {
                for f in files.iter_mut().flatten() {
                    f.ch.poll(&mut |t, s| ready.push_back((t, s)));
                }
            }
            Path::Reactor { queue, .. } => {
                if let Some(q) = queue.as_mut() {
                    q.submit();
                }
            }
        }
    }

    /// Requests queued or in flight (completed but not yet returned by `getevents` included).
    pub fn in_flight(&self) -> usize {
        match &self.path {
            Path::Inline { files, ready } => {
                ready.len() + files.iter().flatten().map(|f| f.ch.in_flight()).sum::<usize>()
            }
            Path::Reactor { queue, .. } => queue.as_ref().map_or(0, IoQueue::in_flight),
        }
    }

    /// Reap between `min` and `max` completions, waiting at most `timeout` (forever when
    /// `None`) for `min` of them; returns how many are ready for [`Job::event`]. Returns early
    /// when nothing is in flight, so fio never waits for IO that does not exist.
    #[inline]
    pub fn getevents(&mut self, min: usize, max: usize, timeout: Option<Duration>) -> usize {
        self.events.clear();
        let max = max.max(min).max(1);
        let events = &mut self.events;
        match &mut self.path {
            Path::Inline { files, ready } => {
                while events.len() < max {
                    match ready.pop_front() {
                        Some(e) => events.push(e),
                        None => break,
                    }
                }
                let spin = self.spin;
                let mut deadline: Option<Instant> = None;
                let mut spin_until: Option<Instant> = None;
                let mut empty_polls = 0u32;
                while events.len() < max {
                    let before = events.len();
                    let mut in_flight = 0;
                    for f in files.iter_mut().flatten() {
                        f.ch.poll(&mut |t, s| {
                            if events.len() < max {
                                events.push((t, s));
                            } else {
                                ready.push_back((t, s));
                            }
                        });
                        in_flight += f.ch.in_flight();
                    }
                    if events.len() >= min || in_flight == 0 {
                        break;
                    }
                    if events.len() != before {
                        empty_polls = 0;
                        spin_until = None;
                        continue;
                    }
                    empty_polls += 1;
                    if !empty_polls.is_multiple_of(CLOCK_EVERY) {
                        std::hint::spin_loop();
                        continue;
                    }
                    let now = Instant::now();
                    let left = match timeout {
                        Some(t) => {
                            let d = *deadline.get_or_insert(now + t);
                            if now >= d {
                                break;
                            }
                            d - now
                        }
                        None => WAIT_SLICE,
                    };
                    // Spin a little (completions of fast devices arrive within microseconds),
                    // then sleep in the device's own wait when it has one: a thread that spins
                    // on a loaded machine loses the CPU to its neighbours.
                    if now < *spin_until.get_or_insert_with(|| now.checked_add(spin).unwrap_or(d_far(now))) {
                        continue;
                    }
                    // With IO on several devices, sleep on one only briefly.
                    let busy = files.iter().flatten().filter(|f| f.ch.in_flight() > 0).count();
                    let slice = if busy > 1 { MULTI_WAIT } else { WAIT_SLICE };
                    if let Some(f) = files.iter_mut().flatten().find(|f| f.ch.in_flight() > 0) {
                        f.ch.wait(left.min(slice));
                    }
                }
            }
            Path::Reactor { queue, .. } => {
                let Some(q) = queue.as_mut() else { return 0 };
                let deadline = timeout.map(|t| Instant::now() + t);
                loop {
                    let wait = if events.len() >= min {
                        Duration::ZERO
                    } else {
                        match deadline {
                            Some(d) => d.saturating_duration_since(Instant::now()),
                            None => WAIT_SLICE,
                        }
                    };
                    q.poll(max - events.len(), wait, &mut |c| events.push((c.user, c.status)));
                    if events.len() >= min || events.len() >= max || q.in_flight() == 0 {
                        break;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
            }
        }
        self.events.len()
    }

    /// Completion `i` of the last `getevents`: the user value and the status.
    #[inline]
    pub fn event(&self, i: usize) -> Option<(u64, IoStatus)> {
        self.events.get(i).copied()
    }

    /// Allocate the job's IO memory (fio's `iomem_alloc`); returns its start address.
    pub fn iomem_alloc(&mut self, len: usize) -> Result<*mut u8, EngineError> {
        self.iomem_free();
        let b = DmaBuf::alloc(len).map_err(|source| EngineError::IoMem { len, source })?;
        let p = b.as_ptr();
        self.iomem = Some(b);
        Ok(p)
    }

    /// A segment of the IO memory, `[off, off+len)` (for callers other than fio).
    pub fn iomem_iovec(&mut self, off: usize, len: usize) -> Option<IoVec> {
        self.iomem.as_mut()?.iovec_range(off, len)
    }

    /// The IO memory's bytes (for callers other than fio; do not touch buffers of IO in
    /// flight).
    pub fn iomem_bytes(&mut self) -> Option<&mut [u8]> {
        self.iomem.as_mut().map(DmaBuf::as_mut_slice)
    }

    /// Release the IO memory (fio's `iomem_free`). Waits for in-flight IO first, since the
    /// devices may still access the buffers; keeps the memory if that IO never completes.
    pub fn iomem_free(&mut self) {
        if self.drain() {
            self.iomem = None;
        } else if let Some(m) = self.iomem.take() {
            std::mem::forget(m);
        }
    }

    /// Wait (bounded) for every in-flight request; false when some never completed.
    pub fn drain(&mut self) -> bool {
        let t0 = Instant::now();
        match &mut self.path {
            Path::Inline { files, ready } => {
                for f in files.iter_mut().flatten() {
                    let left = DRAIN_LIMIT.saturating_sub(t0.elapsed());
                    f.ch.drain(left, &mut |t, s| ready.push_back((t, s)));
                }
                ready.clear();
            }
            Path::Reactor { queue, .. } => {
                if let Some(q) = queue.as_mut() {
                    while q.in_flight() > 0 && t0.elapsed() < DRAIN_LIMIT {
                        q.poll(usize::MAX, WAIT_SLICE, &mut |_| {});
                    }
                }
            }
        }
        let left = self.in_flight();
        if left > 0 {
            log::error!("{left} requests still in flight after {DRAIN_LIMIT:?}; giving up on them");
        }
        left == 0
    }

    /// Remember an error message for the shim to print.
    pub fn set_last_error(&mut self, e: &EngineError) {
        self.last_error = CString::new(e.chain().replace('\0', " ")).unwrap_or_default();
    }

    /// The last error message.
    pub fn last_error(&self) -> &str {
        self.last_error.to_str().unwrap_or("")
    }

    /// The last error message as a C string.
    pub fn last_error_cstr(&self) -> &CStr {
        &self.last_error
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.drain() {
            // The devices may still write into these buffers and answer through these
            // channels: never hand them back.
            if let Some(m) = self.iomem.take() {
                std::mem::forget(m);
            }
            let path = std::mem::replace(&mut self.path, Path::Inline { files: Vec::new(), ready: VecDeque::new() });
            std::mem::forget(path);
        }
        match &mut self.path {
            Path::Inline { files, .. } => files.clear(),
            Path::Reactor { queue, files } => {
                *queue = None;
                for h in files.drain(..).flatten() {
                    if let Err(e) = h.close() {
                        log::warn!("closing {}: {e}", h.name());
                    }
                }
            }
        }
        self.iomem = None;
        // `lease` drops last: the last job of the instance stops it.
    }
}
