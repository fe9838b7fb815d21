//! A lock-free window over a path's last N IOs of one direction (latency and bytes), shared by
//! every channel, for the dynamic policies.
//!
//! Each sample slot is written with an atomic swap and the running sums move by exactly the
//! difference between the new and the old slot value, so after any interleaving of writers
//! and resets the sums equal the sums over the slots. A reader racing a writer may see sums
//! one sample apart, which a load-balancing heuristic tolerates.

use crate::config::MAX_WINDOW_IOS;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Window over the last `n` samples (`n` chosen per call, at most [`MAX_WINDOW_IOS`]).
pub(crate) struct Window {
    /// Latency + 1 in nanoseconds (0 = empty slot).
    lat: Box<[AtomicU64]>,
    bytes: Box<[AtomicU64]>,
    next: AtomicU64,
    /// Sum over `lat` (with the +1 of each filled slot), wrapping.
    lat_sum: AtomicU64,
    bytes_sum: AtomicU64,
    count: AtomicU64,
}

/// What a window holds now.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub(crate) struct WindowSums {
    /// Samples held.
    pub count: u64,
    /// Sum of their latencies (ns).
    pub lat_ns: u64,
    /// Sum of their bytes.
    pub bytes: u64,
}

impl WindowSums {
    /// Mean latency, when there is a sample.
    pub(crate) fn avg_latency_ns(&self) -> Option<u64> {
        (self.count > 0).then(|| self.lat_ns / self.count)
    }

    /// Bytes per second of service time, when there is a sample with a measured latency.
    pub(crate) fn rate_bytes_per_sec(&self) -> Option<u64> {
        (self.count > 0 && self.lat_ns > 0).then(|| (self.bytes as u128 * 1_000_000_000 / self.lat_ns as u128) as u64)
    }
}

impl Window {
    pub(crate) fn new() -> Window {
        let ring = || (0..MAX_WINDOW_IOS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice();
        Window {
            lat: ring(),
            bytes: ring(),
            next: AtomicU64::new(0),
            lat_sum: AtomicU64::new(0),
            bytes_sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Add a sample, replacing the oldest of the last `n`.
    #[inline]
    pub(crate) fn record(&self, n: u32, lat_ns: u64, bytes: u64) {
        let n = n.clamp(1, MAX_WINDOW_IOS) as u64;
        let i = (self.next.fetch_add(1, Relaxed) % n) as usize;
        let (Some(l), Some(b)) = (self.lat.get(i), self.bytes.get(i)) else { return };
        let v = lat_ns.saturating_add(1);
        let old = l.swap(v, Relaxed);
        if old == 0 {
            self.count.fetch_add(1, Relaxed);
        }
        self.lat_sum.fetch_add(v.wrapping_sub(old), Relaxed);
        let old_b = b.swap(bytes, Relaxed);
        self.bytes_sum.fetch_add(bytes.wrapping_sub(old_b), Relaxed);
    }

    /// Empty the window.
    pub(crate) fn reset(&self) {
        for (l, b) in self.lat.iter().zip(self.bytes.iter()) {
            let old = l.swap(0, Relaxed);
            if old != 0 {
                self.count.fetch_sub(1, Relaxed);
                self.lat_sum.fetch_sub(old, Relaxed);
            }
            let old_b = b.swap(0, Relaxed);
            self.bytes_sum.fetch_sub(old_b, Relaxed);
        }
    }

    /// Current sums.
    #[inline]
    pub(crate) fn sums(&self) -> WindowSums {
        let count = self.count.load(Relaxed);
        // Transiently (a writer between its two updates) the wrapping sums may be "negative":
        // read those as empty rather than as huge.
        if count == 0 || count > MAX_WINDOW_IOS as u64 {
            return WindowSums::default();
        }
        let raw = self.lat_sum.load(Relaxed).wrapping_sub(count);
        let bytes = self.bytes_sum.load(Relaxed);
        if raw > u64::MAX / 2 || bytes > u64::MAX / 2 {
            return WindowSums::default();
        }
        WindowSums { count, lat_ns: raw, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_the_last_n_samples() {
        let w = Window::new();
        assert_eq!(w.sums().avg_latency_ns(), None);
        for i in 1..=10u64 {
            w.record(4, i * 100, 4096);
        }
        let s = w.sums();
        assert_eq!(s.count, 4);
        assert_eq!(s.lat_ns, 700 + 800 + 900 + 1000);
        assert_eq!(s.bytes, 4 * 4096);
        assert_eq!(s.avg_latency_ns(), Some(850));
        assert_eq!(s.rate_bytes_per_sec(), Some(4 * 4096 * 1_000_000_000 / 3400));
        w.reset();
        assert_eq!(w.sums(), WindowSums::default());
        w.record(4, 0, 512);
        assert_eq!(w.sums().avg_latency_ns(), Some(0), "a zero latency is a sample, not an empty slot");
    }

    #[test]
    fn sums_stay_exact_under_concurrent_writers_and_resets() {
        let w = Arc::new(Window::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        w.record(20, (t * 7 + i) % 1000, 512 * (i % 8));
                        if t == 0 && i % 5000 == 0 {
                            w.reset();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = w.sums();
        let lat: u64 = w.lat.iter().map(|x| x.load(Relaxed).saturating_sub(1)).sum();
        let filled = w.lat.iter().filter(|x| x.load(Relaxed) != 0).count() as u64;
        let bytes: u64 = w.bytes.iter().map(|x| x.load(Relaxed)).sum();
        assert_eq!((s.count, s.lat_ns, s.bytes), (filled, lat, bytes));
        assert!(s.count <= 20);
    }
}
