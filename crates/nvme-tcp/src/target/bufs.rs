//! Per-slot data buffers of a target connection.
//!
//! Admin (and not yet connected) queues allocate a buffer per slot as
//! commands need one. I/O queues take one arena for all slots, made once at
//! Connect: slot `i` starts at `i * stride`, where the stride is the maximum
//! transfer plus one page. With a power-of-two stride (one pooled buffer of
//! the maximum transfer per slot, as before), the first bytes of every slot
//! map to the same cache sets, so small reads of many slots in turn evict
//! each other from the cache; the extra page spreads them over the sets.
//! A command longer than the maximum transfer (a host ignoring MDTS) gets
//! a buffer of its own.

use crate::ctrl::CtrlBuffers;
use bdev::{DmaBuf, IoVec};

/// Bytes added to the maximum transfer to make the arena stride.
const STAGGER: usize = 4096;

/// One buffer shared by the slots of an I/O queue.
struct Arena {
    buf: DmaBuf,
    /// Distance between the starts of two slots.
    stride: usize,
    /// Bytes each slot may use.
    slot_len: usize,
}

/// Per-slot data buffers of a connection.
pub(crate) struct SlotBufs {
    arena: Option<Arena>,
    /// Buffers of slots whose data does not fit the arena (or of queues
    /// without one).
    own: Vec<Option<DmaBuf>>,
    /// Data length of each slot's current command.
    lens: Vec<u32>,
}

impl SlotBufs {
    /// Buffers for `depth` slots, allocated as commands need them.
    pub(crate) fn new(depth: usize) -> Self {
        Self { arena: None, own: (0..depth).map(|_| None).collect(), lens: vec![0; depth] }
    }

    /// Allocates one arena holding `max_transfer` bytes for every slot
    /// (I/O queues, at Connect). On failure the slots keep allocating
    /// buffers of their own.
    pub(crate) fn use_arena(&mut self, max_transfer: usize) -> Result<(), bdev::dma::DmaError> {
        let stride = max_transfer.checked_add(STAGGER).ok_or(bdev::dma::DmaError::InvalidSize(max_transfer))?;
        let total = stride.checked_mul(self.lens.len()).ok_or(bdev::dma::DmaError::InvalidSize(stride))?;
        let buf = DmaBuf::alloc(total.max(1))?;
        self.arena = Some(Arena { buf, stride, slot_len: max_transfer });
        self.own.iter_mut().for_each(|b| *b = None);
        Ok(())
    }

    /// The arena offset of `slot` if its current data lies in the arena.
    fn arena_at(&self, slot: u16) -> Option<usize> {
        let a = self.arena.as_ref()?;
        let i = usize::from(slot);
        let len = *self.lens.get(i)? as usize;
        if len > a.slot_len || i >= self.lens.len() {
            return None;
        }
        i.checked_mul(a.stride)
    }

    /// Makes room for `len` bytes of data in `slot` and sets its data
    /// length; `None` if the slot does not exist or memory is short.
    pub(crate) fn ensure(&mut self, slot: u16, len: u32) -> Option<()> {
        let i = usize::from(slot);
        *self.lens.get_mut(i)? = len;
        if self.arena_at(slot).is_some() {
            return Some(());
        }
        let b = self.own.get_mut(i)?;
        let need = (len as usize).max(1);
        if b.as_ref().is_none_or(|d| d.len() < need) {
            *b = Some(DmaBuf::alloc(need).ok()?);
        }
        Some(())
    }

    /// The data length set by the last [`SlotBufs::ensure`] of `slot`.
    pub(crate) fn len(&self, slot: u16) -> u32 {
        self.lens.get(usize::from(slot)).copied().unwrap_or(0)
    }

    /// The first `len` bytes of the buffer of `slot` (set by `ensure`).
    pub(crate) fn data(&self, slot: u16) -> Option<&[u8]> {
        let len = self.len(slot) as usize;
        match self.arena_at(slot) {
            Some(at) => self.arena.as_ref()?.buf.as_slice().get(at..at.checked_add(len)?),
            None => self.own.get(usize::from(slot))?.as_ref()?.as_slice().get(..len),
        }
    }

    /// The first `len` bytes of the buffer of `slot`, writable.
    pub(crate) fn data_mut(&mut self, slot: u16) -> Option<&mut [u8]> {
        let len = self.len(slot) as usize;
        match self.arena_at(slot) {
            Some(at) => self.arena.as_mut()?.buf.as_mut_slice().get_mut(at..at.checked_add(len)?),
            None => self.own.get_mut(usize::from(slot))?.as_mut()?.as_mut_slice().get_mut(..len),
        }
    }

    /// The data of `slot` as an IO segment (for a bdev request).
    pub(crate) fn iovec(&mut self, slot: u16) -> Option<IoVec> {
        let len = self.len(slot) as usize;
        match self.arena_at(slot) {
            Some(at) => self.arena.as_mut()?.buf.iovec_range(at, len),
            None => self.own.get_mut(usize::from(slot))?.as_mut()?.iovec_range(0, len),
        }
    }
}

impl CtrlBuffers for SlotBufs {
    fn dest(&mut self, slot: u16, len: u32, at: u32) -> Option<&mut [u8]> {
        if at == 0 || self.len(slot) != len {
            self.ensure(slot, len)?;
        }
        self.data_mut(slot)?.get_mut(at as usize..).filter(|s| !s.is_empty())
    }

    fn src(&self, slot: u16, at: u32) -> Option<&[u8]> {
        self.data(slot)?.get(at as usize..).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_slots_are_disjoint_staggered_and_fall_back_when_too_long() {
        let mut b = SlotBufs::new(4);
        b.use_arena(8192).unwrap();
        for s in 0..4u16 {
            b.ensure(s, 8192).unwrap();
            b.data_mut(s).unwrap().fill(s as u8 + 1);
        }
        for s in 0..4u16 {
            assert!(b.data(s).unwrap().iter().all(|&x| x == s as u8 + 1));
        }
        let p0 = b.iovec(0).unwrap().as_ptr() as usize;
        let p1 = b.iovec(1).unwrap().as_ptr() as usize;
        assert_eq!(p1 - p0, 8192 + STAGGER);
        // Longer than the arena slot: a buffer of its own, the neighbours
        // keep their data.
        b.ensure(2, 20000).unwrap();
        b.data_mut(2).unwrap().fill(9);
        assert_eq!(b.data(2).unwrap().len(), 20000);
        assert!(b.data(1).unwrap().iter().all(|&x| x == 2));
        assert!(b.data(3).unwrap().iter().all(|&x| x == 4));
        // Back in the arena with a short command.
        b.ensure(2, 100).unwrap();
        assert_eq!(b.iovec(2).unwrap().as_ptr() as usize - p0, 2 * (8192 + STAGGER));
        // Receiving into a slot through the controller interface.
        let d = b.dest(3, 4096, 0).unwrap();
        assert_eq!(d.len(), 4096);
        assert_eq!(b.dest(3, 4096, 4000).unwrap().len(), 96);
        assert!(b.dest(3, 4096, 4096).is_none());
        assert!(b.ensure(4, 1).is_none());
    }

    #[test]
    fn without_arena_buffers_grow_per_slot() {
        let mut b = SlotBufs::new(2);
        b.ensure(0, 100).unwrap();
        b.data_mut(0).unwrap().copy_from_slice(&[7; 100]);
        assert_eq!(b.src(0, 99).unwrap(), &[7]);
        assert!(b.src(0, 100).is_none());
        b.ensure(0, 50000).unwrap();
        assert_eq!(b.data(0).unwrap().len(), 50000);
        assert_eq!(b.len(1), 0);
        assert_eq!(b.data(1), None);
    }
}
