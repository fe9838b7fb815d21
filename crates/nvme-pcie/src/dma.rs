//! DMA memory: pinned host memory that a device reads and writes, plus the
//! address (IOVA) under which the device sees it.
//!
//! Everything here treats the memory as *shared with a device*: no `&`/`&mut`
//! reference to it is ever created. All accesses are volatile or atomic reads
//! and writes, or raw copies between it and ordinary Rust slices. This is the
//! only module (with `mmio` and `vfio`) that contains `unsafe`.
//!
//! Pieces:
//! - [`DmaMapper`]: makes host memory visible to a device and returns IOVAs
//!   (VFIO type1 maps, physical addresses for no-IOMMU, or the emulator's
//!   [`SoftIommu`]).
//! - [`DmaAllocator`]: allocates memory from a [`MemorySource`] and maps it.
//! - [`DmaBuffer`]: a cheap, cloneable window onto one allocation. The memory
//!   stays allocated and mapped while any clone lives, so a command holding a
//!   clone can never see its buffer freed under it.
//! - [`SoftIommu`]: a software IOMMU for emulated devices, translating IOVAs
//!   back to host memory with bounds checks.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

/// Size of the pages the NVMe driver uses for PRPs (CC.MPS = 0).
pub const PAGE_SIZE: usize = 4096;
/// Size of a 2 MiB x86-64 hugepage.
pub const HUGEPAGE_SIZE: usize = 2 << 20;

/// Orders earlier writes to DMA memory (queue entries, PRP lists, shadow
/// doorbells) before a following doorbell register write.
///
/// On x86-64, stores become visible in program order and uncached MMIO
/// stores are not reordered with earlier write-back stores, so only the
/// compiler must be kept from reordering; elsewhere a full fence is used.
#[inline(always)]
pub fn wmb() {
    #[cfg(target_arch = "x86_64")]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// A full fence between a DMA-memory store and a following load of memory
/// the device writes (shadow doorbell vs EventIdx).
#[inline(always)]
pub fn mb() {
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// Errors of DMA memory allocation, mapping and access.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// An access fell outside the buffer.
    #[error("dma access at offset {offset} of {len} bytes is outside a buffer of {size} bytes")]
    OutOfBounds {
        /// Offset of the access within the buffer.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the buffer.
        size: usize,
    },
    /// An access was not naturally aligned.
    #[error("dma access at offset {offset} is not {align}-byte aligned")]
    Misaligned {
        /// Offset of the access within the buffer.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// A zero-length allocation was requested.
    #[error("zero-length dma allocation")]
    ZeroLength,
    /// The host could not provide memory.
    #[error("could not allocate {len} bytes of {source_kind} dma memory")]
    Alloc {
        /// Requested length.
        len: usize,
        /// What kind of memory was asked for.
        source_kind: &'static str,
        /// The OS error, if any.
        #[source]
        cause: Option<std::io::Error>,
    },
    /// The mapper refused to map memory for the device.
    #[error("could not map {len} bytes at iova {iova:#x} for device dma")]
    Map {
        /// IOVA that was being mapped.
        iova: u64,
        /// Length of the mapping.
        len: usize,
        /// The OS error.
        #[source]
        cause: std::io::Error,
    },
    /// The mapper ran out of IOVA space.
    #[error("iova space exhausted mapping {len} bytes")]
    IovaExhausted {
        /// Length that did not fit.
        len: usize,
    },
    /// A physical address could not be found (no-IOMMU mode).
    #[error("no physical address for virtual address {va:#x}: {reason}")]
    NoPhysicalAddress {
        /// Virtual address looked up.
        va: usize,
        /// Why it failed.
        reason: &'static str,
    },
    /// A device address does not fall in any mapping (software IOMMU fault).
    #[error("iommu fault: iova {iova:#x} (+{len} bytes) is not mapped")]
    IommuFault {
        /// Faulting IOVA.
        iova: u64,
        /// Length of the access.
        len: usize,
    },
}

/// The IOVAs of one mapped allocation: `iovas[i]` is the device address of
/// host bytes `[i << granule_shift, (i + 1) << granule_shift)`.
#[derive(Debug, Clone)]
pub struct DmaMapping {
    /// log2 of the size of the pieces `iovas` describes (>= 12).
    pub granule_shift: u32,
    /// Device address of each piece, in order.
    pub iovas: Box<[u64]>,
}

impl DmaMapping {
    /// A mapping whose IOVAs are contiguous from `iova` for `len` bytes.
    pub fn contiguous(iova: u64, len: usize) -> Self {
        let _ = len;
        Self { granule_shift: 62, iovas: Box::new([iova]) }
    }

    /// The device address of byte `offset` of the mapped memory.
    pub fn iova_at(&self, offset: usize) -> Option<u64> {
        let idx = offset.checked_shr(self.granule_shift)?;
        let base = *self.iovas.get(idx)?;
        let mask = (1u64 << self.granule_shift) - 1;
        base.checked_add(offset as u64 & mask)
    }
}

/// Makes host memory visible to a device.
///
/// `map` is given the virtual address and length of memory that stays
/// allocated (and pinned) until the matching `unmap` returns.
pub trait DmaMapper: Send + Sync {
    /// Map `len` bytes at host virtual address `va` (page aligned) for device
    /// access, returning their device addresses.
    fn map(&self, va: usize, len: usize) -> Result<DmaMapping, DmaError>;
    /// Undo `map`; after this returns the device can no longer reach the memory.
    fn unmap(&self, va: usize, len: usize, mapping: &DmaMapping);
    /// A short name for diagnostics.
    fn name(&self) -> &'static str;
}

/// Where [`DmaAllocator`] gets host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// Ordinary page-aligned heap memory (emulated devices only: not pinned).
    Heap,
    /// Anonymous memory locked with `mlock` (4 KiB pages; fine behind an IOMMU).
    Locked,
    /// 2 MiB hugepages via `mmap(MAP_HUGETLB)`, locked: physically contiguous
    /// per hugepage, needed for no-IOMMU physical addressing.
    Hugepages,
}

impl MemorySource {
    fn granule(self) -> usize {
        match self {
            MemorySource::Heap | MemorySource::Locked => PAGE_SIZE,
            MemorySource::Hugepages => HUGEPAGE_SIZE,
        }
    }
    fn kind(self) -> &'static str {
        match self {
            MemorySource::Heap => "heap",
            MemorySource::Locked => "locked",
            MemorySource::Hugepages => "hugepage",
        }
    }
}

/// One allocation: host memory plus its device mapping. Freed (after unmap)
/// when the last [`DmaBuffer`] referring to it is dropped.
struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    source: MemorySource,
    mapping: DmaMapping,
    mapper: Arc<dyn DmaMapper>,
}

// SAFETY: DmaMemory owns its allocation exclusively; the raw pointer is only
// used for volatile/atomic/raw-copy accesses that are valid from any thread.
unsafe impl Send for DmaMemory {}
// SAFETY: as above; shared access never creates references into the memory.
unsafe impl Sync for DmaMemory {}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // Unmap first: the device must not reach memory we free.
        self.mapper.unmap(self.ptr.as_ptr() as usize, self.len, &self.mapping);
        free_host(self.ptr, self.len, self.source);
    }
}

fn alloc_host(len: usize, source: MemorySource) -> Result<NonNull<u8>, DmaError> {
    let err = |cause| DmaError::Alloc { len, source_kind: source.kind(), cause };
    match source {
        MemorySource::Heap => {
            let layout = std::alloc::Layout::from_size_align(len, PAGE_SIZE).map_err(|_| err(None))?;
            // SAFETY: layout has non-zero size (checked by the caller).
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            NonNull::new(p).ok_or_else(|| err(None))
        }
        MemorySource::Locked | MemorySource::Hugepages => {
            let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
            if source == MemorySource::Hugepages {
                flags |= libc::MAP_HUGETLB;
            }
            // SAFETY: anonymous mapping, no existing memory is affected.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return Err(err(Some(std::io::Error::last_os_error())));
            }
            // SAFETY: p..p+len was just mapped by us.
            if unsafe { libc::mlock(p, len) } != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: unmapping the region mapped above.
                unsafe { libc::munmap(p, len) };
                return Err(err(Some(e)));
            }
            NonNull::new(p.cast::<u8>()).ok_or_else(|| err(None))
        }
    }
}

fn free_host(ptr: NonNull<u8>, len: usize, source: MemorySource) {
    match source {
        MemorySource::Heap => {
            if let Ok(layout) = std::alloc::Layout::from_size_align(len, PAGE_SIZE) {
                // SAFETY: allocated by alloc_zeroed with this same layout.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
            }
        }
        MemorySource::Locked | MemorySource::Hugepages => {
            // SAFETY: this region was mmapped by alloc_host with this length.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        }
    }
}

/// Allocates DMA memory and maps it for one device (or one IOMMU container).
#[derive(Clone)]
pub struct DmaAllocator {
    mapper: Arc<dyn DmaMapper>,
    source: MemorySource,
    /// Hugepage source only: the hugepage small allocations are carved
    /// from (bump allocation; a hugepage is freed when its last piece is).
    carve: Arc<std::sync::Mutex<Option<(DmaBuffer, usize)>>>,
}

impl std::fmt::Debug for DmaAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaAllocator").field("mapper", &self.mapper.name()).field("source", &self.source).finish()
    }
}

impl DmaAllocator {
    /// An allocator taking memory from `source` and mapping it with `mapper`.
    pub fn new(mapper: Arc<dyn DmaMapper>, source: MemorySource) -> Self {
        Self { mapper, source, carve: Arc::new(std::sync::Mutex::new(None)) }
    }

    /// The mapper this allocator maps memory with (to map other memory,
    /// such as the block layer's buffer regions, into the same device view).
    pub fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.mapper.clone()
    }

    /// Where this allocator takes memory from.
    pub fn source(&self) -> MemorySource {
        self.source
    }

    /// Allocate and map `len` bytes, zero-filled, page aligned. The window
    /// is exactly `len` bytes; the memory behind it is rounded up to whole
    /// pages. With hugepages, requests under 2 MiB share hugepages (4 KiB
    /// aligned pieces).
    pub fn alloc(&self, len: usize) -> Result<DmaBuffer, DmaError> {
        if len == 0 {
            return Err(DmaError::ZeroLength);
        }
        if self.source == MemorySource::Hugepages && len < HUGEPAGE_SIZE {
            let need = len.next_multiple_of(PAGE_SIZE);
            let mut g = self.carve.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((chunk, used)) = g.as_mut() {
                if chunk.slice(*used, need).is_some() {
                    let b = chunk.slice(*used, len);
                    *used += need;
                    if let Some(b) = b {
                        return Ok(b);
                    }
                }
            }
            let chunk = self.alloc_whole(HUGEPAGE_SIZE)?;
            let b = chunk.slice(0, len).ok_or(DmaError::Alloc { len, source_kind: self.source.kind(), cause: None })?;
            *g = Some((chunk, need));
            return Ok(b);
        }
        self.alloc_whole(len)
    }

    fn alloc_whole(&self, len: usize) -> Result<DmaBuffer, DmaError> {
        let g = self.source.granule();
        let size = len.checked_next_multiple_of(g).ok_or(DmaError::Alloc {
            len,
            source_kind: self.source.kind(),
            cause: None,
        })?;
        let ptr = alloc_host(size, self.source)?;
        let mapping = match self.mapper.map(ptr.as_ptr() as usize, size) {
            Ok(m) => m,
            Err(e) => {
                free_host(ptr, size, self.source);
                return Err(e);
            }
        };
        let mem = Arc::new(DmaMemory { ptr, len: size, source: self.source, mapping, mapper: self.mapper.clone() });
        Ok(DmaBuffer { mem, off: 0, len })
    }
}

/// A window onto DMA memory: `len` bytes from `off` of one allocation.
/// Cloning is cheap (one reference count) and keeps the memory mapped.
#[derive(Clone)]
pub struct DmaBuffer {
    mem: Arc<DmaMemory>,
    off: usize,
    len: usize,
}

impl std::fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuffer").field("iova", &self.iova()).field("len", &self.len).finish()
    }
}

impl DmaBuffer {
    /// Length of this window in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the window is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of the first byte.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.mem.mapping.iova_at(self.off).unwrap_or(u64::MAX)
    }

    /// The device address of byte `offset` (which may equal `len`), if in range.
    #[inline]
    pub fn iova_at(&self, offset: usize) -> Option<u64> {
        if offset > self.len {
            return None;
        }
        self.mem.mapping.iova_at(self.off.checked_add(offset)?)
    }

    /// Length of the device-contiguous run starting at `offset`, capped at the
    /// end of the window.
    pub fn contiguous_len(&self, offset: usize) -> usize {
        let shift = self.mem.mapping.granule_shift;
        if shift >= usize::BITS - 1 {
            return self.len.saturating_sub(offset);
        }
        let g = 1usize << shift;
        let abs = self.off + offset;
        let to_boundary = g - (abs & (g - 1));
        to_boundary.min(self.len.saturating_sub(offset))
    }

    /// A sub-window of `len` bytes from `offset`, if it fits.
    pub fn slice(&self, offset: usize, len: usize) -> Option<DmaBuffer> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(DmaBuffer { mem: self.mem.clone(), off: self.off + offset, len })
    }

    /// True if both windows are over the same allocation.
    pub fn same_allocation(&self, other: &DmaBuffer) -> bool {
        Arc::ptr_eq(&self.mem, &other.mem)
    }

    #[inline]
    fn ptr_checked(&self, offset: usize, len: usize, align: usize) -> Result<*mut u8, DmaError> {
        let end = offset.checked_add(len);
        match end {
            Some(e) if e <= self.len => {}
            _ => return Err(DmaError::OutOfBounds { offset, len, size: self.len }),
        }
        let abs = self.off + offset;
        if !abs.is_multiple_of(align) {
            return Err(DmaError::Misaligned { offset, align });
        }
        // SAFETY: abs + len <= mem.len (off + self.len <= mem.len is an
        // invariant of DmaBuffer), so the result stays inside the allocation.
        Ok(unsafe { self.mem.ptr.as_ptr().add(abs) })
    }

    /// Volatile 32-bit read at `offset` (4-byte aligned).
    #[inline]
    pub fn read_u32(&self, offset: usize) -> Result<u32, DmaError> {
        let p = self.ptr_checked(offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked); the memory is live while
        // self.mem is; volatile because the device may write it.
        Ok(u32::from_le(unsafe { p.cast::<u32>().read_volatile() }))
    }

    /// Volatile 32-bit write at `offset` (4-byte aligned).
    #[inline]
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked); memory live.
        unsafe { p.cast::<u32>().write_volatile(value.to_le()) };
        Ok(())
    }

    /// Volatile 64-bit read at `offset` (8-byte aligned).
    #[inline]
    pub fn read_u64(&self, offset: usize) -> Result<u64, DmaError> {
        let p = self.ptr_checked(offset, 8, 8)?;
        // SAFETY: in bounds and aligned (checked); memory live.
        Ok(u64::from_le(unsafe { p.cast::<u64>().read_volatile() }))
    }

    /// Volatile 64-bit write at `offset` (8-byte aligned).
    #[inline]
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, 8, 8)?;
        // SAFETY: in bounds and aligned (checked); memory live.
        unsafe { p.cast::<u64>().write_volatile(value.to_le()) };
        Ok(())
    }

    /// Atomic 32-bit load with acquire ordering (for words the device writes
    /// last, such as a completion entry's phase/status dword).
    #[inline]
    pub fn load_u32_acquire(&self, offset: usize) -> Result<u32, DmaError> {
        let p = self.ptr_checked(offset, 4, 4)?;
        // SAFETY: in bounds and 4-byte aligned (checked); the memory lives as
        // long as self.mem; Rust code only accesses it atomically/volatilely.
        let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
        Ok(u32::from_le(a.load(Ordering::Acquire)))
    }

    /// Atomic 32-bit store with release ordering (for words the device polls,
    /// such as shadow doorbells).
    #[inline]
    pub fn store_u32_release(&self, offset: usize, value: u32) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, 4, 4)?;
        // SAFETY: as in load_u32_acquire.
        let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
        a.store(value.to_le(), Ordering::Release);
        Ok(())
    }

    /// Copy `src` into the buffer at `offset`.
    #[inline]
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, src.len(), 1)?;
        // SAFETY: destination in bounds (checked) and cannot overlap `src`,
        // which is ordinary Rust memory, while DMA memory is never borrowed.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Copy bytes at `offset` out of the buffer into `dst`.
    #[inline]
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, dst.len(), 1)?;
        // SAFETY: source in bounds (checked); no overlap (see write_bytes).
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Fill `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), DmaError> {
        let p = self.ptr_checked(offset, len, 1)?;
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::write_bytes(p, byte, len) };
        Ok(())
    }

    /// Copy `len` bytes from `src` at `src_off` to `self` at `dst_off`
    /// (both may be the same allocation; overlapping ranges are handled).
    pub fn copy_from(&self, dst_off: usize, src: &DmaBuffer, src_off: usize, len: usize) -> Result<(), DmaError> {
        let d = self.ptr_checked(dst_off, len, 1)?;
        let s = src.ptr_checked(src_off, len, 1)?;
        // SAFETY: both ranges in bounds (checked); `copy` allows overlap.
        unsafe { std::ptr::copy(s, d, len) };
        Ok(())
    }
}

/// A software IOMMU: the device side of DMA for emulated devices.
///
/// It implements [`DmaMapper`] by handing out IOVAs from its own space and
/// recording where each mapping lives in host memory; an emulated device then
/// reads and writes "device memory" only through IOVAs, with every access
/// checked against the live mappings. Unmapping takes the write lock, so no
/// access can run while memory is unmapped and freed.
pub struct SoftIommu {
    inner: RwLock<SoftIommuInner>,
}

struct SoftIommuInner {
    next_iova: u64,
    /// iova -> (host va, len)
    maps: BTreeMap<u64, (usize, usize)>,
}

impl std::fmt::Debug for SoftIommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftIommu")
    }
}

impl Default for SoftIommu {
    fn default() -> Self {
        Self::new(0x1_0000_0000)
    }
}

impl SoftIommu {
    /// A software IOMMU handing out IOVAs from `base` upwards.
    pub fn new(base: u64) -> Self {
        Self { inner: RwLock::new(SoftIommuInner { next_iova: base, maps: BTreeMap::new() }) }
    }

    /// Number of live mappings (to check that detach releases everything).
    pub fn mapping_count(&self) -> usize {
        self.inner.read().map(|g| g.maps.len()).unwrap_or(0)
    }

    fn with_ptr<R>(&self, iova: u64, len: usize, f: impl FnOnce(*mut u8) -> R) -> Result<R, DmaError> {
        let fault = DmaError::IommuFault { iova, len };
        let g = self.inner.read().map_err(|_| DmaError::IommuFault { iova, len })?;
        let (&base, &(va, mlen)) = g.maps.range(..=iova).next_back().ok_or(fault)?;
        let off = usize::try_from(iova - base).map_err(|_| DmaError::IommuFault { iova, len })?;
        match off.checked_add(len) {
            Some(end) if end <= mlen => {}
            _ => return Err(DmaError::IommuFault { iova, len }),
        }
        // The read guard is held while `f` runs, so the mapping (and the host
        // memory behind it, which is freed only after unmap) stays live.
        Ok(f((va + off) as *mut u8))
    }

    /// Device read: copy `dst.len()` bytes at `iova` into `dst`.
    pub fn read(&self, iova: u64, dst: &mut [u8]) -> Result<(), DmaError> {
        let n = dst.len();
        self.with_ptr(iova, n, |p| {
            // SAFETY: with_ptr checked [p, p+n) lies inside a live mapping and
            // keeps it live; dst is ordinary memory, so no overlap.
            unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), n) }
        })
    }

    /// Device write: copy `src` to `iova`.
    pub fn write(&self, iova: u64, src: &[u8]) -> Result<(), DmaError> {
        let n = src.len();
        self.with_ptr(iova, n, |p| {
            // SAFETY: as in `read`.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, n) }
        })
    }

    /// Device write of `len` copies of `byte` at `iova`.
    pub fn fill(&self, iova: u64, len: usize, byte: u8) -> Result<(), DmaError> {
        self.with_ptr(iova, len, |p| {
            // SAFETY: as in `read`.
            unsafe { std::ptr::write_bytes(p, byte, len) }
        })
    }

    /// Device 32-bit atomic read (acquire) at a 4-byte aligned `iova`.
    pub fn load_u32(&self, iova: u64) -> Result<u32, DmaError> {
        if !iova.is_multiple_of(4) {
            return Err(DmaError::IommuFault { iova, len: 4 });
        }
        self.with_ptr(iova, 4, |p| {
            // SAFETY: in a live mapping, 4-byte aligned (host mappings are
            // page aligned and iova is 4-aligned).
            let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
            u32::from_le(a.load(Ordering::Acquire))
        })
    }

    /// Device 32-bit atomic write (release) at a 4-byte aligned `iova`.
    pub fn store_u32(&self, iova: u64, value: u32) -> Result<(), DmaError> {
        if !iova.is_multiple_of(4) {
            return Err(DmaError::IommuFault { iova, len: 4 });
        }
        self.with_ptr(iova, 4, |p| {
            // SAFETY: as in load_u32.
            let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
            a.store(value.to_le(), Ordering::Release)
        })
    }
}

impl DmaMapper for SoftIommu {
    fn map(&self, va: usize, len: usize) -> Result<DmaMapping, DmaError> {
        let mut g = self.inner.write().map_err(|_| DmaError::IovaExhausted { len })?;
        let iova = g.next_iova;
        // Leave a guard page between mappings so overruns fault.
        let next = (len as u64)
            .checked_add(PAGE_SIZE as u64)
            .and_then(|l| iova.checked_add(l))
            .ok_or(DmaError::IovaExhausted { len })?;
        g.next_iova = next;
        g.maps.insert(iova, (va, len));
        Ok(DmaMapping::contiguous(iova, len))
    }

    fn unmap(&self, _va: usize, _len: usize, mapping: &DmaMapping) {
        if let (Ok(mut g), Some(&iova)) = (self.inner.write(), mapping.iovas.first()) {
            g.maps.remove(&iova);
        }
    }

    fn name(&self) -> &'static str {
        "soft-iommu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_access_and_iommu_translation() {
        let iommu = Arc::new(SoftIommu::default());
        let a = DmaAllocator::new(iommu.clone(), MemorySource::Heap);
        let b = a.alloc(4000).unwrap();
        assert_eq!(b.len(), 4000);
        assert!(format!("{a:?}").contains("soft-iommu"));
        b.write_u32(8, 0xdead_beef).unwrap();
        assert_eq!(iommu.load_u32(b.iova() + 8).unwrap(), 0xdead_beef);
        iommu.write(b.iova() + 16, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 3];
        b.read_bytes(16, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert!(b.read_u32(3998).is_err());
        assert!(b.read_u32(2).is_err());
        assert!(iommu.read(b.iova() + PAGE_SIZE as u64, &mut out).is_err());
        let s = b.slice(4000 - 8, 8).unwrap();
        assert_eq!(s.iova(), b.iova() + 3992);
        assert!(b.slice(3996, 8).is_none());
        assert_eq!(iommu.mapping_count(), 1);
        drop(b);
        assert_eq!(iommu.mapping_count(), 1, "slice keeps the memory mapped");
        drop(s);
        assert_eq!(iommu.mapping_count(), 0);
    }

    #[test]
    fn locked_memory_allocates() {
        let iommu = Arc::new(SoftIommu::default());
        let a = DmaAllocator::new(iommu, MemorySource::Locked);
        // mlock may be limited by RLIMIT_MEMLOCK; a failure must be a typed error.
        match a.alloc(8192) {
            Ok(b) => {
                b.fill(0, 8192, 0xa5).unwrap();
                assert_eq!(b.read_u32(4096).unwrap(), 0xa5a5_a5a5);
            }
            Err(e) => assert!(matches!(e, DmaError::Alloc { .. })),
        }
    }
}
