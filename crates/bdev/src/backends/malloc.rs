//! `malloc`: a RAM disk.

use super::{DoneQueue, MEM_CHANNEL_CAPACITY};
use crate::bdev::{Bdev, BdevInfo, IoChannel};
use crate::dma::SharedMem;
use crate::io::{IoRequest, IoStatus, IoType, IoTypeSet, QueueFull};
use crate::BdevError;
use std::sync::Arc;

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

/// A RAM disk, shared by all reactors' channels.
pub struct MallocBdev {
    info: BdevInfo,
    mem: Arc<SharedMem>,
}

impl MallocBdev {
    /// Create a RAM disk of `num_blocks` blocks (memory is zeroed).
    pub fn new(p: MallocParams) -> Result<MallocBdev, BdevError> {
        check_geometry(&p.name, p.block_size, p.num_blocks)?;
        let mem = SharedMem::new((p.num_blocks * p.block_size as u64) as usize)?;
        let info = BdevInfo::new(&p.name, "malloc", p.block_size, p.num_blocks, IoTypeSet::ALL);
        Ok(MallocBdev { info, mem: Arc::new(mem) })
    }
}

struct MallocChannel {
    mem: Arc<SharedMem>,
    bs: u64,
    done: DoneQueue,
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
            IoType::Write => self.mem.write_from_iovs(off, io.iovs.as_slice()),
            IoType::Unmap | IoType::WriteZeroes => self.mem.zero(off, io.num_blocks * self.bs),
            IoType::Flush | IoType::Reset => true,
        };
        self.done.push(io.tag, if ok { IoStatus::Success } else { IoStatus::Invalid });
        Ok(())
    }

    #[inline]
    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        self.done.drain(done)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}
