//! The computing step of a stripe operation whose reads are in: a
//! degraded read rebuilds its chunk and delivers it; a write computes its
//! new parity.
//!
//! New data is never copied when it does not have to be: a
//! read-modify-write folds old data and new data straight into the parity
//! buffers (`P ^= old ^ new`, `Q ^= g^i (old ^ new)`), reading the new
//! data from the caller's segments; full-stripe and reconstruct-writes
//! compute parity over the caller's segments for every chunk they
//! overwrite whole (when the chunk lies in one segment) and over the
//! operation's buffers for the rest (read, rebuilt, or partly overwritten:
//! those get the new data copied in).

use bdev::dma::{copy_to_iovs, with_iov_slices};
use bdev::{DmaBuf, IoStatus, IoVecs};

use super::{Mode, Span, StripeOp};
use crate::geometry::{StripeLayout, StripeRole};
use crate::parity::{Parity, MAX_SYNDROME_DATA};

/// Slices gathered in a small stack array up to this many (wider arrays
/// use a full-size one).
const SMALL: usize = 16;

/// Calls `f` with the first `count` slices of `items` (at most
/// [`MAX_SYNDROME_DATA`]; missing ones are empty), gathered on the stack.
fn with_slices<'a, R>(count: usize, items: impl Iterator<Item = &'a [u8]>, f: impl FnOnce(&[&'a [u8]]) -> R) -> R {
    fn gather<'a, R, const N: usize>(
        count: usize,
        items: impl Iterator<Item = &'a [u8]>,
        f: impl FnOnce(&[&'a [u8]]) -> R,
    ) -> R {
        let mut a: [&[u8]; N] = [&[]; N];
        for (slot, s) in a.iter_mut().zip(items) {
            *slot = s;
        }
        f(a.get(..count.min(N)).unwrap_or_default())
    }
    if count <= SMALL {
        gather::<R, SMALL>(count, items, f)
    } else {
        gather::<R, MAX_SYNDROME_DATA>(count, items, f)
    }
}

/// Where a write's new data comes from, as byte slices.
#[derive(Clone, Copy)]
pub(super) enum Data<'a> {
    /// The request's segments, in order.
    Segs(&'a [&'a [u8]]),
    /// Zeroes (write-zeroes and unmap), at least a window long.
    Zero(&'a [u8]),
}

impl<'a> Data<'a> {
    /// Bytes `[off, off+len)` when they lie in one segment.
    fn contiguous(self, off: usize, len: usize) -> Option<&'a [u8]> {
        match self {
            Data::Zero(z) => z.get(..len),
            Data::Segs(segs) => {
                let mut off = off;
                for s in segs {
                    if off < s.len() {
                        return s.get(off..off.checked_add(len)?);
                    }
                    off -= s.len();
                }
                None
            }
        }
    }

    /// Calls `f(pos, piece)` for the pieces of bytes `[off, off+len)` in
    /// order (`pos` counted from `off`). False when the data ends early or
    /// `f` returns false.
    fn pieces(self, off: usize, len: usize, mut f: impl FnMut(usize, &'a [u8]) -> bool) -> bool {
        match self {
            Data::Zero(z) => z.get(..len).is_some_and(|z| f(0, z)),
            Data::Segs(segs) => {
                let (mut off, mut pos) = (off, 0);
                for s in segs {
                    if pos == len {
                        break;
                    }
                    if off >= s.len() {
                        off -= s.len();
                        continue;
                    }
                    let take = (s.len() - off).min(len - pos);
                    match s.get(off..off + take) {
                        Some(piece) if f(pos, piece) => {}
                        _ => return false,
                    }
                    pos += take;
                    off = 0;
                }
                pos == len
            }
        }
    }
}

pub(super) fn slice(buf: &Option<DmaBuf>, off: usize, len: usize) -> &[u8] {
    buf.as_ref().and_then(|b| b.as_slice().get(off..off + len)).unwrap_or_default()
}

fn slice_mut(buf: &mut Option<DmaBuf>, off: usize, len: usize) -> Option<&mut [u8]> {
    buf.as_mut().and_then(|b| b.as_mut_slice().get_mut(off..off + len))
}

fn take(bufs: &mut [Option<DmaBuf>], m: usize) -> Option<DmaBuf> {
    bufs.get_mut(m).and_then(Option::take)
}

fn put(bufs: &mut [Option<DmaBuf>], m: usize, b: Option<DmaBuf>) {
    if let Some(slot) = bufs.get_mut(m) {
        *slot = b;
    }
}

/// Calls `f` with the data buffers (bytes `[0, len)`) in syndrome order;
/// taken-out ones are empty.
fn with_data<R>(layout: &StripeLayout, bufs: &[Option<DmaBuf>], len: usize, f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let items = layout.syndrome_members().map(|m| bufs.get(m).map_or(&[][..], |b| slice(b, 0, len)));
    with_slices(layout.data_disks(), items, f)
}

/// Rebuilds the data members not in `have` from the others and P/Q
/// (bytes `[0, len)` of each buffer). Returns false when too much is
/// missing.
pub(super) fn solve(
    parity: &Parity,
    layout: &StripeLayout,
    bufs: &mut [Option<DmaBuf>],
    have: &mut [bool],
    len: usize,
) -> bool {
    let p = layout.p_member();
    let q = layout.q_member();
    let mut lost = [usize::MAX; 2];
    let mut nlost = 0;
    let mut slot_of = [0usize; 2];
    for (slot, m) in layout.syndrome_members().enumerate() {
        if !have.get(m).copied().unwrap_or(false) {
            if nlost >= 2 {
                return false;
            }
            lost[nlost] = m;
            slot_of[nlost] = slot;
            nlost += 1;
        }
    }
    if nlost == 0 {
        return true;
    }
    let hp = have.get(p).copied().unwrap_or(false);
    let hq = q.is_some_and(|q| have.get(q).copied().unwrap_or(false));
    let mut ok = false;
    match (nlost, hp, hq) {
        (1, true, _) => {
            let mut dx = take(bufs, lost[0]);
            if let Some(dxs) = slice_mut(&mut dx, 0, len) {
                let ps = bufs.get(p).map_or(&[][..], |b| slice(b, 0, len));
                ok = with_data(layout, bufs, len, |refs| parity.recover_data_from_p(refs, slot_of[0], ps, dxs).is_ok());
            }
            put(bufs, lost[0], dx);
        }
        (1, false, true) => {
            let qm = q.unwrap_or(0);
            let mut dx = take(bufs, lost[0]);
            let mut pb = take(bufs, p);
            if let (Some(dxs), Some(ps)) = (slice_mut(&mut dx, 0, len), slice_mut(&mut pb, 0, len)) {
                let qs = bufs.get(qm).map_or(&[][..], |b| slice(b, 0, len));
                ok = with_data(layout, bufs, len, |refs| {
                    parity.recover_data_from_q(refs, slot_of[0], qs, dxs, ps).is_ok()
                });
            }
            put(bufs, lost[0], dx);
            put(bufs, p, pb);
            if ok {
                if let Some(h) = have.get_mut(p) {
                    *h = true;
                }
            }
        }
        (2, true, true) => {
            let qm = q.unwrap_or(0);
            let mut dx = take(bufs, lost[0]);
            let mut dy = take(bufs, lost[1]);
            if let (Some(xs), Some(ys)) = (slice_mut(&mut dx, 0, len), slice_mut(&mut dy, 0, len)) {
                let ps = bufs.get(p).map_or(&[][..], |b| slice(b, 0, len));
                let qs = bufs.get(qm).map_or(&[][..], |b| slice(b, 0, len));
                ok = with_data(layout, bufs, len, |refs| {
                    parity.recover_two_data(refs, slot_of[0], slot_of[1], ps, qs, xs, ys).is_ok()
                });
            }
            put(bufs, lost[0], dx);
            put(bufs, lost[1], dy);
        }
        _ => {}
    }
    if ok {
        for &m in lost.iter().take(nlost) {
            if let Some(h) = have.get_mut(m) {
                *h = true;
            }
        }
    }
    ok
}

/// Where the new data of a write comes from.
#[derive(Clone, Copy)]
pub(super) enum Source {
    /// The request's buffers.
    Iovs(IoVecs),
    /// Zeroes (write-zeroes and unmap), at least a window long.
    Zeroes(IoVecs),
}

impl Source {
    /// `len` bytes at byte `off` of the request.
    pub(super) fn slice(&self, off: u64, len: u64) -> Option<IoVecs> {
        match self {
            Source::Iovs(v) => v.slice(off, len),
            Source::Zeroes(z) => z.slice(0, len),
        }
    }
}

/// The computing step of an operation whose reads are done: a degraded
/// read is delivered (returns true); a write gets its new parity into the
/// parity buffers (returns false: write next). `zero` holds zeroes, at
/// least a window long.
pub(super) fn compute(
    parity: &Parity,
    layout: &StripeLayout,
    op: &mut StripeOp,
    src: Source,
    zero: &[u8],
    len: usize,
) -> Result<bool, IoStatus> {
    match (op.mode, src) {
        (Mode::Read, Source::Iovs(dst)) => {
            let StripeOp { spans, bufs, have, .. } = op;
            let s = spans.first().copied().ok_or(IoStatus::Invalid)?;
            let target = layout.data_member(s.k);
            if !have.get(target).copied().unwrap_or(false) && !solve(parity, layout, bufs, have, len) {
                return Err(IoStatus::MediaError);
            }
            let dst = dst.slice(s.io_off * 512, (s.b - s.a) * 512).ok_or(IoStatus::Invalid)?;
            let src = bufs.get(target).map_or(&[][..], |b| slice(b, 0, len));
            if copy_to_iovs(dst.as_slice(), src) != src.len() {
                return Err(IoStatus::Invalid);
            }
            Ok(true)
        }
        (Mode::Read, Source::Zeroes(_)) => Err(IoStatus::Invalid),
        // The request's buffers are a write in flight: readable in place.
        (_, Source::Iovs(v)) => {
            with_iov_slices(v.as_slice(), |segs| write(parity, layout, op, Data::Segs(segs), len))
                .unwrap_or(Err(IoStatus::Invalid))?;
            Ok(false)
        }
        (_, Source::Zeroes(_)) => {
            write(parity, layout, op, Data::Zero(zero), len)?;
            Ok(false)
        }
    }
}

/// New parity of a write into the parity buffers.
fn write(parity: &Parity, layout: &StripeLayout, op: &mut StripeOp, data: Data, len: usize) -> Result<(), IoStatus> {
    let (r0, r1) = (op.r0, op.r1);
    let StripeOp { spans, bufs, have, mode, .. } = op;
    if *mode == Mode::Reconstruct && !solve(parity, layout, bufs, have, len) {
        return Err(IoStatus::MediaError);
    }
    let pm = layout.p_member();
    let qm = layout.q_member();
    let mut pb = take(bufs, pm);
    let mut qb = qm.and_then(|q| take(bufs, q));
    let ok = if *mode == Mode::Rmw {
        rmw(parity, layout, spans, bufs, (&mut pb, &mut qb), data, r0)
    } else {
        regenerate(parity, layout, spans, bufs, (&mut pb, &mut qb), data, (r0, r1))
    };
    put(bufs, pm, pb);
    if let Some(q) = qm {
        put(bufs, q, qb);
    }
    if ok {
        Ok(())
    } else {
        Err(IoStatus::Invalid)
    }
}

/// Read-modify-write: the buffers of the spans' members hold the old data
/// of the spans (at their rows), P and Q the old parity of rows
/// `[r0, r1)`.
fn rmw(
    parity: &Parity,
    layout: &StripeLayout,
    spans: &[Span],
    bufs: &[Option<DmaBuf>],
    (pb, qb): (&mut Option<DmaBuf>, &mut Option<DmaBuf>),
    data: Data,
    r0: u64,
) -> bool {
    let raid6 = layout.q_member().is_some();
    for s in spans {
        let m = layout.data_member(s.k);
        let off = ((s.a - r0) * 512) as usize;
        let bytes = ((s.b - s.a) * 512) as usize;
        let old = bufs.get(m).map_or(&[][..], |b| slice(b, off, bytes));
        let (Some(ps), Some(slot)) = (slice_mut(pb, off, bytes), layout.syndrome_slot(m)) else {
            return false;
        };
        let mut qs = slice_mut(qb, off, bytes);
        if old.len() != bytes || (raid6 && qs.is_none()) {
            return false;
        }
        let ok = data.pieces((s.io_off * 512) as usize, bytes, |pos, new| {
            let end = pos + new.len();
            let (Some(o), Some(p)) = (old.get(pos..end), ps.get_mut(pos..end)) else {
                return false;
            };
            match qs.as_deref_mut() {
                Some(q) => q.get_mut(pos..end).is_some_and(|q| parity.replace_pq(slot, o, new, p, q).is_ok()),
                None => parity.replace_p(o, new, p).is_ok(),
            }
        });
        if !ok {
            return false;
        }
    }
    true
}

/// Full-stripe and reconstruct-writes: parity of rows `[r0, r1)` over
/// every data chunk. A chunk overwritten whole by data in one segment is
/// read in place; the new data of the other spans is copied into their
/// buffers (which hold the chunk's other rows).
fn regenerate(
    parity: &Parity,
    layout: &StripeLayout,
    spans: &[Span],
    bufs: &mut [Option<DmaBuf>],
    (pb, qb): (&mut Option<DmaBuf>, &mut Option<DmaBuf>),
    data: Data,
    (r0, r1): (u64, u64),
) -> bool {
    let len = ((r1 - r0) * 512) as usize;
    let in_place = |s: &Span| {
        if s.a == r0 && s.b == r1 {
            data.contiguous((s.io_off * 512) as usize, len)
        } else {
            None
        }
    };
    for s in spans {
        if in_place(s).is_some() {
            continue;
        }
        let off = ((s.a - r0) * 512) as usize;
        let bytes = ((s.b - s.a) * 512) as usize;
        let Some(dst) = bufs.get_mut(layout.data_member(s.k)).and_then(|b| slice_mut(b, off, bytes)) else {
            return false;
        };
        let copied = data.pieces((s.io_off * 512) as usize, bytes, |pos, piece| {
            dst.get_mut(pos..pos + piece.len()).map(|d| d.copy_from_slice(piece)).is_some()
        });
        if !copied {
            return false;
        }
    }
    let bufs: &[Option<DmaBuf>] = bufs;
    // Spans are in chunk order (one per chunk at most).
    let source = |m: usize| -> &[u8] {
        let span = match layout.role_of(m) {
            Some(StripeRole::Data(k)) => spans.binary_search_by_key(&k, |s| s.k).ok().and_then(|i| spans.get(i)),
            _ => None,
        };
        span.and_then(in_place).unwrap_or_else(|| bufs.get(m).map_or(&[][..], |b| slice(b, 0, len)))
    };
    let items = layout.syndrome_members().map(source);
    with_slices(layout.data_disks(), items, |refs| match (slice_mut(pb, 0, len), layout.q_member()) {
        (Some(ps), Some(_)) => slice_mut(qb, 0, len).is_some_and(|qs| parity.gen_pq(refs, ps, qs).is_ok()),
        (Some(ps), None) => parity.xor(ps, refs).is_ok(),
        (None, _) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_pieces_follow_the_segments() {
        let a = [1u8, 2, 3];
        let b: [u8; 0] = [];
        let c = [4u8, 5, 6, 7];
        let segs: [&[u8]; 3] = [&a, &b, &c];
        let d = Data::Segs(&segs);
        let mut got = Vec::new();
        assert!(d.pieces(1, 5, |pos, p| {
            got.push((pos, p.to_vec()));
            true
        }));
        assert_eq!(got, vec![(0, vec![2, 3]), (2, vec![4, 5, 6])]);
        // Past the end, or refused by the callee.
        assert!(!d.pieces(5, 3, |_, _| true));
        assert!(!d.pieces(0, 2, |_, _| false));
        assert_eq!(d.contiguous(3, 4), Some(&c[..]));
        assert_eq!(d.contiguous(2, 2), None);
        assert_eq!(d.contiguous(7, 1), None);
        let z = [0u8; 8];
        assert_eq!(Data::Zero(&z).contiguous(5, 8), Some(&z[..]));
        assert_eq!(Data::Zero(&z).contiguous(0, 9), None);
    }

    #[test]
    fn slices_small_and_wide() {
        let x = [7u8; 4];
        for n in [0usize, 1, SMALL, SMALL + 1, MAX_SYNDROME_DATA] {
            let got = with_slices(n, std::iter::repeat_n(&x[..], n), |s| (s.len(), s.iter().all(|v| v == &x)));
            assert_eq!(got, (n, true));
        }
    }
}
