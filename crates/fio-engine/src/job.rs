//! One fio job's engine state: its IO queue, the devices it opened, the completions reaped by
//! the last `getevents`, and the IO memory fio carves its buffers from.
//!
//! Everything here runs on the job's own thread (fio calls an engine's hooks of one job from
//! one thread), so nothing is locked on the IO path; the queue's rings are the only thing
//! shared with the reactor.

use crate::error::EngineError;
use crate::instances::{self, Lease};
use crate::spec::JobSpec;
use bdev::{DmaBuf, IoStatus, IoType, IoVec};
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

    fn io_type(self) -> IoType {
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

/// Longest single wait inside one poll of `getevents` without a timeout.
const WAIT_SLICE: Duration = Duration::from_millis(500);
/// How long `cleanup` waits for in-flight IO before giving up on it.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// One fio job.
pub struct Job {
    queue: Option<IoQueue>,
    files: Vec<Option<Handle>>,
    events: Vec<(u64, IoStatus)>,
    iomem: Option<DmaBuf>,
    last_error: CString,
    lease: Lease,
}

impl Job {
    /// Start (or join) this process's instance for `spec` and create the job's queue of
    /// `iodepth` entries. `start` creates an instance when none runs yet.
    pub fn new(
        spec: &JobSpec,
        iodepth: usize,
        start: impl FnOnce(&xbdev::Config) -> Result<Xbdev, xbdev::XbdevError>,
    ) -> Result<Job, EngineError> {
        let lease = instances::acquire(spec, start)?;
        let depth = iodepth.max(1);
        let queue = lease.xbdev().io_queue(depth).map_err(EngineError::Queue)?;
        Ok(Job {
            queue: Some(queue),
            files: Vec::new(),
            events: Vec::with_capacity(depth + 1),
            iomem: None,
            last_error: CString::default(),
            lease,
        })
    }

    /// The instance this job uses.
    pub fn xbdev(&self) -> &Xbdev {
        self.lease.xbdev()
    }

    /// Open device `name`; returns the file id and the size in bytes.
    pub fn open(&mut self, name: &str, writable: bool) -> Result<(u32, u64), EngineError> {
        let h = self
            .lease
            .xbdev()
            .open(name, writable)
            .map_err(|source| EngineError::Open { name: name.to_string(), source })?;
        let size = h.size_bytes();
        let id = match self.files.iter().position(Option::is_none) {
            Some(i) => {
                self.files[i] = Some(h);
                i
            }
            None => {
                self.files.push(Some(h));
                self.files.len() - 1
            }
        };
        Ok((id as u32, size))
    }

    /// Close a file id (fio closes a file only when none of its IO is in flight).
    pub fn close(&mut self, id: u32) -> Result<(), EngineError> {
        let h = self.files.get_mut(id as usize).and_then(Option::take).ok_or(EngineError::BadFile(id))?;
        h.close().map_err(|source| EngineError::Open { name: h.name().to_string(), source })
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
    pub fn queue(&mut self, file: u32, op: Op, offset: u64, len: u64, buf: Option<IoVec>, user: u64) -> QueueOutcome {
        let Some(Some(h)) = self.files.get(file as usize) else {
            return QueueOutcome::Failed(EngineError::BadFile(file));
        };
        let Some(q) = self.queue.as_mut() else {
            return QueueOutcome::Failed(EngineError::BadFile(file));
        };
        if q.in_flight() >= q.depth() {
            return QueueOutcome::Busy;
        }
        let (offset, len) = if op.has_data() || op == Op::Unmap { (offset, len) } else { (0, 0) };
        match q.queue_io(h, op.io_type(), offset, len, if op.has_data() { buf } else { None }, user) {
            Ok(()) => QueueOutcome::Queued,
            Err(xbdev::XbdevError::QueueFull(_)) => QueueOutcome::Busy,
            Err(source) => QueueOutcome::Failed(EngineError::Io { op: op.io_type().name(), offset, len, source }),
        }
    }

    /// Hand queued requests to the reactor.
    pub fn commit(&mut self) -> usize {
        self.queue.as_mut().map_or(0, IoQueue::submit)
    }

    /// Requests queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.as_ref().map_or(0, IoQueue::in_flight)
    }

    /// Reap between `min` and `max` completions, waiting at most `timeout` (forever when
    /// `None`) for `min` of them; returns how many are ready for [`Job::event`]. Returns early
    /// when nothing is in flight, so fio never waits for IO that does not exist.
    pub fn getevents(&mut self, min: usize, max: usize, timeout: Option<Duration>) -> usize {
        self.events.clear();
        let Some(q) = self.queue.as_mut() else { return 0 };
        let max = max.max(min).max(1);
        let deadline = timeout.map(|t| Instant::now() + t);
        let events = &mut self.events;
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
        self.events.len()
    }

    /// Completion `i` of the last `getevents`: the user value and the status.
    pub fn event(&self, i: usize) -> Option<(u64, IoStatus)> {
        self.events.get(i).copied()
    }

    /// Allocate the job's IO memory (fio's `iomem_alloc`); returns its start address.
    pub fn iomem_alloc(&mut self, len: usize) -> Result<*mut u8, EngineError> {
        self.iomem = None;
        let b = DmaBuf::alloc(len).map_err(|source| EngineError::IoMem { len, source })?;
        let p = b.as_ptr();
        self.iomem = Some(b);
        Ok(p)
    }

    /// Release the IO memory (fio's `iomem_free`). Waits for in-flight IO first, since the
    /// devices may still access the buffers.
    pub fn iomem_free(&mut self) {
        self.drain();
        self.iomem = None;
    }

    /// Wait (bounded) for every in-flight request.
    pub fn drain(&mut self) {
        let Some(q) = self.queue.as_mut() else { return };
        let t0 = Instant::now();
        while q.in_flight() > 0 && t0.elapsed() < DRAIN_LIMIT {
            q.poll(usize::MAX, WAIT_SLICE, &mut |_| {});
        }
        if q.in_flight() > 0 {
            log::error!("{} requests still in flight after {:?}; giving up on them", q.in_flight(), DRAIN_LIMIT);
        }
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
        self.drain();
        if self.queue.as_ref().is_some_and(|q| q.in_flight() > 0) {
            // The devices may still write into these buffers: never hand them back.
            if let Some(m) = self.iomem.take() {
                std::mem::forget(m);
            }
            if let Some(q) = self.queue.take() {
                std::mem::forget(q);
            }
        }
        self.queue = None;
        for h in self.files.drain(..).flatten() {
            if let Err(e) = h.close() {
                log::warn!("closing {}: {e}", h.name());
            }
        }
        self.iomem = None;
        // `lease` drops last: the last job of the instance stops it.
    }
}
