//! A closed-loop random load on one bdev channel: `qd` IOs always in flight, a share of reads,
//! and an optional verify mode in which every read is checked against the last write of its
//! range.
//!
//! Verify mode splits the region into IO-sized chunks, each owned by one slot (chunk `c` by
//! slot `c % qd`); a slot has one IO in flight at a time, so no two IOs to one chunk ever
//! overlap and the expected content of every chunk is known. A failed write leaves its chunk
//! unknown until the next successful write; a chunk never written is written before it is read.

use bdev::{BdevChannel, Desc, DmaBuf, IoRequest, IoStatus, IoVecs};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Bytes per IO (a multiple of the block size).
    pub io_bytes: usize,
    /// IOs kept in flight.
    pub qd: usize,
    /// Percentage of reads (0..=100).
    pub read_pct: u32,
    /// Check reads against the writes.
    pub verify: bool,
    /// Bytes of the device used, from offset 0 (clipped to the device size).
    pub region_bytes: u64,
    /// After this many polls in a row without a completion, sleep a little before the next
    /// (leaving the CPU to the target, the network stack and other threads); 0 polls without
    /// ever sleeping.
    pub idle_polls: u32,
}

/// Counters since the load started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Bytes moved by successful IOs.
    pub bytes: u64,
    /// IOs that completed with an error status.
    pub errors: u64,
    /// Reads whose data differed from the last write (verify mode).
    pub mismatches: u64,
    /// Reads checked against a known write (verify mode).
    pub verified: u64,
}

impl Totals {
    /// Successful IOs.
    pub fn ios(&self) -> u64 {
        self.reads + self.writes
    }
}

struct Slot {
    buf: DmaBuf,
    chunk: u64,
    gen: u32,
    write: bool,
}

/// The load and its channel.
pub struct Load {
    ch: BdevChannel,
    spec: Spec,
    io_blocks: u64,
    chunks_per_slot: u64,
    slots: Vec<Slot>,
    idle: Vec<usize>,
    /// Generation last written to each chunk (0: unknown).
    gens: Vec<u32>,
    next_gen: u32,
    rng: u64,
    done: Vec<(u64, IoStatus)>,
    /// Counters.
    pub totals: Totals,
    /// The first error or mismatch, described.
    pub first_problem: Option<String>,
}

/// The word at index `k` of chunk `chunk` written with generation `gen`.
fn word(chunk: u64, gen: u32, k: u64) -> u64 {
    ((chunk << 32) | u64::from(gen)) ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn fill(buf: &mut [u8], chunk: u64, gen: u32) {
    for (k, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(chunk, gen, k as u64).to_le_bytes());
    }
}

/// The first differing word: (index, found).
fn check(buf: &[u8], chunk: u64, gen: u32) -> Option<(usize, u64)> {
    buf.chunks_exact(8).enumerate().find_map(|(k, w)| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b);
        (v != word(chunk, gen, k as u64)).then_some((k, v))
    })
}

impl Load {
    /// A load on a new channel of `desc`.
    pub fn new(desc: &Desc, spec: Spec) -> Result<Load, String> {
        let ch = desc.channel().map_err(|e| format!("opening a channel: {e}"))?;
        let bs = u64::from(ch.block_size());
        if spec.io_bytes == 0 || !(spec.io_bytes as u64).is_multiple_of(bs) {
            return Err(format!("io size {} is not a multiple of the block size {bs}", spec.io_bytes));
        }
        if spec.qd == 0 || spec.read_pct > 100 {
            return Err("queue depth must be at least 1 and the read share at most 100".into());
        }
        let io_blocks = spec.io_bytes as u64 / bs;
        let region = spec.region_bytes.min(ch.num_blocks() * bs);
        let chunks_per_slot = region / spec.io_bytes as u64 / spec.qd as u64;
        if chunks_per_slot == 0 {
            return Err(format!(
                "region of {region} bytes is too small for {} IOs of {} bytes",
                spec.qd, spec.io_bytes
            ));
        }
        let slots = (0..spec.qd)
            .map(|_| {
                Ok(Slot {
                    buf: DmaBuf::zeroed(spec.io_bytes).map_err(|e| format!("buffer: {e}"))?,
                    chunk: 0,
                    gen: 0,
                    write: false,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let gens = if spec.verify { vec![0; (chunks_per_slot * spec.qd as u64) as usize] } else { Vec::new() };
        Ok(Load {
            ch,
            idle: (0..spec.qd).rev().collect(),
            done: Vec::with_capacity(spec.qd),
            io_blocks,
            chunks_per_slot,
            slots,
            gens,
            next_gen: 1,
            rng: bdev::rand::seed(),
            spec,
            totals: Totals::default(),
            first_problem: None,
        })
    }

    /// IOs in flight.
    pub fn in_flight(&self) -> usize {
        self.spec.qd - self.idle.len()
    }

    fn start(&mut self, i: usize) -> bool {
        let r = bdev::rand::next(&mut self.rng);
        let chunk = i as u64 + (r % self.chunks_per_slot) * self.spec.qd as u64;
        let want_read = ((r >> 40) % 100) < u64::from(self.spec.read_pct);
        let known = self.gens.get(chunk as usize).is_some_and(|g| *g != 0);
        let write = if self.spec.verify { !want_read || !known } else { !want_read };
        let gen = if write && self.spec.verify {
            let g = self.next_gen;
            self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
            g
        } else {
            self.gens.get(chunk as usize).copied().unwrap_or(0)
        };
        let Some(slot) = self.slots.get_mut(i) else { return false };
        if write && self.spec.verify {
            fill(slot.buf.as_mut_slice(), chunk, gen);
        }
        slot.chunk = chunk;
        slot.gen = gen;
        slot.write = write;
        let v = IoVecs::single(slot.buf.iovec());
        let off = chunk * self.io_blocks;
        let io = if write {
            IoRequest::write(off, self.io_blocks, v, i as u64)
        } else {
            IoRequest::read(off, self.io_blocks, v, i as u64)
        };
        self.ch.submit(&io).is_ok()
    }

    fn complete(&mut self, i: usize, st: IoStatus) {
        let Some(slot) = self.slots.get(i) else { return };
        let (chunk, gen, write) = (slot.chunk, slot.gen, slot.write);
        if !st.is_ok() {
            self.totals.errors += 1;
            if write {
                if let Some(g) = self.gens.get_mut(chunk as usize) {
                    *g = 0;
                }
            }
            if self.first_problem.is_none() {
                let op = if write { "write" } else { "read" };
                self.first_problem = Some(format!("{op} of chunk {chunk} failed: {st:?}"));
            }
            return;
        }
        self.totals.bytes += self.spec.io_bytes as u64;
        if write {
            self.totals.writes += 1;
            if let Some(g) = self.gens.get_mut(chunk as usize) {
                *g = gen;
            }
            return;
        }
        self.totals.reads += 1;
        if self.spec.verify && gen != 0 {
            self.totals.verified += 1;
            if let Some((k, found)) = check(slot.buf.as_slice(), chunk, gen) {
                self.totals.mismatches += 1;
                if self.first_problem.is_none() {
                    self.first_problem = Some(format!(
                        "chunk {chunk}: word {k} is {found:#018x}, expected generation {gen} ({:#018x})",
                        word(chunk, gen, k as u64)
                    ));
                }
            }
        }
    }

    /// Fill the queue, poll the channel once and account the completions. Returns how many IOs
    /// completed.
    pub fn step(&mut self) -> usize {
        self.refill();
        self.poll_once()
    }

    fn refill(&mut self) {
        while let Some(i) = self.idle.pop() {
            if !self.start(i) {
                self.idle.push(i);
                break;
            }
        }
    }

    fn poll_once(&mut self) -> usize {
        let mut done = std::mem::take(&mut self.done);
        self.ch.poll(&mut |t, s| done.push((t, s)));
        let n = done.len();
        for (t, s) in done.drain(..) {
            self.complete(t as usize, s);
            self.idle.push(t as usize);
        }
        self.done = done;
        n
    }

    /// Run until `keep_going` says stop; it is called after every poll.
    pub fn run_while(&mut self, mut keep_going: impl FnMut(&Load) -> bool) {
        let mut idle = 0u32;
        loop {
            if self.step() > 0 {
                idle = 0;
            } else if self.spec.idle_polls > 0 {
                idle += 1;
                if idle >= self.spec.idle_polls {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            if !keep_going(self) {
                return;
            }
        }
    }

    /// Run for `d`.
    #[allow(dead_code)] // used by tests/nvmet_multipath.rs
    pub fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        self.run_while(|_| Instant::now() < end);
    }

    /// Stop submitting and wait for the IO in flight (at most `timeout`). False on timeout.
    pub fn drain(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() > end {
                return false;
            }
            self.poll_once();
        }
        true
    }

    /// Verify mode: read back every chunk with a known generation, `qd` at a time, and check
    /// it. Returns the number of chunks checked (mismatches and errors land in the totals).
    pub fn read_back_all(&mut self, timeout: Duration) -> Result<u64, String> {
        if !self.drain(timeout) {
            return Err("IO still in flight before the read-back".into());
        }
        let end = Instant::now() + timeout;
        let known: Vec<u64> = self.gens.iter().enumerate().filter(|(_, g)| **g != 0).map(|(c, _)| c as u64).collect();
        let mut next = known.iter();
        let mut checked = 0u64;
        loop {
            while let Some(i) = self.idle.pop() {
                let Some(&chunk) = next.next() else {
                    self.idle.push(i);
                    break;
                };
                let gen = self.gens.get(chunk as usize).copied().unwrap_or(0);
                let Some(slot) = self.slots.get_mut(i) else { break };
                slot.chunk = chunk;
                slot.gen = gen;
                slot.write = false;
                let io =
                    IoRequest::read(chunk * self.io_blocks, self.io_blocks, IoVecs::single(slot.buf.iovec()), i as u64);
                while self.ch.submit(&io).is_err() {
                    self.poll_once();
                }
                checked += 1;
            }
            self.poll_once();
            if self.in_flight() == 0 && next.len() == 0 {
                return Ok(checked);
            }
            if Instant::now() > end {
                return Err("read-back timed out".into());
            }
        }
    }
}
