//! Portable kernels: 64-bit SWAR for XOR and multiply-by-2, table lookups
//! for multiplication by constants. Every kernel works on bytes
//! `[start, n)` where `n` is the shortest buffer, so the SIMD kernels can
//! hand over their tails.

use super::gf::MUL;

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI1: u64 = 0x8080_8080_8080_8080;

/// Multiplies each byte lane by {02}.
#[inline(always)]
fn mul2(x: u64) -> u64 {
    let carry = (x & HI1) >> 7;
    ((x & LO7) << 1) ^ (carry * 0x1d)
}

#[inline(always)]
fn mul2_byte(x: u8) -> u8 {
    (x << 1) ^ if x & 0x80 != 0 { 0x1d } else { 0 }
}

/// Shortest of `first` and the buffers not in `skip`.
pub(super) fn min_len(bufs: &[&[u8]], skip: [usize; 2], first: usize) -> usize {
    bufs.iter()
        .enumerate()
        .filter(|(i, _)| *i != skip[0] && *i != skip[1])
        .map(|(_, b)| b.len())
        .fold(first, usize::min)
}

/// `dst ^= src`.
pub(super) fn xor_into(dst: &mut [u8], src: &[u8], start: usize) {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(start..n), src.get(start..n)) {
        xor_slices(d, s);
    }
}

/// `d ^= s` over equal-length slices.
fn xor_slices(d: &mut [u8], s: &[u8]) {
    let mut dw = d.chunks_exact_mut(8);
    let mut sw = s.chunks_exact(8);
    for (a, b) in (&mut dw).zip(&mut sw) {
        let v = u64::from_ne_bytes(<[u8; 8]>::try_from(&*a).unwrap_or_default())
            ^ u64::from_ne_bytes(<[u8; 8]>::try_from(b).unwrap_or_default());
        a.copy_from_slice(&v.to_ne_bytes());
    }
    for (a, b) in dw.into_remainder().iter_mut().zip(sw.remainder()) {
        *a ^= b;
    }
}

/// `dst ^= a ^ b`.
pub(super) fn xor2_into(dst: &mut [u8], a: &[u8], b: &[u8], start: usize) {
    let n = dst.len().min(a.len()).min(b.len());
    if let (Some(d), Some(a), Some(b)) = (dst.get_mut(start..n), a.get(start..n), b.get(start..n)) {
        xor_slices(d, a);
        xor_slices(d, b);
    }
}

/// `p ^= old ^ new` and `q ^= c * (old ^ new)`.
pub(super) fn replace_pq(old: &[u8], new: &[u8], p: &mut [u8], q: &mut [u8], c: u8, start: usize) {
    let row = &MUL[c as usize];
    let n = old.len().min(new.len()).min(p.len()).min(q.len());
    let (Some(p), Some(q), Some(old), Some(new)) =
        (p.get_mut(start..n), q.get_mut(start..n), old.get(start..n), new.get(start..n))
    else {
        return;
    };
    for (((pv, qv), &o), &nv) in p.iter_mut().zip(q.iter_mut()).zip(old).zip(new) {
        let d = o ^ nv;
        *pv ^= d;
        *qv ^= row[d as usize];
    }
}

/// Multiplies every byte of `q` by {02}.
fn mul2_slice(q: &mut [u8]) {
    let mut qw = q.chunks_exact_mut(8);
    for a in &mut qw {
        let v = mul2(u64::from_ne_bytes(<[u8; 8]>::try_from(&*a).unwrap_or_default()));
        a.copy_from_slice(&v.to_ne_bytes());
    }
    for b in qw.into_remainder() {
        *b = mul2_byte(*b);
    }
}

/// `dst = XOR of srcs` except `srcs[skip]` (one streaming pass per source).
pub(super) fn xor_gen(dst: &mut [u8], srcs: &[&[u8]], skip: usize, start: usize) {
    let n = min_len(srcs, [skip, usize::MAX], dst.len());
    let Some(d) = dst.get_mut(start..n) else {
        return;
    };
    d.fill(0);
    for (i, s) in srcs.iter().enumerate() {
        if i != skip {
            if let Some(s) = s.get(start..n) {
                xor_slices(d, s);
            }
        }
    }
}

/// `p = XOR of data`, `q = sum of g^i * data[i]` (Horner, highest slot
/// first), data slots in `skip` taken as zero.
pub(super) fn gen_pq(data: &[&[u8]], skip: [usize; 2], p: &mut [u8], q: &mut [u8], start: usize) {
    let n = min_len(data, skip, p.len().min(q.len()));
    let (Some(p), Some(q)) = (p.get_mut(start..n), q.get_mut(start..n)) else {
        return;
    };
    p.fill(0);
    q.fill(0);
    let mut first = true;
    for (i, d) in data.iter().enumerate().rev() {
        if !first {
            mul2_slice(q);
        }
        if i == skip[0] || i == skip[1] {
            continue;
        }
        if let Some(d) = d.get(start..n) {
            xor_slices(p, d);
            xor_slices(q, d);
            first = false;
        }
    }
}

/// `dst ^= c * src`.
pub(super) fn mul_acc(dst: &mut [u8], src: &[u8], c: u8, start: usize) {
    let row = &MUL[c as usize];
    let n = dst.len().min(src.len());
    let (Some(d), Some(s)) = (dst.get_mut(start..n), src.get(start..n)) else {
        return;
    };
    for (a, &b) in d.iter_mut().zip(s) {
        *a ^= row[b as usize];
    }
}

/// Two-data recovery, second step: on entry `dx` holds the partial P and
/// `dy` the partial Q (both computed with the lost slots as zero); on exit
/// they hold the lost data.
pub(super) fn combine2(p: &[u8], q: &[u8], dx: &mut [u8], dy: &mut [u8], a: u8, b: u8, start: usize) {
    let ra = &MUL[a as usize];
    let rb = &MUL[b as usize];
    let n = p.len().min(q.len()).min(dx.len()).min(dy.len());
    let (Some(dx), Some(dy)) = (dx.get_mut(start..n), dy.get_mut(start..n)) else {
        return;
    };
    let (Some(p), Some(q)) = (p.get(start..n), q.get(start..n)) else {
        return;
    };
    for (((x, y), &pv), &qv) in dx.iter_mut().zip(dy.iter_mut()).zip(p).zip(q) {
        let px = pv ^ *x;
        let qx = qv ^ *y;
        let d = ra[px as usize] ^ rb[qx as usize];
        *x = d;
        *y = px ^ d;
    }
}

/// Data-plus-P recovery, second step: on entry `dx` holds the partial Q
/// and `p` the partial P; on exit `dx = c * (q ^ partial Q)` is the lost
/// data and `p` the full P.
pub(super) fn combine_q(q: &[u8], dx: &mut [u8], p: &mut [u8], c: u8, start: usize) {
    let rc = &MUL[c as usize];
    let n = q.len().min(dx.len()).min(p.len());
    let (Some(dx), Some(p), Some(q)) = (dx.get_mut(start..n), p.get_mut(start..n), q.get(start..n)) else {
        return;
    };
    for ((x, pv), &qv) in dx.iter_mut().zip(p.iter_mut()).zip(q) {
        let d = rc[(qv ^ *x) as usize];
        *x = d;
        *pv ^= d;
    }
}
