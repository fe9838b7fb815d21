//! Errors of the block layer's control plane (IO itself answers with [`crate::IoStatus`]).

/// What went wrong creating, finding, opening or claiming a bdev.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// No bdev of that name or alias.
    #[error("no bdev named '{0}'")]
    NotFound(String),
    /// A bdev of that name or alias already exists.
    #[error("a bdev named '{0}' already exists")]
    Exists(String),
    /// A module holds the exclusive write claim.
    #[error("bdev '{name}' is claimed by {by}")]
    Claimed {
        /// Bdev name.
        name: String,
        /// Claiming module and owner, e.g. `raid:md0`.
        by: String,
    },
    /// A claim was asked for while other writers have the bdev open.
    #[error("bdev '{name}' cannot be claimed: {writers} other descriptor(s) have it open for writing")]
    OpenWriters {
        /// Bdev name.
        name: String,
        /// Number of other writers.
        writers: usize,
    },
    /// A claim needs a read-write descriptor.
    #[error("bdev '{0}' was opened read-only and cannot be claimed")]
    ReadOnlyDescriptor(String),
    /// The bdev was hot-removed.
    #[error("bdev '{0}' has been removed")]
    Removed(String),
    /// Parameters for a new bdev are wrong.
    #[error("invalid parameter {param}: {reason}")]
    InvalidParam {
        /// Which parameter.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An OS call failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Buffer memory could not be had.
    #[error("buffer memory")]
    Dma(#[from] crate::dma::DmaError),
}

impl BdevError {
    /// An [`BdevError::InvalidParam`].
    pub fn param(param: &'static str, reason: impl Into<String>) -> BdevError {
        BdevError::InvalidParam { param, reason: reason.into() }
    }

    /// An [`BdevError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BdevError {
        BdevError::Io { context: context.into(), source }
    }
}
