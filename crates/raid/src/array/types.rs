//! Public types of the md API: events, states, commands, errors, options
//! and the md_detail report.

use std::sync::Arc;

use bdev::BdevError;
use thiserror::Error;

use crate::assemble::AssembleError;
use crate::create::CreateError;
use crate::geometry::Level;
use crate::offline::OfflineError;

/// Callback receiving [`MdEvent`]s (md_monitor).
pub type Monitor = Arc<dyn Fn(&MdEvent) + Send + Sync>;

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdEvent {
    /// A member failed and left the array.
    DeviceFailed {
        /// Its slot.
        slot: usize,
        /// Its bdev.
        device: String,
    },
    /// The array runs without full redundancy.
    Degraded,
    /// Too many members failed: IO fails.
    ArrayFailed,
    /// A hot spare took over a slot.
    SpareActivated {
        /// The slot.
        slot: usize,
        /// The spare's bdev.
        device: String,
    },
    /// Recovery of a slot started.
    RecoveryStarted {
        /// The slot.
        slot: usize,
    },
    /// Recovery of a slot finished: the array is whole again.
    RecoveryFinished {
        /// The slot.
        slot: usize,
    },
    /// A resync started.
    ResyncStarted,
    /// The resync finished.
    ResyncFinished,
    /// A device was added (as a spare).
    DeviceAdded {
        /// Its bdev.
        device: String,
    },
    /// A device was removed.
    DeviceRemoved {
        /// Its bdev.
        device: String,
    },
    /// A check or repair went through the whole array.
    CheckFinished {
        /// It was a repair.
        repair: bool,
        /// Mismatched sectors found (md's mismatch_cnt).
        mismatch_sectors: u64,
    },
}

/// Background synchronisation in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// None.
    Idle,
    /// Making parity/mirrors consistent (after creation or a crash).
    Resync,
    /// Rebuilding a slot onto a new device.
    Recovery,
    /// Scrub: reading everything and counting mismatches (md's `check`).
    Check,
    /// Scrub that rewrites mismatches (md's `repair`).
    Repair,
}

/// Array state (md_detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayState {
    /// Stopped cleanly.
    Clean,
    /// Running with full redundancy.
    Active,
    /// Running with members missing.
    Degraded,
    /// Resync in progress.
    Resyncing,
    /// Recovery in progress.
    Recovering,
    /// Writes refused.
    Readonly,
    /// Too many members failed.
    Failed,
}

/// Member state (md_detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// In sync in its slot.
    Active,
    /// Failed.
    Faulty,
    /// Hot spare.
    Spare,
    /// Being rebuilt.
    Sync,
    /// Slot without a device.
    Removed,
}

/// Management commands (md_manage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManageCmd {
    /// Add a device. A former member of this array whose old slot is free
    /// returns to it when the write-intent bitmap covers what it missed
    /// (md's re-add: only the chunks with bits set are rebuilt); any other
    /// device becomes a spare and, if the array is degraded, is rebuilt
    /// in full into the missing slot.
    AddDisk(String),
    /// Re-add a former member into its old slot with a bitmap-based
    /// recovery (mdadm --re-add); fails with [`MdError::NotReAddable`]
    /// when the bitmap cannot prove what it missed.
    ReAdd(String),
    /// Remove a failed device or a spare.
    RemoveDisk(String),
    /// Add a hot spare.
    AddSpare(String),
    /// Remove a hot spare.
    RemoveSpare(String),
    /// Replace a member (md's want_replacement): the new device is rebuilt
    /// while the old one keeps serving reads and taking writes, so the
    /// array keeps its redundancy; then the new device takes the slot and
    /// the old one is failed and released.
    ReplaceDisk {
        /// Member to replace.
        old: String,
        /// New device.
        new: String,
    },
    /// Fail a member.
    SetFaulty(String),
    /// Refuse writes.
    SetReadonly,
    /// Accept writes again.
    SetReadwrite,
    /// Start (or resume) recovery/resync and automatic spare activation.
    StartRebuild,
    /// Pause recovery/resync.
    StopRebuild,
    /// Limit recovery/resync/scrub to this many KiB/s (0: unlimited).
    SetSyncSpeed(u64),
    /// Scrub: read every stripe and count parity/mirror mismatches into
    /// `mismatch_cnt` (md's sync_action `check`).
    Check,
    /// Scrub and rewrite what mismatches: parity from the data, mirrors
    /// from the first copy (md's sync_action `repair`).
    Repair,
}

/// Errors of the md API.
#[derive(Debug, Error)]
pub enum MdError {
    /// The block layer refused.
    #[error("bdev")]
    Bdev(#[from] BdevError),
    /// Creating the metadata failed.
    #[error("create")]
    Create(#[from] CreateError),
    /// The members do not form a runnable array.
    #[error("assemble")]
    Assemble(#[from] AssembleError),
    /// Reading a member failed.
    #[error("examine")]
    Offline(#[from] OfflineError),
    /// No such device in the array.
    #[error("no device '{0}' in the array")]
    NoSuchDevice(String),
    /// The operation is not possible in the current state.
    #[error("{0}")]
    Busy(String),
    /// Members with different block sizes or unaligned offsets.
    #[error("member '{0}' has a block size the array layout does not fit")]
    BlockSize(String),
    /// A metadata write failed.
    #[error("cannot write the superblock of '{device}': {status}")]
    SuperblockWrite {
        /// Device.
        device: String,
        /// IO status.
        status: bdev::IoStatus,
    },
    /// A device cannot return to its old slot with a bitmap-based recovery.
    #[error("'{device}' cannot be re-added")]
    NotReAddable {
        /// Device.
        device: String,
        /// Why.
        #[source]
        reason: crate::assemble::ReAddRefusal,
    },
    /// A degraded array was assembled without `run_degraded`.
    #[error("array is degraded; run it explicitly")]
    NotStarted,
}

/// Options of [`md_create`] (the seed's `xbdev_md_config_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdConfig {
    /// Chunk size in KiB (0: 512 KiB).
    pub chunk_kib: u32,
    /// Layout number (`None`: md's default for the level).
    pub layout: Option<u32>,
    /// Skip the initial resync (members' contents are already consistent,
    /// e.g. zeroed).
    pub assume_clean: bool,
    /// Internal write-intent bitmap with this chunk in KiB (0: default).
    pub bitmap_chunk_kib: Option<u32>,
    /// How many of the members (the last ones) are hot spares.
    pub spares: usize,
    /// Data offset in KiB (`None`: 1 MiB).
    pub data_offset_kib: Option<u64>,
    /// Stripe operations per channel (the stripe cache; raid4/5/6).
    pub stripe_cache: usize,
}

impl Default for MdConfig {
    fn default() -> Self {
        MdConfig {
            chunk_kib: 0,
            layout: None,
            assume_clean: false,
            bitmap_chunk_kib: None,
            spares: 0,
            data_offset_kib: None,
            stripe_cache: 16,
        }
    }
}

/// Options of [`md_assemble`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOptions {
    /// Start the array even when degraded (mdadm `--run`).
    pub run_degraded: bool,
    /// Stripe operations per channel.
    pub stripe_cache: usize,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        AssembleOptions { run_degraded: false, stripe_cache: 16 }
    }
}

/// A member in [`MdDetail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDetail {
    /// Device number (index into the superblock's role table).
    pub number: u32,
    /// Bdev name.
    pub name: String,
    /// State.
    pub state: DiskState,
    /// Data size in KiB.
    pub size_kib: u64,
    /// "active 2", "spare", "faulty", "rebuilding 1".
    pub role: String,
}

/// md_detail.
#[derive(Debug, Clone, PartialEq)]
pub struct MdDetail {
    /// Level.
    pub level: Level,
    /// Slots.
    pub raid_disks: usize,
    /// Slots in sync.
    pub active_disks: usize,
    /// Devices working (in sync, rebuilding or spare).
    pub working_disks: usize,
    /// Failed devices still listed.
    pub failed_disks: usize,
    /// Spares.
    pub spare_disks: usize,
    /// Array size in KiB.
    pub size_kib: u64,
    /// Chunk in KiB.
    pub chunk_kib: u64,
    /// State.
    pub state: ArrayState,
    /// Array UUID (mdadm format).
    pub uuid: String,
    /// Slots without an in-sync device.
    pub degraded: bool,
    /// "idle", "resync", "recovery", "check" or "repair" (paused ones end
    /// in " (paused)").
    pub resync_status: String,
    /// Progress of the resync/recovery in percent.
    pub resync_progress: f32,
    /// Its speed in KiB/s.
    pub resync_speed: u64,
    /// Event count.
    pub events: u64,
    /// Sectors found inconsistent by the last check or repair (md's
    /// mismatch_cnt).
    pub mismatch_cnt: u64,
    /// Devices.
    pub disks: Vec<DiskDetail>,
    /// The internal write-intent bitmap, if the array has one.
    pub bitmap: Option<BitmapDetail>,
}

/// How the stripe operations of a raid4/5/6 array were carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StripeStats {
    /// Full-stripe writes (no reads).
    pub full: u64,
    /// Read-modify-write writes.
    pub rmw: u64,
    /// Reconstruct-writes.
    pub rcw: u64,
    /// Writes that rebuilt missing data first (degraded).
    pub reconstruct: u64,
    /// Reads rebuilt from parity.
    pub degraded_reads: u64,
}

/// Background synchronisation counters ([`super::MdArray::sync_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Sync-range sectors resynced (read and made consistent).
    pub resynced_sectors: u64,
    /// Sync-range sectors a resync skipped because the write-intent bitmap
    /// said they were clean.
    pub skipped_sectors: u64,
    /// Member sectors rebuilt by recoveries (full ones and bitmap-based
    /// re-adds).
    pub recovered_sectors: u64,
    /// Member sectors a bitmap-based recovery of a re-added member skipped
    /// because their bits were clear.
    pub recovery_skipped_sectors: u64,
}

/// The write-intent bitmap in [`MdDetail`] (what /proc/mdstat shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapDetail {
    /// KiB of sync range per bit.
    pub chunk_kib: u64,
    /// Bits.
    pub bits: u64,
    /// Bits set (regions that may be inconsistent after a crash).
    pub dirty: u64,
    /// Flush and clear period in milliseconds.
    pub daemon_ms: u64,
}
