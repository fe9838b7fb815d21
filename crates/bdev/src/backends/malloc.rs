//! `malloc`: a RAM disk.

use super::{DoneQueue, MEM_CHANNEL_CAPACITY};
use crate::bdev::{Bdev, BdevInfo, IoChannel};
use crate::dma::SharedMem;
use crate::io::{IoRequest, IoStatus, IoType, IoTypeSet, QueueFull};
use crate::BdevError;
use std::sync::{Arc, OnceLock};

/// Parameters of a malloc bdev.
#[derive(Clone, Debug)]
pub struct MallocParams {
    /// Name.
    pub name: String,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Block size: 512 or 4096.
    pub block_size: u32,
}

/// Check a block size and count for an in-memory bdev.
pub(crate) fn check_geometry(name: &str, block_size: u32, num_blocks: u64) -> Result<(), BdevError> {
    if name.is_empty() {
        return Err(BdevError::param("name", "must not be empty"));
    }
    if block_size != 512 && block_size != 4096 {
        return Err(BdevError::param("block_size", format!("{block_size} is not 512 or 4096")));
    }
    if num_blocks == 0 {
        return Err(BdevError::param("num_blocks", "must be at least 1"));
    }
    if num_blocks.checked_mul(block_size as u64).is_none_or(|b| b > (1 << 46)) {
        return Err(BdevError::param("num_blocks", format!("{num_blocks} blocks is larger than 64 TiB")));
    }
    Ok(())
}

/// Bytes of the largest CPU cache (sysfs), read once.
fn last_level_cache_bytes() -> Option<u64> {
    static LLC: OnceLock<Option<u64>> = OnceLock::new();
    *LLC.get_or_init(|| {
        let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
        dir.filter_map(|e| {
            let size = std::fs::read_to_string(e.ok()?.path().join("size")).ok()?;
            let size = size.trim();
            let (num, mul) = match size.strip_suffix('K') {
                Some(n) => (n, 1 << 10),
                None => match size.strip_suffix('M') {
                    Some(n) => (n, 1 << 20),
                    None => (size, 1),
                },
            };
            num.parse::<u64>().ok()?.checked_mul(mul)
        })
        .max()
    })
}

/// A RAM disk, shared by all reactors' channels.
///
/// A RAM disk at least as large as the CPU's last-level cache takes writes with streaming
/// (non-temporal) stores: its data mostly lives in memory, and streaming stores skip reading
/// each destination line into the cache first, which nearly halves the memory traffic of a
/// write. Smaller RAM disks, which live in the cache, take plain copies.
pub struct MallocBdev {
    info: BdevInfo,
    mem: Arc<SharedMem>,
    streaming: bool,
}

impl MallocBdev {
    /// Create a RAM disk of `num_blocks` blocks (memory is zeroed).
    pub fn new(p: MallocParams) -> Result<MallocBdev, BdevError> {
        check_geometry(&p.name, p.block_size, p.num_blocks)?;
        let mem = SharedMem::new((p.num_blocks * p.block_size as u64) as usize)?;
        let info = BdevInfo::new(&p.name, "malloc", p.block_size, p.num_blocks, IoTypeSet::ALL);
        let bytes = p.num_blocks * p.block_size as u64;
        let streaming = last_level_cache_bytes().is_some_and(|llc| bytes >= llc);
        Ok(MallocBdev { info, mem: Arc::new(mem), streaming })
    }
}

struct MallocChannel {
    mem: Arc<SharedMem>,
    bs: u64,
    done: DoneQueue,
    /// Writes use streaming stores.
    streaming: bool,
    /// Streaming stores were made since the last fence.
    unfenced: bool,
}

impl Bdev for MallocBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            mem: self.mem.clone(),
            bs: self.info.block_size as u64,
            done: DoneQueue::new(MEM_CHANNEL_CAPACITY),
            streaming: self.streaming,
            unfenced: false,
        }))
    }

    fn config_params(&self) -> Option<String> {
        Some(format!(
            r#"{{"name":{:?},"num_blocks":{},"block_size":{}}}"#,
            self.info.name, self.info.num_blocks, self.info.block_size
        ))
    }
}

impl IoChannel for MallocChannel {
    #[inline]
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if self.done.is_full() {
            return Err(QueueFull);
        }
        let off = io.offset_blocks * self.bs;
        let ok = match io.io_type {
            IoType::Read => self.mem.read_to_iovs(off, io.iovs.as_slice()),
            IoType::Write if self.streaming => {
                self.unfenced = true;
                self.mem.write_from_iovs_streaming(off, io.iovs.as_slice())
            }
            IoType::Write => self.mem.write_from_iovs(off, io.iovs.as_slice()),
            IoType::Unmap | IoType::WriteZeroes => self.mem.zero(off, io.num_blocks * self.bs),
            IoType::Flush | IoType::Reset => true,
        };
        self.done.push(io.tag, if ok { IoStatus::Success } else { IoStatus::Invalid });
        Ok(())
    }

    #[inline]
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        if self.unfenced {
            // Completed writes must be visible to whoever learns of their completion.
            SharedMem::store_fence();
            self.unfenced = false;
        }
        self.done.drain(done)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::DmaBuf;
    use crate::io::IoVecs;

    /// Writes two odd-sized segments and reads them back, with and without streaming stores.
    #[test]
    fn writes_read_back_in_both_copy_modes() {
        for streaming in [false, true] {
            let mut bdev = MallocBdev::new(MallocParams { name: "m".into(), num_blocks: 64, block_size: 512 }).unwrap();
            bdev.streaming = streaming;
            let mut ch = bdev.open_channel().unwrap();
            let mut src = DmaBuf::alloc(2048).unwrap();
            for (i, x) in src.as_mut_slice().iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            let mut iovs = IoVecs::new();
            assert!(iovs.push(src.iovec_range(0, 100).unwrap()));
            assert!(iovs.push(src.iovec_range(100, 1948).unwrap()));
            ch.submit(&IoRequest { io_type: IoType::Write, offset_blocks: 3, num_blocks: 4, iovs, tag: 1 }).unwrap();
            let mut seen = Vec::new();
            ch.poll(&mut |tag, st| seen.push((tag, st)));
            assert_eq!(seen, [(1, IoStatus::Success)]);
            let mut dst = DmaBuf::zeroed(2560).unwrap();
            let iovs = IoVecs::single(dst.iovec());
            ch.submit(&IoRequest { io_type: IoType::Read, offset_blocks: 2, num_blocks: 5, iovs, tag: 2 }).unwrap();
            ch.poll(&mut |_, st| assert_eq!(st, IoStatus::Success));
            assert!(dst.as_slice()[..512].iter().all(|&x| x == 0), "streaming {streaming}");
            assert_eq!(&dst.as_slice()[512..], src.as_slice(), "streaming {streaming}");
        }
    }
}
