//! Errors of the lvol control plane.

use crate::core::CoreError;

/// What went wrong with a store or volume operation.
#[derive(Debug, thiserror::Error)]
pub enum LvolError {
    /// No store of that name or UUID.
    #[error("no lvol store named '{0}'")]
    StoreNotFound(String),
    /// No volume of that name in the store.
    #[error("no volume '{name}' in lvol store '{lvs}'")]
    VolumeNotFound {
        /// Store.
        lvs: String,
        /// Volume.
        name: String,
    },
    /// A `lvs/vol` path without a slash, or with an empty part.
    #[error("'{0}' is not a volume path of the form lvs/vol")]
    BadPath(String),
    /// A name already in use.
    #[error("{kind} '{name}' already exists")]
    Duplicate {
        /// "lvol store" or "volume".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A name with bad characters or length.
    #[error("invalid name '{name}': {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A parameter out of range.
    #[error("invalid {param}: {reason}")]
    InvalidParam {
        /// Parameter.
        param: &'static str,
        /// Why.
        reason: String,
    },
    /// Not enough free clusters.
    #[error("not enough space in lvol store '{lvs}': need {need} clusters, {free} free")]
    NoSpace {
        /// Store.
        lvs: String,
        /// Clusters needed.
        need: u64,
        /// Clusters free.
        free: u64,
    },
    /// A snapshot others depend on.
    #[error("snapshot '{name}' has {} dependent volume(s): {}; destroy or inflate them first", children.len(), children.join(", "))]
    HasDependents {
        /// Snapshot.
        name: String,
        /// Volumes depending on it.
        children: Vec<String>,
    },
    /// The operation needs a snapshot.
    #[error("'{0}' is not a snapshot")]
    NotSnapshot(String),
    /// The operation does not apply to snapshots.
    #[error("'{0}' is a snapshot (read-only)")]
    IsSnapshot(String),
    /// A volume without a parent.
    #[error("volume '{0}' has no parent")]
    NoParent(String),
    /// The snapshot's origin volume is gone or no longer derives from it.
    #[error("snapshot '{0}' has no origin volume to restore")]
    NoOrigin(String),
    /// Another module holds the volume (e.g. a RAID member).
    #[error("volume '{name}' is claimed by {by}")]
    Claimed {
        /// Volume.
        name: String,
        /// Claim holder.
        by: String,
    },
    /// The store is full of volumes.
    #[error("lvol store '{0}' holds the maximum number of volumes")]
    TooManyVolumes(String),
    /// Bad key bytes.
    #[error("encryption key must be {0} bytes of two different AES-256 keys")]
    BadKey(usize),
    /// The key does not match the volume's key reference.
    #[error("the key does not match volume '{0}'")]
    WrongKey(String),
    /// The volume's key is not loaded.
    #[error("volume '{0}' is encrypted and locked; call encryption_enable with its key")]
    Locked(String),
    /// Metadata engine failure.
    #[error("metadata")]
    Core(#[from] CoreError),
    /// Block layer failure.
    #[error("bdev")]
    Bdev(#[from] bdev::BdevError),
}

/// Check a store or volume name: 1 to 63 bytes of `A-Z a-z 0-9 _ - .`.
pub fn check_name(name: &str) -> Result<(), LvolError> {
    let bad = |reason| Err(LvolError::BadName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > crate::format::MAX_NAME {
        return bad("must be 1 to 63 bytes");
    }
    if !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')) {
        return bad("only letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}
