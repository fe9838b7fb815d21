//! Path selection: the eight policies, over the usable paths of the preferred tier.
//!
//! Selection runs for every IO: no allocation, no lock, only relaxed atomic loads of the
//! shared path state. Ties go to each tied path in turn, so equal paths alternate instead of
//! the first one taking everything.

use crate::config::Policy;
use crate::window::WindowSums;
use bdev::{IoRequest, IoType};

/// What the selection reads about a path.
pub(crate) trait PathView {
    /// IOs in flight on the path, over all channels.
    fn in_flight(&self) -> u64;
    /// Bytes in flight on the path, over all channels.
    fn in_flight_bytes(&self) -> u64;
    /// Latency window of direction `dir` (0 reads, 1 writes).
    fn window(&self, dir: usize) -> WindowSums;
    /// Static weight.
    fn weight(&self) -> u32;
    /// Stable hash of the path's identity.
    fn hash_id(&self) -> u64;
}

impl PathView for crate::path::Path {
    #[inline]
    fn in_flight(&self) -> u64 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[inline]
    fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[inline]
    fn window(&self, dir: usize) -> WindowSums {
        crate::path::Path::window(self, dir)
    }
    #[inline]
    fn weight(&self) -> u32 {
        crate::path::Path::weight(self)
    }
    #[inline]
    fn hash_id(&self) -> u64 {
        self.hash_id
    }
}

/// Per-channel selection state.
pub(crate) struct SelectState {
    rr_path: u16,
    rr_count: u32,
    rng: u64,
    rot: usize,
}

impl SelectState {
    pub(crate) fn new(seed: u64) -> SelectState {
        SelectState { rr_path: u16::MAX, rr_count: 0, rng: seed, rot: 0 }
    }
}

/// The splitmix64 finalizer: a cheap, well-spread 64-bit mix.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Window direction of an IO type: reads 0, everything else 1.
#[inline]
pub(crate) fn dir_of(t: IoType) -> usize {
    (t != IoType::Read) as usize
}

/// The candidate (position in `cands`) with the smallest key; ties go to each tied candidate
/// in turn.
#[inline]
fn argmin<K: PartialOrd + Copy>(n: usize, rot: &mut usize, mut key: impl FnMut(usize) -> K) -> Option<usize> {
    const MAX_TIES: usize = 64;
    let mut best: Option<K> = None;
    let mut ties = [0usize; MAX_TIES];
    let mut nt = 0;
    for pos in 0..n {
        let k = key(pos);
        match best {
            Some(b) if b < k => {}
            Some(b) if k.partial_cmp(&b) != Some(std::cmp::Ordering::Less) => {
                if nt < MAX_TIES {
                    ties[nt] = pos;
                    nt += 1;
                }
            }
            _ => {
                best = Some(k);
                ties[0] = pos;
                nt = 1;
            }
        }
    }
    if nt == 0 {
        return None;
    }
    let pick = ties[*rot % nt];
    *rot = rot.wrapping_add(1);
    Some(pick)
}

/// The sort key of a path without history: tried first while it has nothing in flight (one
/// probing IO at a time, so a slow path that just lost its history does not swallow a burst
/// before its first answer), last otherwise.
#[inline]
fn unknown<K>(in_flight: u64, best: K, worst: K) -> (K, u64) {
    if in_flight == 0 {
        (best, 0)
    } else {
        (worst, in_flight)
    }
}

/// Choose a path for `io` (of `io_bytes` data bytes) among `cands` (channel path indices in
/// ascending order); returns the position in `cands`, `None` when it is empty.
#[inline]
pub(crate) fn select<'a>(
    policy: &Policy,
    io: &IoRequest,
    io_bytes: u64,
    cands: &[u16],
    view: impl Fn(u16) -> &'a dyn PathView,
    st: &mut SelectState,
) -> Option<usize> {
    let n = cands.len();
    if n == 0 {
        return None;
    }
    let at = |pos: usize| view(cands.get(pos).copied().unwrap_or(0));
    match *policy {
        Policy::RoundRobin { ios_per_path } => {
            if let Some(pos) = cands.iter().position(|&c| c == st.rr_path) {
                if st.rr_count < ios_per_path {
                    st.rr_count += 1;
                    return Some(pos);
                }
            }
            let pos = cands.iter().position(|&c| c > st.rr_path).unwrap_or(0);
            st.rr_path = cands.get(pos).copied().unwrap_or(u16::MAX);
            st.rr_count = 1;
            Some(pos)
        }
        Policy::Random => Some((bdev::rand::next(&mut st.rng) % n as u64) as usize),
        Policy::Weighted => {
            let total: u64 = (0..n).map(|p| at(p).weight() as u64).sum();
            if total == 0 {
                return Some((bdev::rand::next(&mut st.rng) % n as u64) as usize);
            }
            let mut r = bdev::rand::next(&mut st.rng) % total;
            for p in 0..n {
                let w = at(p).weight() as u64;
                if r < w {
                    return Some(p);
                }
                r -= w;
            }
            Some(n - 1)
        }
        Policy::Hash { region_blocks } => {
            let region = io.offset_blocks / region_blocks.max(1);
            let h = mix64(region.wrapping_add(0x9e37_79b9_7f4a_7c15));
            (0..n).max_by_key(|&p| mix64(h ^ at(p).hash_id()))
        }
        Policy::ServiceTime => {
            let dir = dir_of(io.io_type);
            argmin(n, &mut st.rot, |p| {
                let v = at(p);
                let busy = v.in_flight();
                // The recent mean latency, times the IOs this one would join: with nothing in
                // flight the lowest mean wins; under load a path that just took a burst stops
                // winning before its window has caught up (no herding onto one path).
                match v.window(dir).avg_latency_ns() {
                    Some(lat) => (lat.saturating_mul(busy + 1), busy),
                    None => unknown(busy, 0, u64::MAX),
                }
            })
        }
        Policy::AverageRate => {
            let dir = dir_of(io.io_type);
            argmin(n, &mut st.rot, |p| {
                let v = at(p);
                let busy = v.in_flight();
                let w = v.window(dir);
                // The recent rate, shared with the IOs this one would join (as for service time).
                match w.rate_bytes_per_sec() {
                    Some(rate) => (u64::MAX - rate / (busy + 1), busy),
                    // No measurable latency: faster than anything measured.
                    None if w.count > 0 => (0, busy),
                    None => unknown(busy, 0, u64::MAX),
                }
            })
        }
        Policy::QueueLength => argmin(n, &mut st.rot, |p| at(p).in_flight()),
        Policy::HistoricalServiceTime => {
            let dir = dir_of(io.io_type);
            argmin(n, &mut st.rot, |p| {
                let v = at(p);
                let w = v.window(dir);
                let queued = v.in_flight_bytes();
                let est = if w.count == 0 {
                    unknown(v.in_flight(), 0.0, f64::INFINITY).0
                } else if w.bytes > 0 {
                    // Latency per byte of history times the bytes that will be ahead of and
                    // including this IO.
                    w.lat_ns as f64 * (queued + io_bytes) as f64 / w.bytes as f64
                } else {
                    w.avg_latency_ns().unwrap_or(0) as f64 * (v.in_flight() + 1) as f64
                };
                (est, queued)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdev::IoVecs;

    #[derive(Default, Clone)]
    struct Fake {
        in_flight: u64,
        in_flight_bytes: u64,
        win: [WindowSums; 2],
        weight: u32,
        hash_id: u64,
    }

    impl PathView for Fake {
        fn in_flight(&self) -> u64 {
            self.in_flight
        }
        fn in_flight_bytes(&self) -> u64 {
            self.in_flight_bytes
        }
        fn window(&self, dir: usize) -> WindowSums {
            self.win[dir]
        }
        fn weight(&self) -> u32 {
            self.weight
        }
        fn hash_id(&self) -> u64 {
            self.hash_id
        }
    }

    fn read(lba: u64) -> IoRequest {
        IoRequest::read(lba, 8, IoVecs::new(), 0)
    }

    fn pick(policy: Policy, io: &IoRequest, paths: &[Fake], cands: &[u16], st: &mut SelectState) -> u16 {
        let pos = select(&policy, io, 4096, cands, |i| &paths[i as usize] as &dyn PathView, st).unwrap();
        cands[pos]
    }

    fn win(count: u64, lat_ns: u64, bytes: u64) -> WindowSums {
        WindowSums { count, lat_ns, bytes }
    }

    #[test]
    fn round_robin_switches_after_ios_per_path_and_skips_missing_paths() {
        let paths = vec![Fake::default(); 4];
        let mut st = SelectState::new(1);
        let p = Policy::RoundRobin { ios_per_path: 2 };
        let seq: Vec<u16> = (0..8).map(|_| pick(p, &read(0), &paths, &[0, 1, 2], &mut st)).collect();
        assert_eq!(seq, [0, 0, 1, 1, 2, 2, 0, 0]);
        // Path 1 leaves the candidates while current: the next one after it takes over.
        let seq: Vec<u16> = (0..4).map(|_| pick(p, &read(0), &paths, &[0, 2, 3], &mut st)).collect();
        assert_eq!(seq, [2, 2, 3, 3]);
        assert_eq!(select(&p, &read(0), 0, &[], |i| &paths[i as usize] as &dyn PathView, &mut st), None);
    }

    #[test]
    fn queue_length_prefers_fewest_in_flight_and_alternates_ties() {
        let mut paths = vec![Fake::default(); 3];
        paths[0].in_flight = 5;
        let mut st = SelectState::new(1);
        let mut got = [0; 3];
        for _ in 0..10 {
            got[pick(Policy::QueueLength, &read(0), &paths, &[0, 1, 2], &mut st) as usize] += 1;
        }
        assert_eq!(got, [0, 5, 5]);
    }

    #[test]
    fn service_time_uses_the_direction_window_and_tries_empty_windows() {
        let mut paths = vec![Fake::default(); 2];
        paths[0].win = [win(10, 10 * 100_000, 0), win(10, 10 * 10_000, 0)];
        paths[1].win = [win(10, 10 * 50_000, 0), win(10, 10 * 90_000, 0)];
        let mut st = SelectState::new(1);
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 1, "reads: path 1 faster");
        let w = IoRequest::write(0, 8, IoVecs::new(), 0);
        assert_eq!(pick(Policy::ServiceTime, &w, &paths, &[0, 1], &mut st), 0, "writes: path 0 faster");
        paths[0].win[0] = WindowSums::default();
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 0, "empty window tried first");
        paths[0].in_flight = 1;
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 1, "one probing IO at a time");
        paths[1].win[0] = WindowSums::default();
        paths[1].in_flight = 2;
        assert_eq!(
            pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st),
            0,
            "no history anywhere: fewest in flight"
        );
    }

    #[test]
    fn service_time_and_average_rate_count_the_io_already_queued() {
        // Path 0 answered a little faster recently but already holds a burst: the next IO
        // goes to path 1 instead of piling onto path 0 until its window catches up.
        let mut paths = vec![Fake::default(); 2];
        paths[0].win = [win(10, 10 * 1_000_000, 10 * 65536); 2];
        paths[1].win = [win(10, 10 * 1_100_000, 10 * 65536); 2];
        let mut st = SelectState::new(1);
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 0, "idle: lowest latency");
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 0, "idle: highest rate");
        paths[0].in_flight = 8;
        paths[1].in_flight = 1;
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 1);
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 1);
        // A path ten times slower is still left alone until the fast one holds ten times more.
        paths[1].win = [win(10, 10 * 10_000_000, 10 * 65536); 2];
        paths[0].in_flight = 8;
        paths[1].in_flight = 0;
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 0);
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 0);
        paths[0].in_flight = 12;
        assert_eq!(pick(Policy::ServiceTime, &read(0), &paths, &[0, 1], &mut st), 1);
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 1);
    }

    #[test]
    fn average_rate_prefers_highest_bytes_per_service_time() {
        let mut paths = vec![Fake::default(); 2];
        paths[0].win[0] = win(4, 4_000_000, 4 * 4096);
        paths[1].win[0] = win(4, 400_000, 4 * 4096);
        let mut st = SelectState::new(1);
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 1);
        paths[1].win[0] = win(4, 40_000_000, 4 * 4096);
        assert_eq!(pick(Policy::AverageRate, &read(0), &paths, &[0, 1], &mut st), 0);
    }

    #[test]
    fn historical_service_time_weighs_history_by_bytes_in_flight() {
        let mut paths = vec![Fake::default(); 2];
        // Path 0: 10 us per 4 KiB; path 1: 100 us per 4 KiB.
        paths[0].win[0] = win(20, 20 * 10_000, 20 * 4096);
        paths[1].win[0] = win(20, 20 * 100_000, 20 * 4096);
        let mut st = SelectState::new(1);
        let mut counts = [0u32; 2];
        for _ in 0..110 {
            let p = pick(Policy::HistoricalServiceTime, &read(0), &paths, &[0, 1], &mut st) as usize;
            counts[p] += 1;
            paths[p].in_flight += 1;
            paths[p].in_flight_bytes += 4096;
        }
        // Completion estimates equalise at about 10 queued on path 0 per 1 on path 1.
        assert!((95..=102).contains(&counts[0]), "{counts:?}");
        assert!((8..=15).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn weighted_follows_weights_and_skips_zero_weight() {
        let mut paths = vec![Fake::default(); 3];
        paths[0].weight = 1;
        paths[1].weight = 3;
        paths[2].weight = 0;
        let mut st = SelectState::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[pick(Policy::Weighted, &read(0), &paths, &[0, 1, 2], &mut st) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = counts[0] as f64 / 40_000.0;
        assert!((0.23..0.27).contains(&share), "{counts:?}");
        for p in &mut paths {
            p.weight = 0;
        }
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[pick(Policy::Weighted, &read(0), &paths, &[0, 1, 2], &mut st) as usize] = true;
        }
        assert_eq!(seen, [true; 3], "all weights zero: uniform");
    }

    #[test]
    fn hash_keeps_regions_on_their_path_and_moves_only_a_failed_paths_regions() {
        let paths: Vec<Fake> =
            (0..4).map(|i| Fake { hash_id: crate::path::name_hash(&format!("p{i}")), ..Default::default() }).collect();
        let p = Policy::Hash { region_blocks: 128 };
        let mut st = SelectState::new(1);
        let all = [0u16, 1, 2, 3];
        let owner: Vec<u16> = (0..256u64).map(|r| pick(p, &read(r * 128), &paths, &all, &mut st)).collect();
        for r in 0..256u64 {
            assert_eq!(pick(p, &read(r * 128 + 127), &paths, &all, &mut st), owner[r as usize], "same region");
        }
        let mut per = [0; 4];
        for &o in &owner {
            per[o as usize] += 1;
        }
        assert!(per.iter().all(|&c| c > 30), "regions spread: {per:?}");
        let without2 = [0u16, 1, 3];
        for r in 0..256u64 {
            let now = pick(p, &read(r * 128), &paths, &without2, &mut st);
            if owner[r as usize] != 2 {
                assert_eq!(now, owner[r as usize], "region {r} moved although its path is usable");
            }
        }
    }
}
