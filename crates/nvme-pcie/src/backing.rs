//! The hardware abstraction the driver is written against.
//!
//! A [`DeviceBacking`] gives the driver two things: register access to BAR0
//! ([`RegisterIo`]) and a [`DmaAllocator`] whose memory the device can reach.
//! Real hardware is reached through [`crate::vfio`]; tests and benchmarks use
//! the emulated controller in [`crate::emu`].

use crate::dma::DmaAllocator;

/// 32/64-bit access to a device's register BAR.
///
/// Reads outside the BAR return all-ones and writes there are dropped, the
/// same thing a PCI read of a removed device returns: the driver treats
/// all-ones as "device gone", so a bad offset can never crash it.
pub trait RegisterIo: Send + Sync {
    /// Size of the BAR in bytes.
    fn len(&self) -> usize;
    /// True if the BAR has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Read the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Write the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Read the 64-bit register at `offset`.
    fn read64(&self, offset: usize) -> u64;
    /// Write the 64-bit register at `offset`.
    fn write64(&self, offset: usize, value: u64);
}

/// A PCI NVMe function the driver can drive.
pub trait DeviceBacking: Send + Sync + 'static {
    /// The BAR0 register accessor.
    type Registers: RegisterIo;
    /// A name for the device (its PCI address, or the emulator's name).
    fn id(&self) -> &str;
    /// BAR0.
    fn bar0(&self) -> &Self::Registers;
    /// An allocator for memory this device can DMA to and from.
    fn dma(&self) -> &DmaAllocator;
}
