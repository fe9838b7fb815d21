//! [`BdevChannel`]: the channel users hold. It validates every request before the backend sees
//! it, keeps a fixed pool of descriptors (no allocation per IO), counts statistics and latency,
//! and fails IO with `PathError` once the bdev was hot-removed.

use crate::bdev::{BdevInfo, IoChannel};
use crate::clock;
use crate::io::{IoRequest, IoStatus, IoType, IoTypeSet, QueueFull};
use crate::stats::ChannelStats;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Default number of descriptors per channel.
pub const DEFAULT_CHANNEL_DEPTH: usize = 4096;

#[derive(Copy, Clone)]
struct Slot {
    tag: u64,
    start: u64,
    bytes: u64,
    io_type: IoType,
}

/// Geometry and permissions checked on every request.
#[derive(Copy, Clone, Debug)]
struct Limits {
    block_size: u64,
    num_blocks: u64,
    align_mask: usize,
    max_io_blocks: u64,
    supported: IoTypeSet,
    writable: bool,
}

/// A validated, counted IO channel over a backend channel, owned by one reactor thread.
pub struct BdevChannel {
    inner: Box<dyn IoChannel>,
    limits: Limits,
    slots: Box<[Slot]>,
    free: Vec<u32>,
    early: VecDeque<(u64, IoStatus)>,
    stats: Arc<ChannelStats>,
    removed: Arc<AtomicBool>,
    measure_latency: bool,
    /// Nanoseconds per tick in 32.32 fixed point.
    ns_per_tick_q32: u64,
}

impl BdevChannel {
    /// Wrap `inner` for a bdev described by `info`.
    pub fn new(
        inner: Box<dyn IoChannel>,
        info: &BdevInfo,
        writable: bool,
        stats: Arc<ChannelStats>,
        removed: Arc<AtomicBool>,
        depth: usize,
    ) -> BdevChannel {
        let depth = depth.clamp(1, u32::MAX as usize);
        let empty = Slot { tag: 0, start: 0, bytes: 0, io_type: IoType::Read };
        // The clock is calibrated here, not on the first IO.
        let ns_per_tick_q32 = (1000.0 / clock::ticks_per_us() * 4294967296.0) as u64;
        BdevChannel {
            inner,
            limits: Limits {
                block_size: info.block_size as u64,
                num_blocks: info.num_blocks,
                align_mask: (info.required_alignment.max(1) as usize) - 1,
                max_io_blocks: info.max_io_blocks as u64,
                supported: info.supported,
                writable,
            },
            slots: vec![empty; depth].into_boxed_slice(),
            free: (0..depth as u32).rev().collect(),
            early: VecDeque::with_capacity(depth),
            stats,
            removed,
            measure_latency: true,
            ns_per_tick_q32,
        }
    }

    /// Turn per-IO latency measurement on or off (counts are always kept).
    pub fn set_measure_latency(&mut self, on: bool) {
        self.measure_latency = on;
    }

    /// Check a request against the device; `None` when valid, else the status to answer with.
    #[inline]
    fn check(&self, io: &IoRequest) -> Option<IoStatus> {
        let l = &self.limits;
        if !l.supported.contains(io.io_type) {
            return Some(IoStatus::Invalid);
        }
        if !l.writable && io.io_type.is_write_like() {
            return Some(IoStatus::Invalid);
        }
        match io.io_type {
            IoType::Flush | IoType::Reset => return None,
            _ => {}
        }
        let Some(end) = io.offset_blocks.checked_add(io.num_blocks) else {
            return Some(IoStatus::Invalid);
        };
        if io.num_blocks == 0 || end > l.num_blocks {
            return Some(IoStatus::Invalid);
        }
        if l.max_io_blocks != 0 && io.num_blocks > l.max_io_blocks {
            return Some(IoStatus::Invalid);
        }
        if io.io_type.has_data() {
            let mut total = 0u64;
            for v in io.iovs.as_slice() {
                if v.addr() & l.align_mask != 0 || v.len() & l.align_mask != 0 {
                    return Some(IoStatus::Invalid);
                }
                total += v.len() as u64;
            }
            if total != io.num_blocks * l.block_size {
                return Some(IoStatus::Invalid);
            }
        }
        None
    }

    /// Queue a request (see [`IoChannel`] for the contract). An invalid request is answered
    /// with [`IoStatus::Invalid`] from the next [`BdevChannel::poll`], never by the backend.
    #[inline]
    pub fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        let verdict = if self.removed.load(Ordering::Relaxed) { Some(IoStatus::PathError) } else { self.check(io) };
        if let Some(status) = verdict {
            if self.early.len() >= self.slots.len() {
                return Err(QueueFull);
            }
            self.stats.on_finished(io.io_type, 0, status, None);
            self.early.push_back((io.tag, status));
            return Ok(());
        }
        let Some(idx) = self.free.pop() else { return Err(QueueFull) };
        let mut inner_io = *io;
        inner_io.tag = idx as u64;
        let start = if self.measure_latency { clock::ticks() } else { 0 };
        if self.inner.submit(&inner_io).is_err() {
            self.free.push(idx);
            return Err(QueueFull);
        }
        self.slots[idx as usize] =
            Slot { tag: io.tag, start, bytes: io.num_blocks * self.limits.block_size, io_type: io.io_type };
        self.stats.on_submit();
        Ok(())
    }

    /// Push queued requests to the device and deliver completions as `done(tag, status)`.
    #[inline]
    pub fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let mut n = 0;
        while let Some((tag, status)) = self.early.pop_front() {
            done(tag, status);
            n += 1;
        }
        let BdevChannel { inner, slots, free, stats, measure_latency, ns_per_tick_q32, .. } = self;
        let q32 = *ns_per_tick_q32 as u128;
        let measure = *measure_latency;
        n + inner.poll(&mut |idx, status| {
            let Some(slot) = slots.get(idx as usize) else {
                log::error!("backend completed unknown descriptor {idx}");
                return;
            };
            // Stamped when the completion is delivered, not when the poll started: a backend's
            // poll may run long (a socket receive loop delivering many completions), and
            // requests resubmitted from `done` are stamped fresh, so a poll-start stamp would
            // under-measure every latency by the time spent inside the poll.
            let lat = measure.then(|| ((clock::ticks().saturating_sub(slot.start) as u128 * q32) >> 32) as u64);
            stats.on_complete(slot.io_type, slot.bytes, status, lat);
            free.push(idx as u32);
            done(slot.tag, status);
        })
    }

    /// Sleep until a request may have completed or `timeout` passes (see [`IoChannel::wait`]);
    /// false when the backend cannot sleep this way.
    pub fn wait(&mut self, timeout: std::time::Duration) -> bool {
        if !self.early.is_empty() {
            return true;
        }
        self.inner.wait(timeout)
    }

    /// Requests submitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len() + self.early.len()
    }

    /// Maximum requests in flight.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Block size of the device.
    pub fn block_size(&self) -> u32 {
        self.limits.block_size as u32
    }

    /// Number of blocks of the device.
    pub fn num_blocks(&self) -> u64 {
        self.limits.num_blocks
    }

    /// Poll until nothing is in flight or `timeout` passes; completions go to `done`.
    pub fn drain(&mut self, timeout: std::time::Duration, done: &mut dyn FnMut(u64, IoStatus)) -> bool {
        let t0 = std::time::Instant::now();
        while self.in_flight() > 0 {
            if self.poll(done) == 0 {
                if t0.elapsed() > timeout {
                    return false;
                }
                std::hint::spin_loop();
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BdevStats;
    use std::time::{Duration, Instant};

    /// Completes everything submitted, after spending `busy` inside its poll first (like a
    /// backend whose poll reads a socket before it finds the completions).
    struct SlowPoll {
        queued: Vec<u64>,
        busy: Duration,
    }

    impl IoChannel for SlowPoll {
        fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
            self.queued.push(io.tag);
            Ok(())
        }

        fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
            let t0 = Instant::now();
            while t0.elapsed() < self.busy {
                std::hint::spin_loop();
            }
            let n = self.queued.len();
            for tag in self.queued.drain(..) {
                done(tag, IoStatus::Success);
            }
            n
        }

        fn in_flight(&self) -> usize {
            self.queued.len()
        }
    }

    #[test]
    fn latency_includes_the_time_spent_inside_the_poll_that_completes() {
        let info = BdevInfo::new("slow", "test", 512, 1024, IoTypeSet::ALL);
        let stats = BdevStats::default();
        let inner = Box::new(SlowPoll { queued: Vec::new(), busy: Duration::from_millis(20) });
        let mut ch = BdevChannel::new(inner, &info, true, stats.new_channel(), Arc::default(), 8);
        ch.submit(&IoRequest::no_data(IoType::Flush, 0, 0, 7)).unwrap();
        let mut seen = Vec::new();
        ch.poll(&mut |tag, st| seen.push((tag, st)));
        assert_eq!(seen, [(7, IoStatus::Success)]);
        let snap = stats.snapshot();
        assert_eq!(snap.latency_count, 1);
        // The request was in flight for at least the 20 ms the poll spent before completing it.
        assert!(snap.mean_latency_ns() >= 20e6, "latency {} ns", snap.mean_latency_ns());
    }
}
