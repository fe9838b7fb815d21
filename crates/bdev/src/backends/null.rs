//! `null`: completes every IO at the next poll; reads return zeroes. For overhead measurement.

use super::{DoneQueue, MEM_CHANNEL_CAPACITY};
use crate::bdev::{Bdev, BdevInfo, IoChannel};
use crate::io::{IoRequest, IoStatus, IoType, IoTypeSet, QueueFull};
use crate::{dma, BdevError};

/// Parameters of a null bdev.
#[derive(Clone, Debug)]
pub struct NullParams {
    /// Name.
    pub name: String,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Block size (512 or 4096).
    pub block_size: u32,
    /// Zero read buffers (default). Turning it off measures pure stack overhead: reads then
    /// leave buffers as they were.
    pub zero_reads: bool,
}

/// A bdev that stores nothing.
pub struct NullBdev {
    info: BdevInfo,
    zero_reads: bool,
}

impl NullBdev {
    /// Create a null bdev.
    pub fn new(p: NullParams) -> Result<NullBdev, BdevError> {
        super::malloc::check_geometry(&p.name, p.block_size, p.num_blocks)?;
        let mut info = BdevInfo::new(&p.name, "null", p.block_size, p.num_blocks, IoTypeSet::ALL);
        info.volatile_cache = false;
        Ok(NullBdev { info, zero_reads: p.zero_reads })
    }
}

struct NullChannel {
    done: DoneQueue,
    zero_reads: bool,
}

impl Bdev for NullBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(NullChannel { done: DoneQueue::new(MEM_CHANNEL_CAPACITY), zero_reads: self.zero_reads }))
    }

    fn config_params(&self) -> Option<String> {
        Some(format!(
            r#"{{"name":{},"num_blocks":{},"block_size":{},"zero_reads":{}}}"#,
            crate::json_str(&self.info.name),
            self.info.num_blocks,
            self.info.block_size,
            self.zero_reads
        ))
    }
}

impl IoChannel for NullChannel {
    #[inline]
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        if self.done.is_full() {
            return Err(QueueFull);
        }
        if self.zero_reads && io.io_type == IoType::Read {
            dma::zero_iovs(io.iovs.as_slice());
        }
        self.done.push(io.tag, IoStatus::Success);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_params_escape_the_name_as_json() {
        // `{:?}` wrote "\u{1}", not JSON, so save_config dropped the device (the xbdev
        // config_parse fuzz target checks that saved params parse back).
        let p = NullParams { name: "n\u{1}\"\\\n\u{e9}".into(), num_blocks: 8, block_size: 512, zero_reads: true };
        let saved = NullBdev::new(p).unwrap().config_params().unwrap();
        let want = r#"{"name":"n\u0001\"\\\né","num_blocks":8,"block_size":512,"zero_reads":true}"#;
        assert_eq!(saved, want);
    }
}
