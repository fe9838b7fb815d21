//! Regression tests for inputs the fuzz targets (`fuzz/`) found: damaged store images must load
//! or fail with a typed error, never abort or panic.

use std::sync::Arc;

use bdev::Registry;
use lvol::crash::CrashDisk;
use lvol::format::{crc_with_hole, SuperBlock, TXN_CRC_AT, TXN_MAGIC};
use lvol::{CreateOpts, Store};

/// A store image whose last change (creating volume `a`) is only in the journal.
fn image_with_journaled_volume() -> Vec<u8> {
    let disk = Arc::new(CrashDisk::plain("d", 512, vec![0u8; 4 << 20]).unwrap());
    let reg = Registry::new();
    reg.register(disk.clone()).unwrap();
    let opts = CreateOpts { cluster_size: 64 << 10, journal_size: 64 << 10, max_volumes: 8 };
    let store = Store::create(reg.open("d", true).unwrap(), "lvs", &opts).unwrap();
    store.create_volume("a", 1 << 20, true).unwrap();
    store.close(false).unwrap();
    let img = disk.log().lock().unwrap().current.clone();
    img
}

fn load(img: Vec<u8>) -> Result<Arc<Store>, lvol::LvolError> {
    let disk = Arc::new(CrashDisk::plain("img", 512, img).unwrap());
    let reg = Registry::new();
    reg.register(disk).unwrap();
    Store::load(reg.open("img", true).unwrap())
}

#[test]
fn journal_record_count_larger_than_its_body_ends_replay_without_allocating_it() {
    let mut img = image_with_journaled_volume();
    let sb = SuperBlock::parse(&img).unwrap();
    let at = (sb.journal_offset.get() + sb.journal_tail.get()) as usize;
    assert_eq!(img[at..at + 4], TXN_MAGIC, "the volume's transaction is at the journal tail");
    // Unchanged, the journal replays the volume.
    let s = load(img.clone()).unwrap();
    assert!(s.volume("a").is_ok());
    s.close(false).unwrap();
    // nrecords (bytes 32..36 of the header) claims 4 G records, with a valid crc: the
    // transaction is damage, replay ends before it (it used to size a ~400 GB allocation).
    img[at + 32..at + 36].copy_from_slice(&u32::MAX.to_le_bytes());
    let body = u32::from_le_bytes(img[at + 36..at + 40].try_into().unwrap()) as usize;
    let crc = crc_with_hole(&img[at..at + 64 + body], TXN_CRC_AT);
    img[at + TXN_CRC_AT..at + TXN_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    let s = load(img).unwrap();
    assert!(s.volume("a").is_err(), "the damaged transaction is not replayed");
    s.close(false).unwrap();
}

#[test]
fn store_name_with_nuls_is_a_load_error_not_a_panic() {
    let mut img = image_with_journaled_volume();
    for copy in 0..2 {
        let at = copy * 4096;
        let Ok(mut sb) = SuperBlock::parse(&img[at..]) else { continue };
        // "lvs" followed by NULs: naming the metadata thread after it used to panic.
        sb.name_len = 10.into();
        img[at..at + 4096].copy_from_slice(&sb.to_block());
    }
    match load(img) {
        Ok(_) => panic!("a store with a damaged name loaded"),
        Err(e) => assert!(format!("{e:?}").contains("store name"), "{e:?}"),
    }
}
