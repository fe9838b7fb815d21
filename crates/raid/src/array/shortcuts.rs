//! The seed's shortcut constructors and md_* free functions, as thin
//! wrappers over [`md_create`] and the [`MdArray`] methods.

use std::sync::Arc;

use bdev::Registry;

use super::{md_create, ManageCmd, MdArray, MdConfig, MdDetail, MdError, Monitor};
use crate::geometry::Level;

fn with_chunk(chunk_kib: u32) -> MdConfig {
    MdConfig { chunk_kib, ..MdConfig::default() }
}

/// A raid0 array (`xbdev_md_create_raid0`).
pub fn md_create_raid0(
    registry: &Arc<Registry>,
    name: &str,
    members: &[&str],
    chunk_kib: u32,
) -> Result<Arc<MdArray>, MdError> {
    md_create(registry, name, Level::Raid0, members, &with_chunk(chunk_kib))
}

/// A raid1 array (`xbdev_md_create_raid1`).
pub fn md_create_raid1(registry: &Arc<Registry>, name: &str, members: &[&str]) -> Result<Arc<MdArray>, MdError> {
    md_create(registry, name, Level::Raid1, members, &MdConfig::default())
}

/// A raid5 array, left-symmetric (`xbdev_md_create_raid5`).
pub fn md_create_raid5(
    registry: &Arc<Registry>,
    name: &str,
    members: &[&str],
    chunk_kib: u32,
) -> Result<Arc<MdArray>, MdError> {
    md_create(registry, name, Level::Raid5, members, &with_chunk(chunk_kib))
}

/// A raid10 array, near=2 (`xbdev_md_create_raid10`).
pub fn md_create_raid10(
    registry: &Arc<Registry>,
    name: &str,
    members: &[&str],
    chunk_kib: u32,
) -> Result<Arc<MdArray>, MdError> {
    md_create(registry, name, Level::Raid10, members, &with_chunk(chunk_kib))
}

/// A linear array (`xbdev_md_create_linear`).
pub fn md_create_linear(registry: &Arc<Registry>, name: &str, members: &[&str]) -> Result<Arc<MdArray>, MdError> {
    md_create(registry, name, Level::Linear, members, &MdConfig::default())
}

/// Starts an assembled array ([`MdArray::run`]).
pub fn md_run(array: &MdArray) -> Result<(), MdError> {
    array.run()
}

/// Stops an array ([`MdArray::stop`]).
pub fn md_stop(array: &MdArray) -> Result<(), MdError> {
    array.stop()
}

/// The array's details ([`MdArray::detail`]).
pub fn md_detail(array: &MdArray) -> MdDetail {
    array.detail()
}

/// A management command ([`MdArray::manage`]).
pub fn md_manage(array: &MdArray, cmd: ManageCmd) -> Result<(), MdError> {
    array.manage(cmd)
}

/// Adds an event callback ([`MdArray::monitor`]).
pub fn md_monitor(array: &MdArray, cb: Monitor) {
    array.monitor(cb)
}
