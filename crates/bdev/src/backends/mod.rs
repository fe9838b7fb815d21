//! Base backends: RAM disk, null, io_uring files/devices, fault injection, and ports (several
//! paths to one namespace).

pub mod aio;
pub mod fault;
pub mod malloc;
pub mod null;
pub mod port;

use crate::io::IoStatus;
use std::collections::VecDeque;

/// A fixed-capacity queue of completions waiting for the next poll (no allocation after
/// creation).
pub(crate) struct DoneQueue {
    q: VecDeque<(u64, IoStatus)>,
    cap: usize,
}

impl DoneQueue {
    pub(crate) fn new(cap: usize) -> DoneQueue {
        DoneQueue { q: VecDeque::with_capacity(cap), cap }
    }

    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.q.len() >= self.cap
    }

    #[inline]
    pub(crate) fn push(&mut self, tag: u64, status: IoStatus) {
        self.q.push_back((tag, status));
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    #[inline]
    pub(crate) fn drain(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let n = self.q.len();
        for _ in 0..n {
            if let Some((tag, st)) = self.q.pop_front() {
                done(tag, st);
            }
        }
        n
    }
}

/// Capacity of the completion queue of the in-memory backends' channels.
pub(crate) const MEM_CHANNEL_CAPACITY: usize = 1 << 16;
