//! The asynchronous API: a per-thread [`IoQueue`] with batched submission, completion polling
//! and wait-for-one (seed 2.3, 6.5, 10.2).
//!
//! Requests are queued locally and handed to the reactor in one batch by
//! [`IoQueue::submit`]. Buffers are [`DmaBuf`]s moved into the queue and handed back in the
//! [`Completion`], so nothing can touch them while the device does; callers with their own
//! DMA memory (the fio engine) pass raw segments with [`IoQueue::queue_io`].

use crate::client::{ClientReq, Ring};
use crate::error::XbdevError;
use crate::instance::{Handle, Inner};
use bdev::{DmaBuf, IoRequest, IoStatus, IoType, IoVec, IoVecs};
use reactor::ReactorHandle;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A finished asynchronous IO.
#[derive(Debug)]
pub struct Completion {
    /// The caller's identifier.
    pub user: u64,
    /// How it ended.
    pub status: IoStatus,
    /// The buffer given with the request, handed back.
    pub buf: Option<DmaBuf>,
}

struct Slot {
    user: u64,
    buf: Option<DmaBuf>,
}

/// An asynchronous IO queue owned by one thread (not `Send`: completions wake that thread).
pub struct IoQueue {
    inner: Arc<Inner>,
    ring: Arc<Ring>,
    reactor: ReactorHandle,
    slots: Vec<Slot>,
    free: Vec<u32>,
    batch: Vec<ClientReq>,
    _not_send: PhantomData<*const ()>,
}

impl IoQueue {
    pub(crate) fn new(inner: Arc<Inner>, depth: usize) -> Result<IoQueue, XbdevError> {
        let depth = depth.clamp(1, 1 << 16);
        let (ring, reactor) = inner.new_ring(depth)?;
        Ok(IoQueue {
            inner,
            ring,
            reactor,
            slots: (0..depth).map(|_| Slot { user: 0, buf: None }).collect(),
            free: (0..depth as u32).rev().collect(),
            batch: Vec::with_capacity(depth),
            _not_send: PhantomData,
        })
    }

    /// Maximum requests in flight.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Requests queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        h: &Handle,
        op: IoType,
        offset: u64,
        len: u64,
        iov: Option<IoVec>,
        user: u64,
        buf: Option<DmaBuf>,
    ) -> Result<(), (XbdevError, Option<DmaBuf>)> {
        if h.instance_id() != self.inner.id {
            return Err((XbdevError::InvalidBuffer("handle belongs to another xbdev instance".into()), buf));
        }
        let (ob, nb) = match h.check(op, offset, len) {
            Ok(x) => x,
            Err(e) => return Err((e, buf)),
        };
        let iovs = match (op.has_data(), iov) {
            (true, Some(v)) if v.len() as u64 == len => IoVecs::single(v),
            (true, Some(v)) => {
                return Err((XbdevError::InvalidBuffer(format!("buffer is {} bytes, transfer is {len}", v.len())), buf))
            }
            (true, None) => return Err((XbdevError::InvalidBuffer("read and write need a buffer".into()), buf)),
            (false, _) => IoVecs::new(),
        };
        let Some(slot) = self.free.pop() else { return Err((XbdevError::QueueFull(self.slots.len()), buf)) };
        self.slots[slot as usize] = Slot { user, buf };
        let io = IoRequest { io_type: op, offset_blocks: ob, num_blocks: nb, iovs, tag: slot as u64 };
        self.batch.push(ClientReq { handle: h.slot(), generation: h.generation(), io });
        Ok(())
    }

    /// Queue an IO on raw memory (the caller keeps `iov` valid and untouched until its
    /// completion). Offsets and lengths are in bytes.
    pub fn queue_io(
        &mut self,
        h: &Handle,
        op: IoType,
        offset: u64,
        len: u64,
        iov: Option<IoVec>,
        user: u64,
    ) -> Result<(), XbdevError> {
        self.push(h, op, offset, len, iov, user, None).map_err(|e| e.0)
    }

    /// Queue a read into `buf` (its whole length) at byte `offset`; the buffer comes back in
    /// the completion, or with the error.
    pub fn read(&mut self, h: &Handle, mut buf: DmaBuf, offset: u64, user: u64) -> Result<(), (XbdevError, DmaBuf)> {
        let iov = buf.iovec();
        let len = buf.len() as u64;
        self.push(h, IoType::Read, offset, len, Some(iov), user, Some(buf))
            .map_err(|(e, b)| (e, b.expect("buffer handed back")))
    }

    /// Queue a write of `buf` at byte `offset`.
    pub fn write(&mut self, h: &Handle, mut buf: DmaBuf, offset: u64, user: u64) -> Result<(), (XbdevError, DmaBuf)> {
        let iov = buf.iovec();
        let len = buf.len() as u64;
        self.push(h, IoType::Write, offset, len, Some(iov), user, Some(buf))
            .map_err(|(e, b)| (e, b.expect("buffer handed back")))
    }

    /// Queue a flush.
    pub fn flush(&mut self, h: &Handle, user: u64) -> Result<(), XbdevError> {
        self.queue_io(h, IoType::Flush, 0, 0, None, user)
    }

    /// Queue an unmap of `[offset, offset+len)`.
    pub fn unmap(&mut self, h: &Handle, offset: u64, len: u64, user: u64) -> Result<(), XbdevError> {
        self.queue_io(h, IoType::Unmap, offset, len, None, user)
    }

    /// Hand every queued request to the reactor (one wake-up for the batch). Returns how many.
    pub fn submit(&mut self) -> usize {
        let mut n = 0;
        for r in self.batch.drain(..) {
            // The ring holds `depth` entries and at most `depth` requests exist.
            if self.ring.req.push(r).is_err() {
                log::error!("request ring overflow");
                continue;
            }
            n += 1;
        }
        if n > 0 {
            self.reactor.notify();
        }
        n
    }

    /// Deliver up to `max` completions to `f`, waiting up to `timeout` for the first one.
    /// Submits anything still queued first.
    pub fn poll(&mut self, max: usize, timeout: Duration, f: &mut dyn FnMut(Completion)) -> usize {
        self.submit();
        let t0 = Instant::now();
        let mut n = 0;
        while n < max {
            match self.ring.cpl.pop() {
                Some(c) => {
                    let Some(slot) = self.slots.get_mut(c.tag as usize) else { continue };
                    let user = slot.user;
                    let buf = slot.buf.take();
                    self.free.push(c.tag as u32);
                    f(Completion { user, status: c.status, buf });
                    n += 1;
                }
                None => {
                    if n > 0 || self.in_flight() == 0 {
                        break;
                    }
                    let left = timeout.saturating_sub(t0.elapsed());
                    if left.is_zero() || !self.ring.wait(left) {
                        break;
                    }
                }
            }
        }
        n
    }

    /// Wait for one completion.
    pub fn wait_one(&mut self, timeout: Duration) -> Result<Completion, XbdevError> {
        let mut out = None;
        self.poll(1, timeout, &mut |c| out = Some(c));
        out.ok_or(XbdevError::Timeout)
    }
}

impl Drop for IoQueue {
    fn drop(&mut self) {
        // Buffers may not be released while a device can still access them.
        while self.in_flight() > 0 && self.inner.check_running().is_ok() {
            self.poll(usize::MAX, Duration::from_secs(1), &mut |_| {});
        }
        self.ring.closed.store(true, Ordering::Release);
    }
}
