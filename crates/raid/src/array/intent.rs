//! The running side of md's internal write-intent bitmap.
//!
//! Every bitmap chunk (a `chunk_bytes` region of the sync range) has one
//! atomic word: the number of writes in flight there plus four flags.
//!
//! * `ONDISK`: the chunk's bit is set in the bitmap on every member, so
//!   writes may go to the members at once. This is the common case: a
//!   write costs one `fetch_add` per chunk it touches (and one `fetch_sub`
//!   when it completes), no lock, no allocation.
//! * `PENDING`: a write found the bit clear; it waits (its parent request
//!   stays queued in its channel) until the control thread has written the
//!   bitmap pages with the bit set and turned `PENDING` into `ONDISK`.
//! * `IDLE`: set by a daemon pass on a chunk with no write in flight; a
//!   write clears it. A chunk still idle at the next pass is cleared (bit
//!   written as 0): bits clear lazily, one to two daemon periods after the
//!   last write, like md's bitmap daemon.
//! * `NEEDED`: the chunk must be resynced (its bit was set after an
//!   unclean stop, or the array is new and not assumed clean). It is never
//!   cleared by the daemon; the resync clears it once the chunk is
//!   consistent.
//!
//! While the array is degraded no bit is cleared, as md does, so the
//! bitmap keeps recording every region written since the failure.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::geometry::Geometry;
use crate::superblock::bitmap::BitmapLayout;

const COUNT: u32 = 0x00ff_ffff;
const NEEDED: u32 = 1 << 28;
const IDLE: u32 = 1 << 29;
const PENDING: u32 = 1 << 30;
const ONDISK: u32 = 1 << 31;

/// Outcome of [`WriteIntent::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    /// Every bit is on disk: the write may proceed.
    pub ready: bool,
    /// This call asked for a bitmap write: wake the control thread.
    pub flush: bool,
}

/// Write-intent state of a running array.
pub(crate) struct WriteIntent {
    layout: BitmapLayout,
    chunks: Box<[AtomicU32]>,
    /// The channels want a bitmap write.
    pub flush_wanted: AtomicBool,
    /// Daemon period in milliseconds.
    pub daemon_ms: AtomicU64,
}

impl WriteIntent {
    /// State for `layout` with every bit clear.
    pub(crate) fn new(layout: BitmapLayout, daemon_secs: u32) -> WriteIntent {
        let n = usize::try_from(layout.bits()).unwrap_or(0);
        WriteIntent {
            layout,
            chunks: (0..n).map(|_| AtomicU32::new(0)).collect(),
            flush_wanted: AtomicBool::new(false),
            daemon_ms: AtomicU64::new(u64::from(daemon_secs.max(1)) * 1000),
        }
    }

    pub(crate) fn layout(&self) -> BitmapLayout {
        self.layout
    }

    fn chunk(&self, bit: u64) -> Option<&AtomicU32> {
        self.chunks.get(usize::try_from(bit).ok()?)
    }

    /// Marks `bit` set on disk and in need of resync (bits loaded after an
    /// unclean stop, or every bit of a new array).
    pub(crate) fn mark_needed(&self, bit: u64) {
        if let Some(c) = self.chunk(bit) {
            c.fetch_or(ONDISK | NEEDED, Ordering::AcqRel);
        }
    }

    /// Marks `bit` set on disk (loaded after a clean stop that left bits
    /// set, e.g. degraded): the daemon clears it when the array is whole.
    pub(crate) fn mark_ondisk(&self, bit: u64) {
        if let Some(c) = self.chunk(bit) {
            c.fetch_or(ONDISK, Ordering::AcqRel);
        }
    }

    /// [`WriteIntent::mark_needed`] on every bit.
    pub(crate) fn mark_all_needed(&self) {
        for c in self.chunks.iter() {
            c.fetch_or(ONDISK | NEEDED, Ordering::AcqRel);
        }
    }

    /// Whether `bit` still needs a resync.
    pub(crate) fn needed(&self, bit: u64) -> bool {
        self.chunk(bit).is_some_and(|c| c.load(Ordering::Acquire) & NEEDED != 0)
    }

    /// The resync made `bit`'s chunk consistent: the daemon may clear it.
    pub(crate) fn synced(&self, bit: u64) {
        if let Some(c) = self.chunk(bit) {
            c.fetch_and(!NEEDED, Ordering::AcqRel);
        }
    }

    /// Whether `bit` is (or is about to be) set on disk.
    pub(crate) fn is_set(&self, bit: u64) -> bool {
        self.chunk(bit).is_some_and(|c| is_set(c.load(Ordering::Acquire)))
    }

    /// Bits set (or about to be).
    pub(crate) fn dirty_bits(&self) -> u64 {
        self.chunks.iter().filter(|c| is_set(c.load(Ordering::Acquire))).count() as u64
    }

    /// A write to the chunks `bits` begins (counts it in flight).
    pub(crate) fn start(&self, bits: Range<u64>) -> Started {
        let mut out = Started { ready: true, flush: false };
        for b in bits {
            let Some(c) = self.chunk(b) else { continue };
            let prev = c.fetch_add(1, Ordering::AcqRel);
            if prev & IDLE != 0 {
                c.fetch_and(!IDLE, Ordering::AcqRel);
            }
            if prev & ONDISK == 0 {
                out.ready = false;
                if c.fetch_or(PENDING, Ordering::AcqRel) & (PENDING | ONDISK) == 0 {
                    out.flush = true;
                }
            }
        }
        if out.flush {
            self.flush_wanted.store(true, Ordering::Release);
        }
        out
    }

    /// Whether every chunk of `bits` is on disk now.
    pub(crate) fn ready(&self, bits: Range<u64>) -> bool {
        bits.into_iter().all(|b| self.chunk(b).is_none_or(|c| c.load(Ordering::Acquire) & ONDISK != 0))
    }

    /// A write started with [`WriteIntent::start`] completed.
    pub(crate) fn end(&self, bits: Range<u64>) {
        for b in bits {
            if let Some(c) = self.chunk(b) {
                c.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The bits to write: set where on disk, pending, needed or written.
    /// Returns the bits that were pending (to [`WriteIntent::commit`]
    /// once the image is on disk).
    pub(crate) fn image(&self, bits: &mut [u8]) -> Vec<u64> {
        bits.fill(0);
        let mut pending = Vec::new();
        for (i, c) in self.chunks.iter().enumerate() {
            let s = c.load(Ordering::Acquire);
            if is_set(s) {
                let _ = self.layout.set(bits, i as u64, true);
            }
            if s & PENDING != 0 {
                pending.push(i as u64);
            }
        }
        pending
    }

    /// The image with `pending` bits is on every member.
    pub(crate) fn commit(&self, pending: &[u64]) {
        for &b in pending {
            if let Some(c) = self.chunk(b) {
                c.fetch_or(ONDISK, Ordering::AcqRel);
                c.fetch_and(!PENDING, Ordering::AcqRel);
            }
        }
    }

    /// One daemon pass: chunks idle since the last pass are cleared, busy
    /// ones become candidates. `all` clears every chunk without writes in
    /// flight at once (clean stop). Returns how many bits were cleared.
    pub(crate) fn daemon_pass(&self, all: bool) -> u64 {
        let mut cleared = 0;
        for c in self.chunks.iter() {
            let s = c.load(Ordering::Acquire);
            if s & ONDISK == 0 || s & (PENDING | NEEDED | COUNT) != 0 {
                continue;
            }
            if s & IDLE != 0 || all {
                if c.compare_exchange(s, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    cleared += 1;
                }
            } else {
                let _ = c.compare_exchange(s, s | IDLE, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        cleared
    }
}

fn is_set(s: u32) -> bool {
    s & (ONDISK | PENDING | NEEDED | COUNT) != 0
}

/// The sync-range sectors (the bitmap's address space) a write of array
/// sectors `[lba, lba + sectors)` touches, or a range covering them.
pub(crate) fn sync_range(geometry: &Geometry, lba: u64, sectors: u64) -> Range<u64> {
    if sectors == 0 {
        return 0..0;
    }
    match geometry {
        Geometry::Striped(g) => {
            let chunk = g.chunk_sectors();
            let stripe_len = chunk * g.data_disks() as u64;
            if stripe_len == 0 {
                return 0..0;
            }
            let first = lba / stripe_len;
            let last = (lba + sectors - 1) / stripe_len;
            if first == last {
                let o = lba - first * stripe_len;
                let e = o + sectors - 1;
                if o / chunk == e / chunk {
                    return first * chunk + o % chunk..first * chunk + e % chunk + 1;
                }
            }
            first * chunk..(last + 1) * chunk
        }
        // raid1: array sectors are member sectors; raid10: the sync range
        // is the array.
        _ => lba..lba + sectors,
    }
}

/// The bits covering a write of array sectors `[lba, lba + sectors)`.
pub(crate) fn write_bits(layout: &BitmapLayout, geometry: &Geometry, lba: u64, sectors: u64) -> Range<u64> {
    let r = sync_range(geometry, lba, sectors);
    let bits = layout.bits_of(r.start, r.end - r.start);
    bits.start.min(layout.bits())..bits.end.min(layout.bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_waits_for_the_bit_then_runs_without_waiting() {
        let wi = WriteIntent::new(BitmapLayout::new(1024, 65536), 5);
        assert_eq!(wi.layout().bits(), 8);
        let s = wi.start(1..3);
        assert_eq!(s, Started { ready: false, flush: true });
        // A second writer to the same chunks waits without a new request.
        assert_eq!(wi.start(2..3), Started { ready: false, flush: false });
        assert!(!wi.ready(1..3));
        let mut img = [0u8; 1];
        let pending = wi.image(&mut img);
        assert_eq!(pending, vec![1, 2]);
        assert_eq!(img[0], 0b110);
        wi.commit(&pending);
        assert!(wi.ready(1..3));
        assert_eq!(wi.start(1..2), Started { ready: true, flush: false });
        // Busy chunks are never cleared.
        assert_eq!(wi.daemon_pass(false), 0);
        assert_eq!(wi.daemon_pass(true), 0);
        wi.end(1..3);
        wi.end(2..3);
        wi.end(1..2);
        // First pass marks idle, second clears.
        assert_eq!(wi.daemon_pass(false), 0);
        assert_eq!(wi.dirty_bits(), 2);
        assert_eq!(wi.daemon_pass(false), 2);
        assert_eq!(wi.dirty_bits(), 0);
        assert!(!wi.is_set(1));
    }

    #[test]
    fn a_write_between_passes_keeps_the_bit() {
        let wi = WriteIntent::new(BitmapLayout::new(1024, 65536), 5);
        let p = {
            wi.start(0..1);
            let mut img = [0u8; 1];
            wi.image(&mut img)
        };
        wi.commit(&p);
        wi.end(0..1);
        assert_eq!(wi.daemon_pass(false), 0);
        assert!(wi.start(0..1).ready);
        wi.end(0..1);
        // The write cleared the idle mark: one more pass before clearing.
        assert_eq!(wi.daemon_pass(false), 0);
        assert_eq!(wi.daemon_pass(false), 1);
    }

    #[test]
    fn needed_bits_wait_for_the_resync() {
        let wi = WriteIntent::new(BitmapLayout::new(1024, 65536), 5);
        wi.mark_needed(3);
        assert!(wi.ready(3..4));
        assert!(wi.needed(3));
        assert_eq!(wi.daemon_pass(true), 0);
        wi.synced(3);
        assert!(!wi.needed(3));
        assert_eq!(wi.daemon_pass(true), 1);
        wi.mark_all_needed();
        assert_eq!(wi.dirty_bits(), 8);
    }

    #[test]
    fn parity_sync_ranges() {
        let p = crate::geometry::ArrayParams {
            level: crate::Level::Raid5,
            layout: 2,
            chunk_sectors: 128,
            raid_disks: 4,
            dev_sectors: 4096,
            member_sectors: vec![4096; 4],
        };
        let g = Geometry::new(&p).unwrap();
        // Inside one chunk: the rows written.
        assert_eq!(sync_range(&g, 10, 8), 10..18);
        // Chunk 1 of stripe 0 covers rows 0..128 of stripe 0.
        assert_eq!(sync_range(&g, 130, 8), 2..10);
        // Across chunks of one stripe: the whole stripe.
        assert_eq!(sync_range(&g, 120, 16), 0..128);
        // Across stripes.
        assert_eq!(sync_range(&g, 380, 8), 0..256);
        let l = BitmapLayout::new(g.resync_sectors(), 4096);
        assert_eq!(write_bits(&l, &g, 130, 8), 0..2);
    }
}
