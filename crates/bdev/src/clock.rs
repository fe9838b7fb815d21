//! A cheap clock for per-IO latency: the TSC, calibrated once against the monotonic clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the first call, from the monotonic clock (slower than [`ticks`]).
pub fn instant_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Current tick count (the TSC on x86_64).
#[inline(always)]
pub fn ticks() -> u64 {
    crate::ffi::rdtsc()
}

/// Ticks per microsecond, measured once (~5 ms at first call).
pub fn ticks_per_us() -> f64 {
    static TPUS: OnceLock<f64> = OnceLock::new();
    *TPUS.get_or_init(|| {
        let t0 = Instant::now();
        let c0 = ticks();
        while t0.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let c1 = ticks();
        let ns = t0.elapsed().as_nanos() as f64;
        ((c1.wrapping_sub(c0)) as f64 / ns * 1000.0).max(1e-3)
    })
}

/// Convert a tick count to nanoseconds.
#[inline]
pub fn ticks_to_ns(t: u64) -> u64 {
    (t as f64 * 1000.0 / ticks_per_us()) as u64
}

/// Convert nanoseconds to ticks.
#[inline]
pub fn ns_to_ticks(ns: u64) -> u64 {
    (ns as f64 * ticks_per_us() / 1000.0) as u64
}
