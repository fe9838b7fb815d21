//! Logical volumes for xbdev (issue 8): crash-consistent logical volume stores on any bdev,
//! with thin and thick volumes, snapshots, clones, resize, compression and encryption.
//!
//! See `FORMAT.md` for the on-disk format and the crate README section in it for the design.

pub mod codec;
pub mod core;
pub mod ctl_io;
mod dma;
pub mod error;
pub mod format;
pub mod module;
pub mod record;
pub mod state;
pub mod store;
pub mod sync_io;
pub mod vchan;
pub mod view;

pub use error::LvolError;
pub use module::{Lvol, VolumeBdev};
pub use store::{CreateOpts, Store, StoreInfo, VolumeInfo};
pub mod check;
pub mod crash;

pub use check::{check, CheckError, CheckReport};
