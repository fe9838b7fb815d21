//! Writes the seed inputs of the lvol fuzz targets under `seeds/<target>/`:
//! `cargo run --example gen_seeds` from this directory.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bdev::Registry;
use lvol::crash::CrashDisk;
use lvol::format::{Reader, SuperBlock, Writer, MD_BLOCK};
use lvol::record::{KeyRef, Record, VolDesc, ENT_ENC, VOL_THIN};
use lvol::{CreateOpts, Store};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).expect("seed dir");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    // A real store image: its super block, its checkpoint body and its journal records.
    let disk = Arc::new(CrashDisk::plain("seed", 512, vec![0u8; 4 << 20]).expect("disk"));
    let reg = Registry::new();
    reg.register(disk.clone()).expect("register");
    let opts = CreateOpts { cluster_size: 64 << 10, journal_size: 64 << 10, max_volumes: 8 };
    let store = Store::create(reg.open("seed", true).expect("open"), "lvs", &opts).expect("create");
    store.create_volume("a", 1 << 20, false).expect("volume");
    store.snapshot("a", "s").expect("snapshot");
    store.close(true).expect("close");
    let img = disk.log().lock().expect("log").current.clone();
    let sb = SuperBlock::parse(&img).expect("super block");
    let size = (img.len() as u64).to_le_bytes();
    put("superblock_parse", "store", &[&size[..], &img[..MD_BLOCK as usize]].concat());
    put("superblock_parse", "small_base", &[&(1u64 << 20).to_le_bytes()[..], &img[..512]].concat());

    let off = sb.ckpt_offset[(sb.active_ckpt.get() % 2) as usize].get() as usize;
    let ck = &img[off..off + sb.ckpt_len.get() as usize];
    let body_len = u64::from_le_bytes(ck[40..48].try_into().expect("8 bytes")) as usize;
    let body = &ck[72..72 + body_len];
    // Check the body decodes, then keep it as a seed.
    let mut r = Reader::new(body, "seed");
    while r.remaining() > 0 {
        Record::decode(&mut r).expect("checkpoint record");
    }
    put("record_decode", "checkpoint", body);

    let desc = VolDesc {
        id: 3,
        uuid: [7; 16],
        name: "vol".into(),
        flags: VOL_THIN,
        size_blocks: 1000,
        parent: 1,
        parent_limit: 900,
        origin: 2,
        comp_level: 2,
        enc: Some(KeyRef { nonce: [1; 16], check: [2; 16] }),
        xattrs: vec![("k".into(), b"v".to_vec())],
    };
    let recs = [
        Record::CreateVolume(desc.clone()),
        Record::Rename { id: 4, name: "x".into() },
        Record::SetXattr { id: 4, key: "a".into(), value: Some(vec![1, 2]) },
        Record::Snapshot { origin: 2, snap: desc },
        Record::SetCodec { id: 2, comp_level: 1, enc: None },
        Record::AllocRuns { id: 2, first_lc: 5, flags: ENT_ENC, valid: u64::MAX, runs: vec![(1, 2), (9, 1)] },
        Record::Remap { id: 2, lc: 1, pc: 5, flags: 0, valid: 1 },
        Record::ChunkWrite { id: 2, chunk: 8, entry: (1 << 62) | (4 << 44) | 10 },
        Record::Release { id: 2, lc: 3, pc: 9, mask: 0b110 },
        Record::PutClusters { id: 2, entries: vec![(0, 1, 2)] },
        Record::PutChunks { id: 2, entries: vec![(0, 1)] },
        Record::PutBitmap { nbits: 9, bytes: vec![0xff, 1] },
    ];
    let mut w = Writer::default();
    for r in &recs {
        r.encode(&mut w);
    }
    put("record_decode", "every_kind", &w.buf);

    put("store_open", "pristine", &[0]);
    put("store_open", "fixed_crcs", &[1]);
    // Flip a byte of the journal's first transaction (block 2), with and without crc fixup.
    put("store_open", "journal_flip", &[1, 0x40, 0x20, 0, 1, 0x01]);
    put("store_open", "sb_flip", &[0, 0x30, 0, 0, 1, 0x80]);
}
