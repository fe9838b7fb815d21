//! In-place processing of a request's buffers (decrypting what a read brought in), and copies
//! between a request's buffers and bounce buffers at an offset.
//!
//! The only module of this crate with `unsafe`: it turns a request's [`IoVec`]s into slices
//! while the request is owned by the volume channel and no device IO is in flight on them.

use bdev::{IoVec, IoVecs};

/// Run `f(unit_index, unit)` over each `unit`-byte piece of bytes `[off, off+len)` of `iovs`.
/// Units that straddle two segments are gathered into `tmp` (at least `unit` bytes), processed
/// and scattered back. Returns false (and does nothing) when the range is out of bounds.
///
/// The caller must own the buffers: they belong to a request the caller is executing, and no
/// device IO naming them is in flight.
pub fn for_each_unit_mut(
    iovs: &IoVecs,
    off: usize,
    len: usize,
    unit: usize,
    tmp: &mut [u8],
    mut f: impl FnMut(usize, &mut [u8]),
) -> bool {
    if unit == 0 || !len.is_multiple_of(unit) || tmp.len() < unit {
        return false;
    }
    let Some(sub) = iovs.slice(off as u64, len as u64) else { return false };
    let segs: &[IoVec] = sub.as_slice();
    let mut idx = 0;
    let mut carry = 0; // bytes of a straddling unit gathered in tmp
                       // (segment, offset, length) parts of the unit gathered in tmp.
    let mut pending = [(0usize, 0usize, 0usize); bdev::MAX_IOVS];
    let mut np = 0;
    for (si, v) in segs.iter().enumerate() {
        // SAFETY: the segment comes from a request this channel is executing (buffer contract of
        // `IoRequest`: valid for reads and writes, untouched by anyone else until completion),
        // and the caller guarantees no device IO on it is in flight, so nothing else accesses it.
        let s: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(v.addr() as *mut u8, v.len()) };
        let mut pos = 0;
        if carry > 0 {
            let need = (unit - carry).min(s.len());
            tmp[carry..carry + need].copy_from_slice(&s[..need]);
            pending[np] = (si, 0, need);
            np += 1;
            carry += need;
            pos = need;
            if carry < unit {
                continue;
            }
            f(idx, &mut tmp[..unit]);
            idx += 1;
            let mut t = 0;
            for &(psi, poff, plen) in &pending[..np] {
                if psi == si {
                    s[poff..poff + plen].copy_from_slice(&tmp[t..t + plen]);
                } else {
                    let pv = segs[psi];
                    // SAFETY: as above; an earlier segment, distinct from `s` (segments of one
                    // request do not overlap), whose own slice is no longer borrowed.
                    let ps: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(pv.addr() as *mut u8, pv.len()) };
                    ps[poff..poff + plen].copy_from_slice(&tmp[t..t + plen]);
                }
                t += plen;
            }
            np = 0;
            carry = 0;
        }
        while pos + unit <= s.len() {
            f(idx, &mut s[pos..pos + unit]);
            idx += 1;
            pos += unit;
        }
        if pos < s.len() {
            let rest = s.len() - pos;
            tmp[..rest].copy_from_slice(&s[pos..]);
            pending[np] = (si, pos, rest);
            np += 1;
            carry = rest;
        }
    }
    carry == 0
}

/// Copy `src` into bytes `[off, off+src.len())` of `iovs`. False when out of range.
pub fn copy_in(iovs: &IoVecs, off: usize, src: &[u8]) -> bool {
    match iovs.slice(off as u64, src.len() as u64) {
        Some(s) => bdev::dma::copy_to_iovs(s.as_slice(), src) == src.len(),
        None => false,
    }
}

/// Copy bytes `[off, off+dst.len())` of `iovs` into `dst`. False when out of range.
pub fn copy_out(iovs: &IoVecs, off: usize, dst: &mut [u8]) -> bool {
    match iovs.slice(off as u64, dst.len() as u64) {
        Some(s) => bdev::dma::copy_from_iovs(s.as_slice(), dst) == dst.len(),
        None => false,
    }
}

/// Zero bytes `[off, off+len)` of `iovs`. False when out of range.
pub fn zero(iovs: &IoVecs, off: usize, len: usize) -> bool {
    match iovs.slice(off as u64, len as u64) {
        Some(s) => {
            bdev::dma::zero_iovs(s.as_slice());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdev::DmaBuf;

    #[test]
    fn units_straddling_segments_are_gathered() {
        let mut a = DmaBuf::alloc(4096).unwrap();
        let mut b = DmaBuf::alloc(4096).unwrap();
        for (i, x) in a.as_mut_slice().iter_mut().enumerate() {
            *x = i as u8;
        }
        b.as_mut_slice().fill(0);
        let mut v = IoVecs::new();
        v.push(a.iovec_range(0, 700).unwrap());
        v.push(b.iovec_range(0, 324).unwrap());
        let mut tmp = [0u8; 512];
        let mut seen = Vec::new();
        assert!(for_each_unit_mut(&v, 0, 1024, 512, &mut tmp, |i, u| {
            seen.push((i, u[0], u.len()));
            u.fill(0xee);
        }));
        assert_eq!(seen, vec![(0, 0, 512), (1, 0, 512)]);
        assert!(a.as_slice()[..700].iter().all(|&x| x == 0xee));
        assert!(b.as_slice()[..324].iter().all(|&x| x == 0xee));
        assert!(b.as_slice()[324..].iter().all(|&x| x == 0));
        assert!(!for_each_unit_mut(&v, 0, 2048, 512, &mut tmp, |_, _| {}));
    }
}
