//! x86-64 SIMD kernels: SSE2 and AVX2 for XOR and P/Q generation
//! (multiply-by-{02} as compare/add/and/xor), SSSE3 and AVX2 `pshufb`
//! split-nibble tables for multiplication by constants.
//!
//! Every kernel is an `unsafe fn` only because it is compiled for a CPU
//! feature: callers must have checked the feature (the [`super::Backend`]
//! values that reach here exist only after `is_x86_feature_detected!`).
//! Each kernel works on the first `n` bytes, `n` being its shortest
//! buffer: the vector loop covers whole 64-byte (AVX2) or 32-byte (SSE)
//! blocks below `n`, and the portable kernel finishes the tail. The only
//! unsafe operations are unaligned loads and stores through pointers that
//! stay below `n` of the buffer they come from.

use core::arch::x86_64::*;

use super::gf::nibble_tables;
use super::portable::{self, min_len};

// ---------------------------------------------------------------- AVX2 --

#[inline]
#[target_feature(enable = "avx2")]
fn mul2_256(v: __m256i) -> __m256i {
    let mask = _mm256_cmpgt_epi8(_mm256_setzero_si256(), v);
    let dbl = _mm256_add_epi8(v, v);
    _mm256_xor_si256(dbl, _mm256_and_si256(mask, _mm256_set1_epi8(0x1d)))
}

/// Broadcast split-nibble tables for multiplication by `c`.
#[inline]
#[target_feature(enable = "avx2")]
fn tables_256(c: u8) -> (__m256i, __m256i) {
    let (lo, hi) = nibble_tables(c);
    // SAFETY: `lo` and `hi` are 16-byte arrays; unaligned 16-byte loads.
    let (lo, hi) = unsafe { (_mm_loadu_si128(lo.as_ptr().cast()), _mm_loadu_si128(hi.as_ptr().cast())) };
    (_mm256_broadcastsi128_si256(lo), _mm256_broadcastsi128_si256(hi))
}

#[inline]
#[target_feature(enable = "avx2")]
fn mulc_256(v: __m256i, t: (__m256i, __m256i)) -> __m256i {
    let nib = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(v, nib);
    let hi = _mm256_and_si256(_mm256_srli_epi64(v, 4), nib);
    _mm256_xor_si256(_mm256_shuffle_epi8(t.0, lo), _mm256_shuffle_epi8(t.1, hi))
}

/// `dst ^= src`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn xor_into_avx2(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let end = n - n % 64;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 64 <= n <= len of dst and src.
        unsafe {
            let a0 = _mm256_loadu_si256(d.add(off).cast());
            let a1 = _mm256_loadu_si256(d.add(off + 32).cast());
            let b0 = _mm256_loadu_si256(s.add(off).cast());
            let b1 = _mm256_loadu_si256(s.add(off + 32).cast());
            _mm256_storeu_si256(d.add(off).cast(), _mm256_xor_si256(a0, b0));
            _mm256_storeu_si256(d.add(off + 32).cast(), _mm256_xor_si256(a1, b1));
        }
        off += 64;
    }
    portable::xor_into(dst, src, end);
}

/// `dst ^= a ^ b`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn xor2_into_avx2(dst: &mut [u8], a: &[u8], b: &[u8]) {
    let n = dst.len().min(a.len()).min(b.len());
    let end = n - n % 64;
    let (d, x, y) = (dst.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 64 <= n <= len of dst, a and b.
        unsafe {
            let d0 = _mm256_loadu_si256(d.add(off).cast());
            let d1 = _mm256_loadu_si256(d.add(off + 32).cast());
            let x0 = _mm256_loadu_si256(x.add(off).cast());
            let x1 = _mm256_loadu_si256(x.add(off + 32).cast());
            let y0 = _mm256_loadu_si256(y.add(off).cast());
            let y1 = _mm256_loadu_si256(y.add(off + 32).cast());
            _mm256_storeu_si256(d.add(off).cast(), _mm256_xor_si256(d0, _mm256_xor_si256(x0, y0)));
            _mm256_storeu_si256(d.add(off + 32).cast(), _mm256_xor_si256(d1, _mm256_xor_si256(x1, y1)));
        }
        off += 64;
    }
    portable::xor2_into(dst, a, b, end);
}

/// `p ^= old ^ new` and `q ^= c * (old ^ new)`, one pass.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn replace_pq_avx2(old: &[u8], new: &[u8], p: &mut [u8], q: &mut [u8], c: u8) {
    let t = tables_256(c);
    let n = old.len().min(new.len()).min(p.len()).min(q.len());
    let end = n - n % 32;
    let (o, w, pp, qp) = (old.as_ptr(), new.as_ptr(), p.as_mut_ptr(), q.as_mut_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of old, new, p and q.
        unsafe {
            let d = _mm256_xor_si256(_mm256_loadu_si256(o.add(off).cast()), _mm256_loadu_si256(w.add(off).cast()));
            let pv = _mm256_loadu_si256(pp.add(off).cast());
            let qv = _mm256_loadu_si256(qp.add(off).cast());
            _mm256_storeu_si256(pp.add(off).cast(), _mm256_xor_si256(pv, d));
            _mm256_storeu_si256(qp.add(off).cast(), _mm256_xor_si256(qv, mulc_256(d, t)));
        }
        off += 32;
    }
    portable::replace_pq(old, new, p, q, c, end);
}

/// `dst = XOR of srcs` except `srcs[skip]`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn xor_gen_avx2(dst: &mut [u8], srcs: &[&[u8]], skip: usize) {
    let n = min_len(srcs, [skip, usize::MAX], dst.len());
    let end = n - n % 64;
    let d = dst.as_mut_ptr();
    let mut off = 0;
    while off < end {
        let mut a0 = _mm256_setzero_si256();
        let mut a1 = _mm256_setzero_si256();
        for (i, s) in srcs.iter().enumerate() {
            if i == skip {
                continue;
            }
            // SAFETY: off + 64 <= n <= s.len().
            unsafe {
                a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(s.as_ptr().add(off).cast()));
                a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(s.as_ptr().add(off + 32).cast()));
            }
        }
        // SAFETY: off + 64 <= n <= dst.len().
        unsafe {
            _mm256_storeu_si256(d.add(off).cast(), a0);
            _mm256_storeu_si256(d.add(off + 32).cast(), a1);
        }
        off += 64;
    }
    portable::xor_gen(dst, srcs, skip, end);
}

/// P and Q of `data` with the slots in `skip` taken as zero.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gen_pq_avx2(data: &[&[u8]], skip: [usize; 2], p: &mut [u8], q: &mut [u8]) {
    let n = min_len(data, skip, p.len().min(q.len()));
    let end = n - n % 64;
    let (pp, qp) = (p.as_mut_ptr(), q.as_mut_ptr());
    let mut off = 0;
    while off < end {
        let mut p0 = _mm256_setzero_si256();
        let mut p1 = _mm256_setzero_si256();
        let mut q0 = _mm256_setzero_si256();
        let mut q1 = _mm256_setzero_si256();
        for (i, d) in data.iter().enumerate().rev() {
            q0 = mul2_256(q0);
            q1 = mul2_256(q1);
            if i == skip[0] || i == skip[1] {
                continue;
            }
            // SAFETY: off + 64 <= n <= d.len().
            let (d0, d1) = unsafe {
                (_mm256_loadu_si256(d.as_ptr().add(off).cast()), _mm256_loadu_si256(d.as_ptr().add(off + 32).cast()))
            };
            p0 = _mm256_xor_si256(p0, d0);
            p1 = _mm256_xor_si256(p1, d1);
            q0 = _mm256_xor_si256(q0, d0);
            q1 = _mm256_xor_si256(q1, d1);
        }
        // SAFETY: off + 64 <= n <= len of p and q.
        unsafe {
            _mm256_storeu_si256(pp.add(off).cast(), p0);
            _mm256_storeu_si256(pp.add(off + 32).cast(), p1);
            _mm256_storeu_si256(qp.add(off).cast(), q0);
            _mm256_storeu_si256(qp.add(off + 32).cast(), q1);
        }
        off += 64;
    }
    portable::gen_pq(data, skip, p, q, end);
}

/// `dst ^= c * src`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn mul_acc_avx2(dst: &mut [u8], src: &[u8], c: u8) {
    let t = tables_256(c);
    let n = dst.len().min(src.len());
    let end = n - n % 32;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of dst and src.
        unsafe {
            let v = _mm256_loadu_si256(s.add(off).cast());
            let a = _mm256_loadu_si256(d.add(off).cast());
            _mm256_storeu_si256(d.add(off).cast(), _mm256_xor_si256(a, mulc_256(v, t)));
        }
        off += 32;
    }
    portable::mul_acc(dst, src, c, end);
}

/// See [`portable::combine2`].
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn combine2_avx2(p: &[u8], q: &[u8], dx: &mut [u8], dy: &mut [u8], a: u8, b: u8) {
    let (ta, tb) = (tables_256(a), tables_256(b));
    let n = p.len().min(q.len()).min(dx.len()).min(dy.len());
    let end = n - n % 32;
    let (xp, yp) = (dx.as_mut_ptr(), dy.as_mut_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of p, q, dx and dy.
        unsafe {
            let px = _mm256_xor_si256(
                _mm256_loadu_si256(p.as_ptr().add(off).cast()),
                _mm256_loadu_si256(xp.add(off).cast()),
            );
            let qx = _mm256_xor_si256(
                _mm256_loadu_si256(q.as_ptr().add(off).cast()),
                _mm256_loadu_si256(yp.add(off).cast()),
            );
            let d = _mm256_xor_si256(mulc_256(px, ta), mulc_256(qx, tb));
            _mm256_storeu_si256(xp.add(off).cast(), d);
            _mm256_storeu_si256(yp.add(off).cast(), _mm256_xor_si256(px, d));
        }
        off += 32;
    }
    portable::combine2(p, q, dx, dy, a, b, end);
}

/// See [`portable::combine_q`].
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn combine_q_avx2(q: &[u8], dx: &mut [u8], p: &mut [u8], c: u8) {
    let t = tables_256(c);
    let n = q.len().min(dx.len()).min(p.len());
    let end = n - n % 32;
    let (xp, pp) = (dx.as_mut_ptr(), p.as_mut_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of q, dx and p.
        unsafe {
            let v = _mm256_xor_si256(
                _mm256_loadu_si256(q.as_ptr().add(off).cast()),
                _mm256_loadu_si256(xp.add(off).cast()),
            );
            let d = mulc_256(v, t);
            _mm256_storeu_si256(xp.add(off).cast(), d);
            let pv = _mm256_loadu_si256(pp.add(off).cast());
            _mm256_storeu_si256(pp.add(off).cast(), _mm256_xor_si256(pv, d));
        }
        off += 32;
    }
    portable::combine_q(q, dx, p, c, end);
}

// ------------------------------------------------------- SSE2 / SSSE3 --

#[inline]
#[target_feature(enable = "sse2")]
fn mul2_128(v: __m128i) -> __m128i {
    let mask = _mm_cmpgt_epi8(_mm_setzero_si128(), v);
    let dbl = _mm_add_epi8(v, v);
    _mm_xor_si128(dbl, _mm_and_si128(mask, _mm_set1_epi8(0x1d)))
}

#[inline]
#[target_feature(enable = "ssse3")]
fn tables_128(c: u8) -> (__m128i, __m128i) {
    let (lo, hi) = nibble_tables(c);
    // SAFETY: `lo` and `hi` are 16-byte arrays; unaligned 16-byte loads.
    unsafe { (_mm_loadu_si128(lo.as_ptr().cast()), _mm_loadu_si128(hi.as_ptr().cast())) }
}

#[inline]
#[target_feature(enable = "ssse3")]
fn mulc_128(v: __m128i, t: (__m128i, __m128i)) -> __m128i {
    let nib = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(v, nib);
    let hi = _mm_and_si128(_mm_srli_epi64(v, 4), nib);
    _mm_xor_si128(_mm_shuffle_epi8(t.0, lo), _mm_shuffle_epi8(t.1, hi))
}

/// `dst ^= src`.
///
/// # Safety
/// The CPU must support SSE2.
#[target_feature(enable = "sse2")]
pub(super) unsafe fn xor_into_sse2(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let end = n - n % 32;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of dst and src.
        unsafe {
            let a0 = _mm_loadu_si128(d.add(off).cast());
            let a1 = _mm_loadu_si128(d.add(off + 16).cast());
            let b0 = _mm_loadu_si128(s.add(off).cast());
            let b1 = _mm_loadu_si128(s.add(off + 16).cast());
            _mm_storeu_si128(d.add(off).cast(), _mm_xor_si128(a0, b0));
            _mm_storeu_si128(d.add(off + 16).cast(), _mm_xor_si128(a1, b1));
        }
        off += 32;
    }
    portable::xor_into(dst, src, end);
}

/// `dst ^= a ^ b`.
///
/// # Safety
/// The CPU must support SSE2.
#[target_feature(enable = "sse2")]
pub(super) unsafe fn xor2_into_sse2(dst: &mut [u8], a: &[u8], b: &[u8]) {
    let n = dst.len().min(a.len()).min(b.len());
    let end = n - n % 32;
    let (d, x, y) = (dst.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 32 <= n <= len of dst, a and b.
        unsafe {
            let d0 = _mm_loadu_si128(d.add(off).cast());
            let d1 = _mm_loadu_si128(d.add(off + 16).cast());
            let x0 = _mm_loadu_si128(x.add(off).cast());
            let x1 = _mm_loadu_si128(x.add(off + 16).cast());
            let y0 = _mm_loadu_si128(y.add(off).cast());
            let y1 = _mm_loadu_si128(y.add(off + 16).cast());
            _mm_storeu_si128(d.add(off).cast(), _mm_xor_si128(d0, _mm_xor_si128(x0, y0)));
            _mm_storeu_si128(d.add(off + 16).cast(), _mm_xor_si128(d1, _mm_xor_si128(x1, y1)));
        }
        off += 32;
    }
    portable::xor2_into(dst, a, b, end);
}

/// `dst = XOR of srcs` except `srcs[skip]`.
///
/// # Safety
/// The CPU must support SSE2.
#[target_feature(enable = "sse2")]
pub(super) unsafe fn xor_gen_sse2(dst: &mut [u8], srcs: &[&[u8]], skip: usize) {
    let n = min_len(srcs, [skip, usize::MAX], dst.len());
    let end = n - n % 32;
    let d = dst.as_mut_ptr();
    let mut off = 0;
    while off < end {
        let mut a0 = _mm_setzero_si128();
        let mut a1 = _mm_setzero_si128();
        for (i, s) in srcs.iter().enumerate() {
            if i == skip {
                continue;
            }
            // SAFETY: off + 32 <= n <= s.len().
            unsafe {
                a0 = _mm_xor_si128(a0, _mm_loadu_si128(s.as_ptr().add(off).cast()));
                a1 = _mm_xor_si128(a1, _mm_loadu_si128(s.as_ptr().add(off + 16).cast()));
            }
        }
        // SAFETY: off + 32 <= n <= dst.len().
        unsafe {
            _mm_storeu_si128(d.add(off).cast(), a0);
            _mm_storeu_si128(d.add(off + 16).cast(), a1);
        }
        off += 32;
    }
    portable::xor_gen(dst, srcs, skip, end);
}

/// P and Q of `data` with the slots in `skip` taken as zero.
///
/// # Safety
/// The CPU must support SSE2.
#[target_feature(enable = "sse2")]
pub(super) unsafe fn gen_pq_sse2(data: &[&[u8]], skip: [usize; 2], p: &mut [u8], q: &mut [u8]) {
    let n = min_len(data, skip, p.len().min(q.len()));
    let end = n - n % 32;
    let (pp, qp) = (p.as_mut_ptr(), q.as_mut_ptr());
    let mut off = 0;
    while off < end {
        let mut p0 = _mm_setzero_si128();
        let mut p1 = _mm_setzero_si128();
        let mut q0 = _mm_setzero_si128();
        let mut q1 = _mm_setzero_si128();
        for (i, d) in data.iter().enumerate().rev() {
            q0 = mul2_128(q0);
            q1 = mul2_128(q1);
            if i == skip[0] || i == skip[1] {
                continue;
            }
            // SAFETY: off + 32 <= n <= d.len().
            let (d0, d1) = unsafe {
                (_mm_loadu_si128(d.as_ptr().add(off).cast()), _mm_loadu_si128(d.as_ptr().add(off + 16).cast()))
            };
            p0 = _mm_xor_si128(p0, d0);
            p1 = _mm_xor_si128(p1, d1);
            q0 = _mm_xor_si128(q0, d0);
            q1 = _mm_xor_si128(q1, d1);
        }
        // SAFETY: off + 32 <= n <= len of p and q.
        unsafe {
            _mm_storeu_si128(pp.add(off).cast(), p0);
            _mm_storeu_si128(pp.add(off + 16).cast(), p1);
            _mm_storeu_si128(qp.add(off).cast(), q0);
            _mm_storeu_si128(qp.add(off + 16).cast(), q1);
        }
        off += 32;
    }
    portable::gen_pq(data, skip, p, q, end);
}

/// `dst ^= c * src`.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn mul_acc_ssse3(dst: &mut [u8], src: &[u8], c: u8) {
    let t = tables_128(c);
    let n = dst.len().min(src.len());
    let end = n - n % 16;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 16 <= n <= len of dst and src.
        unsafe {
            let v = _mm_loadu_si128(s.add(off).cast());
            let a = _mm_loadu_si128(d.add(off).cast());
            _mm_storeu_si128(d.add(off).cast(), _mm_xor_si128(a, mulc_128(v, t)));
        }
        off += 16;
    }
    portable::mul_acc(dst, src, c, end);
}

/// See [`portable::combine2`].
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn combine2_ssse3(p: &[u8], q: &[u8], dx: &mut [u8], dy: &mut [u8], a: u8, b: u8) {
    let (ta, tb) = (tables_128(a), tables_128(b));
    let n = p.len().min(q.len()).min(dx.len()).min(dy.len());
    let end = n - n % 16;
    let (xp, yp) = (dx.as_mut_ptr(), dy.as_mut_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 16 <= n <= len of p, q, dx and dy.
        unsafe {
            let px = _mm_xor_si128(_mm_loadu_si128(p.as_ptr().add(off).cast()), _mm_loadu_si128(xp.add(off).cast()));
            let qx = _mm_xor_si128(_mm_loadu_si128(q.as_ptr().add(off).cast()), _mm_loadu_si128(yp.add(off).cast()));
            let d = _mm_xor_si128(mulc_128(px, ta), mulc_128(qx, tb));
            _mm_storeu_si128(xp.add(off).cast(), d);
            _mm_storeu_si128(yp.add(off).cast(), _mm_xor_si128(px, d));
        }
        off += 16;
    }
    portable::combine2(p, q, dx, dy, a, b, end);
}

/// See [`portable::combine_q`].
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn combine_q_ssse3(q: &[u8], dx: &mut [u8], p: &mut [u8], c: u8) {
    let t = tables_128(c);
    let n = q.len().min(dx.len()).min(p.len());
    let end = n - n % 16;
    let (xp, pp) = (dx.as_mut_ptr(), p.as_mut_ptr());
    let mut off = 0;
    while off < end {
        // SAFETY: off + 16 <= n <= len of q, dx and p.
        unsafe {
            let v = _mm_xor_si128(_mm_loadu_si128(q.as_ptr().add(off).cast()), _mm_loadu_si128(xp.add(off).cast()));
            let d = mulc_128(v, t);
            _mm_storeu_si128(xp.add(off).cast(), d);
            let pv = _mm_loadu_si128(pp.add(off).cast());
            _mm_storeu_si128(pp.add(off).cast(), _mm_xor_si128(pv, d));
        }
        off += 16;
    }
    portable::combine_q(q, dx, p, c, end);
}
