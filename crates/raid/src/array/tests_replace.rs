//! md's replace (want_replacement): rebuild onto a new device while the old
//! one serves, with writes, a failure of another member, of the old one or
//! of the replacement in the middle.

use std::time::{Duration, Instant};

use super::tests::{add_member, rig, Op, Rig};
use super::*;
use crate::superblock::FeatureMap;

/// Writes and reads while `until` is false; returns the details seen.
fn churn(r: &mut Rig, mut until: impl FnMut(&MdDetail) -> bool) -> Vec<MdDetail> {
    let mut seen = Vec::new();
    let t0 = Instant::now();
    let mut seed = 40u8;
    loop {
        let d = r.array.detail();
        if until(&d) {
            seen.push(d);
            return seen;
        }
        seen.push(d);
        seed = seed.wrapping_add(1);
        let at = (u64::from(seed) * 97) % (r.blocks() - 64);
        // Far from the write: a read overlapping it could see either.
        let read_at = (at + r.blocks() / 2) % (r.blocks() - 64);
        r.batch(&[Op::Write { at, blocks: 24, seed }, Op::Read { at: read_at, blocks: 32 }]);
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", seen.last());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn replacing(d: &MdDetail) -> bool {
    d.disks.iter().any(|x| x.role.starts_with("replacement"))
}

#[test]
fn replace_keeps_redundancy_and_survives_another_failure() {
    let mut r = rig(Level::Raid5, Some(2), 4, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 3 }]);
    let new = add_member(&r.reg, 4, 512);
    r.array.manage(ManageCmd::SetSyncSpeed(1024)).unwrap();
    r.array.manage(ManageCmd::ReplaceDisk { old: "f0".into(), new: "f4".into() }).unwrap();
    let d = r.array.detail();
    assert!(!d.degraded && d.active_disks == 4, "{d:?}");
    assert_eq!(d.state, ArrayState::Recovering);
    assert!(d.disks.iter().any(|x| x.name == "f4" && x.role == "replacement 0" && x.state == DiskState::Sync));
    // md's records: the replacement has the slot's role and the flag.
    let ex = md_examine(&r.reg, "m4").unwrap().superblock;
    assert!(ex.feature_map.contains(FeatureMap::REPLACEMENT));
    assert_eq!(ex.dev_roles[ex.dev_number as usize], crate::superblock::DevRole::Active(0));
    // Redundancy throughout: writes and reads go on, and the old device
    // still counts, so losing another member mid-way costs no data.
    let seen = churn(&mut r, |d| d.resync_progress > 20.0);
    assert!(seen.iter().all(|d| !d.degraded && d.active_disks == 4));
    r.batch(&[Op::Fail { member: 1 }]);
    r.array.manage(ManageCmd::SetSyncSpeed(0)).unwrap();
    let seen = churn(&mut r, |d| !replacing(d) && d.resync_status == "idle");
    let d = seen.last().unwrap();
    assert!(d.degraded && d.active_disks == 3, "{d:?}");
    assert!(d.disks.iter().any(|x| x.name == "f4" && x.role == "active 0"), "{d:?}");
    assert!(!d.disks.iter().any(|x| x.name == "f0"), "old device still listed: {d:?}");
    r.read_all();
    // The old device was released: it can be opened and claimed again.
    r.reg.open("f0", true).unwrap().claim("test").unwrap();
    let ex = md_examine(&r.reg, "m4").unwrap().superblock;
    assert!(!ex.feature_map.contains(FeatureMap::REPLACEMENT));
    drop(new);
    // Without f0 (replaced) and f1 (failed): f4 holds slot 0.
    r.faults[1].configure(bdev::backends::fault::FaultConfig::default());
    let Rig { reg, array, ch, model, .. } = r;
    drop(ch);
    array.stop().unwrap();
    drop(array);
    let _a = md_assemble(&reg, "md1", &["f4", "f2", "f3"], &AssembleOptions { run_degraded: true, stripe_cache: 4 })
        .unwrap();
    let mut ch = reg.open("md1", true).unwrap().channel().unwrap();
    let mut b = bdev::DmaBuf::zeroed(model.len()).unwrap();
    ch.submit(&bdev::IoRequest::read(0, model.len() as u64 / 512, bdev::IoVecs::single(b.iovec()), 1)).unwrap();
    assert_eq!(super::tests::wait(&mut ch, &[1]), vec![bdev::IoStatus::Success]);
    assert!(b.as_slice() == &model[..]);
}

#[test]
fn old_device_failing_turns_the_replacement_into_recovery() {
    for (level, layout, disks) in [(Level::Raid5, Some(2), 4), (Level::Raid1, None, 2), (Level::Raid10, Some(0x102), 4)]
    {
        let mut r = rig(level, layout, disks, 16, 512);
        r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 9 }]);
        let new = add_member(&r.reg, disks, 512);
        r.array.manage(ManageCmd::SetSyncSpeed(1024)).unwrap();
        r.array.manage(ManageCmd::ReplaceDisk { old: "f0".into(), new: format!("f{disks}") }).unwrap();
        churn(&mut r, |d| d.resync_progress > 10.0);
        r.batch(&[Op::Fail { member: 0 }]);
        r.array.manage(ManageCmd::SetSyncSpeed(0)).unwrap();
        let seen = churn(&mut r, |d| d.resync_status == "idle" && d.active_disks == disks);
        let d = seen.last().unwrap();
        assert!(d.disks.iter().any(|x| x.name == format!("f{disks}") && x.role == "active 0"), "{level}: {d:?}");
        r.read_all();
        r.faults[0] = new;
        r.check_on_disk();
    }
}

#[test]
fn failed_replacement_leaves_the_array_as_it_was() {
    let mut r = rig(Level::Raid1, None, 2, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 5 }]);
    let new = add_member(&r.reg, 2, 512);
    r.array.manage(ManageCmd::SetSyncSpeed(1024)).unwrap();
    r.array.manage(ManageCmd::ReplaceDisk { old: "f1".into(), new: "f2".into() }).unwrap();
    // Only one replacement at a time; not of a member that is not there.
    assert!(r.array.manage(ManageCmd::ReplaceDisk { old: "f0".into(), new: "f9".into() }).is_err());
    churn(&mut r, |d| d.resync_progress > 10.0);
    r.faults.push(new);
    r.batch(&[Op::Fail { member: 2 }]);
    let seen = churn(&mut r, |d| !replacing(d) && d.resync_status == "idle");
    let d = seen.last().unwrap();
    assert!(!d.degraded && d.active_disks == 2, "{d:?}");
    assert!(d.disks.iter().any(|x| x.name == "f2" && x.state == DiskState::Faulty), "{d:?}");
    r.array.manage(ManageCmd::RemoveDisk("f2".into())).unwrap();
    r.faults.pop();
    r.read_all();
    r.check_on_disk();
}

#[test]
fn a_stop_during_replace_resumes_it_on_the_next_assembly() {
    for (level, layout, disks) in [(Level::Raid1, None, 2), (Level::Raid5, Some(2), 4)] {
        let mut r = rig(level, layout, disks, 16, 512);
        r.batch(&[Op::Write { at: 0, blocks: r.blocks(), seed: 7 }]);
        let _new = add_member(&r.reg, disks, 512);
        let new = format!("f{disks}");
        r.array.manage(ManageCmd::SetSyncSpeed(1024)).unwrap();
        r.array.manage(ManageCmd::ReplaceDisk { old: "f0".into(), new: new.clone() }).unwrap();
        churn(&mut r, |d| d.resync_progress > 10.0);
        let Rig { reg, array, ch, model, .. } = r;
        drop(ch);
        array.stop().unwrap();
        drop(array);
        // On disk it is still slot 0's replacement, with how far it got.
        let ex = md_examine(&reg, &format!("m{disks}")).unwrap().superblock;
        assert!(ex.feature_map.contains(FeatureMap::REPLACEMENT), "{level}");
        assert!(ex.feature_map.contains(FeatureMap::RECOVERY_OFFSET), "{level}");
        assert!(ex.recovery_offset > 0 && ex.recovery_offset < crate::superblock::MAX_SECTOR, "{level}");
        assert_eq!(ex.dev_roles[ex.dev_number as usize], crate::superblock::DevRole::Active(0));
        let names: Vec<String> = (0..=disks).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = md_assemble(&reg, "md1", &refs, &AssembleOptions { run_degraded: false, stripe_cache: 4 }).unwrap();
        // Slowly again (the control thread starts the copy on its first
        // round), to see where it resumes.
        a.manage(ManageCmd::SetSyncSpeed(1024)).unwrap();
        let d = a.detail();
        let listed = |d: &MdDetail, role: &str| d.disks.iter().any(|x| x.name == new && x.role == role);
        assert!(!d.degraded && d.spare_disks == 0 && listed(&d, "replacement 0"), "{level}: {d:?}");
        let t0 = Instant::now();
        let d = loop {
            let d = a.detail();
            if d.resync_status == "recovery" {
                break d;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "{level}: {d:?}");
            std::thread::sleep(Duration::from_millis(1));
        };
        // Resumed, not restarted: from the recorded offset on.
        assert!(d.resync_progress >= 10.0, "{level}: {d:?}");
        a.manage(ManageCmd::SetSyncSpeed(0)).unwrap();
        let t0 = Instant::now();
        let d = loop {
            let d = a.detail();
            if listed(&d, "active 0") && d.resync_status == "idle" {
                break d;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{level}: {d:?}");
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(!d.disks.iter().any(|x| x.name == "f0"), "{level}: old device still listed: {d:?}");
        let mut ch = reg.open("md1", true).unwrap().channel().unwrap();
        let mut b = bdev::DmaBuf::zeroed(model.len()).unwrap();
        ch.submit(&bdev::IoRequest::read(0, model.len() as u64 / 512, bdev::IoVecs::single(b.iovec()), 1)).unwrap();
        assert_eq!(super::tests::wait(&mut ch, &[1]), vec![bdev::IoStatus::Success]);
        assert!(b.as_slice() == &model[..], "{level}");
        drop(ch);
        a.stop().unwrap();
    }
}
