//! Per-bdev IO statistics: ops, bytes and errors by IO type, in-flight count, and a latency
//! histogram with percentiles.
//!
//! Each channel owns a [`ChannelStats`] that only its reactor writes (plain load+store on
//! relaxed atomics, no read-modify-write); readers sum over the channels of a bdev.

use crate::io::{IoStatus, IoType};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Number of histogram buckets (log-linear, 3 sub-bucket bits: ~12.5% resolution).
pub const BUCKETS: usize = 64 * SUB as usize;

/// Bucket index of a value (nanoseconds).
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (((e - SUB_BITS + 1) as u64) * SUB + sub) as usize
}

/// Lowest value (nanoseconds) of a bucket.
pub fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = i / SUB + SUB_BITS as u64 - 1;
    let sub = i % SUB;
    (1 << e) | (sub << (e - SUB_BITS as u64))
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counters written by one channel's reactor.
pub struct ChannelStats {
    ops: [AtomicU64; 6],
    bytes: [AtomicU64; 6],
    errors: [AtomicU64; 7],
    in_flight: AtomicU64,
    latency_sum_ns: AtomicU64,
    latency_count: AtomicU64,
    hist: Box<[AtomicU64; BUCKETS]>,
}

impl Default for ChannelStats {
    fn default() -> Self {
        ChannelStats {
            ops: Default::default(),
            bytes: Default::default(),
            errors: Default::default(),
            in_flight: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            hist: Box::new([const { AtomicU64::new(0) }; BUCKETS]),
        }
    }
}

impl ChannelStats {
    /// Count a submission.
    #[inline]
    pub fn on_submit(&self) {
        bump(&self.in_flight, 1);
    }

    /// Count a completion; `latency_ns` when measured.
    #[inline]
    pub fn on_complete(&self, t: IoType, bytes: u64, status: IoStatus, latency_ns: Option<u64>) {
        self.in_flight.store(self.in_flight.load(Relaxed).saturating_sub(1), Relaxed);
        self.on_finished(t, bytes, status, latency_ns);
    }

    /// Count an IO that was answered without being submitted (rejected before the backend).
    #[inline]
    pub fn on_finished(&self, t: IoType, bytes: u64, status: IoStatus, latency_ns: Option<u64>) {
        if status.is_ok() {
            bump(&self.ops[t as usize], 1);
            bump(&self.bytes[t as usize], bytes);
        } else {
            bump(&self.errors[status as usize], 1);
        }
        if let Some(ns) = latency_ns {
            bump(&self.latency_sum_ns, ns);
            bump(&self.latency_count, 1);
            bump(&self.hist[bucket_of(ns).min(BUCKETS - 1)], 1);
        }
    }
}

/// A point-in-time sum of a bdev's statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Successful ops by IO type (index = `IoType as usize`).
    pub ops: [u64; 6],
    /// Bytes moved by successful ops by IO type.
    pub bytes: [u64; 6],
    /// Failed IOs by status (index = `IoStatus as usize`; index 0 unused).
    pub errors: [u64; 7],
    /// IOs in flight.
    pub in_flight: u64,
    /// Sum of measured latencies.
    pub latency_sum_ns: u64,
    /// Number of measured latencies.
    pub latency_count: u64,
    /// Latency histogram buckets (see [`bucket_low`]).
    pub hist: Vec<u64>,
}

impl StatsSnapshot {
    /// Successful ops of one type.
    pub fn ops_of(&self, t: IoType) -> u64 {
        self.ops[t as usize]
    }

    /// Bytes of one type.
    pub fn bytes_of(&self, t: IoType) -> u64 {
        self.bytes[t as usize]
    }

    /// Total failed IOs.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Total successful ops.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }

    /// Mean latency in nanoseconds.
    pub fn mean_latency_ns(&self) -> f64 {
        if self.latency_count == 0 {
            0.0
        } else {
            self.latency_sum_ns as f64 / self.latency_count as f64
        }
    }

    /// Latency percentile `p` (0..=100) in nanoseconds: the upper end of the bucket holding it.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return bucket_low(i + 1).saturating_sub(1).max(bucket_low(i));
            }
        }
        bucket_low(BUCKETS - 1)
    }

    /// The difference `self - earlier` (for per-interval figures).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut d = self.clone();
        for i in 0..6 {
            d.ops[i] -= earlier.ops[i].min(d.ops[i]);
            d.bytes[i] -= earlier.bytes[i].min(d.bytes[i]);
        }
        for i in 0..7 {
            d.errors[i] -= earlier.errors[i].min(d.errors[i]);
        }
        d.latency_sum_ns -= earlier.latency_sum_ns.min(d.latency_sum_ns);
        d.latency_count -= earlier.latency_count.min(d.latency_count);
        for (a, b) in d.hist.iter_mut().zip(&earlier.hist) {
            *a -= (*b).min(*a);
        }
        d
    }
}

/// All channels' counters of one bdev.
#[derive(Default)]
pub struct BdevStats {
    channels: Mutex<Vec<Arc<ChannelStats>>>,
}

impl BdevStats {
    /// A new channel's counters, registered for summing.
    pub fn new_channel(&self) -> Arc<ChannelStats> {
        let c = Arc::new(ChannelStats::default());
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).push(c.clone());
        c
    }

    /// Sum over all channels.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot { hist: vec![0; BUCKETS], ..Default::default() };
        for c in self.channels.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for i in 0..6 {
                s.ops[i] += c.ops[i].load(Relaxed);
                s.bytes[i] += c.bytes[i].load(Relaxed);
            }
            for i in 0..7 {
                s.errors[i] += c.errors[i].load(Relaxed);
            }
            s.in_flight += c.in_flight.load(Relaxed);
            s.latency_sum_ns += c.latency_sum_ns.load(Relaxed);
            s.latency_count += c.latency_count.load(Relaxed);
            for (a, b) in s.hist.iter_mut().zip(c.hist.iter()) {
                *a += b.load(Relaxed);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_values() {
        let mut last = 0;
        for v in [0u64, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 12345, 1 << 20, 1 << 40] {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            assert!(bucket_low(b) <= v, "v={v} b={b} low={}", bucket_low(b));
            assert!(bucket_low(b + 1) > v, "v={v} b={b} next={}", bucket_low(b + 1));
        }
    }

    #[test]
    fn percentiles_from_known_distribution() {
        let st = BdevStats::default();
        let c = st.new_channel();
        for i in 1..=1000u64 {
            c.on_submit();
            c.on_complete(IoType::Read, 4096, IoStatus::Success, Some(i * 1000));
        }
        c.on_finished(IoType::Write, 0, IoStatus::MediaError, None);
        let s = st.snapshot();
        assert_eq!(s.ops_of(IoType::Read), 1000);
        assert_eq!(s.bytes_of(IoType::Read), 4096 * 1000);
        assert_eq!(s.errors[IoStatus::MediaError as usize], 1);
        assert_eq!(s.in_flight, 0);
        let p50 = s.percentile_ns(50.0) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.13, "p50 {p50}");
        let p99 = s.percentile_ns(99.0) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.13, "p99 {p99}");
        assert!((s.mean_latency_ns() - 500_500.0).abs() < 1.0);
    }
}
