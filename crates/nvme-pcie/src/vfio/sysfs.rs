//! No-IOMMU DMA: physical addresses of locked memory, from /proc/self/pagemap.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::dma::{DmaError, DmaMapper, DmaMapping, PAGE_SIZE};

const PFN_MASK: u64 = (1 << 55) - 1;
const PRESENT: u64 = 1 << 63;

/// The physical address of the byte at virtual address `va` of this process
/// (needs CAP_SYS_ADMIN; otherwise the kernel reports PFN 0).
pub fn physical_address(va: usize) -> Result<u64, DmaError> {
    let f = File::open("/proc/self/pagemap")
        .map_err(|_| DmaError::NoPhysicalAddress { va, reason: "cannot open /proc/self/pagemap" })?;
    lookup(&f, va)
}

fn lookup(f: &File, va: usize) -> Result<u64, DmaError> {
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, (va / PAGE_SIZE) as u64 * 8)
        .map_err(|_| DmaError::NoPhysicalAddress { va, reason: "pagemap read failed" })?;
    let e = u64::from_le_bytes(e);
    if e & PRESENT == 0 {
        return Err(DmaError::NoPhysicalAddress { va, reason: "page not present" });
    }
    let pfn = e & PFN_MASK;
    if pfn == 0 {
        return Err(DmaError::NoPhysicalAddress { va, reason: "pagemap hides pfns (needs root)" });
    }
    Ok(pfn * PAGE_SIZE as u64 + (va % PAGE_SIZE) as u64)
}

/// A mapper for devices without an IOMMU: "mapping" is looking up the
/// physical address of each physically contiguous piece (a hugepage when
/// `granule_shift` is 21). The memory must be locked (it is: see
/// [`crate::dma::MemorySource`]).
#[derive(Debug)]
pub struct PagemapMapper {
    granule_shift: u32,
}

impl PagemapMapper {
    /// A mapper for memory made of `1 << granule_shift`-byte physically
    /// contiguous pieces (12 for 4 KiB pages, 21 for 2 MiB hugepages).
    pub fn new(granule_shift: u32) -> Self {
        Self { granule_shift }
    }
}

impl DmaMapper for PagemapMapper {
    fn map(&self, va: usize, len: usize) -> Result<DmaMapping, DmaError> {
        let f = File::open("/proc/self/pagemap")
            .map_err(|_| DmaError::NoPhysicalAddress { va, reason: "cannot open /proc/self/pagemap" })?;
        let g = 1usize << self.granule_shift;
        let mut iovas = Vec::with_capacity(len.div_ceil(g));
        let mut off = 0;
        while off < len {
            let base = lookup(&f, va + off)?;
            // Check that the piece really is physically contiguous.
            let mut p = PAGE_SIZE;
            while p < g && off + p < len {
                if lookup(&f, va + off + p)? != base + p as u64 {
                    return Err(DmaError::NoPhysicalAddress {
                        va: va + off + p,
                        reason: "memory is not physically contiguous",
                    });
                }
                p += PAGE_SIZE;
            }
            iovas.push(base);
            off += g;
        }
        Ok(DmaMapping { granule_shift: self.granule_shift, iovas: iovas.into_boxed_slice() })
    }

    fn unmap(&self, _va: usize, _len: usize, _mapping: &DmaMapping) {}

    fn name(&self) -> &'static str {
        "pagemap-physical"
    }
}
