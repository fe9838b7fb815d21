//! Memory-mapped device registers (a PCI BAR mapped into this process).
//!
//! Every access is a volatile read or write of the exact width asked for;
//! no reference to the mapping is ever created. With `dma` and `vfio`, this
//! is one of the only modules containing `unsafe`.

use std::ptr::NonNull;

use crate::backing::RegisterIo;

/// A mapped register window of `len` bytes.
#[derive(Debug)]
pub struct MmioRegion {
    ptr: NonNull<u8>,
    len: usize,
    /// Called with (ptr, len) on drop to release the mapping.
    unmap: Option<fn(*mut u8, usize)>,
}

// SAFETY: the region is only accessed with volatile reads/writes through a raw
// pointer, which is sound from any thread (device registers are inherently
// shared); no Rust references into it exist.
unsafe impl Send for MmioRegion {}
// SAFETY: as above.
unsafe impl Sync for MmioRegion {}

impl MmioRegion {
    /// Wrap a mapping.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a live mapping of device registers (or memory)
    /// that stays mapped until `unmap` runs (when the region is dropped), and
    /// that nothing else unmaps.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize, unmap: Option<fn(*mut u8, usize)>) -> Self {
        Self { ptr, len, unmap }
    }

    #[inline]
    fn at(&self, offset: usize, width: usize) -> Option<*mut u8> {
        if !offset.is_multiple_of(width) || offset.checked_add(width)? > self.len {
            return None;
        }
        // SAFETY: offset + width <= len, so the pointer stays in the mapping.
        Some(unsafe { self.ptr.as_ptr().add(offset) })
    }
}

impl Drop for MmioRegion {
    fn drop(&mut self) {
        if let Some(f) = self.unmap {
            f(self.ptr.as_ptr(), self.len);
        }
    }
}

impl RegisterIo for MmioRegion {
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        match self.at(offset, 4) {
            // SAFETY: in bounds and aligned (checked by `at`); live mapping.
            Some(p) => u32::from_le(unsafe { p.cast::<u32>().read_volatile() }),
            None => u32::MAX,
        }
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.at(offset, 4) {
            // SAFETY: in bounds and aligned (checked by `at`); live mapping.
            unsafe { p.cast::<u32>().write_volatile(value.to_le()) }
        }
    }

    #[inline]
    fn read64(&self, offset: usize) -> u64 {
        // Two 32-bit reads, low then high: every PCIe NVMe controller accepts
        // them, while 64-bit MMIO reads are split anyway on some hosts.
        if self.at(offset, 8).is_none() {
            return u64::MAX;
        }
        let lo = self.read32(offset) as u64;
        let hi = self.read32(offset + 4) as u64;
        lo | (hi << 32)
    }

    #[inline]
    fn write64(&self, offset: usize, value: u64) {
        if self.at(offset, 8).is_none() {
            return;
        }
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_plain_memory() {
        let mut mem = vec![0u64; 16];
        let p = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `mem` outlives `r` and is not otherwise touched meanwhile.
        let r = unsafe { MmioRegion::new(p, 128, None) };
        r.write32(4, 0x1234_5678);
        assert_eq!(r.read32(4), 0x1234_5678);
        r.write64(8, 0x1122_3344_5566_7788);
        assert_eq!(r.read64(8), 0x1122_3344_5566_7788);
        assert_eq!(r.read32(128), u32::MAX, "out of range reads as all-ones");
        assert_eq!(r.read32(2), u32::MAX, "misaligned reads as all-ones");
        r.write32(200, 1); // ignored
        drop(r);
        assert_eq!(mem[1], 0x1122_3344_5566_7788);
    }
}
