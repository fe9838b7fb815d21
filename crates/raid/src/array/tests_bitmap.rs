//! The write-intent bitmap on a running array: bits set before writes,
//! cleared lazily, cleared by a clean stop, and after a crash only the
//! regions whose bits are set are resynced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::{DmaBuf, IoRequest, IoStatus, IoVecs, Registry};

use super::meta::SyncIo;
use super::tests::{add_member, wait};
use super::*;
use crate::superblock::bitmap::BITMAP_SB_BYTES;

/// Bitmap chunk: 4 KiB = 8 sectors of sync range per bit.
const BM_SECTORS: u64 = 8;

fn create(level: Level, disks: usize, assume_clean: bool) -> (Arc<Registry>, Arc<MdArray>) {
    let reg = Registry::new();
    for i in 0..disks {
        add_member(&reg, i, 512);
    }
    let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig { chunk_kib: 16, assume_clean, bitmap_chunk_kib: Some(4), ..MdConfig::default() };
    let array = md_create(&reg, "md0", level, &refs, &cfg).unwrap();
    (reg, array)
}

fn write(reg: &Registry, name: &str, lba: u64, blocks: u64, seed: u8) {
    let mut ch = reg.open(name, true).unwrap().channel().unwrap();
    let mut b = DmaBuf::zeroed((blocks * 512) as usize).unwrap();
    b.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = (i as u8).wrapping_mul(31) ^ seed);
    ch.submit(&IoRequest::write(lba, blocks, IoVecs::single(b.iovec()), 1)).unwrap();
    assert_eq!(wait(&mut ch, &[1]), vec![IoStatus::Success]);
}

/// The set bits of the bitmap on member `i` (the malloc bdev under it).
fn disk_bits(reg: &Registry, i: usize) -> Vec<u64> {
    let ex = md_examine(reg, &format!("m{i}")).unwrap();
    let sb = ex.superblock;
    let bm = ex.bitmap.unwrap();
    let layout = bm.layout();
    let mut io = SyncIo::open(&reg.open(&format!("m{i}"), false).unwrap()).unwrap();
    let mut bits = vec![0u8; layout.bit_bytes() as usize];
    let at = sb.super_offset.checked_add_signed(i64::from(sb.bitmap_offset)).unwrap() * 512;
    io.read_at(at + BITMAP_SB_BYTES as u64, &mut bits).unwrap();
    layout.set_bits(&bits).collect()
}

/// Member `i`'s data sectors `[sector, sector + n)`.
fn member_data(reg: &Registry, i: usize, sector: u64, n: u64) -> Vec<u8> {
    let off = md_examine(reg, &format!("m{i}")).unwrap().superblock.data_offset;
    let mut io = SyncIo::open(&reg.open(&format!("m{i}"), false).unwrap()).unwrap();
    let mut b = vec![0u8; (n * 512) as usize];
    io.read_at((off + sector) * 512, &mut b).unwrap();
    b
}

fn corrupt(reg: &Registry, i: usize, sector: u64, n: u64) {
    let off = md_examine(reg, &format!("m{i}")).unwrap().superblock.data_offset;
    let mut io = SyncIo::open(&reg.open(&format!("f{i}"), true).unwrap()).unwrap();
    let junk: Vec<u8> = (0..n * 512).map(|j| (j as u8) ^ 0xa5).collect();
    io.write_at((off + sector) * 512, &junk).unwrap();
}

/// Whether member sectors `[sector, sector + n)` are consistent: mirrors
/// equal (raid1), every member XORs to zero (raid5).
fn consistent(reg: &Registry, level: Level, disks: usize, sector: u64, n: u64) -> bool {
    let blocks: Vec<Vec<u8>> = (0..disks).map(|i| member_data(reg, i, sector, n)).collect();
    match level {
        Level::Raid1 => blocks.iter().all(|b| b == &blocks[0]),
        _ => {
            let mut x = vec![0u8; blocks[0].len()];
            for b in &blocks {
                x.iter_mut().zip(b).for_each(|(a, b)| *a ^= b);
            }
            x.iter().all(|&v| v == 0)
        }
    }
}

fn wait_idle(a: &MdArray) {
    let t0 = Instant::now();
    while a.detail().resync_status != "idle" {
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", a.detail());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn crash_resyncs_only_the_dirty_chunks() {
    // (level, disks, writes as (array lba, blocks), the bits they dirty).
    type Case = (Level, usize, Vec<(u64, u64)>, Vec<u64>);
    let cases: [Case; 2] = [
        // raid5, 16 KiB chunks: lba 0 = stripe 0 rows 0..8 (bit 0); lba 40
        // = chunk 1 rows 8..16 (bit 1); lba 976 = stripe 10 rows 16..24
        // (member sector 336, bit 42).
        (Level::Raid5, 4, vec![(0, 8), (40, 8), (976, 8)], vec![0, 1, 42]),
        // raid1: array sectors are member sectors.
        (Level::Raid1, 2, vec![(0, 8), (1000, 8), (2000, 16)], vec![0, 125, 250, 251]),
    ];
    for (level, disks, writes, bits) in cases {
        let (reg, array) = create(level, disks, true);
        // Bits clear only after an hour: nothing is cleared in this test.
        array.set_bitmap_daemon_sleep(Duration::from_secs(3600));
        assert_eq!(array.detail().bitmap.unwrap().dirty, 0);
        assert_eq!(disk_bits(&reg, 0), Vec::<u64>::new());
        for (i, &(lba, n)) in writes.iter().enumerate() {
            write(&reg, "md0", lba, n, i as u8);
        }
        // The bits reached every member before the writes completed.
        assert_eq!(array.detail().bitmap.unwrap().dirty, bits.len() as u64);
        for i in 0..disks {
            assert_eq!(disk_bits(&reg, i), bits, "{level} member {i}");
        }
        // A partial write interrupted by the crash: member 0 differs from
        // the rest in a dirty chunk, and (as a witness that clean chunks are
        // left alone) in a clean one.
        let dirty_at = bits[bits.len() - 1] * BM_SECTORS;
        let clean_at = 200 * BM_SECTORS;
        array.crash();
        drop(array);
        corrupt(&reg, 0, dirty_at, BM_SECTORS);
        corrupt(&reg, 0, clean_at, BM_SECTORS);
        assert!(!md_examine(&reg, "f0").unwrap().superblock.is_clean());
        let names: Vec<String> = (0..disks).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = md_assemble(&reg, "md0", &refs, &AssembleOptions::default()).unwrap();
        wait_idle(&a);
        let st = a.sync_stats();
        assert_eq!(st.resynced_sectors, bits.len() as u64 * BM_SECTORS, "{level}: {st:?}");
        let total = a.sh.geometry.resync_sectors();
        assert_eq!(st.resynced_sectors + st.skipped_sectors, total, "{level}");
        a.stop().unwrap();
        drop(a);
        for &b in &bits {
            assert!(consistent(&reg, level, disks, b * BM_SECTORS, BM_SECTORS), "{level} bit {b}");
        }
        assert!(!consistent(&reg, level, disks, clean_at, BM_SECTORS), "{level}: a clean chunk was resynced");
        // The clean stop cleared the bitmap and marked the array clean.
        assert!(md_examine(&reg, "f0").unwrap().superblock.is_clean());
        assert_eq!(disk_bits(&reg, 1), Vec::<u64>::new());
    }
}

#[test]
fn idle_bits_clear_lazily_and_a_crash_then_resyncs_nothing() {
    let (reg, array) = create(Level::Raid5, 4, true);
    array.set_bitmap_daemon_sleep(Duration::from_millis(20));
    write(&reg, "md0", 0, 8, 1);
    write(&reg, "md0", 976, 8, 2);
    assert_eq!(disk_bits(&reg, 2), vec![0, 42]);
    let t0 = Instant::now();
    while array.detail().bitmap.unwrap().dirty > 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "bits not cleared");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The daemon wrote the cleared bits to the members.
    let t0 = Instant::now();
    while !disk_bits(&reg, 2).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "bits not written");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Writing again sets a bit again.
    write(&reg, "md0", 40, 8, 3);
    assert_eq!(disk_bits(&reg, 0), vec![1]);
    array.set_bitmap_daemon_sleep(Duration::from_secs(3600));
    array.crash();
    drop(array);
    let a = md_assemble(&reg, "md0", &["f0", "f1", "f2", "f3"], &AssembleOptions::default()).unwrap();
    wait_idle(&a);
    assert_eq!(a.sync_stats().resynced_sectors, BM_SECTORS);
    a.stop().unwrap();
}

#[test]
fn initial_resync_is_driven_by_the_bitmap() {
    let (reg, array) = create(Level::Raid5, 4, false);
    // Every bit starts set: the whole array needs its first resync.
    let bits = array.detail().bitmap.unwrap().bits;
    assert_eq!(disk_bits(&reg, 0).len() as u64, bits);
    wait_idle(&array);
    assert_eq!(array.sync_stats().resynced_sectors, array.sh.geometry.resync_sectors());
    array.stop().unwrap();
    drop(array);
    assert_eq!(disk_bits(&reg, 0), Vec::<u64>::new());
    let a = md_assemble(&reg, "md0", &["f0", "f1", "f2", "f3"], &AssembleOptions::default()).unwrap();
    assert_eq!(a.detail().resync_status, "idle");
    assert_eq!(a.sync_stats(), SyncStats::default());
    a.stop().unwrap();
}

#[test]
fn degraded_arrays_keep_their_bits() {
    let (reg, array) = create(Level::Raid1, 2, true);
    array.set_bitmap_daemon_sleep(Duration::from_millis(10));
    array.manage(ManageCmd::SetFaulty("f1".into())).unwrap();
    write(&reg, "md0", 64, 8, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(array.detail().bitmap.unwrap().dirty, 1);
    array.stop().unwrap();
    drop(array);
    assert_eq!(disk_bits(&reg, 0), vec![8]);
}

#[test]
fn an_interrupted_initial_resync_continues_where_the_bits_say() {
    let (reg, array) = create(Level::Raid5, 4, false);
    let total = array.sh.geometry.resync_sectors();
    array.set_bitmap_daemon_sleep(Duration::from_millis(10));
    // 512 KiB/s: the 4 MiB members take seconds.
    array.manage(ManageCmd::SetSyncSpeed(512)).unwrap();
    let t0 = Instant::now();
    while disk_bits(&reg, 0).len() as u64 > total / BM_SECTORS * 3 / 4 {
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", array.detail());
        std::thread::sleep(Duration::from_millis(10));
    }
    array.crash();
    let first = array.sync_stats().resynced_sectors;
    drop(array);
    let left = disk_bits(&reg, 0).len() as u64;
    assert!(left < total / BM_SECTORS);
    let a = md_assemble(&reg, "md0", &["f0", "f1", "f2", "f3"], &AssembleOptions::default()).unwrap();
    wait_idle(&a);
    let second = a.sync_stats().resynced_sectors;
    assert_eq!(second, left * BM_SECTORS);
    assert!(first + second >= total, "{first} + {second} < {total}");
    a.stop().unwrap();
    drop(a);
    assert!(consistent(&reg, Level::Raid5, 4, 0, total));
}
