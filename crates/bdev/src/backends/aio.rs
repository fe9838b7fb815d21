//! `aio`: files and block devices through io_uring.
//!
//! O_DIRECT by default (buffered on request); the file is registered with each channel's ring,
//! and so are the DMA buffer regions that exist when the channel is created (reads and writes
//! into them use the fixed-buffer opcodes). Submissions are batched: `submit` only fills the
//! submission queue; `poll` makes one `io_uring_enter` for the whole batch and reaps the
//! completion queue.

use crate::bdev::{Bdev, BdevInfo, IoChannel};
use crate::io::{IoType, IoTypeSet};
use crate::uring::UringChannel;
use crate::{ffi, BdevError};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;

/// Parameters of an aio bdev.
#[derive(Clone, Debug)]
pub struct AioParams {
    /// Name.
    pub name: String,
    /// Path of the file or block device.
    pub filename: String,
    /// Block size; detected when `None` (BLKSSZGET for devices, 512 for files).
    pub block_size: Option<u32>,
    /// Use the page cache instead of O_DIRECT.
    pub buffered: bool,
    /// Open read-only.
    pub readonly: bool,
    /// Submission queue entries per channel.
    pub queue_depth: u32,
}

impl AioParams {
    /// Defaults: detected block size, O_DIRECT, read-write, 512-entry rings.
    pub fn new(name: &str, filename: &str) -> AioParams {
        AioParams {
            name: name.into(),
            filename: filename.into(),
            block_size: None,
            buffered: false,
            readonly: false,
            queue_depth: 512,
        }
    }
}

/// A file or block device served through io_uring.
pub struct AioBdev {
    info: BdevInfo,
    file: Arc<File>,
    params: AioParams,
}

impl AioBdev {
    /// Open the file or device and detect its geometry.
    pub fn new(p: AioParams) -> Result<AioBdev, BdevError> {
        if p.name.is_empty() {
            return Err(BdevError::param("name", "must not be empty"));
        }
        if !(1..=32768).contains(&p.queue_depth) {
            return Err(BdevError::param("queue_depth", format!("{} is not in 1..=32768", p.queue_depth)));
        }
        let mut oo = OpenOptions::new();
        oo.read(true).write(!p.readonly);
        if !p.buffered {
            oo.custom_flags(libc::O_DIRECT);
        }
        let file = oo.open(&p.filename).map_err(|e| BdevError::io(format!("cannot open '{}'", p.filename), e))?;
        let md = file.metadata().map_err(|e| BdevError::io(format!("cannot stat '{}'", p.filename), e))?;
        let is_dev = md.file_type().is_block_device();
        let (size, detected_bs) = if is_dev {
            let size =
                ffi::blkgetsize64(&file).map_err(|e| BdevError::io(format!("BLKGETSIZE64 on '{}'", p.filename), e))?;
            let bs = ffi::blksszget(&file).map_err(|e| BdevError::io(format!("BLKSSZGET on '{}'", p.filename), e))?;
            (size, bs)
        } else if md.is_file() {
            (md.len(), 512)
        } else {
            return Err(BdevError::param("filename", format!("'{}' is neither a file nor a block device", p.filename)));
        };
        let bs = p.block_size.unwrap_or(detected_bs);
        if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
            return Err(BdevError::param("block_size", format!("{bs} is not a power of two in 512..=65536")));
        }
        if bs < detected_bs && !p.buffered {
            return Err(BdevError::param(
                "block_size",
                format!("{bs} is below the device's logical block size {detected_bs} (O_DIRECT needs at least that)"),
            ));
        }
        let num_blocks = size / bs as u64;
        if num_blocks == 0 {
            return Err(BdevError::param(
                "filename",
                format!("'{}' is {size} bytes, smaller than one {bs}-byte block", p.filename),
            ));
        }
        let mut supported = IoTypeSet::ALL;
        if p.readonly {
            supported = supported.without(IoType::Write).without(IoType::Unmap).without(IoType::WriteZeroes);
        }
        let mut info = BdevInfo::new(&p.name, "aio", bs, num_blocks, supported);
        info.required_alignment = if p.buffered { 1 } else { detected_bs.max(512) };
        info.volatile_cache = true;
        info.unmap_zeroes = !is_dev;
        let mut p = p;
        p.block_size = Some(bs);
        Ok(AioBdev { info, file: Arc::new(file), params: p })
    }
}

impl Bdev for AioBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        let ch = UringChannel::new(self.file.clone(), self.info.block_size, self.params.queue_depth)
            .map_err(|e| BdevError::io(format!("cannot set up io_uring for '{}'", self.info.name), e))?;
        Ok(Box::new(ch))
    }

    fn config_params(&self) -> Option<String> {
        Some(format!(
            r#"{{"name":{},"filename":{},"block_size":{},"buffered":{},"readonly":{}}}"#,
            crate::json_str(&self.info.name),
            crate::json_str(&self.params.filename),
            self.info.block_size,
            self.params.buffered,
            self.params.readonly
        ))
    }
}
