//! A polled, user-space NVMe PCIe driver.
//!
//! Layers, bottom up:
//! - [`backing`]: the hardware abstraction ([`DeviceBacking`]: BAR0 register
//!   access and DMA memory), implemented by [`vfio`] for real devices (VFIO
//!   type1, or explicitly without an IOMMU) and by [`emu`] (an NVMe
//!   controller emulated in ordinary memory) for tests and benchmarks.
//! - [`mmio`] and [`dma`]: the only places (with [`vfio`]) that touch
//!   device-visible memory, always with volatile/atomic accesses, never
//!   through references.
//! - the driver: [`Controller`] (bring-up per the NVMe base spec, identify,
//!   admin commands, reset, asynchronous events in a bounded log:
//!   [`events`]) and [`IoQueuePair`] (lock-free, one owner
//!   thread, PRPs, SGLs for multi-segment I/O when the controller offers
//!   them ([`sgl`]), batched and shadow doorbells, splitting beyond MDTS,
//!   timeouts with Abort then reset and resubmission, surprise removal).
//! - [`nvme_bdev`]: the `nvme` backend of the block layer (one bdev per
//!   namespace, one queue pair per channel).
//!
//! ```no_run
//! use nvme_pcie::vfio::{AccessMode, PciDevice};
//! use nvme_pcie::{Controller, ControllerConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = PciDevice::open("0000:00:03.0", AccessMode::Vfio)?;
//! let ctrl = Controller::new(dev, ControllerConfig::default())?;
//! let mut q = ctrl.create_io_queue_pair(128)?;
//! let buf = ctrl.dma().alloc(4096)?;
//! q.read(1, 0, &buf, 7)?;
//! while q.poll(&mut |tag, result| println!("{tag}: {result:?}")) == 0 {}
//! # Ok(())
//! # }
//! ```

mod admin;
pub mod backing;
mod ctrl;
pub mod dma;
pub mod emu;
mod error;
pub mod events;
pub mod mmio;
pub mod nvme_bdev;
pub mod prp;
mod queue;
pub mod sgl;
pub mod vfio;

pub use backing::{DeviceBacking, RegisterIo};
pub use ctrl::{Controller, ControllerConfig, ControllerInfo, NamespaceInfo};
pub use dma::{DmaAllocator, DmaBuffer, DmaError, DmaMapper, MemorySource, SoftIommu};
pub use error::{IoError, NvmeError, SubmitError};
pub use events::{AsyncEventKind, AsyncEventRecord, EventDetail};
pub use nvme_spec;
pub use queue::{IoQueuePair, QueueStats, MAX_SEGMENTS};
