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

pub mod array;
pub mod assemble;
pub mod create;
pub mod geometry;
pub mod offline;
pub mod parity;
pub mod superblock;

pub use geometry::{Geometry, GeometryError, Level};
pub use superblock::{Superblock, SuperblockError};
