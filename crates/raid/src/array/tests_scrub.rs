//! check and repair (scrub): members corrupted under the array are found
//! with md's mismatch count, repaired, and found clean again.

use std::time::{Duration, Instant};

use bdev::{DmaBuf, IoRequest, IoStatus, IoVecs, Registry};

use super::tests::{rig, Op, Rig};
use super::*;

/// Overwrites one sector of member `i`'s data area on the malloc bdev
/// under it, behind the array's back.
fn corrupt(reg: &Registry, i: usize, sector: u64) {
    let off = md_examine(reg, &format!("m{i}")).unwrap().superblock.data_offset;
    let mut ch = reg.lookup(&format!("m{i}")).unwrap().open_channel().unwrap();
    let mut b = DmaBuf::zeroed(512).unwrap();
    b.as_mut_slice().fill(0x5a);
    ch.submit(&IoRequest::write(off + sector, 1, IoVecs::single(b.iovec()), 9)).unwrap();
    let mut st = None;
    while st.is_none() {
        ch.poll(&mut |_, s| st = Some(s));
    }
    assert_eq!(st, Some(IoStatus::Success));
}

/// Runs a check or repair to the end, writing meanwhile when `churn`.
fn scrub(r: &mut Rig, cmd: ManageCmd, churn: bool) -> u64 {
    r.array.manage(cmd).unwrap();
    let t0 = Instant::now();
    let mut seed = 0u8;
    loop {
        let d = r.array.detail();
        if d.resync_status == "idle" {
            return d.mismatch_cnt;
        }
        assert!(d.resync_status == "check" || d.resync_status == "repair", "{d:?}");
        if churn {
            seed = seed.wrapping_add(1);
            // The second half: the corrupted sectors stay as they are.
            let half = r.blocks() / 2;
            let at = half + (u64::from(seed) * 61) % (half - 16);
            r.batch(&[Op::Write { at, blocks: 16, seed }]);
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{d:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The members holding redundancy (not the first copy) at member sector
/// `sector`: what a repair rewrites, so the data stays the model's.
fn redundancy_member(level: Level, geometry: &crate::Geometry, sector: u64) -> usize {
    match geometry {
        crate::Geometry::Striped(g) => g.stripe_layout(sector / g.chunk_sectors()).p_member(),
        // raid1: the second copy; raid10 near 2: odd members hold second
        // copies.
        _ => {
            let _ = level;
            1
        }
    }
}

#[test]
fn check_counts_repair_fixes() {
    for (level, layout, disks) in [
        (Level::Raid1, None, 2),
        (Level::Raid4, Some(0), 4),
        (Level::Raid5, Some(2), 4),
        (Level::Raid6, Some(2), 5),
        (Level::Raid10, Some(0x102), 4),
    ] {
        let mut r = rig(level, layout, disks, 16, 512);
        r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 77 }]);
        assert_eq!(scrub(&mut r, ManageCmd::Check, false), 0, "{level}");
        // Two sectors in different 4 KiB pages and stripes: 2 x 8 sectors.
        let geometry = r.array.sh.geometry.clone();
        for sector in [100, 1000] {
            corrupt(&r.reg, redundancy_member(level, &geometry, sector), sector);
        }
        // Writes elsewhere during the check keep their stripes consistent.
        r.array.manage(ManageCmd::SetSyncSpeed(4096)).unwrap();
        assert_eq!(scrub(&mut r, ManageCmd::Check, true), 16, "{level}");
        r.array.manage(ManageCmd::SetSyncSpeed(0)).unwrap();
        // A check does not repair.
        assert_eq!(scrub(&mut r, ManageCmd::Check, false), 16, "{level}");
        assert_eq!(scrub(&mut r, ManageCmd::Repair, false), 16, "{level}");
        assert_eq!(scrub(&mut r, ManageCmd::Check, false), 0, "{level}");
        r.read_all();
        r.check_on_disk();
    }
}

#[test]
fn scrub_is_refused_when_it_cannot_run() {
    let mut r = rig(Level::Raid0, None, 2, 16, 512);
    assert!(r.array.manage(ManageCmd::Check).is_err());
    let mut r5 = rig(Level::Raid5, Some(2), 3, 16, 512);
    r5.batch(&[Op::Fail { member: 1 }, Op::Write { at: 0, blocks: 8, seed: 1 }]);
    assert!(matches!(r5.array.manage(ManageCmd::Repair), Err(MdError::Busy(_))));
    r.read_all();
}
