//! Logical volumes for xbdev: crash-consistent logical volume stores on any bdev, with thin and
//! thick volumes, snapshots, clones, resize, compression and encryption. Every volume is a bdev
//! (`lvs/vol`, alias its UUID) in the [`bdev::Registry`], so RAID, multipath and the fio engine
//! use it like any other.
//!
//! # Model
//! A store (`lvs`) formats one base bdev: super block, journal, two checkpoint areas, data
//! clusters (see `FORMAT.md`). A volume maps logical clusters to physical clusters; each mapped
//! cluster has a 64-bit *valid mask*, one bit per granule (`cluster / 64`, at least 4 KiB).
//! A granule whose bit is clear reads through to the parent snapshot (below the volume's
//! `parent_limit`) or as zeroes. Compressed volumes store granules as variable-size packed
//! chunks (4 KiB sectors inside "packed" clusters).
//!
//! # Copy-on-write granularity
//! SPDK copies a whole cluster (1-4 MiB) on the first 4 KiB write to a clone. Here the unit is
//! the granule: a first write fills only the uncovered part of the granules it touches (from
//! the parent, or zeroes), writes them into the volume's cluster and sets their valid bits.
//! With the default 4 MiB clusters a 4 KiB write into a clone moves 64 KiB (60 KiB read from
//! the parent, 64 KiB written), 64 times less than a cluster copy; with 256 KiB clusters the
//! granule is 4 KiB and an aligned 4 KiB write copies nothing. The `lvol_figures` example
//! measures both.
//!
//! # Crash consistency
//! Every metadata change is a logical record applied by one function ([`state::MdState::apply`])
//! both when it is made and at replay. Records go to a journal in transactions (flush the data
//! they point at, write, flush) and are durable when the call returns (or, for first writes,
//! before the write completes). When half the journal is used the whole state is checkpointed
//! into the inactive checkpoint area and the super block (two alternating copies) switched to
//! it; recovery reads the checkpoint and replays at most one journal's worth of records. Space
//! freed by a record is reused only after that record is durable, and after every IO channel
//! moved past the reuse epoch it was freed in (IO in progress may still write to it).
//!
//! # Unmap
//! Unmap and write-zeroes on a thin volume release whole granules the volume does not read
//! from a parent (a `Release` record per cluster, chunk removal for compressed granules); a
//! cluster left empty returns to the store. Partial granules, parent-backed granules and thick
//! volumes get zeroes written. Either way the range reads as zeroes. Snapshot, clone, create,
//! destroy, resize, rename, restore and merge are each one record; data-moving operations
//! (inflate, decouple, merge's copies, encryption conversion) are sequences of records each of
//! which leaves every volume's contents unchanged. `tests/crash.rs` checks this at every write
//! point of random workloads with [`crash::CrashDisk`].
//!
//! # Concurrency
//! IO channels read maps lock-free (atomics) and take the metadata mutex only to allocate, to
//! claim granules for a first write and to journal it. A first write fills what it does not
//! cover of its granules and writes them whole (a compressed write rewrites its granule
//! whole), so it claims them first: another write of a claimed granule, or an unmap releasing
//! it, waits in its channel (retried on poll, the reactor never blocks) until the claim is
//! dropped, when the first write's record is applied; then it plans again (an overwrite now).
//! Overwrites of valid granules take no lock and see no claims. An allocation on a full store
//! while released space is still pending reuse waits likewise; it fails with `NoSpace` only
//! when nothing is pending. A flush completes once the records applied before it are durable.
//!
//! Control operations run on the caller's thread with their own base channel; operations that
//! change maps (snapshot, resize, destroy, restore, merge, codec changes) freeze the store:
//! new IO waits in the channels, in-progress IO drains (the caller must not hold a channel of
//! the store with IO in flight on its own thread; likewise IO waiting for released space needs
//! the other channels with IO in flight to be polled). Each store has a metadata thread that
//! writes journal transactions (group commit) and checkpoints.
//!
//! # Entry points
//! [`Lvol`] (the seed's API by name: `lvs_create`, `lvol_create`, `snapshot_create`, ...),
//! [`Store`] (one store, by volume name), [`check()`] (validate every invariant).

pub mod check;
pub mod codec;
pub mod core;
pub mod crash;
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

pub use check::{check, CheckError, CheckReport};
pub use error::LvolError;
pub use module::{Lvol, VolumeBdev};
pub use store::{CreateOpts, Store, StoreInfo, VolumeInfo};
