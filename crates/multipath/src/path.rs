//! One path: the claimed path bdev and the state every channel shares about it, in atomics
//! (health, ANA state, priority group, weight, IOs in flight, latency windows), plus the
//! per-channel counters summed for statistics.

use crate::window::{Window, WindowSums};
use bdev::{AnaState, Desc};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// What a path is doing now.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathState {
    /// Usable, in the priority group that carries IO now.
    Active,
    /// Usable, standing by: a lower-numbered group (or an ANA-optimized path) carries the IO.
    Passive,
    /// Failed by a path error or a stall; probed periodically.
    Failed,
    /// Failed, with a probe read in flight.
    Probing,
    /// Reports ANA inaccessible, persistent loss or change: no IO until its ANA state changes.
    Inaccessible,
}

impl PathState {
    /// Lower-case name, as used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            PathState::Active => "active",
            PathState::Passive => "passive",
            PathState::Failed => "failed",
            PathState::Probing => "probing",
            PathState::Inaccessible => "inaccessible",
        }
    }
}

/// Counters of one path, summed over every channel.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Successful other IOs (flush, unmap, write-zeroes, reset).
    pub others: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// IOs that failed with a path error on this path (and were re-driven).
    pub path_errors: u64,
    /// IOs that failed with another error (returned to the caller).
    pub io_errors: u64,
    /// Sum of measured latencies of successful IOs (ns).
    pub latency_sum_ns: u64,
    /// Number of measured latencies.
    pub latency_count: u64,
    /// IOs in flight on the path now (all channels).
    pub in_flight: u64,
    /// Bytes in flight on the path now (all channels).
    pub in_flight_bytes: u64,
    /// Times the path went from usable to failed.
    pub failures: u64,
    /// Probe reads sent.
    pub probes: u64,
}

impl PathStats {
    /// Successful IOs of every kind.
    pub fn ios(&self) -> u64 {
        self.reads + self.writes + self.others
    }

    /// Mean latency of successful IOs in nanoseconds (0 when none).
    pub fn avg_latency_ns(&self) -> u64 {
        self.latency_sum_ns.checked_div(self.latency_count).unwrap_or(0)
    }
}

/// A path as reported by [`crate::MultipathBdev::paths`].
#[derive(Clone, Debug, PartialEq)]
pub struct PathInfo {
    /// Path bdev name.
    pub name: String,
    /// Current state.
    pub state: PathState,
    /// Configured priority group (0 = active group).
    pub group: u8,
    /// Weight for the weighted policy.
    pub weight: u32,
    /// ANA state the path reports, if any.
    pub ana_state: Option<AnaState>,
    /// Counters.
    pub stats: PathStats,
    /// Mean read latency over the current window, fed while a dynamic policy is active:
    /// completion latency under service_time and average_rate; under
    /// historical_service_time the service time, not counting the wait behind earlier IOs on
    /// the path (from the later of the IO's start and the path's previous completion).
    pub recent_read_latency_ns: Option<u64>,
    /// Mean write latency over the current window (as for reads).
    pub recent_write_latency_ns: Option<u64>,
    /// Read bytes per second of service time over the current window.
    pub recent_read_rate: Option<u64>,
    /// Write bytes per second of service time over the current window.
    pub recent_write_rate: Option<u64>,
}

pub(crate) const HEALTHY: u8 = 0;
pub(crate) const FAILED: u8 = 1;
pub(crate) const PROBING: u8 = 2;

/// Encode an ANA state (0 = none reported).
pub(crate) fn ana_to_u8(s: Option<AnaState>) -> u8 {
    match s {
        None => 0,
        Some(AnaState::Optimized) => 1,
        Some(AnaState::NonOptimized) => 2,
        Some(AnaState::Inaccessible) => 3,
        Some(AnaState::PersistentLoss) => 4,
        Some(AnaState::Change) => 5,
    }
}

/// Decode [`ana_to_u8`].
pub(crate) fn ana_from_u8(v: u8) -> Option<AnaState> {
    match v {
        1 => Some(AnaState::Optimized),
        2 => Some(AnaState::NonOptimized),
        3 => Some(AnaState::Inaccessible),
        4 => Some(AnaState::PersistentLoss),
        5 => Some(AnaState::Change),
        _ => None,
    }
}

/// Counters one channel keeps for one path; only that channel's thread writes them.
#[derive(Default)]
pub(crate) struct PathCounters {
    ops: [AtomicU64; 3],
    bytes: [AtomicU64; 2],
    path_errors: AtomicU64,
    io_errors: AtomicU64,
    lat_sum: AtomicU64,
    lat_count: AtomicU64,
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

impl PathCounters {
    /// Count a successful IO: `dir` 0 read, 1 write, 2 other.
    #[inline]
    pub(crate) fn ok(&self, dir: usize, bytes: u64, lat_ns: u64) {
        if let Some(o) = self.ops.get(dir) {
            bump(o, 1);
        }
        if let Some(b) = self.bytes.get(dir) {
            bump(b, bytes);
        }
        bump(&self.lat_sum, lat_ns);
        bump(&self.lat_count, 1);
    }

    /// Count an IO failed by a path error.
    #[inline]
    pub(crate) fn path_error(&self) {
        bump(&self.path_errors, 1);
    }

    /// Count an IO failed by another error.
    #[inline]
    pub(crate) fn io_error(&self) {
        bump(&self.io_errors, 1);
    }
}

/// A path of a multipath bdev.
pub(crate) struct Path {
    pub(crate) name: String,
    /// Claimed read-write descriptor of the path bdev.
    pub(crate) desc: Desc,
    /// Stable per-path hash input (from the name) for the hash policy.
    pub(crate) hash_id: u64,
    health: AtomicU8,
    ana: AtomicU8,
    group: AtomicU8,
    weight: AtomicU32,
    /// Bumped on every restore; failures of IO sent before a restore don't fail the path again.
    epoch: AtomicU32,
    /// Tick count after which a failed path may be probed.
    next_probe: AtomicU64,
    /// Set when the path leaves its group.
    removed: AtomicBool,
    pub(crate) in_flight: AtomicU64,
    pub(crate) in_flight_bytes: AtomicU64,
    /// Latency windows: 0 reads, 1 writes.
    pub(crate) windows: [Window; 2],
    /// Tick count of the path's latest completion (historical service time).
    pub(crate) last_finish: AtomicU64,
    failures: AtomicU64,
    probes: AtomicU64,
    counters: Mutex<Vec<Arc<PathCounters>>>,
}

/// FNV-1a then a mix: a stable 64-bit hash of a name.
pub(crate) fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::select::mix64(h)
}

impl Path {
    pub(crate) fn new(name: &str, desc: Desc, group: u8, weight: u32) -> Path {
        let ana = ana_to_u8(desc.bdev().ana_state());
        Path {
            name: name.to_string(),
            desc,
            hash_id: name_hash(name),
            health: AtomicU8::new(HEALTHY),
            ana: AtomicU8::new(ana),
            group: AtomicU8::new(group),
            weight: AtomicU32::new(weight),
            epoch: AtomicU32::new(0),
            next_probe: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            in_flight_bytes: AtomicU64::new(0),
            windows: [Window::new(), Window::new()],
            last_finish: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            counters: Mutex::new(Vec::new()),
        }
    }

    /// Counters for a new channel.
    pub(crate) fn new_counters(&self) -> Arc<PathCounters> {
        let c = Arc::new(PathCounters::default());
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).push(c.clone());
        c
    }

    /// Whether IO may be sent down this path now.
    #[inline]
    pub(crate) fn usable(&self) -> bool {
        self.health.load(Relaxed) == HEALTHY && self.ana.load(Relaxed) <= 2 && !self.removed.load(Relaxed)
    }

    /// Preference rank among usable paths (lower first): ANA non-optimized after every
    /// optimized path, then the configured group.
    #[inline]
    pub(crate) fn tier(&self) -> u16 {
        (((self.ana.load(Relaxed) == 2) as u16) << 8) | self.group.load(Relaxed) as u16
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Relaxed)
    }

    #[inline]
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub(crate) fn set_weight(&self, w: u32) {
        self.weight.store(w, Relaxed);
    }

    pub(crate) fn group(&self) -> u8 {
        self.group.load(Relaxed)
    }

    pub(crate) fn set_group(&self, g: u8) {
        self.group.store(g, Relaxed);
    }

    pub(crate) fn ana(&self) -> Option<AnaState> {
        ana_from_u8(self.ana.load(Relaxed))
    }

    /// Read the path bdev's ANA state; returns the new state when it changed.
    pub(crate) fn refresh_ana(&self) -> Option<Option<AnaState>> {
        let now = self.desc.bdev().ana_state();
        let v = ana_to_u8(now);
        (self.ana.swap(v, Relaxed) != v).then_some(now)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Relaxed);
    }

    /// Fail the path because an IO sent at `epoch` failed at `now`; true when this call
    /// took it from healthy to failed (the caller reports the event).
    pub(crate) fn fail(&self, epoch: u32, now: u64, probe_ticks: u64) -> bool {
        if epoch != self.epoch.load(Ordering::Acquire) || self.health.load(Ordering::Acquire) != HEALTHY {
            return false;
        }
        self.next_probe.store(now.saturating_add(probe_ticks), Ordering::Release);
        if self.health.compare_exchange(HEALTHY, FAILED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.failures.fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// Claim the right to probe a failed path whose probe time has come. A path whose ANA state
    /// is inaccessible is not probed: it could not carry IO even if the probe succeeded, and
    /// its ANA state says when it can ([`Path::probe_soon`]).
    pub(crate) fn start_probe(&self, now: u64) -> bool {
        self.health.load(Ordering::Acquire) == FAILED
            && self.ana.load(Relaxed) <= 2
            && now >= self.next_probe.load(Ordering::Acquire)
            && self.health.compare_exchange(FAILED, PROBING, Ordering::AcqRel, Ordering::Acquire).is_ok()
            && {
                self.probes.fetch_add(1, Relaxed);
                true
            }
    }

    /// The probe could not be sent or did not succeed: failed again, next probe after the
    /// interval.
    pub(crate) fn probe_failed(&self, now: u64, probe_ticks: u64) {
        self.next_probe.store(now.saturating_add(probe_ticks), Ordering::Release);
        let _ = self.health.compare_exchange(PROBING, FAILED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Probe a failed path at the next opportunity (its ANA state became accessible).
    pub(crate) fn probe_soon(&self) {
        self.next_probe.store(0, Ordering::Release);
    }

    /// The probe answered: usable again (true when this call restored it).
    pub(crate) fn restore(&self) -> bool {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.health.compare_exchange(PROBING, HEALTHY, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Health as a [`PathState`] (`Active` for healthy, refined by the caller).
    /// ANA inaccessibility comes first: an NVMe path's IO fails with a path error as its ANA
    /// group becomes inaccessible, before the ANA log says so, and the ANA state is the reason.
    pub(crate) fn health_state(&self) -> PathState {
        if self.ana.load(Relaxed) > 2 {
            return PathState::Inaccessible;
        }
        match self.health.load(Relaxed) {
            FAILED => PathState::Failed,
            PROBING => PathState::Probing,
            _ => PathState::Active,
        }
    }

    /// Sum of the counters, with the shared in-flight and event counts.
    pub(crate) fn stats(&self) -> PathStats {
        let mut s = PathStats {
            in_flight: self.in_flight.load(Relaxed),
            in_flight_bytes: self.in_flight_bytes.load(Relaxed),
            failures: self.failures.load(Relaxed),
            probes: self.probes.load(Relaxed),
            ..Default::default()
        };
        for c in self.counters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s.reads += c.ops[0].load(Relaxed);
            s.writes += c.ops[1].load(Relaxed);
            s.others += c.ops[2].load(Relaxed);
            s.read_bytes += c.bytes[0].load(Relaxed);
            s.write_bytes += c.bytes[1].load(Relaxed);
            s.path_errors += c.path_errors.load(Relaxed);
            s.io_errors += c.io_errors.load(Relaxed);
            s.latency_sum_ns += c.lat_sum.load(Relaxed);
            s.latency_count += c.lat_count.load(Relaxed);
        }
        s
    }

    /// Window sums of direction `dir` (0 reads, 1 writes).
    #[inline]
    pub(crate) fn window(&self, dir: usize) -> WindowSums {
        self.windows.get(dir).map(|w| w.sums()).unwrap_or_default()
    }

    /// Empty both windows.
    pub(crate) fn reset_windows(&self) {
        for w in &self.windows {
            w.reset();
        }
    }

    /// The path's report, in state `state`.
    pub(crate) fn info(&self, state: PathState) -> PathInfo {
        let (r, w) = (self.window(0), self.window(1));
        PathInfo {
            name: self.name.clone(),
            state,
            group: self.group(),
            weight: self.weight(),
            ana_state: self.ana(),
            stats: self.stats(),
            recent_read_latency_ns: r.avg_latency_ns(),
            recent_write_latency_ns: w.avg_latency_ns(),
            recent_read_rate: r.rate_bytes_per_sec(),
            recent_write_rate: w.rate_bytes_per_sec(),
        }
    }
}
