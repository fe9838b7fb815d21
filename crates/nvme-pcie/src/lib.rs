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

pub mod backing;
pub mod dma;
pub mod mmio;
pub mod vfio;

pub use backing::{DeviceBacking, RegisterIo};
pub use dma::{DmaAllocator, DmaBuffer, DmaError, DmaMapper, MemorySource, SoftIommu};
