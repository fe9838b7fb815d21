//! md-compatible software RAID for xbdev.
//!
//! Arrays use the Linux md on-disk format: a version-1.2 superblock on
//! every member ([`superblock`]), an optional internal write-intent bitmap
//! ([`superblock::bitmap`]) and data laid out exactly as md lays it out
//! ([`geometry`]), so arrays move freely between xbdev and `mdadm`.
//! [`parity`] has the XOR and RAID6 P/Q kernels (SIMD with a portable
//! fallback). [`create`] and [`assemble`] are the metadata halves of
//! md_create and md_assemble; [`offline`] reads, writes and rebuilds
//! arrays on plain files synchronously. [`array`] runs arrays as xbdev
//! block devices with the md-style management API (`md_create`,
//! `md_assemble`, `md_stop`, `md_detail`, `md_manage`, ...).
//!
//! ```
//! use std::sync::Arc;
//! use bdev::backends::malloc::{MallocBdev, MallocParams};
//! use bdev::{DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
//! use raid::array::{md_create, ManageCmd, MdConfig};
//! use raid::Level;
//!
//! let reg = Registry::new();
//! for i in 0..4 {
//!     let p = MallocParams { name: format!("m{i}"), num_blocks: 8192, block_size: 512 };
//!     reg.register(Arc::new(MallocBdev::new(p).unwrap())).unwrap();
//! }
//! let cfg = MdConfig { chunk_kib: 64, assume_clean: true, ..MdConfig::default() };
//! let md = md_create(&reg, "md0", Level::Raid5, &["m0", "m1", "m2", "m3"], &cfg).unwrap();
//! let mut ch = reg.open("md0", true).unwrap().channel().unwrap();
//! let mut buf = DmaBuf::zeroed(4096).unwrap();
//! ch.submit(&IoRequest::write(0, 8, IoVecs::single(buf.iovec()), 7)).unwrap();
//! let mut status = None;
//! while status.is_none() {
//!     ch.poll(&mut |_tag, st| status = Some(st));
//! }
//! assert_eq!(status, Some(IoStatus::Success));
//! md.manage(ManageCmd::SetFaulty("m2".into())).unwrap();
//! assert!(md.detail().degraded);
//! drop(ch);
//! md.stop().unwrap();
//! ```

pub mod array;
pub mod assemble;
pub mod create;
pub mod geometry;
pub mod offline;
pub mod parity;
pub mod superblock;

pub use geometry::{Geometry, GeometryError, Level};
pub use superblock::{Superblock, SuperblockError};
