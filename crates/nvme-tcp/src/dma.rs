//! Views of IO buffer segments as byte slices, so socket reads land in them
//! and socket writes come from them without an intermediate copy.
//!
//! This is the only module of the crate with `unsafe`. The block layer hands
//! IO buffers over as raw [`IoVec`]s under the [`bdev::IoRequest`] buffer
//! contract: from submit until the channel reports the completion, the
//! memory is valid and nobody but the channel touches it (the same contract
//! `bdev::dma::copy_to_iovs` relies on). [`IoBufs`] holds the segments of one
//! such IO and hands out views borrowed from itself, so safe code cannot
//! hold two writable views at once.

use bdev::{IoVec, IoVecs};

/// The buffers of one IO in flight on a channel.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IoBufs {
    iovs: IoVecs,
}

impl IoBufs {
    /// Buffers of an IO the channel accepted (the IoRequest contract holds
    /// until the channel reports its completion, after which this value
    /// must no longer be used).
    pub(crate) fn new(iovs: IoVecs) -> Self {
        Self { iovs }
    }

    /// The segment containing byte `at`, from `at` to its end.
    fn segment_at(&self, at: u64) -> Option<IoVec> {
        let mut off = at;
        for v in self.iovs.as_slice() {
            let l = v.len() as u64;
            if off < l {
                return v.sub(off as usize, (l - off) as usize);
            }
            off -= l;
        }
        None
    }

    /// Contiguous bytes from byte `at` to the end of its segment.
    pub(crate) fn seg(&self, at: u64) -> Option<&[u8]> {
        let v = self.segment_at(at)?;
        if v.is_empty() {
            return None;
        }
        // SAFETY: `v` lies inside a segment of an IO in flight on the
        // calling channel; the IoRequest contract makes it valid for reads
        // of `v.len()` bytes until the completion is reported, and no
        // writable view of it exists while `&self` is borrowed (writable
        // views need `&mut self`).
        Some(unsafe { std::slice::from_raw_parts(v.as_ptr(), v.len()) })
    }

    /// Contiguous writable bytes from byte `at` to the end of its segment.
    pub(crate) fn seg_mut(&mut self, at: u64) -> Option<&mut [u8]> {
        let v = self.segment_at(at)?;
        if v.is_empty() {
            return None;
        }
        // SAFETY: as in `seg`, valid for writes too; `&mut self` makes this
        // the only view of the IO's memory for the borrow's duration, and
        // the segments of one IoVecs do not overlap (BdevChannel hands each
        // IO its own buffers).
        Some(unsafe { std::slice::from_raw_parts_mut(v.as_ptr(), v.len()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdev::DmaBuf;

    #[test]
    fn segments_of_a_scatter_list() {
        let mut a = DmaBuf::zeroed(4096).unwrap();
        let mut b = DmaBuf::zeroed(4096).unwrap();
        let mut iovs = IoVecs::new();
        assert!(iovs.push(a.iovec_range(0, 1000).unwrap()));
        assert!(iovs.push(b.iovec_range(100, 500).unwrap()));
        let mut bufs = IoBufs::new(iovs);
        assert_eq!(bufs.seg(0).unwrap().len(), 1000);
        assert_eq!(bufs.seg(999).unwrap().len(), 1);
        assert_eq!(bufs.seg(1000).unwrap().len(), 500);
        assert_eq!(bufs.seg(1499).unwrap().len(), 1);
        assert!(bufs.seg(1500).is_none());
        bufs.seg_mut(1200).unwrap()[0] = 7;
        bufs.seg_mut(5).unwrap()[0] = 9;
        assert_eq!(b.as_slice()[300], 7);
        assert_eq!(a.as_slice()[5], 9);
    }
}
