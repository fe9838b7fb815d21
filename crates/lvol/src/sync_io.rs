//! Synchronous IO on a base channel for the control plane and the metadata thread: submit one
//! request, poll until it completes. Offsets and lengths are in bytes (block aligned).

use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs};
use std::time::{Duration, Instant};

/// Why a synchronous IO failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncIoError {
    /// The device answered with an error status.
    #[error("{op} at byte {offset} (+{len}) failed: {status}")]
    Status {
        /// Operation.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Status.
        status: IoStatus,
    },
    /// No completion within the timeout.
    #[error("{op} at byte {offset} did not complete within {secs} s")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Seconds waited.
        secs: u64,
    },
    /// Offset or length not block aligned.
    #[error("{op} at byte {offset} (+{len}) is not aligned to {block} byte blocks")]
    Unaligned {
        /// Operation.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Block size.
        block: u64,
    },
    /// Buffer memory.
    #[error("buffer memory: {0}")]
    Dma(String),
}

/// Largest single request issued.
const MAX_CHUNK: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A channel used synchronously.
pub struct SyncIo {
    ch: BdevChannel,
    bs: u64,
    max: u64,
}

impl SyncIo {
    /// Wrap a channel.
    pub fn new(ch: BdevChannel, max_io_blocks: u32) -> SyncIo {
        let bs = ch.block_size() as u64;
        let mut max = MAX_CHUNK;
        if max_io_blocks != 0 {
            max = max.min(max_io_blocks as u64 * bs).max(bs);
        }
        SyncIo { ch, bs, max }
    }

    /// Block size.
    pub fn block_size(&self) -> u64 {
        self.bs
    }

    fn run(&mut self, io: IoRequest, op: &'static str, offset: u64, len: u64) -> Result<(), SyncIoError> {
        let t0 = Instant::now();
        loop {
            match self.ch.submit(&io) {
                Ok(()) => break,
                Err(_) => {
                    self.ch.poll(&mut |_, _| {});
                    if t0.elapsed() > TIMEOUT {
                        return Err(SyncIoError::Timeout { op, offset, secs: TIMEOUT.as_secs() });
                    }
                }
            }
        }
        let mut got = None;
        let mut spins = 0u32;
        while got.is_none() {
            if self.ch.poll(&mut |_, st| got = Some(st)) == 0 {
                spins += 1;
                if spins > 64 {
                    std::thread::yield_now();
                }
                if t0.elapsed() > TIMEOUT {
                    return Err(SyncIoError::Timeout { op, offset, secs: TIMEOUT.as_secs() });
                }
            }
        }
        match got {
            Some(IoStatus::Success) => Ok(()),
            Some(status) => Err(SyncIoError::Status { op, offset, len, status }),
            None => Err(SyncIoError::Timeout { op, offset, secs: 0 }),
        }
    }

    fn check(&self, op: &'static str, offset: u64, len: u64) -> Result<(), SyncIoError> {
        if !offset.is_multiple_of(self.bs) || !len.is_multiple_of(self.bs) {
            return Err(SyncIoError::Unaligned { op, offset, len, block: self.bs });
        }
        Ok(())
    }

    /// Read `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, SyncIoError> {
        self.check("read", offset, len)?;
        let mut out = vec![0u8; len as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(self.max);
            let mut buf = DmaBuf::alloc(n as usize).map_err(|e| SyncIoError::Dma(e.to_string()))?;
            let io = IoRequest::read((offset + done) / self.bs, n / self.bs, IoVecs::single(buf.iovec()), 0);
            self.run(io, "read", offset + done, n)?;
            out[done as usize..(done + n) as usize].copy_from_slice(buf.as_slice());
            done += n;
        }
        Ok(out)
    }

    /// Write `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SyncIoError> {
        let len = data.len() as u64;
        self.check("write", offset, len)?;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(self.max);
            let mut buf = DmaBuf::alloc(n as usize).map_err(|e| SyncIoError::Dma(e.to_string()))?;
            buf.as_mut_slice().copy_from_slice(&data[done as usize..(done + n) as usize]);
            let io = IoRequest::write((offset + done) / self.bs, n / self.bs, IoVecs::single(buf.iovec()), 0);
            self.run(io, "write", offset + done, n)?;
            done += n;
        }
        Ok(())
    }

    /// Write zeroes over `len` bytes at `offset` (the device's write-zeroes when it has one).
    pub fn write_zeroes(&mut self, offset: u64, len: u64, device_zeroes: bool) -> Result<(), SyncIoError> {
        self.check("write zeroes", offset, len)?;
        if device_zeroes {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(1 << 30);
                let io = IoRequest::no_data(IoType::WriteZeroes, (offset + done) / self.bs, n / self.bs, 0);
                self.run(io, "write zeroes", offset + done, n)?;
                done += n;
            }
            return Ok(());
        }
        let chunk = self.max.min(len.max(self.bs));
        let mut buf = DmaBuf::zeroed(chunk as usize).map_err(|e| SyncIoError::Dma(e.to_string()))?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk);
            let v = buf.iovec_range(0, n as usize).ok_or(SyncIoError::Dma("zero buffer".into()))?;
            let io = IoRequest::write((offset + done) / self.bs, n / self.bs, IoVecs::single(v), 0);
            self.run(io, "write", offset + done, n)?;
            done += n;
        }
        Ok(())
    }

    /// Flush the device's volatile cache.
    pub fn flush(&mut self) -> Result<(), SyncIoError> {
        self.run(IoRequest::no_data(IoType::Flush, 0, 0, 0), "flush", 0, 0)
    }
}
