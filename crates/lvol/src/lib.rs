//! Logical volumes for xbdev (issue 8): crash-consistent logical volume stores on any bdev,
//! with thin and thick volumes, snapshots, clones, resize, compression and encryption.
//!
//! See `FORMAT.md` for the on-disk format and the crate README section in it for the design.

pub mod codec;
pub mod core;
pub mod format;
pub mod record;
pub mod state;
pub mod sync_io;
pub mod view;
