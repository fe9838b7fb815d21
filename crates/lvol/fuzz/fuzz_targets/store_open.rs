//! Fuzzes loading a volume store from a damaged image: `Store::load` on a disk whose metadata
//! (super blocks, journal, checkpoints) was patched by the input must give a store or a typed
//! `LvolError`, never a panic, an abort (huge allocation) or a hang (run with `-timeout`).
//! A store that loads also passes or fails `lvol::check` with a typed error and closes.
//!
//! The image is a freshly formatted store holding a thin volume, a snapshot, a clone and an
//! xattr, with its last records still in the journal (not checkpointed), so loading replays.
//! Input: byte 0 holds flags (bit 0: after patching, fix up the transaction, checkpoint and
//! super block checksums, so the parser behind them is reached); then patches of
//! `offset (3 bytes LE, modulo the metadata size), length (1 byte), bytes` XORed into the
//! metadata area (everything before the first data cluster).

#![no_main]

use std::sync::{Arc, OnceLock};

use bdev::Registry;
use libfuzzer_sys::fuzz_target;
use lvol::crash::CrashDisk;
use lvol::format::{crc_with_hole, SuperBlock, MD_BLOCK, TXN_CRC_AT, TXN_MAGIC};
use lvol::{CreateOpts, Store};

const BS: u32 = 512;
const DISK: usize = 4 << 20;

/// The pristine image and its metadata size (the data offset).
fn image() -> &'static (Vec<u8>, usize) {
    static IMG: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    IMG.get_or_init(|| {
        let disk = Arc::new(CrashDisk::plain("seed", BS, vec![0u8; DISK]).expect("disk"));
        let reg = Registry::new();
        reg.register(disk.clone()).expect("register");
        let opts = CreateOpts { cluster_size: 64 << 10, journal_size: 64 << 10, max_volumes: 8 };
        let store = Store::create(reg.open("seed", true).expect("open"), "lvs", &opts).expect("create");
        store.create_volume("a", 1 << 20, true).expect("volume");
        store.set_xattr("a", "k", Some(b"v")).expect("xattr");
        store.snapshot("a", "s").expect("snapshot");
        store.clone_volume("s", "c").expect("clone");
        store.close(false).expect("close");
        drop(store);
        let img = disk.log().lock().expect("log").current.clone();
        let sb = SuperBlock::parse(&img).expect("super block");
        let md = sb.data_offset.get() as usize;
        (img, md)
    })
}

/// Recompute every checksum a patch may have broken: journal transactions, the current
/// checkpoint's crc in both super blocks, then the super blocks' own crcs.
fn fix_crcs(img: &mut [u8]) {
    for copy in 0..2 {
        let at = copy * MD_BLOCK as usize;
        let Some(raw) = img.get(at..at + MD_BLOCK as usize) else {
            return;
        };
        // Make the block parse whatever its crc was, to read its fields.
        let n = core::mem::size_of::<SuperBlock>();
        let mut blk = raw.to_vec();
        let crc = crc_with_hole(&blk[..n], 12);
        blk[12..16].copy_from_slice(&crc.to_le_bytes());
        let Ok(mut sb) = SuperBlock::parse(&blk) else {
            continue;
        };
        if copy == 0 {
            let (jo, js) = (sb.journal_offset.get(), sb.journal_size.get());
            let mut pos = jo;
            while pos.saturating_add(MD_BLOCK) <= jo.saturating_add(js) && pos + MD_BLOCK <= img.len() as u64 {
                let p = pos as usize;
                if img[p..p + 4] == TXN_MAGIC {
                    let body = u32::from_le_bytes([img[p + 36], img[p + 37], img[p + 38], img[p + 39]]) as usize;
                    if let Some(signed) = img.get(p..p.saturating_add(64).saturating_add(body)) {
                        let c = crc_with_hole(signed, TXN_CRC_AT);
                        img[p + TXN_CRC_AT..p + TXN_CRC_AT + 4].copy_from_slice(&c.to_le_bytes());
                    }
                }
                pos += MD_BLOCK;
            }
        }
        let off = sb.ckpt_offset[(sb.active_ckpt.get() % 2) as usize].get() as usize;
        let len = sb.ckpt_len.get() as usize;
        if let Some(ck) = img.get(off..off.saturating_add(len)) {
            sb.ckpt_crc = crc32c::crc32c(ck).into();
        }
        let out = sb.to_block();
        img[at..at + MD_BLOCK as usize].copy_from_slice(&out);
    }
}

fuzz_target!(|input: &[u8]| {
    let (pristine, md) = image();
    let Some((&flags, mut patches)) = input.split_first() else {
        return;
    };
    let mut img = pristine.clone();
    while let Some((hdr, rest)) = patches.split_first_chunk::<4>() {
        let off = (u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize) % md;
        let n = usize::from(hdr[3]).min(rest.len());
        for (i, b) in rest[..n].iter().enumerate() {
            if let Some(x) = img.get_mut((off + i) % md) {
                *x ^= b;
            }
        }
        patches = &rest[n..];
    }
    if flags & 1 != 0 {
        fix_crcs(&mut img);
    }
    let disk = Arc::new(CrashDisk::plain("img", BS, img).expect("disk"));
    let reg = Registry::new();
    reg.register(disk).expect("register");
    let desc = reg.open("img", true).expect("open");
    if let Ok(store) = Store::load(desc) {
        let _ = lvol::check(&store);
        let _ = store.volumes();
        let _ = store.close(false);
    }
});
