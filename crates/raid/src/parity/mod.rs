//! Parity arithmetic: XOR (raid4/5, raid6 P) and the raid6 Q syndrome in
//! GF(2^8) (polynomial 0x11d, generator {02}, as Linux):
//! `Q = sum(g^i * D_i)` over data slots `i` (for md arrays the slot order
//! is [`crate::geometry::StripeLayout::syndrome_members`]).
//!
//! [`Parity`] runs the fastest kernels the CPU has ([`Backend::best`]:
//! AVX2, else SSSE3, else SSE2, else portable 64-bit SWAR code); any
//! supported backend can be chosen explicitly, which is how the tests
//! compare them.
//!
//! Recovery covers every raid6 double failure: one data slot from P
//! ([`Parity::recover_data_from_p`]), one data slot plus P from Q
//! ([`Parity::recover_data_from_q`]), two data slots
//! ([`Parity::recover_two_data`]); lost P and/or Q are regenerated with
//! [`Parity::gen_pq`].

pub mod gf;
mod portable;
#[cfg(target_arch = "x86_64")]
mod simd;

use std::sync::OnceLock;

use thiserror::Error;

/// Most data slots a Q syndrome can distinguish (`g^i` has order 255).
pub const MAX_SYNDROME_DATA: usize = 255;

/// A kernel implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// 64-bit SWAR and table lookups; runs anywhere.
    Portable,
    /// SSE2 XOR and P/Q; table-based constant multiplication.
    Sse2,
    /// SSE2 XOR and P/Q; SSSE3 `pshufb` constant multiplication.
    Ssse3,
    /// AVX2 for everything.
    Avx2,
}

impl Backend {
    /// Every backend, slowest first.
    pub const ALL: [Backend; 4] = [Backend::Portable, Backend::Sse2, Backend::Ssse3, Backend::Avx2];

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2 => std::arch::is_x86_feature_detected!("sse2"),
            #[cfg(target_arch = "x86_64")]
            Backend::Ssse3 => {
                std::arch::is_x86_feature_detected!("sse2") && std::arch::is_x86_feature_detected!("ssse3")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The backends this CPU supports, slowest first.
    pub fn supported() -> impl Iterator<Item = Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_supported())
    }

    /// The fastest supported backend (detected once).
    pub fn best() -> Backend {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| Backend::supported().last().unwrap_or(Backend::Portable))
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Sse2 => "sse2",
            Backend::Ssse3 => "ssse3",
            Backend::Avx2 => "avx2",
        }
    }
}

/// Errors from parity operations (bad arguments).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParityError {
    /// The CPU lacks the backend's instructions.
    #[error("parity backend {0:?} not supported by this cpu")]
    Unsupported(Backend),
    /// Buffers of different lengths.
    #[error("parity buffer {index} has {got} bytes, expected {expected}")]
    LengthMismatch {
        /// Position of the offending buffer in the argument list.
        index: usize,
        /// Length expected.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// No sources for an XOR.
    #[error("no parity sources")]
    NoSources,
    /// More data slots than Q can handle.
    #[error("{0} data slots, at most {MAX_SYNDROME_DATA} supported")]
    TooManySlots(usize),
    /// A slot number outside the data.
    #[error("slot {slot} outside {slots} data slots")]
    BadSlot {
        /// Slot given.
        slot: usize,
        /// Data slots.
        slots: usize,
    },
    /// The two lost slots are the same.
    #[error("lost slots must differ")]
    SameSlot,
}

/// Parity engine bound to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parity {
    backend: Backend,
}

impl Default for Parity {
    fn default() -> Self {
        Parity::new()
    }
}

fn check_len(index: usize, expected: usize, got: usize) -> Result<(), ParityError> {
    if got == expected {
        Ok(())
    } else {
        Err(ParityError::LengthMismatch { index, expected, got })
    }
}

/// Checks data slot lengths (ignoring `skip`) against `expected`.
fn check_data(data: &[&[u8]], skip: [usize; 2], expected: usize) -> Result<(), ParityError> {
    if data.len() > MAX_SYNDROME_DATA {
        return Err(ParityError::TooManySlots(data.len()));
    }
    for (i, d) in data.iter().enumerate() {
        if i != skip[0] && i != skip[1] {
            check_len(i, expected, d.len())?;
        }
    }
    Ok(())
}

fn check_slot(slot: usize, slots: usize) -> Result<(), ParityError> {
    if slot < slots {
        Ok(())
    } else {
        Err(ParityError::BadSlot { slot, slots })
    }
}

const NONE: usize = usize::MAX;

impl Parity {
    /// Engine on the fastest backend.
    pub fn new() -> Parity {
        Parity { backend: Backend::best() }
    }

    /// Engine on a given backend.
    pub fn with_backend(backend: Backend) -> Result<Parity, ParityError> {
        if backend.is_supported() {
            Ok(Parity { backend })
        } else {
            Err(ParityError::Unsupported(backend))
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn k_xor_into(&self, dst: &mut [u8], src: &[u8]) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::xor_into_avx2(dst, src) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these backends are only constructed when SSE2 is present.
            Backend::Sse2 | Backend::Ssse3 => unsafe { simd::xor_into_sse2(dst, src) },
            _ => portable::xor_into(dst, src, 0),
        }
    }

    fn k_xor2_into(&self, dst: &mut [u8], a: &[u8], b: &[u8]) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::xor2_into_avx2(dst, a, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these backends are only constructed when SSE2 is present.
            Backend::Sse2 | Backend::Ssse3 => unsafe { simd::xor2_into_sse2(dst, a, b) },
            _ => portable::xor2_into(dst, a, b, 0),
        }
    }

    fn k_xor_gen(&self, dst: &mut [u8], srcs: &[&[u8]], skip: usize) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::xor_gen_avx2(dst, srcs, skip) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these backends are only constructed when SSE2 is present.
            Backend::Sse2 | Backend::Ssse3 => unsafe { simd::xor_gen_sse2(dst, srcs, skip) },
            _ => portable::xor_gen(dst, srcs, skip, 0),
        }
    }

    fn k_gen_pq(&self, data: &[&[u8]], skip: [usize; 2], p: &mut [u8], q: &mut [u8]) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::gen_pq_avx2(data, skip, p, q) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these backends are only constructed when SSE2 is present.
            Backend::Sse2 | Backend::Ssse3 => unsafe { simd::gen_pq_sse2(data, skip, p, q) },
            _ => portable::gen_pq(data, skip, p, q, 0),
        }
    }

    fn k_mul_acc(&self, dst: &mut [u8], src: &[u8], c: u8) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::mul_acc_avx2(dst, src, c) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the Ssse3 backend is only constructed when SSSE3 is present.
            Backend::Ssse3 => unsafe { simd::mul_acc_ssse3(dst, src, c) },
            _ => portable::mul_acc(dst, src, c, 0),
        }
    }

    fn k_combine2(&self, p: &[u8], q: &[u8], dx: &mut [u8], dy: &mut [u8], a: u8, b: u8) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::combine2_avx2(p, q, dx, dy, a, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the Ssse3 backend is only constructed when SSSE3 is present.
            Backend::Ssse3 => unsafe { simd::combine2_ssse3(p, q, dx, dy, a, b) },
            _ => portable::combine2(p, q, dx, dy, a, b, 0),
        }
    }

    fn k_combine_q(&self, q: &[u8], dx: &mut [u8], p: &mut [u8], c: u8) {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            Backend::Avx2 => unsafe { simd::combine_q_avx2(q, dx, p, c) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the Ssse3 backend is only constructed when SSSE3 is present.
            Backend::Ssse3 => unsafe { simd::combine_q_ssse3(q, dx, p, c) },
            _ => portable::combine_q(q, dx, p, c, 0),
        }
    }

    /// `dst ^= src`.
    pub fn xor_into(&self, dst: &mut [u8], src: &[u8]) -> Result<(), ParityError> {
        check_len(1, dst.len(), src.len())?;
        self.k_xor_into(dst, src);
        Ok(())
    }

    /// `dst = srcs[0] ^ srcs[1] ^ ...` (raid5 parity).
    pub fn xor(&self, dst: &mut [u8], srcs: &[&[u8]]) -> Result<(), ParityError> {
        if srcs.is_empty() {
            return Err(ParityError::NoSources);
        }
        for (i, s) in srcs.iter().enumerate() {
            check_len(i, dst.len(), s.len())?;
        }
        self.k_xor_gen(dst, srcs, NONE);
        Ok(())
    }

    /// Generates P and Q of `data` (in syndrome slot order).
    pub fn gen_pq(&self, data: &[&[u8]], p: &mut [u8], q: &mut [u8]) -> Result<(), ParityError> {
        if data.is_empty() {
            return Err(ParityError::NoSources);
        }
        check_len(data.len() + 1, p.len(), q.len())?;
        check_data(data, [NONE; 2], p.len())?;
        self.k_gen_pq(data, [NONE; 2], p, q);
        Ok(())
    }

    /// `dst ^= coef * src` in GF(2^8).
    pub fn mul_acc(&self, dst: &mut [u8], src: &[u8], coef: u8) -> Result<(), ParityError> {
        check_len(1, dst.len(), src.len())?;
        self.k_mul_acc(dst, src, coef);
        Ok(())
    }

    /// Read-modify-write update: data slot `slot` changed by `delta`
    /// (old ^ new), so `p ^= delta` and `q ^= g^slot * delta`.
    pub fn update_pq(&self, slot: usize, delta: &[u8], p: &mut [u8], q: &mut [u8]) -> Result<(), ParityError> {
        check_slot(slot, MAX_SYNDROME_DATA)?;
        check_len(1, delta.len(), p.len())?;
        check_len(2, delta.len(), q.len())?;
        self.k_xor_into(p, delta);
        self.k_mul_acc(q, delta, gf::pow2(slot));
        Ok(())
    }

    /// Read-modify-write of raid4/5 parity: a data chunk changes from `old`
    /// to `new`, so `p ^= old ^ new` (neither source is changed).
    pub fn replace_p(&self, old: &[u8], new: &[u8], p: &mut [u8]) -> Result<(), ParityError> {
        check_len(0, p.len(), old.len())?;
        check_len(1, p.len(), new.len())?;
        self.k_xor2_into(p, old, new);
        Ok(())
    }

    /// Read-modify-write of raid6 P and Q: data slot `slot` changes from
    /// `old` to `new`, so with `delta = old ^ new`, `p ^= delta` and
    /// `q ^= g^slot * delta` (neither source is changed; one pass with
    /// AVX2, else the delta goes through a small stack buffer a piece at a
    /// time).
    pub fn replace_pq(
        &self,
        slot: usize,
        old: &[u8],
        new: &[u8],
        p: &mut [u8],
        q: &mut [u8],
    ) -> Result<(), ParityError> {
        check_slot(slot, MAX_SYNDROME_DATA)?;
        check_len(0, p.len(), old.len())?;
        check_len(1, p.len(), new.len())?;
        check_len(2, p.len(), q.len())?;
        let coef = gf::pow2(slot);
        #[cfg(target_arch = "x86_64")]
        if self.backend == Backend::Avx2 {
            // SAFETY: a Parity with this backend exists only when the CPU supports AVX2.
            unsafe { simd::replace_pq_avx2(old, new, p, q, coef) };
            return Ok(());
        }
        const PIECE: usize = 1024;
        let mut delta = [0u8; PIECE];
        let pieces = old.chunks(PIECE).zip(new.chunks(PIECE)).zip(p.chunks_mut(PIECE).zip(q.chunks_mut(PIECE)));
        for ((o, n), (pc, qc)) in pieces {
            let d = delta.get_mut(..o.len()).unwrap_or_default();
            self.k_xor_gen(d, &[o, n], NONE);
            self.k_xor_into(pc, d);
            self.k_mul_acc(qc, d, coef);
        }
        Ok(())
    }

    /// Rebuilds lost data slot `x` from P: `dx = p ^ XOR(data except x)`.
    /// `data[x]` is ignored (it may be empty).
    pub fn recover_data_from_p(&self, data: &[&[u8]], x: usize, p: &[u8], dx: &mut [u8]) -> Result<(), ParityError> {
        check_slot(x, data.len())?;
        check_len(data.len(), dx.len(), p.len())?;
        check_data(data, [x, NONE], dx.len())?;
        self.k_xor_gen(dx, data, x);
        self.k_xor_into(dx, p);
        Ok(())
    }

    /// Rebuilds lost data slot `x` and the lost P from Q. `data[x]` is
    /// ignored.
    pub fn recover_data_from_q(
        &self,
        data: &[&[u8]],
        x: usize,
        q: &[u8],
        dx: &mut [u8],
        p: &mut [u8],
    ) -> Result<(), ParityError> {
        check_slot(x, data.len())?;
        check_len(data.len(), dx.len(), q.len())?;
        check_len(data.len() + 1, dx.len(), p.len())?;
        check_data(data, [x, NONE], dx.len())?;
        // p = partial P, dx = partial Q (slot x as zero).
        self.k_gen_pq(data, [x, NONE], p, dx);
        self.k_combine_q(q, dx, p, gf::inv(gf::pow2(x)));
        Ok(())
    }

    /// Rebuilds two lost data slots `x` and `y` from P and Q. `data[x]` and
    /// `data[y]` are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn recover_two_data(
        &self,
        data: &[&[u8]],
        x: usize,
        y: usize,
        p: &[u8],
        q: &[u8],
        dx: &mut [u8],
        dy: &mut [u8],
    ) -> Result<(), ParityError> {
        check_slot(x, data.len())?;
        check_slot(y, data.len())?;
        if x == y {
            return Err(ParityError::SameSlot);
        }
        let n = dx.len();
        check_len(data.len(), n, dy.len())?;
        check_len(data.len() + 1, n, p.len())?;
        check_len(data.len() + 2, n, q.len())?;
        check_data(data, [x, y], n)?;
        let (lo, hi, dlo, dhi) = if x < y { (x, y, dx, dy) } else { (y, x, dy, dx) };
        // dlo = partial P, dhi = partial Q.
        self.k_gen_pq(data, [lo, hi], dlo, dhi);
        let (a, b) = gf::two_data_coefficients(lo, hi);
        self.k_combine2(p, q, dlo, dhi, a, b);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
