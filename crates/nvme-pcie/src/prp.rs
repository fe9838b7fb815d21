//! PRP (Physical Region Page) construction for a transfer in a DMA buffer.

use crate::dma::{DmaBuffer, PAGE_SIZE};
use crate::error::SubmitError;

const ENTRIES_PER_PAGE: usize = PAGE_SIZE / 8;

/// List pages needed to describe any transfer of `max_bytes` (at any
/// alignment), chaining list pages when one is not enough.
pub fn list_pages_for(max_bytes: usize) -> usize {
    // An unaligned transfer touches one more page; PRP1 covers the first.
    let entries = max_bytes.div_ceil(PAGE_SIZE);
    if entries <= ENTRIES_PER_PAGE {
        1
    } else {
        // Every page but the last gives one entry up to the chain pointer.
        (entries - 1).div_ceil(ENTRIES_PER_PAGE - 1)
    }
}

/// Memory a command's data can live in: a length and the device address of
/// each byte offset (which must keep 4 KiB page offsets, as every mapping
/// here does).
pub trait PrpSource {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// True if empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Device address of byte `off` (`off < len`).
    fn iova_at(&self, off: usize) -> Option<u64>;
    /// Bytes from `off` that are contiguous in device address space (at
    /// least 1 for `off < len`; 0 past the end). The default assumes
    /// contiguity only up to the next 4 KiB device page boundary.
    fn contiguous_len(&self, off: usize) -> usize {
        match self.iova_at(off) {
            Some(a) if off < self.len() => (PAGE_SIZE - (a as usize & (PAGE_SIZE - 1))).min(self.len() - off),
            _ => 0,
        }
    }

    /// Device address of byte `off` and the contiguous bytes from there
    /// (`iova_at` and `contiguous_len` in one lookup).
    fn run_at(&self, off: usize) -> Option<(u64, usize)> {
        Some((self.iova_at(off)?, self.contiguous_len(off)))
    }
}

impl PrpSource for DmaBuffer {
    #[inline]
    fn len(&self) -> usize {
        DmaBuffer::len(self)
    }
    #[inline]
    fn iova_at(&self, off: usize) -> Option<u64> {
        DmaBuffer::iova_at(self, off)
    }
    #[inline]
    fn contiguous_len(&self, off: usize) -> usize {
        DmaBuffer::contiguous_len(self, off)
    }
}

/// Fill in PRP1/PRP2 (and the PRP list in `list`, a page-aligned area of
/// whole pages) for `len` bytes of `buf` from `off`. Memory PRPs cannot
/// describe (a page of the transfer that is not one device-contiguous page)
/// gives [`SubmitError::Misaligned`].
pub fn build<S: PrpSource + ?Sized>(
    buf: &S,
    off: usize,
    len: usize,
    list: &DmaBuffer,
) -> Result<(u64, u64), SubmitError> {
    let end = off.checked_add(len).ok_or(SubmitError::TooLarge)?;
    if len == 0 || end > buf.len() {
        return Err(SubmitError::TooLarge);
    }
    let prp1 = buf.iova_at(off).ok_or(SubmitError::TooLarge)?;
    if prp1 & 3 != 0 {
        return Err(SubmitError::Misaligned);
    }
    let first = (PAGE_SIZE - (prp1 as usize & (PAGE_SIZE - 1))).min(len);
    if buf.contiguous_len(off) < first {
        return Err(SubmitError::Misaligned);
    }
    if first == len {
        return Ok((prp1, 0));
    }
    let rest = len - first;
    let xfer_end = off + len;
    let page_iova = |o: usize| -> Result<u64, SubmitError> {
        let a = buf.iova_at(o).ok_or(SubmitError::TooLarge)?;
        // A page boundary of the transfer must be a page boundary on the
        // device side too (true for page-aligned mappings), and the page
        // must be contiguous (not two segments).
        if a as usize & (PAGE_SIZE - 1) != 0 || buf.contiguous_len(o) < PAGE_SIZE.min(xfer_end - o) {
            return Err(SubmitError::Misaligned);
        }
        Ok(a)
    };
    if rest <= PAGE_SIZE {
        return Ok((prp1, page_iova(off + first)?));
    }
    // A PRP list: one entry per remaining page, chained across list pages.
    let pages = rest.div_ceil(PAGE_SIZE);
    let list_pages = list.len() / PAGE_SIZE;
    let mut lp = 0usize; // current list page
    let mut slot = 0usize; // entry within it
    let mut o = off + first;
    for i in 0..pages {
        let left = pages - i;
        if slot == ENTRIES_PER_PAGE - 1 && left > 1 {
            // Chain to the next list page.
            lp += 1;
            if lp >= list_pages {
                return Err(SubmitError::TooLarge);
            }
            let next = list.iova_at(lp * PAGE_SIZE).ok_or(SubmitError::TooLarge)?;
            write_entry(list, lp - 1, slot, next)?;
            slot = 0;
        }
        write_entry(list, lp, slot, page_iova(o)?)?;
        slot += 1;
        o += PAGE_SIZE;
    }
    Ok((prp1, list.iova()))
}

#[inline]
fn write_entry(list: &DmaBuffer, page: usize, slot: usize, v: u64) -> Result<(), SubmitError> {
    list.write_u64(page * PAGE_SIZE + slot * 8, v).map_err(|_| SubmitError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaAllocator, MemorySource, SoftIommu};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Reference walk of PRP1/PRP2/list (as a controller does), returning
    /// the (iova, len) segments.
    fn walk(prp1: u64, prp2: u64, len: usize, list: &DmaBuffer) -> Vec<(u64, usize)> {
        let ps = PAGE_SIZE as u64;
        let mut out = vec![];
        let first = ((ps - prp1 % ps) as usize).min(len);
        out.push((prp1, first));
        let mut rest = len - first;
        if rest == 0 {
            return out;
        }
        if rest <= PAGE_SIZE {
            out.push((prp2, rest));
            return out;
        }
        let base = list.iova();
        let mut at = prp2;
        loop {
            let idx = ((at - base) / 8) as usize;
            let in_page = (PAGE_SIZE - (at % ps) as usize) / 8;
            let need = rest.div_ceil(PAGE_SIZE);
            let chained = need > in_page;
            let n = if chained { in_page - 1 } else { need };
            for k in 0..n {
                let e = list.read_u64((idx + k) * 8).unwrap();
                let take = rest.min(PAGE_SIZE);
                out.push((e, take));
                rest -= take;
            }
            if !chained {
                return out;
            }
            at = list.read_u64((idx + in_page - 1) * 8).unwrap();
        }
    }

    proptest! {
        #[test]
        fn prps_cover_exactly_the_transfer(off in 0usize..8192, len in 1usize..(3 << 20)) {
            let off = off & !3;
            let a = DmaAllocator::new(Arc::new(SoftIommu::default()), MemorySource::Heap);
            let buf = a.alloc(off + len).unwrap();
            let list = a.alloc(list_pages_for(len + PAGE_SIZE) * PAGE_SIZE).unwrap();
            let (p1, p2) = build(&buf, off, len, &list).unwrap();
            let segs = walk(p1, p2, len, &list);
            let mut expect = buf.iova() + off as u64;
            let mut total = 0;
            for (iova, n) in segs {
                prop_assert_eq!(iova, expect);
                expect += n as u64;
                total += n;
            }
            prop_assert_eq!(total, len);
        }
    }

    #[test]
    fn small_transfers_use_prp1_and_prp2_only() {
        let a = DmaAllocator::new(Arc::new(SoftIommu::default()), MemorySource::Heap);
        let buf = a.alloc(3 * PAGE_SIZE).unwrap();
        let list = a.alloc(PAGE_SIZE).unwrap();
        assert_eq!(build(&buf, 0, 4096, &list).unwrap(), (buf.iova(), 0));
        assert_eq!(build(&buf, 512, 4096, &list).unwrap(), (buf.iova() + 512, buf.iova() + 4096));
        assert_eq!(build(&buf, 0, 8192, &list).unwrap().1, buf.iova() + 4096);
        assert_eq!(build(&buf, 0, 8193, &list).unwrap().1, list.iova());
        assert_eq!(build(&buf, 2, 8, &list), Err(SubmitError::Misaligned));
        assert_eq!(build(&buf, 0, 0, &list), Err(SubmitError::TooLarge));
        assert_eq!(build(&buf, 4096, 3 * 4096, &list), Err(SubmitError::TooLarge));
        assert_eq!(list_pages_for(2 << 20), 1);
        assert_eq!(list_pages_for((2 << 20) + 4096), 2);
    }
}
