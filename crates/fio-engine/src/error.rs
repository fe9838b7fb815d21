//! The engine's error type, and its translation to the errno values fio reports.

use xbdev::XbdevError;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No `--xbdev_conf` was given.
    #[error("no xbdev config: pass --xbdev_conf=<file.json> (the JSON config that creates the devices)")]
    NoConfig,
    /// The config file could not be read or parsed.
    #[error("cannot load xbdev config '{path}'")]
    Config {
        /// The file named by `xbdev_conf`.
        path: String,
        /// What is wrong with it.
        #[source]
        source: xbdev::ConfigError,
    },
    /// `xbdev_cores` is malformed.
    #[error("invalid xbdev_cores '{value}': {reason}")]
    Cores {
        /// The option's value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `xbdev_idle` is not a known policy.
    #[error("invalid xbdev_idle '{0}' (expected adaptive or poll)")]
    Idle(String),
    /// An option string is not UTF-8.
    #[error("option {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// xbdev did not start.
    #[error("cannot start xbdev")]
    Start(#[source] Box<XbdevError>),
    /// A device named by `--filename` could not be opened.
    #[error("cannot open device '{name}'")]
    Open {
        /// The device name.
        name: String,
        /// Why.
        #[source]
        source: Box<XbdevError>,
    },
    /// The job's IO queue could not be created.
    #[error("cannot create the job's io queue")]
    Queue(#[source] Box<XbdevError>),
    /// fio's IO buffers could not be allocated.
    #[error("cannot allocate {len} bytes of IO buffer memory")]
    IoMem {
        /// Bytes asked for.
        len: usize,
        /// Why.
        #[source]
        source: bdev::dma::DmaError,
    },
    /// The size-probe process failed.
    #[error("device size probe: {0}")]
    Probe(String),
    /// An OS call of the size probe failed.
    #[error("device size probe: {what}")]
    ProbeOs {
        /// The call.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file id that is not open in this job.
    #[error("file id {0} is not open in this job")]
    BadFile(u32),
    /// An IO buffer outside DMA-capable memory.
    #[error("IO buffer {addr:#x}+{len} is not in DMA-capable memory (do not combine the engine with mem=/iomem=)")]
    ForeignBuffer {
        /// Buffer address.
        addr: usize,
        /// Buffer length.
        len: u64,
    },
    /// A request outside the device or not aligned to its blocks.
    #[error("{op} of {len} bytes at offset {offset} on '{device}': {reason}")]
    Range {
        /// Operation name.
        op: &'static str,
        /// Device name.
        device: String,
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// What is wrong.
        reason: String,
    },
    /// `xbdev_mode` is not a known mode.
    #[error("invalid xbdev_mode '{0}' (expected inline or reactor)")]
    Mode(String),
    /// The size-probe child reported an error.
    #[error("{message}")]
    ProbeFailed {
        /// The errno of the child's error.
        errno: i32,
        /// The child's message.
        message: String,
    },
    /// An operation code the shim should never send.
    #[error("unknown operation code {0}")]
    BadOp(u8),
    /// xbdev refused an IO.
    #[error("{op} of {len} bytes at offset {offset}")]
    Io {
        /// Operation name.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        #[source]
        source: Box<XbdevError>,
    },
}

impl EngineError {
    /// The errno fio should report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            EngineError::NoConfig
            | EngineError::Config { .. }
            | EngineError::Cores { .. }
            | EngineError::Idle(_)
            | EngineError::Mode(_)
            | EngineError::Range { .. }
            | EngineError::NotUtf8(_)
            | EngineError::BadOp(_)
            | EngineError::ForeignBuffer { .. } => libc::EINVAL,
            EngineError::Start(e) | EngineError::Queue(e) => xbdev_errno(e),
            EngineError::Open { source, .. } | EngineError::Io { source, .. } => xbdev_errno(source),
            EngineError::IoMem { .. } => libc::ENOMEM,
            EngineError::Probe(_) => libc::EIO,
            EngineError::ProbeFailed { errno, .. } => *errno,
            EngineError::ProbeOs { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            EngineError::BadFile(_) => libc::EBADF,
        }
    }

    /// The message with every cause, `a: b: c`.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// The errno for an xbdev error.
pub fn xbdev_errno(e: &XbdevError) -> i32 {
    match e {
        XbdevError::UnknownDevice(_) => libc::ENOENT,
        XbdevError::ReadOnly(_) => libc::EROFS,
        XbdevError::QueueFull(_) => libc::EBUSY,
        XbdevError::Timeout => libc::ETIMEDOUT,
        XbdevError::Io { status, .. } => status_errno(*status),
        XbdevError::NotInitialized | XbdevError::Closed(_) | XbdevError::BadHandle(_) => libc::EBADF,
        XbdevError::File { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        XbdevError::Bdev(_) | XbdevError::Reactor(_) => libc::EIO,
        _ => libc::EINVAL,
    }
}

/// The errno fio reports for a completed IO's status (0 for success).
pub fn status_errno(s: bdev::IoStatus) -> i32 {
    use bdev::IoStatus::*;
    match s {
        Success => 0,
        MediaError => libc::EIO,
        PathError => libc::ENXIO,
        NoSpace => libc::ENOSPC,
        Invalid => libc::EINVAL,
        Aborted => libc::ECANCELED,
        Timeout => libc::ETIMEDOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failed_status_has_a_nonzero_errno() {
        for s in bdev::IoStatus::ALL {
            assert_eq!(status_errno(s) == 0, s.is_ok(), "{s}");
        }
    }

    #[test]
    fn chain_includes_causes() {
        let e = EngineError::Open { name: "m9".into(), source: Box::new(XbdevError::UnknownDevice("m9".into())) };
        assert_eq!(e.chain(), "cannot open device 'm9': unknown device 'm9'");
        assert_eq!(e.errno(), libc::ENOENT);
    }
}
