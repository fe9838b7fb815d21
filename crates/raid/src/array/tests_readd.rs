//! Re-adding a member that dropped out, as md does with a write-intent
//! bitmap: it returns to its old slot and only the chunks whose bits were
//! set while it was away are rebuilt; when the bitmap cannot prove what
//! it missed it is recovered in full as a new device. Through the manage
//! command and through assembly with a stale member.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::Registry;

use super::shared::{FailedDevice, SlotState};
use super::tests::{add_member, Op, Rig};
use super::*;
use crate::assemble::ReAddRefusal;
use crate::superblock::FeatureMap;

/// Bitmap chunk: 4 KiB = 8 sectors of sync range per bit.
const BM_SECTORS: u64 = 8;

/// An array over `f0..f{disks}` with a 4 KiB-chunk bitmap whose daemon
/// clears idle bits every 10 ms; `extra` more members are registered but
/// not used.
fn bitmap_rig(level: Level, layout: Option<u32>, disks: usize, extra: usize) -> Rig {
    let reg = Registry::new();
    let faults: Vec<_> = (0..disks + extra).map(|i| add_member(&reg, i, 512)).collect();
    let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig {
        chunk_kib: 16,
        layout,
        assume_clean: true,
        stripe_cache: 4,
        bitmap_chunk_kib: Some(4),
        ..MdConfig::default()
    };
    let array = md_create(&reg, "md0", level, &refs, &cfg).unwrap();
    array.set_bitmap_daemon_sleep(Duration::from_millis(10));
    rig_for(reg, faults, array, None)
}

fn rig_for(
    reg: Arc<Registry>,
    faults: Vec<Arc<bdev::backends::fault::FaultBdev>>,
    array: Arc<MdArray>,
    model: Option<Vec<u8>>,
) -> Rig {
    let ch = reg.open("md0", true).unwrap().channel().unwrap();
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    Rig { reg, faults, array, ch, model: model.unwrap_or_else(|| vec![0; size]), bs: 512 }
}

fn wait_until(what: &str, a: &MdArray, f: impl Fn(&MdDetail) -> bool) {
    let t0 = Instant::now();
    loop {
        let d = a.detail();
        if f(&d) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}: {d:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_idle(a: &MdArray) {
    wait_until("idle", a, |d| d.resync_status == "idle");
}

/// Waits until no slot lacks an in-sync member and nothing syncs.
fn wait_rebuilt(a: &MdArray) {
    wait_until("rebuilt", a, |d| !d.degraded && d.resync_status == "idle");
}

fn wait_clean_bitmap(a: &MdArray) {
    wait_until("bits cleared", a, |d| d.bitmap.is_some_and(|b| b.dirty == 0));
}

/// Fills every 64th block range of the array (data everywhere, so a chunk
/// left stale on a member shows).
fn fill(r: &mut Rig, seed: u8) {
    let total = r.blocks();
    let mut at = 0;
    let mut i = 0u8;
    while at < total {
        let n = 64.min(total - at);
        r.batch(&[Op::Write { at, blocks: n, seed: seed.wrapping_add(i) }]);
        at += n;
        i = i.wrapping_add(1);
    }
}

/// The bits set in the array's bitmap.
fn set_bits(a: &MdArray) -> Vec<u64> {
    let wi = a.sh.intent.as_ref().unwrap();
    (0..wi.layout().bits()).filter(|&b| wi.is_set(b)).collect()
}

/// Member sectors of slot `slot` the bits `bits` cover.
fn covered(a: &MdArray, slot: usize, bits: &[u64]) -> u64 {
    let g = &a.sh.geometry;
    bits.iter()
        .map(|&b| match g {
            // Parity levels: the bit covers stripe rows, on every member;
            // raid1: member sectors.
            crate::Geometry::Striped(_) | crate::Geometry::Raid1 { .. } => BM_SECTORS,
            // raid10: array sectors, on the members holding a copy.
            _ if g.copies(b * BM_SECTORS).any(|c| c.member == slot) => BM_SECTORS,
            _ => 0,
        })
        .sum()
}

/// Runs a check to the end and returns md's mismatch count.
fn check(a: &MdArray) -> u64 {
    a.manage(ManageCmd::Check).unwrap();
    wait_idle(a);
    a.detail().mismatch_cnt
}

fn disk<'a>(d: &'a MdDetail, name: &str) -> &'a DiskDetail {
    d.disks.iter().find(|x| x.name == name).unwrap_or_else(|| panic!("{name} not in {d:?}"))
}

fn readd_levels() -> Vec<(Level, Option<u32>, usize)> {
    vec![
        (Level::Raid1, None, 2),
        (Level::Raid4, None, 4),
        (Level::Raid5, Some(2), 4),
        (Level::Raid6, Some(2), 5),
        (Level::Raid10, Some(0x102), 4),
    ]
}

#[test]
fn a_readded_member_recovers_only_the_chunks_written_while_it_was_out() {
    for (level, layout, disks) in readd_levels() {
        let mut r = bitmap_rig(level, layout, disks, 0);
        fill(&mut r, 1);
        wait_clean_bitmap(&r.array);
        let k = 1;
        let name = format!("f{k}");
        r.array.manage(ManageCmd::SetFaulty(name.clone())).unwrap();
        r.array.manage(ManageCmd::RemoveDisk(name.clone())).unwrap();
        // A few writes while it is out (the degraded array keeps the bits).
        let total = r.blocks();
        r.batch(&[
            Op::Write { at: 8, blocks: 8, seed: 11 },
            Op::Write { at: 1000, blocks: 4, seed: 12 },
            Op::Write { at: total - 40, blocks: 16, seed: 13 },
        ]);
        std::thread::sleep(Duration::from_millis(50));
        let bits = set_bits(&r.array);
        assert!(!bits.is_empty() && bits.len() < 16, "{level}: {bits:?}");
        let want = covered(&r.array, k, &bits);
        assert!(want > 0, "{level}");
        let before = r.array.sync_stats();
        // Paused, the re-added member shows as rebuilding in its old slot
        // and its superblock says so, as md writes it.
        r.array.manage(ManageCmd::StopRebuild).unwrap();
        r.array.manage(ManageCmd::AddDisk(name.clone())).unwrap();
        wait_until("recovery shown", &r.array, |d| d.resync_status == "recovery (paused)");
        let d = r.array.detail();
        assert_eq!(d.state, ArrayState::Recovering, "{level}");
        assert_eq!(disk(&d, &name).role, format!("rebuilding {k}"), "{level}");
        assert_eq!(disk(&d, &name).state, DiskState::Sync, "{level}");
        let sb = md_examine(&r.reg, &format!("m{k}")).unwrap().superblock;
        assert_eq!(sb.role(), Some(crate::superblock::DevRole::Active(k as u16)), "{level}");
        assert!(sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET | FeatureMap::RECOVERY_BITMAP), "{level}");
        assert_eq!(sb.events, d.events, "{level}");
        r.array.manage(ManageCmd::StartRebuild).unwrap();
        wait_rebuilt(&r.array);
        let st = r.array.sync_stats();
        let used = r.array.sh.geometry.member_used_sectors(k);
        assert_eq!(st.recovered_sectors - before.recovered_sectors, want, "{level}: {st:?}");
        assert_eq!(st.recovery_skipped_sectors - before.recovery_skipped_sectors, used - want, "{level}");
        let d = r.array.detail();
        assert!(!d.degraded && d.failed_disks == 0, "{level}: {d:?}");
        assert_eq!(disk(&d, &name).role, format!("active {k}"), "{level}");
        let sb = md_examine(&r.reg, &format!("m{k}")).unwrap().superblock;
        assert!(!sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET), "{level}");
        // Every member agrees (mirrors equal, parity and syndrome match).
        assert_eq!(check(&r.array), 0, "{level}");
        r.read_all();
        // Whole again: the bits clear.
        wait_clean_bitmap(&r.array);
        r.check_on_disk();
    }
}

/// A member fails during IO and is removed and added back before the
/// control thread handles the failure: the failure is still reported, and
/// the late message does not mark the device now in the slot faulty.
#[test]
fn a_failure_handled_after_the_device_left_and_came_back_is_still_reported() {
    for (level, layout, disks) in [(Level::Raid1, None, 2), (Level::Raid5, Some(2), 4)] {
        let mut r = bitmap_rig(level, layout, disks, 0);
        fill(&mut r, 5);
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ev = events.clone();
        r.array.monitor(Arc::new(move |e: &MdEvent| ev.lock().unwrap().push(e.clone())));
        let sh = r.array.sh.clone();
        let failed =
            sh.slot(1).and_then(|s| s.device()).map(|d| FailedDevice { id: d.id, name: d.name().into() }).unwrap();
        // What an IO error does, with its message to the control thread
        // still on the way.
        sh.slot(1).unwrap().set_state(SlotState::Faulty);
        sh.bump_generation();
        r.array.manage(ManageCmd::RemoveDisk("f1".into())).unwrap();
        r.array.manage(ManageCmd::AddDisk("f1".into())).unwrap();
        super::control::member_failed(&sh, 1, &failed);
        let ev = events.lock().unwrap().clone();
        assert!(
            ev.iter().any(|e| matches!(e, MdEvent::DeviceFailed { slot: 1, device } if device == "f1")),
            "{level}: {ev:?}"
        );
        wait_rebuilt(&r.array);
        let d = r.array.detail();
        assert!(!d.degraded && d.failed_disks == 0, "{level}: {d:?}");
        assert_eq!(disk(&d, "f1").role, "active 1", "{level}");
        let sb = md_examine(&r.reg, "m1").unwrap().superblock;
        assert_eq!(sb.role(), Some(crate::superblock::DevRole::Active(1)), "{level}");
        assert_eq!(check(&r.array), 0, "{level}");
        r.read_all();
    }
}

#[test]
fn a_member_older_than_the_bitmap_is_recovered_in_full() {
    let mut r = bitmap_rig(Level::Raid1, None, 2, 1);
    fill(&mut r, 3);
    wait_clean_bitmap(&r.array);
    r.array.manage(ManageCmd::SetFaulty("f1".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f1".into())).unwrap();
    r.batch(&[Op::Write { at: 64, blocks: 8, seed: 21 }]);
    // A spare takes the slot in full; whole again, the bits clear and
    // events_cleared moves past f1's events.
    r.array.manage(ManageCmd::AddSpare("f2".into())).unwrap();
    wait_rebuilt(&r.array);
    wait_clean_bitmap(&r.array);
    r.array.manage(ManageCmd::SetFaulty("f2".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f2".into())).unwrap();
    r.batch(&[Op::Write { at: 4000, blocks: 8, seed: 22 }]);
    let err = r.array.manage(ManageCmd::ReAdd("f1".into())).unwrap_err();
    assert!(matches!(err, MdError::NotReAddable { reason: ReAddRefusal::TooOld { .. }, .. }), "{err:?}");
    // add falls back to a new device and a full recovery.
    let before = r.array.sync_stats();
    r.array.manage(ManageCmd::AddDisk("f1".into())).unwrap();
    wait_rebuilt(&r.array);
    let st = r.array.sync_stats();
    let used = r.array.sh.geometry.member_used_sectors(1);
    assert_eq!(st.recovered_sectors - before.recovered_sectors, used);
    assert_eq!(st.recovery_skipped_sectors, before.recovery_skipped_sectors);
    assert_eq!(check(&r.array), 0);
    r.read_all();
    r.check_on_disk();
}

#[test]
fn readd_is_refused_without_a_bitmap_or_for_another_array_or_a_taken_slot() {
    // No bitmap: add recovers in full.
    let mut r = super::tests::rig(Level::Raid5, Some(2), 4, 16, 512);
    r.batch(&[Op::Write { at: 0, blocks: 64, seed: 5 }]);
    r.array.manage(ManageCmd::SetFaulty("f2".into())).unwrap();
    let err = r.array.manage(ManageCmd::ReAdd("f2".into())).unwrap_err();
    assert!(matches!(err, MdError::Busy(_)), "still in the array: {err:?}");
    r.array.manage(ManageCmd::RemoveDisk("f2".into())).unwrap();
    let err = r.array.manage(ManageCmd::ReAdd("f2".into())).unwrap_err();
    assert!(matches!(err, MdError::NotReAddable { reason: ReAddRefusal::NoBitmap, .. }), "{err:?}");
    r.array.manage(ManageCmd::AddDisk("f2".into())).unwrap();
    wait_rebuilt(&r.array);
    assert_eq!(r.array.sync_stats().recovered_sectors, r.array.sh.geometry.member_used_sectors(2));
    r.read_all();
    r.check_on_disk();

    // A device of another array, and a slot a spare already took.
    let r = bitmap_rig(Level::Raid1, None, 2, 3);
    let other = md_create(&r.reg, "other", Level::Raid1, &["f3", "f4"], &MdConfig::default()).unwrap();
    other.stop().unwrap();
    drop(other);
    r.array.manage(ManageCmd::SetFaulty("f1".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f1".into())).unwrap();
    let err = r.array.manage(ManageCmd::ReAdd("f3".into())).unwrap_err();
    assert!(matches!(err, MdError::NotReAddable { reason: ReAddRefusal::OtherArray(_), .. }), "{err:?}");
    r.array.manage(ManageCmd::AddSpare("f2".into())).unwrap();
    wait_until("spare in slot 1", &r.array, |d| disk(d, "f2").role != "spare");
    let err = r.array.manage(ManageCmd::ReAdd("f1".into())).unwrap_err();
    assert!(matches!(err, MdError::NotReAddable { reason: ReAddRefusal::RoleTaken(1), .. }), "{err:?}");
    wait_idle(&r.array);
}

#[test]
fn assembly_takes_a_stale_member_back_through_the_bitmap() {
    for (level, layout, disks) in [(Level::Raid5, Some(2), 4), (Level::Raid10, Some(0x102), 4)] {
        let mut r = bitmap_rig(level, layout, disks, 0);
        fill(&mut r, 7);
        wait_clean_bitmap(&r.array);
        let k = disks - 1;
        r.array.manage(ManageCmd::SetFaulty(format!("f{k}"))).unwrap();
        r.batch(&[Op::Write { at: 24, blocks: 8, seed: 31 }, Op::Write { at: 3000, blocks: 8, seed: 32 }]);
        std::thread::sleep(Duration::from_millis(50));
        let bits = set_bits(&r.array);
        let want = covered(&r.array, k, &bits);
        assert!(want > 0 && bits.len() < 8, "{level}: {bits:?}");
        let Rig { reg, faults, array, ch, model, .. } = r;
        drop(ch);
        array.stop().unwrap();
        drop(array);
        // The stale member's events lag; the bitmap (kept while degraded)
        // covers what it missed.
        let stale = md_examine(&reg, &format!("f{k}")).unwrap().superblock.events;
        assert!(stale < md_examine(&reg, "f0").unwrap().superblock.events);
        let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = md_assemble(&reg, "md0", &refs, &AssembleOptions::default()).unwrap();
        assert!(a.is_running(), "{level}: started without run_degraded");
        wait_rebuilt(&a);
        let st = a.sync_stats();
        assert_eq!(st.recovered_sectors, want, "{level}: {st:?}");
        let d = a.detail();
        assert!(!d.degraded, "{level}: {d:?}");
        assert_eq!(disk(&d, &format!("f{k}")).role, format!("active {k}"));
        assert_eq!(check(&a), 0, "{level}");
        let mut r = rig_for(reg, faults, a, Some(model));
        r.read_all();
        r.check_on_disk();
    }
}

#[test]
fn assembly_leaves_out_a_member_older_than_the_bitmap() {
    let mut r = bitmap_rig(Level::Raid1, None, 2, 1);
    fill(&mut r, 9);
    wait_clean_bitmap(&r.array);
    r.array.manage(ManageCmd::SetFaulty("f1".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f1".into())).unwrap();
    r.array.manage(ManageCmd::AddSpare("f2".into())).unwrap();
    wait_rebuilt(&r.array);
    r.batch(&[Op::Write { at: 100, blocks: 8, seed: 41 }]);
    wait_clean_bitmap(&r.array);
    // The spare leaves too: slot 1 is free, but f1 is older than what the
    // bitmap covers (its bits were cleared while f2 was in).
    r.array.manage(ManageCmd::SetFaulty("f2".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f2".into())).unwrap();
    let Rig { reg, array, ch, .. } = r;
    drop(ch);
    array.stop().unwrap();
    drop(array);
    let opts = AssembleOptions { run_degraded: true, ..AssembleOptions::default() };
    let a = md_assemble(&reg, "md0", &["f0", "f1"], &opts).unwrap();
    let d = a.detail();
    assert!(d.disks.iter().all(|x| x.name != "f1"), "{d:?}");
    assert!(d.degraded);
    assert_eq!(a.sync_stats(), SyncStats::default());
    a.stop().unwrap();
}

#[test]
fn a_stop_during_a_bitmap_recovery_resumes_it_driven_by_the_bitmap() {
    let mut r = bitmap_rig(Level::Raid5, Some(2), 4, 0);
    fill(&mut r, 51);
    wait_clean_bitmap(&r.array);
    r.array.manage(ManageCmd::SetFaulty("f2".into())).unwrap();
    r.array.manage(ManageCmd::RemoveDisk("f2".into())).unwrap();
    r.batch(&[Op::Write { at: 16, blocks: 8, seed: 52 }, Op::Write { at: 5000, blocks: 8, seed: 53 }]);
    std::thread::sleep(Duration::from_millis(50));
    let want = covered(&r.array, 2, &set_bits(&r.array));
    r.array.manage(ManageCmd::StopRebuild).unwrap();
    r.array.manage(ManageCmd::ReAdd("f2".into())).unwrap();
    wait_until("recovery shown", &r.array, |d| d.resync_status == "recovery (paused)");
    let Rig { reg, faults, array, ch, model, .. } = r;
    drop(ch);
    array.stop().unwrap();
    drop(array);
    // Recorded as md records a bitmap-based recovery.
    let sb = md_examine(&reg, "f2").unwrap().superblock;
    assert!(sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET | FeatureMap::RECOVERY_BITMAP));
    assert_eq!(sb.events, md_examine(&reg, "f0").unwrap().superblock.events);
    let a = md_assemble(&reg, "md0", &["f0", "f1", "f2", "f3"], &AssembleOptions::default()).unwrap();
    assert!(!a.is_running(), "a member in recovery counts as missing for the start");
    a.run().unwrap();
    wait_rebuilt(&a);
    assert_eq!(a.sync_stats().recovered_sectors, want);
    assert_eq!(check(&a), 0);
    let mut r = rig_for(reg, faults, a, Some(model));
    r.read_all();
    r.check_on_disk();
}

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// A write at a fraction (per mille) of the array.
        Write { at: u64, blocks: u64, seed: u8 },
        /// Fail and remove a member, then add it back at once (the
        /// recovery runs under the following writes).
        Bounce { member: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u64..1000, 1u64..24, any::<u8>()).prop_map(|(at, blocks, seed)| Step::Write { at, blocks, seed }),
            1 => (0usize..8).prop_map(|member| Step::Bounce { member }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

        /// Writes while members leave and come back through the bitmap:
        /// the array reads as the model, every member agrees, and each
        /// re-add rebuilt no more than the bitmap covered.
        #[test]
        fn readds_under_writes_keep_the_model(level in 0usize..5, steps in proptest::collection::vec(step(), 4..14)) {
            let (level, layout, disks) = readd_levels()[level];
            let mut r = bitmap_rig(level, layout, disks, 0);
            let total = r.blocks();
            for s in &steps {
                match *s {
                    Step::Write { at, blocks, seed } => {
                        let at = (total - blocks) * at / 1000;
                        r.batch(&[Op::Write { at, blocks, seed }]);
                    }
                    Step::Bounce { member } => {
                        let name = format!("f{}", member % disks);
                        wait_rebuilt(&r.array);
                        r.array.manage(ManageCmd::SetFaulty(name.clone())).unwrap();
                        r.array.manage(ManageCmd::RemoveDisk(name.clone())).unwrap();
                        r.batch(&[Op::Write { at: total / 3, blocks: 8, seed: 99 }]);
                        let before = r.array.sync_stats().recovered_sectors;
                        r.array.manage(ManageCmd::ReAdd(name)).unwrap();
                        r.batch(&[Op::Write { at: total / 2, blocks: 8, seed: 98 }]);
                        wait_rebuilt(&r.array);
                        let used = r.array.sh.geometry.member_used_sectors(member % disks);
                        prop_assert!(r.array.sync_stats().recovered_sectors - before < used);
                    }
                }
            }
            wait_rebuilt(&r.array);
            prop_assert_eq!(check(&r.array), 0);
            r.read_all();
            r.check_on_disk();
        }
    }
}
