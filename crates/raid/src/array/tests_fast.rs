//! The fast paths of the channel: full-stripe parity computed from the
//! caller's buffers (and the copying path it falls back to), checked by
//! reading back through parity after members fail.

use bdev::{DmaBuf, IoRequest, IoStatus, IoVecs};

use super::tests::{rig, wait, Op};
use super::*;

/// Writes `blocks` at `at` from a buffer cut into segments at `cuts`
/// (bytes), and records it in the model.
fn write_segments(r: &mut super::tests::Rig, at: u64, blocks: u64, cuts: &[usize], seed: u8) {
    let len = (blocks * r.bs) as usize;
    let mut b = DmaBuf::alloc(len).unwrap();
    for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = (j as u8).wrapping_mul(seed | 1) ^ (j >> 8) as u8;
    }
    let off = (at * r.bs) as usize;
    r.model[off..off + len].copy_from_slice(b.as_slice());
    let mut iovs = IoVecs::new();
    let mut start = 0;
    for &c in cuts.iter().chain([len].iter()) {
        assert!(iovs.push(b.iovec_range(start, c - start).unwrap()));
        start = c;
    }
    r.ch.submit(&IoRequest::write(at, blocks, iovs, 9)).unwrap();
    assert_eq!(wait(&mut r.ch, &[9]), [IoStatus::Success]);
}

#[test]
fn full_stripe_parity_from_caller_buffers_and_from_copies() {
    for (level, layout, disks, parity) in [(Level::Raid5, Some(2), 4, 1), (Level::Raid6, Some(2), 5, 2)] {
        let mut r = rig(level, layout, disks, 16, 512);
        // 16 KiB chunks: 32 sectors per chunk.
        let stripe = 32 * (disks - parity) as u64;
        // One segment: parity straight from the caller's buffer.
        r.batch(&[Op::Write { at: 0, blocks: stripe, seed: 3 }, Op::Write { at: stripe, blocks: 2 * stripe, seed: 4 }]);
        // Segments that do not follow the chunks: parity from copies.
        write_segments(&mut r, 3 * stripe, stripe, &[512 * 5 + 100, 512 * 40], 5);
        // Segments cut at the chunks: parity from the caller's buffers.
        write_segments(&mut r, 4 * stripe, stripe, &[512 * 32, 512 * 64], 6);
        assert_eq!(r.array.stripe_stats().full, 5, "{level:?}");
        // Read everything back through parity with members missing.
        for m in 0..parity {
            r.batch(&[Op::Fail { member: m }]);
        }
        r.read_all();
        r.check_on_disk();
    }
}

/// Small writes from segments cut anywhere: read-modify-write folds the
/// old and new data into P (and Q) piece by piece; reconstruct-write reads
/// a chunk it overwrites whole in place when the chunk is one segment and
/// copies it otherwise, and copies partial chunks. Checked by reading back
/// through parity with members missing.
#[test]
fn small_writes_from_caller_segments() {
    for (level, disks, parity) in [(Level::Raid5, 4, 1), (Level::Raid6, 6, 2), (Level::Raid6, 5, 2)] {
        let mut r = rig(level, Some(2), disks, 16, 512);
        let stripe = 32 * (disks - parity) as u64;
        // Rows 5..8 of chunk 0: RMW on the ties (raid5 x4, raid6 x6).
        write_segments(&mut r, 5, 3, &[700, 1100], 7);
        // raid6 x5 reads less by reconstruct-write (two other chunks).
        let rmw = u64::from(disks != 5);
        assert_eq!(r.array.stripe_stats().rmw, rmw, "{level:?} x{disks}");
        // Chunk 1 whole plus rows 0..10 of chunk 2: reconstruct-writes,
        // chunk 1 in place, then split over segments.
        write_segments(&mut r, stripe + 32, 42, &[512 * 32], 8);
        write_segments(&mut r, 2 * stripe + 32, 42, &[512 * 10 + 3, 512 * 32 + 300], 9);
        assert_eq!(r.array.stripe_stats().rcw, 2 + u64::from(rmw == 0), "{level:?} x{disks}");
        for m in 0..parity {
            r.batch(&[Op::Fail { member: m + 1 }]);
        }
        r.read_all();
        r.check_on_disk();
    }
}
