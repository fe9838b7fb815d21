//! Store and volume features through the module API: space accounting and NoSpace, resize,
//! restore, snapshot destroy rules, inflate and decouple, rename, examine by name and UUID,
//! compression, encryption, and the errors the config layer relies on.

mod common;
use common::*;

use bdev::{IoStatus, Registry};
use lvol::{check, Lvol, LvolError};
use std::sync::Arc;

const KEY: [u8; 64] = {
    let mut k = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        k[i] = (i as u8) ^ 0x5a;
        i += 1;
    }
    k
};

#[test]
fn thin_volume_out_of_space_fails_with_no_space_and_recovers() {
    let (reg, lvol, _d) = setup(16 * MIB, 512, 1 << 20);
    let free = lvol.stores()[0].free_clusters;
    lvol.lvol_create("lvs", "big", 64, true).unwrap();
    lvol.lvol_create("lvs", "other", 4, true).unwrap();
    let mut ch = chan(&reg, "lvs/big");
    let mut oc = chan(&reg, "lvs/other");
    let keep = pattern(4096, 9);
    assert_eq!(write(&mut oc, 0, &keep), IoStatus::Success);
    let data = pattern(4096, 1);
    let mut written = 0;
    let mut status = IoStatus::Success;
    for c in 0..64u64 {
        status = write(&mut ch, c * 2048, &data);
        if status != IoStatus::Success {
            break;
        }
        written += 1;
    }
    assert_eq!(status, IoStatus::NoSpace);
    assert_eq!(written, free - 1, "every free cluster was used (one went to 'other')");
    assert_eq!(lvol.stores()[0].free_clusters, 0);
    // Nothing corrupted.
    for c in 0..written {
        assert_eq!(read(&mut ch, c * 2048, 4096), data);
    }
    assert_eq!(read(&mut oc, 0, 4096), keep);
    check(&lvol.store("lvs").unwrap()).unwrap();
    // Free space and write again.
    drop(oc);
    lvol.lvol_destroy("lvs/other").unwrap();
    assert_eq!(write(&mut ch, written * 2048, &data), IoStatus::Success);
    assert_eq!(read(&mut ch, written * 2048, 4096), data);
    check(&lvol.store("lvs").unwrap()).unwrap();
}

#[test]
fn resize_grows_and_shrinks_freeing_clusters() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 4, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let d = pattern(MIB as usize, 3);
    for c in 0..4 {
        write(&mut ch, c * 2048, &d);
    }
    let free0 = lvol.stores()[0].free_clusters;
    drop(ch);
    let v = lvol.lvol_resize("lvs/v", 2).unwrap();
    assert_eq!(v.size_bytes, 2 * MIB);
    assert_eq!(v.allocated_clusters, 2);
    assert_eq!(lvol.stores()[0].free_clusters, free0 + 2);
    let v = lvol.lvol_resize("lvs/v", 6).unwrap();
    assert_eq!(v.size_bytes, 6 * MIB);
    let mut ch = chan(&reg, "lvs/v");
    assert_eq!(ch.num_blocks(), 6 * 2048);
    assert_eq!(read(&mut ch, 0, MIB as usize), d);
    assert!(read(&mut ch, 2 * 2048, MIB as usize).iter().all(|&b| b == 0), "regrown space reads zeroes");
    // Thick resize allocates.
    lvol.lvol_create("lvs", "t", 2, false).unwrap();
    assert_eq!(lvol.lvol_resize("lvs/t", 5).unwrap().allocated_clusters, 5);
    check(&lvol.store("lvs").unwrap()).unwrap();
    drop(ch);
    let (reg2, l2) = reload(&lvol, &disk);
    assert_eq!(l2.store("lvs").unwrap().volume("v").unwrap().size_bytes, 6 * MIB);
    let mut ch = chan(&reg2, "lvs/v");
    assert_eq!(read(&mut ch, 2047, 512), d[MIB as usize - 512..].to_vec());
}

#[test]
fn shrinking_a_clone_hides_the_parent_past_the_new_end() {
    let (reg, lvol, _d) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 2, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let d = pattern(2 * MIB as usize, 4);
    write(&mut ch, 0, &d);
    drop(ch);
    lvol.snapshot_create("lvs/v", "s").unwrap();
    lvol.lvol_resize("lvs/v", 1).unwrap();
    lvol.lvol_resize("lvs/v", 2).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    assert_eq!(read(&mut ch, 0, MIB as usize), d[..MIB as usize].to_vec());
    assert!(read(&mut ch, 2048, MIB as usize).iter().all(|&b| b == 0));
}

#[test]
fn restore_reverts_the_origin_and_destroy_merges_into_a_single_child() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 3, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let a = pattern(3 * MIB as usize, 1);
    write(&mut ch, 0, &a);
    drop(ch);
    lvol.snapshot_create("lvs/v", "s1").unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let b = pattern(512, 2);
    write(&mut ch, 100, &b);
    drop(ch);
    lvol.snapshot_restore("lvs/s1").unwrap();
    let mut ch = chan(&reg, "lvs/v");
    assert_eq!(read(&mut ch, 0, a.len()), a, "restored");
    // Overwrite part of a granule and part of a cluster, then merge the snapshot into v.
    let c = pattern(8192, 3);
    write(&mut ch, 2048 + 5, &c);
    drop(ch);
    let mut expect = a.clone();
    expect[(2048 + 5) * 512..(2048 + 5) * 512 + 8192].copy_from_slice(&c);
    let used = lvol.stores()[0].free_clusters;
    lvol.snapshot_destroy("lvs/s1").unwrap();
    let v = lvol.store("lvs").unwrap().volume("v").unwrap();
    assert_eq!(v.parent, None);
    assert_eq!(v.allocated_clusters, 3);
    assert_eq!(lvol.stores()[0].free_clusters, used + 1, "the overwritten cluster of the snapshot was freed");
    let mut ch = chan(&reg, "lvs/v");
    assert_eq!(read(&mut ch, 0, expect.len()), expect);
    check(&lvol.store("lvs").unwrap()).unwrap();
    drop(ch);
    let (reg2, l2) = reload(&lvol, &disk);
    let mut ch = chan(&reg2, "lvs/v");
    assert_eq!(read(&mut ch, 0, expect.len()), expect);
    assert!(reg2.lookup("lvs/s1").is_none());
    check(&l2.store("lvs").unwrap()).unwrap();
    // A snapshot without dependents is simply deleted; one with two is refused.
    l2.snapshot_create("lvs/v", "s2").unwrap();
    l2.clone_create("lvs/s2", "c").unwrap();
    assert!(matches!(l2.snapshot_destroy("lvs/s2"), Err(LvolError::HasDependents { .. })));
    assert!(matches!(l2.lvol_destroy("lvs/s2"), Err(LvolError::HasDependents { .. })));
    l2.lvol_destroy("lvs/c").unwrap();
    l2.lvol_destroy("lvs/v").unwrap();
    l2.snapshot_destroy("lvs/s2").unwrap();
    assert!(l2.store("lvs").unwrap().volumes().is_empty());
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn inflate_and_decouple_cut_dependencies() {
    let (reg, lvol, _d) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 2, true).unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let a = pattern(MIB as usize, 1);
    write(&mut ch, 0, &a);
    drop(ch);
    lvol.snapshot_create("lvs/v", "s1").unwrap();
    let mut ch = chan(&reg, "lvs/v");
    let b = pattern(4096, 2);
    write(&mut ch, 2048, &b);
    drop(ch);
    lvol.snapshot_create("lvs/v", "s2").unwrap();
    lvol.clone_create("lvs/s2", "c").unwrap();
    let mut expect = vec![0u8; 2 * MIB as usize];
    expect[..a.len()].copy_from_slice(&a);
    expect[MIB as usize..MIB as usize + 4096].copy_from_slice(&b);
    // Decouple c from s2: it depends on s1 afterwards and owns s2's data.
    let v = lvol.lvol_decouple_parent("lvs/c").unwrap();
    assert_eq!(v.parent.as_deref(), Some("s1"));
    assert_eq!(v.allocated_clusters, 1);
    let mut cc = chan(&reg, "lvs/c");
    assert_eq!(read(&mut cc, 0, expect.len()), expect);
    // Inflate: no parent, every cluster allocated.
    let v = lvol.lvol_inflate("lvs/c").unwrap();
    assert_eq!(v.parent, None);
    assert_eq!(v.allocated_clusters, 2);
    assert_eq!(read(&mut cc, 0, expect.len()), expect);
    drop(cc);
    assert!(lvol.store("lvs").unwrap().volume("s2").unwrap().children == vec!["v".to_string()]);
    check(&lvol.store("lvs").unwrap()).unwrap();
}

#[test]
fn rename_examine_by_name_and_uuid_and_config_errors() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 1 << 20);
    let v = lvol.lvol_create("lvs", "v", 1, true).unwrap();
    lvol.lvol_rename("lvs/v", "w").unwrap();
    assert!(reg.lookup("lvs/v").is_none());
    assert!(reg.lookup("lvs/w").is_some());
    assert!(reg.lookup(&v.uuid.to_string()).is_some(), "alias by volume uuid");
    let uuid = lvol.stores()[0].uuid;
    // Errors the config layer reports.
    assert!(matches!(lvol.lvol_create("nope", "x", 1, true), Err(LvolError::StoreNotFound(_))));
    assert!(matches!(lvol.lvol_create("lvs", "w", 1, true), Err(LvolError::Duplicate { .. })));
    assert!(matches!(lvol.lvol_create("lvs", "x", 128, false), Err(LvolError::NoSpace { .. })));
    assert!(matches!(lvol.lvol_create("lvs", "bad/name", 1, true), Err(LvolError::BadName { .. })));
    assert!(matches!(lvol.snapshot_create("lvs/nope", "s"), Err(LvolError::VolumeNotFound { .. })));
    assert!(matches!(lvol.clone_create("lvs/w", "c"), Err(LvolError::NotSnapshot(_))));
    assert!(matches!(lvol.snapshot_create("lvsw", "s"), Err(LvolError::BadPath(_))));
    assert!(matches!(lvol.lvs_create("m0", "again", 0), Err(LvolError::Bdev(_))), "base is claimed");
    assert!(matches!(lvol.lvs_create("m0", "lvs", 0), Err(LvolError::Duplicate { .. })));
    assert!(lvol.lvs_create("m0", "x", 3000).is_err());
    let msg = lvol.lvol_create("lvs", "x", 128, false).unwrap_err().to_string();
    assert!(msg.contains("not enough space"), "{msg}");
    let (reg2, l2) = reload(&lvol, &disk);
    assert!(l2.store(&uuid.to_string()).is_ok(), "store found by uuid");
    assert!(reg2.lookup("lvs/w").is_some(), "examine registered the volumes");
    l2.lvs_destroy("lvs").unwrap();
    assert!(reg2.lookup("lvs/w").is_none());
    let reg3 = Registry::new();
    let l3 = Lvol::new(&reg3);
    reg3.register(disk.clone()).unwrap();
    assert!(l3.stores().is_empty(), "a destroyed store is not found again");
}

#[test]
fn compression_stores_less_and_reads_back_through_overwrites() {
    let (reg, lvol, disk) = setup(64 * MIB, 512, 4 << 20);
    lvol.lvol_create("lvs", "z", 8, true).unwrap();
    lvol.compression_enable("lvs/z", 6).unwrap();
    let mut ch = chan(&reg, "lvs/z");
    let text: Vec<u8> =
        b"xbdev lvol compresses granules with lz4; ".iter().copied().cycle().take(4 * MIB as usize).collect();
    write(&mut ch, 0, &text);
    // Overwrite inside a compressed granule: neighbours must survive.
    let p = pattern(1024, 5);
    write(&mut ch, 300, &p);
    let mut expect = text.clone();
    expect[300 * 512..300 * 512 + 1024].copy_from_slice(&p);
    assert_eq!(read(&mut ch, 0, expect.len()), expect);
    let v = lvol.store("lvs").unwrap().volume("z").unwrap();
    assert!(v.compression_ratio() > 4.0, "ratio {}", v.compression_ratio());
    assert_eq!(v.allocated_clusters, 0, "all data is in packed clusters");
    // Disable: new writes go to clusters, old chunks still read.
    lvol.compression_disable("lvs/z").unwrap();
    write(&mut ch, 8, &p);
    expect[8 * 512..8 * 512 + 1024].copy_from_slice(&p);
    assert_eq!(read(&mut ch, 0, expect.len()), expect);
    check(&lvol.store("lvs").unwrap()).unwrap();
    // Snapshot and clone of a compressed volume.
    drop(ch);
    lvol.snapshot_create("lvs/z", "zs").unwrap();
    lvol.clone_create("lvs/zs", "zc").unwrap();
    let mut cc = chan(&reg, "lvs/zc");
    assert_eq!(read(&mut cc, 0, expect.len()), expect);
    drop(cc);
    let (reg2, l2) = reload(&lvol, &disk);
    let mut ch = chan(&reg2, "lvs/z");
    assert_eq!(read(&mut ch, 0, expect.len()), expect);
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn encryption_keeps_keys_out_of_the_store_and_locks_after_restart() {
    let (reg, lvol, disk) = setup(32 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "e", 2, true).unwrap();
    let mut ch = chan(&reg, "lvs/e");
    let plain: Vec<u8> = b"SECRET-PLAINTEXT".iter().copied().cycle().take(MIB as usize).collect();
    write(&mut ch, 0, &plain);
    drop(ch);
    assert!(matches!(lvol.encryption_enable("lvs/e", &[1u8; 32]), Err(LvolError::BadKey(64))));
    let v = lvol.encryption_enable("lvs/e", &KEY).unwrap();
    assert!(v.encrypted && v.key_ref.as_deref().is_some_and(|k| k.starts_with("kcv:")));
    let mut ch = chan(&reg, "lvs/e");
    assert_eq!(read(&mut ch, 0, plain.len()), plain, "converted data reads back");
    let more = pattern(3000 / 512 * 512, 7);
    write(&mut ch, 3000, &more);
    drop(ch);
    lvol.snapshot_create("lvs/e", "es").unwrap();
    lvol.clone_create("lvs/es", "ec").unwrap();
    lvol.lvs_unload("lvs").unwrap();
    // Neither the key nor the plaintext is anywhere on the disk.
    let mut dc = reg.open("m0", false).unwrap().channel().unwrap();
    let raw = read(&mut dc, 0, 32 * MIB as usize);
    let find = |needle: &[u8]| {
        (0..raw.len().saturating_sub(needle.len())).any(|i| raw[i] == needle[0] && raw[i..i + needle.len()] == *needle)
    };
    assert!(!find(&KEY[..32]) && !find(&KEY[32..]), "key bytes on disk");
    assert!(!find(b"SECRET-PLAINTEXT"), "plaintext on disk");
    drop(dc);
    let reg2 = Registry::new();
    let l2 = Lvol::new(&reg2);
    reg2.register(disk.clone()).unwrap();
    assert!(reg2.lookup("lvs/e").is_none(), "locked volumes are not registered");
    assert!(l2.store("lvs").unwrap().volume("e").unwrap().locked);
    let mut wrong = KEY;
    wrong[0] ^= 1;
    assert!(matches!(l2.encryption_enable("lvs/e", &wrong), Err(LvolError::WrongKey(_))));
    l2.encryption_enable("lvs/e", &KEY).unwrap();
    for name in ["lvs/e", "lvs/es", "lvs/ec"] {
        let mut ch = reg2.open(name, false).unwrap().channel().unwrap();
        assert_eq!(read(&mut ch, 0, 4096), plain[..4096].to_vec(), "{name}");
    }
    l2.encryption_disable("lvs/e").unwrap();
    let mut ch = chan(&reg2, "lvs/e");
    assert_eq!(read(&mut ch, 3000, more.len()), more);
    check(&l2.store("lvs").unwrap()).unwrap();
}

#[test]
fn snapshot_during_concurrent_io_on_another_thread() {
    let (reg, lvol, _d) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "v", 8, true).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = reg.clone();
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut ch = chan(&r2, "lvs/v");
        let mut i = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let d = vec![(i % 251) as u8; 4096];
            assert_eq!(write(&mut ch, (i * 8) % 16384, &d), IoStatus::Success);
            i += 1;
        }
        i
    });
    for k in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        lvol.snapshot_create("lvs/v", &format!("s{k}")).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = t.join().unwrap();
    assert!(n > 0);
    check(&lvol.store("lvs").unwrap()).unwrap();
}

#[test]
fn save_config_lists_stores_volumes_snapshots_and_clones_without_keys() {
    let (_reg, lvol, _d) = setup(64 * MIB, 512, 1 << 20);
    lvol.lvol_create("lvs", "data", 4, true).unwrap();
    lvol.lvol_create("lvs", "log", 2, false).unwrap();
    lvol.snapshot_create("lvs/data", "snap1").unwrap();
    lvol.clone_create("lvs/snap1", "clone1").unwrap();
    lvol.encryption_enable("lvs/log", &KEY).unwrap();
    let c = lvol.save_config();
    assert_eq!(c.lvol_stores.len(), 1);
    assert_eq!(c.lvol_stores[0].base_bdev, "m0");
    assert_eq!(c.lvol_stores[0].cluster_size, 1 << 20);
    let names: Vec<&str> = c.lvol_volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["data", "log"]);
    assert_eq!(c.snapshots, vec![lvol::module::SnapshotConfig { source_vol: "lvs/data".into(), name: "snap1".into() }]);
    assert_eq!(c.clones, vec![lvol::module::CloneConfig { source_snap: "lvs/snap1".into(), name: "clone1".into() }]);
    let dump = format!("{c:?}");
    assert!(dump.contains("kcv:"));
    let hex: String = KEY[..16].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!dump.contains(&hex), "key bytes in the config");
}
