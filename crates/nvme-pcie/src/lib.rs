//! A polled, user-space NVMe PCIe driver.
//!
//! Layers, bottom up:
//! - [`backing`]: the hardware abstraction ([`DeviceBacking`]: BAR0 register
//!   access and DMA memory), implemented by [`vfio`] for real devices and by
//!   [`emu`] (an NVMe controller emulated in ordinary memory) for tests.
//! - [`mmio`] and [`dma`]: the only places that touch device-visible memory,
//!   always with volatile/atomic accesses, never through references.
//! - the driver: controller bring-up, admin commands, lock-free IO queue
//!   pairs, timeouts/abort/reset.

mod admin;
pub mod backing;
mod ctrl;
pub mod dma;
pub mod emu;
mod error;
pub mod mmio;
pub mod nvme_bdev;
pub mod prp;
mod queue;
pub mod vfio;

pub use backing::{DeviceBacking, RegisterIo};
pub use ctrl::{Controller, ControllerConfig, ControllerInfo, NamespaceInfo};
pub use dma::{DmaAllocator, DmaBuffer, DmaError, DmaMapper, MemorySource, SoftIommu};
pub use error::{IoError, NvmeError, SubmitError};
pub use nvme_spec;
pub use queue::{IoQueuePair, QueueStats};
