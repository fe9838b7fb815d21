//! Volumes as bdevs: thin and thick provisioning, snapshots, clones, resize, reload.

mod common;
use common::*;

use bdev::IoStatus;
use lvol::check;

#[test]
fn thin_volume_reads_zeroes_then_what_was_written() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 1 << 20);
    let v = lvol.lvol_create("lvs", "v", 8, true).unwrap();
    assert_eq!(v.allocated_clusters, 0);
    assert_eq!(v.size_bytes, 8 * MIB);
    let mut ch = chan(&reg, "lvs/v");
    assert!(read(&mut ch, 0, 65536).iter().all(|&b| b == 0));
    // Partial granule (granule is 16 KiB here), across a cluster boundary, and a big one.
    let a = pattern(512, 1);
    assert_eq!(write(&mut ch, 3, &a), IoStatus::Success);
    let b = pattern(64 * 1024, 2);
    let lba_b = (MIB / 512) - 16;
    assert_eq!(write(&mut ch, lba_b, &b), IoStatus::Success);
    let got = read(&mut ch, 0, 4096);
    assert_eq!(&got[1536..2048], &a[..]);
    assert!(got[..1536].iter().all(|&x| x == 0) && got[2048..].iter().all(|&x| x == 0));
    assert_eq!(read(&mut ch, lba_b, b.len()), b);
    let info = lvol.store("lvs").unwrap().volume("v").unwrap();
    assert_eq!(info.allocated_clusters, 2);
    check(&lvol.store("lvs").unwrap()).unwrap();
    drop(ch);
    let (reg2, l2) = reload(&lvol, &disk);
    let mut ch = chan(&reg2, "lvs/v");
    assert_eq!(&read(&mut ch, 0, 4096)[1536..2048], &a[..]);
    assert_eq!(read(&mut ch, lba_b, b.len()), b);
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn thick_volume_allocates_everything_up_front() {
    let (reg, lvol, _disk) = setup(64 * MIB, 4096, 1 << 20);
    let before = lvol.stores()[0].free_clusters;
    let v = lvol.lvol_create("lvs", "t", 10, false).unwrap();
    assert_eq!(v.allocated_clusters, 10);
    assert_eq!(lvol.stores()[0].free_clusters, before - 10);
    let mut ch = chan(&reg, "lvs/t");
    assert!(read(&mut ch, 0, 8192).iter().all(|&b| b == 0));
    let d = pattern(4096, 5);
    assert_eq!(write(&mut ch, 7, &d), IoStatus::Success);
    assert_eq!(read(&mut ch, 7, 4096), d);
    check(&lvol.store("lvs").unwrap()).unwrap();
}

#[test]
fn snapshot_freezes_contents_and_clone_diverges() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let a = pattern(8192, 1);
    write(&mut ch, 0, &a);
    lvol.snapshot_create("lvs/v", "s1").unwrap();
    let b = pattern(4096, 2);
    write(&mut ch, 4, &b);
    let mut sc = reg.open("lvs/s1", false).unwrap().channel().unwrap();
    assert_eq!(read(&mut sc, 0, 8192), a, "snapshot keeps the old contents");
    let mut expect = a.clone();
    expect[2048..6144].copy_from_slice(&b);
    assert_eq!(read(&mut ch, 0, 8192), expect, "origin sees its new write over the snapshot");
    lvol.clone_create("lvs/s1", "c1").unwrap();
    let mut cc = chan(&reg, "lvs/c1");
    assert_eq!(read(&mut cc, 0, 8192), a);
    let c = pattern(512, 3);
    write(&mut cc, 1, &c);
    let mut ce = a.clone();
    ce[512..1024].copy_from_slice(&c);
    assert_eq!(read(&mut cc, 0, 8192), ce);
    assert_eq!(read(&mut sc, 0, 8192), a);
    assert_eq!(read(&mut ch, 0, 8192), expect);
    // Snapshots are read-only.
    let mut sw = reg.open("lvs/s1", true).unwrap().channel().unwrap();
    assert_eq!(write(&mut sw, 0, &c), IoStatus::Invalid);
    // Two dependents: destroy is refused.
    let err = lvol.snapshot_destroy("lvs/s1").unwrap_err();
    assert!(err.to_string().contains("2 dependent"), "{err}");
    check(&lvol.store("lvs").unwrap()).unwrap();
    drop((ch, sc, cc, sw));
    let (reg2, l2) = reload(&lvol, &disk);
    let mut cc = chan(&reg2, "lvs/c1");
    assert_eq!(read(&mut cc, 0, 8192), ce);
    let mut ch = chan(&reg2, "lvs/v");
    assert_eq!(read(&mut ch, 0, 8192), expect);
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn write_zeroes_and_unmap_read_back_as_zeroes() {
    let (reg, lvol, _disk) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let d = pattern(3 * MIB as usize, 8);
    write(&mut ch, 0, &d);
    lvol.snapshot_create("lvs/v", "s").unwrap();
    lvol.clone_create("lvs/s", "c").unwrap();
    let mut cc = chan(&reg, "lvs/c");
    // Unaligned ranges over the parent's data, across a cluster boundary, bigger than a stage.
    for (c, ty, lba, n) in
        [(&mut ch, bdev::IoType::WriteZeroes, 7u64, 900u64), (&mut cc, bdev::IoType::Unmap, 1800, 2000)]
    {
        assert_eq!(run(c, bdev::IoRequest::no_data(ty, lba, n, 9)), IoStatus::Success);
        let got = read(c, 0, d.len());
        let (a, b) = ((lba * 512) as usize, ((lba + n) * 512) as usize);
        assert_eq!(&got[..a], &d[..a]);
        assert!(got[a..b].iter().all(|&x| x == 0));
        assert_eq!(&got[b..], &d[b..]);
    }
    let mut sc = reg.open("lvs/s", false).unwrap().channel().unwrap();
    assert_eq!(read(&mut sc, 0, d.len()), d, "the snapshot is untouched");
    check(&lvol.store("lvs").unwrap()).unwrap();
}
