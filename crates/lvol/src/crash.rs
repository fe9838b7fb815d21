//! A crash-simulating bdev for crash-consistency tests.
//!
//! [`CrashDisk`] keeps a log of every write (with its data), every flush and test markers. A
//! write is *durable* once a flush that was submitted after the write completed has itself
//! completed. [`CrashLog::image_at`] builds the disk a crash right after log event `p` leaves:
//! the base image, then every write submitted before `p` in log order, each durable write in
//! full and every other write block by block with probability ½ (so torn and reordered writes
//! happen). One workload run yields a crash image for every write point, without re-running it.

use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoRequest, IoStatus, IoType, IoTypeSet, QueueFull};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// One logged event.
#[derive(Clone, Debug)]
pub enum Event {
    /// A write was submitted (first block, data).
    Write {
        /// First block.
        lba: u64,
        /// Bytes.
        data: Arc<Vec<u8>>,
    },
    /// The write logged at this index completed.
    WriteDone(usize),
    /// A flush was submitted.
    FlushStart,
    /// The flush logged at this index completed.
    FlushDone(usize),
    /// A test marker.
    Mark(u64),
}

/// The log and base image of a [`CrashDisk`].
pub struct CrashLog {
    /// Block size.
    pub bs: u64,
    /// Image the log starts from.
    pub base: Vec<u8>,
    /// Events in order.
    pub events: Vec<Event>,
    /// Logging on (off: writes go to `base` directly, nothing is logged).
    pub logging: bool,
    /// The device's current contents (every write submitted so far).
    pub current: Vec<u8>,
}

impl CrashLog {
    /// For each event index, the index of the flush completion that made it durable (writes
    /// only; `usize::MAX` when never).
    pub fn durable_at(&self) -> Vec<usize> {
        let mut durable = vec![usize::MAX; self.events.len()];
        let mut open: Vec<usize> = Vec::new(); // completed, not yet durable
        let mut covers: std::collections::HashMap<usize, Vec<usize>> = Default::default();
        for (i, e) in self.events.iter().enumerate() {
            match e {
                Event::WriteDone(w) => open.push(*w),
                Event::FlushStart => {
                    covers.insert(i, open.clone());
                }
                Event::FlushDone(f) => {
                    if let Some(ws) = covers.remove(f) {
                        for &w in &ws {
                            if let Some(d) = durable.get_mut(w) {
                                *d = (*d).min(i);
                            }
                        }
                        open.retain(|w| !ws.contains(w));
                    }
                }
                _ => {}
            }
        }
        durable
    }

    /// The disk a crash right after event `p` leaves, choosing volatile blocks with `rng`.
    pub fn image_at(&self, p: usize, durable: &[usize], rng: &mut u64) -> Vec<u8> {
        let mut img = self.base.clone();
        self.apply_until(&mut img, p, durable, rng);
        img
    }

    /// Apply to `img` the writes logged up to event `p` as a crash there would leave them.
    pub fn apply_until(&self, img: &mut [u8], p: usize, durable: &[usize], rng: &mut u64) {
        let bs = self.bs as usize;
        for (i, e) in self.events.iter().enumerate().take(p + 1) {
            let Event::Write { lba, data } = e else { continue };
            let off = *lba as usize * bs;
            let is_durable = durable.get(i).is_some_and(|&d| d <= p);
            for (k, blk) in data.chunks(bs).enumerate() {
                if is_durable || bdev::rand::next(rng) & 1 == 0 {
                    let at = off + k * bs;
                    if let Some(dst) = img.get_mut(at..at + blk.len()) {
                        dst.copy_from_slice(blk);
                    }
                }
            }
        }
    }

    /// The image with every logged write applied (no crash).
    pub fn final_image(&self) -> Vec<u8> {
        let mut img = self.base.clone();
        let bs = self.bs as usize;
        for e in &self.events {
            if let Event::Write { lba, data } = e {
                let off = *lba as usize * bs;
                if let Some(dst) = img.get_mut(off..off + data.len()) {
                    dst.copy_from_slice(data);
                }
            }
        }
        img
    }
}

/// A RAM disk that logs writes and flushes for crash simulation.
pub struct CrashDisk {
    info: BdevInfo,
    log: Arc<Mutex<CrashLog>>,
}

fn lock(m: &Mutex<CrashLog>) -> MutexGuard<'_, CrashLog> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CrashDisk {
    /// A disk named `name` starting as `image` (its length a multiple of `block_size`).
    pub fn new(name: &str, block_size: u32, image: Vec<u8>) -> Result<CrashDisk, BdevError> {
        if !matches!(block_size, 512 | 4096) || image.is_empty() || !image.len().is_multiple_of(block_size as usize) {
            return Err(BdevError::param("image", "length must be a positive multiple of a 512 or 4096 block size"));
        }
        let supported = IoTypeSet::of(&[IoType::Read, IoType::Write, IoType::Flush, IoType::Reset]);
        let mut info = BdevInfo::new(name, "crash", block_size, (image.len() / block_size as usize) as u64, supported);
        info.volatile_cache = true;
        let log =
            CrashLog { bs: block_size as u64, current: image.clone(), base: image, events: Vec::new(), logging: true };
        Ok(CrashDisk { info, log: Arc::new(Mutex::new(log)) })
    }

    /// A disk that does not log: reads and writes go straight to `image` (for loading crash
    /// images without copying them twice).
    pub fn plain(name: &str, block_size: u32, image: Vec<u8>) -> Result<CrashDisk, BdevError> {
        let d = CrashDisk::new(name, block_size, Vec::from([0u8; 512]).repeat(block_size as usize / 512))?;
        let mut info = d.info.clone();
        info.num_blocks = (image.len() / block_size as usize) as u64;
        if image.is_empty() || !image.len().is_multiple_of(block_size as usize) {
            return Err(BdevError::param("image", "length must be a positive multiple of the block size"));
        }
        let log =
            CrashLog { bs: block_size as u64, base: Vec::new(), events: Vec::new(), logging: false, current: image };
        Ok(CrashDisk { info, log: Arc::new(Mutex::new(log)) })
    }

    /// The log (shared with the disk's channels).
    pub fn log(&self) -> Arc<Mutex<CrashLog>> {
        self.log.clone()
    }
}

/// Append a test marker to a disk's log.
pub fn mark(log: &Mutex<CrashLog>, m: u64) {
    let mut l = lock(log);
    if l.logging {
        l.events.push(Event::Mark(m));
    }
}

struct CrashChannel {
    log: Arc<Mutex<CrashLog>>,
    bs: u64,
    done: VecDeque<(u64, IoStatus, Option<usize>, bool)>,
}

impl Bdev for CrashDisk {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(CrashChannel { log: self.log.clone(), bs: self.info.block_size as u64, done: VecDeque::new() }))
    }
}

impl IoChannel for CrashChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if self.done.len() >= 4096 {
            return Err(QueueFull);
        }
        let mut l = lock(&self.log);
        let off = (io.offset_blocks * self.bs) as usize;
        let len = (io.num_blocks * self.bs) as usize;
        match io.io_type {
            IoType::Read => {
                // Reads see every write submitted so far (the device's cache).
                let mut buf = vec![0u8; len];
                if let Some(src) = l.current.get(off..off + len) {
                    buf.copy_from_slice(src);
                }
                bdev::dma::copy_to_iovs(io.iovs.as_slice(), &buf);
                drop(l);
                self.done.push_back((io.tag, IoStatus::Success, None, false));
            }
            IoType::Write => {
                let mut buf = vec![0u8; len];
                bdev::dma::copy_from_iovs(io.iovs.as_slice(), &mut buf);
                if let Some(dst) = l.current.get_mut(off..off + len) {
                    dst.copy_from_slice(&buf);
                }
                if l.logging {
                    let idx = l.events.len();
                    l.events.push(Event::Write { lba: io.offset_blocks, data: Arc::new(buf) });
                    drop(l);
                    self.done.push_back((io.tag, IoStatus::Success, Some(idx), false));
                } else {
                    drop(l);
                    self.done.push_back((io.tag, IoStatus::Success, None, false));
                }
            }
            IoType::Flush => {
                let idx = l.events.len();
                if l.logging {
                    l.events.push(Event::FlushStart);
                }
                drop(l);
                self.done.push_back((io.tag, IoStatus::Success, Some(idx), true));
            }
            _ => {
                drop(l);
                self.done.push_back((io.tag, IoStatus::Success, None, false));
            }
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let n = self.done.len();
        for _ in 0..n {
            let Some((tag, st, idx, flush)) = self.done.pop_front() else { break };
            if let Some(i) = idx {
                let mut l = lock(&self.log);
                if l.logging {
                    l.events.push(if flush { Event::FlushDone(i) } else { Event::WriteDone(i) });
                }
            }
            done(tag, st);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}
