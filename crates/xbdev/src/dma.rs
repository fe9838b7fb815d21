//! Turning caller memory into IO segments for the synchronous API (which blocks until the IO
//! completes, so the caller's buffer outlives it).

use crate::instance::UserBuf;
use bdev::IoVec;

/// A segment over a caller buffer that stays borrowed until the synchronous IO naming it
/// completes (the borrow of `buf` is held by the caller across the whole call).
pub(crate) fn slice_iovec(buf: &mut UserBuf<'_>) -> IoVec {
    let (ptr, len) = match buf {
        UserBuf::Read(b) => (b.as_mut_ptr(), b.len()),
        // A write only reads through the segment.
        UserBuf::Write(b) => (b.as_ptr().cast_mut(), b.len()),
    };
    // SAFETY: the synchronous API borrows the caller's slice for the whole call and returns
    // only after the IO's completion, so the memory is valid and unaliased meanwhile; for
    // writes the backend only reads through the pointer.
    unsafe { IoVec::from_raw(ptr, len) }
}
