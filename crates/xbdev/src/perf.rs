//! The engine behind `xbdev-perf` (like SPDK's bdevperf): jobs that run as pollers on the
//! reactors and submit straight to the bdev channels, so the figures measure the stack, not
//! the client queue.

use crate::error::XbdevError;
use crate::instance::Xbdev;
use bdev::{rand, Desc, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, StatsSnapshot};
use reactor::PollStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a job does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential mix, `read_pct` percent reads.
    Rw,
    /// Random mix, `read_pct` percent reads.
    RandRw,
    /// Write a pattern, read it back and compare, per slot, forever.
    Verify,
    /// Unmap IO-size ranges.
    Unmap,
    /// Write-zeroes IO-size ranges.
    WriteZeroes,
    /// Flushes only.
    Flush,
}

impl Workload {
    /// Parse a bdevperf workload name.
    pub fn parse(s: &str) -> Option<Workload> {
        Some(match s {
            "read" => Workload::Read,
            "write" => Workload::Write,
            "randread" => Workload::RandRead,
            "randwrite" => Workload::RandWrite,
            "rw" => Workload::Rw,
            "randrw" => Workload::RandRw,
            "verify" => Workload::Verify,
            "unmap" => Workload::Unmap,
            "write_zeroes" => Workload::WriteZeroes,
            "flush" => Workload::Flush,
            _ => return None,
        })
    }

    fn random(self) -> bool {
        matches!(self, Workload::RandRead | Workload::RandWrite | Workload::RandRw)
    }
}

/// One perf run's parameters.
#[derive(Clone, Debug)]
pub struct PerfParams {
    /// Devices to run on.
    pub bdevs: Vec<String>,
    /// Workload.
    pub workload: Workload,
    /// IO size in bytes.
    pub io_size: u64,
    /// Queue depth per job.
    pub queue_depth: usize,
    /// Run time.
    pub time: Duration,
    /// Read percentage for rw/randrw.
    pub read_pct: u8,
    /// Measure per-IO latency (histogram); off saves two clock reads per IO.
    pub latency: bool,
}

/// Per-job counters, written only by the job's reactor.
#[derive(Default)]
struct Counters {
    ios: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Results of one device.
#[derive(Clone, Debug)]
pub struct DeviceResult {
    /// Device name.
    pub name: String,
    /// Jobs (cores) that ran on it.
    pub jobs: usize,
    /// IOs per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Failed IOs.
    pub errors: u64,
    /// Verify mismatches.
    pub mismatches: u64,
    /// Mean latency (us).
    pub avg_us: f64,
    /// Median latency (us).
    pub p50_us: f64,
    /// 99th percentile (us).
    pub p99_us: f64,
    /// 99.9th percentile (us).
    pub p999_us: f64,
}

/// Results of a run.
#[derive(Clone, Debug)]
pub struct PerfResult {
    /// Per device.
    pub devices: Vec<DeviceResult>,
    /// Seconds measured.
    pub seconds: f64,
}

impl PerfResult {
    /// Total IOPS.
    pub fn total_iops(&self) -> f64 {
        self.devices.iter().map(|d| d.iops).sum()
    }

    /// Total MiB/s.
    pub fn total_mib_s(&self) -> f64 {
        self.devices.iter().map(|d| d.mib_s).sum()
    }

    /// Total errors and mismatches.
    pub fn total_errors(&self) -> u64 {
        self.devices.iter().map(|d| d.errors + d.mismatches).sum()
    }
}

/// Fill `buf` with the verify pattern of (offset, generation).
fn fill_pattern(buf: &mut [u8], offset: u64, generation: u64) {
    let mut s = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation;
    for c in buf.chunks_mut(8) {
        let v = rand::next(&mut s).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

fn check_pattern(buf: &[u8], offset: u64, generation: u64) -> bool {
    let mut s = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation;
    buf.chunks(8).all(|c| c == &rand::next(&mut s).to_le_bytes()[..c.len()])
}

struct Slot {
    buf: DmaBuf,
    offset_blocks: u64,
    /// Verify: true while the slot's write is in flight, false during its read.
    writing: bool,
    generation: u64,
    uses: u64,
}

struct Job {
    ch: bdev::BdevChannel,
    p: PerfParams,
    bs: u64,
    io_blocks: u64,
    first_block: u64,
    range_ios: u64,
    cursor: u64,
    rng: u64,
    slots: Vec<Slot>,
    done: Vec<(u64, IoStatus)>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl Job {
    fn next_offset(&mut self) -> u64 {
        let i = if self.p.workload.random() {
            rand::next(&mut self.rng) % self.range_ios
        } else {
            let c = self.cursor;
            self.cursor = (self.cursor + 1) % self.range_ios;
            c
        };
        self.first_block + i * self.io_blocks
    }

    fn op(&mut self) -> IoType {
        match self.p.workload {
            Workload::Read | Workload::RandRead => IoType::Read,
            Workload::Write | Workload::RandWrite => IoType::Write,
            Workload::Rw | Workload::RandRw => {
                if (rand::next(&mut self.rng) % 100) < self.p.read_pct as u64 {
                    IoType::Read
                } else {
                    IoType::Write
                }
            }
            Workload::Verify => IoType::Write,
            Workload::Unmap => IoType::Unmap,
            Workload::WriteZeroes => IoType::WriteZeroes,
            Workload::Flush => IoType::Flush,
        }
    }

    /// Submit a new IO on slot `i`.
    fn start(&mut self, i: usize) {
        let (op, off) = if self.p.workload == Workload::Verify {
            // Slot i owns the IO-size ranges whose index is congruent to i, so slots never
            // overlap and every range is checked by the slot that wrote it.
            let q = self.slots.len() as u64;
            let span = self.range_ios / q * q;
            let uses = self.slots[i].uses;
            self.slots[i].uses += 1;
            (IoType::Write, self.first_block + ((uses * q + i as u64) % span) * self.io_blocks)
        } else {
            (self.op(), self.next_offset())
        };
        let io_blocks = self.io_blocks;
        let bs = self.bs;
        let slot = &mut self.slots[i];
        slot.offset_blocks = off;
        let io = match op {
            IoType::Read | IoType::Write => {
                if self.p.workload == Workload::Verify {
                    slot.generation = slot.generation.wrapping_add(1);
                    slot.writing = true;
                    fill_pattern(slot.buf.as_mut_slice(), off * bs, slot.generation);
                }
                let v = IoVecs::single(slot.buf.iovec());
                IoRequest { io_type: op, offset_blocks: off, num_blocks: io_blocks, iovs: v, tag: i as u64 }
            }
            IoType::Flush => IoRequest::no_data(op, 0, 0, i as u64),
            _ => IoRequest::no_data(op, off, io_blocks, i as u64),
        };
        if self.ch.submit(&io).is_err() {
            log::error!("perf job: channel refused a request within its depth");
        }
    }

    fn poll(&mut self) -> PollStatus {
        let Job { ch, done, .. } = self;
        ch.poll(&mut |tag, st| done.push((tag, st)));
        let stopping = self.stop.load(Ordering::Relaxed);
        let mut completed = std::mem::take(&mut self.done);
        for &(tag, st) in &completed {
            let i = tag as usize;
            if st != IoStatus::Success {
                bump(&self.counters.errors, 1);
            } else if self.p.workload == Workload::Verify && self.slots[i].writing {
                // Write done: read the same blocks back into the slot's buffer.
                let s = &mut self.slots[i];
                s.writing = false;
                s.buf.as_mut_slice().fill(0);
                let io = IoRequest::read(s.offset_blocks, self.io_blocks, IoVecs::single(s.buf.iovec()), tag);
                if self.ch.submit(&io).is_err() {
                    log::error!("perf job: channel refused a verify read");
                }
                continue;
            } else {
                if self.p.workload == Workload::Verify {
                    let s = &self.slots[i];
                    if !check_pattern(s.buf.as_slice(), s.offset_blocks * self.bs, s.generation) {
                        bump(&self.counters.mismatches, 1);
                    }
                }
                bump(&self.counters.ios, 1);
                bump(&self.counters.bytes, self.io_blocks * self.bs);
            }
            if !stopping {
                self.start(i);
            }
        }
        completed.clear();
        self.done = completed;
        if stopping && self.ch.in_flight() == 0 {
            self.finished.store(true, Ordering::Release);
            return PollStatus::Idle;
        }
        PollStatus::Busy
    }
}

/// Run a perf job on every reactor for every device of `p`.
pub fn run(xb: &Xbdev, p: &PerfParams) -> Result<PerfResult, XbdevError> {
    if p.queue_depth == 0 {
        return Err(XbdevError::InvalidBuffer("queue depth must be at least 1".into()));
    }
    let nreact = xb.reactors().len();
    struct Started {
        name: String,
        counters: Vec<Arc<Counters>>,
        desc: Desc,
        before: StatsSnapshot,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut started: Vec<Started> = Vec::new();
    let mut finished: Vec<Arc<AtomicBool>> = Vec::new();
    for name in &p.bdevs {
        let writes = !matches!(p.workload, Workload::Read | Workload::RandRead);
        let desc = xb.registry().open(name, writes).map_err(|e| match e {
            bdev::BdevError::NotFound(n) => XbdevError::UnknownDevice(n),
            e => XbdevError::Bdev(e),
        })?;
        let info = desc.info().clone();
        let bs = info.block_size as u64;
        if p.io_size == 0 || !p.io_size.is_multiple_of(bs) {
            return Err(XbdevError::Misaligned {
                what: "io size",
                value: p.io_size,
                block_size: info.block_size,
                remainder: p.io_size % bs,
            });
        }
        let io_blocks = p.io_size / bs;
        let per_job = info.num_blocks / nreact as u64;
        let range_ios = per_job / io_blocks;
        if range_ios < p.queue_depth as u64 {
            return Err(XbdevError::OutOfRange {
                device: name.clone(),
                offset: 0,
                length: p.io_size * p.queue_depth as u64 * nreact as u64,
                size: info.size_bytes(),
                past: (p.io_size * p.queue_depth as u64 * nreact as u64).saturating_sub(info.size_bytes()),
            });
        }
        let before = desc.stats();
        let mut counters = Vec::new();
        for r in 0..nreact {
            let c = Arc::new(Counters::default());
            counters.push(c.clone());
            let fin = Arc::new(AtomicBool::new(false));
            finished.push(fin.clone());
            let desc_j = xb.registry().open(name, writes)?;
            let p2 = p.clone();
            let stop2 = stop.clone();
            let first_block = r as u64 * per_job;
            xb.reactors()[r].call(move |ctx| -> Result<(), XbdevError> {
                let mut ch = desc_j.channel_with_depth(p2.queue_depth)?;
                ch.set_measure_latency(p2.latency);
                let slots = (0..p2.queue_depth)
                    .map(|_| {
                        Ok(Slot {
                            buf: DmaBuf::zeroed(p2.io_size as usize).map_err(bdev::BdevError::from)?,
                            offset_blocks: 0,
                            writing: false,
                            generation: 0,
                            uses: 0,
                        })
                    })
                    .collect::<Result<Vec<_>, XbdevError>>()?;
                let mut job = Job {
                    ch,
                    bs,
                    io_blocks,
                    first_block,
                    range_ios,
                    cursor: 0,
                    rng: rand::seed(),
                    slots,
                    done: Vec::with_capacity(p2.queue_depth),
                    counters: c,
                    stop: stop2,
                    finished: fin,
                    p: p2,
                };
                for i in 0..job.slots.len() {
                    job.start(i);
                }
                let _keep_open = desc_j;
                let mut job = Some(job);
                ctx.add_poller("perf-job", move |_| match job.as_mut() {
                    Some(j) => {
                        let st = j.poll();
                        if j.finished.load(Ordering::Relaxed) {
                            job = None;
                        }
                        st
                    }
                    None => PollStatus::Idle,
                });
                Ok(())
            })??;
        }
        started.push(Started { name: name.clone(), counters, desc, before });
    }
    let t0 = Instant::now();
    std::thread::sleep(p.time);
    let snap: Vec<Vec<(u64, u64)>> = started
        .iter()
        .map(|s| s.counters.iter().map(|c| (c.ios.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed))).collect())
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !finished.iter().all(|f| f.load(Ordering::Acquire)) {
        if Instant::now() > deadline {
            log::error!("perf jobs did not drain within 60 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let devices = started
        .iter()
        .zip(snap)
        .map(|(s, sn)| {
            let ios: u64 = sn.iter().map(|x| x.0).sum();
            let bytes: u64 = sn.iter().map(|x| x.1).sum();
            let st = s.desc.stats().since(&s.before);
            DeviceResult {
                name: s.name.clone(),
                jobs: s.counters.len(),
                iops: ios as f64 / secs,
                mib_s: bytes as f64 / secs / (1 << 20) as f64,
                errors: s.counters.iter().map(|c| c.errors.load(Ordering::Relaxed)).sum(),
                mismatches: s.counters.iter().map(|c| c.mismatches.load(Ordering::Relaxed)).sum(),
                avg_us: st.mean_latency_ns() / 1000.0,
                p50_us: st.percentile_ns(50.0) as f64 / 1000.0,
                p99_us: st.percentile_ns(99.0) as f64 / 1000.0,
                p999_us: st.percentile_ns(99.9) as f64 / 1000.0,
            }
        })
        .collect();
    Ok(PerfResult { devices, seconds: secs })
}

impl PerfResult {
    /// A bdevperf-like table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<20} {:>5} {:>14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            "Device", "Jobs", "IOPS", "MiB/s", "avg(us)", "p50(us)", "p99(us)", "p99.9(us)", "errors"
        );
        for d in &self.devices {
            s += &format!(
                "{:<20} {:>5} {:>14.2} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}\n",
                d.name,
                d.jobs,
                d.iops,
                d.mib_s,
                d.avg_us,
                d.p50_us,
                d.p99_us,
                d.p999_us,
                d.errors + d.mismatches
            );
        }
        s += &format!(
            "{:<20} {:>5} {:>14.2} {:>10.2}   ({:.2} s)\n",
            "Total",
            self.devices.iter().map(|d| d.jobs).sum::<usize>(),
            self.total_iops(),
            self.total_mib_s(),
            self.seconds
        );
        if self.devices.len() == 1 && self.total_iops() > 0.0 {
            s += &format!("ns per IO per core: {:.1}\n", 1e9 / (self.total_iops() / self.devices[0].jobs as f64));
        }
        s
    }

    /// JSON output.
    pub fn json(&self) -> String {
        let devs: Vec<serde_json::Value> = self
            .devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "jobs": d.jobs, "iops": d.iops, "mib_per_s": d.mib_s,
                    "errors": d.errors, "verify_mismatches": d.mismatches,
                    "latency_us": {"avg": d.avg_us, "p50": d.p50_us, "p99": d.p99_us, "p99_9": d.p999_us}
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "seconds": self.seconds, "devices": devs,
            "total": {"iops": self.total_iops(), "mib_per_s": self.total_mib_s(), "errors": self.total_errors()}
        }))
        .unwrap_or_default()
    }
}

/// Parses a size as the command-line tools take it: bytes, or a number with a `k`, `m` or `g`
/// suffix (binary units, any case). `None` for anything else or on overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_with_and_without_suffix() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size(" 128K "), Some(128 << 10));
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("4x"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999g"), None);
    }
}
