//! IO buffer memory ("DMA memory") and the raw copies into and out of it.
//!
//! This is one of the few modules allowed `unsafe`: it owns every raw-pointer access the block
//! layer makes to IO buffers and to RAM-disk backing memory.
//!
//! Design:
//! - Buffers come from process-wide regions: 2 MiB hugepages when the machine has them
//!   reserved, otherwise 4 KiB-aligned anonymous memory (one log line says so).
//! - A buffer of up to [`MAX_POOLED`] bytes is rounded up to a power of two (at least 4 KiB) and
//!   recycled through a per-size free list; its region is never unmapped while the process
//!   lives, so a stale [`IoVec`] can corrupt only buffer contents, never other memory.
//! - Every region is reported to registered [`DmaMapper`]s (the NVMe PCIe driver maps each one
//!   into its IOMMU domain); the IOVA of a buffer is its virtual address.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Alignment of every buffer.
pub const DMA_ALIGN: usize = 4096;
/// Size of one DMA region carved into pooled buffers (one 2 MiB hugepage).
pub const REGION_SIZE: usize = 2 << 20;
/// Largest buffer served from the pooled free lists; larger ones get their own mapping.
pub const MAX_POOLED: usize = REGION_SIZE;

/// Errors of the DMA allocator.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// A zero-length or absurdly large request.
    #[error("invalid dma buffer size {0} bytes")]
    InvalidSize(usize),
    /// mmap failed.
    #[error("cannot map {len} bytes of buffer memory")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A registered mapper refused a region.
    #[error("dma mapper '{mapper}' failed to map region at {addr:#x}+{len:#x}: {reason}")]
    Mapper {
        /// Mapper name.
        mapper: String,
        /// Region address.
        addr: usize,
        /// Region length.
        len: usize,
        /// What the mapper said.
        reason: String,
    },
}

/// One scatter-gather segment: a pointer and a length, layout-compatible with `struct iovec`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct IoVec {
    base: *mut u8,
    len: usize,
}

// SAFETY: an IoVec is an address and a length; it grants no access by itself. Accesses through it
// happen only in this module under the buffer contract of `IoRequest` (the submitter keeps the
// memory valid and untouched until completion), on whichever reactor runs the IO.
unsafe impl Send for IoVec {}
// SAFETY: as above; shared references to an IoVec only read the address and length.
unsafe impl Sync for IoVec {}

impl IoVec {
    /// A zero-length segment.
    pub const EMPTY: IoVec = IoVec { base: std::ptr::null_mut(), len: 0 };

    /// A segment over raw memory.
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes for as long as any IO naming this
    /// segment is in flight, and nobody else may access it meanwhile.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> IoVec {
        IoVec { base, len }
    }

    /// Start address.
    #[inline]
    pub fn addr(&self) -> usize {
        self.base as usize
    }

    /// Raw start pointer (for backends that hand it to the kernel or a device).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-segment `[off, off+len)`, or `None` when out of range.
    pub fn sub(&self, off: usize, len: usize) -> Option<IoVec> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(IoVec { base: self.base.wrapping_add(off), len })
    }
}

/// Something that must see every DMA region (the NVMe PCIe driver's IOMMU mapping).
pub trait DmaMapper: Send + Sync {
    /// A short name for errors.
    fn name(&self) -> &str;
    /// Make `[addr, addr+len)` reachable by devices at IOVA `addr`.
    fn map(&self, addr: usize, len: usize) -> Result<(), String>;
    /// Undo [`DmaMapper::map`] before the region is returned to the OS.
    fn unmap(&self, addr: usize, len: usize);
}

/// A mapped region of buffer memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DmaRegion {
    /// Start address (also the IOVA).
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
    /// Backed by hugepages.
    pub hugepage: bool,
}

struct Pool {
    regions: Vec<DmaRegion>,
    /// Free buffers per power-of-two class (index = log2(size) - 12).
    free: Vec<Vec<usize>>,
    bump: usize,
    bump_end: usize,
    mappers: Vec<Arc<dyn DmaMapper>>,
    hugepages: Option<bool>,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool {
            regions: Vec::new(),
            free: vec![Vec::new(); 10],
            bump: 0,
            bump_end: 0,
            mappers: Vec::new(),
            hugepages: None,
        })
    })
}

static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);
/// Bumped whenever a region is added or removed, so readers can cache the region list.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn mmap_anon(len: usize, huge: bool) -> Result<NonNull<u8>, std::io::Error> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if huge {
        flags |= libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT) | libc::MAP_POPULATE;
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases
    // nothing; the result is checked for MAP_FAILED.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if !huge {
        // Without reserved hugepages, ask for transparent ones (fewer TLB misses on large
        // RAM disks and buffers), then populate: IO must not take page faults on first touch.
        // SAFETY: p..p+len is the mapping just created; madvise only changes its paging.
        unsafe {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            if libc::madvise(p, len, libc::MADV_POPULATE_WRITE) != 0 {
                std::ptr::write_bytes(p.cast::<u8>(), 0, len);
            }
        }
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

fn munmap(addr: usize, len: usize) {
    // SAFETY: called only for a mapping this module created with exactly this address and
    // length, after every buffer in it was freed.
    unsafe {
        libc::munmap(addr as *mut libc::c_void, len);
    }
}

impl Pool {
    fn new_region(&mut self, len: usize) -> Result<DmaRegion, DmaError> {
        let want_huge = self.hugepages != Some(false) && len.is_multiple_of(REGION_SIZE);
        let (ptr, huge) = match want_huge.then(|| mmap_anon(len, true)) {
            Some(Ok(p)) => {
                self.hugepages = Some(true);
                (p, true)
            }
            _ => {
                if want_huge {
                    self.hugepages = Some(false);
                }
                if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                    log::info!("no 2 MiB hugepages reserved: IO buffers use 4 KiB-aligned anonymous memory");
                }
                let p = mmap_anon(len, false).map_err(|source| DmaError::Map { len, source })?;
                (p, false)
            }
        };
        let region = DmaRegion { addr: ptr.as_ptr() as usize, len, hugepage: huge };
        for m in &self.mappers {
            if let Err(reason) = m.map(region.addr, region.len) {
                munmap(region.addr, region.len);
                return Err(DmaError::Mapper { mapper: m.name().to_string(), addr: region.addr, len, reason });
            }
        }
        self.regions.push(region);
        GENERATION.fetch_add(1, Ordering::Release);
        Ok(region)
    }

    fn alloc(&mut self, size: usize) -> Result<(usize, usize), DmaError> {
        if size == 0 || size > (1usize << 40) {
            return Err(DmaError::InvalidSize(size));
        }
        if size > MAX_POOLED {
            let len = size.div_ceil(REGION_SIZE) * REGION_SIZE;
            let r = self.new_region(len)?;
            return Ok((r.addr, len));
        }
        let class_size = size.next_power_of_two().max(DMA_ALIGN);
        let class = class_size.trailing_zeros() as usize - 12;
        if let Some(addr) = self.free[class].pop() {
            return Ok((addr, class_size));
        }
        if self.bump + class_size > self.bump_end {
            // The rest of the current region goes to the free lists, largest pieces first.
            let mut rest = self.bump;
            while rest < self.bump_end {
                let piece = 1usize << (self.bump_end - rest).ilog2().min(21);
                let piece = piece.min(1 << (rest.trailing_zeros().min(21)));
                if piece < DMA_ALIGN {
                    break;
                }
                self.free[piece.trailing_zeros() as usize - 12].push(rest);
                rest += piece;
            }
            let r = self.new_region(REGION_SIZE)?;
            self.bump = r.addr;
            self.bump_end = r.addr + r.len;
        }
        let addr = self.bump;
        self.bump += class_size;
        Ok((addr, class_size))
    }

    fn free(&mut self, addr: usize, cap: usize) {
        if cap > MAX_POOLED {
            for m in &self.mappers {
                m.unmap(addr, cap);
            }
            self.regions.retain(|r| r.addr != addr);
            GENERATION.fetch_add(1, Ordering::Release);
            munmap(addr, cap);
        } else {
            self.free[cap.trailing_zeros() as usize - 12].push(addr);
        }
    }
}

/// Register a mapper: it is called at once for every existing region and then for each new one.
pub fn register_mapper(mapper: Arc<dyn DmaMapper>) -> Result<(), DmaError> {
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    for r in &p.regions {
        mapper.map(r.addr, r.len).map_err(|reason| DmaError::Mapper {
            mapper: mapper.name().to_string(),
            addr: r.addr,
            len: r.len,
            reason,
        })?;
    }
    p.mappers.push(mapper);
    Ok(())
}

/// Remove a mapper registered earlier (by name), unmapping every region from it.
pub fn unregister_mapper(name: &str) {
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let regions = p.regions.clone();
    p.mappers.retain(|m| {
        if m.name() == name {
            for r in &regions {
                m.unmap(r.addr, r.len);
            }
            false
        } else {
            true
        }
    });
}

/// The regions buffers currently come from.
pub fn regions() -> Vec<DmaRegion> {
    pool().lock().unwrap_or_else(|e| e.into_inner()).regions.clone()
}

/// Whether buffers are hugepage-backed (`None` until the first allocation).
pub fn uses_hugepages() -> Option<bool> {
    pool().lock().unwrap_or_else(|e| e.into_inner()).hugepages
}

/// An owned, 4 KiB-aligned IO buffer (seed: `xbdev_dma_buffer_alloc`).
///
/// While the owner holds it and no IO names it, it is ordinary memory ([`DmaBuf::as_slice`],
/// [`DmaBuf::as_mut_slice`]). [`DmaBuf::iovec`] names it for an IO; from submission to
/// completion the owner must not touch it (the xbdev async API enforces this by taking the
/// buffer by value).
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: a DmaBuf owns its memory exclusively, like a Box<[u8]>.
unsafe impl Send for DmaBuf {}
// SAFETY: shared access only reads, like &[u8].
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// A buffer of `len` bytes with unspecified contents.
    pub fn alloc(len: usize) -> Result<DmaBuf, DmaError> {
        let (addr, cap) = pool().lock().unwrap_or_else(|e| e.into_inner()).alloc(len)?;
        let ptr = NonNull::new(addr as *mut u8).ok_or(DmaError::InvalidSize(len))?;
        Ok(DmaBuf { ptr, len, cap })
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<DmaBuf, DmaError> {
        let mut b = DmaBuf::alloc(len)?;
        b.as_mut_slice().fill(0);
        Ok(b)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never: zero-length buffers are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is owned by this buffer (allocated above, at least len bytes),
        // and no IO is in flight on it while the owner can call this (buffer contract).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// One segment naming the whole buffer for an IO.
    pub fn iovec(&mut self) -> IoVec {
        IoVec { base: self.ptr.as_ptr(), len: self.len }
    }

    /// A segment naming `[off, off+len)` of the buffer, or `None` when out of range.
    pub fn iovec_range(&mut self, off: usize, len: usize) -> Option<IoVec> {
        self.iovec().sub(off, len)
    }

    /// Raw start pointer (for the C ABI).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        pool().lock().unwrap_or_else(|e| e.into_inner()).free(self.ptr.as_ptr() as usize, self.cap);
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmaBuf({:#x}, {} bytes)", self.ptr.as_ptr() as usize, self.len)
    }
}

thread_local! {
    static REGION_CACHE: RefCell<(u64, Vec<(usize, usize)>)> = const { RefCell::new((0, Vec::new())) };
}

/// Whether `addr..addr+len` lies inside DMA memory (so an IO can go zero-copy without a bounce
/// buffer). Lock-free on the fast path: each thread caches the region list until it changes.
pub fn is_dma_memory(addr: usize, len: usize) -> bool {
    let g = GENERATION.load(Ordering::Acquire);
    REGION_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != g {
            let p = pool().lock().unwrap_or_else(|e| e.into_inner());
            c.1 = p.regions.iter().map(|r| (r.addr, r.addr + r.len)).collect();
            c.1.sort_unstable();
            c.0 = g;
        }
        let i = c.1.partition_point(|r| r.0 <= addr);
        i > 0 && addr.checked_add(len).is_some_and(|end| end <= c.1[i - 1].1)
    })
}

/// Copy `src` into the segments, in order; returns bytes copied.
pub fn copy_to_iovs(iovs: &[IoVec], src: &[u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        let n = v.len.min(src.len() - done);
        // SAFETY: the IoRequest buffer contract makes v valid for writes of v.len bytes and
        // unaliased while its IO is in flight; src is a separate live slice.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), v.base, n) };
        done += n;
        if done == src.len() {
            break;
        }
    }
    done
}

/// Copy from the segments, in order, into `dst`; returns bytes copied.
pub fn copy_from_iovs(iovs: &[IoVec], dst: &mut [u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        let n = v.len.min(dst.len() - done);
        // SAFETY: the IoRequest buffer contract makes v valid for reads of v.len bytes while its
        // IO is in flight; dst is a separate exclusive slice.
        unsafe { std::ptr::copy_nonoverlapping(v.base, dst.as_mut_ptr().add(done), n) };
        done += n;
        if done == dst.len() {
            break;
        }
    }
    done
}

/// Most segments [`with_iov_slices`] takes.
pub const MAX_VIEW_SEGMENTS: usize = 256;

/// Calls `f` with each segment as a byte slice, to read a request's data in place (compute
/// parity over it, say) instead of copying it out first; `None` (without calling `f`) when
/// there are more than [`MAX_VIEW_SEGMENTS`] segments. Only for the buffers of a write in
/// flight: the IoRequest buffer contract keeps them valid and unwritten until the write
/// completes, and the slices do not outlive the call.
pub fn with_iov_slices<R>(segs: &[IoVec], f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    // A request's own list (at most MAX_IOVS segments) fits a small array: no 4 KiB of
    // stack to clear per call.
    if segs.len() <= crate::io::MAX_IOVS {
        views::<R, { crate::io::MAX_IOVS }>(segs, f)
    } else {
        views::<R, MAX_VIEW_SEGMENTS>(segs, f)
    }
}

fn views<R, const N: usize>(segs: &[IoVec], f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    let mut views: [&[u8]; N] = [&[]; N];
    for (view, v) in views.iter_mut().zip(segs) {
        if v.len > 0 {
            // SAFETY: the IoRequest buffer contract makes v valid for reads of v.len bytes and
            // unwritten while its write is in flight, which outlasts this call; the slice is
            // dropped when the call returns.
            *view = unsafe { std::slice::from_raw_parts(v.base.cast_const(), v.len) };
        }
    }
    let n = segs.len();
    views.get(..n).map(f)
}

/// Fill the segments with zeroes.
pub fn zero_iovs(iovs: &[IoVec]) {
    for v in iovs {
        // SAFETY: the IoRequest buffer contract makes v valid for writes of v.len bytes.
        unsafe { std::ptr::write_bytes(v.base, 0, v.len) };
    }
}

/// Anonymous memory shared by several reactors, read and written only through copies
/// (RAM-disk backing). Concurrent IO to overlapping ranges gives unspecified contents for those
/// blocks, as on a real disk, but never touches memory outside the range.
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: SharedMem only exposes whole-range copies through raw pointers; it never hands out
// references, so sharing across threads cannot create aliasing references.
unsafe impl Send for SharedMem {}
// SAFETY: as above.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// `len` zeroed bytes (hugepage-backed when the size allows and hugepages exist).
    pub fn new(len: usize) -> Result<SharedMem, DmaError> {
        if len == 0 {
            return Err(DmaError::InvalidSize(len));
        }
        let ptr = if len.is_multiple_of(REGION_SIZE) {
            mmap_anon(len, true).or_else(|_| mmap_anon(len, false))
        } else {
            mmap_anon(len, false)
        }
        .map_err(|source| DmaError::Map { len, source })?;
        Ok(SharedMem { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: u64, len: u64) -> Option<usize> {
        let end = off.checked_add(len)?;
        (end <= self.len as u64).then_some(off as usize)
    }

    /// Copy `[off, off+total)` into the segments. Returns false when out of range.
    pub fn read_to_iovs(&self, off: u64, iovs: &[IoVec]) -> bool {
        let total: u64 = iovs.iter().map(|v| v.len as u64).sum();
        let Some(mut pos) = self.check(off, total) else { return false };
        for v in iovs {
            // SAFETY: pos..pos+v.len is inside this mapping (checked above); v is valid for
            // writes under the IoRequest buffer contract and is not part of this mapping.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(pos), v.base, v.len) };
            pos += v.len;
        }
        true
    }

    /// Copy the segments into `[off, off+total)`. Returns false when out of range.
    pub fn write_from_iovs(&self, off: u64, iovs: &[IoVec]) -> bool {
        let total: u64 = iovs.iter().map(|v| v.len as u64).sum();
        let Some(mut pos) = self.check(off, total) else { return false };
        for v in iovs {
            // SAFETY: as in read_to_iovs, in the other direction.
            unsafe { std::ptr::copy_nonoverlapping(v.base, self.ptr.as_ptr().add(pos), v.len) };
            pos += v.len;
        }
        true
    }

    /// Like [`SharedMem::write_from_iovs`], but with non-temporal (streaming) stores for the
    /// whole 64-byte lines: the data goes to memory without first reading the destination
    /// lines into the cache (and without evicting hotter data). Out of cache this moves about
    /// half the memory traffic of a copy; in cache it is slower. The stores are weakly
    /// ordered: call [`SharedMem::store_fence`] before telling anyone the write is done.
    pub fn write_from_iovs_streaming(&self, off: u64, iovs: &[IoVec]) -> bool {
        let total: u64 = iovs.iter().map(|v| v.len as u64).sum();
        let Some(mut pos) = self.check(off, total) else { return false };
        for v in iovs {
            // SAFETY: pos..pos+v.len is inside this mapping (checked above); v is valid for
            // reads under the IoRequest buffer contract and is not part of this mapping.
            unsafe { stream_copy(self.ptr.as_ptr().add(pos), v.base, v.len) };
            pos += v.len;
        }
        true
    }

    /// Orders every streaming store made by this thread before the stores that follow (a
    /// completion, a flag): after it, other threads that see those see the data.
    #[inline]
    pub fn store_fence() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: sfence has no memory operands and is part of SSE, which every x86_64 has.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Zero `[off, off+len)`. Returns false when out of range.
    pub fn zero(&self, off: u64, len: u64) -> bool {
        let Some(pos) = self.check(off, len) else { return false };
        // SAFETY: the range is inside this mapping (checked above).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(pos), 0, len as usize) };
        true
    }

    /// Copy `[off, off+dst.len())` into `dst`. Returns false when out of range.
    pub fn read_at(&self, off: u64, dst: &mut [u8]) -> bool {
        let Some(pos) = self.check(off, dst.len() as u64) else { return false };
        // SAFETY: the range is inside this mapping; dst is an exclusive slice elsewhere.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(pos), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copy `src` into `[off, off+src.len())`. Returns false when out of range.
    pub fn write_at(&self, off: u64, src: &[u8]) -> bool {
        let Some(pos) = self.check(off, src.len() as u64) else { return false };
        // SAFETY: the range is inside this mapping; src is a live slice elsewhere.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(pos), src.len()) };
        true
    }
}

/// Copies `len` bytes from `src` to `dst`, with streaming stores for the 64-byte lines of
/// `dst` it covers whole.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and they must not overlap.
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = dst.align_offset(64).min(len);
        let lines = (len - head) / 64;
        // SAFETY: head <= len; both ranges are valid per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
        for i in 0..lines {
            let at = head + i * 64;
            // SAFETY: at+64 <= len, so the 64 bytes at `at` are inside both ranges; `dst+at` is
            // 64-byte aligned (head aligned it), as _mm_stream_si128 requires 16; loads are
            // unaligned loads. SSE2 is part of every x86_64.
            unsafe {
                let s = src.add(at).cast::<__m128i>();
                let d = dst.add(at).cast::<__m128i>();
                let (a, b, c, e) = (
                    _mm_loadu_si128(s),
                    _mm_loadu_si128(s.add(1)),
                    _mm_loadu_si128(s.add(2)),
                    _mm_loadu_si128(s.add(3)),
                );
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
            }
        }
        let done = head + lines * 64;
        // SAFETY: done <= len; the tail is inside both ranges.
        unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as the caller guarantees.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, len)
    };
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        munmap(self.ptr.as_ptr() as usize, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let a = DmaBuf::alloc(4096).unwrap();
        assert_eq!(a.as_ptr() as usize % DMA_ALIGN, 0);
        let addr = a.as_ptr() as usize;
        drop(a);
        let b = DmaBuf::alloc(3000).unwrap();
        assert_eq!(b.as_ptr() as usize, addr, "freed 4 KiB buffer is reused");
        assert!(is_dma_memory(b.as_ptr() as usize, 3000));
        let big = DmaBuf::zeroed(5 << 20).unwrap();
        assert!(big.as_slice().iter().all(|&x| x == 0));
        assert!(DmaBuf::alloc(0).is_err());
    }

    #[test]
    fn distinct_buffers_do_not_overlap() {
        let bufs: Vec<DmaBuf> = (0..600).map(|i| DmaBuf::alloc(4096 << (i % 4)).unwrap()).collect();
        let mut spans: Vec<(usize, usize)> =
            bufs.iter().map(|b| (b.as_ptr() as usize, b.as_ptr() as usize + b.len())).collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:?}");
        }
    }

    #[test]
    fn shared_mem_copies_and_bounds() {
        let m = SharedMem::new(8192).unwrap();
        let mut b = DmaBuf::alloc(4096).unwrap();
        b.as_mut_slice().fill(7);
        assert!(m.write_from_iovs(4096, &[b.iovec()]));
        assert!(!m.write_from_iovs(4097, &[b.iovec()]));
        let mut out = [0u8; 16];
        assert!(m.read_at(4096, &mut out));
        assert_eq!(out, [7; 16]);
        // Streaming writes: unaligned head and tail, whole lines between.
        let mut odd = [0u8; 300];
        for (i, x) in odd.iter_mut().enumerate() {
            *x = i as u8;
        }
        // SAFETY: `odd` outlives the copy below and nothing else uses it meanwhile.
        let v = unsafe { IoVec::from_raw(odd.as_mut_ptr(), odd.len()) };
        assert!(m.write_from_iovs_streaming(4096 + 3, &[v, b.iovec().sub(0, 500).unwrap()]));
        assert!(!m.write_from_iovs_streaming(8000, &[b.iovec()]));
        SharedMem::store_fence();
        let mut back = [0u8; 803];
        assert!(m.read_at(4096, &mut back));
        assert_eq!(back[..3], [7, 7, 7]);
        assert!(back[3..303].iter().enumerate().all(|(i, &x)| x == i as u8));
        assert!(back[303..].iter().all(|&x| x == 7));
        assert!(m.zero(4096, 4096));
        assert!(m.read_to_iovs(4096, &[b.iovec()]));
        assert!(b.as_slice().iter().all(|&x| x == 0));
    }

    #[test]
    fn iov_slices_small_and_long_lists() {
        let mut b = DmaBuf::alloc(4096).unwrap();
        b.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
        for n in [0usize, 1, crate::io::MAX_IOVS, crate::io::MAX_IOVS + 1, MAX_VIEW_SEGMENTS] {
            let segs: Vec<IoVec> = (0..n).map(|i| b.iovec().sub(i * 8, 8).unwrap()).collect();
            let got = with_iov_slices(&segs, |v| v.iter().map(|s| s.to_vec()).collect::<Vec<_>>()).unwrap();
            assert_eq!(got.len(), n);
            assert!(got.iter().enumerate().all(|(i, s)| *s == b.as_slice()[i * 8..i * 8 + 8]));
        }
        let too_many = vec![b.iovec().sub(0, 1).unwrap(); MAX_VIEW_SEGMENTS + 1];
        assert!(with_iov_slices(&too_many, |_| ()).is_none());
    }
}
