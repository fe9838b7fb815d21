//! IO descriptors: what a caller asks a bdev to do, and how the bdev answers.
//!
//! An [`IoRequest`] is a plain value (no heap, no lifetime): the operation, the block range,
//! up to [`MAX_IOVS`] scatter-gather segments and a caller-chosen `tag`. A channel answers
//! each request exactly once with `(tag, IoStatus)` from its `poll`.

use crate::dma::IoVec;

/// Largest number of scatter-gather segments one request carries inline.
pub const MAX_IOVS: usize = 8;

/// The kinds of IO a bdev may support.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IoType {
    /// Read blocks into the request's buffers.
    Read = 0,
    /// Write blocks from the request's buffers.
    Write = 1,
    /// Make every write completed before the flush was submitted durable.
    Flush = 2,
    /// Deallocate (trim/discard) a block range; later reads return zeroes or old data per [`crate::BdevInfo::unmap_zeroes`].
    Unmap = 3,
    /// Write zeroes over a block range without a data buffer.
    WriteZeroes = 4,
    /// Abort everything in flight on the device and return it to a known state.
    Reset = 5,
}

impl IoType {
    /// All IO types, in discriminant order.
    pub const ALL: [IoType; 6] =
        [IoType::Read, IoType::Write, IoType::Flush, IoType::Unmap, IoType::WriteZeroes, IoType::Reset];

    /// Lower-case name, as used in statistics and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
        }
    }

    /// Whether this IO type modifies the device's contents.
    pub fn is_write_like(self) -> bool {
        matches!(self, IoType::Write | IoType::Unmap | IoType::WriteZeroes)
    }

    /// Whether this IO type moves data through the request's buffers.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write)
    }
}

/// A set of [`IoType`]s, as a bitmask.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct IoTypeSet(u8);

impl IoTypeSet {
    /// The empty set.
    pub const NONE: IoTypeSet = IoTypeSet(0);
    /// Every IO type.
    pub const ALL: IoTypeSet = IoTypeSet(0x3f);

    /// The set holding exactly `types`.
    pub const fn of(types: &[IoType]) -> IoTypeSet {
        let mut bits = 0u8;
        let mut i = 0;
        while i < types.len() {
            bits |= 1 << types[i] as u8;
            i += 1;
        }
        IoTypeSet(bits)
    }

    /// Whether `t` is in the set.
    pub const fn contains(self, t: IoType) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    /// The set with `t` added.
    pub const fn with(self, t: IoType) -> IoTypeSet {
        IoTypeSet(self.0 | (1 << t as u8))
    }

    /// The set with `t` removed.
    pub const fn without(self, t: IoType) -> IoTypeSet {
        IoTypeSet(self.0 & !(1 << t as u8))
    }

    /// The types in the set.
    pub fn iter(self) -> impl Iterator<Item = IoType> {
        IoType::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

/// How an IO ended. Precise enough for RAID and multipath to choose what to do next.
///
/// | status | meaning | RAID | multipath |
/// |---|---|---|---|
/// | `Success` | done | - | - |
/// | `MediaError` | the medium could not read or write these blocks | fail the member / reconstruct | return to caller |
/// | `PathError` | transport, connection, controller or device unreachable | retry, then fail member | re-drive on another path |
/// | `Timeout` | no answer within the backend's timeout; outcome of a write unknown | as `PathError` | re-drive on another path |
/// | `Aborted` | not executed (reset, removal, shutdown); safe to resubmit | resubmit | re-drive on another path |
/// | `NoSpace` | thin provisioning ran out of space | return | return |
/// | `Invalid` | request malformed or unsupported (range, alignment, IO type, read-only) | return | return |
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IoStatus {
    /// The IO completed successfully.
    Success = 0,
    /// The medium failed to read or write the blocks; another path to the same medium won't help.
    MediaError = 1,
    /// The path to the device failed (transport, connection, controller, removal).
    PathError = 2,
    /// The device ran out of space (thin provisioning).
    NoSpace = 3,
    /// The request was invalid for this device (range, alignment, type, read-only).
    Invalid = 4,
    /// The IO was not executed because of a reset, removal or shutdown; resubmitting is safe.
    Aborted = 5,
    /// The backend gave up waiting for the device.
    Timeout = 6,
}

impl IoStatus {
    /// All statuses, in discriminant order.
    pub const ALL: [IoStatus; 7] = [
        IoStatus::Success,
        IoStatus::MediaError,
        IoStatus::PathError,
        IoStatus::NoSpace,
        IoStatus::Invalid,
        IoStatus::Aborted,
        IoStatus::Timeout,
    ];

    /// Whether the IO succeeded.
    #[inline]
    pub fn is_ok(self) -> bool {
        self == IoStatus::Success
    }

    /// Whether the failure is of the path rather than of the data: another path to the same
    /// namespace may succeed (multipath re-drives these; RAID retries before failing a member).
    #[inline]
    pub fn is_path_failure(self) -> bool {
        matches!(self, IoStatus::PathError | IoStatus::Timeout | IoStatus::Aborted)
    }

    /// Lower-case name, as used in statistics, logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            IoStatus::Success => "success",
            IoStatus::MediaError => "media_error",
            IoStatus::PathError => "path_error",
            IoStatus::NoSpace => "no_space",
            IoStatus::Invalid => "invalid",
            IoStatus::Aborted => "aborted",
            IoStatus::Timeout => "timeout",
        }
    }

    /// Parse a lower-case name as produced by [`IoStatus::name`].
    pub fn from_name(s: &str) -> Option<IoStatus> {
        IoStatus::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl core::fmt::Display for IoStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Scatter-gather list carried inline in a request.
#[derive(Copy, Clone, Debug)]
pub struct IoVecs {
    len: u8,
    segs: [IoVec; MAX_IOVS],
}

impl Default for IoVecs {
    fn default() -> Self {
        IoVecs::new()
    }
}

impl IoVecs {
    /// An empty list.
    pub const fn new() -> IoVecs {
        IoVecs { len: 0, segs: [IoVec::EMPTY; MAX_IOVS] }
    }

    /// A list of one segment.
    pub fn single(v: IoVec) -> IoVecs {
        let mut l = IoVecs::new();
        l.segs[0] = v;
        l.len = 1;
        l
    }

    /// Append a segment; returns false (and changes nothing) when the list is full.
    pub fn push(&mut self, v: IoVec) -> bool {
        match self.segs.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The segments.
    #[inline]
    pub fn as_slice(&self) -> &[IoVec] {
        &self.segs[..self.len as usize]
    }

    /// Number of segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the list has no segment.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes over all segments.
    pub fn total_len(&self) -> u64 {
        self.as_slice().iter().map(|v| v.len() as u64).sum()
    }

    /// The sub-list covering bytes `[offset, offset+len)` of this list, or `None` when the
    /// range is past the end or needs more than [`MAX_IOVS`] segments.
    pub fn slice(&self, mut offset: u64, mut len: u64) -> Option<IoVecs> {
        let mut out = IoVecs::new();
        for v in self.as_slice() {
            let vl = v.len() as u64;
            if offset >= vl {
                offset -= vl;
                continue;
            }
            if len == 0 {
                break;
            }
            let take = (vl - offset).min(len);
            if !out.push(v.sub(offset as usize, take as usize)?) {
                return None;
            }
            len -= take;
            offset = 0;
        }
        (len == 0).then_some(out)
    }
}

/// One IO request: a plain value a channel copies what it needs from.
///
/// Buffer contract: the memory named by `iovs` must stay valid, and must not be read or written
/// by anyone else, from `submit` until the channel reports the request's completion. The
/// channel writes into it (reads) or reads from it (writes) and never keeps it afterwards.
#[derive(Copy, Clone, Debug)]
pub struct IoRequest {
    /// What to do.
    pub io_type: IoType,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks (0 for flush and reset).
    pub num_blocks: u64,
    /// Data buffers for read and write; their total length equals `num_blocks * block_size`.
    pub iovs: IoVecs,
    /// Caller's identifier, echoed in the completion.
    pub tag: u64,
}

impl IoRequest {
    /// A read of `num_blocks` blocks at `offset_blocks` into `iovs`.
    pub fn read(offset_blocks: u64, num_blocks: u64, iovs: IoVecs, tag: u64) -> IoRequest {
        IoRequest { io_type: IoType::Read, offset_blocks, num_blocks, iovs, tag }
    }

    /// A write of `num_blocks` blocks at `offset_blocks` from `iovs`.
    pub fn write(offset_blocks: u64, num_blocks: u64, iovs: IoVecs, tag: u64) -> IoRequest {
        IoRequest { io_type: IoType::Write, offset_blocks, num_blocks, iovs, tag }
    }

    /// A request without data (flush, unmap, write-zeroes, reset).
    pub fn no_data(io_type: IoType, offset_blocks: u64, num_blocks: u64, tag: u64) -> IoRequest {
        IoRequest { io_type, offset_blocks, num_blocks, iovs: IoVecs::new(), tag }
    }
}

/// Returned by `submit` when the channel has no free descriptor; resubmit after a `poll`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("channel queue is full")]
pub struct QueueFull;
