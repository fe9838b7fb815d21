//! A disk whose writes land late, to force IO of the volume above to overlap.

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoRequest, IoStatus, IoType, QueueFull, Registry};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u64 = 512;

/// A disk whose requests reach the memory only after a random delay (as DMA may happen any
/// time before the completion): a write into a cluster that was freed and handed to another
/// volume meanwhile would land on that volume's data.
pub struct LateDisk {
    info: BdevInfo,
    mem: Arc<MallocBdev>,
    /// Only writes of this many blocks are late (by 30 ms); 0: every write, by a random delay.
    only: u64,
}

struct LateChannel {
    base: Box<dyn IoChannel>,
    queue: VecDeque<(Instant, IoRequest)>,
    rng: u64,
    sent: usize,
    only: u64,
}

pub fn late_disk(reg: &Registry, bytes: u64, only: u64) -> Arc<LateDisk> {
    let mem = Arc::new(
        MallocBdev::new(MallocParams { name: "mem".into(), num_blocks: bytes / BS, block_size: BS as u32 }).unwrap(),
    );
    let info = BdevInfo::new("late", "late", BS as u32, bytes / BS, mem.info().supported);
    let late = Arc::new(LateDisk { info, mem, only });
    reg.register(late.clone()).unwrap();
    late
}

impl LateDisk {
    /// What a crash now would leave: the memory without the writes still queued.
    pub fn image(&self) -> Vec<u8> {
        let mut ch = self.mem.open_channel().unwrap();
        let len = (self.info.num_blocks * BS) as usize;
        let mut b = bdev::DmaBuf::zeroed(len).unwrap();
        ch.submit(&IoRequest::read(0, self.info.num_blocks, bdev::IoVecs::single(b.iovec()), 0)).unwrap();
        let mut st = None;
        while st.is_none() {
            ch.poll(&mut |_, s| st = Some(s));
        }
        assert_eq!(st, Some(IoStatus::Success));
        b.as_slice().to_vec()
    }
}

impl Bdev for LateDisk {
    fn info(&self) -> &BdevInfo {
        &self.info
    }
    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(LateChannel {
            base: self.mem.open_channel()?,
            queue: VecDeque::new(),
            rng: 77,
            sent: 0,
            only: self.only,
        }))
    }
}

impl IoChannel for LateChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if self.queue.len() >= 1024 {
            return Err(QueueFull);
        }
        // Writes land after up to 200 us, one in 32 after 5 ms.
        let r = bdev::rand::next(&mut self.rng);
        let us = match io.io_type {
            IoType::Write if self.only != 0 && io.num_blocks == self.only => 30_000,
            IoType::Write if self.only != 0 => 0,
            IoType::Write if r.is_multiple_of(32) => 5000,
            IoType::Write => r % 200,
            _ => 0,
        };
        self.queue.push_back((Instant::now() + Duration::from_micros(us), *io));
        Ok(())
    }
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        let now = Instant::now();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].0 <= now {
                let (_, io) = self.queue.remove(i).unwrap();
                if self.base.submit(&io).is_err() {
                    self.queue.push_front((now, io));
                    break;
                }
                self.sent += 1;
            } else {
                i += 1;
            }
        }
        let n = self.base.poll(done);
        self.sent -= n;
        n
    }
    fn in_flight(&self) -> usize {
        self.queue.len() + self.sent
    }
}
