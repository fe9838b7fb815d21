//! The one error type of the xbdev API.

use bdev::{BdevError, IoStatus};

/// Everything that can go wrong calling xbdev.
#[derive(Debug, thiserror::Error)]
pub enum XbdevError {
    /// `init` was called while xbdev is running.
    #[error("xbdev is already initialized")]
    AlreadyInitialized,
    /// A call before `init` (or after `fini`).
    #[error("xbdev is not initialized")]
    NotInitialized,
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No device of that name.
    #[error("unknown device '{0}'")]
    UnknownDevice(String),
    /// A handle number that was never returned by `open`.
    #[error("invalid handle {0}")]
    BadHandle(i32),
    /// IO or close on a handle that was closed.
    #[error("handle {0} is closed")]
    Closed(i32),
    /// A write-like operation on a read-only handle.
    #[error("device '{0}' was opened read-only")]
    ReadOnly(String),
    /// An offset or length that is not a multiple of the block size.
    #[error("{what} {value} is not a multiple of the block size {block_size} (off by {remainder} bytes)")]
    Misaligned {
        /// `offset` or `length`.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The device's block size.
        block_size: u32,
        /// `value % block_size`.
        remainder: u64,
    },
    /// A range past the end of the device.
    #[error("range {offset}+{length} is past the end of '{device}' ({size} bytes) by {past} bytes")]
    OutOfRange {
        /// Device name.
        device: String,
        /// Offset given.
        offset: u64,
        /// Length given.
        length: u64,
        /// Device size.
        size: u64,
        /// How far past the end.
        past: u64,
    },
    /// A zero-length data transfer.
    #[error("zero-length {0}")]
    ZeroLength(&'static str),
    /// A buffer that cannot carry the transfer.
    #[error("invalid buffer: {0}")]
    InvalidBuffer(String),
    /// The device answered with an error status.
    #[error("{op} at offset {offset} on '{device}' failed: {status}")]
    Io {
        /// Device name.
        device: String,
        /// Operation.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Status the device returned.
        status: IoStatus,
    },
    /// Waiting for a completion timed out.
    #[error("timed out waiting for IO completion")]
    Timeout,
    /// An async queue has no free slot; poll completions first.
    #[error("io queue is full ({0} requests in flight)")]
    QueueFull(usize),
    /// A multipath error.
    #[error(transparent)]
    Multipath(#[from] multipath::MultipathError),
    /// A block-layer control-plane error.
    #[error(transparent)]
    Bdev(#[from] BdevError),
    /// Reactors could not be started or reached.
    #[error(transparent)]
    Reactor(#[from] reactor::ReactorError),
    /// A file operation failed.
    #[error("{context}")]
    File {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
