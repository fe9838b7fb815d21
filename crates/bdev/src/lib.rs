//! The xbdev block-device core: the [`Bdev`] trait and its IO contract, IO descriptors and
//! statuses, the registry with claims, hot-remove and examine hooks, per-bdev statistics,
//! DMA buffer memory, and the base backends (malloc, null, aio over io_uring, fault injection).

pub mod backends;
mod bdev;
mod channel;
pub mod clock;
pub mod dma;
mod error;
pub mod ffi;
mod io;
pub mod rand;
mod registry;
pub mod stats;
mod uring;

pub use bdev::{json_str, AnaState, Bdev, BdevInfo, IoChannel, NamespaceId, Uuid};
pub use channel::{BdevChannel, DEFAULT_CHANNEL_DEPTH};
pub use dma::{DmaBuf, IoVec};
pub use error::BdevError;
pub use io::{IoRequest, IoStatus, IoType, IoTypeSet, IoVecs, QueueFull, MAX_IOVS};
pub use registry::{BdevEvent, Desc, EventCallback, Examiner, Registry};
pub use stats::StatsSnapshot;
