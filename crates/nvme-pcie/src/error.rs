//! Driver error types.

use nvme_spec::Status;

use crate::dma::DmaError;

/// Errors of controller bring-up, admin commands, reset and queue creation.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// Registers read all-ones: the device is gone (surprise removal).
    #[error("device {0} is not responding (registers read all-ones)")]
    DeviceGone(String),
    /// The controller reported a fatal status (CSTS.CFS).
    #[error("controller {0} reported fatal status (csts.cfs)")]
    Fatal(String),
    /// CSTS.RDY did not follow CC.EN within CAP.TO.
    #[error("controller {dev} did not become {want} within {ms} ms")]
    ReadyTimeout {
        /// The device.
        dev: String,
        /// "ready" or "disabled".
        want: &'static str,
        /// The limit waited.
        ms: u64,
    },
    /// The controller lacks something this driver needs.
    #[error("controller {dev} is unsupported: {reason}")]
    Unsupported {
        /// The device.
        dev: String,
        /// What is missing.
        reason: &'static str,
    },
    /// An admin command completed with an error status.
    #[error("admin command {opcode:#04x} failed: {status:?}")]
    AdminStatus {
        /// Opcode of the command.
        opcode: u8,
        /// Its completion status.
        status: Status,
    },
    /// An admin command did not complete in time.
    #[error("admin command {opcode:#04x} timed out")]
    AdminTimeout {
        /// Opcode of the command.
        opcode: u8,
    },
    /// Identify or log data the controller returned is malformed.
    #[error("malformed {what} data from the controller")]
    BadData {
        /// Which structure.
        what: &'static str,
    },
    /// No I/O queue identifiers are left.
    #[error("no free i/o queue (controller granted {granted})")]
    NoQueues {
        /// Queues the controller granted.
        granted: u16,
    },
    /// A bad argument (queue depth, buffer size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// DMA memory could not be allocated or accessed.
    #[error("dma memory error")]
    Dma(#[from] DmaError),
}

/// Why an I/O could not be submitted (nothing was queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Not enough free command identifiers (the queue is full).
    #[error("queue full")]
    QueueFull,
    /// The namespace is not active on this controller.
    #[error("namespace {0} is not active")]
    InvalidNamespace(u32),
    /// The namespace's format needs a separate metadata buffer, which this
    /// driver does not provide.
    #[error("namespace {0} uses separate metadata (unsupported)")]
    UnsupportedFormat(u32),
    /// The buffer length is not a multiple of the block size or is zero.
    #[error("buffer of {len} bytes does not fit blocks of {block} bytes")]
    BadLength {
        /// Buffer length.
        len: usize,
        /// Block size.
        block: u32,
    },
    /// The buffer's device address is not 4-byte aligned.
    #[error("buffer is not dword aligned")]
    Misaligned,
    /// The request exceeds what one submission may carry.
    #[error("request too large")]
    TooLarge,
    /// The LBA range is outside the namespace.
    #[error("lba range out of the namespace")]
    OutOfRange,
    /// The controller is gone or failed permanently (a path error).
    #[error("controller is gone")]
    DeviceGone,
}

/// How a submitted I/O failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The controller completed the command with an error status.
    #[error("nvme status {0:?}")]
    Status(Status),
    /// The command did not complete in time (and was aborted or reset away).
    #[error("command timed out")]
    Timeout,
    /// The controller went away (surprise removal or unrecoverable failure).
    #[error("controller is gone")]
    DeviceGone,
}

impl IoError {
    /// True for errors another path to the same namespace might not have
    /// (path-related statuses, controller loss, timeouts).
    pub fn is_path_error(&self) -> bool {
        match self {
            IoError::Status(s) => s.is_path_error(),
            IoError::Timeout | IoError::DeviceGone => true,
        }
    }

    /// True for media errors.
    pub fn is_media_error(&self) -> bool {
        matches!(self, IoError::Status(s) if s.is_media_error())
    }
}
