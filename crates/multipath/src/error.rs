//! Errors of the multipath control plane (IO itself answers with [`bdev::IoStatus`]).

use bdev::BdevError;

/// What went wrong creating, changing or deleting a multipath bdev.
#[derive(Debug, thiserror::Error)]
pub enum MultipathError {
    /// A parameter is out of range or malformed.
    #[error("invalid parameter {param}: {reason}")]
    InvalidParam {
        /// Which parameter.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A policy name that is not one of [`crate::Policy::NAMES`].
    #[error("unknown multipath policy '{0}' (expected one of: round_robin, random, weighted, hash, service_time, average_rate, queue_length, historical_service_time)")]
    UnknownPolicy(String),
    /// No multipath bdev of that name.
    #[error("no multipath bdev named '{0}'")]
    NotFound(String),
    /// A multipath bdev of that name exists already.
    #[error("a multipath bdev named '{0}' already exists")]
    Exists(String),
    /// A multipath bdev needs at least one path to learn its geometry.
    #[error("multipath bdev '{0}' needs at least one path")]
    NoPaths(String),
    /// The path bdev reports no namespace identity at all.
    #[error("bdev '{path}' reports no namespace identity (nguid, eui64 or uuid)")]
    NoIdentity {
        /// The path bdev.
        path: String,
    },
    /// The path does not fit the group: other namespace, size, block size or capabilities.
    #[error("path '{path}' refused by multipath bdev '{device}': {reason}")]
    Mismatch {
        /// The multipath bdev.
        device: String,
        /// The path bdev.
        path: String,
        /// What differs.
        reason: String,
    },
    /// The bdev is already one of the device's paths.
    #[error("bdev '{path}' is already a path of multipath bdev '{device}'")]
    AlreadyMember {
        /// The multipath bdev.
        device: String,
        /// The path bdev.
        path: String,
    },
    /// The bdev is not one of the device's paths.
    #[error("bdev '{path}' is not a path of multipath bdev '{device}'")]
    NotMember {
        /// The multipath bdev.
        device: String,
        /// The path bdev.
        path: String,
    },
    /// The device has as many paths as it may.
    #[error("multipath bdev '{device}' already has the maximum of {max} paths")]
    TooManyPaths {
        /// The multipath bdev.
        device: String,
        /// The limit.
        max: usize,
    },
    /// The path bdev could not be found, opened or claimed.
    #[error("cannot use bdev '{path}' as a path")]
    Open {
        /// The path bdev.
        path: String,
        /// Why.
        #[source]
        source: BdevError,
    },
    /// The multipath bdev could not be registered or unregistered.
    #[error("cannot register or unregister multipath bdev '{name}'")]
    Registry {
        /// The multipath bdev.
        name: String,
        /// Why.
        #[source]
        source: BdevError,
    },
}

impl MultipathError {
    /// An [`MultipathError::InvalidParam`].
    pub fn param(param: &'static str, reason: impl Into<String>) -> MultipathError {
        MultipathError::InvalidParam { param, reason: reason.into() }
    }
}
